//! Shared by the ramp end-to-end tests: scriptable backends, a config in a
//! temp dir, a traffic generator, admin calls and bounded polls.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use grayproxy::app::App;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng;
use serde_json::Value;
use tokio::net::TcpListener;

/// A backend answering 200, or 503 for a set share of requests
/// (deterministically spread: exactly `rate` of every run of requests).
pub struct Backend {
    pub addr: SocketAddr,
    /// 503 share in parts per million.
    pub error_ppm: Arc<AtomicU32>,
    pub requests: Arc<AtomicU64>,
}

impl Backend {
    /// Answers at once.
    pub async fn spawn(error_rate: f64) -> Backend {
        Backend::spawn_slow(error_rate, 0.0).await
    }

    /// Answers after an exponentially distributed delay with this mean: a
    /// heavy tail that a busy test machine's scheduling noise barely moves,
    /// so the judge's slow-request threshold is about the backend.
    pub async fn spawn_slow(error_rate: f64, mean_ms: f64) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let error_ppm = Arc::new(AtomicU32::new((error_rate * 1e6).round() as u32));
        let requests = Arc::new(AtomicU64::new(0));
        let (ppm, count) = (error_ppm.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (ppm, count) = (ppm.clone(), count.clone());
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: Request<Incoming>| {
                        let i = count.fetch_add(1, Ordering::Relaxed);
                        let rate = u64::from(ppm.load(Ordering::Relaxed));
                        // Request i fails when the running error count steps up.
                        let fail = (i + 1) * rate / 1_000_000 > i * rate / 1_000_000;
                        let status = if fail {
                            StatusCode::SERVICE_UNAVAILABLE
                        } else {
                            StatusCode::OK
                        };
                        let delay = if mean_ms > 0.0 {
                            let exp = rand_distr::Exp::new(1.0 / mean_ms).unwrap();
                            let ms: f64 = rand::Rng::sample(&mut rand::thread_rng(), exp);
                            Some(Duration::from_secs_f64(ms.min(10.0 * mean_ms) / 1000.0))
                        } else {
                            None
                        };
                        async move {
                            if let Some(d) = delay {
                                tokio::time::sleep(d).await;
                            }
                            let mut r = Response::new(Full::new(Bytes::from_static(b"ok\n")));
                            *r.status_mut() = status;
                            Ok::<_, Infallible>(r)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Backend {
            addr,
            error_ppm,
            requests,
        }
    }

    pub fn set_error_rate(&self, rate: f64) {
        self.error_ppm
            .store((rate * 1e6).round() as u32, Ordering::Relaxed);
    }
}

/// A temp dir with `grayproxy.toml`, `admin.token` and `state/`.
pub struct Setup {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub token: String,
}

pub const TOKEN: &str = "test-token-5f1d";

/// A unique, empty temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let d = std::env::temp_dir().join(format!(
        "grayproxy-{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

impl Setup {
    /// A config with route `r` (stable → `stable`, canary → `canary`) and
    /// `ramp` as the body of its `[routes.ramp]` table.
    pub fn new(name: &str, stable: SocketAddr, canary: SocketAddr, ramp: &str) -> Setup {
        let dir = temp_dir(name);
        std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap();
        let config = dir.join("grayproxy.toml");
        let text = format!(
            r#"[server]
listen = "127.0.0.1:0"
workers = 2
[admin]
listen = "127.0.0.1:0"
token_file = "admin.token"
[state]
dir = "state"
[upstreams.v1]
endpoints = ["{stable}"]
[upstreams.v2]
endpoints = ["{canary}"]
[[routes]]
name = "r"
stable = "v1"
canary = "v2"
sticky = "header:x-user-id"
fallback = false
[routes.ramp]
{ramp}
"#
        );
        std::fs::write(&config, text).unwrap();
        Setup {
            dir,
            config,
            token: TOKEN.into(),
        }
    }

    pub fn state_dir(&self) -> PathBuf {
        self.dir.join("state")
    }

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

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One request; `(status, body)`.
pub async fn request(
    c: &HttpClient,
    method: Method,
    url: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String) {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c
        .request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `/status` JSON.
pub async fn status(c: &HttpClient, admin: SocketAddr) -> Value {
    let (code, body) = request(c, Method::GET, &format!("http://{admin}/status"), &[]).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

/// The ramp of route `r` in `/status`.
pub async fn ramp(c: &HttpClient, admin: SocketAddr) -> Value {
    status(c, admin).await["routes"][0]["ramp"].clone()
}

/// `POST /routes/{route}/{action}` with an optional bearer token.
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
    let (code, body) = request(
        c,
        Method::POST,
        &format!("http://{admin}/routes/{route}/{action}"),
        &headers,
    )
    .await;
    (
        code,
        serde_json::from_str(&body).unwrap_or(Value::String(body)),
    )
}

/// Traffic with random user ids at about `rps`, until dropped.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    pub sent: Arc<AtomicU64>,
    pub non_2xx_or_503: Arc<AtomicU64>,
}

impl Traffic {
    /// Open-loop traffic: a request every `1/rps` seconds (at most 256 in flight).
    pub fn start(proxy: SocketAddr, rps: f64) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let odd = Arc::new(AtomicU64::new(0));
        let every = Duration::from_secs_f64(1.0 / rps);
        let (stop2, sent2, odd2) = (stop.clone(), sent.clone(), odd.clone());
        tokio::spawn(async move {
            let c = client();
            let slots = Arc::new(tokio::sync::Semaphore::new(256));
            let mut timer = tokio::time::interval(every);
            timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop2.load(Ordering::Relaxed) {
                timer.tick().await;
                let Ok(permit) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (c, sent, odd) = (c.clone(), sent2.clone(), odd2.clone());
                tokio::spawn(async move {
                    let user = format!("user-{}", rand::thread_rng().gen::<u32>());
                    let req = Request::get(format!("http://{proxy}/api"))
                        .header("x-user-id", user)
                        .body(Full::new(Bytes::new()))
                        .unwrap();
                    let ok = match c.request(req).await {
                        Ok(resp) => {
                            let s = resp.status();
                            let _ = resp.into_body().collect().await;
                            s.is_success() || s == StatusCode::SERVICE_UNAVAILABLE
                        }
                        Err(_) => false,
                    };
                    if !ok {
                        odd.fetch_add(1, Ordering::Relaxed);
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
        });
        Traffic {
            stop,
            sent,
            non_2xx_or_503: odd,
        }
    }

    pub fn stop(&self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A file that must exist, to be read as text.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Short ramp timings for tests.
pub const FAST: &str = r#"tick = "100ms"
interval = "300ms"
baseline = "1s"
max_step_duration = "1m""#;

/// Starts the app with the ramp driver.
pub async fn start(setup: &Setup) -> App {
    App::start(&setup.config).await.unwrap()
}

/// The `action` of each audit record.
pub fn actions(audit: &[Value]) -> Vec<String> {
    audit
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect()
}

/// Polls `/status` until the ramp reaches `state`.
pub async fn wait_state(c: &HttpClient, app: &App, state: &str, limit: Duration) -> Value {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let r = ramp(c, app.admin_addr).await;
        if r["state"] == state {
            return r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {limit:?} waiting for ramp state {state}; last status:\n{r:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
