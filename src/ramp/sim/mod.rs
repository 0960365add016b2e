//! The `simulate` engine: the route's real [`RampState`] (and so the real
//! judge) driven by seeded simulated traffic (the tick model of
//! docs/judge.md, see [`traffic`]), many rollouts per scenario.
//!
//! Deterministic for a given seed and build: every rollout has its own RNG
//! seeded from (seed, scenario, rollout), so threads do not change results.

mod report;
pub mod segments;
pub mod shadow;
pub mod traffic;

use std::time::Duration;

use rand::rngs::SmallRng;
use rand::SeedableRng;

use crate::config::types::RampPolicy;
use crate::ramp::state::{ms, Effect, Phase, RampEvent, RampState};

pub use report::{quantile, ScenarioResult, SimReport};
pub use segments::{segment_scenarios, SimSegment};
pub use traffic::{Incident, Scenario, Traffic};

/// What to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct SimOptions {
    /// Requests per second on the route (weight-assigned).
    pub rps: f64,
    /// Stable's error rate.
    pub stable_error_rate: f64,
    /// Rollouts per scenario.
    pub runs: usize,
    /// Seed of the whole simulation.
    pub seed: u64,
    /// Time simulated after the first step begins; `None` = 1 h (8 h below 20 req/s).
    pub horizon: Option<Duration>,
    /// Scenarios to run (default [`standard_scenarios`]).
    pub scenarios: Vec<Scenario>,
    /// Worker threads (default: available parallelism).
    pub threads: usize,
}

impl Default for SimOptions {
    fn default() -> Self {
        SimOptions {
            rps: 200.0,
            stable_error_rate: 0.005,
            runs: 1000,
            seed: 1,
            horizon: None,
            scenarios: standard_scenarios(),
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl SimOptions {
    /// The horizon actually used.
    pub fn effective_horizon(&self) -> Duration {
        self.horizon.unwrap_or(if self.rps < 20.0 {
            Duration::from_secs(8 * 3600)
        } else {
            Duration::from_secs(3600)
        })
    }
}

/// The 5-minute shared incident of the targets (docs/judge.md): from 1 min to 6 min after the
/// first step begins, 5 % extra failures and 2× latency on both arms.
pub fn shared_incident() -> Incident {
    Incident {
        start_s: 60.0,
        end_s: 360.0,
        failure_prob: 0.05,
        latency_factor: 2.0,
    }
}

/// Healthy, bursty, shared incident, 1.5×/2×/5×/20× errors, p99 +20 %/+100 %,
/// 2× errors during a shared incident.
pub fn standard_scenarios() -> Vec<Scenario> {
    let h = Scenario::healthy;
    let errs = |m: f64| Scenario {
        error_multiplier: m,
        bad: true,
        ..h(&format!("errors ×{m}"))
    };
    let p99 = |x: f64| Scenario {
        p99_increase: x,
        bad: true,
        ..h(&format!("p99 +{:.0}%", x * 100.0))
    };
    vec![
        h("healthy"),
        Scenario {
            burst: 5.0,
            ..h("healthy, bursty errors")
        },
        Scenario {
            canary_burst: 5.0,
            ..h("canary-only bursts")
        },
        Scenario {
            incident: Some(shared_incident()),
            ..h("shared incident, healthy")
        },
        errs(1.5),
        errs(2.0),
        errs(5.0),
        errs(20.0),
        p99(0.2),
        p99(1.0),
        Scenario {
            incident: Some(shared_incident()),
            ..errs(2.0).named("errors ×2 during shared incident")
        },
    ]
}

impl Scenario {
    /// The same scenario under another name.
    pub fn named(mut self, name: &str) -> Scenario {
        self.name = name.to_string();
        self
    }
}

/// How one rollout ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RunOutcome {
    /// The phase at the end: `RolledBack`, `Promoted`, or where it stood at the horizon.
    pub phase: Phase,
    /// Seconds from the first step to the decision (`None` when undecided).
    pub decision_s: Option<f64>,
    /// Canary requests served until the decision (or the horizon).
    pub canary_requests: u64,
    /// An undecided ramp said what it was waiting for.
    pub explained: bool,
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One rollout: baseline, then the ramp until a decision or the horizon.
pub fn run_one(
    policy: &RampPolicy,
    traffic: &Traffic,
    scen: &Scenario,
    horizon: Duration,
    seed: u64,
) -> RunOutcome {
    let mut rng = SmallRng::seed_from_u64(seed);
    let tick = ms(policy.tick).max(1);
    let mut state = RampState::new(policy, 0);
    let (mut now, mut weight, mut ramp_start, mut exposure) = (0u64, 0.0, None::<u64>, 0u64);
    let baseline_end = ms(policy.baseline);
    loop {
        let t_s = match ramp_start {
            Some(s) => (now - s) as f64 / 1000.0,
            None => now as f64 / 1000.0 - baseline_end as f64 / 1000.0 - 1e6,
        };
        let counts = if scen.segments.is_empty() {
            traffic::gen_tick(&mut rng, traffic, scen, t_s, weight)
        } else {
            segments::gen_segmented_tick(&mut rng, traffic, scen, t_s, weight)
        };
        if ramp_start.is_some() {
            exposure += counts.canary.requests;
        }
        now += tick;
        for fx in state.on(RampEvent::Tick(counts), now, policy) {
            if let Effect::SetWeight(w) = fx {
                weight = w.percent() / 100.0;
            }
        }
        if ramp_start.is_none() && state.phase() != Phase::Baseline {
            ramp_start = Some(now);
        }
        let since = ramp_start.map_or(0, |s| now - s);
        match state.phase() {
            Phase::RolledBack | Phase::Promoted => {
                return RunOutcome {
                    phase: state.phase(),
                    decision_s: Some(since as f64 / 1000.0),
                    canary_requests: exposure,
                    explained: true,
                }
            }
            _ if since >= ms(horizon) => {
                return RunOutcome {
                    phase: state.phase(),
                    decision_s: None,
                    canary_requests: exposure,
                    explained: state.status(policy).waiting_for.is_some(),
                }
            }
            _ => {}
        }
    }
}

/// Runs every scenario of `opts` against `policy`.
pub fn run(policy: &RampPolicy, opts: &SimOptions) -> SimReport {
    let traffic = Traffic {
        rps: opts.rps,
        stable_error_rate: opts.stable_error_rate,
        tick_s: policy.tick.as_secs_f64(),
    };
    let horizon = opts.effective_horizon();
    // Each scenario's own policy and traffic (segments judged or not).
    let scenarios: Vec<Scenario> = opts
        .scenarios
        .iter()
        .map(|s| segments::spread_over(policy, s))
        .collect();
    let policies: Vec<RampPolicy> = scenarios
        .iter()
        .map(|s| segments::scenario_policy(policy, s))
        .collect();
    let jobs: Vec<(usize, usize)> = (0..opts.scenarios.len())
        .flat_map(|s| (0..opts.runs).map(move |r| (s, r)))
        .collect();
    let threads = opts.threads.max(1).min(jobs.len().max(1));
    let mut outcomes: Vec<Vec<Option<RunOutcome>>> = opts
        .scenarios
        .iter()
        .map(|_| vec![None; opts.runs])
        .collect();
    let parts: Vec<Vec<(usize, usize, RunOutcome)>> = std::thread::scope(|sc| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (jobs, traffic, scenarios, policies) = (&jobs, &traffic, &scenarios, &policies);
                sc.spawn(move || {
                    jobs.iter()
                        .skip(t)
                        .step_by(threads)
                        .map(|&(s, r)| {
                            let seed = mix(opts.seed ^ mix(((s as u64) << 32) | r as u64));
                            (
                                s,
                                r,
                                run_one(&policies[s], traffic, &scenarios[s], horizon, seed),
                            )
                        })
                        .collect()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect()
    });
    for (s, r, o) in parts.into_iter().flatten() {
        outcomes[s][r] = Some(o);
    }
    let rows = opts
        .scenarios
        .iter()
        .zip(outcomes)
        .map(|(scen, os)| ScenarioResult {
            scenario: scen.clone(),
            outcomes: os.into_iter().flatten().collect(),
        })
        .collect();
    SimReport {
        rps: opts.rps,
        stable_error_rate: opts.stable_error_rate,
        runs: opts.runs,
        seed: opts.seed,
        horizon,
        rows,
    }
}
