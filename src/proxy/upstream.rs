//! Upstream connection pools and failure classification.
//!
//! grayproxy keeps its own small HTTP/1.1 pool per endpoint instead of
//! hyper-util's `Client` because fallback needs to know whether the canary
//! ever received a request: we connect first and only then hand the request
//! to hyper, and `try_send_request` returns a request that was never written.
//! Such a request — body untouched — can go to stable even when it is a POST.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::{is_body_too_large, RequestBody};
use crate::config::types::{Endpoint, Upstream};
use crate::metrics::FailureKind;

/// How long an idle upstream connection is kept (nginx's `keepalive_timeout` is 60 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections kept per endpoint.
const MAX_IDLE_PER_ENDPOINT: usize = 512;
/// Connect timeout, capped by `request_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Why an exchange with an upstream produced no usable response. Classified
/// once, here; the rest of the proxy matches on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Connecting failed: the upstream never saw the request.
    Connect,
    /// No response headers within `request_timeout`.
    Timeout,
    /// The connection broke after the request was (perhaps partly) sent.
    Reset,
    /// A protocol error or anything else.
    Other,
    /// The client's body exceeded `max_body_bytes` while streaming; not the
    /// upstream's fault.
    ClientBodyTooLarge,
    /// The client's body broke off while streaming; not the upstream's fault.
    ClientAborted,
}

impl UpstreamFailure {
    /// The `kind` label, or `None` when the failure was the client's.
    pub fn metric_kind(self) -> Option<FailureKind> {
        match self {
            UpstreamFailure::Connect => Some(FailureKind::Connect),
            UpstreamFailure::Timeout => Some(FailureKind::Timeout),
            UpstreamFailure::Reset => Some(FailureKind::Reset),
            UpstreamFailure::Other => Some(FailureKind::Other),
            UpstreamFailure::ClientBodyTooLarge | UpstreamFailure::ClientAborted => None,
        }
    }

    /// Whether a safe request that failed this way may be retried on stable.
    pub fn fallback_eligible(self) -> bool {
        match self {
            UpstreamFailure::Connect
            | UpstreamFailure::Timeout
            | UpstreamFailure::Reset
            | UpstreamFailure::Other => true,
            UpstreamFailure::ClientBodyTooLarge | UpstreamFailure::ClientAborted => false,
        }
    }

    /// Classifies a hyper error from `send_request`.
    fn classify(err: &hyper::Error) -> UpstreamFailure {
        if is_body_too_large(err) {
            return UpstreamFailure::ClientBodyTooLarge;
        }
        if err.is_body_write_aborted() || is_client_body_error(err) {
            return UpstreamFailure::ClientAborted;
        }
        if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
            return UpstreamFailure::Reset;
        }
        let mut source = err.source();
        while let Some(e) = source {
            if let Some(io) = e.downcast_ref::<io::Error>() {
                return match io.kind() {
                    io::ErrorKind::ConnectionReset
                    | io::ErrorKind::ConnectionAborted
                    | io::ErrorKind::BrokenPipe
                    | io::ErrorKind::UnexpectedEof => UpstreamFailure::Reset,
                    _ => UpstreamFailure::Other,
                };
            }
            source = e.source();
        }
        UpstreamFailure::Other
    }
}

/// True when the error came from reading the client's request body.
fn is_client_body_error(err: &hyper::Error) -> bool {
    err.is_user() && {
        let mut source = err.source();
        let mut found = false;
        while let Some(e) = source {
            if e.downcast_ref::<hyper::Error>().is_some() {
                found = true;
                break;
            }
            source = e.source();
        }
        found
    }
}

/// A failed send. `request` is `Some` when the upstream provably never
/// received it, so it can be sent elsewhere unchanged.
pub struct SendFailure {
    /// What went wrong.
    pub failure: UpstreamFailure,
    /// The untouched request, when it was never written.
    pub request: Option<Request<RequestBody>>,
}

/// The upstream pools of every endpoint, shared across config reloads so
/// that a reload keeps warm connections.
#[derive(Default)]
pub struct Pools {
    by_endpoint: Mutex<HashMap<Endpoint, Arc<EndpointPool>>>,
}

impl Pools {
    /// The balancer for an upstream, reusing existing endpoint pools.
    pub fn upstream(&self, upstream: &Upstream) -> UpstreamPool {
        let mut map = self
            .by_endpoint
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let endpoints = upstream
            .endpoints
            .iter()
            .map(|e| {
                map.entry(e.clone())
                    .or_insert_with(|| Arc::new(EndpointPool::new(e.clone())))
                    .clone()
            })
            .collect();
        UpstreamPool {
            endpoints,
            next: AtomicUsize::new(0),
        }
    }

    /// Drops pools of endpoints no config uses any more.
    pub fn retain(&self, live: &[Endpoint]) {
        let mut map = self
            .by_endpoint
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.retain(|e, _| live.contains(e));
    }
}

/// One upstream: its endpoints, balanced round-robin.
pub struct UpstreamPool {
    endpoints: Vec<Arc<EndpointPool>>,
    next: AtomicUsize,
}

impl UpstreamPool {
    /// Sends a request to the next endpoint (round-robin). Times out after
    /// `timeout` without response headers.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<(Response<Incoming>, PoolSlot), SendFailure> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.endpoints.len().max(1);
        match self.endpoints.get(i) {
            Some(endpoint) => endpoint.clone().send(request, timeout).await,
            None => Err(SendFailure {
                failure: UpstreamFailure::Connect,
                request: Some(request),
            }),
        }
    }
}

struct IdleConn {
    sender: http1::SendRequest<RequestBody>,
    since: Instant,
}

/// Keep-alive connections to one endpoint.
pub struct EndpointPool {
    endpoint: Endpoint,
    authority: String,
    idle: Mutex<Vec<IdleConn>>,
}

/// A connection lent to one exchange; [`PoolSlot::release`] gives it back.
pub struct PoolSlot {
    sender: http1::SendRequest<RequestBody>,
    pool: Arc<EndpointPool>,
}

impl PoolSlot {
    /// Returns the connection to its pool (the response body has ended).
    pub fn release(self) {
        self.pool.put(self.sender);
    }
}

impl EndpointPool {
    fn new(endpoint: Endpoint) -> EndpointPool {
        EndpointPool {
            authority: endpoint.authority(),
            endpoint,
            idle: Mutex::new(Vec::new()),
        }
    }

    fn put(&self, sender: http1::SendRequest<RequestBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_PER_ENDPOINT {
            idle.push(IdleConn {
                sender,
                since: Instant::now(),
            });
        }
    }

    fn take_idle(&self) -> Option<http1::SendRequest<RequestBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if !conn.sender.is_closed() && conn.since.elapsed() < IDLE_TIMEOUT {
                return Some(conn.sender);
            }
        }
        None
    }

    async fn connect(
        &self,
        timeout: Duration,
    ) -> Result<http1::SendRequest<RequestBody>, UpstreamFailure> {
        let connect = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port));
        let stream = match tokio::time::timeout(timeout.min(CONNECT_TIMEOUT), connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(endpoint = %self.authority, error = %e, "upstream connect failed");
                return Err(UpstreamFailure::Connect);
            }
            Err(_) => return Err(UpstreamFailure::Connect),
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::Builder::new()
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|_| UpstreamFailure::Connect)?;
        let authority = self.authority.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(endpoint = %authority, error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    async fn send(
        self: Arc<Self>,
        mut request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<(Response<Incoming>, PoolSlot), SendFailure> {
        let deadline = Instant::now() + timeout;
        // A pooled connection may have been closed by the upstream while
        // idle; hyper then hands the request back unsent and we try a fresh
        // connection. A fresh connection gets one try.
        for reused in [true, false] {
            let mut sender = match self.take_idle().filter(|_| reused) {
                Some(sender) => sender,
                None if reused => continue,
                None => match self
                    .connect(deadline.saturating_duration_since(Instant::now()))
                    .await
                {
                    Ok(sender) => sender,
                    Err(failure) => {
                        return Err(SendFailure {
                            failure,
                            request: Some(request),
                        })
                    }
                },
            };
            // An idle connection is ready; only a fresh one may still be
            // finishing its handshake. Skipping the timeout when it is not
            // needed saves a timer entry per request.
            if !sender.is_ready()
                && !matches!(
                    tokio::time::timeout_at(deadline, sender.ready()).await,
                    Ok(Ok(()))
                )
            {
                continue;
            }
            let sent = tokio::time::timeout_at(deadline, sender.try_send_request(request)).await;
            match sent {
                Ok(Ok(response)) => {
                    return Ok((
                        response,
                        PoolSlot {
                            sender,
                            pool: self.clone(),
                        },
                    ))
                }
                Ok(Err(mut err)) => match err.take_message() {
                    Some(unsent) if reused => request = unsent,
                    unsent => {
                        return Err(SendFailure {
                            failure: if unsent.is_some() {
                                UpstreamFailure::Connect
                            } else {
                                UpstreamFailure::classify(err.error())
                            },
                            request: unsent,
                        })
                    }
                },
                Err(_elapsed) => {
                    return Err(SendFailure {
                        failure: UpstreamFailure::Timeout,
                        request: None,
                    })
                }
            }
        }
        Err(SendFailure {
            failure: UpstreamFailure::Connect,
            request: Some(request),
        })
    }
}
