//! The stratified rate-ratio likelihood ratios behind every test the judge
//! runs, and the likelihood grid behind the confidence range of `r`.
//!
//! Within a tick, given its `K = x_c + x_s` events, `x_c ~ Bin(K, π(r))` with
//! `π(r) = n_c·r / (n_c·r + n_s)`. The log-likelihood ratio of `r` against
//! `r0` is `x_c·ln(r/r0) − K·ln((n_c·r + n_s)/(n_c·r0 + n_s))`; the common
//! rate cancels, so time of day and shared incidents do not move it.

use serde::{Deserialize, Serialize};

/// Rollback alternatives, as multiples of the null ratio `r0`.
pub const ROLLBACK_MULTIPLIERS: [f64; 6] = [1.5, 2.0, 3.0, 5.0, 10.0, 30.0];
/// Non-inferiority alternatives, as fractions of the gate's tolerance.
pub const GATE_FRACTIONS: [f64; 5] = [0.2, 0.35, 0.5, 0.67, 0.85];

/// `ln(e^a + e^b)` without overflow.
pub fn log_add_exp(a: f64, b: f64) -> f64 {
    let m = a.max(b);
    if m == f64::NEG_INFINITY {
        return m;
    }
    m + ((a - m).exp() + (b - m).exp()).ln()
}

/// `ln(mean(e^v))` without overflow; `-inf` for an empty slice.
pub fn log_mean_exp(v: &[f64]) -> f64 {
    let m = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if m == f64::NEG_INFINITY {
        return m;
    }
    let s: f64 = v.iter().map(|x| (x - m).exp()).sum();
    m + (s / v.len() as f64).ln()
}

/// One tick's data for one metric (errors or slow requests).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Stratum {
    /// Canary requests.
    pub n_c: u64,
    /// Stable requests.
    pub n_s: u64,
    /// Canary events.
    pub x_c: u64,
    /// Stable events.
    pub x_s: u64,
}

impl Stratum {
    /// True when the tick carries information about the ratio: both arms
    /// served requests and at least one event happened.
    pub fn informative(&self) -> bool {
        self.n_c > 0 && self.n_s > 0 && self.x_c + self.x_s > 0
    }

    /// `ln(n_c·r + n_s)`.
    fn log_denominator(&self, r: f64) -> f64 {
        (self.n_c as f64 * r + self.n_s as f64).ln()
    }
}

/// A mixture e-process: sums of log-likelihood ratios of a few alternatives
/// against one null ratio `r0`. With all alternatives above `r0` it tests
/// `H0: r ≤ r0` (rollback); all below tests `H0: r ≥ r0` (non-inferiority).
/// The sums are the whole state (persisted, so a restart resumes exactly).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatioEProcess {
    /// The null ratio.
    pub r0: f64,
    /// The alternatives (absolute ratios).
    pub alternatives: Vec<f64>,
    /// Σ over ticks of the tempered log-likelihood ratio, per alternative.
    pub log_lr: Vec<f64>,
}

impl RatioEProcess {
    /// A fresh process (E = 1) for null `r0` and alternatives `r0·m` for each multiplier.
    pub fn new(r0: f64, multipliers: &[f64]) -> RatioEProcess {
        RatioEProcess {
            r0,
            alternatives: multipliers.iter().map(|m| r0 * m).collect(),
            log_lr: vec![0.0; multipliers.len()],
        }
    }

    /// Adds one tick, its log-likelihood ratios multiplied by `scale`
    /// (1 / max(1, φ̂); 0 skips the tick).
    pub fn update(&mut self, s: &Stratum, scale: f64) {
        if !s.informative() || scale <= 0.0 {
            return;
        }
        let k = (s.x_c + s.x_s) as f64;
        let d0 = s.log_denominator(self.r0);
        for (l, &r) in self.log_lr.iter_mut().zip(&self.alternatives) {
            let inc = s.x_c as f64 * (r / self.r0).ln() - k * (s.log_denominator(r) - d0);
            *l += scale * inc;
        }
    }

    /// `ln E`: log of the mean of the alternatives' likelihood ratios.
    pub fn log_e(&self) -> f64 {
        log_mean_exp(&self.log_lr)
    }
}

/// Log-spaced grid of ratios for the confidence range: 2^(k/2), k = −8..=14.
fn grid_ratio(k: usize) -> f64 {
    2f64.powf((k as f64 - 8.0) / 2.0)
}
const GRID_POINTS: usize = 23;

/// Tempered stratified log-likelihood of `r` on a fixed grid; for each grid
/// point `r`, the mixture over the other grid points of `L(r') − L(r)` is an
/// e-process for `H0: ratio = r`, so the points it has not rejected form an
/// always-valid confidence set (at grid resolution).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LikelihoodGrid {
    /// `L(r_k)` up to a constant, per grid point.
    pub log_lik: Vec<f64>,
}

impl Default for LikelihoodGrid {
    fn default() -> Self {
        LikelihoodGrid {
            log_lik: vec![0.0; GRID_POINTS],
        }
    }
}

impl LikelihoodGrid {
    /// Adds one tick (same tempering as the e-processes).
    pub fn update(&mut self, s: &Stratum, scale: f64) {
        if !s.informative() || scale <= 0.0 {
            return;
        }
        let k = (s.x_c + s.x_s) as f64;
        for (i, l) in self.log_lik.iter_mut().enumerate() {
            let r = grid_ratio(i);
            *l += scale * (s.x_c as f64 * r.ln() - k * s.log_denominator(r));
        }
    }

    /// The range of ratios not rejected at level `alpha`: `(low, high)`,
    /// `None` on a side where the range reaches the end of the grid
    /// (below 1/16 or above 128: unbounded so far).
    pub fn range(&self, alpha: f64) -> (Option<f64>, Option<f64>) {
        let limit = (1.0 / alpha).ln();
        let kept: Vec<usize> = (0..GRID_POINTS)
            .filter(|&k| {
                let rel: Vec<f64> = self.log_lik.iter().map(|l| l - self.log_lik[k]).collect();
                log_mean_exp(&rel) < limit
            })
            .collect();
        let (Some(&lo), Some(&hi)) = (kept.first(), kept.last()) else {
            return (None, None);
        };
        let low = (lo > 0).then(|| grid_ratio(lo));
        let high = (hi + 1 < GRID_POINTS).then(|| grid_ratio(hi));
        (low, high)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn increment_matches_binomial_form() {
        let s = Stratum {
            n_c: 100,
            n_s: 900,
            x_c: 3,
            x_s: 5,
        };
        let mut e = RatioEProcess::new(1.0, &[2.0]);
        e.update(&s, 1.0);
        let pi = |r: f64| 100.0 * r / (100.0 * r + 900.0);
        let want = 3.0 * (pi(2.0) / pi(1.0)).ln() + 5.0 * ((1.0 - pi(2.0)) / (1.0 - pi(1.0))).ln();
        assert!((e.log_lr[0] - want).abs() < 1e-12);
    }

    #[test]
    fn uninformative_ticks_do_nothing() {
        let mut e = RatioEProcess::new(1.0, &ROLLBACK_MULTIPLIERS);
        e.update(
            &Stratum {
                n_c: 0,
                n_s: 10,
                x_c: 0,
                x_s: 3,
            },
            1.0,
        );
        e.update(
            &Stratum {
                n_c: 10,
                n_s: 10,
                x_c: 0,
                x_s: 0,
            },
            1.0,
        );
        assert_eq!(e.log_e(), 0.0);
    }

    #[test]
    fn grid_range_covers_truth() {
        let mut g = LikelihoodGrid::default();
        for _ in 0..50 {
            g.update(
                &Stratum {
                    n_c: 1000,
                    n_s: 1000,
                    x_c: 20,
                    x_s: 10,
                },
                1.0,
            );
        }
        let (lo, hi) = g.range(0.01);
        assert!(lo.unwrap() <= 2.0 && hi.unwrap() >= 2.0, "{lo:?} {hi:?}");
        assert!(lo.unwrap() > 1.0);
        assert_eq!(LikelihoodGrid::default().range(0.01), (None, None));
    }
}
