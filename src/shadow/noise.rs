//! The noise floor: is a field's canary difference rate above its
//! stable-vs-stable difference rate beyond chance?
//!
//! Some fields differ between any two answers (request ids, timestamps,
//! sampled scores). A share of mirrored requests is sent to stable twice;
//! for each field, `x_noise` of those `n_noise` stable-vs-stable pairs
//! differ, and `x_canary` of the `n_canary` canary-vs-stable pairs do. The
//! field is flagged when a one-sided Fisher exact test rejects "the canary
//! differs no more often than stable differs from itself" at level
//! [`ALPHA`]. Fisher's test conditions on the total number of differing
//! pairs, so it is exact for the small noise samples a 10 % share gives
//! (where the normal approximation of the two-proportion z-test is not),
//! and with no noise pair at all it never flags (nothing to compare with).

/// Significance level of the one-sided test (strict, because many fields are
/// tested at every look).
pub const ALPHA: f64 = 0.001;

use crate::ramp::judge::paired::ln_factorial;

fn ln_choose(n: u64, k: u64) -> f64 {
    ln_factorial(n) - ln_factorial(k) - ln_factorial(n - k)
}

/// One-sided p-value of Fisher's exact test that the first proportion
/// (`x1` of `n1`) is larger than the second (`x2` of `n2`): the
/// hypergeometric probability of `x1` or more of the `x1 + x2` successes
/// falling in the first group. Counts above their totals are clamped.
pub fn fisher_greater(x1: u64, n1: u64, x2: u64, n2: u64) -> f64 {
    let (x1, x2) = (x1.min(n1), x2.min(n2));
    let total = n1 + n2;
    let successes = x1 + x2;
    if total == 0 {
        return 1.0;
    }
    let denominator = ln_choose(total, n1);
    let top = successes.min(n1);
    let mut p = 0.0;
    for x in x1..=top {
        // x successes in group 1 need n1 - x failures of the total - successes.
        let failures = total - successes;
        if n1 - x > failures {
            continue;
        }
        p += (ln_choose(successes, x) + ln_choose(failures, n1 - x) - denominator).exp();
    }
    p.min(1.0)
}

/// Whether the canary's difference rate is above the noise beyond chance.
pub fn above_noise(x_canary: u64, n_canary: u64, x_noise: u64, n_noise: u64) -> bool {
    n_canary > 0 && n_noise > 0 && fisher_greater(x_canary, n_canary, x_noise, n_noise) < ALPHA
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() < tol
    }

    #[test]
    fn ln_factorial_matches_exact_values() {
        assert!(close(ln_factorial(0), 0.0, 1e-12));
        assert!(close(ln_factorial(5), 120f64.ln(), 1e-12));
        // 64! summed exactly versus the series.
        let exact: f64 = (2..=64).map(|i| (i as f64).ln()).sum();
        assert!(close(ln_factorial(64), exact, 1e-9));
        let exact: f64 = (2..=1000).map(|i| (i as f64).ln()).sum();
        assert!(close(ln_factorial(1000), exact, 1e-8));
    }

    /// Hand-worked: 3 of 3 canary pairs differ, 0 of 3 noise pairs.
    /// Given 3 differing pairs among 6, P(all 3 in the canary group)
    /// = C(3,3)·C(3,0) / C(6,3) = 1/20 = 0.05.
    #[test]
    fn fisher_small_table_by_hand() {
        assert!(close(fisher_greater(3, 3, 0, 3), 0.05, 1e-12));
        // 2 of 3 vs 1 of 3: P(X ≥ 2) = [C(3,2)C(3,1) + C(3,3)C(3,0)] / C(6,3) = (9 + 1)/20.
        assert!(close(fisher_greater(2, 3, 1, 3), 0.5, 1e-12));
        // Lady tasting tea: 4 of 4 right out of 8 cups → 1/70.
        assert!(close(fisher_greater(4, 4, 0, 4), 1.0 / 70.0, 1e-12));
    }

    #[test]
    fn a_field_that_always_differs_only_on_the_canary_is_flagged() {
        assert!(above_noise(100, 100, 0, 10));
        // With 3 noise pairs 30 always-differing canary pairs suffice: 1/C(33,3) ≈ 0.00018.
        assert!(above_noise(30, 30, 0, 3));
    }

    #[test]
    fn noise_is_not_flagged() {
        // A per-request random field differs on every pair, stable or canary.
        assert!(!above_noise(100, 100, 10, 10));
        // Same rate on both sides.
        assert!(!above_noise(30, 100, 3, 10));
        // No noise pair yet: nothing to compare with.
        assert!(!above_noise(100, 100, 0, 0));
        // Too few pairs to tell.
        assert!(!above_noise(2, 2, 0, 2));
    }

    #[test]
    fn p_value_is_a_probability_for_any_counts() {
        for (x1, n1, x2, n2) in [
            (0, 0, 0, 0),
            (5, 3, 9, 2),
            (0, 10, 10, 10),
            (500, 1000, 400, 1000),
        ] {
            let p = fisher_greater(x1, n1, x2, n2);
            assert!((0.0..=1.0).contains(&p), "{p}");
        }
    }
}
