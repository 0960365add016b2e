//! The request-path side of per-segment guardrails: which segment a request
//! belongs to ([`classify`]), its lock-free per-segment counters
//! ([`SegmentRecorder`]) and what they drain into ([`SegmentTick`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::types::SegmentPolicy;
use crate::domain::Arm;
use crate::ramp::window::{ArmTick, AtomicArm};
use crate::routing::{sticky_key, RequestView};

/// One segment's weight-assigned requests over one tick (or a step, or
/// since start).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentTick {
    /// The segment: a value of `segment_values`, or `other`.
    pub segment: String,
    /// Stable's requests of the segment.
    pub stable: ArmTick,
    /// Canary's requests of the segment.
    pub canary: ArmTick,
}

impl SegmentTick {
    /// An empty tick of `segment`.
    pub fn named(segment: &str) -> SegmentTick {
        SegmentTick {
            segment: segment.to_owned(),
            ..SegmentTick::default()
        }
    }

    /// One arm's counts.
    pub fn arm(&self, arm: Arm) -> &ArmTick {
        match arm {
            Arm::Stable => &self.stable,
            Arm::Canary => &self.canary,
        }
    }
}

/// Adds `add` into `into`, segment by segment (matched by name; new names
/// are appended, so the order is the order first seen).
pub fn merge_segments(into: &mut Vec<SegmentTick>, add: &[SegmentTick]) {
    for a in add {
        match into.iter_mut().find(|s| s.segment == a.segment) {
            Some(s) => {
                s.stable.merge(&a.stable);
                s.canary.merge(&a.canary);
            }
            None => into.push(a.clone()),
        }
    }
}

/// The segment index of a request: the position of its value in
/// `policy.values`, or `policy.values.len()` (`other`) for any other value
/// or none. The value is compared as raw bytes, as sent (no decoding, no
/// allocation); an empty value is none.
pub fn classify(policy: &SegmentPolicy, req: &RequestView<'_>) -> usize {
    let other = policy.values.len();
    match sticky_key(&policy.source, req) {
        Some(v) => policy
            .values
            .iter()
            .position(|s| s.as_bytes() == v)
            .unwrap_or(other),
        None => other,
    }
}

/// Lock-free per-segment, per-arm counters of weight-assigned requests for
/// one route: relaxed atomics, no allocation per request. One set of
/// counters per segment (not sharded: a segmented route costs ~2 KiB per
/// segment, and the overall recorder already spreads the hot counters).
pub struct SegmentRecorder {
    names: Vec<String>,
    arms: Box<[[AtomicArm; 2]]>,
}

impl std::fmt::Debug for SegmentRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SegmentRecorder")
            .field("names", &self.names)
            .finish_non_exhaustive()
    }
}

impl SegmentRecorder {
    /// Counters for every segment of `policy` (its values, then `other`).
    pub fn new(policy: &SegmentPolicy) -> SegmentRecorder {
        let names: Vec<String> = policy.names().map(str::to_owned).collect();
        let arms = names
            .iter()
            .map(|_| [AtomicArm::new(), AtomicArm::new()])
            .collect();
        SegmentRecorder { names, arms }
    }

    /// The segments, in index order (`other` last).
    pub fn names(&self) -> &[String] {
        &self.names
    }

    /// Counts one request of segment `index` (out of range counts as `other`).
    pub fn record(&self, index: usize, arm: Arm, error: bool, latency: Duration) {
        let last = self.arms.len().saturating_sub(1);
        if let Some(a) = self.arms.get(index.min(last)) {
            a[arm.index()].add(error, latency);
        }
    }

    /// Drains every segment that saw a request since the last `take`.
    pub fn take(&self) -> Vec<SegmentTick> {
        self.names
            .iter()
            .zip(self.arms.iter())
            .filter_map(|(name, [s, c])| {
                let (stable, canary) = (s.take(), c.take());
                (stable.requests > 0 || canary.requests > 0).then(|| SegmentTick {
                    segment: name.clone(),
                    stable,
                    canary,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::types::StickySource;

    fn policy(source: StickySource) -> SegmentPolicy {
        SegmentPolicy {
            source,
            values: vec!["new".into(), "returning".into(), "app".into()],
        }
    }

    fn classify_req(p: &SegmentPolicy, uri: &str, headers: &[(&str, &str)]) -> usize {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        let req = b.body(()).unwrap();
        classify(p, &RequestView::of(&req))
    }

    /// (policy, uri, headers, segment index).
    type Case<'a> = (&'a SegmentPolicy, &'a str, &'a [(&'a str, &'a str)], usize);

    #[test]
    fn classification_by_header_cookie_and_query() {
        let h = policy(StickySource::Header(http::HeaderName::from_static(
            "x-user-segment",
        )));
        let c = policy(StickySource::Cookie("seg".into()));
        let q = policy(StickySource::Query("seg".into()));
        let cases: &[Case<'_>] = &[
            (&h, "/", &[("x-user-segment", "new")], 0),
            (&h, "/", &[("x-user-segment", "app")], 2),
            (&h, "/", &[("x-user-segment", "New")], 3),
            (&h, "/", &[("x-user-segment", "")], 3),
            (&h, "/", &[("x-user-segment", "newer")], 3),
            (&h, "/", &[], 3),
            (
                &h,
                "/",
                &[("x-user-segment", "returning"), ("x-user-segment", "new")],
                1,
            ),
            (&c, "/", &[("cookie", "a=1; seg=returning")], 1),
            (&c, "/", &[("cookie", "seg=other")], 3),
            (&c, "/?seg=new", &[], 3),
            (&q, "/p?x=1&seg=app", &[], 2),
            (&q, "/p?seg=%6Eew", &[], 3),
            (&q, "/p", &[("x-user-segment", "new")], 3),
        ];
        for (i, (p, uri, headers, want)) in cases.iter().enumerate() {
            assert_eq!(
                classify_req(p, uri, headers),
                *want,
                "case {i}: {uri} {headers:?}"
            );
        }
    }

    #[test]
    fn recorder_counts_per_segment_and_arm_and_drains() {
        let p = policy(StickySource::Query("s".into()));
        let r = SegmentRecorder::new(&p);
        assert_eq!(r.names(), ["new", "returning", "app", "other"]);
        r.record(0, Arm::Canary, true, Duration::from_millis(5));
        r.record(0, Arm::Stable, false, Duration::from_millis(5));
        r.record(3, Arm::Stable, false, Duration::from_millis(5));
        r.record(99, Arm::Stable, true, Duration::from_millis(5));
        let t = r.take();
        assert_eq!(t.len(), 2, "only segments with requests: {t:?}");
        assert_eq!(t[0].segment, "new");
        assert_eq!((t[0].canary.requests, t[0].canary.errors), (1, 1));
        assert_eq!((t[0].stable.requests, t[0].stable.errors), (1, 0));
        assert_eq!(t[1].segment, "other");
        assert_eq!((t[1].stable.requests, t[1].stable.errors), (2, 1));
        assert!(r.take().is_empty());
    }

    #[test]
    fn merging_matches_segments_by_name() {
        let mut a = vec![SegmentTick::named("new")];
        a[0].canary.requests = 2;
        let mut b = vec![SegmentTick::named("other"), SegmentTick::named("new")];
        b[1].canary.requests = 3;
        b[0].stable.requests = 1;
        merge_segments(&mut a, &b);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].canary.requests, 5);
        assert_eq!((a[1].segment.as_str(), a[1].stable.requests), ("other", 1));
    }
}
