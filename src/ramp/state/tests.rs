#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Duration;

use super::*;
use crate::ramp::window::{bucket_of, JudgeHistogram};

fn arm(requests: u64, errors: u64, slow: u64) -> ArmTick {
    let mut latency = JudgeHistogram::new();
    latency.add_to_bucket(bucket_of(Duration::from_millis(40)), requests - slow);
    latency.add_to_bucket(
        bucket_of(Duration::from_millis(150)),
        slow.min(requests) / 2,
    );
    latency.add_to_bucket(
        bucket_of(Duration::from_millis(400)),
        slow - slow.min(requests) / 2,
    );
    ArmTick {
        requests,
        errors,
        latency,
    }
}

/// `n` requests at canary weight `w`; stable 0.5 % errors, 1 % slow; the
/// canary's rates are `mult` times that.
pub(super) fn tick(n: u64, w: f64, mult: f64) -> TickCounts {
    let nc = (n as f64 * w).round() as u64;
    let ns = n - nc;
    let c = arm(
        nc,
        (nc as f64 * 0.005 * mult).round() as u64,
        (nc as f64 * 0.01 * mult).round() as u64,
    );
    let (e, s) = (
        (ns as f64 * 0.005).round() as u64,
        (ns as f64 * 0.01).round() as u64,
    );
    TickCounts::from_halves(
        c,
        [
            arm(ns / 2, e / 2, s / 2),
            arm(ns - ns / 2, e - e / 2, s - s / 2),
        ],
    )
}

pub(super) struct Run {
    pub(super) state: RampState,
    pub(super) policy: RampPolicy,
    pub(super) now: Timestamp,
    pub(super) log: Vec<Effect>,
}

impl Run {
    pub(super) fn new() -> Run {
        Run::with(RampPolicy::default())
    }
    pub(super) fn with(policy: RampPolicy) -> Run {
        Run {
            state: RampState::new(&policy, 0),
            policy,
            now: 0,
            log: Vec::new(),
        }
    }
    pub(super) fn tick(&mut self, n: u64, mult: f64) -> Vec<Effect> {
        self.now += 10_000;
        let w = self.state.weight().percent() / 100.0;
        let fx = self
            .state
            .on(RampEvent::Tick(tick(n, w, mult)), self.now, &self.policy);
        self.log.extend(fx.clone());
        fx
    }
    pub(super) fn cmd(&mut self, c: Command) -> Vec<Effect> {
        self.state.on(RampEvent::Command(c), self.now, &self.policy)
    }
    pub(super) fn through_baseline(&mut self) {
        while self.state.phase == Phase::Baseline {
            self.tick(2000, 1.0);
        }
    }
    pub(super) fn actions(&self) -> Vec<Action> {
        self.log
            .iter()
            .filter_map(|e| {
                if let Effect::Audit(r) = e {
                    Some(r.action)
                } else {
                    None
                }
            })
            .collect()
    }
}

pub(super) fn weight_set(fx: &[Effect]) -> Option<f64> {
    fx.iter().find_map(|e| {
        if let Effect::SetWeight(w) = e {
            Some(w.percent())
        } else {
            None
        }
    })
}

#[test]
fn baseline_then_first_step() {
    let mut r = Run::new();
    assert_eq!(r.state.phase, Phase::Baseline);
    assert!(r
        .state
        .status(&r.policy)
        .waiting_for
        .unwrap()
        .starts_with("baseline"));
    for _ in 0..59 {
        assert_eq!(weight_set(&r.tick(2000, 1.0)), None);
    }
    let fx = r.tick(2000, 1.0);
    assert_eq!(r.state.phase, Phase::Progressing);
    assert_eq!(weight_set(&fx), Some(1.0));
    assert_eq!(fx.iter().filter(|e| **e == Effect::Persist).count(), 1);
    assert_eq!(fx.last(), Some(&Effect::Persist));
    assert_eq!(r.actions().last(), Some(&Action::RampStarted));
}

#[test]
fn healthy_canary_walks_every_step_to_promotion() {
    let mut r = Run::new();
    r.through_baseline();
    for _ in 0..200 {
        r.tick(2000, 1.0);
        if r.state.phase == Phase::Promoted {
            break;
        }
    }
    assert_eq!(r.state.phase, Phase::Promoted);
    let advances = r
        .actions()
        .iter()
        .filter(|a| **a == Action::Advance)
        .count();
    assert_eq!(advances, 4);
    let last = r.state.decisions.back().unwrap();
    assert_eq!(last.action, Action::Promote);
    assert!(
        last.evidence
            .as_ref()
            .unwrap()
            .gate
            .as_ref()
            .unwrap()
            .passed
    );
    // no further ticks matter
    assert!(r.tick(2000, 50.0).is_empty());
}

#[test]
fn bad_canary_is_rolled_back_with_evidence() {
    let mut r = Run::new();
    r.through_baseline();
    for _ in 0..100 {
        r.tick(2000, 10.0);
        if r.state.phase == Phase::RolledBack {
            break;
        }
    }
    assert_eq!(r.state.phase, Phase::RolledBack);
    assert_eq!(r.state.weight(), CanaryWeight::ZERO);
    let rec = r.state.decisions.back().unwrap();
    assert_eq!(
        (rec.action, rec.trigger),
        (Action::Rollback, Trigger::Judge)
    );
    let ev = rec.evidence.as_ref().unwrap();
    assert!(ev.e >= 100.0 && ev.p_value <= 0.01, "{ev:?}");
    let line = rec.to_json_line();
    assert!(line.starts_with("{\"at\":") && !line.contains('\n'));
}

#[test]
fn pause_freezes_and_resume_continues() {
    let mut r = Run::new();
    r.through_baseline();
    let fx = r.cmd(Command::Pause);
    assert_eq!(r.state.phase, Phase::Paused);
    assert_eq!(weight_set(&fx), None);
    for _ in 0..30 {
        assert_eq!(weight_set(&r.tick(2000, 1.0)), None);
    }
    assert!(r
        .state
        .status(&r.policy)
        .waiting_for
        .unwrap()
        .contains("paused by operator"));
    assert!(
        r.cmd(Command::Pause).is_empty(),
        "pausing twice does nothing"
    );
    r.cmd(Command::Resume);
    assert_eq!(r.state.phase, Phase::Progressing);
    let mut advanced = false;
    for _ in 0..10 {
        advanced |= weight_set(&r.tick(2000, 1.0)) == Some(5.0);
    }
    assert!(advanced);
}

#[test]
fn operator_promote_and_rollback() {
    let mut r = Run::new();
    r.through_baseline();
    let fx = r.cmd(Command::Promote);
    assert_eq!(
        (r.state.phase, weight_set(&fx)),
        (Phase::Promoted, Some(100.0))
    );
    let fx = r.cmd(Command::Rollback);
    assert_eq!(
        (r.state.phase, weight_set(&fx)),
        (Phase::RolledBack, Some(0.0))
    );
    assert_eq!(r.state.decisions.back().unwrap().trigger, Trigger::Operator);
}

#[test]
fn rollback_stays_at_zero_until_resume_restarts_from_first_step() {
    let mut r = Run::new();
    r.through_baseline();
    for _ in 0..15 {
        r.tick(2000, 1.0);
    }
    assert!(r.state.step > 0);
    r.cmd(Command::Rollback);
    for _ in 0..20 {
        assert!(r.tick(2000, 1.0).is_empty());
    }
    assert!(r
        .state
        .on(
            RampEvent::ConfigChanged { new_ramp: false },
            r.now,
            &r.policy
        )
        .is_empty());
    assert_eq!(r.state.phase, Phase::RolledBack);
    let fx = r.cmd(Command::Resume);
    assert_eq!(
        (r.state.phase, r.state.step, weight_set(&fx)),
        (Phase::Progressing, 0, Some(1.0))
    );
    assert_eq!(r.state.judge.rollback_errors.log_e(), 0.0, "fresh evidence");
}

#[test]
fn new_canary_after_rollback_starts_a_new_ramp() {
    let mut r = Run::new();
    r.through_baseline();
    r.cmd(Command::Rollback);
    let fx = r.state.on(
        RampEvent::ConfigChanged { new_ramp: true },
        r.now,
        &r.policy,
    );
    assert_eq!(
        (r.state.phase, weight_set(&fx)),
        (Phase::Progressing, Some(1.0))
    );
    let rec = r.state.decisions.back().unwrap();
    assert_eq!(
        (rec.action, rec.trigger),
        (Action::NewRamp, Trigger::Config)
    );
}

#[test]
fn low_traffic_holds_says_why_and_pauses_after_max_step_duration() {
    let mut r = Run::new();
    r.through_baseline();
    // 20 requests per tick: the 1 % step sees a canary request rarely
    r.tick(100, 1.0);
    let w = r.state.status(&r.policy).waiting_for.unwrap();
    assert!(
        w.contains("canary needs") && w.contains("more requests"),
        "{w}"
    );
    let mut paused_at = None;
    for i in 0..400 {
        r.tick(100, 1.0);
        if r.state.phase == Phase::Paused {
            paused_at = Some(i);
            break;
        }
    }
    assert_eq!(r.state.step, 0, "never advanced without data");
    assert!(paused_at.is_some());
    let reason = r.state.pause_reason.clone().unwrap();
    assert!(reason.starts_with("insufficient traffic"), "{reason}");
    assert!(r
        .state
        .status(&r.policy)
        .waiting_for
        .unwrap()
        .contains("insufficient traffic"));
    assert_eq!(
        r.actions()
            .iter()
            .filter(|a| **a == Action::Rollback)
            .count(),
        0
    );
}

#[test]
fn gate_shortfall_pause_names_the_bound() {
    let policy = RampPolicy {
        max_step_duration: Duration::from_secs(120),
        ..RampPolicy::default()
    };
    let mut r = Run::with(policy);
    r.through_baseline();
    for _ in 0..60 {
        // plenty of requests; canary 1.5× worse: neither rolled back nor shown < 5× quickly at 5 %
        r.tick(2000, 1.5);
        if r.state.phase != Phase::Progressing {
            break;
        }
    }
    if r.state.phase == Phase::Paused {
        let reason = r.state.pause_reason.clone().unwrap();
        assert!(reason.contains("worse"), "{reason}");
    }
}

#[test]
fn persisted_state_makes_identical_future_decisions() {
    let mut a = Run::new();
    a.through_baseline();
    for _ in 0..4 {
        a.tick(2000, 1.3);
    }
    let json = serde_json::to_string(&a.state).unwrap();
    let restored: RampState = serde_json::from_str(&json).unwrap();
    assert_eq!(restored, a.state);
    let mut b = Run {
        state: restored,
        policy: a.policy.clone(),
        now: a.now,
        log: Vec::new(),
    };
    for i in 0..60u64 {
        let mult = 1.0 + (i % 7) as f64 * 0.4;
        assert_eq!(a.tick(2000, mult), b.tick(2000, mult));
    }
    assert_eq!(a.state, b.state);
}

#[test]
fn idle_ignores_everything_until_start() {
    let p = RampPolicy::default();
    let mut s = RampState::idle();
    assert!(s
        .on(RampEvent::Tick(tick(2000, 0.0, 1.0)), 10_000, &p)
        .is_empty());
    assert!(s
        .on(RampEvent::Command(Command::Promote), 10_000, &p)
        .is_empty());
    let fx = s.on(RampEvent::Start, 20_000, &p);
    assert_eq!((s.phase, weight_set(&fx)), (Phase::Baseline, Some(0.0)));
    assert_eq!(s.status(&p).state, Phase::Baseline);
}
