//! Every Prometheus metric grayproxy exports, defined in one place.
//!
//! The registry is owned (tests build isolated ones). Label values come from
//! enums; per-route handles are resolved once when a config snapshot is built,
//! so the request path increments pre-resolved counters and never hashes
//! label strings.

mod cells;
mod segments;
mod text;

use std::sync::Arc;

use prometheus::{IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::domain::{Arm, CanaryWeight};
use crate::grpc::GrpcCode;
use cells::{RouteCells, RouteFamilies};

pub use cells::{ArmMetrics, ShadowMetrics};
pub use segments::{SegmentMetrics, SEGMENT_REQUESTS};

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
pub const RAMP_STATES: [&str; 7] = [
    "idle",
    "baseline",
    "shadowing",
    "progressing",
    "paused",
    "promoted",
    "rolled_back",
];

/// What became of a request shadow traffic considered, the `result` label
/// of `grayproxy_shadow_requests_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowResult {
    /// Mirrored, answered by both, compared.
    Compared,
    /// Not mirrored: `max_in_flight` mirrored requests were already running.
    Skipped,
    /// Mirrored; the canary failed (5xx or no answer).
    CanaryError,
    /// Mirrored; the canary did not finish within the shadow `timeout`.
    CanaryTimeout,
}

impl ShadowResult {
    const ALL: [ShadowResult; 4] = [
        ShadowResult::Compared,
        ShadowResult::Skipped,
        ShadowResult::CanaryError,
        ShadowResult::CanaryTimeout,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            ShadowResult::Compared => "compared",
            ShadowResult::Skipped => "skipped",
            ShadowResult::CanaryError => "canary_error",
            ShadowResult::CanaryTimeout => "canary_timeout",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Buckets of `grayproxy_shadow_rbo` (RBO is in [0, 1]).
const RBO_BUCKETS: &[f64] = &[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0];

/// Outcome of a config reload, the `result` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReloadResult {
    /// The new config is live.
    Ok,
    /// The file was rejected; the old config stays live.
    Error,
}

/// Fleet-mode gauges (registered only in fleet mode).
#[derive(Clone, Debug)]
pub struct FleetMetrics {
    /// `grayproxy_fleet_leader`.
    pub leader: IntGauge,
    /// `grayproxy_fleet_etcd_up`.
    pub etcd_up: IntGauge,
    /// `grayproxy_fleet_config_drift`.
    pub config_drift: IntGauge,
    /// `grayproxy_fleet_replicas_alive`.
    pub replicas_alive: IntGauge,
}

/// All metric families, registered in one owned registry.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// The per-route families (requests, durations, upstream failures,
    /// fallbacks, weight, ramp state, shadow traffic), outside the registry:
    /// [`Metrics::render`] writes them from their cells.
    routes: Arc<RouteFamilies>,
    grpc_responses: IntCounterVec,
    segment_requests: IntCounterVec,
    reload_ok: IntCounter,
    reload_error: IntCounter,
    reload_last_ok: IntGauge,
}

impl Metrics {
    /// Creates every family and registers it in a fresh registry.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        let routes = Arc::new(RouteFamilies::default());
        let reloads = IntCounterVec::new(
            Opts::new(
                "grayproxy_config_reloads_total",
                "Config reload attempts by result.",
            ),
            &["result"],
        )?;
        registry.register(Box::new(reloads.clone()))?;
        let grpc_responses = IntCounterVec::new(
            Opts::new(
                "grayproxy_grpc_responses_total",
                "gRPC calls by the grpc-status the client got (the upstream's, or the proxy's own answer's), per route and arm.",
            ),
            &["route", "arm", "grpc_status"],
        )?;
        registry.register(Box::new(grpc_responses.clone()))?;
        let segment_requests = segments::family()?;
        registry.register(Box::new(segment_requests.clone()))?;
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
            routes,
            grpc_responses,
            segment_requests,
        })
    }

    /// Registers the fleet-mode gauges (only fleet mode calls this, so a
    /// single process exports exactly what it did before).
    pub fn fleet(&self) -> Result<FleetMetrics, prometheus::Error> {
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            let g = IntGauge::new(name, help)?;
            self.registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        Ok(FleetMetrics {
            leader: gauge(
                "grayproxy_fleet_leader",
                "1 on the replica that leads the fleet (judges and decides), 0 on the others.",
            )?,
            etcd_up: gauge(
                "grayproxy_fleet_etcd_up",
                "1 while this replica reaches etcd, 0 once no call succeeded for half a lease.",
            )?,
            config_drift: gauge(
                "grayproxy_fleet_config_drift",
                "1 while this replica's routes or ramp policies differ from the leader's.",
            )?,
            replicas_alive: gauge(
                "grayproxy_fleet_replicas_alive",
                "Replicas holding a live lease, as this replica last saw them.",
            )?,
        })
    }

    /// Resolves every per-route handle once, for the hot path. `grpc`: the
    /// route has an h2 upstream, so its 17 × 2 `grpc_status` series exist
    /// (HTTP routes do not get them).
    pub fn route(&self, route: &str, grpc: bool) -> RouteMetrics {
        let grpc_arm = |arm: Arm| {
            GrpcCode::ALL.map(|c| {
                self.grpc_responses
                    .with_label_values(&[route, arm.as_str(), c.as_str()])
            })
        };
        let (cells, shadow) = self.routes.route(route);
        RouteMetrics {
            cells,
            grpc: grpc.then(|| Box::new([grpc_arm(Arm::Stable), grpc_arm(Arm::Canary)])),
            shadow,
        }
    }

    /// Drops the series of a route that a reload removed.
    pub fn forget_route(&self, route: &str) {
        self.routes.forget(route);
        for arm in Arm::ALL {
            for c in GrpcCode::ALL {
                let _ = self
                    .grpc_responses
                    .remove_label_values(&[route, arm.as_str(), c.as_str()]);
            }
        }
        segments::forget(&self.segment_requests, route, &[]);
    }

    /// Resolves `route`'s per-segment counters for `segments` (index
    /// order, `other` last) and drops its series of any other segment (a
    /// reload changed `segment_values`).
    pub fn segments(&self, route: &str, segments: &[String]) -> SegmentMetrics {
        segments::forget(&self.segment_requests, route, segments);
        SegmentMetrics::new(&self.segment_requests, route, segments)
    }

    /// Drops every per-segment series of `route` (it no longer has segments).
    pub fn forget_segments(&self, route: &str) {
        segments::forget(&self.segment_requests, route, &[]);
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

    /// The registry, for tests and custom collectors (the per-route
    /// families are not in it: [`Metrics::render`] adds them).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// Renders every family in the Prometheus text format.
    pub fn render(&self) -> Result<String, prometheus::Error> {
        text::render(&self.routes, &self.registry.gather())
    }
}

/// Pre-resolved handles of one route.
#[derive(Clone)]
pub struct RouteMetrics {
    cells: Arc<RouteCells>,
    /// `grayproxy_grpc_responses_total` per arm × code, for gRPC routes only.
    grpc: Option<Box<[[IntCounter; 17]; 2]>>,
    /// Shadow traffic's handles.
    pub shadow: ShadowMetrics,
}

impl RouteMetrics {
    /// The handles of one arm.
    pub fn arm(&self, arm: Arm) -> &ArmMetrics {
        &self.cells.arms[arm.index()]
    }

    /// Counts a gRPC call's status (routes with an h2 upstream only).
    pub fn record_grpc(&self, arm: Arm, code: GrpcCode) {
        if let Some(arms) = &self.grpc {
            arms[arm.index()][usize::from(code.number())].inc();
        }
    }

    /// Counts a canary failure answered by stable.
    pub fn record_fallback(&self) {
        self.cells.record_fallback();
    }

    /// Publishes the live weight.
    pub fn set_weight(&self, weight: CanaryWeight) {
        self.cells.set_weight(weight.percent());
    }

    /// Publishes the ramp state; `state` is one of [`RAMP_STATES`].
    pub fn set_ramp_state(&self, state: &str) {
        self.cells.set_ramp_state(state);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn families_render_with_enum_labels() {
        let metrics = Metrics::new().unwrap();
        let route = metrics.route("recommend", false);
        route.arm(Arm::Canary).record_answer(503, 0.02);
        route.arm(Arm::Canary).record_failure(FailureKind::Reset);
        route.arm(Arm::Stable).record_answer(200, 0.01);
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
    fn fleet_gauges_only_in_fleet_mode() {
        let metrics = Metrics::new().unwrap();
        assert!(!metrics.render().unwrap().contains("grayproxy_fleet_"));
        let fleet = metrics.fleet().unwrap();
        fleet.leader.set(1);
        fleet.etcd_up.set(1);
        let text = metrics.render().unwrap();
        for line in [
            "grayproxy_fleet_leader 1",
            "grayproxy_fleet_etcd_up 1",
            "grayproxy_fleet_config_drift 0",
            "grayproxy_fleet_replicas_alive 0",
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
            .route("old", false)
            .arm(Arm::Stable)
            .record_answer(200, 0.001);
        metrics.forget_route("old");
        assert!(!metrics.render().unwrap().contains("route=\"old\""));
    }

    #[test]
    fn segment_series_are_bounded_and_forgotten() {
        let metrics = Metrics::new().unwrap();
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let seg = metrics.segments("reco", &names(&["new", "app", "other"]));
        seg.record(0, Arm::Canary, 503);
        seg.record(0, Arm::Canary, 200);
        seg.record(9, Arm::Stable, 404);
        let text = metrics.render().unwrap();
        for line in [
            r#"grayproxy_segment_requests_total{arm="canary",code="5xx",route="reco",segment="new"} 1"#,
            r#"grayproxy_segment_requests_total{arm="canary",code="2xx",route="reco",segment="new"} 1"#,
            r#"grayproxy_segment_requests_total{arm="stable",code="4xx",route="reco",segment="other"} 1"#,
            r#"grayproxy_segment_requests_total{arm="stable",code="2xx",route="reco",segment="app"} 0"#,
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        // A reload drops `app`; removing the route drops the rest.
        let _ = metrics.segments("reco", &names(&["new", "other"]));
        let text = metrics.render().unwrap();
        assert!(!text.contains(r#"segment="app""#), "{text}");
        assert!(text.contains(r#"segment="new""#), "{text}");
        metrics.forget_route("reco");
        assert!(!metrics.render().unwrap().contains(SEGMENT_REQUESTS));
    }
}
