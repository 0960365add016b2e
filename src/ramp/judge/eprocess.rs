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

    /// Adds one tick. Its log-likelihood ratio is tempered by `before`
    /// (1 / max(1, φ̂) as known before the tick) or by `after` (the same
    /// with the tick itself counted), whichever gives the smaller
    /// increment: the process never exceeds the one tempered by the
    /// predictable `before` alone, which is an e-process whenever the
    /// events are independent (see docs/judge.md). A scale of 0 skips the tick.
    pub fn update(&mut self, s: &Stratum, before: f64, after: f64) {
        if !s.informative() || before <= 0.0 || after <= 0.0 {
            return;
        }
        let k = (s.x_c + s.x_s) as f64;
        let d0 = s.log_denominator(self.r0);
        for (l, &r) in self.log_lr.iter_mut().zip(&self.alternatives) {
            let inc = s.x_c as f64 * (r / self.r0).ln() - k * (s.log_denominator(r) - d0);
            *l += (inc * before).min(inc * after);
        }
    }

    /// `ln E`: log of the mean of the alternatives' likelihood ratios.
    pub fn log_e(&self) -> f64 {
        log_mean_exp(&self.log_lr)
    }
}

/// Grid of ratios for the likelihood of `r`: 2^(k/8) from 1/16 to 128
/// (an eighth of an octave, 9 % apart). Between grid points the
/// log-likelihood is interpolated (it is smooth and concave in ln r).
const GRID_STEPS_PER_OCTAVE: f64 = 8.0;
const GRID_LOWEST_OCTAVE: f64 = -4.0;
const GRID_POINTS: usize = 89;

fn grid_ratio(k: usize) -> f64 {
    grid_ratio_at(k as f64)
}

/// The ratio at fractional grid position `x`.
fn grid_ratio_at(x: f64) -> f64 {
    2f64.powf(x / GRID_STEPS_PER_OCTAVE + GRID_LOWEST_OCTAVE)
}

/// Tempered stratified log-likelihood of `r` on a fine log-spaced grid.
///
/// The confidence range inverts a mixture e-process: for any fixed `r`,
/// `E(r) = mean over grid points r' of L(r')/L(r)` is an e-process for
/// `H0: ratio = r` (each term is a likelihood ratio), so the ratios with
/// `E(r) < 1/α` form a confidence set valid at every look. The mean in the
/// numerator does not depend on `r`, so the set is the ratios whose
/// log-likelihood is above one line: an interval, since the likelihood is
/// concave in `ln r`. Its ends are found by bisection on the interpolated
/// log-likelihood, so the range keeps a width however many events came.
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
    /// Adds one tick (tempered like the e-processes). A grid of another
    /// size (a state file from an older version) starts over.
    pub fn update(&mut self, s: &Stratum, scale: f64) {
        if !s.informative() || scale <= 0.0 {
            return;
        }
        if self.log_lik.len() != GRID_POINTS {
            *self = LikelihoodGrid::default();
        }
        let k = (s.x_c + s.x_s) as f64;
        for (i, l) in self.log_lik.iter_mut().enumerate() {
            let r = grid_ratio(i);
            *l += scale * (s.x_c as f64 * r.ln() - k * s.log_denominator(r));
        }
    }

    /// The log-likelihood at fractional grid position `x` (quadratic
    /// interpolation through the three nearest grid points).
    fn at(&self, x: f64) -> f64 {
        let n = self.log_lik.len();
        if n < 3 {
            return self.log_lik.first().copied().unwrap_or(0.0);
        }
        let c = (x.round() as usize).clamp(1, n - 2);
        let t = x - c as f64;
        let (a, b, d) = (self.log_lik[c - 1], self.log_lik[c], self.log_lik[c + 1]);
        b + t * (d - a) / 2.0 + t * t * (a - 2.0 * b + d) / 2.0
    }

    fn argmax(&self) -> Option<usize> {
        if self.log_lik.len() != GRID_POINTS {
            return None; // an older state's grid: nothing known until it restarts
        }
        let first = *self.log_lik.first()?;
        if self.log_lik.iter().all(|&l| l == first) {
            return None; // no information yet
        }
        (0..self.log_lik.len()).max_by(|&a, &b| self.log_lik[a].total_cmp(&self.log_lik[b]))
    }

    /// The maximum-likelihood ratio (parabolic refinement around the best
    /// grid point); `None` before any informative tick.
    pub fn mle(&self) -> Option<f64> {
        let k = self.argmax()?;
        let n = self.log_lik.len();
        if k == 0 || k + 1 >= n {
            return Some(grid_ratio(k));
        }
        let (a, b, d) = (self.log_lik[k - 1], self.log_lik[k], self.log_lik[k + 1]);
        let curv = a - 2.0 * b + d;
        let off = if curv < 0.0 {
            ((a - d) / (2.0 * curv)).clamp(-0.5, 0.5)
        } else {
            0.0
        };
        Some(grid_ratio_at(k as f64 + off))
    }

    /// The range of ratios not rejected at level `alpha`: `(low, high)`,
    /// `None` on a side where the range reaches the end of the grid
    /// (below 1/16 or above 128: unbounded so far), `(None, None)` before
    /// any informative tick.
    pub fn range(&self, alpha: f64) -> (Option<f64>, Option<f64>) {
        let Some(best) = self.argmax() else {
            return (None, None);
        };
        let line = log_mean_exp(&self.log_lik) - (1.0 / alpha).ln();
        let n = self.log_lik.len();
        let inside = |x: f64| self.at(x) > line;
        // Walk out from the maximum to the first grid point below the line,
        // then bisect between it and its inner neighbour.
        let end = |outer: Option<usize>, inner_of: &dyn Fn(usize) -> usize| {
            let o = outer?;
            let (mut lo, mut hi) = (o as f64, inner_of(o) as f64);
            for _ in 0..50 {
                let mid = (lo + hi) / 2.0;
                if inside(mid) {
                    hi = mid;
                } else {
                    lo = mid;
                }
            }
            Some(grid_ratio_at(hi))
        };
        let below = (0..best).rev().find(|&k| self.log_lik[k] <= line);
        let above = (best + 1..n).find(|&k| self.log_lik[k] <= line);
        (end(below, &|k| k + 1), end(above, &|k| k - 1))
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
        e.update(&s, 1.0, 1.0);
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

    #[test]
    fn range_keeps_a_width_after_many_events() {
        // 2,000 ticks of 30 events: the old √2 grid kept one point here.
        let mut g = LikelihoodGrid::default();
        for _ in 0..2000 {
            g.update(
                &Stratum {
                    n_c: 1000,
                    n_s: 1000,
                    x_c: 15,
                    x_s: 15,
                },
                1.0,
            );
        }
        let (lo, hi) = g.range(0.01);
        let (lo, hi) = (lo.unwrap(), hi.unwrap());
        assert!(lo < 1.0 && hi > 1.0, "{lo} {hi}");
        // ln r has a standard error of √(1/30000 + 1/30000) ≈ 0.008; an
        // always-valid 99 % range is a few of those wide on each side.
        assert!(hi / lo > 1.02 && hi / lo < 1.12, "{lo} {hi}");
        assert!((g.mle().unwrap() - 1.0).abs() < 0.005);
    }

    #[test]
    fn range_covers_the_true_ratio() {
        // Seeded replicates at r = 1.7 (between grid points): the range
        // must hold it in (nearly) all of them, at every look.
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut uniform = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        let (n_c, n_s, r) = (300u64, 700u64, 1.7f64);
        let pi = n_c as f64 * r / (n_c as f64 * r + n_s as f64);
        let mut misses = 0;
        for _ in 0..200 {
            let mut g = LikelihoodGrid::default();
            let mut missed = false;
            for _ in 0..100 {
                let k = 20u64;
                let x_c = (0..k).filter(|_| uniform() < pi).count() as u64;
                g.update(
                    &Stratum {
                        n_c,
                        n_s,
                        x_c,
                        x_s: k - x_c,
                    },
                    1.0,
                );
                let (lo, hi) = g.range(0.01);
                missed |= lo.is_some_and(|l| l > r) || hi.is_some_and(|h| h < r);
            }
            misses += u32::from(missed);
        }
        assert!(misses <= 4, "{misses} of 200 ranges missed r at some look");
    }

    #[test]
    fn tempering_takes_the_smaller_increment() {
        let s = Stratum {
            n_c: 100,
            n_s: 900,
            x_c: 5,
            x_s: 5,
        };
        let (mut a, mut b) = (
            RatioEProcess::new(1.0, &[2.0]),
            RatioEProcess::new(1.0, &[2.0]),
        );
        a.update(&s, 1.0, 0.2);
        b.update(&s, 0.2, 0.2);
        assert_eq!(a.log_lr, b.log_lr); // evidence against: the larger φ̂
        let calm = Stratum { x_c: 0, ..s };
        let mut c = RatioEProcess::new(1.0, &[2.0]);
        c.update(&calm, 1.0, 0.2);
        let mut d = RatioEProcess::new(1.0, &[2.0]);
        d.update(&calm, 1.0, 1.0);
        assert_eq!(c.log_lr, d.log_lr); // evidence for: the smaller φ̂
    }
}
