#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Duration;

use super::*;
use crate::ramp::window::{edge_seconds, ArmTick, JudgeHistogram};

fn arm(requests: u64, errors: u64, slow: u64) -> ArmTick {
    let mut latency = JudgeHistogram::new();
    latency.add_to_bucket(
        crate::ramp::window::bucket_of(Duration::from_millis(40)),
        requests - slow,
    );
    latency.add_to_bucket(
        crate::ramp::window::bucket_of(Duration::from_millis(400)),
        slow,
    );
    ArmTick {
        requests,
        errors,
        latency,
    }
}

fn tick(canary: (u64, u64, u64), stable: (u64, u64, u64)) -> TickCounts {
    let (n, x, y) = stable;
    let h0 = arm(n / 2, x / 2, y / 2);
    let h1 = arm(n - n / 2, x - x / 2, y - y / 2);
    TickCounts::from_halves(arm(canary.0, canary.1, canary.2), [h0, h1])
}

fn calibrated(policy: &RampPolicy) -> Judge {
    let mut j = Judge::new();
    for t in 1..=60u64 {
        j.calibrate(&tick((0, 0, 0), (2000, 10, 20)), t * 10_000, policy);
    }
    j.finish_calibration(policy);
    j.start_ramp(policy);
    j
}

#[test]
fn calibration_sets_rates_and_threshold() {
    let p = RampPolicy::default();
    let j = calibrated(&p);
    let t = j.thresholds.as_ref().unwrap();
    assert!((t.base_error_rate - 0.005).abs() < 1e-9);
    assert_eq!(t.r0_errors, 1.0);
    let edge = t.slow_edge.unwrap();
    assert!(edge_seconds(edge) >= t.baseline_p99_seconds.unwrap());
    assert!(t.notes.is_empty(), "{:?}", t.notes);
    assert!((t.base_slow_rate - 0.01).abs() < 1e-9);
}

#[test]
fn short_baseline_says_so_and_resets_phi() {
    let p = RampPolicy::default();
    let mut j = Judge::new();
    j.calibrate(&tick((0, 0, 0), (2000, 10, 0)), 10_000, &p);
    let t = j.finish_calibration(&p);
    assert!(t.notes.iter().any(|n| n.contains("φ̂ = 1")), "{:?}", t.notes);
    assert_eq!(j.dispersion_errors.phi(), 1.0);
}

#[test]
fn max_error_rate_increase_raises_r0() {
    let p = RampPolicy {
        max_error_rate_increase: 0.01,
        ..RampPolicy::default()
    };
    let j = calibrated(&p);
    assert!((j.rollback_errors.r0 - 3.0).abs() < 1e-9);
}

#[test]
fn worse_canary_rolls_back_and_equal_one_does_not() {
    let p = RampPolicy::default();
    let mut bad = calibrated(&p);
    let mut good = calibrated(&p);
    let mut rolled = None;
    for t in 0..60u64 {
        let now = 700_000 + t * 10_000;
        let v = bad.observe(&tick((200, 5, 2), (1800, 9, 18)), now, &p, 0.0);
        if v.rollback && rolled.is_none() {
            rolled = Some(t);
        }
        let g = good.observe(&tick((200, 1, 2), (1800, 9, 18)), now, &p, 5.0);
        assert!(!g.rollback);
    }
    assert!(rolled.is_some());
    let ev = bad.evidence(&p, &ArmTick::default(), &ArmTick::default());
    assert!(ev.p_value <= 0.01);
    assert!(ev.ratio_errors.low.unwrap() > 1.0);
    let gv = good.last.clone().unwrap();
    assert!(gv.gate_passed(), "{gv:?} {:?}", good.thresholds);
}

#[test]
fn shared_incident_holds_and_never_rolls_back() {
    let p = RampPolicy::default();
    let mut j = calibrated(&p);
    let mut held = false;
    for t in 0..30u64 {
        // both arms fail 10× more than the baseline, in proportion
        let v = j.observe(
            &tick((500, 25, 5), (1500, 75, 15)),
            700_000 + t * 10_000,
            &p,
            3.0,
        );
        assert!(!v.rollback);
        held |= v.hold;
        if t > 2 {
            assert!(v.hold);
        }
    }
    assert!(held);
}

#[test]
fn state_round_trips_through_json_exactly() {
    let p = RampPolicy::default();
    let mut j = calibrated(&p);
    for t in 0..10u64 {
        j.observe(
            &tick((200, 3, 2), (1800, 9, 18)),
            700_000 + t * 10_000,
            &p,
            5.0,
        );
    }
    let s = serde_json::to_string(&j).unwrap();
    let back: Judge = serde_json::from_str(&s).unwrap();
    assert_eq!(back, j);
}

#[test]
fn eta_follows_drift() {
    let p = RampPolicy::default();
    let mut j = calibrated(&p);
    let mut eta = None;
    for t in 0..4u64 {
        let v = j.observe(
            &tick((50, 0, 0), (1950, 10, 20)),
            700_000 + t * 10_000,
            &p,
            1.5,
        );
        if !v.gate_passed() {
            eta = j.gate_eta_seconds();
        }
    }
    assert!(eta.is_some_and(|s| s > 0.0), "{eta:?} {:?}", j.gate_history);
}

#[test]
fn runs_of_errors_on_the_canary_alone_are_tempered_not_rolled_back() {
    let p = RampPolicy::default();
    let mut j = calibrated(&p);
    // 5 % weight: the canary's 100 requests a tick fail at stable's rate on
    // average (0.5 %), but in runs of five every tenth tick.
    for t in 0..120u64 {
        let x_c = if t % 10 == 3 { 5 } else { 0 };
        let v = j.observe(
            &tick((100, x_c, 1), (1900, 10, 19)),
            700_000 + t * 10_000,
            &p,
            5.0,
        );
        assert!(!v.rollback, "tick {t}: {v:?}");
    }
    assert!(j.phi_errors() > 3.0, "{}", j.phi_errors());
    // The same canary errors spread one per other tick: no tempering.
    let mut k = calibrated(&p);
    for t in 0..120u64 {
        k.observe(
            &tick((100, t % 2, 1), (1900, 10, 19)),
            700_000 + t * 10_000,
            &p,
            5.0,
        );
    }
    assert_eq!(k.phi_errors(), 1.0);
}

#[test]
fn the_ramp_starts_with_the_baselines_last_minute() {
    let p = RampPolicy {
        tick: Duration::from_secs(1),
        ..RampPolicy::default()
    };
    let mut j = Judge::new();
    for t in 1..=600u64 {
        // 200 stable requests a second, one error a second, one slow
        j.calibrate(&tick((0, 0, 0), (200, 1, 2)), t * 1000, &p);
    }
    j.finish_calibration(&p);
    j.start_ramp(&p);
    assert_eq!(j.incident_errors.ticks.len(), 60);
    // Early in the ramp, a burst of eight errors on both arms at once.
    let mut held = false;
    for t in 1..=30u64 {
        let x = if t == 3 { 8 } else { 1 };
        let v = j.observe(
            &tick((20, x / 2, 0), (180, x, 2)),
            600_000 + t * 1000,
            &p,
            0.0,
        );
        held |= v.hold;
    }
    assert!(
        !held,
        "a burst weighed against a full minute of history is no incident"
    );
}

#[test]
fn audit_range_stays_an_interval() {
    let p = RampPolicy::default();
    let mut j = calibrated(&p);
    for t in 0..500u64 {
        j.observe(
            &tick((1000, 10, 10), (1000, 10, 10)),
            700_000 + t * 10_000,
            &p,
            1.5,
        );
    }
    let ev = j.evidence(&p, &ArmTick::default(), &ArmTick::default());
    let (lo, hi) = (ev.ratio_errors.low.unwrap(), ev.ratio_errors.high.unwrap());
    assert!(lo < 1.0 && hi > 1.0 && hi / lo < 1.5, "{lo} {hi}");
}
