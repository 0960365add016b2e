//! Per-segment guardrails: how rollback evidence from several segments
//! (`new`, `returning`, `app`, ..., `other`) is combined with the overall
//! evidence so that looking at more segments never raises the
//! false-rollback rate.
//!
//! The combination is a **weighted mean of the e-values**: half the weight
//! on the overall comparison, the other half split evenly among the `k`
//! segments; roll back when
//! `½·E_overall + ½·(E_1 + … + E_k)/k ≥ 1/α`.
//!
//! Why it is valid: each `E_s` is an e-process (a nonnegative
//! supermartingale with starting value 1 while the canary is no worse in
//! that segment), all on the same ticks; a mean of such processes with
//! fixed weights summing to 1 is one too (expectation is linear), so
//! Ville's inequality bounds the chance that it *ever* reaches `1/α` by
//! `α`, however many segments there are and however they depend on each
//! other. No independence is assumed.
//!
//! Why half on the overall: a regression of the whole canary shows most
//! strongly in the overall comparison (each segment sees only its share of
//! the traffic), and an equal mean over `k + 1` would make it wait for
//! `E_overall ≥ (k+1)/α`; with half the weight it needs `2/α`, whatever
//! `k`. A regression confined to one segment needs `E_s ≥ 2k/α` instead
//! of `(k+1)/α`: `ln(2k/(k+1))` more nats (0.5 for 4 segments), measured in
//! docs/judge.md.
//!
//! Why not split α (Bonferroni, roll back when `E_overall ≥ 2/α` or any
//! `E_s ≥ 2k/α`): the weighted mean reaches `1/α` whenever one of those
//! does (the sum is at least its largest term), so it rolls back at least
//! as early in every run, and earlier when several segments are mildly
//! worse.
//!
//! A segment with too little data has an e-value near 1 and only adds its
//! share; it can never block a step (gates stay on the overall evidence).
//! The reason names the segment with the largest e-value when it is larger
//! than the overall's.
//!
//! [`record`] is the request-path side: classification and counters.

mod record;

pub use record::{classify, merge_segments, SegmentRecorder, SegmentTick};

/// The evidence of one segment.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentEvidence<'a> {
    /// The segment's value (`"new"`), or `"other"`.
    pub segment: &'a str,
    /// Its rollback e-value (canary worse than stable within the segment).
    pub e: f64,
}

/// The overall comparison's share of the combined evidence; the segments
/// share the rest evenly.
pub const OVERALL_WEIGHT: f64 = 0.5;

/// The verdict of the combination.
#[derive(Clone, Debug, PartialEq)]
pub struct Combined<'a> {
    /// The weighted mean of the overall and every segment's e-value.
    pub e: f64,
    /// `e ≥ 1/α`: roll back.
    pub rollback: bool,
    /// The segment that contributed most when it outweighs the overall
    /// evidence (the one the reason names); `None` when the overall
    /// comparison leads.
    pub worst: Option<&'a str>,
}

/// Combines the overall e-value with each segment's at level `alpha`
/// (without segments, the overall e-value alone).
/// Non-finite or negative e-values count as 0 (no evidence), so a broken
/// segment can never cause a rollback.
pub fn combine<'a>(alpha: f64, overall: f64, segments: &[SegmentEvidence<'a>]) -> Combined<'a> {
    let clean = |e: f64| if e.is_finite() && e > 0.0 { e } else { 0.0 };
    let e = if segments.is_empty() {
        clean(overall)
    } else {
        let mean = segments.iter().map(|s| clean(s.e)).sum::<f64>() / segments.len() as f64;
        OVERALL_WEIGHT * clean(overall) + (1.0 - OVERALL_WEIGHT) * mean
    };
    let worst = segments
        .iter()
        .filter(|s| clean(s.e) > clean(overall))
        .max_by(|a, b| clean(a.e).total_cmp(&clean(b.e)))
        .map(|s| s.segment);
    Combined {
        e,
        rollback: alpha > 0.0 && e >= 1.0 / alpha,
        worst,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use rand::{Rng, SeedableRng};

    fn seg(segment: &str, e: f64) -> SegmentEvidence<'_> {
        SegmentEvidence { segment, e }
    }

    #[test]
    fn the_mean_names_the_worst_segment_and_ignores_broken_values() {
        let c = combine(
            0.01,
            1.0,
            &[seg("new", 591.0), seg("app", f64::NAN), seg("other", -3.0)],
        );
        assert_eq!(c.e, 0.5 * 1.0 + 0.5 * 591.0 / 3.0);
        assert!(!c.rollback, "99 < 100");
        assert_eq!(c.worst, Some("new"));
        let c = combine(
            0.01,
            2.0,
            &[seg("new", 600.0), seg("app", 1.0), seg("other", 1.0)],
        );
        assert!(c.rollback, "{}", c.e);
        let c = combine(0.01, 200.0, &[seg("new", 1.0), seg("app", 1.0)]);
        assert_eq!(
            (c.rollback, c.worst),
            (true, None),
            "the overall evidence leads, and needs only 2/α"
        );
        assert_eq!(
            combine(0.01, 120.0, &[]).e,
            120.0,
            "no segments: the overall alone"
        );
        assert!(!combine(0.0, 1e9, &[]).rollback, "alpha 0 never rolls back");
    }

    #[test]
    fn the_mean_rolls_back_whenever_a_split_alpha_would() {
        let alpha = 0.01;
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for _ in 0..10_000 {
            let k = rng.gen_range(1..12);
            let es: Vec<f64> = (0..k).map(|_| rng.gen_range(0.0..2.0f64).powi(8)).collect();
            let overall = rng.gen_range(0.0..2.0f64).powi(8);
            let segs: Vec<_> = es.iter().map(|&e| seg("s", e)).collect();
            let bonferroni = overall >= 1.0 / (OVERALL_WEIGHT * alpha)
                || es
                    .iter()
                    .any(|&e| e >= k as f64 / ((1.0 - OVERALL_WEIGHT) * alpha));
            if bonferroni {
                assert!(combine(alpha, overall, &segs).rollback);
            }
        }
    }

    /// Under the null (canary = stable in every segment) the combined
    /// evidence of 10 segments + overall crosses 1/α in at most about α of
    /// runs, even though each segment's e-process is tested at every tick.
    #[test]
    fn false_rollbacks_stay_within_alpha_with_ten_segments() {
        let (alpha, runs, ticks, k) = (0.05, 2_000, 200, 10);
        // A likelihood-ratio e-process per segment: H0 p = 1 %, H1 p = 2 %.
        let (p0, p1) = (0.01f64, 0.02f64);
        let (win, loss) = ((p1 / p0).ln(), ((1.0 - p1) / (1.0 - p0)).ln());
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        let mut false_rollbacks = 0;
        for _ in 0..runs {
            let mut log_e = vec![0.0f64; k + 1];
            'run: for _ in 0..ticks {
                for l in log_e.iter_mut() {
                    // 10 requests per segment and tick, errors at the null rate.
                    for _ in 0..10 {
                        *l += if rng.gen_bool(p0) { win } else { loss };
                    }
                }
                let segs: Vec<_> = log_e[1..].iter().map(|l| seg("s", l.exp())).collect();
                if combine(alpha, log_e[0].exp(), &segs).rollback {
                    false_rollbacks += 1;
                    break 'run;
                }
            }
        }
        let rate = f64::from(false_rollbacks) / f64::from(runs);
        eprintln!("10 segments + overall, alpha {alpha}: false rollbacks in {rate} of {runs} runs");
        // α plus three binomial standard errors.
        let bound = alpha + 3.0 * (alpha * (1.0 - alpha) / f64::from(runs)).sqrt();
        assert!(rate <= bound, "false rollback rate {rate} > {bound}");
    }
}
