//! Per-segment guardrails on the seeded traffic model of `grayproxy
//! simulate` (200 req/s, stable error rate 0.5 %, steps 1/5/10/25/50/100,
//! confidence 0.99): a canary 5× worse for the 10 % of traffic that is
//! `new` is rolled back before 100 %, and judging 3 or 10 segments does not
//! raise the false-rollback rate of a healthy canary. 300 rollouts per
//! scenario (`SEGMENT_RUNS` overrides; docs/judge.md has the 1,000-run
//! table), targets with a little slack for the smaller sample.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use grayproxy::config::types::RampPolicy;
use grayproxy::ramp::sim::{run, segment_scenarios, SimOptions};

#[test]
fn a_regression_confined_to_one_segment_is_caught_and_healthy_canaries_pass() {
    let runs = std::env::var("SEGMENT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let report = run(
        &RampPolicy::default(),
        &SimOptions {
            runs,
            seed: 14,
            scenarios: segment_scenarios(),
            threads: 2,
            ..SimOptions::default()
        },
    );
    println!("{report}");
    let row = |n: &str| report.row(n).unwrap_or_else(|| panic!("no scenario {n}"));
    let judged = row("errors ×5 in segment new (10 %), segments judged");
    let overall = row("errors ×5 in segment new (10 %), overall only");
    println!(
        "detected before 100 %: with segments {:.3}, overall judge alone {:.3}",
        judged.p_rollback(),
        overall.p_rollback()
    );
    assert!(
        judged.p_rollback() >= 0.93,
        "5× in a 10 % segment detected in {} of runs",
        judged.p_rollback()
    );
    assert!(
        judged.p_rollback() >= overall.p_rollback(),
        "judging segments must not detect less than the overall judge alone"
    );
    for name in ["healthy, 3 segments judged", "healthy, 10 segments judged"] {
        let r = row(name);
        assert!(
            r.p_rollback() <= 0.02,
            "{name}: false rollbacks {}",
            r.p_rollback()
        );
        assert!(
            r.p_promoted() >= 0.95,
            "{name}: promoted {}",
            r.p_promoted()
        );
    }
}

/// What judging segments costs on the standard scenarios (a route with
/// three segment values, traffic spread evenly over them and `other`): the
/// table in docs/judge.md. Slow; run with `--ignored`.
#[test]
#[ignore]
fn standard_scenarios_with_three_segments_judged() {
    use grayproxy::config::types::{SegmentPolicy, StickySource};
    let runs = std::env::var("SEGMENT_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    let policy = RampPolicy {
        segments: Some(SegmentPolicy {
            source: StickySource::Header(http::HeaderName::from_static("x-user-segment")),
            values: vec!["new".into(), "returning".into(), "app".into()],
        }),
        ..RampPolicy::default()
    };
    let report = run(
        &policy,
        &SimOptions {
            runs,
            seed: 11,
            threads: 2,
            ..SimOptions::default()
        },
    );
    println!("{report}");
    let healthy = report.row("healthy").unwrap();
    assert!(healthy.p_rollback() <= 0.02, "{}", healthy.p_rollback());
}
