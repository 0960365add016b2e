//! Rough cost of `WindowRecorder::record` (run with `--release`).
#![allow(clippy::disallowed_types)]

use std::time::{Duration, Instant};

use grayproxy::domain::Arm;
use grayproxy::ramp::WindowRecorder;

fn main() {
    let r = WindowRecorder::new();
    let n = 20_000_000u64;
    let t0 = Instant::now();
    for i in 0..n {
        let arm = if i % 20 == 0 {
            Arm::Canary
        } else {
            Arm::Stable
        };
        r.record(
            arm,
            (i & 1) as usize,
            i % 200 == 0,
            Duration::from_micros(1000 + (i * 7919) % 500_000),
        );
    }
    let el = t0.elapsed();
    let t = r.take();
    println!(
        "{:.1} ns per record (1 thread); {} requests",
        el.as_nanos() as f64 / n as f64,
        t.stable.requests + t.canary.requests
    );
    let t0 = Instant::now();
    std::thread::scope(|s| {
        for k in 0..2u64 {
            let r = &r;
            s.spawn(move || {
                for i in 0..n / 2 {
                    r.record(
                        Arm::Stable,
                        ((i + k) & 1) as usize,
                        false,
                        Duration::from_micros(40_000 + i % 1000),
                    );
                }
            });
        }
    });
    println!(
        "{:.1} ns per record (2 threads, contended)",
        t0.elapsed().as_nanos() as f64 / (n / 2) as f64
    );
}
