//! What the judge sees per tick: per-arm request, error and latency counts of
//! weight-assigned requests, plus the two A/A halves of stable.
//!
//! [`WindowRecorder`] is the hot-path side: the proxy calls
//! [`WindowRecorder::record`] once per weight-assigned request (relaxed
//! atomics, no lock, no allocation) and the ramp driver drains it with
//! [`WindowRecorder::take`] every tick and at every weight change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::domain::Arm;

pub use crate::ramp::segments::{merge_segments, SegmentTick};

/// Lowest histogram boundary: 1 ms.
const FIRST_EDGE_NS: u64 = 1_000_000;
/// Highest histogram boundary: 60 s.
const LAST_EDGE_NS: u64 = 60_000_000_000;

const fn edge_count() -> usize {
    let mut e = FIRST_EDGE_NS;
    let mut n = 1;
    while e * 11 / 10 < LAST_EDGE_NS {
        e = e * 11 / 10;
        n += 1;
    }
    n + 1
}

/// Number of bucket boundaries of the judge histogram.
pub const EDGE_COUNT: usize = edge_count();
/// Number of buckets: one per boundary (latency ≤ boundary) plus overflow.
pub const BUCKET_COUNT: usize = EDGE_COUNT + 1;

const fn build_edges() -> [u64; EDGE_COUNT] {
    let mut out = [0u64; EDGE_COUNT];
    let mut e = FIRST_EDGE_NS;
    let mut i = 0;
    while i + 1 < EDGE_COUNT {
        out[i] = e;
        e = e * 11 / 10;
        i += 1;
    }
    out[EDGE_COUNT - 1] = LAST_EDGE_NS;
    out
}

/// Upper bucket boundaries in nanoseconds: 1 ms × 1.1^k (integer-rounded
/// down, so the ratio of neighbours is ≤ 1.1), then 60 s.
pub const EDGES_NS: [u64; EDGE_COUNT] = build_edges();

/// Boundary `index` in seconds.
pub fn edge_seconds(index: usize) -> f64 {
    EDGES_NS[index.min(EDGE_COUNT - 1)] as f64 / 1e9
}

/// Index of the smallest boundary ≥ `seconds`, or `None` above 60 s.
pub fn edge_at_or_above(seconds: f64) -> Option<usize> {
    if !seconds.is_finite() {
        return None;
    }
    let ns = (seconds.max(0.0) * 1e9).ceil();
    let i = EDGES_NS.partition_point(|&e| (e as f64) < ns);
    (i < EDGE_COUNT).then_some(i)
}

/// Bucket of a latency: the first boundary ≥ it, or the overflow bucket.
pub fn bucket_of(latency: Duration) -> usize {
    let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    EDGES_NS.partition_point(|&e| e < ns)
}

/// Bucket of a latency given in seconds (same as [`bucket_of`]; computed from
/// the logarithm, then corrected against the integer boundaries).
pub fn bucket_of_seconds(secs: f64) -> usize {
    let ns = (secs * 1e9).ceil().clamp(0.0, 1.8e19) as u64;
    let guess = ((secs * 1000.0).ln() / 1.1f64.ln()).ceil();
    let mut i = if guess.is_finite() {
        guess.clamp(0.0, EDGE_COUNT as f64) as usize
    } else {
        0
    };
    while i > 0 && EDGES_NS[i - 1] >= ns {
        i -= 1;
    }
    while i < EDGE_COUNT && EDGES_NS[i] < ns {
        i += 1;
    }
    i
}

/// Log-spaced latency histogram (boundary ratio ≤ 1.1 from 1 ms to 60 s,
/// bucket 0 holds everything ≤ 1 ms, the last bucket everything > 60 s).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SparseCounts", into = "SparseCounts")]
pub struct JudgeHistogram {
    counts: Vec<u64>,
}

/// Serialized form: `[[bucket, count], ..]` for the non-empty buckets.
#[derive(Serialize, Deserialize)]
struct SparseCounts(Vec<(u16, u64)>);

impl From<JudgeHistogram> for SparseCounts {
    fn from(h: JudgeHistogram) -> Self {
        SparseCounts(
            h.counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(i, &c)| (i as u16, c))
                .collect(),
        )
    }
}

impl TryFrom<SparseCounts> for JudgeHistogram {
    type Error = String;
    fn try_from(s: SparseCounts) -> Result<Self, String> {
        let mut h = JudgeHistogram::default();
        for (i, c) in s.0 {
            let slot = h
                .counts
                .get_mut(usize::from(i))
                .ok_or_else(|| format!("histogram bucket {i} is out of range 0..{BUCKET_COUNT}"))?;
            *slot += c;
        }
        Ok(h)
    }
}

impl Default for JudgeHistogram {
    fn default() -> Self {
        JudgeHistogram {
            counts: vec![0; BUCKET_COUNT],
        }
    }
}

impl JudgeHistogram {
    /// An empty histogram.
    pub fn new() -> JudgeHistogram {
        JudgeHistogram::default()
    }

    /// Counts one latency.
    pub fn record(&mut self, latency: Duration) {
        self.counts[bucket_of(latency)] += 1;
    }

    /// Adds `n` observations to bucket `bucket` (clamped to the overflow bucket).
    pub fn add_to_bucket(&mut self, bucket: usize, n: u64) {
        self.counts[bucket.min(BUCKET_COUNT - 1)] += n;
    }

    /// Raw bucket counts (`BUCKET_COUNT` of them).
    pub fn counts(&self) -> &[u64] {
        &self.counts
    }

    /// All observations.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Observations strictly above boundary `edge` ([`EDGES_NS`] index).
    pub fn count_above(&self, edge: usize) -> u64 {
        self.counts.iter().skip(edge.saturating_add(1)).sum()
    }

    /// Adds another histogram into this one.
    pub fn merge(&mut self, other: &JudgeHistogram) {
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }

    /// Quantile estimate in seconds (Prometheus `histogram_quantile`: linear
    /// within the bucket; 60 s for the overflow bucket); `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total as f64;
        let mut cum = 0u64;
        for (b, &c) in self.counts.iter().enumerate() {
            if c > 0 && (cum + c) as f64 >= rank {
                if b >= EDGE_COUNT {
                    return Some(edge_seconds(EDGE_COUNT - 1));
                }
                let lower = if b == 0 { 0.0 } else { edge_seconds(b - 1) };
                let upper = edge_seconds(b);
                let frac = ((rank - cum as f64) / c as f64).clamp(0.0, 1.0);
                return Some(lower + (upper - lower) * frac);
            }
            cum += c;
        }
        Some(edge_seconds(EDGE_COUNT - 1))
    }
}

/// One arm's weight-assigned requests over one tick.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArmTick {
    /// Requests answered (or failed).
    pub requests: u64,
    /// Errors: 5xx, connect failure, timeout, reset (also when fallback hid them).
    pub errors: u64,
    /// Latency histogram of the same requests.
    pub latency: JudgeHistogram,
}

impl ArmTick {
    /// Adds another tick's counts into this one.
    pub fn merge(&mut self, other: &ArmTick) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.latency.merge(&other.latency);
    }

    /// Requests slower than boundary `edge`, never more than `requests`.
    pub fn slow(&self, edge: usize) -> u64 {
        self.latency.count_above(edge).min(self.requests)
    }

    /// Errors, never more than `requests` (the recorder's counters are not
    /// drained as one atomic snapshot).
    pub fn errors_clamped(&self) -> u64 {
        self.errors.min(self.requests)
    }
}

/// Everything the judge gets for one tick.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TickCounts {
    /// Stable, both halves together.
    pub stable: ArmTick,
    /// Canary.
    pub canary: ArmTick,
    /// Stable split A/A by bucket parity (for the dispersion guard).
    pub stable_halves: [ArmTick; 2],
    /// The same requests per segment (routes with `segments` only), one
    /// entry per segment seen; absent in ticks of older versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentTick>,
}

impl TickCounts {
    /// Builds a tick from the canary and the two stable halves (stable = their sum).
    pub fn from_halves(canary: ArmTick, halves: [ArmTick; 2]) -> TickCounts {
        let mut stable = halves[0].clone();
        stable.merge(&halves[1]);
        TickCounts {
            stable,
            canary,
            stable_halves: halves,
            segments: Vec::new(),
        }
    }

    /// Adds another tick's counts into this one (segments matched by name).
    pub fn merge(&mut self, other: &TickCounts) {
        self.stable.merge(&other.stable);
        self.canary.merge(&other.canary);
        self.stable_halves[0].merge(&other.stable_halves[0]);
        self.stable_halves[1].merge(&other.stable_halves[1]);
        merge_segments(&mut self.segments, &other.segments);
    }

    /// True when no request at all was seen.
    pub fn is_empty(&self) -> bool {
        self.stable.requests == 0 && self.canary.requests == 0
    }
}

/// One arm's counters (relaxed atomics): requests, errors, latency buckets.
pub(crate) struct AtomicArm {
    requests: AtomicU64,
    errors: AtomicU64,
    buckets: [AtomicU64; BUCKET_COUNT],
}

impl AtomicArm {
    pub(crate) fn new() -> AtomicArm {
        AtomicArm {
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts one request.
    pub(crate) fn add(&self, error: bool, latency: Duration) {
        self.buckets[bucket_of(latency)].fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Drains the counters (each swapped to 0).
    pub(crate) fn take(&self) -> ArmTick {
        let mut latency = JudgeHistogram::new();
        for (slot, b) in latency.counts.iter_mut().zip(&self.buckets) {
            *slot = b.swap(0, Ordering::Relaxed);
        }
        ArmTick {
            errors: self.errors.swap(0, Ordering::Relaxed),
            requests: self.requests.swap(0, Ordering::Relaxed),
            latency,
        }
    }
}

/// Counter shards of a recorder: threads spread over them so concurrent
/// requests rarely touch the same cache line.
const SHARDS: usize = 8;

/// One shard: canary and the two stable halves.
struct Shard {
    canary: AtomicArm,
    halves: [AtomicArm; 2],
}

std::thread_local! {
    /// This thread's shard, assigned round-robin on first use.
    static SHARD: usize = next_shard();
}

fn next_shard() -> usize {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    (NEXT.fetch_add(1, Ordering::Relaxed) % SHARDS as u64) as usize
}

/// Lock-free per-route recorder of weight-assigned requests.
///
/// Stable requests are kept per A/A half only (stable = the halves' sum), so
/// every `record` costs three relaxed atomic adds at most plus a 7-step
/// binary search for the bucket. Counters are sharded by thread so that
/// proxy workers on different cores do not contend.
///
/// A shard (3 KiB of counters) is allocated by the first request recorded
/// into it: in a table of thousands of routes most see little or no
/// traffic, and eight shards for each would cost 24 KiB per route at start
/// (240 MiB for 10,000 routes) and a scan of all of it every second.
pub struct WindowRecorder {
    shards: [OnceLock<Box<Shard>>; SHARDS],
}

impl Default for WindowRecorder {
    fn default() -> Self {
        WindowRecorder::new()
    }
}

impl std::fmt::Debug for WindowRecorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WindowRecorder").finish_non_exhaustive()
    }
}

impl WindowRecorder {
    /// An empty recorder.
    pub fn new() -> WindowRecorder {
        WindowRecorder {
            shards: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    /// Counts one weight-assigned request. `half` (0 or 1, from the bucket's
    /// parity; only the low bit is used) matters for stable only.
    pub fn record(&self, arm: Arm, half: usize, error: bool, latency: Duration) {
        let shard = self.shards[SHARD.with(|s| *s) % SHARDS].get_or_init(|| {
            Box::new(Shard {
                canary: AtomicArm::new(),
                halves: [AtomicArm::new(), AtomicArm::new()],
            })
        });
        let a = match arm {
            Arm::Canary => &shard.canary,
            Arm::Stable => &shard.halves[half & 1],
        };
        a.add(error, latency);
    }

    /// Whether a request was recorded since the last `take` (a request
    /// racing with this answer is seen by the next look).
    pub fn has_requests(&self) -> bool {
        self.shards.iter().filter_map(OnceLock::get).any(|s| {
            [&s.canary, &s.halves[0], &s.halves[1]]
                .iter()
                .any(|a| a.requests.load(Ordering::Relaxed) > 0)
        })
    }

    /// Drains everything recorded since the last `take` (each counter is
    /// swapped to 0; a request racing with `take` lands in one tick or the next).
    pub fn take(&self) -> TickCounts {
        let mut canary = ArmTick::default();
        let mut halves = [ArmTick::default(), ArmTick::default()];
        for shard in self.shards.iter().filter_map(OnceLock::get) {
            canary.merge(&shard.canary.take());
            for (h, a) in halves.iter_mut().zip(&shard.halves) {
                h.merge(&a.take());
            }
        }
        TickCounts::from_halves(canary, halves)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn edges_span_1ms_to_60s_with_ratio_at_most_1_1() {
        assert_eq!(EDGES_NS[0], 1_000_000);
        assert_eq!(EDGES_NS[EDGE_COUNT - 1], 60_000_000_000);
        for w in EDGES_NS.windows(2) {
            assert!(w[1] > w[0]);
            assert!(w[1] as f64 / w[0] as f64 <= 1.1 + 1e-12, "{w:?}");
        }
        const { assert!(EDGE_COUNT > 100 && EDGE_COUNT < 130) };
    }

    #[test]
    fn buckets_follow_le_semantics() {
        assert_eq!(bucket_of(Duration::ZERO), 0);
        assert_eq!(bucket_of(Duration::from_millis(1)), 0);
        assert_eq!(bucket_of(Duration::from_nanos(1_000_001)), 1);
        assert_eq!(bucket_of(Duration::from_secs(60)), EDGE_COUNT - 1);
        assert_eq!(bucket_of(Duration::from_secs(61)), EDGE_COUNT);
        for i in 0..5000u64 {
            let ns = 1 + i * i * i * 997;
            let d = Duration::from_nanos(ns);
            assert_eq!(bucket_of_seconds(d.as_secs_f64()), bucket_of(d), "{ns}");
        }
        assert_eq!(bucket_of_seconds(0.0), 0);
        assert_eq!(edge_at_or_above(0.001), Some(0));
        assert_eq!(edge_at_or_above(61.0), None);
        let e = edge_at_or_above(0.162).unwrap();
        assert!(edge_seconds(e) >= 0.162 && edge_seconds(e - 1) < 0.162);
    }

    #[test]
    fn quantile_and_count_above() {
        let mut h = JudgeHistogram::new();
        for ms in 1..=1000u64 {
            h.record(Duration::from_millis(ms));
        }
        let p99 = h.quantile(0.99).unwrap();
        assert!((p99 - 0.990).abs() < 0.05, "{p99}");
        let e = edge_at_or_above(0.5).unwrap();
        let above = h.count_above(e);
        let want = 1000 - (EDGES_NS[e] / 1_000_000);
        assert_eq!(above, want);
        assert_eq!(JudgeHistogram::new().quantile(0.5), None);
    }

    #[test]
    fn recorder_splits_and_drains() {
        let r = WindowRecorder::new();
        r.record(Arm::Stable, 0, false, Duration::from_millis(10));
        r.record(Arm::Stable, 1, true, Duration::from_millis(200));
        r.record(Arm::Stable, 3, false, Duration::from_millis(20));
        r.record(Arm::Canary, 0, true, Duration::from_secs(100));
        let t = r.take();
        assert_eq!(t.stable.requests, 3);
        assert_eq!(t.stable.errors, 1);
        assert_eq!(t.stable_halves[0].requests, 1);
        assert_eq!(t.stable_halves[1].requests, 2);
        assert_eq!(t.canary.requests, 1);
        assert_eq!(t.canary.latency.counts()[EDGE_COUNT], 1);
        assert!(r.take().is_empty());
    }

    #[test]
    fn recorder_counts_every_request_across_threads() {
        let r = WindowRecorder::new();
        std::thread::scope(|s| {
            for t in 0..4usize {
                let r = &r;
                s.spawn(move || {
                    for i in 0..1000usize {
                        let arm = if i % 10 == 0 {
                            Arm::Canary
                        } else {
                            Arm::Stable
                        };
                        r.record(arm, i + t, i % 100 == 0, Duration::from_millis(i as u64));
                    }
                });
            }
        });
        let t = r.take();
        assert_eq!((t.canary.requests, t.stable.requests), (400, 3600));
        assert_eq!(t.canary.errors + t.stable.errors, 40);
        assert_eq!(t.stable.latency.total() + t.canary.latency.total(), 4000);
    }

    #[test]
    fn histogram_serde_is_sparse_and_round_trips() {
        let mut h = JudgeHistogram::new();
        h.record(Duration::from_millis(40));
        h.record(Duration::from_millis(40));
        let s = serde_json::to_string(&h).unwrap();
        assert!(s.len() < 20, "{s}");
        let back: JudgeHistogram = serde_json::from_str(&s).unwrap();
        assert_eq!(back, h);
        assert!(serde_json::from_str::<JudgeHistogram>("[[999,1]]").is_err());
    }
}
