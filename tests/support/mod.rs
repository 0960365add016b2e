//! Helpers for the integration tests: scriptable upstreams, the proxy started
//! in-process ([`TestProxy`]) or as the real binary ([`Binary`]), an HTTP
//! client, a metric matcher over `/metrics` and a bounded [`eventually`].
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub mod binary;
pub mod upstream;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use grayproxy::app::App;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

pub use upstream::{sha256_hex, Fault, Seen, TestUpstream};

/// The error type of test request bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type of test requests.
pub type Body = BoxBody<Bytes, BoxError>;
/// A pooled HTTP client.
pub type HttpClient = Client<HttpConnector, Body>;

/// Polls `check` every 20 ms until it holds; panics naming `what` after `timeout`.
pub async fn eventually<F, Fut>(timeout: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if check().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A fresh, empty directory under the system temp dir.
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "grayproxy-itest-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// A path inside.
    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Replaces a file atomically (write beside, rename), like editors and
/// config-management tools do, so the watcher never reads half a file.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// A config with both listeners on port 0, `server_extra` lines in
/// `[server]`, one upstream per `(name, addr)` and `routes` appended as is.
pub fn config(server_extra: &str, upstreams: &[(&str, SocketAddr)], routes: &str) -> String {
    let mut text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server_extra}\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n"
    );
    for (name, addr) in upstreams {
        text.push_str(&format!("[upstreams.{name}]\nendpoints = [\"{addr}\"]\n"));
    }
    text.push('\n');
    text.push_str(routes);
    text
}

/// A proxy started in-process with [`App::start`] from a config file in a
/// temp dir.
pub struct TestProxy {
    /// The running app.
    pub app: App,
    /// The proxy's address.
    pub proxy: SocketAddr,
    /// The admin API's address.
    pub admin: SocketAddr,
    /// The config file.
    pub path: PathBuf,
    /// Holds the config dir.
    pub dir: TempDir,
}

impl TestProxy {
    /// Writes `text` to `grayproxy.toml` in a fresh temp dir and starts it.
    pub async fn start(text: &str) -> TestProxy {
        let dir = TempDir::new();
        let path = dir.join("grayproxy.toml");
        std::fs::write(&path, text).unwrap();
        let app = match App::start(&path).await {
            Ok(app) => app,
            Err(e) => panic!("grayproxy did not start: {e}\nconfig:\n{text}"),
        };
        TestProxy {
            proxy: app.proxy_addr,
            admin: app.admin_addr,
            app,
            path,
            dir,
        }
    }

    /// `http://PROXY{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// Rewrites the config file (the watcher picks it up).
    pub fn rewrite(&self, text: &str) {
        write_atomically(&self.path, text);
    }

    /// `GET /metrics` on the admin API.
    pub async fn metrics(&self) -> Metrics {
        admin_metrics(self.admin).await
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
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.app.shutdown();
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

/// An HTTP/1.1 client with a keep-alive pool.
pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// An empty request body.
pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A complete request body (sent with Content-Length).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).map_err(|e| match e {}).boxed()
}

/// An answer read to the end.
#[derive(Debug)]
pub struct Answer {
    /// Status.
    pub status: StatusCode,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl Answer {
    /// The `x-grayproxy-arm` header ("" when absent).
    pub fn arm(&self) -> &str {
        self.header("x-grayproxy-arm")
    }

    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", self.body))
    }
}

/// Sends a request and reads the whole answer.
pub async fn send(client: &HttpClient, req: Request<Body>) -> Result<Answer, BoxError> {
    let response = client.request(req).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok(Answer {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// `GET url` with extra headers; panics on transport errors.
pub async fn get(client: &HttpClient, url: &str, headers: &[(&str, &str)]) -> Answer {
    let mut req = Request::get(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(client, req.body(empty()).unwrap())
        .await
        .unwrap_or_else(|e| panic!("GET {url} failed: {e:?}"))
}

/// `GET http://ADMIN{path}` parsed as JSON.
pub async fn admin_json(admin: SocketAddr, path: &str) -> serde_json::Value {
    let answer = get(&client(), &format!("http://{admin}{path}"), &[]).await;
    answer.json()
}

/// `GET /metrics` on an admin API.
pub async fn admin_metrics(admin: SocketAddr) -> Metrics {
    let answer = get(&client(), &format!("http://{admin}/metrics"), &[]).await;
    assert_eq!(answer.status, 200);
    Metrics(String::from_utf8(answer.body.to_vec()).unwrap())
}

/// A `/metrics` scrape.
#[derive(Debug, Clone)]
pub struct Metrics(pub String);

impl Metrics {
    /// The sum of every sample of `name` whose labels include all of
    /// `labels` (0 when none matches).
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(parse_sample)
            .filter(|(n, ls, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| ls.iter().any(|(lk, lv)| lk == k && lv == v))
            })
            .map(|(_, _, v)| v)
            .sum()
    }
}

/// One sample: name, labels, value.
type Sample = (String, Vec<(String, String)>, f64);

/// `name{a="x",b="y"} 1.5` → (name, labels, value).
fn parse_sample(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((n, rest)) => {
            let inner = rest.strip_suffix('}')?;
            let labels = inner
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once("=\"")?;
                    Some((k.to_owned(), v.trim_end_matches('"').to_owned()))
                })
                .collect();
            (n.to_owned(), labels)
        }
        None => (head.to_owned(), Vec::new()),
    };
    Some((name, labels, value))
}

/// Deterministic pseudo-random bytes (xorshift), for large bodies.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `f(0..n)` on `workers` concurrent tasks; results in index order.
pub async fn fan_out<F, Fut, T>(n: usize, workers: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    let f = std::sync::Arc::new(f);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut i = w;
            while i < n {
                out.push((i, f(i).await));
                i += workers;
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, v)| v).collect()
}

/// A body streamed in `chunk`-byte frames with no declared length, so
/// HTTP/1.1 sends it chunked.
pub fn chunked(bytes: impl Into<Bytes>, chunk: usize) -> Body {
    Chunks {
        data: bytes.into(),
        chunk,
    }
    .boxed()
}

struct Chunks {
    data: Bytes,
    chunk: usize,
}

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        if self.data.is_empty() {
            return std::task::Poll::Ready(None);
        }
        let n = self.chunk.min(self.data.len());
        let frame = self.data.split_to(n);
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_empty()
    }
}
