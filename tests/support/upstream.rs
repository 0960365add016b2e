//! [`TestUpstream`]: a real HTTP/1.1 upstream on 127.0.0.1:0 that counts and
//! records every request it receives and misbehaves on demand:
//! `TestUpstream::spawn("canary").await.with(Fault::Status(503))`.
//!
//! It answers 200 with the request's body (or, for a body-less request, its
//! own name) and `x-upstream: NAME`. `GET /healthz` is the health-check
//! endpoint: answered with [`TestUpstream::set_health`]'s status and
//! counted apart from requests.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::Rng;
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// What an upstream does instead of answering 200 at once. Faults combine,
/// in order: delays first, then a status or a reset.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer with this status (the body still echoes).
    Status(u16),
    /// Answer with this status to exactly `share` (0..=1) of the requests,
    /// spread evenly: request i (0-based, in arrival order) gets it when
    /// ⌊(i+1)·share⌋ steps up, so 0.25 is every 4th request.
    StatusShare(u16, f64),
    /// Answer with this status to every request whose header (name, then
    /// value) is exactly this: a backend broken for one kind of user.
    StatusIfHeader(u16, &'static str, &'static str),
    /// Wait this long (after reading the request) before answering.
    Delay(Duration),
    /// Wait an exponentially distributed time with this mean (capped at 10×
    /// the mean): a heavy tail that a busy machine's scheduling noise barely
    /// moves, so slow-request statistics are about the upstream.
    DelayExp(Duration),
    /// Read the request, then drop the connection without an answer.
    Reset,
    /// Stop listening and drop every open connection: from now on
    /// connections are refused (see [`TestUpstream::refuse`]).
    Refuse,
    /// Answer with `Connection: close` (no keep-alive), like HTTP/1.0-era backends.
    Close,
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Path and query, as on the request line.
    pub uri: String,
    /// HTTP version of the proxy→upstream hop.
    pub version: Version,
    /// Every header, in order.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// Body length.
    pub body_len: usize,
    /// Hex sha256 of the body.
    pub body_sha256: String,
}

impl Seen {
    /// A header as text ("" when absent).
    pub fn header(&self, name: &str) -> String {
        self.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    }
}

struct State {
    name: String,
    /// Requests whose head arrived (counted before any delay).
    arrived: AtomicUsize,
    /// Requests whose body was read completely.
    seen: Mutex<Vec<Seen>>,
    faults: Mutex<Vec<Fault>>,
    /// Status answered on `/healthz`.
    health: AtomicU16,
    health_checks: AtomicUsize,
    /// Set to true to stop listening and drop open connections.
    refuse: watch::Sender<bool>,
}

/// A scriptable upstream server; stops listening when dropped.
pub struct TestUpstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Its name: the body of answers to body-less requests.
    pub name: String,
    state: Arc<State>,
}

/// Hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// An address nothing listens on (connections are refused).
pub async fn refused_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

impl TestUpstream {
    /// Starts an upstream on 127.0.0.1:0 that answers 200 at once.
    pub async fn spawn(name: &str) -> TestUpstream {
        TestUpstream::start(name, None).await
    }

    /// Like [`TestUpstream::spawn`], speaking TLS with this acceptor.
    pub async fn spawn_tls(name: &str, tls: tokio_rustls::TlsAcceptor) -> TestUpstream {
        TestUpstream::start(name, Some(tls)).await
    }

    async fn start(name: &str, tls: Option<tokio_rustls::TlsAcceptor>) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (refuse, _) = watch::channel(false);
        let state = Arc::new(State {
            name: name.to_owned(),
            arrived: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            faults: Mutex::new(Vec::new()),
            health: AtomicU16::new(200),
            health_checks: AtomicUsize::new(0),
            refuse,
        });
        tokio::spawn(accept(listener, state.clone(), tls));
        TestUpstream {
            addr,
            name: name.to_owned(),
            state,
        }
    }

    /// Adds a fault to every following request (builder style).
    pub fn with(self, fault: Fault) -> TestUpstream {
        if fault == Fault::Refuse {
            self.state.refuse.send_replace(true);
        }
        self.state.faults.lock().unwrap().push(fault);
        self
    }

    /// Replaces the faults of following requests (`&[]`: healthy again).
    pub fn set(&self, faults: &[Fault]) {
        if faults.contains(&Fault::Refuse) {
            self.state.refuse.send_replace(true);
        }
        *self.state.faults.lock().unwrap() = faults.to_vec();
    }

    /// Stops listening, drops open connections and waits until the port
    /// refuses connections.
    pub async fn refuse(self) -> TestUpstream {
        let this = self.with(Fault::Refuse);
        let addr = this.addr;
        super::eventually(
            Duration::from_secs(5),
            "upstream port closed",
            || async move { TcpStream::connect(addr).await.is_err() },
        )
        .await;
        this
    }

    /// Sets the status `/healthz` answers.
    pub fn set_health(&self, status: u16) {
        self.state.health.store(status, Ordering::SeqCst);
    }

    /// Health checks received so far.
    pub fn health_checks(&self) -> usize {
        self.state.health_checks.load(Ordering::SeqCst)
    }

    /// Requests whose head arrived so far (before any delay).
    pub fn arrived(&self) -> usize {
        self.state.arrived.load(Ordering::SeqCst)
    }

    /// Requests received completely so far (including those answered with
    /// a fault).
    pub fn count(&self) -> usize {
        self.state.seen.lock().unwrap().len()
    }

    /// Every request received completely so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.state.seen.lock().unwrap().clone()
    }

    /// The last request received completely.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the upstream received no request")
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.state.refuse.send_replace(true);
    }
}

/// Accepts until refused; each connection is served until it ends or the
/// upstream refuses (which drops it mid-exchange).
async fn accept(listener: TcpListener, state: Arc<State>, tls: Option<tokio_rustls::TlsAcceptor>) {
    let mut refused = state.refuse.subscribe();
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r { Ok((s, _)) => s, Err(_) => continue },
            // Returning drops the listener: connections are refused from now on.
            _ = refused.wait_for(|r| *r) => return,
        };
        let state = state.clone();
        let tls = tls.clone();
        let mut refused = state.refuse.subscribe();
        tokio::spawn(async move {
            let serve = serve(stream, state, tls);
            tokio::select! {
                _ = serve => {}
                _ = refused.wait_for(|r| *r) => {}
            }
        });
    }
}

async fn serve(stream: TcpStream, state: Arc<State>, tls: Option<tokio_rustls::TlsAcceptor>) {
    let service = service_fn(move |req| handle(req, state.clone()));
    let builder = http1::Builder::new();
    match tls {
        None => {
            let _ = builder
                .serve_connection(TokioIo::new(stream), service)
                .await;
        }
        Some(acceptor) => {
            if let Ok(s) = acceptor.accept(stream).await {
                let _ = builder.serve_connection(TokioIo::new(s), service).await;
            }
        }
    }
}

#[derive(Debug)]
struct ResetConnection;

impl std::fmt::Display for ResetConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("scripted reset")
    }
}

impl std::error::Error for ResetConnection {}

/// Echoes the body (or answers with the upstream's name), after faults.
/// Requests carrying `x-want-resp-hop` get a connection-scoped response
/// header (`x-resp-hop`, named in `Connection`) the proxy must strip.
async fn handle(
    req: Request<Incoming>,
    state: Arc<State>,
) -> Result<Response<Full<Bytes>>, ResetConnection> {
    if req.uri().path() == "/healthz" {
        state.health_checks.fetch_add(1, Ordering::SeqCst);
        let status = StatusCode::from_u16(state.health.load(Ordering::SeqCst)).unwrap();
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = status;
        return Ok(response);
    }
    let index = state.arrived.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(collected) => collected.to_bytes(),
        // The proxy broke the body off (e.g. over max_body_bytes).
        Err(_) => return Err(ResetConnection),
    };
    state.seen.lock().unwrap().push(Seen {
        method: parts.method.clone(),
        uri: parts
            .uri
            .path_and_query()
            .map(|p| p.as_str().to_owned())
            .unwrap_or_default(),
        version: parts.version,
        headers: parts.headers.clone(),
        body_len: body.len(),
        body_sha256: sha256_hex(&body),
        body: body.clone(),
    });
    let faults = state.faults.lock().unwrap().clone();
    let mut status = StatusCode::OK;
    let mut close = false;
    for fault in faults {
        match fault {
            Fault::Delay(d) => tokio::time::sleep(d).await,
            Fault::DelayExp(mean) => tokio::time::sleep(exp_delay(mean)).await,
            Fault::Status(s) => status = StatusCode::from_u16(s).unwrap(),
            Fault::StatusShare(s, share) if steps_up(index, share) => {
                status = StatusCode::from_u16(s).unwrap();
            }
            Fault::StatusIfHeader(s, name, value)
                if parts.headers.get(name).is_some_and(|v| v == value) =>
            {
                status = StatusCode::from_u16(s).unwrap();
            }
            Fault::StatusShare(..) | Fault::StatusIfHeader(..) | Fault::Refuse => {}
            Fault::Reset => return Err(ResetConnection),
            Fault::Close => close = true,
        }
    }
    let answer = if body.is_empty() {
        Bytes::from(state.name.clone())
    } else {
        body
    };
    let mut response = Response::new(Full::new(answer));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert("x-upstream", HeaderValue::from_str(&state.name).unwrap());
    if close {
        h.insert("connection", HeaderValue::from_static("close"));
    }
    if parts.headers.contains_key("x-want-resp-hop") {
        h.insert("connection", HeaderValue::from_static("x-resp-hop"));
        h.insert("x-resp-hop", HeaderValue::from_static("1"));
    }
    Ok(response)
}

/// Whether request `i` is one of the `share` picked evenly (in parts per
/// million, so that 1/4 and 1/20 are exact).
fn steps_up(i: usize, share: f64) -> bool {
    let ppm = (share * 1e6).round() as u64;
    let i = i as u64;
    (i + 1) * ppm / 1_000_000 > i * ppm / 1_000_000
}

/// An exponentially distributed delay with this mean, capped at 10× it.
fn exp_delay(mean: Duration) -> Duration {
    let mean_ms = mean.as_secs_f64() * 1000.0;
    if mean_ms <= 0.0 {
        return Duration::ZERO;
    }
    let exp = rand_distr::Exp::new(1.0 / mean_ms).unwrap();
    let ms: f64 = rand::thread_rng().sample(exp);
    Duration::from_secs_f64(ms.min(10.0 * mean_ms) / 1000.0)
}

/// A bare HTTP/1.1 server on 127.0.0.1:0 that answers every request with
/// `handle`, for tests whose upstream must do what [`TestUpstream`] does not
/// (answer from a script, read a body frame by frame). It stops accepting
/// when dropped.
pub struct Server {
    /// Its address.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// Starts the server.
    pub async fn spawn<F, Fut>(handle: F) -> Server
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = Arc::new(handle);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handle = handle.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<Incoming>| {
                        let answer = handle(req);
                        async move { Ok::<_, std::convert::Infallible>(answer.await) }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Server { addr, task }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
