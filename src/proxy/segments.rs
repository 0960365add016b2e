//! A route's live per-segment state: its segment policy, the judge's
//! per-segment counters, the Prometheus handles and the since-start totals
//! `/status` shows. Replaced as a whole when a reload changes the route's
//! `segments` or `segment_values`, so a request classified against one
//! policy is always counted with the same policy's names.

use std::sync::Mutex;
use std::time::Duration;

use crate::config::types::SegmentPolicy;
use crate::domain::Arm;
use crate::metrics::{Metrics, SegmentMetrics};
use crate::ramp::segments::{classify, merge_segments, SegmentRecorder, SegmentTick};
use crate::routing::RequestView;

/// One route's segments (see the module docs).
#[derive(Debug)]
pub struct SegmentLive {
    policy: SegmentPolicy,
    recorder: SegmentRecorder,
    metrics: SegmentMetrics,
    totals: Mutex<Vec<SegmentTick>>,
}

impl SegmentLive {
    /// Counters and metric handles for `policy` on `route`.
    pub fn new(policy: &SegmentPolicy, metrics: &Metrics, route: &str) -> SegmentLive {
        let recorder = SegmentRecorder::new(policy);
        let metrics = metrics.segments(route, recorder.names());
        SegmentLive {
            policy: policy.clone(),
            recorder,
            metrics,
            totals: Mutex::new(Vec::new()),
        }
    }

    /// The policy these counters follow.
    pub fn policy(&self) -> &SegmentPolicy {
        &self.policy
    }

    /// The segment index of a request (`other` = `values.len()`).
    pub fn classify(&self, req: &RequestView<'_>) -> usize {
        classify(&self.policy, req)
    }

    /// Counts an answer in `grayproxy_segment_requests_total`.
    pub fn record_answer(&self, segment: usize, arm: Arm, status: u16) {
        self.metrics.record(segment, arm, status);
    }

    /// Counts a weight-assigned request for the judge.
    pub fn record_judged(&self, segment: usize, arm: Arm, error: bool, latency: Duration) {
        self.recorder.record(segment, arm, error, latency);
    }

    /// Drains the judge's counters (into the since-start totals too).
    pub fn take(&self) -> Vec<SegmentTick> {
        let tick = self.recorder.take();
        if !tick.is_empty() {
            let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
            merge_segments(&mut totals, &tick);
        }
        tick
    }

    /// Weight-assigned totals per segment since these counters began (every
    /// segment, `other` last, as of the last drain).
    pub fn totals(&self) -> Vec<SegmentTick> {
        let totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        self.recorder
            .names()
            .iter()
            .map(|n| {
                totals
                    .iter()
                    .find(|t| &t.segment == n)
                    .cloned()
                    .unwrap_or_else(|| SegmentTick::named(n))
            })
            .collect()
    }
}
