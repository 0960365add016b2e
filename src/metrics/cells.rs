//! The per-route metric families as plain atomic cells, rendered by one
//! custom collector at scrape time.
//!
//! prometheus' `*Vec` families keep, for every series, its own descriptor
//! (name, help, label names), its label pairs as owned strings and a hash
//! map entry: about 21 KiB for a route's 25 series, 210 MiB for 10,000
//! routes, and most of a 10,000-route start-up spent building them. Here a
//! route is about 400 bytes of counters; the label pairs exist only while a
//! scrape is rendered. The text is the same: same names, help, labels and
//! values (the registry sorts the series as before).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, LabelPair, MetricFamily, MetricType};

use super::{CodeClass, FailureKind, DURATION_BUCKETS, RAMP_STATES};
use crate::domain::Arm;

/// Bucket count of the duration histogram (its `+Inf` is the count).
const BUCKETS: usize = DURATION_BUCKETS.len();

/// No ramp state published yet: every state series reads 0.
const NO_STATE: u8 = u8::MAX;

/// An `f64` in an atomic, for sums and gauges.
#[derive(Debug, Default)]
struct AtomicF64(AtomicU64);

impl AtomicF64 {
    fn get(&self) -> f64 {
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

/// The counters of one route × arm: pre-resolved for the hot path.
#[derive(Debug, Default)]
pub struct ArmMetrics {
    codes: [AtomicU64; 4],
    failures: [AtomicU64; 4],
    /// Observations per bucket (not cumulative): the first bucket whose
    /// upper bound is at least the value, as prometheus' histogram does.
    buckets: [AtomicU64; BUCKETS],
    count: AtomicU64,
    sum: AtomicF64,
}

impl ArmMetrics {
    /// Counts an answer from this arm (upstream or proxy-made) and its duration.
    pub fn record_answer(&self, status: u16, seconds: f64) {
        self.codes[CodeClass::of(status).index()].fetch_add(1, Ordering::Relaxed);
        self.observe(seconds);
    }

    /// Counts an exchange that produced no response.
    pub fn record_failure(&self, kind: FailureKind) {
        self.failures[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Observes one duration, in seconds.
    fn observe(&self, seconds: f64) {
        if let Some(i) = DURATION_BUCKETS.iter().position(|b| seconds <= *b) {
            if let Some(b) = self.buckets.get(i) {
                b.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum.add(seconds);
    }
}

/// The counters and gauges of one route.
#[derive(Debug)]
pub(super) struct RouteCells {
    pub(super) arms: [ArmMetrics; 2],
    fallbacks: AtomicU64,
    weight: AtomicF64,
    ramp_state: AtomicU8,
}

impl RouteCells {
    fn new() -> RouteCells {
        RouteCells {
            arms: [ArmMetrics::default(), ArmMetrics::default()],
            fallbacks: AtomicU64::new(0),
            weight: AtomicF64::default(),
            ramp_state: AtomicU8::new(NO_STATE),
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
}

/// The six per-route families, one collector.
pub(super) struct RouteFamilies {
    requests: Desc,
    duration: Desc,
    failures: Desc,
    fallbacks: Desc,
    weight: Desc,
    ramp_state: Desc,
    routes: Mutex<HashMap<String, Arc<RouteCells>>>,
}

impl RouteFamilies {
    /// The families with these names and help texts, no routes yet.
    pub(super) fn new() -> Result<RouteFamilies, prometheus::Error> {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            let labels = labels.iter().map(|l| (*l).to_owned()).collect();
            Desc::new(name.to_owned(), help.to_owned(), labels, HashMap::new())
        };
        Ok(RouteFamilies {
            requests: desc(
                "grayproxy_requests_total",
                "Answers per route and arm by status class (a fallback counts the canary's failure and stable's answer).",
                &["route", "arm", "code"],
            )?,
            duration: desc(
                "grayproxy_request_duration_seconds",
                "Time from request received to response headers sent, per route and arm.",
                &["route", "arm"],
            )?,
            failures: desc(
                "grayproxy_upstream_failures_total",
                "Upstream exchanges that produced no response at all, by kind.",
                &["route", "arm", "kind"],
            )?,
            fallbacks: desc(
                "grayproxy_fallbacks_total",
                "Canary failures answered by stable instead.",
                &["route"],
            )?,
            weight: desc(
                "grayproxy_canary_weight_percent",
                "Current canary weight of weight-assigned traffic, in percent.",
                &["route"],
            )?,
            ramp_state: desc(
                "grayproxy_ramp_state",
                "1 for the route's current ramp state, 0 for the others.",
                &["route", "state"],
            )?,
            routes: Mutex::new(HashMap::new()),
        })
    }

    /// The cells of `route`, created on first use (a route that a reload
    /// keeps keeps its counts).
    pub(super) fn route(&self, route: &str) -> Arc<RouteCells> {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes
            .entry(route.to_owned())
            .or_insert_with(|| Arc::new(RouteCells::new()))
            .clone()
    }

    /// Drops a route's series.
    pub(super) fn forget(&self, route: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.remove(route);
    }
}

/// A `name="value"` pair.
fn pair(name: &str, value: &str) -> LabelPair {
    let mut p = LabelPair::default();
    p.set_name(name.to_owned());
    p.set_value(value.to_owned());
    p
}

/// A series with these labels (given sorted by name, as prometheus sorts them).
fn series(labels: Vec<LabelPair>) -> proto::Metric {
    proto::Metric::from_label(labels)
}

fn counter(labels: Vec<LabelPair>, v: u64) -> proto::Metric {
    let mut m = series(labels);
    let mut c = proto::Counter::default();
    c.set_value(v as f64);
    m.set_counter(c);
    m
}

fn gauge(labels: Vec<LabelPair>, v: f64) -> proto::Metric {
    let mut m = series(labels);
    let mut g = proto::Gauge::default();
    g.set_value(v);
    m.set_gauge(g);
    m
}

fn histogram(labels: Vec<LabelPair>, a: &ArmMetrics) -> proto::Metric {
    let mut m = series(labels);
    let mut h = proto::Histogram::default();
    let mut cumulative = 0;
    let buckets = DURATION_BUCKETS
        .iter()
        .zip(&a.buckets)
        .map(|(bound, n)| {
            cumulative += n.load(Ordering::Relaxed);
            let mut b = proto::Bucket::default();
            b.set_upper_bound(*bound);
            b.set_cumulative_count(cumulative);
            b
        })
        .collect();
    h.set_bucket(buckets);
    // Never below the buckets' total (an observation racing the scrape).
    h.set_sample_count(a.count.load(Ordering::Relaxed).max(cumulative));
    h.set_sample_sum(a.sum.get());
    m.set_histogram(h);
    m
}

fn family(desc: &Desc, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut f = MetricFamily::default();
    f.set_name(desc.fq_name.clone());
    f.set_help(desc.help.clone());
    f.set_field_type(kind);
    f.set_metric(metrics);
    f
}

impl Collector for RouteFamilies {
    fn desc(&self) -> Vec<&Desc> {
        vec![
            &self.requests,
            &self.duration,
            &self.failures,
            &self.fallbacks,
            &self.weight,
            &self.ramp_state,
        ]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let routes: Vec<(String, Arc<RouteCells>)> = {
            let map = self.routes.lock().unwrap_or_else(|p| p.into_inner());
            map.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
        };
        let n = routes.len();
        let (mut requests, mut duration, mut failures) = (
            Vec::with_capacity(n * 8),
            Vec::with_capacity(n * 2),
            Vec::with_capacity(n * 8),
        );
        let (mut fallbacks, mut weight, mut ramp_state) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n * RAMP_STATES.len()),
        );
        for (name, cells) in &routes {
            for arm in Arm::ALL {
                let a = &cells.arms[arm.index()];
                for c in CodeClass::ALL {
                    let labels = vec![
                        pair("arm", arm.as_str()),
                        pair("code", c.as_str()),
                        pair("route", name),
                    ];
                    requests.push(counter(labels, a.codes[c.index()].load(Ordering::Relaxed)));
                }
                for k in FailureKind::ALL {
                    let labels = vec![
                        pair("arm", arm.as_str()),
                        pair("kind", k.as_str()),
                        pair("route", name),
                    ];
                    failures.push(counter(
                        labels,
                        a.failures[k.index()].load(Ordering::Relaxed),
                    ));
                }
                let labels = vec![pair("arm", arm.as_str()), pair("route", name)];
                duration.push(histogram(labels, a));
            }
            fallbacks.push(counter(
                vec![pair("route", name)],
                cells.fallbacks.load(Ordering::Relaxed),
            ));
            weight.push(gauge(vec![pair("route", name)], cells.weight.get()));
            let current = usize::from(cells.ramp_state.load(Ordering::Relaxed));
            for (i, state) in RAMP_STATES.iter().enumerate() {
                let labels = vec![pair("route", name), pair("state", state)];
                ramp_state.push(gauge(labels, if i == current { 1.0 } else { 0.0 }));
            }
        }
        vec![
            family(&self.requests, MetricType::COUNTER, requests),
            family(&self.duration, MetricType::HISTOGRAM, duration),
            family(&self.failures, MetricType::COUNTER, failures),
            family(&self.fallbacks, MetricType::COUNTER, fallbacks),
            family(&self.weight, MetricType::GAUGE, weight),
            family(&self.ramp_state, MetricType::GAUGE, ramp_state),
        ]
    }
}

/// [`RouteFamilies`] shared between [`super::Metrics`] and its registry.
pub(super) struct Shared(pub(super) Arc<RouteFamilies>);

impl Collector for Shared {
    fn desc(&self) -> Vec<&Desc> {
        self.0.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use prometheus::{Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec};
    use prometheus::{Opts, Registry, TextEncoder};

    use super::*;
    use crate::metrics::Metrics;

    fn render(registry: &Registry) -> String {
        let mut buf = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut buf)
            .unwrap();
        String::from_utf8(buf).unwrap()
    }

    /// The families as prometheus' `*Vec`s rendered them (the previous
    /// implementation), fed the same events: the text must not change.
    #[test]
    fn renders_what_the_prometheus_vecs_rendered() {
        let f = RouteFamilies::new().unwrap();
        let d = |x: &Desc| (x.fq_name.clone(), x.help.clone());
        let old = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(d(&f.requests).0, d(&f.requests).1),
            &["route", "arm", "code"],
        )
        .unwrap();
        let duration = HistogramVec::new(
            HistogramOpts::new(d(&f.duration).0, d(&f.duration).1)
                .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "arm"],
        )
        .unwrap();
        let failures = IntCounterVec::new(
            Opts::new(d(&f.failures).0, d(&f.failures).1),
            &["route", "arm", "kind"],
        )
        .unwrap();
        let fallbacks =
            IntCounterVec::new(Opts::new(d(&f.fallbacks).0, d(&f.fallbacks).1), &["route"])
                .unwrap();
        let weight = GaugeVec::new(Opts::new(d(&f.weight).0, d(&f.weight).1), &["route"]).unwrap();
        let ramp = IntGaugeVec::new(
            Opts::new(d(&f.ramp_state).0, d(&f.ramp_state).1),
            &["route", "state"],
        )
        .unwrap();
        old.register(Box::new(requests.clone())).unwrap();
        old.register(Box::new(duration.clone())).unwrap();
        old.register(Box::new(failures.clone())).unwrap();
        old.register(Box::new(fallbacks.clone())).unwrap();
        old.register(Box::new(weight.clone())).unwrap();
        old.register(Box::new(ramp.clone())).unwrap();

        let new = Metrics::new().unwrap();
        let events: [(&str, Arm, u16, f64); 6] = [
            ("b-route", Arm::Stable, 200, 0.0004),
            ("b-route", Arm::Canary, 503, 0.02),
            ("a-route", Arm::Stable, 404, 2.5),
            ("a-route", Arm::Stable, 302, 31.0),
            ("a-route", Arm::Canary, 101, 0.001),
            ("b-route", Arm::Stable, 200, 0.3),
        ];
        for name in ["b-route", "a-route"] {
            let r = new.route(name, false);
            r.set_ramp_state("idle");
            for arm in Arm::ALL {
                for c in CodeClass::ALL {
                    requests.with_label_values(&[name, arm.as_str(), c.as_str()]);
                }
                for k in FailureKind::ALL {
                    failures.with_label_values(&[name, arm.as_str(), k.as_str()]);
                }
                duration.with_label_values(&[name, arm.as_str()]);
            }
            fallbacks.with_label_values(&[name]);
            weight.with_label_values(&[name]);
            for s in RAMP_STATES {
                ramp.with_label_values(&[name, s])
                    .set(i64::from(s == "idle"));
            }
        }
        for (name, arm, status, secs) in events {
            new.route(name, false).arm(arm).record_answer(status, secs);
            let code = CodeClass::of(status).as_str();
            requests
                .with_label_values(&[name, arm.as_str(), code])
                .inc();
            duration
                .with_label_values(&[name, arm.as_str()])
                .observe(secs);
        }
        let a = new.route("a-route", false);
        a.arm(Arm::Canary).record_failure(FailureKind::Reset);
        failures
            .with_label_values(&["a-route", "canary", "reset"])
            .inc();
        a.record_fallback();
        fallbacks.with_label_values(&["a-route"]).inc();
        a.set_weight(crate::domain::CanaryWeight::from_basis_points(550));
        weight.with_label_values(&["a-route"]).set(5.5);
        a.set_ramp_state("progressing");
        ramp.with_label_values(&["a-route", "idle"]).set(0);
        ramp.with_label_values(&["a-route", "progressing"]).set(1);

        let want = render(&old);
        let got = new.render().unwrap();
        let got: String = got
            .lines()
            // Families the cells do not render: ordinary prometheus vecs.
            .filter(|l| !l.contains("grayproxy_config_") && !l.contains("grayproxy_shadow_"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(got, want);
    }
}
