//! The `/status` document (CONTRACT §5).

use std::time::SystemTime;

use serde_json::{json, Value};

use crate::domain::Arm;
use crate::runtime::{RouteRuntime, Runtime};

/// RFC 3339 UTC time of a `SystemTime`.
pub fn rfc3339(t: SystemTime) -> String {
    let ms = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    crate::ramp::audit::rfc3339(ms)
}

fn arm_json(rt: &RouteRuntime, arm: Arm) -> Value {
    let totals = rt.totals(arm);
    let error_rate = if totals.requests == 0 {
        0.0
    } else {
        totals.errors_clamped() as f64 / totals.requests as f64
    };
    json!({
        "requests": totals.requests,
        "errors": totals.errors_clamped(),
        "error_rate": error_rate,
        "p99_seconds": totals.latency.quantile(0.99).unwrap_or(0.0),
    })
}

/// The whole `/status` document.
pub fn status(runtime: &Runtime) -> Value {
    let snap = runtime.snapshot();
    let routes: Vec<Value> = snap
        .config
        .routes
        .iter()
        .zip(&snap.routes)
        .map(|(route, rt)| {
            rt.drain();
            let ramp = match &*rt.ramp_status.lock().unwrap_or_else(|p| p.into_inner()) {
                Some(status) => serde_json::to_value(status).unwrap_or(Value::Null),
                None => {
                    json!({"state": "idle", "step": null, "waiting_for": null, "decisions": []})
                }
            };
            json!({
                "name": route.name.as_str(),
                "canary_weight": rt.weight().percent(),
                "ramp": ramp,
                "arms": {
                    "stable": arm_json(rt, Arm::Stable),
                    "canary": arm_json(rt, Arm::Canary),
                },
                "forced": {
                    "stable": {"requests": rt.forced(Arm::Stable)},
                    "canary": {"requests": rt.forced(Arm::Canary)},
                },
            })
        })
        .collect();
    let last_error = runtime
        .last_error
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut doc = json!({
        "routes": routes,
        "config": {
            "path": snap.config.path.display().to_string(),
            "loaded_at": rfc3339(snap.loaded_at),
            "last_error": last_error,
        },
    });
    if let (Some(link), Value::Object(map)) = (runtime.fleet.get(), &mut doc) {
        map.insert("fleet".into(), fleet_json(link));
    }
    doc
}

/// The `fleet` section: this replica, the leader, etcd's health (and since
/// when), every replica ever seen, and the fleet's last decisions.
fn fleet_json(link: &crate::fleet::link::FleetLink) -> Value {
    let view = link.view();
    let decisions: Vec<Value> = link
        .snapshot()
        .history
        .iter()
        .filter_map(|d| serde_json::from_slice(d).ok())
        .collect();
    json!({
        "replica": view.replica,
        "leader": view.leader,
        "role": if view.term().is_some() { "leader" } else { "follower" },
        "etcd": view.etcd.as_str(),
        "etcd_since": crate::ramp::audit::rfc3339(view.etcd_since),
        "replicas": view.replicas,
        "decisions": decisions,
    })
}
