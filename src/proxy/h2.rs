//! HTTP/2 to an upstream (`protocol = "h2"`): one multiplexed connection
//! per endpoint, shared by every call to it.
//!
//! hyper's HTTP/2 client does the protocol work: it queues streams beyond
//! the server's `max_concurrent_streams`, and keeps connection- and
//! stream-level flow control (a slow reader backs the upstream up instead of
//! filling the proxy's memory). What is left here is the connection's life:
//! - one connection at a time: concurrent first calls wait for the same
//!   handshake instead of opening one connection each;
//! - a GOAWAY from the upstream (a gRPC server restarting) lets the calls in
//!   flight finish on the old connection (hyper keeps driving it) while
//!   hyper closes its request side; the next call sees the sender closed and
//!   opens a new connection;
//! - a dead connection (reset, keep-alive pings unanswered) is replaced the
//!   same way;
//! - a call hyper hands back unsent (the connection closed under it) is
//!   retried once on a fresh connection: the upstream never saw it.

use std::sync::Mutex;
use std::time::Duration;

use http::header::HOST;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::body::RequestBody;
use super::outcome::{SendFailure, UpstreamFailure};
use crate::config::types::Endpoint;

/// How often an idle h2 connection is pinged, and how long a ping may go
/// unanswered before the connection counts as dead.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// The shared connection of one endpoint.
#[derive(Default)]
pub struct H2Conn {
    /// The live connection's sender (cheap to clone: one per call).
    sender: Mutex<Option<http2::SendRequest<RequestBody>>>,
    /// Held while connecting, so that one handshake serves every waiting call.
    connecting: tokio::sync::Mutex<()>,
    /// Connections opened so far (for logs and tests).
    opened: std::sync::atomic::AtomicU64,
}

impl H2Conn {
    /// The live sender, unless the connection is closed (or going away).
    fn live(&self) -> Option<http2::SendRequest<RequestBody>> {
        let guard = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        guard.as_ref().filter(|s| !s.is_closed()).cloned()
    }

    /// The live sender, or a new connection when there is none.
    async fn sender(
        &self,
        endpoint: &Endpoint,
        tls: Option<TlsConnector>,
        timeout: Duration,
    ) -> Result<http2::SendRequest<RequestBody>, UpstreamFailure> {
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let _one_at_a_time = self.connecting.lock().await;
        // Someone else may have connected while this call waited.
        if let Some(s) = self.live() {
            return Ok(s);
        }
        let sender = Box::pin(connect(endpoint, tls, timeout)).await?;
        self.opened
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.sender.lock().unwrap_or_else(|p| p.into_inner()) = Some(sender.clone());
        Ok(sender)
    }

    /// Forgets `sender`'s connection if it is still the current one.
    fn forget(&self, sender: &http2::SendRequest<RequestBody>) {
        let mut guard = self.sender.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_some_and(|s| s.is_closed()) || sender.is_closed() {
            *guard = None;
        }
    }

    /// Sends one call; the response's body streams on the shared connection.
    /// Times out (and resets the stream) after `timeout` without response
    /// headers.
    pub async fn send(
        &self,
        endpoint: &Endpoint,
        tls: Option<TlsConnector>,
        mut request: Request<RequestBody>,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<Response<Incoming>, SendFailure> {
        let deadline = Instant::now() + timeout;
        for last in [false, true] {
            let budget = deadline.saturating_duration_since(Instant::now());
            let mut sender = match self
                .sender(endpoint, tls.clone(), budget.min(connect_timeout))
                .await
            {
                Ok(s) => s,
                Err(failure) => return Err(SendFailure::upstream(failure, Some(request))),
            };
            if !matches!(
                tokio::time::timeout_at(deadline, sender.ready()).await,
                Ok(Ok(()))
            ) {
                self.forget(&sender);
                if last {
                    break;
                }
                continue;
            }
            match tokio::time::timeout_at(deadline, sender.try_send_request(request)).await {
                Ok(Ok(response)) => return Ok(response),
                Ok(Err(mut err)) => match err.take_message() {
                    // Never written: the connection went away under it.
                    Some(unsent) if !last => {
                        self.forget(&sender);
                        request = unsent;
                    }
                    unsent => return Err(SendFailure::sent(err.error(), unsent)),
                },
                // Dropping the response future resets the stream upstream.
                Err(_elapsed) => return Err(SendFailure::timeout()),
            }
        }
        Err(SendFailure::no_connection(request))
    }

    /// How many connections this endpoint has opened.
    pub fn opened(&self) -> u64 {
        self.opened.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// TCP (and TLS with ALPN `h2`), then the HTTP/2 handshake; the connection
/// task runs beside it until the upstream closes it or no sender is left.
async fn connect(
    endpoint: &Endpoint,
    tls: Option<TlsConnector>,
    timeout: Duration,
) -> Result<http2::SendRequest<RequestBody>, UpstreamFailure> {
    let authority = endpoint.authority();
    let connect = TcpStream::connect((endpoint.host.as_str(), endpoint.port));
    let stream = match tokio::time::timeout(timeout, connect).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(endpoint = %authority, error = %e, "upstream h2 connect failed");
            return Err(UpstreamFailure::Connect);
        }
        Err(_) => return Err(UpstreamFailure::Connect),
    };
    let _ = stream.set_nodelay(true);
    if !endpoint.tls {
        return handshake(TokioIo::new(stream), authority, timeout).await;
    }
    let connector = tls.ok_or(UpstreamFailure::Connect)?;
    let name = ServerName::try_from(endpoint.host.clone()).map_err(|_| UpstreamFailure::Connect)?;
    let tls = match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(endpoint = %authority, error = %e, "upstream TLS handshake failed");
            return Err(UpstreamFailure::Connect);
        }
        Err(_) => return Err(UpstreamFailure::Connect),
    };
    if tls.get_ref().1.alpn_protocol() != Some(b"h2") {
        tracing::warn!(endpoint = %authority, "upstream did not agree to h2 over TLS (ALPN)");
        return Err(UpstreamFailure::Connect);
    }
    handshake(TokioIo::new(tls), authority, timeout).await
}

async fn handshake<I>(
    io: I,
    authority: String,
    timeout: Duration,
) -> Result<http2::SendRequest<RequestBody>, UpstreamFailure>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let handshake = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake(io);
    let (sender, conn) = match tokio::time::timeout(timeout, handshake).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            tracing::debug!(endpoint = %authority, error = %e, "upstream h2 handshake failed");
            return Err(UpstreamFailure::Connect);
        }
        Err(_) => return Err(UpstreamFailure::Connect),
    };
    tracing::debug!(endpoint = %authority, "upstream h2 connection open");
    tokio::spawn(async move {
        match conn.await {
            Ok(()) => tracing::debug!(endpoint = %authority, "upstream h2 connection closed"),
            Err(e) => {
                tracing::debug!(endpoint = %authority, error = %e, "upstream h2 connection ended")
            }
        }
    });
    Ok(sender)
}

/// The request in HTTP/2 form: absolute URI (`:scheme`, `:authority` from
/// `Host`), no `Host` header. Returns the `Host` it took off.
pub(super) fn to_h2(
    mut request: Request<RequestBody>,
    endpoint: &Endpoint,
    authority: &str,
) -> (Request<RequestBody>, Option<HeaderValue>) {
    let host = request.headers_mut().remove(HOST);
    let scheme = if endpoint.tls { "https" } else { "http" };
    let target = host
        .as_ref()
        .and_then(|h| h.to_str().ok())
        .unwrap_or(authority);
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    if let Ok(uri) = http::Uri::try_from(format!("{scheme}://{target}{path}")) {
        *request.uri_mut() = uri;
    }
    *request.version_mut() = http::Version::HTTP_2;
    (request, host)
}

/// Undoes [`to_h2`] for a request handed back unsent (it may go to an
/// HTTP/1.1 stable next).
pub(super) fn from_h2(
    mut request: Request<RequestBody>,
    host: Option<HeaderValue>,
) -> Request<RequestBody> {
    if let Some(path) = request.uri().path_and_query().cloned() {
        *request.uri_mut() = http::Uri::from(path);
    }
    if let Some(host) = host {
        request.headers_mut().insert(HOST, host);
    }
    *request.version_mut() = http::Version::HTTP_11;
    request
}
