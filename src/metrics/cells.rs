//! The per-route metric families as plain atomic cells, written straight
//! into the scrape's text.
//!
//! prometheus' `*Vec` families keep, for every series, its own descriptor
//! (name, help, label names), its label pairs as owned strings and a hash
//! map entry: about 21 KiB for a route's 30 series, 210 MiB for 10,000
//! routes, and most of a 10,000-route start-up spent building them. Here a
//! route is about 450 bytes of counters (shadow traffic's are allocated on
//! its first mirrored request), and a scrape writes their text directly
//! (`super::text`): no label strings, metric structs or sort of 25,000
//! series per scrape. The text is the one prometheus' vecs rendered: same
//! names, help, labels, values and order (a test compares them).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::{CodeClass, FailureKind, ShadowResult, DURATION_BUCKETS, RAMP_STATES, RBO_BUCKETS};

/// Bucket count of the duration histogram (its `+Inf` is the count).
const BUCKETS: usize = DURATION_BUCKETS.len();

/// Bucket count of the shadow RBO histogram.
const RBO: usize = RBO_BUCKETS.len();

/// No ramp state published yet: every state series reads 0.
const NO_STATE: u8 = u8::MAX;

/// An `f64` in an atomic, for sums and gauges.
#[derive(Debug, Default)]
pub(super) struct AtomicF64(AtomicU64);

impl AtomicF64 {
    pub(super) fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }

    fn set(&self, v: f64) {
        self.0.store(v.to_bits(), Ordering::Relaxed);
    }

    fn add(&self, v: f64) {
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
    }
}

/// A histogram with `N` fixed buckets, observed as prometheus' does.
#[derive(Debug)]
pub(super) struct Hist<const N: usize> {
    /// Observations per bucket (not cumulative): the first bucket whose
    /// upper bound is at least the value, as prometheus' histogram does.
    pub(super) buckets: [AtomicU64; N],
    count: AtomicU64,
    pub(super) sum: AtomicF64,
}

impl<const N: usize> Default for Hist<N> {
    fn default() -> Self {
        Hist {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum: AtomicF64::default(),
        }
    }
}

impl<const N: usize> Hist<N> {
    fn observe(&self, bounds: &[f64], v: f64) {
        if let Some(i) = bounds.iter().position(|b| v <= *b) {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.add(v);
    }

    /// The count, never below the buckets' total (an observation racing
    /// the scrape).
    pub(super) fn count(&self, buckets_total: u64) -> u64 {
        self.count.load(Ordering::Relaxed).max(buckets_total)
    }
}

/// The counters of one route × arm: pre-resolved for the hot path.
#[derive(Debug, Default)]
pub struct ArmMetrics {
    pub(super) codes: [AtomicU64; 4],
    pub(super) failures: [AtomicU64; 4],
    pub(super) duration: Hist<BUCKETS>,
}

impl ArmMetrics {
    /// Counts an answer from this arm (upstream or proxy-made) and its duration.
    pub fn record_answer(&self, status: u16, seconds: f64) {
        self.codes[CodeClass::of(status).index()].fetch_add(1, Ordering::Relaxed);
        self.duration.observe(DURATION_BUCKETS, seconds);
    }

    /// Counts an exchange that produced no response.
    pub fn record_failure(&self, kind: FailureKind) {
        self.failures[kind.index()].fetch_add(1, Ordering::Relaxed);
    }
}

/// Shadow traffic's counters of one route.
#[derive(Debug, Default)]
pub(super) struct ShadowCells {
    pub(super) results: [AtomicU64; 4],
    pub(super) rbo: Hist<RBO>,
}

/// The counters and gauges of one route.
#[derive(Debug)]
pub(super) struct RouteCells {
    pub(super) arms: [ArmMetrics; 2],
    pub(super) fallbacks: AtomicU64,
    pub(super) weight: AtomicF64,
    ramp_state: AtomicU8,
    /// `None` until the route mirrors a request (most routes never do);
    /// its series read 0 until then.
    pub(super) shadow: OnceLock<Box<ShadowCells>>,
}

impl RouteCells {
    fn new() -> RouteCells {
        RouteCells {
            arms: [ArmMetrics::default(), ArmMetrics::default()],
            fallbacks: AtomicU64::new(0),
            weight: AtomicF64::default(),
            ramp_state: AtomicU8::new(NO_STATE),
            shadow: OnceLock::new(),
        }
    }

    /// Counts a canary failure answered by stable.
    pub(super) fn record_fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Publishes the live weight, in percent.
    pub(super) fn set_weight(&self, percent: f64) {
        self.weight.set(percent);
    }

    /// Publishes the ramp state, one of [`RAMP_STATES`] (others read as none).
    pub(super) fn set_ramp_state(&self, state: &str) {
        let i = RAMP_STATES.iter().position(|s| *s == state);
        let i = i.and_then(|i| u8::try_from(i).ok()).unwrap_or(NO_STATE);
        self.ramp_state.store(i, Ordering::Relaxed);
    }

    /// The index in [`RAMP_STATES`] of the current state, if any.
    pub(super) fn ramp_state(&self) -> usize {
        usize::from(self.ramp_state.load(Ordering::Relaxed))
    }

    fn shadow(&self) -> &ShadowCells {
        self.shadow.get_or_init(Box::default)
    }
}

/// Pre-resolved shadow-traffic handles of one route.
#[derive(Clone)]
pub struct ShadowMetrics {
    cells: Arc<RouteCells>,
}

impl ShadowMetrics {
    /// Counts one request shadow traffic considered.
    pub fn record(&self, result: ShadowResult) {
        self.cells.shadow().results[result.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Observes one pair's RBO.
    pub fn observe_rbo(&self, rbo: f64) {
        self.cells.shadow().rbo.observe(RBO_BUCKETS, rbo);
    }
}

/// Every route's cells, by route name.
#[derive(Default)]
pub(super) struct RouteFamilies {
    routes: Mutex<HashMap<String, Arc<RouteCells>>>,
}

impl RouteFamilies {
    /// The cells of `route`, created on first use (a route that a reload
    /// keeps keeps its counts), and its shadow handles.
    pub(super) fn route(&self, route: &str) -> (Arc<RouteCells>, ShadowMetrics) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        let cells = routes
            .entry(route.to_owned())
            .or_insert_with(|| Arc::new(RouteCells::new()))
            .clone();
        let shadow = ShadowMetrics {
            cells: cells.clone(),
        };
        (cells, shadow)
    }

    /// Drops a route's series.
    pub(super) fn forget(&self, route: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.remove(route);
    }

    /// Every route with its cells, sorted by name (the order prometheus
    /// sorts series in).
    pub(super) fn sorted(&self) -> Vec<(String, Arc<RouteCells>)> {
        let mut routes: Vec<(String, Arc<RouteCells>)> = {
            let map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        routes.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        routes
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec};
    use prometheus::{Opts, Registry, TextEncoder};

    use super::super::text::{self, Family};
    use super::*;
    use crate::domain::Arm;
    use crate::metrics::Metrics;

    fn render(registry: &Registry) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    fn opts(f: &Family) -> Opts {
        Opts::new(f.name, f.help)
    }

    fn hist(f: &Family, buckets: &[f64], labels: &[&str]) -> HistogramVec {
        let o = HistogramOpts::new(f.name, f.help).buckets(buckets.to_vec());
        HistogramVec::new(o, labels).unwrap()
    }

    /// prometheus' own `*Vec`s, registered in `reg` (the previous
    /// implementation of these families).
    struct Vecs {
        requests: IntCounterVec,
        duration: HistogramVec,
        failures: IntCounterVec,
        fallbacks: IntCounterVec,
        weight: GaugeVec,
        ramp: IntGaugeVec,
        shadow: IntCounterVec,
        rbo: HistogramVec,
    }

    impl Vecs {
        fn new(reg: &Registry) -> Vecs {
            let v = Vecs {
                requests: IntCounterVec::new(opts(&text::REQUESTS), &["route", "arm", "code"])
                    .unwrap(),
                duration: hist(&text::DURATION, DURATION_BUCKETS, &["route", "arm"]),
                failures: IntCounterVec::new(opts(&text::FAILURES), &["route", "arm", "kind"])
                    .unwrap(),
                fallbacks: IntCounterVec::new(opts(&text::FALLBACKS), &["route"]).unwrap(),
                weight: GaugeVec::new(opts(&text::WEIGHT), &["route"]).unwrap(),
                ramp: IntGaugeVec::new(opts(&text::RAMP_STATE), &["route", "state"]).unwrap(),
                shadow: IntCounterVec::new(opts(&text::SHADOW_REQUESTS), &["route", "result"])
                    .unwrap(),
                rbo: hist(&text::SHADOW_RBO, RBO_BUCKETS, &["route"]),
            };
            reg.register(Box::new(v.requests.clone())).unwrap();
            reg.register(Box::new(v.duration.clone())).unwrap();
            reg.register(Box::new(v.failures.clone())).unwrap();
            reg.register(Box::new(v.fallbacks.clone())).unwrap();
            reg.register(Box::new(v.weight.clone())).unwrap();
            reg.register(Box::new(v.ramp.clone())).unwrap();
            reg.register(Box::new(v.shadow.clone())).unwrap();
            reg.register(Box::new(v.rbo.clone())).unwrap();
            v
        }

        /// Every series of `name`, as `Metrics::route` creates them.
        fn route(&self, name: &str) {
            for arm in Arm::ALL {
                for c in CodeClass::ALL {
                    self.requests
                        .with_label_values(&[name, arm.as_str(), c.as_str()]);
                }
                for k in FailureKind::ALL {
                    self.failures
                        .with_label_values(&[name, arm.as_str(), k.as_str()]);
                }
                self.duration.with_label_values(&[name, arm.as_str()]);
            }
            self.fallbacks.with_label_values(&[name]);
            self.weight.with_label_values(&[name]);
            for s in RAMP_STATES {
                self.ramp
                    .with_label_values(&[name, s])
                    .set(i64::from(s == "idle"));
            }
            for r in ShadowResult::ALL {
                self.shadow.with_label_values(&[name, r.as_str()]);
            }
            self.rbo.with_label_values(&[name]);
        }
    }

    /// The families as prometheus' `*Vec`s rendered them (the previous
    /// implementation), fed the same events: the text must not change.
    #[test]
    fn renders_what_the_prometheus_vecs_rendered() {
        let old = Registry::new();
        let vecs = Vecs::new(&old);
        let new = Metrics::new().unwrap();
        let events: [(&str, Arm, u16, f64); 7] = [
            ("b-route", Arm::Stable, 200, 0.0004),
            ("b-route", Arm::Canary, 503, 0.02),
            ("a-route", Arm::Stable, 404, 2.5),
            ("a-route", Arm::Stable, 302, 31.0),
            ("a-route", Arm::Canary, 101, 0.001),
            ("b-route", Arm::Stable, 200, 0.3),
            ("we\"ird\\na\nme", Arm::Canary, 200, 0.1),
        ];
        for name in ["b-route", "a-route", "we\"ird\\na\nme", "a"] {
            new.route(name, false).set_ramp_state("idle");
            vecs.route(name);
        }
        for (name, arm, status, secs) in events {
            new.route(name, false).arm(arm).record_answer(status, secs);
            let code = CodeClass::of(status).as_str();
            vecs.requests
                .with_label_values(&[name, arm.as_str(), code])
                .inc();
            vecs.duration
                .with_label_values(&[name, arm.as_str()])
                .observe(secs);
        }
        let a = new.route("a-route", false);
        a.arm(Arm::Canary).record_failure(FailureKind::Reset);
        vecs.failures
            .with_label_values(&["a-route", "canary", "reset"])
            .inc();
        a.record_fallback();
        vecs.fallbacks.with_label_values(&["a-route"]).inc();
        a.set_weight(crate::domain::CanaryWeight::from_basis_points(550));
        vecs.weight.with_label_values(&["a-route"]).set(5.5);
        a.set_ramp_state("progressing");
        vecs.ramp.with_label_values(&["a-route", "idle"]).set(0);
        vecs.ramp
            .with_label_values(&["a-route", "progressing"])
            .set(1);
        for (result, rbo) in [
            (ShadowResult::Compared, Some(0.93)),
            (ShadowResult::Compared, Some(1.0)),
            (ShadowResult::Skipped, None),
            (ShadowResult::CanaryTimeout, None),
        ] {
            a.shadow.record(result);
            vecs.shadow
                .with_label_values(&["a-route", result.as_str()])
                .inc();
            if let Some(rbo) = rbo {
                a.shadow.observe_rbo(rbo);
                vecs.rbo.with_label_values(&["a-route"]).observe(rbo);
            }
        }

        let want = render(&old);
        let got = new.render().unwrap();
        let got: String = got
            .lines()
            // The registry's ordinary families (reloads), which the old
            // registry here does not have.
            .filter(|l| !l.contains("grayproxy_config_"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(got, want);
    }

    /// The per-route families sit between the registry's families in name
    /// order, as the registry would have put them.
    #[test]
    fn families_merge_with_the_registry_in_name_order() {
        let new = Metrics::new().unwrap();
        let fleet = new.fleet().unwrap();
        fleet.leader.set(1);
        let only_registry = new.render().unwrap();
        assert!(!only_registry.contains("grayproxy_requests_total"));
        new.route("r", false);
        let text = new.render().unwrap();
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(names, sorted);
        assert!(names.len() >= 8 + 5, "{names:?}");
        for line in only_registry.lines() {
            assert!(text.contains(line), "{line}");
        }
    }
}
