//! The terminal view of a [`StatusDocument`], shared by `grayproxy status`
//! (and `status --watch`) and `grayproxy demo`: pure functions from the
//! document to text.

use std::fmt::Write as _;

use crate::domain::Arm;
use crate::ramp::audit::{AuditRecord, Trigger};
use crate::ramp::judge::{ArmSummary, Evidence};
use crate::ramp::state::Phase;
use crate::status::{
    ArmTotals, ConfigStatus, EtcdHealth, FleetRole, FleetStatus, ForcedTotals, RouteStatus,
    SegmentStatus, ShadowReport, StatusDocument,
};

/// Width of the weight bar, in characters.
const BAR_WIDTH: usize = 40;
/// Decisions shown per route (the most recent).
pub const SHOWN_DECISIONS: usize = 6;
/// ANSI: cursor home + clear screen.
pub const CLEAR: &str = "\x1b[H\x1b[2J";

/// `[████████░░░░]` for a weight in percent.
pub fn weight_bar(percent: f64) -> String {
    let p = if percent.is_finite() {
        percent.clamp(0.0, 100.0)
    } else {
        0.0
    };
    let full = ((p / 100.0) * BAR_WIDTH as f64).round() as usize;
    format!("[{}{}]", "█".repeat(full), "░".repeat(BAR_WIDTH - full))
}

/// Seconds as milliseconds with sensible precision ("9.6 ms", "1250 ms").
fn ms(seconds: Option<f64>) -> String {
    match seconds {
        Some(s) if s.is_finite() => {
            let m = s * 1000.0;
            if m < 100.0 {
                format!("{m:.1} ms")
            } else {
                format!("{m:.0} ms")
            }
        }
        _ => "–".to_string(),
    }
}

fn arm_line(arm: Arm, totals: &ArmTotals, forced: &ForcedTotals) -> String {
    let ArmTotals {
        requests, errors, ..
    } = *totals;
    let rate = totals.error_rate * 100.0;
    let p99 = if requests > 0 {
        ms(Some(totals.p99_seconds))
    } else {
        "–".to_string()
    };
    format!(
        "    {:<7} {requests:>9} {errors:>7} {rate:>8.2}% {p99:>10} {:>9}",
        arm.as_str(),
        forced.requests
    )
}

fn arm_summary(arm: Arm, a: &ArmSummary) -> String {
    format!(
        "{} {} req {:.2}% err p99 {}",
        arm.as_str(),
        a.requests,
        a.error_rate * 100.0,
        ms(a.p99_seconds)
    )
}

/// "E 0.42 / 100 · gate 5×: F err 25.1 slow 31.7 · canary 812 req 0.00% err p99 9.6 ms · stable …".
pub fn evidence_summary(ev: &Evidence) -> String {
    let mut parts = vec![format!("E {} / {:.0}", short(ev.e), ev.rollback_threshold)];
    if let Some(c) = ev.e_combined {
        // With segments the rollback compares this mean, not `e`, with 1/α.
        let worst = ev
            .segments
            .iter()
            .max_by(|a, b| a.e.total_cmp(&b.e))
            .map(|s| format!(", top {} {}", s.segment, short(s.e)))
            .unwrap_or_default();
        parts.push(format!(
            "with {} segments E {}{worst}",
            ev.segments.len(),
            short(c)
        ));
    }
    if let Some(g) = &ev.gate {
        parts.push(format!(
            "gate {}×: F err {} slow {}",
            g.tolerance,
            short(g.f_errors),
            short(g.f_slow),
        ));
    }
    parts.push(arm_summary(Arm::Canary, &ev.canary));
    parts.push(arm_summary(Arm::Stable, &ev.stable));
    parts.join(" · ")
}

/// A number in few characters: 0.42, 12.3, 4512, 3.1e12.
fn short(x: f64) -> String {
    let a = x.abs();
    if !x.is_finite() {
        "∞".to_string()
    } else if a >= 1e5 {
        format!("{x:.1e}")
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The JSON name of a trigger.
fn trigger_name(t: Trigger) -> &'static str {
    match t {
        Trigger::Judge => "judge",
        Trigger::Operator => "operator",
        Trigger::Config => "config",
        Trigger::Persistence => "persistence",
    }
}

/// One audit record (from `/status` or `audit.jsonl`) on one line:
/// time, action, weight, who, why, and the evidence.
pub fn decision_line(d: &AuditRecord) -> String {
    let time =
        d.at.split('T')
            .nth(1)
            .unwrap_or(&d.at)
            .trim_end_matches('Z');
    let mut line = format!(
        "{time} {:<16} → {:>5}%  ({}) {}",
        d.action.as_str(),
        d.weight,
        trigger_name(d.trigger),
        d.reason
    );
    if let Some(ev) = &d.evidence {
        line.push_str(" [");
        line.push_str(&evidence_summary(ev));
        line.push(']');
    }
    line
}

fn render_route(out: &mut String, r: &RouteStatus) {
    let weight = r.canary_weight;
    let state = r.ramp.state();
    let _ = writeln!(out, "route {}", r.name);
    let _ = writeln!(out, "  canary {} {weight:>6.2}%", weight_bar(weight));
    let step = match r.ramp.status() {
        Some(s) if state != Phase::Idle => format!(", step {}", s.step),
        _ => String::new(),
    };
    let _ = writeln!(out, "  state  {}{step}", state.as_str());
    if let Some(w) = r.ramp.waiting_for() {
        let _ = writeln!(out, "  waiting for: {w}");
    }
    if let Some(e) = r.ramp.status().and_then(|s| s.error.as_deref()) {
        let _ = writeln!(out, "  ERROR: {e}");
    }
    let _ = writeln!(
        out,
        "    {:<7} {:>9} {:>7} {:>9} {:>10} {:>9}",
        "arm", "requests", "errors", "err rate", "p99", "forced"
    );
    for arm in [Arm::Stable, Arm::Canary] {
        let _ = writeln!(out, "{}", arm_line(arm, r.arms.get(arm), r.forced.get(arm)));
    }
    if !r.segments.is_empty() {
        render_segments(out, &r.segments);
    }
    if let Some(s) = &r.shadow {
        render_shadow(out, s);
    }
    let decisions = r.ramp.decisions();
    if !decisions.is_empty() {
        let _ = writeln!(out, "  decisions (latest last):");
        let skip = decisions.len().saturating_sub(SHOWN_DECISIONS);
        for d in &decisions[skip..] {
            let _ = writeln!(out, "    {}", decision_line(d));
        }
    }
}

/// Per segment: each arm's requests, error rate and p99, and the judge's
/// evidence within the segment.
fn render_segments(out: &mut String, segments: &[SegmentStatus]) {
    let _ = writeln!(
        out,
        "    {:<12} {:>9} {:>8} {:>9} {:>9} {:>8} {:>9} {:>8}",
        "segment", "stable", "err", "p99", "canary", "err", "p99", "E"
    );
    for s in segments {
        let arm = |a: &ArmTotals| {
            let p99 = if a.requests > 0 {
                ms(Some(a.p99_seconds))
            } else {
                "–".to_string()
            };
            format!("{:>9} {:>7.2}% {p99:>9}", a.requests, a.error_rate * 100.0)
        };
        let e = s.e.map_or_else(|| "–".to_string(), short);
        let _ = writeln!(
            out,
            "    {:<12} {} {} {e:>8}",
            s.segment,
            arm(&s.arms.stable),
            arm(&s.arms.canary)
        );
    }
}

/// Fields shown per route in the shadow section.
const SHOWN_FIELDS: usize = 5;

fn opt(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.3}"))
}

fn render_shadow(out: &mut String, s: &ShadowReport) {
    let _ = writeln!(
        out,
        "  shadow mirrored {} compared {} skipped {} canary errors {} stable errors {} status mismatches {}",
        s.mirrored, s.compared, s.skipped, s.canary_errors, s.stable_errors, s.status_mismatches
    );
    let why = &s.skip_reasons;
    if why.body_too_large + why.body_incomplete > 0 {
        let _ = writeln!(
            out,
            "    skipped: {} in flight, {} body over 1 MiB, {} body incomplete",
            why.in_flight, why.body_too_large, why.body_incomplete
        );
    }
    let _ = writeln!(
        out,
        "    p99 stable {} canary {}   rbo mean {} p10 {} p50 {}   overlap@k {}",
        ms(s.stable_p99_seconds),
        ms(s.canary_p99_seconds),
        opt(s.rbo.mean),
        opt(s.rbo.p10),
        opt(s.rbo.p50),
        opt(s.overlap_at_k.mean),
    );
    for f in s.fields.iter().take(SHOWN_FIELDS) {
        let mark = if f.flagged { "DIFFERS" } else { "noise" };
        let _ = writeln!(
            out,
            "    {mark:<7} {} {:.1}% (noise {:.1}%) e.g. {} → {}",
            f.path,
            f.diff_rate * 100.0,
            f.noise_rate * 100.0,
            f.example.stable,
            f.example.canary
        );
    }
}

fn render_config(out: &mut String, cfg: &ConfigStatus) {
    let _ = writeln!(out, "\nconfig {} (loaded {})", cfg.path, cfg.loaded_at);
    if let Some(e) = &cfg.last_error {
        let _ = writeln!(out, "  last reload error: {e}");
    }
}

/// The `fleet` section: who leads, etcd's health, every replica.
fn render_fleet(out: &mut String, f: &FleetStatus) {
    let role = match f.role {
        Some(FleetRole::Leader) => " (leader)",
        Some(FleetRole::Follower) => " (follower)",
        None => "",
    };
    let leader = f.leader.as_deref().unwrap_or("none yet");
    let _ = writeln!(
        out,
        "\nfleet: this replica {}{role}, leader {leader}",
        f.replica
    );
    let etcd = match f.etcd {
        EtcdHealth::Ok => "ok",
        EtcdHealth::Unreachable => "UNREACHABLE (weights hold; nothing rises)",
    };
    match &f.etcd_since {
        Some(since) => _ = writeln!(out, "  etcd {etcd} since {since}"),
        None => _ = writeln!(out, "  etcd {etcd}"),
    }
    let alive = f.replicas.iter().filter(|m| m.alive).count();
    let _ = writeln!(out, "  replicas: {alive} of {} alive", f.replicas.len());
    for m in &f.replicas {
        let state = if m.alive { "alive" } else { "gone" };
        let drift = if m.config_drift {
            "  config differs from the leader's"
        } else {
            ""
        };
        let _ = writeln!(out, "    {:<20} {state}{drift}", m.replica);
    }
}

/// The whole view of a `/status` document.
pub fn render(status: &StatusDocument) -> String {
    let mut out = String::new();
    if status.routes.is_empty() {
        out.push_str("no routes\n");
    }
    for (i, r) in status.routes.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_route(&mut out, r);
    }
    if let Some(f) = &status.fleet {
        render_fleet(&mut out, f);
    }
    render_config(&mut out, &status.config);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::ramp::audit::Action;
    use crate::ramp::state::RampStatus;
    use crate::status::sample;
    use crate::status::RouteRamp;

    #[test]
    fn renders_the_shadow_section() {
        let mut doc = sample::document();
        let mut s = crate::status::ShadowReport {
            mirrored: 10,
            compared: 9,
            ..Default::default()
        };
        s.rbo.mean = Some(0.8125);
        s.fields.push(crate::status::FieldDiff {
            path: "version".to_string(),
            diff_rate: 1.0,
            noise_rate: 0.0,
            flagged: true,
            example: crate::status::PerArm {
                stable: serde_json::json!("v1"),
                canary: serde_json::json!("v2"),
            },
        });
        doc.routes[0].shadow = Some(s);
        let out = render(&doc);
        assert!(
            out.contains("  shadow mirrored 10 compared 9 skipped 0"),
            "{out}"
        );
        assert!(out.contains("rbo mean 0.812"), "{out}");
        assert!(
            out.contains("DIFFERS version 100.0% (noise 0.0%) e.g. \"v1\" → \"v2\""),
            "{out}"
        );
        assert!(!out.contains("body over"), "no body skips, no line: {out}");
        if let Some(s) = doc.routes[0].shadow.as_mut() {
            s.skipped = 3;
            s.skip_reasons.in_flight = 1;
            s.skip_reasons.body_too_large = 2;
        }
        let out = render(&doc);
        assert!(
            out.contains("skipped: 1 in flight, 2 body over 1 MiB, 0 body incomplete"),
            "{out}"
        );
    }

    #[test]
    fn renders_the_segments() {
        use crate::status::{PerArm, SegmentStatus};
        let mut doc = sample::document();
        assert!(!render(&doc).contains("segment"));
        doc.routes[0].segments = vec![
            SegmentStatus {
                segment: "new".into(),
                arms: PerArm {
                    stable: ArmTotals::new(1000, 5, Some(0.05)),
                    canary: ArmTotals::new(100, 10, Some(0.06)),
                },
                e: Some(42.5),
                e_errors: Some(84.0),
                e_slow: Some(1.0),
            },
            SegmentStatus {
                segment: "other".into(),
                arms: PerArm::default(),
                e: None,
                e_errors: None,
                e_slow: None,
            },
        ];
        let out = render(&doc);
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("new "))
            .unwrap();
        for part in ["1000", "0.50%", "100", "10.00%", "42.5"] {
            assert!(line.contains(part), "{part} missing in {line:?}\n{out}");
        }
        let other = out
            .lines()
            .find(|l| l.trim_start().starts_with("other"))
            .unwrap();
        assert!(other.trim_end().ends_with('–'), "{other:?}");
    }

    #[test]
    fn renders_the_fleet() {
        use crate::status::ReplicaStatus;
        let mut doc = sample::document();
        assert!(!render(&doc).contains("fleet"));
        let rep = |r: &str, alive, config_drift| ReplicaStatus {
            replica: r.into(),
            alive,
            config_drift,
        };
        doc.fleet = Some(FleetStatus {
            replica: "gp-1".into(),
            leader: Some("gp-2".into()),
            etcd: EtcdHealth::Unreachable,
            replicas: vec![
                rep("gp-1", true, false),
                rep("gp-2", true, true),
                rep("gp-3", false, false),
            ],
            role: Some(FleetRole::Follower),
            etcd_since: Some("2026-12-03T08:00:00Z".into()),
            decisions: Vec::new(),
        });
        let text = render(&doc);
        for want in [
            "fleet: this replica gp-1 (follower), leader gp-2",
            "  etcd UNREACHABLE (weights hold; nothing rises) since 2026-12-03T08:00:00Z",
            "  replicas: 2 of 3 alive",
            "    gp-2                 alive  config differs from the leader's",
            "    gp-3                 gone",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn renders_a_progressing_route() {
        let out = render(&sample::document());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "route recommend");
        assert_eq!(
            lines[1],
            format!("  canary [{}{}]   5.00%", "█".repeat(2), "░".repeat(38))
        );
        assert_eq!(lines[2], "  state  progressing, step 1");
        assert_eq!(
            lines[3],
            "  waiting for: canary needs 140 more requests (about 40 s)"
        );
        assert!(lines[4].contains("requests") && lines[4].contains("forced"));
        assert_eq!(
            lines[5],
            "    stable      20000     100     0.50%    12.3 ms         0"
        );
        assert_eq!(
            lines[6],
            "    canary        900       9     1.00%     250 ms        17"
        );
        assert_eq!(lines[7], "  decisions (latest last):");
        assert!(
            lines[9].starts_with(
                "    10:00:05 advance          →     5%  (judge) canary shown < 5× worse ["
            ),
            "{}",
            lines[9]
        );
        assert!(lines[9].contains("E 0.42 / 100"), "{}", lines[9]);
        assert!(
            lines[9].contains("gate 5×: F err 25.1 slow 31.7"),
            "{}",
            lines[9]
        );
        assert!(
            lines[9].contains("canary 812 req 0.00% err p99 9.6 ms"),
            "{}",
            lines[9]
        );
        assert!(out.contains("config config/grayproxy.toml (loaded 2026-11-22T10:00:00Z)"));
        assert!(!out.contains("last reload error"));
    }

    #[test]
    fn shows_only_the_latest_decisions() {
        let mut s = sample::document();
        let mut ramp = sample::ramp();
        ramp.decisions = (0..10)
            .map(|i| sample::decision(Action::Advance, f64::from(i)))
            .collect();
        s.routes[0].ramp = RouteRamp::Ramp(ramp);
        let out = render(&s);
        assert_eq!(out.matches(" advance ").count(), SHOWN_DECISIONS);
        assert!(out.contains("→     9%"));
        assert!(!out.contains("→     3%"));
    }

    #[test]
    fn idle_routes_errors_and_reload_errors() {
        let mut s = sample::document();
        s.routes[0].ramp = RouteRamp::Ramp(RampStatus {
            state: Phase::Paused,
            step: 2,
            waiting_for: None,
            decisions: Vec::new(),
            error: Some("disk full".to_string()),
            ..sample::ramp()
        });
        s.config.last_error = Some("x.toml:3:1: bad".to_string());
        let out = render(&s);
        assert!(out.contains(&format!("[{}]", "█".repeat(BAR_WIDTH))));
        assert!(out.contains("route plain\n"), "{out}");
        assert!(out.contains("  state  idle\n"), "{out}");
        assert!(out.contains("    canary          0       0     0.00%          –         0"));
        assert!(out.contains("  state  paused, step 2\n  ERROR: disk full\n"));
        assert!(out.contains("last reload error: x.toml:3:1: bad"));
        assert!(!out.contains("decisions"));
        s.routes.clear();
        assert!(render(&s).starts_with("no routes\n\nconfig "));
    }

    #[test]
    fn weight_bars() {
        let bar = |p: f64| weight_bar(p).chars().filter(|c| *c == '█').count();
        assert_eq!(bar(0.0), 0);
        assert_eq!(bar(1.0), 0);
        assert_eq!(bar(50.0), BAR_WIDTH / 2);
        assert_eq!(bar(100.0), BAR_WIDTH);
        assert_eq!(bar(150.0), BAR_WIDTH);
        assert_eq!(bar(f64::NAN), 0);
        assert_eq!(weight_bar(25.0).chars().count(), BAR_WIDTH + 2);
    }

    #[test]
    fn trigger_names_are_the_json_names() {
        for t in [Trigger::Judge, Trigger::Operator, Trigger::Config] {
            assert_eq!(serde_json::to_value(t).unwrap(), trigger_name(t));
        }
    }

    #[test]
    fn decision_without_evidence() {
        let d = AuditRecord {
            at: "2026-11-22T10:00:00Z".to_string(),
            action: Action::BaselineStarted,
            trigger: Trigger::Operator,
            weight: 0.0,
            reason: "collecting".to_string(),
            evidence: None,
            ..sample::decision(Action::Advance, 0.0)
        };
        assert_eq!(
            decision_line(&d),
            "10:00:00 baseline_started →     0%  (operator) collecting"
        );
    }
}
