//! The demo's config file, written into its temp directory.

use super::backend::DemoBackend;
use super::{DemoOptions, ROUTE};

/// Length of the demo's shadow phase (`--shadow`), in seconds.
pub const SHADOW_PHASE: u64 = 15;
/// The demo's `min_rbo`: a canary whose lists agree less with stable's is
/// rolled back in the shadow phase.
pub const MIN_RBO: f64 = 0.9;

/// The demo config: both listeners and the backends on loopback, port 0.
pub fn config_text(stable: &DemoBackend, canary: &DemoBackend, opts: &DemoOptions) -> String {
    let text = format!(
        r#"# Written by `grayproxy demo`.
[server]
listen = "127.0.0.1:0"
request_timeout = "5s"
shutdown_grace = "2s"

[admin]
listen = "127.0.0.1:0"
token_file = "admin.token"

[state]
dir = "state"

[upstreams.reco-v1]
endpoints = ["{stable}"]
[upstreams.reco-v2]
endpoints = ["{canary}"]

[[routes]]
name = "{ROUTE}"
match = {{ path_prefix = "/api/recommend" }}
stable = "reco-v1"
canary = "reco-v2"
sticky = "header:x-user-id"
salt = "reco-v2"
fallback = true

  [[routes.rules]]
  when = {{ header = "x-canary", equals = "always" }}
  to = "canary"

  [routes.ramp]
  steps = [1, 5, 10, 25, 50, 100]
  interval = "5s"
  tick = "1s"
  min_requests = 50
  baseline = "10s"
  confidence = 0.99
  max_p99_increase = 0.1
  max_step_duration = "2m"
"#,
        stable = stable.addr,
        canary = canary.addr
    );
    format!("{text}{}", shadow_lines(opts))
}

/// The shadow settings: with `--shadow`, a shadow phase before the first
/// step (15 s and 50 pairs at least; lists below a mean RBO of 0.9 roll the
/// canary back); with `--shadow` or `--canary-reorder`, `[routes.shadow]`:
/// every stable-answered request mirrored, the lists compared at depth 3.
fn shadow_lines(opts: &DemoOptions) -> String {
    let mut out = String::new();
    if opts.shadow {
        out.push_str(&format!(
            "  shadow = \"{SHADOW_PHASE}s\"\n  min_rbo = {MIN_RBO}\n"
        ));
    }
    if opts.shadow || opts.canary_reorder > 0.0 {
        out.push_str(
            "\n  [routes.shadow]\n  percent = 100\n  items = \"recommendations\"\n  item_id = \"product\"\n  k = 3\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// The demo config for `opts`, read back through the real loader.
    fn load(opts: &DemoOptions) -> crate::config::types::Route {
        let dir = std::env::temp_dir().join(format!(
            "grayproxy-demo-config-{}-{}",
            std::process::id(),
            opts.shadow
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = |port| DemoBackend {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            requests: Arc::default(),
        };
        std::fs::write(dir.join("admin.token"), "t\n").unwrap();
        let path = dir.join("grayproxy.toml");
        std::fs::write(&path, config_text(&fake(18081), &fake(18082), opts)).unwrap();
        let loaded = crate::config::load(&path).expect("the demo config must be valid");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        loaded.config.routes[0].clone()
    }

    #[test]
    fn shadow_flags_shape_the_config() {
        let plain = load(&DemoOptions::default());
        assert!(plain.shadow.is_none());
        assert_eq!(plain.ramp.as_ref().and_then(|r| r.shadow), None);

        let dark = load(&DemoOptions {
            canary_reorder: 0.3,
            ..DemoOptions::default()
        });
        let s = dark.shadow.as_ref().expect("mirroring on");
        assert!(s.always && s.percent == 100.0 && s.k == 3);
        assert_eq!(s.items.as_deref(), Some("recommendations"));
        assert_eq!(s.item_id.as_deref(), Some("product"));
        assert_eq!(dark.ramp.as_ref().and_then(|r| r.shadow), None, "no phase");

        let phase = load(&DemoOptions {
            shadow: true,
            ..DemoOptions::default()
        });
        let ramp = phase.ramp.as_ref().expect("a ramp");
        assert_eq!(ramp.shadow, Some(Duration::from_secs(SHADOW_PHASE)));
        assert_eq!(ramp.min_rbo, Some(MIN_RBO));
        assert!(phase.shadow.is_some());
    }
}
