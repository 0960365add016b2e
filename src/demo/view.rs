//! The live terminal view shared by `grayproxy demo` and `grayproxy status`:
//! a pure [`render`] of the `/status` JSON (CONTRACT §5), and the `status`
//! verb around it (fetch, print, and with `--watch` redraw every second).

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::Value;

use crate::cli::client;

/// Width of the weight bar, in characters.
const BAR_WIDTH: usize = 40;
/// Decisions shown per route (the most recent).
pub const SHOWN_DECISIONS: usize = 6;
/// ANSI: cursor home + clear screen.
pub const CLEAR: &str = "\x1b[H\x1b[2J";

fn f64_at(v: &Value, path: &[&str]) -> Option<f64> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_f64()
}

fn u64_at(v: &Value, path: &[&str]) -> u64 {
    path.iter()
        .try_fold(v, |v, k| v.get(*k))
        .and_then(Value::as_u64)
        .unwrap_or(0)
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(*k))?.as_str()
}

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

fn arm_line(name: &str, arm: &Value, forced: &Value) -> String {
    let requests = u64_at(arm, &["requests"]);
    let errors = u64_at(arm, &["errors"]);
    let rate = f64_at(arm, &["error_rate"]).unwrap_or(0.0) * 100.0;
    let p99 = if requests > 0 {
        ms(f64_at(arm, &["p99_seconds"]))
    } else {
        "–".to_string()
    };
    format!(
        "    {name:<7} {requests:>9} {errors:>7} {rate:>8.2}% {p99:>10} {:>9}",
        u64_at(forced, &["requests"])
    )
}

/// "E 0.4/100 · gate 5×: F 25/31 · canary 1.2k req 0.00% p99 9.6 ms · stable …".
pub fn evidence_summary(ev: &Value) -> String {
    if ev.is_null() {
        return String::new();
    }
    let mut parts = Vec::new();
    if let (Some(e), Some(t)) = (f64_at(ev, &["e"]), f64_at(ev, &["rollback_threshold"])) {
        parts.push(format!("E {} / {t:.0}", short(e)));
    }
    if let Some(g) = ev.get("gate").filter(|g| !g.is_null()) {
        parts.push(format!(
            "gate {}×: F err {} slow {}",
            f64_at(g, &["tolerance"]).unwrap_or(0.0),
            short(f64_at(g, &["f_errors"]).unwrap_or(0.0)),
            short(f64_at(g, &["f_slow"]).unwrap_or(0.0)),
        ));
    }
    for arm in ["canary", "stable"] {
        if let Some(a) = ev.get(arm).filter(|a| !a.is_null()) {
            parts.push(format!(
                "{arm} {} req {:.2}% err p99 {}",
                u64_at(a, &["requests"]),
                f64_at(a, &["error_rate"]).unwrap_or(0.0) * 100.0,
                ms(f64_at(a, &["p99_seconds"]))
            ));
        }
    }
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

/// One audit record (from `/status` or `audit.jsonl`) on one line:
/// time, action, weight, who, why, and the evidence.
pub fn decision_line(d: &Value) -> String {
    let at = str_at(d, &["at"]).unwrap_or("?");
    let time = at.split('T').nth(1).unwrap_or(at).trim_end_matches('Z');
    let action = str_at(d, &["action"]).unwrap_or("?");
    let weight = f64_at(d, &["weight"]).unwrap_or(0.0);
    let trigger = str_at(d, &["trigger"]).unwrap_or("?");
    let reason = str_at(d, &["reason"]).unwrap_or("");
    let mut line = format!("{time} {action:<16} → {weight:>5}%  ({trigger}) {reason}");
    let ev = evidence_summary(d.get("evidence").unwrap_or(&Value::Null));
    if !ev.is_empty() {
        line.push_str(" [");
        line.push_str(&ev);
        line.push(']');
    }
    line
}

fn render_route(out: &mut String, r: &Value) {
    let name = str_at(r, &["name"]).unwrap_or("?");
    let weight = f64_at(r, &["canary_weight"]).unwrap_or(0.0);
    let ramp = r.get("ramp").unwrap_or(&Value::Null);
    let state = str_at(ramp, &["state"]).unwrap_or("idle");
    let _ = writeln!(out, "route {name}");
    let _ = writeln!(out, "  canary {} {weight:>6.2}%", weight_bar(weight));
    let step = match ramp.get("step").and_then(Value::as_u64) {
        Some(s) if state != "idle" => format!(", step {s}"),
        _ => String::new(),
    };
    let _ = writeln!(out, "  state  {state}{step}");
    if let Some(w) = str_at(ramp, &["waiting_for"]) {
        let _ = writeln!(out, "  waiting for: {w}");
    }
    if let Some(e) = str_at(ramp, &["error"]) {
        let _ = writeln!(out, "  ERROR: {e}");
    }
    let _ = writeln!(
        out,
        "    {:<7} {:>9} {:>7} {:>9} {:>10} {:>9}",
        "arm", "requests", "errors", "err rate", "p99", "forced"
    );
    let (arms, forced) = (
        r.get("arms").unwrap_or(&Value::Null),
        r.get("forced").unwrap_or(&Value::Null),
    );
    for arm in ["stable", "canary"] {
        let a = arms.get(arm).unwrap_or(&Value::Null);
        let f = forced.get(arm).unwrap_or(&Value::Null);
        let _ = writeln!(out, "{}", arm_line(arm, a, f));
    }
    let decisions = ramp
        .get("decisions")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if !decisions.is_empty() {
        let _ = writeln!(out, "  decisions (latest last):");
        let skip = decisions.len().saturating_sub(SHOWN_DECISIONS);
        for d in &decisions[skip..] {
            let _ = writeln!(out, "    {}", decision_line(d));
        }
    }
}

/// The whole view of a `/status` document.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let routes = status
        .get("routes")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if routes.is_empty() {
        out.push_str("no routes\n");
    }
    for (i, r) in routes.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        render_route(&mut out, r);
    }
    if let Some(fleet) = status.get("fleet") {
        render_fleet(&mut out, fleet);
    }
    if let Some(cfg) = status.get("config") {
        let path = str_at(cfg, &["path"]).unwrap_or("?");
        let at = str_at(cfg, &["loaded_at"]).unwrap_or("?");
        let _ = writeln!(out, "\nconfig {path} (loaded {at})");
        if let Some(e) = str_at(cfg, &["last_error"]) {
            let _ = writeln!(out, "  last reload error: {e}");
        }
    }
    out
}

/// The `fleet` section: who leads, etcd's health, every replica.
fn render_fleet(out: &mut String, f: &Value) {
    let me = str_at(f, &["replica"]).unwrap_or("?");
    let leader = str_at(f, &["leader"]).unwrap_or("none");
    let role = str_at(f, &["role"]).unwrap_or("?");
    let etcd = str_at(f, &["etcd"]).unwrap_or("?");
    let since = str_at(f, &["etcd_since"]).unwrap_or("?");
    let _ = writeln!(out, "\nfleet: this replica {me} ({role}), leader {leader}");
    let _ = writeln!(out, "  etcd {etcd} since {since}");
    let replicas = f
        .get("replicas")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    let alive = replicas
        .iter()
        .filter(|m| m.get("alive") == Some(&Value::Bool(true)))
        .count();
    let _ = writeln!(out, "  replicas: {alive} of {} alive", replicas.len());
    for m in replicas {
        let name = str_at(m, &["replica"]).unwrap_or("?");
        let state = if m.get("alive") == Some(&Value::Bool(true)) {
            "alive"
        } else {
            "gone"
        };
        let drift = if m.get("config_drift") == Some(&Value::Bool(true)) {
            "  config differs from the leader's"
        } else {
            ""
        };
        let _ = writeln!(out, "    {name:<20} {state}{drift}");
    }
}

/// `grayproxy status [--admin URL] [--watch]`.
pub fn status_command(admin: &str, watch: bool) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    rt.block_on(async {
        if !watch {
            return match client::fetch_status(admin).await {
                Ok(s) => {
                    print!("{}", render(&s));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(1)
                }
            };
        }
        let mut every = tokio::time::interval(Duration::from_secs(1));
        let stop = crate::cli::wait_for_termination();
        tokio::pin!(stop);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                () = &mut stop => return ExitCode::SUCCESS,
            }
            let text = match client::fetch_status(admin).await {
                Ok(s) => render(&s),
                Err(e) => format!("error: {e}\n(retrying every second; Ctrl-C to stop)\n"),
            };
            print!("{CLEAR}grayproxy status — {admin} (every 1 s, Ctrl-C to stop)\n\n{text}");
        }
    })
}

#[cfg(test)]
mod fleet_tests {
    use super::*;

    #[test]
    fn fleet_section_renders() {
        let status = serde_json::json!({
            "routes": [],
            "fleet": {"replica": "gp-1", "leader": "gp-2", "role": "follower", "etcd": "unreachable",
                      "etcd_since": "2026-12-03T08:00:00Z",
                      "replicas": [{"replica": "gp-1", "alive": true},
                                   {"replica": "gp-2", "alive": true, "config_drift": true},
                                   {"replica": "gp-3", "alive": false}]}
        });
        let text = render(&status);
        for want in [
            "fleet: this replica gp-1 (follower), leader gp-2",
            "etcd unreachable since 2026-12-03T08:00:00Z",
            "replicas: 2 of 3 alive",
            "gp-2                 alive  config differs from the leader's",
            "gp-3                 gone",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!render(&serde_json::json!({"routes": []})).contains("fleet"));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn decision(action: &str, weight: f64) -> Value {
        json!({"at": "2026-11-22T10:00:05Z", "at_ms": 1_795_341_605_000u64, "action": action,
               "trigger": "judge", "state": "progressing", "step": 1, "weight": weight,
               "reason": "canary shown < 5× worse",
               "evidence": {"e": 0.42, "rollback_threshold": 100.0,
                            "gate": {"tolerance": 5.0, "f_errors": 25.1, "f_slow": 31.7, "passed": true},
                            "canary": {"requests": 812, "errors": 0, "error_rate": 0.0, "slow": 3, "p99_seconds": 0.0096},
                            "stable": {"requests": 15120, "errors": 76, "error_rate": 0.005026, "slow": 140, "p99_seconds": 0.0098}}})
    }

    fn status() -> Value {
        json!({"routes": [{"name": "recommend", "canary_weight": 5.0,
            "ramp": {"state": "progressing", "step": 1, "weight": 5.0,
                     "waiting_for": "canary needs 140 more requests (about 40 s)",
                     "decisions": [decision("ramp_started", 1.0), decision("advance", 5.0)]},
            "arms": {"stable": {"requests": 20000, "errors": 100, "error_rate": 0.005, "p99_seconds": 0.0123},
                     "canary": {"requests": 900, "errors": 9, "error_rate": 0.01, "p99_seconds": 0.25}},
            "forced": {"stable": {"requests": 0}, "canary": {"requests": 17}}}],
            "config": {"path": "config/grayproxy.toml", "loaded_at": "2026-11-22T10:00:00Z", "last_error": null}})
    }

    #[test]
    fn renders_a_progressing_route() {
        let out = render(&status());
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
        let mut s = status();
        let many: Vec<Value> = (0..10).map(|i| decision("advance", f64::from(i))).collect();
        s["routes"][0]["ramp"]["decisions"] = Value::Array(many);
        let out = render(&s);
        assert_eq!(out.matches(" advance ").count(), SHOWN_DECISIONS);
        assert!(out.contains("→     9%"));
        assert!(!out.contains("→     3%"));
    }

    #[test]
    fn idle_routes_errors_and_missing_fields() {
        let s = json!({"routes": [
            {"name": "plain", "canary_weight": 100.0,
             "ramp": {"state": "idle", "step": null, "waiting_for": null, "decisions": []},
             "arms": {}, "forced": {}},
            {"name": "broken", "ramp": {"state": "paused", "step": 2, "error": "disk full"}}],
            "config": {"path": "x.toml", "loaded_at": "t", "last_error": "x.toml:3:1: bad"}});
        let out = render(&s);
        assert!(out.contains(&format!("[{}]", "█".repeat(BAR_WIDTH))));
        assert!(out.contains("  state  idle\n"), "{out}");
        assert!(out.contains("    canary          0       0     0.00%          –         0"));
        assert!(out.contains("  state  paused, step 2\n  ERROR: disk full\n"));
        assert!(out.contains("last reload error: x.toml:3:1: bad"));
        assert!(!out.contains("decisions"));
        assert_eq!(render(&json!({})), "no routes\n");
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
    fn decision_without_evidence() {
        let d = json!({"at": "2026-11-22T10:00:00Z", "action": "baseline_started", "trigger": "operator",
                       "weight": 0.0, "reason": "collecting", "evidence": null});
        assert_eq!(
            decision_line(&d),
            "10:00:00 baseline_started →     0%  (operator) collecting"
        );
    }
}
