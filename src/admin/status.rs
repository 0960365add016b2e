//! Builds the `/status` document ([`StatusDocument`]) from the live runtime.

use std::time::SystemTime;

use crate::config::types::Route;
use crate::proxy::runtime::{RouteRuntime, Runtime};
use crate::status::{ArmTotals, ConfigStatus, ForcedTotals, PerArm, RouteStatus, StatusDocument};

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
    }
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
        fleet: None,
    }
}
