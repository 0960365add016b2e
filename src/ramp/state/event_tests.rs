//! Scripted event sequences for what the driver used to decide itself:
//! KPI rounds, failed and recovered writes, a state that could not be loaded.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::tests::{tick, weight_set, Run};
use super::*;
use crate::config::types::{KpiBound, PrometheusCheck};
use crate::ramp::kpi::KpiOutcome;

fn kpi_policy() -> RampPolicy {
    RampPolicy {
        prometheus_url: Some("http://127.0.0.1:9".into()),
        prometheus_checks: vec![PrometheusCheck {
            name: "ctr".into(),
            query: "q".into(),
            bound: KpiBound::Ratio {
                min: Some(0.95),
                max: None,
            },
        }],
        ..RampPolicy::default()
    }
}

#[derive(Clone, Copy, Debug)]
enum O {
    Pass,
    Fail,
    NoData,
}

fn results(o: O) -> Vec<KpiResult> {
    let outcome = match o {
        O::Pass => KpiOutcome::Pass,
        O::Fail => KpiOutcome::Fail {
            reason: "`ctr`: 0.5 < min_ratio 0.95".into(),
        },
        O::NoData => KpiOutcome::NoData {
            reason: "`ctr`: unreachable".into(),
        },
    };
    vec![KpiResult {
        name: "ctr".into(),
        stable: None,
        canary: None,
        outcome,
    }]
}

/// One scripted step of a KPI sequence.
#[derive(Clone, Copy, Debug)]
enum K {
    /// A round that started now (after the last weight change).
    Round(O),
    /// A round that started before the last weight change.
    Stale(O),
    /// An operator command.
    Cmd(Command),
}

/// After a step: phase, how `blocked` starts (`None`: not blocked), the
/// failing streak, the no-data streak.
type After = (Phase, Option<&'static str>, u32, u32);

/// A KPI case: its name, the script, the one decision it must record.
type KpiCase = (
    &'static str,
    &'static [(K, After)],
    Option<(Action, &'static str)>,
);

fn kpi_step(r: &mut Run, step: K) -> Vec<Effect> {
    r.now += 1_000;
    let round = |started, o| RampEvent::KpiRound {
        started,
        results: results(o),
    };
    let event = match step {
        K::Round(o) => round(r.now, o),
        K::Stale(o) => round(0, o),
        K::Cmd(c) => RampEvent::Command(c),
    };
    let fx = r.state.on(event, r.now, &r.policy);
    r.log.extend(fx.clone());
    fx
}

const WAITING: Option<&str> = Some("waiting for the KPI checks");

/// The KPI scripts, each from the first step (blocked until a round passes).
fn kpi_cases() -> Vec<KpiCase> {
    use K::*;
    use O::*;
    vec![
        (
            "three failing rounds in a row roll back",
            &[
                (
                    Round(Fail),
                    (Phase::Progressing, Some("failing (1 of 3"), 1, 0),
                ),
                (
                    Round(Fail),
                    (Phase::Progressing, Some("failing (2 of 3"), 2, 0),
                ),
                // At 0 % the checks start over: streaks reset, blocked again.
                (Round(Fail), (Phase::RolledBack, WAITING, 0, 0)),
            ],
            Some((
                Action::Rollback,
                "KPI check failed 3 times in a row: `ctr`: 0.5",
            )),
        ),
        (
            "a passing round ends the failing streak",
            &[
                (
                    Round(Fail),
                    (Phase::Progressing, Some("failing (1 of 3"), 1, 0),
                ),
                (Round(Pass), (Phase::Progressing, None, 0, 0)),
                (
                    Round(Fail),
                    (Phase::Progressing, Some("failing (1 of 3"), 1, 0),
                ),
            ],
            None,
        ),
        (
            "four rounds without data pause",
            &[
                (
                    Round(NoData),
                    (Phase::Progressing, Some("holding, no data (1 of 4"), 0, 1),
                ),
                (
                    Round(NoData),
                    (Phase::Progressing, Some("holding, no data (2 of 4"), 0, 2),
                ),
                (
                    Round(NoData),
                    (Phase::Progressing, Some("holding, no data (3 of 4"), 0, 3),
                ),
                (
                    Round(NoData),
                    (Phase::Paused, Some("holding, no data (3 of 4"), 0, 4),
                ),
            ],
            Some((
                Action::Pause,
                "KPI checks without data 4 times in a row (never promoted blind)",
            )),
        ),
        (
            "a pass from before the weight changed does not unblock",
            &[
                (Stale(Pass), (Phase::Progressing, WAITING, 0, 0)),
                (Round(Pass), (Phase::Progressing, None, 0, 0)),
            ],
            None,
        ),
        (
            "rounds while paused do not count",
            &[
                (
                    Round(Fail),
                    (Phase::Progressing, Some("failing (1 of 3"), 1, 0),
                ),
                (
                    Cmd(Command::Pause),
                    (Phase::Paused, Some("failing (1 of 3"), 1, 0),
                ),
                (Round(Fail), (Phase::Paused, Some("failing (1 of 3"), 0, 0)),
                (
                    Cmd(Command::Resume),
                    (Phase::Progressing, Some("failing (1 of 3"), 0, 0),
                ),
                (
                    Round(Fail),
                    (Phase::Progressing, Some("failing (1 of 3"), 1, 0),
                ),
            ],
            None,
        ),
    ]
}

#[test]
fn kpi_rounds_block_unblock_roll_back_and_pause() {
    for (name, script, last_audit) in kpi_cases() {
        let mut r = Run::with(kpi_policy());
        r.through_baseline();
        assert_eq!(r.state.kpi().blocked().map(|b| &b[..26]), WAITING, "{name}");
        r.log.clear();
        for (i, (step, want)) in script.iter().enumerate() {
            let fx = kpi_step(&mut r, *step);
            let k = r.state.kpi();
            let got = (
                r.state.phase(),
                k.blocked(),
                k.fail_streak(),
                k.no_data_streak(),
            );
            let at = format!("{name}: step {i} ({step:?}) gave {got:?}");
            assert_eq!((got.0, got.2, got.3), (want.0, want.2, want.3), "{at}");
            match (got.1, want.1) {
                (Some(b), Some(w)) => assert!(b.starts_with(w), "{at}"),
                (b, w) => assert_eq!(b, w, "{at}"),
            }
            assert_eq!(
                fx.last(),
                Some(&Effect::Persist),
                "{at}: the KPI state is persisted"
            );
            if let K::Round(o) | K::Stale(o) = step {
                assert_eq!(
                    r.state.kpi().results(),
                    results(*o),
                    "{at}: shown in /status"
                );
            }
        }
        let audits: Vec<&AuditRecord> = r
            .log
            .iter()
            .filter_map(|e| match e {
                Effect::Audit(a) if a.trigger != Trigger::Operator => Some(&**a),
                _ => None,
            })
            .collect();
        match last_audit {
            Some((action, reason)) => {
                assert_eq!(audits.len(), 1, "{name}: {audits:?}");
                assert_eq!(
                    (audits[0].action, audits[0].trigger),
                    (action, Trigger::Judge)
                );
                assert!(
                    audits[0].reason.starts_with(reason),
                    "{name}: {}",
                    audits[0].reason
                );
            }
            None => assert!(audits.is_empty(), "{name}: {audits:?}"),
        }
    }
}

#[test]
fn blocked_kpi_checks_hold_the_step_until_a_fresh_round_passes() {
    let mut r = Run::with(kpi_policy());
    r.through_baseline();
    for _ in 0..30 {
        assert_eq!(
            weight_set(&r.tick(2000, 1.0)),
            None,
            "no advance while blocked"
        );
    }
    let w = r.state.status(&r.policy).waiting_for.unwrap();
    assert!(
        w.starts_with("KPI checks: waiting for the KPI checks to pass"),
        "{w}"
    );
    kpi_step(&mut r, K::Round(O::Pass));
    assert_eq!(weight_set(&r.tick(2000, 1.0)), Some(5.0));
    // A new weight: blocked again until a round at it passes.
    assert!(r.state.kpi().blocked().is_some());
    for _ in 0..30 {
        assert_eq!(weight_set(&r.tick(2000, 1.0)), None);
    }
}

#[test]
fn kpi_streaks_survive_a_restart_and_new_checks_start_over() {
    let mut r = Run::with(kpi_policy());
    r.through_baseline();
    kpi_step(&mut r, K::Round(O::Fail));
    kpi_step(&mut r, K::Round(O::Pass));
    kpi_step(&mut r, K::Round(O::Fail));
    kpi_step(&mut r, K::Round(O::Fail));
    // A restart: the state as stored, loaded again, the checks restarted.
    let json = serde_json::to_string(&r.state).unwrap();
    let mut restarted: RampState = serde_json::from_str(&json).unwrap();
    assert_eq!(restarted, r.state);
    r.now += 1_000;
    let started = RampEvent::KpiChecksStarted { changed: false };
    let fx = restarted.on(started, r.now, &r.policy);
    assert_eq!(fx, [Effect::Persist]);
    let k = restarted.kpi();
    assert_eq!((k.fail_streak(), k.results().len()), (2, 1), "streak kept");
    assert!(
        k.blocked().unwrap().starts_with("waiting"),
        "a pass before the restart is not trusted"
    );
    // The third failing round in a row, across the restart, rolls back.
    let mut r2 = Run {
        state: restarted.clone(),
        policy: r.policy.clone(),
        now: r.now,
        log: Vec::new(),
    };
    kpi_step(&mut r2, K::Round(O::Fail));
    assert_eq!(r2.state.phase(), Phase::RolledBack);
    // Changed checks: the old streaks and results are dropped.
    let fx = restarted.on(
        RampEvent::KpiChecksStarted { changed: true },
        r.now,
        &r.policy,
    );
    assert_eq!(fx, [Effect::Persist]);
    let k = restarted.kpi();
    assert_eq!((k.fail_streak(), k.results().len()), (0, 0));
    assert_eq!(restarted.phase(), Phase::Progressing);
}

#[test]
fn without_checks_kpi_events_change_nothing() {
    let mut r = Run::new();
    r.through_baseline();
    let before = r.state.clone();
    let started = RampEvent::KpiChecksStarted { changed: true };
    assert!(r.state.on(started, r.now, &r.policy).is_empty());
    assert!(kpi_step(&mut r, K::Round(O::Fail)).is_empty());
    assert_eq!(r.state, before);
    assert_eq!(r.state.kpi(), &KpiGate::default());
}

/// A storage step and what must hold after it: phase, held by the failed
/// write, the audit it recorded (none: `None`), effects at all.
type StorageStep = (RampEvent, Phase, bool, Option<(Action, Trigger)>);

fn failed() -> RampEvent {
    RampEvent::PersistFailed {
        problem: "cannot write /s/r.ramp.json: Read-only file system".into(),
    }
}

fn run_storage(name: &str, r: &mut Run, script: Vec<StorageStep>) {
    for (i, (event, phase, held, audit)) in script.into_iter().enumerate() {
        r.now += 10_000;
        let at = format!("{name}: step {i} ({event:?})");
        let fx = r.state.on(event, r.now, &r.policy);
        assert_eq!(
            (r.state.phase(), r.state.persist_hold()),
            (phase, held),
            "{at}"
        );
        let recorded = fx.iter().find_map(|e| match e {
            Effect::Audit(a) => Some((a.action, a.trigger)),
            _ => None,
        });
        assert_eq!(recorded, audit, "{at}");
        assert_eq!(
            weight_set(&fx),
            None,
            "{at}: storage events never move the weight"
        );
    }
}

#[test]
fn a_failed_write_holds_and_a_successful_one_continues() {
    let p = Phase::Paused;
    let hold = Some((Action::Pause, Trigger::Persistence));
    let cases: Vec<(&str, Vec<StorageStep>)> = vec![
        (
            "held, then continues by itself",
            vec![
                (failed(), p, true, hold),
                (failed(), p, true, None),
                (
                    RampEvent::PersistRecovered,
                    Phase::Progressing,
                    false,
                    Some((Action::Resume, Trigger::Persistence)),
                ),
                (RampEvent::PersistRecovered, Phase::Progressing, false, None),
            ],
        ),
        (
            "an operator's pause replaces the hold",
            vec![
                (failed(), p, true, hold),
                (
                    RampEvent::Command(Command::Pause),
                    p,
                    false,
                    Some((Action::Pause, Trigger::Operator)),
                ),
                (RampEvent::PersistRecovered, p, false, None),
                (
                    RampEvent::Command(Command::Resume),
                    Phase::Progressing,
                    false,
                    Some((Action::Resume, Trigger::Operator)),
                ),
            ],
        ),
        (
            "not held where nothing would rise",
            vec![
                (
                    RampEvent::Command(Command::Pause),
                    p,
                    false,
                    Some((Action::Pause, Trigger::Operator)),
                ),
                (failed(), p, false, None),
                (RampEvent::PersistRecovered, p, false, None),
            ],
        ),
    ];
    for (name, script) in cases {
        let mut r = Run::new();
        r.through_baseline();
        run_storage(name, &mut r, script);
    }
}

#[test]
fn the_hold_keeps_judging_and_keeps_the_step_clock() {
    let mut r = Run::new();
    r.through_baseline();
    let since = r.state.step_since();
    r.state.on(failed(), r.now, &r.policy);
    let w = r.state.status(&r.policy).waiting_for.unwrap();
    assert!(
        w.starts_with("paused: cannot persist the ramp state (cannot write /s/r.ramp.json"),
        "{w}"
    );
    r.tick(2000, 1.0);
    assert_eq!(r.state.step_canary().requests, 20, "judged while held");
    r.state.on(RampEvent::PersistRecovered, r.now, &r.policy);
    assert_eq!(
        r.state.step_since(),
        since,
        "the hold's time counts for the step"
    );
    // A bad canary is rolled back while held.
    r.state.on(failed(), r.now, &r.policy);
    for _ in 0..100 {
        r.tick(2000, 10.0);
    }
    assert_eq!(
        (r.state.phase(), r.state.persist_hold()),
        (Phase::RolledBack, false)
    );
    // Held during the baseline: calibration goes on, the ramp starts after.
    let mut r = Run::new();
    r.tick(2000, 1.0);
    r.state.on(failed(), r.now, &r.policy);
    assert_eq!(r.state.paused_from(), Some(Phase::Baseline));
    for _ in 0..70 {
        assert_eq!(weight_set(&r.tick(2000, 1.0)), None);
    }
    r.state.on(RampEvent::PersistRecovered, r.now, &r.policy);
    assert_eq!(r.state.phase(), Phase::Baseline);
    assert_eq!(weight_set(&r.tick(2000, 1.0)), Some(1.0));
}

#[test]
fn a_state_that_cannot_be_loaded_starts_paused_at_zero() {
    let p = RampPolicy::default();
    let mut s = RampState::idle();
    let problem = "state file /s/r.ramp.json is corrupt (EOF); kept as /s/x".to_string();
    let fx = s.on(RampEvent::LoadFailed { problem }, 5_000, &p);
    assert_eq!(weight_set(&fx), Some(0.0));
    assert_eq!((s.phase(), s.weight()), (Phase::Paused, CanaryWeight::ZERO));
    let audits: Vec<(Action, Trigger)> = s
        .decisions()
        .iter()
        .map(|d| (d.action, d.trigger))
        .collect();
    assert_eq!(
        audits,
        [
            (Action::BaselineStarted, Trigger::Persistence),
            (Action::Pause, Trigger::Persistence)
        ]
    );
    let reason = &s.decisions()[1].reason;
    assert!(
        reason.starts_with("state file /s/r.ramp.json is corrupt")
            && reason.ends_with("`resume` starts a new ramp"),
        "{reason}"
    );
    assert_eq!(s.pause_reason(), Some(reason.as_str()));
    // Never moves by itself; `pause` does not apply; `resume` starts the baseline.
    for i in 0..100 {
        assert!(weight_set(&s.on(RampEvent::Tick(tick(2000, 0.0, 1.0)), 10_000 * i, &p)).is_none());
    }
    assert!(s
        .on(RampEvent::Command(Command::Pause), 1_000_000, &p)
        .is_empty());
    s.on(RampEvent::Command(Command::Resume), 1_000_000, &p);
    assert_eq!(s.phase(), Phase::Baseline);
}
