//! The shadow phase in `simulate`: the paired judge on seeded mirrored
//! pairs, for healthy and 2×, 5×, 20× worse canaries. Each pair is one
//! request answered by both arms: stable fails with the stable error rate
//! and is slow (above `T`) 1 % of the time; the canary does both `m` times
//! as often. The judge looks every 50 pairs (a tick's worth at moderate
//! traffic). Users served by the canary in this phase: always 0.

use std::fmt;

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::types::RampPolicy;
use crate::ramp::judge::alpha;
use crate::ramp::judge::paired::{Pair, PairedEvidence, PairedVerdict};

/// Canary multipliers simulated.
pub const MULTIPLIERS: [f64; 4] = [1.0, 2.0, 5.0, 20.0];
/// Pairs a phase may judge in the simulation at most.
pub const PAIR_BUDGET: u64 = 20_000;
/// Pairs between two looks.
const LOOK_EVERY: u64 = 50;
/// Stable's share of slow requests.
const SLOW_RATE: f64 = 0.01;
/// The slow threshold used by the simulated pairs, in seconds.
const T: f64 = 0.1;

/// One multiplier's result.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowRow {
    /// How much worse the canary is.
    pub multiplier: f64,
    /// Share of phases that rolled back within [`PAIR_BUDGET`] pairs.
    pub p_rollback: f64,
    /// Median pairs to the rollback (of those that rolled back).
    pub median_pairs: Option<u64>,
}

/// The shadow phase's table.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowSimReport {
    /// One row per multiplier.
    pub rows: Vec<ShadowRow>,
    /// Runs per row.
    pub runs: usize,
}

/// Pairs a phase needs before a rollback, `None` when it never rolls back
/// within the budget.
fn one_phase(
    policy: &RampPolicy,
    stable_error_rate: f64,
    m: f64,
    rng: &mut SmallRng,
) -> Option<u64> {
    let mut ev = PairedEvidence::default();
    let mut batch = Vec::with_capacity(LOOK_EVERY as usize);
    let canary_error = (stable_error_rate * m).min(1.0);
    let canary_slow = (SLOW_RATE * m).min(1.0);
    while ev.pairs < PAIR_BUDGET {
        batch.clear();
        for _ in 0..LOOK_EVERY {
            let latency = |slow: bool| if slow { 1.0 } else { 0.04 };
            batch.push(Pair {
                stable_failed: rng.gen_bool(stable_error_rate),
                canary_failed: rng.gen_bool(canary_error),
                stable_seconds: latency(rng.gen_bool(SLOW_RATE)),
                canary_seconds: latency(rng.gen_bool(canary_slow)),
                rbo: None,
            });
        }
        ev.observe(&batch, Some(T));
        if let PairedVerdict::Worse(_) =
            ev.verdict(alpha(policy), policy.min_rbo, policy.min_requests)
        {
            return Some(ev.pairs);
        }
    }
    None
}

/// Runs `runs` shadow phases per multiplier.
pub fn run(policy: &RampPolicy, stable_error_rate: f64, runs: usize, seed: u64) -> ShadowSimReport {
    let rows = MULTIPLIERS
        .iter()
        .enumerate()
        .map(|(i, &m)| {
            let mut needed: Vec<u64> = (0..runs)
                .filter_map(|r| {
                    let mut rng = SmallRng::seed_from_u64(seed ^ ((i as u64) << 32) ^ r as u64);
                    one_phase(policy, stable_error_rate, m, &mut rng)
                })
                .collect();
            needed.sort_unstable();
            ShadowRow {
                multiplier: m,
                p_rollback: needed.len() as f64 / runs.max(1) as f64,
                median_pairs: needed.get(needed.len() / 2).copied(),
            }
        })
        .collect();
    ShadowSimReport { rows, runs }
}

impl fmt::Display for ShadowSimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "\nshadow phase ({} runs per row, up to {PAIR_BUDGET} mirrored pairs each; users served by the canary: 0)",
            self.runs
        )?;
        writeln!(
            f,
            "{:<10} {:>12} {:>22} {:>15}",
            "canary", "P(rollback)", "median mirrored pairs", "users exposed"
        )?;
        for r in &self.rows {
            let pairs = r
                .median_pairs
                .map_or_else(|| "-".to_string(), |p| p.to_string());
            let name = if r.multiplier == 1.0 {
                "healthy".to_string()
            } else {
                format!("{}x", r.multiplier)
            };
            writeln!(
                f,
                "{name:<10} {:>11.1}% {pairs:>22} {:>15}",
                r.p_rollback * 100.0,
                0
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_canaries_pass_and_bad_ones_are_caught() {
        let policy = RampPolicy::default();
        let r = run(&policy, 0.005, 40, 3);
        let p = |m: f64| {
            r.rows
                .iter()
                .find(|row| row.multiplier == m)
                .map(|row| row.p_rollback)
        };
        assert!(p(1.0) <= Some(0.05), "{r}");
        assert_eq!(p(20.0), Some(1.0), "{r}");
        assert_eq!(p(5.0), Some(1.0), "{r}");
        assert!(r.to_string().contains("users exposed"));
    }
}
