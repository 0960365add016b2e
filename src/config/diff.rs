//! What changed between two configs, so that reload drives its side effects
//! (restart-needed errors, new ramps) from data rather than scattered
//! comparisons.

use std::collections::{HashMap, HashSet};

use super::types::{Config, Endpoint, Route};
use crate::domain::RouteName;

/// The differences between a running config and a newly loaded one.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Keys that changed but only take effect after a restart
    /// (`server.listen`, `server.workers`, `admin.listen`, `state.dir`, `[fleet]`).
    pub restart_required: Vec<String>,
    /// Routes whose canary upstream (its name or its endpoints) changed, plus
    /// new routes: each starts a new ramp at the first step (a new canary
    /// version has earned nothing yet; see docs/ramp.md).
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
            // The fleet's etcd session is set up at start.
            ("fleet", old.fleet != new.fleet),
        ];
        diff.restart_required = restart_keys
            .iter()
            .filter(|(_, changed)| *changed)
            .map(|(key, _)| (*key).to_owned())
            .collect();
        // By name, once: a lookup per route in lists of 10,000 routes.
        let old_routes: HashMap<&str, &Route> =
            old.routes.iter().map(|r| (r.name.as_str(), r)).collect();
        let new_names: HashSet<&str> = new.routes.iter().map(|r| r.name.as_str()).collect();
        for route in &new.routes {
            match old_routes.get(route.name.as_str()).copied() {
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
            .filter(|r| !new_names.contains(r.name.as_str()))
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

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;
    use std::path::Path;

    const BASE: &str = r#"
[server]
listen = "127.0.0.1:8080"
workers = 2
[admin]
listen = "127.0.0.1:9901"
[state]
dir = "state"
[upstreams.v1]
endpoints = ["127.0.0.1:1"]
[upstreams.v2]
endpoints = ["127.0.0.1:2"]
[upstreams.v3]
endpoints = ["127.0.0.1:3"]
[[routes]]
name = "a"
stable = "v1"
canary = "v2"
[routes.ramp]
steps = [1, 100]
[[routes]]
name = "b"
stable = "v1"
canary = "v3"
"#;

    fn config(text: &str) -> Config {
        crate::config::parse(text, Path::new("/etc/gp/c.toml"))
            .map(|l| l.config)
            .expect("test config must be valid")
    }

    fn diff(new: &str) -> ConfigDiff {
        ConfigDiff::between(&config(BASE), &config(new))
    }

    fn names(v: &[RouteName]) -> Vec<&str> {
        v.iter().map(RouteName::as_str).collect()
    }

    #[test]
    fn identical_configs_have_no_diff() {
        assert_eq!(diff(BASE), ConfigDiff::default());
        assert!(diff(BASE).can_apply());
    }

    #[test]
    fn restart_keys_are_each_named() {
        let new = BASE
            .replace("127.0.0.1:8080", "127.0.0.1:8081")
            .replace("workers = 2", "workers = 3")
            .replace("127.0.0.1:9901", "127.0.0.1:9902")
            .replace("dir = \"state\"", "dir = \"state2\"");
        let d = diff(&new);
        assert_eq!(
            d.restart_required,
            [
                "server.listen",
                "server.workers",
                "admin.listen",
                "state.dir"
            ]
        );
        assert!(!d.can_apply());
        assert!(d.canary_changed.is_empty());
    }

    #[test]
    fn canary_name_or_endpoints_change_is_detected() {
        let d = diff(&BASE.replace("canary = \"v2\"", "canary = \"v3\""));
        assert_eq!(names(&d.canary_changed), ["a"]);
        // The canary's endpoints changed (v3 is b's canary); v1 is stable only.
        let d = diff(&BASE.replace("127.0.0.1:3", "127.0.0.1:33"));
        assert_eq!(names(&d.canary_changed), ["b"]);
        let d = diff(&BASE.replace("127.0.0.1:1\"", "127.0.0.1:11\""));
        assert!(
            d.canary_changed.is_empty(),
            "stable endpoints do not restart ramps"
        );
    }

    #[test]
    fn added_and_removed_routes() {
        let new = BASE.replace("name = \"b\"", "name = \"c\"");
        let d = diff(&new);
        assert_eq!(names(&d.added_routes), ["c"]);
        assert_eq!(names(&d.canary_changed), ["c"]);
        assert_eq!(names(&d.removed_routes), ["b"]);
        assert!(d.ramp_changed.is_empty());
    }

    #[test]
    fn ramp_policy_changes() {
        let d = diff(&BASE.replace("steps = [1, 100]", "steps = [2, 100]"));
        assert_eq!(names(&d.ramp_changed), ["a"]);
        assert!(d.canary_changed.is_empty());
        let d = diff(&BASE.replace("[routes.ramp]\nsteps = [1, 100]\n", ""));
        assert_eq!(names(&d.ramp_changed), ["a"]);
        // Weight and rule edits are live-applied: not in the diff.
        let d = diff(&BASE.replace("canary = \"v3\"", "canary = \"v3\"\ncanary_weight = 7"));
        assert_eq!(d, ConfigDiff::default());
        // So is the access-log sample rate (read from the snapshot per request).
        let d = diff(&BASE.replace("workers = 2", "workers = 2\naccess_log_sample = 0.5"));
        assert_eq!(d, ConfigDiff::default());
    }
}
