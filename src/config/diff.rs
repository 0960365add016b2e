//! What changed between two configs, so that reload drives its side effects
//! (restart-needed errors, new ramps) from data rather than scattered
//! comparisons.

use super::types::{Config, Endpoint, Route};
use crate::domain::RouteName;

/// The differences between a running config and a newly loaded one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Keys that changed but only take effect after a restart
    /// (`server.listen`, `server.workers`, `admin.listen`, `state.dir`).
    pub restart_required: Vec<String>,
    /// Routes whose canary upstream (its name or its endpoints) changed, plus
    /// new routes: each starts a new ramp at the first step (CONTRACT §4).
    pub canary_changed: Vec<RouteName>,
    /// Routes in the old config but not the new one.
    pub removed_routes: Vec<RouteName>,
    /// Routes in the new config but not the old one.
    pub added_routes: Vec<RouteName>,
    /// Routes in both whose ramp policy changed (added, removed or edited).
    pub ramp_changed: Vec<RouteName>,
}

impl ConfigDiff {
    /// Compares two configs; routes are matched by name, lists keep the new
    /// file's order (old file's order for removed routes).
    pub fn between(old: &Config, new: &Config) -> ConfigDiff {
        let mut diff = ConfigDiff::default();
        let restart_keys = [
            ("server.listen", old.server.listen != new.server.listen),
            ("server.workers", old.server.workers != new.server.workers),
            ("admin.listen", old.admin.listen != new.admin.listen),
            ("state.dir", old.state.dir != new.state.dir),
        ];
        diff.restart_required = restart_keys
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| (*key).to_owned())
            .collect();
        for route in &new.routes {
            match old.route(route.name.as_str()) {
                None => {
                    diff.added_routes.push(route.name.clone());
                    diff.canary_changed.push(route.name.clone());
                }
                Some(before) => {
                    if canary_of(old, before) != canary_of(new, route) {
                        diff.canary_changed.push(route.name.clone());
                    }
                    if before.ramp != route.ramp {
                        diff.ramp_changed.push(route.name.clone());
                    }
                }
            }
        }
        diff.removed_routes = old
            .routes
            .iter()
            .filter(|r| new.route(r.name.as_str()).is_none())
            .map(|r| r.name.clone())
            .collect();
        diff
    }

    /// True when the new config can be swapped in without a restart.
    pub fn can_apply(&self) -> bool {
        self.restart_required.is_empty()
    }
}

/// What identifies a route's canary: its upstream's name and endpoints.
fn canary_of<'a>(config: &'a Config, route: &Route) -> (&'a str, &'a [Endpoint]) {
    let u = config.upstream(route.canary);
    (u.name.as_str(), u.endpoints.as_slice())
}
