//! Per-segment rollback evidence: the same stratified rate-ratio
//! e-processes as the overall test (errors and slow requests), one pair per
//! segment, on the segment's own counts of each tick. They only ever add a
//! reason to roll back: gates and `waiting_for` read the overall evidence,
//! so a segment with little data never blocks or delays a step. How the
//! segments' evidence combines with the overall: `ramp::segments`.

use serde::{Deserialize, Serialize};

use super::{capped_exp, log_add_exp, RatioEProcess, Stratum, ROLLBACK_MULTIPLIERS};
use crate::config::types::SegmentPolicy;
use crate::ramp::segments::SegmentTick;

/// One segment's rollback e-processes (persisted with the judge).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentJudge {
    /// The segment: a value of `segment_values`, or `other`.
    pub segment: String,
    /// Rollback e-process, errors.
    pub errors: RatioEProcess,
    /// Rollback e-process, slow requests.
    pub slow: RatioEProcess,
}

impl SegmentJudge {
    /// Fresh processes (E = 1) against the overall null ratios.
    pub fn new(segment: &str, r0_errors: f64, r0_slow: f64) -> SegmentJudge {
        SegmentJudge {
            segment: segment.to_owned(),
            errors: RatioEProcess::new(r0_errors, &ROLLBACK_MULTIPLIERS),
            slow: RatioEProcess::new(r0_slow, &ROLLBACK_MULTIPLIERS),
        }
    }

    /// `ln((E_err + E_slow)/2)`, the segment's evidence.
    pub fn log_e(&self) -> f64 {
        log_add_exp(self.errors.log_e(), self.slow.log_e()) - std::f64::consts::LN_2
    }

    /// `(E_err + E_slow)/2`, capped to stay finite.
    pub fn e(&self) -> f64 {
        capped_exp(self.log_e())
    }

    /// Adds the segment's counts of one tick. `errors` and `slow` are the
    /// overall test's tempering `(before, after)` for the tick (the segment
    /// has no A/A halves of its own; clustering shows in the overall φ̂);
    /// `slow_edge` is `T`'s boundary once known.
    pub fn update(
        &mut self,
        tick: &SegmentTick,
        slow_edge: Option<usize>,
        errors: (f64, f64),
        slow: (f64, f64),
    ) {
        let (s, c) = (&tick.stable, &tick.canary);
        let st = Stratum {
            n_c: c.requests,
            n_s: s.requests,
            x_c: c.errors_clamped(),
            x_s: s.errors_clamped(),
        };
        self.errors.update(&st, errors.0, errors.1);
        if let Some(edge) = slow_edge {
            let st = Stratum {
                x_c: c.slow(edge),
                x_s: s.slow(edge),
                ..st
            };
            self.slow.update(&st, slow.0, slow.1);
        }
    }
}

/// The judges for `policy`'s segments (`other` last), keeping the evidence
/// of those already judged (matched by name): a reload that adds a value
/// starts it at E = 1, one that removes a value drops its evidence.
pub fn reconcile(
    judges: &mut Vec<SegmentJudge>,
    policy: Option<&SegmentPolicy>,
    r0_errors: f64,
    r0_slow: f64,
) {
    let Some(policy) = policy else {
        judges.clear();
        return;
    };
    if judges.iter().map(|j| j.segment.as_str()).eq(policy.names()) {
        return;
    }
    let mut old = std::mem::take(judges);
    for name in policy.names() {
        let j = match old.iter().position(|j| j.segment == name) {
            Some(i) => old.swap_remove(i),
            None => SegmentJudge::new(name, r0_errors, r0_slow),
        };
        judges.push(j);
    }
}
