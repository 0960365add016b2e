//! Every Prometheus metric grayproxy exports, defined in one place.
//!
//! The registry is owned (tests build isolated ones). Label values come from
//! enums; per-route handles are resolved once when a config snapshot is built,
//! so the request path increments pre-resolved counters and never hashes
//! label strings.

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::domain::{Arm, CanaryWeight};
use crate::grpc::GrpcCode;

/// Prometheus buckets for request durations (seconds). The ramp judge keeps
/// its own, much finer histogram; these only need to serve dashboards.
const DURATION_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// Status class of an answer, the `code` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CodeClass {
    /// 1xx and 2xx.
    Success,
    /// 3xx.
    Redirect,
    /// 4xx.
    ClientError,
    /// 5xx, including proxy-made 502/504 for the arm that failed.
    ServerError,
}

impl CodeClass {
    const ALL: [CodeClass; 4] = [
        CodeClass::Success,
        CodeClass::Redirect,
        CodeClass::ClientError,
        CodeClass::ServerError,
    ];

    /// Class of an HTTP status code.
    pub fn of(status: u16) -> CodeClass {
        match status {
            0..=299 => CodeClass::Success,
            300..=399 => CodeClass::Redirect,
            400..=499 => CodeClass::ClientError,
            _ => CodeClass::ServerError,
        }
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            CodeClass::Success => "2xx",
            CodeClass::Redirect => "3xx",
            CodeClass::ClientError => "4xx",
            CodeClass::ServerError => "5xx",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Why an upstream gave no response at all, the `kind` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// Could not connect (refused, unreachable, connect timeout).
    Connect,
    /// No response headers within `request_timeout`.
    Timeout,
    /// The connection broke mid-exchange.
    Reset,
    /// Anything else (protocol errors).
    Other,
}

impl FailureKind {
    const ALL: [FailureKind; 4] = [
        FailureKind::Connect,
        FailureKind::Timeout,
        FailureKind::Reset,
        FailureKind::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Connect => "connect",
            FailureKind::Timeout => "timeout",
            FailureKind::Reset => "reset",
            FailureKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The ramp states, the `state` label of `grayproxy_ramp_state`.
pub const RAMP_STATES: [&str; 6] = [
    "idle",
    "baseline",
    "progressing",
    "paused",
    "promoted",
    "rolled_back",
];

/// Outcome of a config reload, the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new config is live.
    Ok,
    /// The file was rejected; the old config stays live.
    Error,
}

/// All metric families, registered in one owned registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    duration: HistogramVec,
    upstream_failures: IntCounterVec,
    grpc_responses: IntCounterVec,
    fallbacks: IntCounterVec,
    canary_weight: GaugeVec,
    ramp_state: IntGaugeVec,
    reload_ok: IntCounter,
    reload_error: IntCounter,
    reload_last_ok: IntGauge,
}

impl Metrics {
    /// Creates every family and registers it in a fresh registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let requests = IntCounterVec::new(
            Opts::new(
                "grayproxy_requests_total",
                "Answers per route and arm by status class (a fallback counts the canary's failure and stable's answer).",
            ),
            &["route", "arm", "code"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "grayproxy_request_duration_seconds",
                "Time from request received to response headers sent, per route and arm.",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
            &["route", "arm"],
        )?;
        let upstream_failures = IntCounterVec::new(
            Opts::new(
                "grayproxy_upstream_failures_total",
                "Upstream exchanges that produced no response at all, by kind.",
            ),
            &["route", "arm", "kind"],
        )?;
        let grpc_responses = IntCounterVec::new(
            Opts::new(
                "grayproxy_grpc_responses_total",
                "gRPC calls by the grpc-status the client got (the upstream's, or the proxy's own answer's), per route and arm.",
            ),
            &["route", "arm", "grpc_status"],
        )?;
        let fallbacks = IntCounterVec::new(
            Opts::new(
                "grayproxy_fallbacks_total",
                "Canary failures answered by stable instead.",
            ),
            &["route"],
        )?;
        let canary_weight = GaugeVec::new(
            Opts::new(
                "grayproxy_canary_weight_percent",
                "Current canary weight of weight-assigned traffic, in percent.",
            ),
            &["route"],
        )?;
        let ramp_state = IntGaugeVec::new(
            Opts::new(
                "grayproxy_ramp_state",
                "1 for the route's current ramp state, 0 for the others.",
            ),
            &["route", "state"],
        )?;
        let reloads = IntCounterVec::new(
            Opts::new(
                "grayproxy_config_reloads_total",
                "Config reload attempts by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(upstream_failures.clone()))?;
        registry.register(Box::new(grpc_responses.clone()))?;
        registry.register(Box::new(fallbacks.clone()))?;
        registry.register(Box::new(canary_weight.clone()))?;
        registry.register(Box::new(ramp_state.clone()))?;
        registry.register(Box::new(reloads.clone()))?;
        // Like Prometheus' own prometheus_config_last_reload_successful: a
        // counter alone cannot tell "the file is still broken" from "it
        // broke once, an hour ago", so the reload alert reads this gauge.
        let reload_last_ok = IntGauge::new(
            "grayproxy_config_last_reload_successful",
            "1 when the last config reload (or the start) succeeded, 0 while the file on disk is rejected.",
        )?;
        reload_last_ok.set(1);
        registry.register(Box::new(reload_last_ok.clone()))?;
        Ok(Metrics {
            reload_last_ok,
            reload_ok: reloads.with_label_values(&["ok"]),
            reload_error: reloads.with_label_values(&["error"]),
            registry,
            requests,
            duration,
            upstream_failures,
            grpc_responses,
            fallbacks,
            canary_weight,
            ramp_state,
        })
    }

    /// Resolves every per-route handle once, for the hot path. `grpc`: the
    /// route has an h2 upstream, so its 17 × 2 `grpc_status` series exist
    /// (HTTP routes do not get them).
    pub fn route(&self, route: &str, grpc: bool) -> RouteMetrics {
        let arm = |arm: Arm| ArmMetrics {
            codes: CodeClass::ALL.map(|c| {
                self.requests
                    .with_label_values(&[route, arm.as_str(), c.as_str()])
            }),
            duration: self.duration.with_label_values(&[route, arm.as_str()]),
            failures: FailureKind::ALL.map(|k| {
                self.upstream_failures
                    .with_label_values(&[route, arm.as_str(), k.as_str()])
            }),
            grpc: grpc.then(|| {
                Box::new(GrpcCode::ALL.map(|c| {
                    self.grpc_responses
                        .with_label_values(&[route, arm.as_str(), c.as_str()])
                }))
            }),
        };
        RouteMetrics {
            arms: [arm(Arm::Stable), arm(Arm::Canary)],
            fallbacks: self.fallbacks.with_label_values(&[route]),
            canary_weight: self.canary_weight.with_label_values(&[route]),
            ramp_state: RAMP_STATES.map(|s| self.ramp_state.with_label_values(&[route, s])),
        }
    }

    /// Drops the series of a route that a reload removed.
    pub fn forget_route(&self, route: &str) {
        for arm in Arm::ALL {
            for c in CodeClass::ALL {
                let _ = self
                    .requests
                    .remove_label_values(&[route, arm.as_str(), c.as_str()]);
            }
            for k in FailureKind::ALL {
                let _ =
                    self.upstream_failures
                        .remove_label_values(&[route, arm.as_str(), k.as_str()]);
            }
            let _ = self.duration.remove_label_values(&[route, arm.as_str()]);
            for c in GrpcCode::ALL {
                let _ = self
                    .grpc_responses
                    .remove_label_values(&[route, arm.as_str(), c.as_str()]);
            }
        }
        let _ = self.fallbacks.remove_label_values(&[route]);
        let _ = self.canary_weight.remove_label_values(&[route]);
        for s in RAMP_STATES {
            let _ = self.ramp_state.remove_label_values(&[route, s]);
        }
    }

    /// Counts one reload attempt.
    pub fn record_reload(&self, result: ReloadResult) {
        match result {
            ReloadResult::Ok => self.reload_ok.inc(),
            ReloadResult::Error => self.reload_error.inc(),
        }
        self.reload_last_ok
            .set(i64::from(result == ReloadResult::Ok));
    }

    /// The registry, for tests and custom collectors.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every family in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        let mut buf = Vec::with_capacity(16 * 1024);
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|e| prometheus::Error::Msg(e.to_string()))
    }
}

/// Pre-resolved handles of one route.
#[derive(Clone)]
pub struct RouteMetrics {
    arms: [ArmMetrics; 2],
    fallbacks: IntCounter,
    canary_weight: Gauge,
    ramp_state: [IntGauge; 6],
}

impl RouteMetrics {
    /// The handles of one arm.
    pub fn arm(&self, arm: Arm) -> &ArmMetrics {
        &self.arms[arm.index()]
    }

    /// Counts a canary failure answered by stable.
    pub fn record_fallback(&self) {
        self.fallbacks.inc();
    }

    /// Publishes the live weight.
    pub fn set_weight(&self, weight: CanaryWeight) {
        self.canary_weight.set(weight.percent());
    }

    /// Publishes the ramp state; `state` is one of [`RAMP_STATES`].
    pub fn set_ramp_state(&self, state: &str) {
        for (name, gauge) in RAMP_STATES.iter().zip(&self.ramp_state) {
            gauge.set(i64::from(*name == state));
        }
    }
}

/// Pre-resolved handles of one route × arm.
#[derive(Clone)]
pub struct ArmMetrics {
    codes: [IntCounter; 4],
    duration: Histogram,
    failures: [IntCounter; 4],
    grpc: Option<Box<[IntCounter; 17]>>,
}

impl ArmMetrics {
    /// Counts an answer from this arm (upstream or proxy-made) and its duration.
    pub fn record_answer(&self, status: u16, seconds: f64) {
        self.codes[CodeClass::of(status).index()].inc();
        self.duration.observe(seconds);
    }

    /// Counts a gRPC call's status (routes with an h2 upstream only).
    pub fn record_grpc(&self, code: GrpcCode) {
        if let Some(counters) = &self.grpc {
            counters[usize::from(code.number())].inc();
        }
    }

    /// Counts an exchange that produced no response.
    pub fn record_failure(&self, kind: FailureKind) {
        self.failures[kind.index()].inc();
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn families_render_with_enum_labels() {
        let metrics = Metrics::new().unwrap();
        let route = metrics.route("recommend", true);
        route.arm(Arm::Canary).record_answer(503, 0.02);
        route.arm(Arm::Canary).record_failure(FailureKind::Reset);
        route.arm(Arm::Stable).record_answer(200, 0.01);
        route.arm(Arm::Canary).record_grpc(GrpcCode::Unavailable);
        route.record_fallback();
        route.set_weight(CanaryWeight::from_basis_points(550));
        route.set_ramp_state("progressing");
        metrics.record_reload(ReloadResult::Error);
        let text = metrics.render().unwrap();
        for line in [
            r#"grayproxy_requests_total{arm="canary",code="5xx",route="recommend"} 1"#,
            r#"grayproxy_requests_total{arm="stable",code="2xx",route="recommend"} 1"#,
            r#"grayproxy_upstream_failures_total{arm="canary",kind="reset",route="recommend"} 1"#,
            r#"grayproxy_fallbacks_total{route="recommend"} 1"#,
            r#"grayproxy_grpc_responses_total{arm="canary",grpc_status="UNAVAILABLE",route="recommend"} 1"#,
            r#"grayproxy_grpc_responses_total{arm="stable",grpc_status="OK",route="recommend"} 0"#,
            r#"grayproxy_canary_weight_percent{route="recommend"} 5.5"#,
            r#"grayproxy_ramp_state{route="recommend",state="progressing"} 1"#,
            r#"grayproxy_ramp_state{route="recommend",state="idle"} 0"#,
            r#"grayproxy_config_reloads_total{result="error"} 1"#,
            "grayproxy_config_last_reload_successful 0",
            r#"grayproxy_request_duration_seconds_count{arm="stable",route="recommend"} 1"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
    }

    #[test]
    fn code_classes() {
        assert_eq!(CodeClass::of(200), CodeClass::Success);
        assert_eq!(CodeClass::of(101), CodeClass::Success);
        assert_eq!(CodeClass::of(304), CodeClass::Redirect);
        assert_eq!(CodeClass::of(404), CodeClass::ClientError);
        assert_eq!(CodeClass::of(502), CodeClass::ServerError);
    }

    #[test]
    fn forgetting_a_route_removes_its_series() {
        let metrics = Metrics::new().unwrap();
        metrics
            .route("old", true)
            .arm(Arm::Stable)
            .record_answer(200, 0.001);
        metrics.forget_route("old");
        assert!(!metrics.render().unwrap().contains("route=\"old\""));
    }
}
