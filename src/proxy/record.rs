//! Counting one finished request: metrics and the ramp's window. The request
//! path calls it at the response headers; a gRPC call's body calls it when
//! its trailers arrive (see [`super::grpc_body`]). Same code both ways, so a
//! gRPC call and an HTTP request are counted alike.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::outcome::Outcome;
use crate::domain::Arm;
use crate::proxy::runtime::RouteRuntime;
use crate::proxy::segments::SegmentLive;
use crate::routing::Decision;

/// How a request ended, as far as counting goes.
#[derive(Debug, Clone)]
pub struct Ended {
    /// The arm whose answer the client got.
    pub arm: Arm,
    /// Its exchange's outcome and latency, if it got that far.
    pub last: Option<(Outcome, Duration)>,
    /// The canary's outcome and latency, when it fell back to stable.
    pub canary_fell_back: Option<(Outcome, Duration)>,
    /// Whether the request was a gRPC call.
    pub grpc: bool,
    /// The request's segment and the counters it goes to (routes whose
    /// ramp has `segments` only).
    pub segment: Option<(Arc<SegmentLive>, usize)>,
}

/// Records the request, once. The weight-assigned exchange goes to metrics
/// and the ramp's window (rule-forced ones are only counted apart); stable's
/// answer to a fallback goes to metrics only, because it is not a
/// weight-assigned stable request.
pub fn record(rt: &RouteRuntime, decision: &Decision, ended: &Ended) {
    match (ended.canary_fell_back, ended.last) {
        (Some((canary, canary_latency)), stable) => {
            // The canary's failure still counts against it.
            judge(rt, decision, ended, Arm::Canary, canary, canary_latency);
            rt.metrics.record_fallback();
            if let Some((outcome, latency)) = stable {
                record_metrics(rt, Arm::Stable, outcome, latency, ended.grpc);
                record_segment(ended, Arm::Stable, outcome);
            }
        }
        (None, Some((outcome, latency))) => judge(rt, decision, ended, ended.arm, outcome, latency),
        (None, None) => {}
    }
}

/// Counts the decided arm's exchange in metrics and, when the weight
/// assigned the arm, in the ramp's window.
fn judge(
    rt: &RouteRuntime,
    decision: &Decision,
    ended: &Ended,
    arm: Arm,
    outcome: Outcome,
    latency: Duration,
) {
    record_metrics(rt, arm, outcome, latency, ended.grpc);
    record_segment(ended, arm, outcome);
    if !decision.reason.is_weight_assigned() {
        rt.record_forced(arm);
        return;
    }
    if let Some((s, i)) = &ended.segment {
        s.record_judged(*i, arm, outcome.is_failure(), latency);
    }
    let half = match decision.bucket {
        Some(b) => usize::from(b & 1),
        None => usize::from(rand::thread_rng().gen::<bool>()),
    };
    rt.window.record(arm, half, outcome.is_failure(), latency);
}

/// Counts an exchange in the route × arm's Prometheus metrics.
fn record_metrics(rt: &RouteRuntime, arm: Arm, outcome: Outcome, latency: Duration, grpc: bool) {
    let metrics = rt.metrics.arm(arm);
    metrics.record_answer(outcome.status().as_u16(), latency.as_secs_f64());
    if let Some(kind) = outcome.failure_kind() {
        metrics.record_failure(kind);
    }
    if grpc {
        if let Some(code) = outcome.grpc_code() {
            rt.metrics.record_grpc(arm, code);
        }
    }
}

/// Counts an answer in the request's segment (like `record_metrics`).
fn record_segment(ended: &Ended, arm: Arm, outcome: Outcome) {
    if let Some((s, i)) = &ended.segment {
        s.record_answer(*i, arm, outcome.status().as_u16());
    }
}
