//! The shadow phase, as scripted event sequences.
#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Duration;

use super::tests::Run;
use super::*;
use crate::ramp::judge::paired::Pair;

fn policy() -> RampPolicy {
    RampPolicy {
        shadow: Some(Duration::from_secs(60)),
        min_requests: 100,
        ..RampPolicy::default()
    }
}

fn pairs(n: usize, canary_fails_every: usize, rbo: f64) -> Vec<Pair> {
    (0..n)
        .map(|i| Pair {
            stable_failed: false,
            canary_failed: canary_fails_every > 0 && i % canary_fails_every == 0,
            stable_seconds: 0.04,
            canary_seconds: 0.04,
            rbo: Some(rbo),
        })
        .collect()
}

fn into_shadow(policy: RampPolicy) -> Run {
    let mut r = Run::with(policy);
    r.through_baseline();
    assert_eq!(r.state.phase, Phase::Shadowing);
    assert_eq!(r.state.weight(), CanaryWeight::ZERO);
    let last = r.state.decisions.back().unwrap();
    assert_eq!(last.action, Action::ShadowStarted);
    r
}

fn feed(r: &mut Run, p: Vec<Pair>) -> Vec<Effect> {
    r.state.on(RampEvent::ShadowPairs(p), r.now, &r.policy)
}

#[test]
fn a_good_canary_leaves_the_shadow_phase_after_its_time_and_enough_pairs() {
    let mut r = into_shadow(policy());
    feed(&mut r, pairs(50, 0, 1.0));
    for _ in 0..7 {
        r.tick(1000, 1.0);
    }
    assert_eq!(
        r.state.phase,
        Phase::Shadowing,
        "70 s passed but only 50 pairs"
    );
    assert!(crate::ramp::status::waiting_for(&r.state, &r.policy)
        .unwrap()
        .contains("50 more mirrored pairs"));
    feed(&mut r, pairs(60, 0, 1.0));
    let fx = r.tick(1000, 1.0);
    assert_eq!(r.state.phase, Phase::Progressing);
    assert!(fx.contains(&Effect::SetWeight(r.policy.steps[0])));
    let last = r.state.decisions.back().unwrap();
    assert_eq!(last.action, Action::RampStarted);
    assert!(
        last.reason.contains("shadow phase passed: 110 pairs"),
        "{}",
        last.reason
    );
}

#[test]
fn enough_pairs_alone_do_not_end_the_phase() {
    let mut r = into_shadow(policy());
    feed(&mut r, pairs(500, 0, 1.0));
    r.tick(1000, 1.0);
    assert_eq!(r.state.phase, Phase::Shadowing, "10 s of 60");
}

#[test]
fn a_half_failing_canary_is_rolled_back_having_served_no_user() {
    let mut r = into_shadow(policy());
    let mut weights = Vec::new();
    for _ in 0..20 {
        let fx = feed(&mut r, pairs(10, 2, 1.0));
        weights.extend(fx.iter().filter_map(|e| match e {
            Effect::SetWeight(w) => Some(*w),
            _ => None,
        }));
        if r.state.phase != Phase::Shadowing {
            break;
        }
    }
    assert_eq!(r.state.phase, Phase::RolledBack);
    assert!(
        weights.iter().all(|w| *w == CanaryWeight::ZERO),
        "{weights:?}"
    );
    let last = r.state.decisions.back().unwrap();
    assert_eq!(
        (last.action, last.trigger),
        (Action::Rollback, Trigger::Judge)
    );
    assert!(last.reason.contains("no user served"), "{}", last.reason);
    assert!(
        r.state.shadow_evidence().pairs <= 60,
        "{:?}",
        r.state.shadow_evidence()
    );
}

#[test]
fn lists_below_min_rbo_roll_back() {
    let mut r = into_shadow(RampPolicy {
        min_rbo: Some(0.5),
        ..policy()
    });
    feed(&mut r, pairs(99, 0, 0.3));
    assert_eq!(
        r.state.phase,
        Phase::Shadowing,
        "fewer than min_requests lists"
    );
    feed(&mut r, pairs(1, 0, 0.3));
    assert_eq!(r.state.phase, Phase::RolledBack);
    assert!(r
        .state
        .decisions
        .back()
        .unwrap()
        .reason
        .contains("mean RBO 0.300 < min_rbo 0.5"));
}

#[test]
fn pairs_outside_the_shadow_phase_are_ignored_and_resume_returns_to_it() {
    let mut r = Run::with(policy());
    assert!(
        feed(&mut r, pairs(10, 1, 1.0)).is_empty(),
        "baseline ignores pairs"
    );
    let mut r = into_shadow(policy());
    r.cmd(Command::Pause);
    assert_eq!(r.state.phase, Phase::Paused);
    r.tick(1000, 1.0);
    r.cmd(Command::Resume);
    assert_eq!(r.state.phase, Phase::Shadowing);
    // A state file written in the shadow phase reads back the same.
    let text = serde_json::to_string(&r.state).unwrap();
    let back: RampState = serde_json::from_str(&text).unwrap();
    assert_eq!(back, r.state);
}
