//! Decision quality of the real ramp (state machine + judge) on the seeded
//! traffic model of `grayproxy simulate`, under the conditions of the
//! targets in docs/judge.md: 200 req/s, stable error rate 0.5 %, stable p99
//! 162 ms, steps 1/5/10/25/50/100, confidence 0.99. 300 rollouts per
//! scenario (the full-size table in docs/judge.md uses 1000:
//! `grayproxy simulate -c config/grayproxy.toml --route recommend`),
//! targets with a little slack for the smaller sample.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use grayproxy::config::types::RampPolicy;
use grayproxy::ramp::sim::{run, standard_scenarios, Scenario, SimOptions, SimReport};
use grayproxy::ramp::Phase;

const RUNS: usize = 300;

fn simulate(rps: f64, scenarios: Vec<Scenario>, seed: u64) -> SimReport {
    simulate_with(
        &RampPolicy::default(),
        SimOptions {
            rps,
            runs: RUNS,
            seed,
            scenarios,
            threads: 2,
            ..SimOptions::default()
        },
    )
}

fn simulate_with(policy: &RampPolicy, opts: SimOptions) -> SimReport {
    let report = run(policy, &opts);
    println!("{report}");
    report
}

fn median(v: &[f64]) -> f64 {
    grayproxy::ramp::sim::quantile(v, 0.5).unwrap_or(f64::INFINITY)
}

fn p95(v: &[f64]) -> f64 {
    grayproxy::ramp::sim::quantile(v, 0.95).unwrap_or(f64::INFINITY)
}

#[test]
fn targets_at_200_rps() {
    let r = simulate(200.0, standard_scenarios(), 11);
    let row = |n: &str| r.row(n).unwrap_or_else(|| panic!("no scenario {n}"));

    let healthy = row("healthy");
    assert!(
        healthy.p_rollback() <= 0.02,
        "healthy false rollbacks {}",
        healthy.p_rollback()
    );
    let t = healthy.promotion_times();
    assert!(
        median(&t) <= 7.0 * 60.0,
        "healthy time to 100 % median {} s",
        median(&t)
    );
    assert!(
        p95(&t) <= 12.0 * 60.0,
        "healthy time to 100 % p95 {} s",
        p95(&t)
    );

    let incident = row("shared incident, healthy");
    assert!(
        incident.p_rollback() <= 0.02,
        "shared-incident false rollbacks {}",
        incident.p_rollback()
    );
    let bursty = row("healthy, bursty errors");
    assert!(
        bursty.p_rollback() <= 0.03,
        "bursty false rollbacks {}",
        bursty.p_rollback()
    );
    // Runs of five errors on the canary alone, no worse on average: a hold,
    // not a rollback (23 % false rollbacks when φ̂ came from stable only).
    let canary_bursts = row("canary-only bursts");
    assert!(
        canary_bursts.p_rollback() <= 0.02,
        "canary-only bursts false rollbacks {}",
        canary_bursts.p_rollback()
    );

    let x15 = row("errors ×1.5");
    assert!(
        x15.p_rollback() >= 0.93,
        "1.5× detected before 100 %: {}",
        x15.p_rollback()
    );
    let x2 = row("errors ×2");
    assert!(x2.p_rollback() >= 0.97, "2× detected {}", x2.p_rollback());
    assert!(
        median(&x2.rollback_exposure()) <= 5000.0,
        "2× exposure {}",
        median(&x2.rollback_exposure())
    );
    for (name, limit) in [
        ("errors ×5", 500.0),
        ("errors ×20", 100.0),
        ("p99 +100%", 200.0),
        ("p99 +20%", 3000.0),
    ] {
        let s = row(name);
        assert!(s.p_rollback() >= 0.97, "{name} detected {}", s.p_rollback());
        let m = median(&s.rollback_exposure());
        assert!(
            m <= limit,
            "{name}: median canary requests before rollback {m} > {limit}"
        );
    }
    let bad_incident = row("errors ×2 during shared incident");
    assert!(
        bad_incident.p_promoted() <= 0.02,
        "2× promoted during an incident {}",
        bad_incident.p_promoted()
    );
}

/// The low-traffic row of docs/judge.md: 2 req/s over 8 h. The target
/// assumes no step timeout, so `max_step_duration` is set to the horizon here; with the
/// default 30 min the 1 % step pauses (see the next test).
#[test]
fn targets_at_2_rps() {
    let policy = RampPolicy {
        max_step_duration: Duration::from_secs(8 * 3600),
        ..RampPolicy::default()
    };
    let healthy = Scenario::healthy("healthy");
    let x5 = Scenario {
        error_multiplier: 5.0,
        bad: true,
        ..Scenario::healthy("errors ×5")
    };
    let opts = SimOptions {
        rps: 2.0,
        runs: RUNS,
        seed: 12,
        scenarios: vec![healthy, x5],
        threads: 2,
        ..SimOptions::default()
    };
    let r = simulate_with(&policy, opts);
    let h = r.row("healthy").unwrap();
    assert!(
        h.p_rollback() <= 0.02,
        "2 req/s false rollbacks {}",
        h.p_rollback()
    );
    // Too little data is never a decision: every undecided ramp says what it waits for.
    assert_eq!(h.p_unexplained(), 0.0);
    let b = r.row("errors ×5").unwrap();
    assert!(
        b.p_rollback() >= 0.97,
        "2 req/s 5× detected {}",
        b.p_rollback()
    );
    assert!(
        b.p_promoted() <= 0.01,
        "2 req/s 5× promoted {}",
        b.p_promoted()
    );
}

/// With the default `max_step_duration` (30 min), a step that cannot gather
/// its requests pauses with a reason; nothing is promoted or rolled back.
#[test]
fn low_traffic_pauses_with_a_reason() {
    let opts = SimOptions {
        rps: 2.0,
        runs: 100,
        seed: 13,
        horizon: Some(Duration::from_secs(3600)),
        scenarios: vec![Scenario::healthy("healthy")],
        threads: 2,
        ..SimOptions::default()
    };
    let r = simulate_with(&RampPolicy::default(), opts);
    let h = r.row("healthy").unwrap();
    assert_eq!(
        (h.p_rollback(), h.p_promoted(), h.p_unexplained()),
        (0.0, 0.0, 0.0)
    );
    assert!(
        h.outcomes.iter().all(|o| o.phase == Phase::Paused),
        "all paused after 30 min at 1 %"
    );
}
