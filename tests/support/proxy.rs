//! [`TestProxy`]: grayproxy started in-process from a config file, with its
//! ramp driver, the way `grayproxy run` starts it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use grayproxy::app::App;

use super::config::{split_config, write_atomically};
use super::http::{admin_json, admin_metrics};
use super::metrics::Metrics;
use super::upstream::TestUpstream;
use super::{eventually, TempDir};

/// A running in-process proxy; shut down when dropped.
pub struct TestProxy {
    /// The running app (taken by [`TestProxy::stop`]).
    app: Option<App>,
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// The admin API's address.
    pub admin: SocketAddr,
    /// The config file.
    pub path: PathBuf,
    /// The temp dir holding the config, when this proxy made it.
    dir: Option<TempDir>,
}

impl TestProxy {
    /// Writes `text` to `grayproxy.toml` in a fresh temp dir and starts it.
    pub async fn start(text: &str) -> TestProxy {
        TestProxy::start_in(TempDir::new(), text).await
    }

    /// Writes `text` to `grayproxy.toml` in `dir` (which may hold files the
    /// config refers to, like certificates) and starts it.
    pub async fn start_in(dir: TempDir, text: &str) -> TestProxy {
        let path = dir.join("grayproxy.toml");
        std::fs::write(&path, text).unwrap();
        let mut proxy = TestProxy::open(&path).await;
        proxy.dir = Some(dir);
        proxy
    }

    /// Starts on an existing config file (which the caller keeps).
    pub async fn open(path: &Path) -> TestProxy {
        let app = match App::start(path).await {
            Ok(app) => app,
            Err(e) => panic!(
                "grayproxy did not start: {e}\nconfig:\n{}",
                std::fs::read_to_string(path).unwrap_or_default()
            ),
        };
        TestProxy {
            proxy: app.proxy_addr,
            admin: app.admin_addr,
            app: Some(app),
            path: path.to_owned(),
            dir: None,
        }
    }

    /// The running app.
    pub fn app(&self) -> &App {
        self.app.as_ref().expect("the proxy is running")
    }

    /// The directory of the config file.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap()
    }

    /// `http://PROXY{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// `http://ADMIN{path}`.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Rewrites the config file (the watcher picks it up).
    pub fn rewrite(&self, text: &str) {
        write_atomically(&self.path, text);
    }

    /// `GET /metrics` on the admin API.
    pub async fn metrics(&self) -> Metrics {
        admin_metrics(self.admin).await
    }

    /// The registry rendered in-process, without a request (for checks
    /// between two requests that must not disturb the counts).
    pub fn metrics_now(&self) -> Metrics {
        Metrics(self.app().runtime.metrics.render().unwrap())
    }

    /// One sample of [`TestProxy::metrics_now`] (0 when absent).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.metrics_now().value(name, labels)
    }

    /// `GET /status` on the admin API.
    pub async fn status(&self) -> serde_json::Value {
        admin_json(self.admin, "/status").await
    }

    /// The live canary weight of `route`, from `/status`.
    pub async fn weight(&self, route: &str) -> f64 {
        route_weight(&self.status().await, route)
    }

    /// Rewrites the config and waits until `/status` shows `route` at `weight`.
    pub async fn reload_to(&self, text: &str, route: &str, weight: f64) {
        self.rewrite(text);
        let admin = self.admin;
        eventually(
            Duration::from_secs(5),
            &format!("reload to {route}={weight}%"),
            || async move { route_weight(&admin_json(admin, "/status").await, route) == weight },
        )
        .await;
    }

    /// Shuts down and waits (≤ 10 s) until every task has finished.
    pub async fn stop(mut self) {
        let Some(app) = self.app.take() else { return };
        app.shutdown();
        tokio::time::timeout(Duration::from_secs(10), app.wait())
            .await
            .expect("grayproxy stops within 10 s");
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        if let Some(app) = &self.app {
            app.shutdown();
        }
    }
}

/// The canary weight of `route` in a `/status` document.
pub fn route_weight(status: &serde_json::Value, route: &str) -> f64 {
    status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == route)
        .unwrap_or_else(|| panic!("no route {route} in /status: {status}"))["canary_weight"]
        .as_f64()
        .unwrap()
}

/// The most common set-up: a `stable` and a `canary` [`TestUpstream`] and a
/// proxy splitting one catch-all route between them ([`split_config`] with
/// `server` lines in `[server]` and `route` lines in the route). The
/// upstreams run as long as this lives. When destructuring, bind every
/// field (`canary: _canary`): a field left to `..` or `_` is dropped at
/// once, and that upstream stops listening.
pub struct Split {
    pub stable: TestUpstream,
    pub canary: TestUpstream,
    pub proxy: TestProxy,
}

impl Split {
    pub async fn start(server: &str, route: &str) -> Split {
        let stable = TestUpstream::spawn("stable").await;
        let canary = TestUpstream::spawn("canary").await;
        let text = split_config(&[stable.addr], &[canary.addr], server, route);
        let proxy = TestProxy::start(&text).await;
        Split {
            stable,
            canary,
            proxy,
        }
    }
}
