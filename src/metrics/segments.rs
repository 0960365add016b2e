//! `grayproxy_segment_requests_total{route,arm,segment,code}`: answers per
//! segment of routes with `segments`. The segment label takes only the
//! route's `segment_values` and `other` (at most 17 values), so the family
//! stays bounded; handles are resolved once per route and segment set.

use prometheus::{IntCounter, IntCounterVec, Opts};

use super::CodeClass;
use crate::domain::Arm;

/// Metric name.
pub const SEGMENT_REQUESTS: &str = "grayproxy_segment_requests_total";

/// The family (registered by [`super::Metrics::new`]).
pub(super) fn family() -> Result<IntCounterVec, prometheus::Error> {
    IntCounterVec::new(
        Opts::new(
            SEGMENT_REQUESTS,
            "Answers per route, arm, segment (segment_values, or other) and status class; counted like grayproxy_requests_total.",
        ),
        &["route", "arm", "segment", "code"],
    )
}

/// Pre-resolved counters of one route: `[segment][arm][code class]`.
#[derive(Clone, Debug)]
pub struct SegmentMetrics {
    cells: Vec<[[IntCounter; 4]; 2]>,
}

impl SegmentMetrics {
    /// Resolves the counters of `route` for `segments` (index order).
    pub(super) fn new(family: &IntCounterVec, route: &str, segments: &[String]) -> SegmentMetrics {
        let cells = segments
            .iter()
            .map(|s| {
                Arm::ALL.map(|arm| {
                    CodeClass::ALL.map(|code| {
                        family.with_label_values(&[route, arm.as_str(), s, code.as_str()])
                    })
                })
            })
            .collect();
        SegmentMetrics { cells }
    }

    /// Counts one answer of `arm` with HTTP status `status` in segment
    /// `segment` (out of range counts as the last, `other`).
    pub fn record(&self, segment: usize, arm: Arm, status: u16) {
        let last = self.cells.len().saturating_sub(1);
        if let Some(s) = self.cells.get(segment.min(last)) {
            s[arm.index()][CodeClass::of(status).index()].inc();
        }
    }
}

/// Removes the series of `route` whose segment is not in `keep` (all of
/// them for an empty `keep`).
pub(super) fn forget(family: &IntCounterVec, route: &str, keep: &[String]) {
    use prometheus::core::Collector;
    let mut drop: Vec<Vec<String>> = Vec::new();
    for mf in family.collect() {
        for m in mf.get_metric() {
            let label = |name: &str| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == name)
                    .map(|l| l.value().to_owned())
                    .unwrap_or_default()
            };
            let segment = label("segment");
            if label("route") == route && !keep.contains(&segment) {
                drop.push(vec![route.to_owned(), label("arm"), segment, label("code")]);
            }
        }
    }
    for labels in drop {
        let refs: Vec<&str> = labels.iter().map(String::as_str).collect();
        let _ = family.remove_label_values(&refs);
    }
}
