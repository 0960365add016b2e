//! The shadow phase's judge: a paired sequential test on the same requests
//! answered by both arms.
//!
//! Each mirrored request gives a pair. Only discordant pairs carry evidence:
//! those where exactly one arm failed (or exactly one was slow, above the
//! baseline's slow threshold `T`). Under "the canary is no worse", a
//! discordant pair is the canary's at most half the time, whatever the
//! request (the same request went to both), so the count of canary-worse
//! pairs `b` among `n` discordant ones is a sign test. Its always-valid form
//! is a test martingale: the likelihood ratio of θ (the canary's share of
//! discordant pairs) against 1/2, mixed over a uniform prior on θ ∈ [1/2, 1]:
//!
//! ```text
//! E(b, c) = 2 · 2^n · ∫_{1/2}^{1} θ^b (1-θ)^c dθ
//!         = 2 · 2^n · B(b+1, c+1) · P(Binomial(n+1, 1/2) ≤ b)      (n = b + c)
//! ```
//!
//! Each θ's ratio is a supermartingale under any θ' ≤ 1/2, so the mixture
//! is an e-process and Ville's inequality makes `E ≥ 1/α` a valid rejection
//! at any look, however often the ramp looks. As in the main judge, the
//! failure and slowness evidence are averaged, `(E_fail + E_slow)/2 ≥ 1/α`.

use serde::{Deserialize, Serialize};

/// One pair as the judge sees it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// Stable failed.
    pub stable_failed: bool,
    /// The canary failed.
    pub canary_failed: bool,
    /// Stable's latency, in seconds.
    pub stable_seconds: f64,
    /// The canary's latency, in seconds.
    pub canary_seconds: f64,
    /// RBO of the two ranked lists, when compared.
    pub rbo: Option<f64>,
}

/// Discordant pairs of one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Discordant {
    /// Only the canary was bad.
    pub canary_only: u64,
    /// Only stable was bad.
    pub stable_only: u64,
}

impl Discordant {
    fn count(&mut self, stable_bad: bool, canary_bad: bool) {
        match (stable_bad, canary_bad) {
            (false, true) => self.canary_only += 1,
            (true, false) => self.stable_only += 1,
            _ => {}
        }
    }

    fn add(&mut self, other: &Discordant) {
        self.canary_only += other.canary_only;
        self.stable_only += other.stable_only;
    }

    fn since(&self, before: &Discordant) -> Discordant {
        Discordant {
            canary_only: self.canary_only.saturating_sub(before.canary_only),
            stable_only: self.stable_only.saturating_sub(before.stable_only),
        }
    }

    /// `ln E` of the mixture sign test (see the module docs).
    pub fn log_e(&self) -> f64 {
        log_e_sign(self.canary_only, self.stable_only)
    }
}

/// The shadow phase's evidence so far (persisted with the ramp).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PairedEvidence {
    /// Pairs compared.
    pub pairs: u64,
    /// Discordant failures.
    pub failed: Discordant,
    /// Discordant slowness (above `T`).
    pub slow: Discordant,
    /// Sum of RBO over pairs with lists.
    pub rbo_sum: f64,
    /// Pairs with lists.
    pub rbo_pairs: u64,
}

/// What the evidence says.
#[derive(Debug, Clone, PartialEq)]
pub enum PairedVerdict {
    /// Not shown worse (yet).
    NotWorse,
    /// Shown worse; the reason, in words.
    Worse(String),
}

impl PairedEvidence {
    /// Adds pairs; `slow_seconds` is `T` (`None`: slowness not judged).
    pub fn observe(&mut self, pairs: &[Pair], slow_seconds: Option<f64>) {
        for p in pairs {
            self.pairs += 1;
            self.failed.count(p.stable_failed, p.canary_failed);
            if let Some(t) = slow_seconds {
                // A failed side is counted as a failure, not as slow.
                if !p.stable_failed && !p.canary_failed {
                    self.slow.count(p.stable_seconds > t, p.canary_seconds > t);
                }
            }
            if let Some(r) = p.rbo.filter(|r| r.is_finite()) {
                self.rbo_sum += r;
                self.rbo_pairs += 1;
            }
        }
    }

    /// Adds another replica's (or tick's) evidence: the counts are sums, so
    /// the fleet's evidence is the sum of its replicas'.
    pub fn add(&mut self, other: &PairedEvidence) {
        self.pairs += other.pairs;
        self.failed.add(&other.failed);
        self.slow.add(&other.slow);
        self.rbo_sum += other.rbo_sum;
        self.rbo_pairs += other.rbo_pairs;
    }

    /// What was added since `before` (an earlier value of the same
    /// cumulative evidence); counts saturate at 0.
    pub fn since(&self, before: &PairedEvidence) -> PairedEvidence {
        PairedEvidence {
            pairs: self.pairs.saturating_sub(before.pairs),
            failed: self.failed.since(&before.failed),
            slow: self.slow.since(&before.slow),
            rbo_sum: (self.rbo_sum - before.rbo_sum).max(0.0),
            rbo_pairs: self.rbo_pairs.saturating_sub(before.rbo_pairs),
        }
    }

    /// Mean RBO, `None` before any list.
    pub fn mean_rbo(&self) -> Option<f64> {
        (self.rbo_pairs > 0).then(|| self.rbo_sum / self.rbo_pairs as f64)
    }

    /// `(E_fail + E_slow) / 2`.
    pub fn e(&self) -> f64 {
        (capped_exp(self.failed.log_e()) + capped_exp(self.slow.log_e())) / 2.0
    }

    /// Worse when the e-value reaches `1/alpha`, or (with `min_rbo`) when at
    /// least `min_pairs` lists were compared and their mean RBO is below it.
    pub fn verdict(&self, alpha: f64, min_rbo: Option<f64>, min_pairs: u64) -> PairedVerdict {
        let e = self.e();
        if e >= 1.0 / alpha {
            let e = if e < 1e6 {
                format!("{e:.3}")
            } else {
                format!("{e:.2e}")
            };
            return PairedVerdict::Worse(format!(
                "canary shown worse on mirrored requests (no user served): E = {e} ≥ 1/α = {:.0} \
                 (canary-only failures {} vs stable-only {}, canary-only slow {} vs stable-only {})",
                1.0 / alpha,
                self.failed.canary_only,
                self.failed.stable_only,
                self.slow.canary_only,
                self.slow.stable_only
            ));
        }
        if let (Some(min), Some(mean)) = (min_rbo, self.mean_rbo()) {
            if self.rbo_pairs >= min_pairs && mean < min {
                return PairedVerdict::Worse(format!(
                    "canary's ranked lists differ from stable's: mean RBO {mean:.3} < min_rbo {min} over {} pairs (no user served)",
                    self.rbo_pairs
                ));
            }
        }
        PairedVerdict::NotWorse
    }
}

fn capped_exp(x: f64) -> f64 {
    x.min(690.0).exp()
}

/// `ln(n!)`: exact sum for small `n`, Stirling's series beyond (error < 1e-10).
pub fn ln_factorial(n: u64) -> f64 {
    if n < 64 {
        return (2..=n).map(|i| (i as f64).ln()).sum();
    }
    let n = n as f64;
    n * n.ln() - n + 0.5 * (2.0 * std::f64::consts::PI * n).ln() + 1.0 / (12.0 * n)
        - 1.0 / (360.0 * n * n * n)
}

/// `ln P(Binomial(n, 1/2) ≤ k)`.
fn ln_binomial_half_cdf(n: u64, k: u64) -> f64 {
    let k = k.min(n);
    let ln_n = ln_factorial(n);
    let terms = (0..=k).map(|j| ln_n - ln_factorial(j) - ln_factorial(n - j));
    let max = terms.clone().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = terms.map(|t| (t - max).exp()).sum();
    max + sum.ln() - n as f64 * std::f64::consts::LN_2
}

/// `ln E` of the uniform-mixture sign test for `b` canary-worse and `c`
/// stable-worse discordant pairs.
pub fn log_e_sign(b: u64, c: u64) -> f64 {
    let n = b + c;
    let ln_beta = ln_factorial(b) + ln_factorial(c) - ln_factorial(n + 1);
    (n + 1) as f64 * std::f64::consts::LN_2 + ln_beta + ln_binomial_half_cdf(n + 1, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// By hand: E(1, 0) = 4·∫_{1/2}^1 θ dθ = 4·(1/2 − 1/8) = 1.5;
    /// E(0, 1) = 4·∫_{1/2}^1 (1−θ) dθ = 4·1/8 = 0.5; E(0, 0) = 1;
    /// E(2, 0) = 8·∫_{1/2}^1 θ² dθ = 8·(1/3 − 1/24) = 7/3.
    #[test]
    fn known_values() {
        assert!(close(log_e_sign(0, 0).exp(), 1.0));
        assert!(close(log_e_sign(1, 0).exp(), 1.5));
        assert!(close(log_e_sign(0, 1).exp(), 0.5));
        assert!(close(log_e_sign(2, 0).exp(), 7.0 / 3.0));
    }

    #[test]
    fn balanced_discordance_is_no_evidence_and_one_sided_is_strong() {
        assert!(log_e_sign(500, 500).exp() < 1.0);
        // All of 10 discordant pairs against the canary: E = 2^11/11 · P(Bin(11,½) ≤ 10) ≈ 186.
        let e = log_e_sign(10, 0).exp();
        assert!(
            (e - 2048.0 / 11.0 * (1.0 - 1.0 / 2048.0)).abs() < 1e-6,
            "{e}"
        );
        assert!(log_e_sign(10_000, 10_000).is_finite());
    }

    /// Under the null (a fair coin per discordant pair), E ≥ 1/α happens in at
    /// most α of runs, however often we look (Ville): checked by simulation.
    #[test]
    fn repeated_looks_stay_within_alpha() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let runs = 200;
        let mut rejected = 0;
        for _ in 0..runs {
            let (mut b, mut c) = (0, 0);
            for _ in 0..150 {
                if rng.gen_bool(0.5) {
                    b += 1
                } else {
                    c += 1
                }
                if log_e_sign(b, c) >= (1.0f64 / 0.05).ln() {
                    rejected += 1;
                    break;
                }
            }
        }
        assert!(rejected <= runs * 5 / 100 + 8, "{rejected} of {runs}");
    }

    fn pair(stable_failed: bool, canary_failed: bool, s: f64, c: f64) -> Pair {
        Pair {
            stable_failed,
            canary_failed,
            stable_seconds: s,
            canary_seconds: c,
            rbo: Some(0.4),
        }
    }

    #[test]
    fn a_half_failing_canary_is_shown_worse_in_a_few_dozen_pairs() {
        let mut ev = PairedEvidence::default();
        let mut verdict = PairedVerdict::NotWorse;
        let mut seen: u64 = 0;
        while verdict == PairedVerdict::NotWorse && seen < 1000 {
            ev.observe(&[pair(false, seen % 2 == 0, 0.01, 0.01)], Some(0.1));
            verdict = ev.verdict(0.01, None, 200);
            seen += 1;
        }
        assert!(seen < 60, "{seen} pairs");
        assert_eq!(ev.failed.canary_only, seen.div_ceil(2));
    }

    #[test]
    fn slowness_and_rbo() {
        let mut ev = PairedEvidence::default();
        ev.observe(
            &[pair(false, false, 0.01, 0.5), pair(false, false, 0.5, 0.5)],
            Some(0.1),
        );
        assert_eq!(
            ev.slow,
            Discordant {
                canary_only: 1,
                stable_only: 0
            }
        );
        ev.observe(&[pair(false, false, 0.01, 0.5)], None);
        assert_eq!(ev.slow.canary_only, 1, "no T: slowness not judged");
        assert_eq!(ev.mean_rbo().map(|r| (r * 10.0).round()), Some(4.0));
        assert_eq!(
            ev.verdict(0.01, Some(0.5), 10),
            PairedVerdict::NotWorse,
            "too few lists"
        );
        assert!(
            matches!(ev.verdict(0.01, Some(0.5), 3), PairedVerdict::Worse(r) if r.contains("mean RBO 0.400"))
        );
        assert_eq!(ev.verdict(0.01, Some(0.3), 3), PairedVerdict::NotWorse);
    }

    /// The fleet's evidence is the sum of its replicas', and a cumulative
    /// value minus an earlier one is what was added in between.
    #[test]
    fn evidence_adds_up_and_differences_are_increments() {
        let pairs = [
            pair(false, true, 0.01, 0.01),
            pair(true, false, 0.01, 0.01),
            pair(false, false, 0.01, 0.5),
            pair(false, true, 0.01, 0.01),
        ];
        let mut whole = PairedEvidence::default();
        whole.observe(&pairs, Some(0.1));
        let (mut a, mut b) = (PairedEvidence::default(), PairedEvidence::default());
        a.observe(&pairs[..1], Some(0.1));
        b.observe(&pairs[1..], Some(0.1));
        let mut sum = a.clone();
        sum.add(&b);
        assert_eq!(sum.pairs, whole.pairs);
        assert_eq!((sum.failed, sum.slow), (whole.failed, whole.slow));
        assert_eq!(sum.rbo_pairs, 4);
        assert!((sum.rbo_sum - whole.rbo_sum).abs() < 1e-12);
        let delta = whole.since(&a);
        assert_eq!(
            (delta.pairs, delta.failed, delta.slow),
            (b.pairs, b.failed, b.slow)
        );
        assert_eq!(whole.since(&whole).pairs, 0);
        assert_eq!(a.since(&whole).pairs, 0, "saturates");
    }
}
