//! Test support for the resilience tests: a scriptable upstream on real
//! sockets (faults: status, reset, delay; `kill` for refused connections), a
//! proxy started from a config written to a fresh temp dir, a metrics reader
//! and a plain HTTP client.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;

use grayproxy::app::App;

/// What the upstream does with the next requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// 200 with the upstream's name as body.
    None,
    /// Answers with this status.
    Status(u16),
    /// Reads the request, then closes the connection without answering.
    Reset,
    /// Waits this long before answering 200.
    Delay(Duration),
}

/// What an upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

struct State {
    name: &'static str,
    fault: Mutex<Fault>,
    requests: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    /// Status answered on `/healthz` (not counted as a request).
    health: std::sync::atomic::AtomicU16,
    health_checks: AtomicU64,
}

/// A scriptable HTTP/1.1 upstream on 127.0.0.1:0.
pub struct TestUpstream {
    pub addr: SocketAddr,
    state: Arc<State>,
    kill: watch::Sender<bool>,
}

impl TestUpstream {
    /// Starts an upstream that answers `200 <name>` with `x-served-by: <name>`.
    pub async fn spawn(name: &'static str) -> TestUpstream {
        TestUpstream::spawn_with(name, None).await
    }

    /// Like [`TestUpstream::spawn`], speaking TLS with this acceptor.
    pub async fn spawn_with(
        name: &'static str,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            name,
            fault: Mutex::new(Fault::None),
            requests: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
            health: std::sync::atomic::AtomicU16::new(200),
            health_checks: AtomicU64::new(0),
        });
        let (kill, killed) = watch::channel(false);
        let st = state.clone();
        tokio::spawn(async move {
            let mut killed_accept = killed.clone();
            loop {
                let (stream, _) = tokio::select! {
                    r = listener.accept() => match r { Ok(p) => p, Err(_) => continue },
                    _ = killed_accept.changed() => return, // drops the listener: refused from now on
                };
                let st = st.clone();
                let mut killed_conn = killed.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(st.clone(), req));
                    let builder = hyper::server::conn::http1::Builder::new();
                    let serve = async move {
                        match tls {
                            None => {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                            Some(acceptor) => {
                                if let Ok(s) = acceptor.accept(stream).await {
                                    let _ =
                                        builder.serve_connection(TokioIo::new(s), service).await;
                                }
                            }
                        }
                    };
                    tokio::select! {
                        _ = serve => {}
                        _ = killed_conn.changed() => {} // drops the socket mid-exchange
                    }
                });
            }
        });
        TestUpstream { addr, state, kill }
    }

    /// Sets the fault for the next requests.
    pub fn set(&self, fault: Fault) {
        *self.state.fault.lock().unwrap() = fault;
    }

    /// Sets the status `/healthz` answers.
    pub fn set_health(&self, status: u16) {
        self.state.health.store(status, Ordering::SeqCst);
    }

    /// Health checks received so far.
    pub fn health_checks(&self) -> u64 {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// Requests received so far (including those answered with a fault).
    pub fn count(&self) -> u64 {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Everything received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// Stops listening and drops every open connection.
    pub fn kill(&self) {
        let _ = self.kill.send(true);
    }
}

async fn handle(
    st: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    if req.uri().path() == "/healthz" {
        st.health_checks.fetch_add(1, Ordering::SeqCst);
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::from_u16(st.health.load(Ordering::SeqCst)).unwrap();
        return Ok(resp);
    }
    st.requests.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    st.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        path: parts.uri.to_string(),
        headers: parts.headers.clone(),
        body,
    });
    let fault = *st.fault.lock().unwrap();
    let status = match fault {
        Fault::None => StatusCode::OK,
        Fault::Status(s) => StatusCode::from_u16(s).unwrap(),
        Fault::Reset => return Err(std::io::Error::other("scripted reset")),
        Fault::Delay(d) => {
            tokio::time::sleep(d).await;
            StatusCode::OK
        }
    };
    let mut resp = Response::new(Full::new(Bytes::from(st.name)));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert("x-served-by", http::HeaderValue::from_static(st.name));
    Ok(resp)
}

/// An address nothing listens on (connections are refused).
pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// A fresh temp directory for one test.
pub fn temp_dir(tag: &str) -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "grayproxy-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A config with one route `r` (stable → `stable`, canary → `canary`);
/// `server` lines go under `[server]`, `route` lines into the route.
pub fn config(stable: &[SocketAddr], canary: &[SocketAddr], server: &str, route: &str) -> String {
    let list = |v: &[SocketAddr]| {
        v.iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ")
    };
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n{server}\n\
         [admin]\nlisten = \"127.0.0.1:0\"\n\
         [upstreams.stable]\nendpoints = [{}]\n\
         [upstreams.canary]\nendpoints = [{}]\n\
         [[routes]]\nname = \"r\"\nstable = \"stable\"\ncanary = \"canary\"\n{route}\n",
        list(stable),
        list(canary)
    )
}

/// A running proxy and the directory its config lives in.
pub struct Proxy {
    pub app: App,
    pub dir: PathBuf,
}

impl Proxy {
    /// Writes `toml` to a temp dir and starts the proxy on it.
    pub async fn start(toml: &str) -> Proxy {
        Proxy::start_in(temp_dir("proxy"), toml).await
    }

    /// Writes `toml` to `dir` (which may hold files it refers to) and starts the proxy.
    pub async fn start_in(dir: PathBuf, toml: &str) -> Proxy {
        let path = dir.join("grayproxy.toml");
        let toml = format!("{toml}\n[state]\ndir = \"state\"\n");
        std::fs::write(&path, toml).unwrap();
        let app = App::start(&path).await.unwrap();
        Proxy { app, dir }
    }

    /// `http://proxy_addr`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.app.proxy_addr)
    }

    /// The current value of one sample (0 when absent).
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let text = self.app.runtime.metrics.render().unwrap();
        metric(&text, name, labels)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.app.shutdown();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The value of the sample `name{labels..}` in Prometheus text (0 when absent).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A plain HTTP/1.1 client with keep-alive.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A received answer, body read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request; `Err` on a transport error.
pub async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    body: Option<&'static str>,
) -> Result<Answer, String> {
    let mut req = Request::builder().method(method).uri(url);
    if body.is_some() {
        req = req.header("content-type", "text/plain");
    }
    let req = req
        .body(Full::new(Bytes::from_static(body.unwrap_or("").as_bytes())))
        .unwrap();
    let resp = client.request(req).await.map_err(|e| format!("{e:?}"))?;
    let (parts, body) = resp.into_parts();
    let body = body
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok(Answer {
        status: parts.status.as_u16(),
        headers: parts.headers,
        body,
    })
}

/// Polls `f` every 20 ms until it is true or `within` passes.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < end {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    f()
}

/// Never returns an error; handy for `service_fn`.
pub fn infallible<T>(t: T) -> Result<T, Infallible> {
    Ok(t)
}

/// Adds `lines` to `[upstreams.stable]` of a [`config`] text.
pub fn with_stable_keys(toml: &str, lines: &str) -> String {
    toml.replacen(
        "[upstreams.canary]",
        &format!("{lines}\n[upstreams.canary]"),
        1,
    )
}
