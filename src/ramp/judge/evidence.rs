//! What an audit record says about the evidence.

use serde::{Deserialize, Serialize};

use super::{alpha, capped_exp, log_add_exp, GateReading, Judge, LikelihoodGrid};
use crate::config::types::RampPolicy;
use crate::ramp::segments::SegmentTick;
use crate::ramp::window::{edge_seconds, ArmTick};

/// Per-arm numbers of an audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ArmSummary {
    /// Requests.
    pub requests: u64,
    /// Errors.
    pub errors: u64,
    /// errors / requests (0 with no requests).
    pub error_rate: f64,
    /// Requests slower than `T`.
    pub slow: u64,
    /// p99 from the judge histogram, in seconds.
    pub p99_seconds: Option<f64>,
}

/// Confidence range of a rate ratio (`None` = unbounded on that side so far).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RatioRange {
    /// Lower end.
    pub low: Option<f64>,
    /// Upper end.
    pub high: Option<f64>,
}

/// Everything an audit record carries about the evidence.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    /// `E` for errors.
    pub e_errors: f64,
    /// `E` for slow requests.
    pub e_slow: f64,
    /// `(E_err + E_lat)/2`.
    pub e: f64,
    /// `1/α`: the rollback threshold for `e`.
    pub rollback_threshold: f64,
    /// Always-valid p-value, 1 / max over time of `e`.
    pub p_value: f64,
    /// Confidence range (at `confidence`) of the canary/stable error-rate ratio.
    pub ratio_errors: RatioRange,
    /// Same for the slow-request ratio.
    pub ratio_slow: RatioRange,
    /// The current gate.
    pub gate: Option<GateReading>,
    /// Stable on the current step.
    pub stable: ArmSummary,
    /// Canary on the current step.
    pub canary: ArmSummary,
    /// φ̂ of errors.
    pub phi_errors: f64,
    /// φ̂ of slow requests.
    pub phi_slow: f64,
    /// Shared-degradation hold.
    pub hold: bool,
    /// `T`, in seconds.
    pub slow_threshold_seconds: Option<f64>,
    /// Null ratio of the error test.
    pub r0_errors: f64,
    /// Null ratio of the slow-request test.
    pub r0_slow: f64,
    /// With segments: the statistic compared with `rollback_threshold`
    /// instead of `e` (the weighted mean of `e` and the segments' e-values).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_combined: Option<f64>,
    /// With segments: each segment's evidence and per-arm numbers on the
    /// current step (`other` last).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentSummary>,
}

/// One segment in an audit record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentSummary {
    /// The segment: a value of `segment_values`, or `other`.
    pub segment: String,
    /// `(E_err + E_slow)/2` within the segment.
    pub e: f64,
    /// `E` for errors within the segment.
    pub e_errors: f64,
    /// `E` for slow requests within the segment.
    pub e_slow: f64,
    /// Stable on the current step, in the segment.
    pub stable: ArmSummary,
    /// Canary on the current step, in the segment.
    pub canary: ArmSummary,
}

impl Judge {
    /// The evidence for an audit record, with per-arm numbers of the current step.
    pub fn evidence(&self, policy: &RampPolicy, stable: &ArmTick, canary: &ArmTick) -> Evidence {
        let a = alpha(policy);
        let edge = self.thresholds.as_ref().and_then(|t| t.slow_edge);
        let (r0e, r0s) = self.r0();
        let range = |g: &LikelihoodGrid| {
            let (low, high) = g.range(a);
            RatioRange { low, high }
        };
        let last = self.last.as_ref();
        Evidence {
            e_errors: capped_exp(self.rollback_errors.log_e()),
            e_slow: capped_exp(self.rollback_slow.log_e()),
            e: capped_exp(
                log_add_exp(self.rollback_errors.log_e(), self.rollback_slow.log_e())
                    - std::f64::consts::LN_2,
            ),
            rollback_threshold: 1.0 / a,
            p_value: (-self.max_log_e).exp().min(1.0),
            ratio_errors: range(&self.grid_errors),
            ratio_slow: range(&self.grid_slow),
            gate: last.and_then(|v| v.gate.clone()),
            stable: summarize(stable, edge),
            canary: summarize(canary, edge),
            phi_errors: self.phi_errors(),
            phi_slow: self.phi_slow(),
            hold: last.is_some_and(|v| v.hold),
            slow_threshold_seconds: edge.map(edge_seconds),
            r0_errors: r0e,
            r0_slow: r0s,
            e_combined: last.and_then(|v| v.e_combined),
            segments: Vec::new(),
        }
    }

    /// Each judged segment's evidence, with its per-arm numbers from
    /// `step` (the current step's counts per segment; missing = none).
    pub fn segment_evidence(&self, step: &[SegmentTick]) -> Vec<SegmentSummary> {
        let edge = self.thresholds.as_ref().and_then(|t| t.slow_edge);
        let empty = SegmentTick::default();
        self.segments
            .iter()
            .map(|j| {
                let t = step
                    .iter()
                    .find(|t| t.segment == j.segment)
                    .unwrap_or(&empty);
                SegmentSummary {
                    segment: j.segment.clone(),
                    e: j.e(),
                    e_errors: capped_exp(j.errors.log_e()),
                    e_slow: capped_exp(j.slow.log_e()),
                    stable: summarize(&t.stable, edge),
                    canary: summarize(&t.canary, edge),
                }
            })
            .collect()
    }
}

/// One arm's numbers; slow requests counted above boundary `edge`.
pub fn summarize(arm: &ArmTick, edge: Option<usize>) -> ArmSummary {
    ArmSummary {
        requests: arm.requests,
        errors: arm.errors_clamped(),
        error_rate: if arm.requests > 0 {
            arm.errors_clamped() as f64 / arm.requests as f64
        } else {
            0.0
        },
        slow: edge.map_or(0, |e| arm.slow(e)),
        p99_seconds: arm.latency.quantile(0.99),
    }
}
