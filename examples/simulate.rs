//! Prints the `simulate` table for the design conditions of docs/judge.md (default ramp policy;
//! below 20 req/s only the healthy and 5× rows):
//! `cargo run --release --example simulate -- [RUNS] [RPS] [SEED] [MAX_STEP_SECS]`.

use std::time::Duration;

use grayproxy::config::types::RampPolicy;
use grayproxy::ramp::sim::{run, SimOptions};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: f64| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let mut opts = SimOptions {
        runs: arg(1, 1000.0) as usize,
        rps: arg(2, 200.0),
        seed: arg(3, 1.0) as u64,
        ..SimOptions::default()
    };
    let mut policy = RampPolicy::default();
    if let Some(s) = args.get(4).and_then(|s| s.parse().ok()) {
        policy.max_step_duration = Duration::from_secs(s);
    }
    if opts.rps < 20.0 {
        // The low-traffic row of docs/judge.md: healthy and 5× errors only.
        opts.scenarios
            .retain(|s| s.name == "healthy" || s.name == "errors ×5");
    }
    print!("{}", run(&policy, &opts));
}
