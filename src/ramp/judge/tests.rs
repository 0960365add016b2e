#![allow(clippy::unwrap_used, clippy::expect_used)]
use std::time::Duration;

use super::*;

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
