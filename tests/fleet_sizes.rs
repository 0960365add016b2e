//! The sizes behind docs/fleet.md's scale table, from the real types: one
//! replica's counts value for 10/100/1,000 routes, and one route's stored
//! ramp state after a realistic run (evidence, 20 decisions). No etcd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use grayproxy::config::types::RampPolicy;
use grayproxy::fleet::counts::Accumulator;
use grayproxy::ramp::{ArmTick, JudgeHistogram, RampEvent, RampState, TickCounts};

/// A tick whose latencies spread like a real service's (a few dozen buckets).
fn realistic(requests: u64, seed: u64) -> ArmTick {
    let mut latency = JudgeHistogram::new();
    let mut x = seed;
    for _ in 0..requests {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let ms = 5.0 + ((x >> 33) % 1000) as f64 / 1000.0 * 120.0;
        latency.record(Duration::from_secs_f64(ms / 1000.0));
    }
    ArmTick {
        requests,
        errors: requests / 100,
        latency,
    }
}

fn tick(seed: u64) -> TickCounts {
    TickCounts::from_halves(
        realistic(50, seed),
        [realistic(450, seed + 1), realistic(450, seed + 2)],
    )
}

#[test]
fn counts_value_and_state_sizes() {
    for routes in [10usize, 100, 1000] {
        let mut acc = Accumulator::new(1);
        for r in 0..routes {
            for t in 0..3 {
                acc.add(&format!("route-{r:04}"), 500, &tick((r * 10 + t) as u64));
            }
        }
        let bytes = serde_json::to_vec(acc.report()).unwrap().len();
        println!(
            "counts value, {routes} routes: {bytes} bytes ({} per route)",
            bytes / routes
        );
        assert!(bytes / routes < 4_000, "{bytes}");
    }
    let policy = RampPolicy {
        tick: Duration::from_secs(1),
        interval: Duration::from_secs(5),
        min_requests: 100,
        ..RampPolicy::default()
    };
    let mut s = RampState::idle();
    s.on(RampEvent::Start, 0, &policy);
    let mut max = 0;
    for i in 1..600u64 {
        s.on(RampEvent::Tick(tick(i)), i * 1000, &policy);
        max = max.max(serde_json::to_vec(&s).unwrap().len());
    }
    let record = serde_json::to_vec(&s.decisions()[0]).unwrap().len();
    println!("one decision record: {record} bytes");
    println!("ramp state value: {} bytes now, {max} at most over the run ({} decisions kept, {:?} step {})", serde_json::to_vec(&s).unwrap().len(), s.decisions().len(), s.phase(), s.step());
}
