//! Builds the `/status` document ([`StatusDocument`]) from the live runtime.

use std::time::SystemTime;

use crate::config::types::Route;
use crate::proxy::runtime::{RouteRuntime, Runtime};
use crate::ramp::judge::SegmentSummary;
use crate::status::{
    ArmTotals, ConfigStatus, EtcdHealth, FleetRole, FleetStatus, ForcedTotals, PerArm,
    ReplicaStatus, RouteStatus, SegmentStatus, StatusDocument,
};

/// RFC 3339 UTC time of a `SystemTime`.
pub fn rfc3339(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    crate::ramp::audit::rfc3339(ms)
}

fn route_status(route: &Route, rt: &RouteRuntime) -> RouteStatus {
    let name = route.name.as_str();
    // Fold what the recorder holds into the totals first, so the document
    // counts every request answered before it was asked for.
    rt.drain();
    let ramp = rt
        .ramp_status
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let ramp_segments = ramp
        .as_ref()
        .map(|r| r.segments.clone())
        .unwrap_or_default();
    RouteStatus {
        name: name.to_string(),
        canary_weight: rt.weight().percent(),
        ramp: ramp.into(),
        arms: PerArm::from_fn(|arm| {
            let t = rt.totals(arm);
            ArmTotals::new(t.requests, t.errors, t.latency.quantile(0.99))
        }),
        forced: PerArm::from_fn(|arm| ForcedTotals {
            requests: rt.forced(arm),
        }),
        // Shown once the route mirrors, and kept after a shadow phase ends.
        shadow: (route.shadow.is_some() || rt.shadow.stats().mirrored() > 0)
            .then(|| rt.shadow.report()),
        segments: segments(rt, ramp_segments),
    }
}

/// Each segment's totals since its counters began, with the judge's
/// evidence from the ramp's status.
fn segments(rt: &RouteRuntime, evidence: Vec<SegmentSummary>) -> Vec<SegmentStatus> {
    let Some(live) = rt.segments() else {
        return Vec::new();
    };
    live.totals()
        .into_iter()
        .map(|t| {
            let ev = evidence.iter().find(|e| e.segment == t.segment);
            SegmentStatus {
                arms: PerArm::from_fn(|arm| {
                    let a = t.arm(arm);
                    ArmTotals::new(a.requests, a.errors, a.latency.quantile(0.99))
                }),
                e: ev.map(|e| e.e),
                e_errors: ev.map(|e| e.e_errors),
                e_slow: ev.map(|e| e.e_slow),
                segment: t.segment,
            }
        })
        .collect()
}

/// The whole `/status` document.
pub fn status(runtime: &Runtime) -> StatusDocument {
    let snap = runtime.snapshot();
    let routes = snap
        .config
        .routes
        .iter()
        .zip(&snap.routes)
        .map(|(route, rt)| route_status(route, rt))
        .collect();
    let last_error = runtime
        .last_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    StatusDocument {
        routes,
        config: ConfigStatus {
            path: snap.config.path.display().to_string(),
            loaded_at: rfc3339(snap.loaded_at),
            last_error,
        },
        fleet: runtime.fleet.get().map(fleet_status),
    }
}

/// The `fleet` section from the fleet link's view and history.
fn fleet_status(link: &crate::fleet::link::FleetLink) -> FleetStatus {
    let view = link.view();
    FleetStatus {
        replica: view.replica.clone(),
        leader: view.leader.clone(),
        etcd: match view.etcd {
            crate::fleet::health::EtcdHealth::Ok => EtcdHealth::Ok,
            crate::fleet::health::EtcdHealth::Unreachable => EtcdHealth::Unreachable,
        },
        replicas: view
            .replicas
            .iter()
            .map(|m| ReplicaStatus {
                replica: m.replica.clone(),
                alive: m.alive,
                config_drift: m.config_drift,
            })
            .collect(),
        role: Some(if view.term().is_some() {
            FleetRole::Leader
        } else {
            FleetRole::Follower
        }),
        etcd_since: Some(crate::ramp::audit::rfc3339(view.etcd_since)),
        decisions: link
            .snapshot()
            .history
            .iter()
            .filter_map(|d| serde_json::from_slice(d).ok())
            .collect(),
    }
}
