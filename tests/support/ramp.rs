//! For the ramp tests: one ramped route `r` in a temp dir with an admin
//! token ([`Setup`]), open-loop traffic with random user ids ([`Traffic`]),
//! and the admin calls an operator makes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::{Method, StatusCode};
use rand::Rng;
use serde_json::Value;

use super::config::Toml;
use super::http::{admin_json, client, fetch, HttpClient};
use super::upstream::{Fault, TestUpstream};
use super::{eventually, TempDir};

/// The admin token of every [`Setup`].
pub const TOKEN: &str = "test-token-5f1d";

/// Short ramp timings for tests.
pub const FAST: &str = r#"tick = "100ms"
interval = "300ms"
baseline = "1s"
max_step_duration = "1m""#;

/// Mean service time (ms) of the backends of tests that need a healthy
/// canary promoted. The judge calls a request slow above stable's baseline
/// p99; with an exponential delay of this mean that is ≈ 180 ms, so a
/// scheduling stall of tens of milliseconds on a loaded 2-core machine moves
/// few requests past it. With millisecond latencies the same stall makes
/// every request in flight "slow" on both arms, and the judge rightly holds
/// the ramp for a shared degradation until the test runs out of time.
pub const STEADY_MEAN_MS: u64 = 40;

/// An upstream answering 503 to `error_share` of its requests (spread
/// evenly) after an exponentially distributed delay with mean `mean_ms`
/// (at once when 0).
pub async fn backend(name: &str, error_share: f64, mean_ms: u64) -> TestUpstream {
    let mut upstream = TestUpstream::spawn(name).await;
    if error_share > 0.0 {
        upstream = upstream.with(Fault::StatusShare(503, error_share));
    }
    if mean_ms > 0 {
        upstream = upstream.with(Fault::DelayExp(Duration::from_millis(mean_ms)));
    }
    upstream
}

/// Backends `stable` and `canary` ([`backend`]: 503 to `stable_errors` and
/// `canary_errors` of their requests, both with mean delay `mean_ms`).
pub async fn backends(
    stable_errors: f64,
    canary_errors: f64,
    mean_ms: u64,
) -> (TestUpstream, TestUpstream) {
    (
        backend("stable", stable_errors, mean_ms).await,
        backend("canary", canary_errors, mean_ms).await,
    )
}

/// [`backends`] and a [`Setup`] ramping route `r` from the one to the other
/// with `ramp` as its `[routes.ramp]` body; the usual start of a ramp test
/// (which then opens `setup.config`, possibly after editing it).
pub async fn ramped(
    stable_errors: f64,
    canary_errors: f64,
    mean_ms: u64,
    ramp: &str,
) -> (TestUpstream, TestUpstream, Setup) {
    let (stable, canary) = backends(stable_errors, canary_errors, mean_ms).await;
    let setup = Setup::new(stable.addr, canary.addr, ramp);
    (stable, canary, setup)
}

/// A temp dir with `grayproxy.toml`, `admin.token` and `state/`.
pub struct Setup {
    /// The directory (removed on drop).
    pub dir: TempDir,
    /// The config file.
    pub config: PathBuf,
}

impl Setup {
    /// A config with route `r` (stable → upstream `v1` at `stable`, canary →
    /// `v2` at `canary`, sticky on `x-user-id`, no fallback) and `ramp` as
    /// the body of its `[routes.ramp]` table.
    pub fn new(stable: SocketAddr, canary: SocketAddr, ramp: &str) -> Setup {
        let dir = TempDir::new();
        std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap();
        let config = dir.join("grayproxy.toml");
        let text = Toml::new()
            .server("workers = 2")
            .admin("token_file = \"admin.token\"")
            .upstream("v1", &[stable], "")
            .upstream("v2", &[canary], "")
            .routes(&format!(
                "[[routes]]\nname = \"r\"\nstable = \"v1\"\ncanary = \"v2\"\n\
                 sticky = \"header:x-user-id\"\nfallback = false\n[routes.ramp]\n{ramp}\n"
            ))
            .build();
        std::fs::write(&config, text).unwrap();
        Setup { dir, config }
    }

    /// The state directory.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

    /// Route `r`'s state file.
    pub fn state_file(&self) -> PathBuf {
        self.state_dir().join("r.ramp.json")
    }

    /// The persisted state file as JSON.
    pub fn read_state(&self) -> Value {
        serde_json::from_slice(&std::fs::read(self.state_file()).unwrap()).unwrap()
    }

    /// The audit log, one JSON value per line.
    pub fn audit(&self) -> Vec<Value> {
        std::fs::read_to_string(self.state_dir().join("audit.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The `action` of each audit record.
pub fn actions(audit: &[Value]) -> Vec<String> {
    audit
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect()
}

/// The ramp of the first route in `/status`.
pub async fn ramp(admin: SocketAddr) -> Value {
    admin_json(admin, "/status").await["routes"][0]["ramp"].clone()
}

/// Polls `/status` until the ramp reaches `state`; returns that ramp.
pub async fn wait_state(admin: SocketAddr, state: &str, within: Duration) -> Value {
    eventually(within, &format!("ramp state {state}"), || async move {
        let r = ramp(admin).await;
        if r["state"] == state {
            Ok(r)
        } else {
            Err(format!("last status:\n{r:#}"))
        }
    })
    .await
}

/// `POST /routes/{route}/{action}` with an optional bearer token: the
/// status and the JSON body (or the text as a JSON string).
pub async fn post(
    c: &HttpClient,
    admin: SocketAddr,
    route: &str,
    action: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth
        .as_deref()
        .map(|a| vec![("authorization", a)])
        .unwrap_or_default();
    let url = format!("http://{admin}/routes/{route}/{action}");
    let a = fetch(c, Method::POST, &url, &headers, None).await.unwrap();
    let body = serde_json::from_slice(&a.body).unwrap_or(Value::String(a.text()));
    (a.status, body)
}

/// Traffic with random user ids (`x-user-id`) on `/api`, until stopped or
/// dropped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    /// Requests started so far.
    started: Arc<AtomicU64>,
    /// Requests answered (or failed) so far.
    pub sent: Arc<AtomicU64>,
    /// Answers other than 2xx or 503, and transport errors.
    pub non_2xx_or_503: Arc<AtomicU64>,
}

impl Traffic {
    /// Open-loop traffic: a request every `1/rps` seconds (at most 256 in flight).
    pub fn start(proxy: SocketAddr, rps: f64) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let odd = Arc::new(AtomicU64::new(0));
        let started = Arc::new(AtomicU64::new(0));
        let every = Duration::from_secs_f64(1.0 / rps);
        let (stop2, sent2, odd2) = (stop.clone(), sent.clone(), odd.clone());
        let started2 = started.clone();
        tokio::spawn(async move {
            let c = client();
            let url = format!("http://{proxy}/api");
            let slots = Arc::new(tokio::sync::Semaphore::new(256));
            let mut timer = tokio::time::interval(every);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop2.load(Ordering::Relaxed) {
                timer.tick().await;
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                started2.fetch_add(1, Ordering::SeqCst);
                let (c, url, sent, odd) = (c.clone(), url.clone(), sent2.clone(), odd2.clone());
                tokio::spawn(async move {
                    let user = format!("user-{}", rand::thread_rng().gen::<u32>());
                    let answer = fetch(&c, Method::GET, &url, &[("x-user-id", &user)], None).await;
                    let ok = answer.is_ok_and(|a| {
                        a.status.is_success() || a.status == StatusCode::SERVICE_UNAVAILABLE
                    });
                    if !ok {
                        odd.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.fetch_add(1, Ordering::SeqCst);
                    drop(permit);
                });
            }
        });
        Traffic {
            stop,
            started,
            sent,
            non_2xx_or_503: odd,
        }
    }

    /// Requests under way (started, not yet answered).
    pub fn in_flight(&self) -> u64 {
        // `sent` first, so that a request answered between the two reads
        // still counts as under way (never fewer than the truth).
        let sent = self.sent.load(Ordering::SeqCst);
        self.started.load(Ordering::SeqCst).saturating_sub(sent)
    }

    /// Waits (≤ 5 s) for a moment with no request under way: every request
    /// started before this call has been answered when it returns.
    pub async fn landed(&self) {
        eventually(Duration::from_secs(5), "no request in flight", || async {
            self.in_flight() == 0
        })
        .await;
    }

    /// Stops sending (requests in flight still land).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}
