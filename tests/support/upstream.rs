//! A real HTTP/1.1 upstream on port 0 that records every request it receives
//! and can be scripted to misbehave.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// What an upstream does instead of answering 200 at once. Several faults
/// combine: `Delay` first, then `Status` or `Reset`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (body still echoes).
    Status(u16),
    /// Wait this long (after reading the request) before answering.
    Delay(Duration),
    /// Read the request, then drop the connection without an answer.
    Reset,
    /// Stop listening: connections are refused (see [`TestUpstream::refuse`]).
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

#[derive(Default)]
struct State {
    /// Requests whose head arrived (counted before any delay).
    arrived: AtomicUsize,
    /// Requests whose body was read completely.
    seen: Mutex<Vec<Seen>>,
    faults: Mutex<Vec<Fault>>,
}

/// A scriptable upstream server.
pub struct TestUpstream {
    /// Its address.
    pub addr: SocketAddr,
    /// Its name: the body of answers to body-less requests.
    pub name: String,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

/// Hex sha256 of some bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

impl TestUpstream {
    /// Starts an upstream on 127.0.0.1:0 that answers 200 at once.
    pub async fn spawn(name: &str) -> TestUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let accept_state = state.clone();
        let label: Arc<str> = name.into();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = accept_state.clone();
                let label = label.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, state.clone(), label.clone()));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestUpstream {
            addr,
            name: name.to_owned(),
            state,
            accept,
        }
    }

    /// Adds a fault to every following request (builder style).
    pub fn with(self, fault: Fault) -> TestUpstream {
        if fault == Fault::Refuse {
            self.accept.abort();
        }
        self.state.faults.lock().unwrap().push(fault);
        self
    }

    /// Replaces the faults of following requests.
    pub fn set_faults(&self, faults: Vec<Fault>) {
        *self.state.faults.lock().unwrap() = faults;
    }

    /// Stops listening and waits until the port refuses connections.
    pub async fn refuse(self) -> TestUpstream {
        let this = self.with(Fault::Refuse);
        let addr = this.addr;
        super::eventually(
            Duration::from_secs(5),
            "upstream port closed",
            || async move { tokio::net::TcpStream::connect(addr).await.is_err() },
        )
        .await;
        this
    }

    /// Requests whose head arrived so far (before any delay).
    pub fn arrived(&self) -> usize {
        self.state.arrived.load(Ordering::SeqCst)
    }

    /// Requests received completely so far.
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
        self.accept.abort();
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
    name: Arc<str>,
) -> Result<Response<Full<Bytes>>, ResetConnection> {
    state.arrived.fetch_add(1, Ordering::SeqCst);
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
    });
    let faults = state.faults.lock().unwrap().clone();
    let mut status = StatusCode::OK;
    let mut close = false;
    for fault in faults {
        match fault {
            Fault::Delay(d) => tokio::time::sleep(d).await,
            Fault::Status(s) => status = StatusCode::from_u16(s).unwrap(),
            Fault::Reset => return Err(ResetConnection),
            Fault::Refuse => {}
            Fault::Close => close = true,
        }
    }
    let answer = if body.is_empty() {
        Bytes::from(name.as_bytes().to_vec())
    } else {
        body
    };
    let mut response = Response::new(Full::new(answer));
    *response.status_mut() = status;
    let h = response.headers_mut();
    h.insert("x-upstream", HeaderValue::from_str(&name).unwrap());
    if close {
        h.insert("connection", HeaderValue::from_static("close"));
    }
    if parts.headers.contains_key("x-want-resp-hop") {
        h.insert("connection", HeaderValue::from_static("x-resp-hop"));
        h.insert("x-resp-hop", HeaderValue::from_static("1"));
    }
    Ok(response)
}
