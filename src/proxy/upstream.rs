//! Upstream connection pools: connect, send, idle reuse, endpoint choice.
//!
//! grayproxy keeps its own small HTTP/1.1 pool per endpoint instead of
//! hyper-util's `Client` because fallback needs to know whether the canary
//! ever received a request: we connect first and only then hand the request
//! to hyper, and `try_send_request` returns a request that was never written.
//! Such a request — body untouched — can go to stable even when it is a POST.
//!
//! `protocol = "h2"` endpoints share one multiplexed connection instead
//! (see [`super::h2`]); the pool here picks the endpoint either way.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use http::header::HOST;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::body::RequestBody;
use super::h2::{from_h2, to_h2, H2Conn};
use super::health;
use super::outcome::{Outcome, SendFailure, UpstreamFailure};
use super::outlier::{self, EndpointHealth, Verdict};
use crate::config::types::{Endpoint, OutlierPolicy, Protocol, Upstream};

/// How long an idle upstream connection is kept (nginx's `keepalive_timeout` is 60 s).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections kept per endpoint and pool shard.
const MAX_IDLE_PER_SHARD: usize = 128;

/// Idle connections of an endpoint are kept in this many shards, one per
/// proxy worker thread (threads past the 15th share): a connection goes
/// back to the shard of the thread that used it and is taken from there
/// again, so it stays with the thread whose runtime drives it instead of
/// being handed to a request on another thread (a cross-thread hop on
/// every exchange).
const POOL_SHARDS: usize = 16;

thread_local! {
    static POOL_SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes the calling thread use idle-pool shard `index` (mod the shard
/// count): proxy worker `i` uses `i + 1`, every other thread shard 0.
pub fn use_pool_shard(index: usize) {
    POOL_SHARD.with(|s| s.set(index % POOL_SHARDS));
}

/// HTTP/1.1 over a connected (plain or TLS) stream; the connection task
/// runs beside it until the sender is dropped or the upstream closes.
async fn handshake<I>(
    io: I,
    authority: String,
) -> Result<http1::SendRequest<RequestBody>, UpstreamFailure>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|_| UpstreamFailure::Connect)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(endpoint = %authority, error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

/// The upstream pools of every endpoint, shared across config reloads so
/// that a reload keeps warm connections.
#[derive(Default)]
pub struct Pools {
    by_endpoint: Mutex<HashMap<(Endpoint, Protocol), Arc<EndpointPool>>>,
}

impl Pools {
    /// The balancer for an upstream, reusing existing endpoint pools (and
    /// their health); starts, replaces or stops their health checkers.
    /// `connect_timeout` is `[server] connect_timeout`.
    pub fn upstream(&self, upstream: &Upstream, connect_timeout: Duration) -> UpstreamPool {
        let mut map = self
            .by_endpoint
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let endpoints = upstream
            .endpoints
            .iter()
            .map(|e| {
                let pool = map
                    .entry((e.clone(), upstream.protocol))
                    .or_insert_with(|| Arc::new(EndpointPool::new(e.clone(), upstream.protocol)))
                    .clone();
                // TLS first: the health checker connects with it.
                let new_tls = e.tls && pool.set_tls_ca(upstream.tls_ca.as_deref());
                pool.set_health_check(upstream.health_check.as_ref(), new_tls);
                pool
            })
            .collect();
        UpstreamPool {
            endpoints,
            next: AtomicUsize::new(0),
            policy: upstream.outlier,
            connect_timeout,
        }
    }

    /// Drops pools of endpoints no config uses any more.
    pub fn retain(&self, live: &[Endpoint]) {
        let mut map = self
            .by_endpoint
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        map.retain(|(e, _), _| live.contains(e));
    }
}

/// One upstream: its endpoints, balanced round-robin over those not
/// ejected by outlier detection or failing their health check.
pub struct UpstreamPool {
    endpoints: Vec<Arc<EndpointPool>>,
    next: AtomicUsize,
    policy: OutlierPolicy,
    connect_timeout: Duration,
}

impl UpstreamPool {
    /// Sends a request to the next endpoint (round-robin). Times out after
    /// `timeout` without response headers.
    pub async fn send(
        &self,
        request: Request<RequestBody>,
        timeout: Duration,
    ) -> Result<(Response<Incoming>, PoolSlot), SendFailure> {
        let now = Instant::now();
        let Some((i, endpoint)) = self.pick(now) else {
            return Err(SendFailure::no_connection(request));
        };
        let has_host = request.headers().contains_key(HOST);
        let result = endpoint
            .clone()
            .send(request, has_host, now, timeout, self.connect_timeout)
            .await;
        self.observe(i, &result, Instant::now());
        result
    }

    /// The endpoint the next request goes to (round-robin over those
    /// available at `now`) and its index, for [`UpstreamPool::observe`].
    /// `None` for an upstream without endpoints.
    ///
    /// The request path calls this, [`EndpointPool::send`] and `observe` in
    /// turn rather than [`UpstreamPool::send`]: one `async fn` less between
    /// the request's future and hyper's, so the request (a few hundred
    /// bytes) is moved once less and the future is smaller.
    pub fn pick(&self, now: Instant) -> Option<(usize, &Arc<EndpointPool>)> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let i = outlier::pick(HealthView::of(&self.endpoints).as_slice(), start, now);
        self.endpoints.get(i).map(|e| (i, e))
    }

    /// Records how the exchange with endpoint `i` (from
    /// [`UpstreamPool::pick`]) went, for outlier detection.
    pub fn observe(
        &self,
        i: usize,
        result: &Result<(Response<Incoming>, PoolSlot), SendFailure>,
        now: Instant,
    ) {
        let outcome = match result {
            Ok((response, _)) => Outcome::Answered(response.status()),
            Err(f) => Outcome::NoAnswer(f.error),
        };
        let verdict = if outcome.client_body_broke() {
            Verdict::Neutral
        } else if outcome.is_failure() {
            Verdict::Failure
        } else {
            Verdict::Success
        };
        let health = HealthView::of(&self.endpoints);
        outlier::observe(health.as_slice(), i, verdict, &self.policy, now);
    }

    /// `[server] connect_timeout`, as this upstream was built with.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Connections opened to each endpoint so far (h2 endpoints; for tests).
    pub fn h2_connections_opened(&self) -> u64 {
        self.endpoints.iter().map(|e| e.h2.opened()).sum()
    }

    /// Health of each endpoint, in config order (for tests and status).
    pub fn health(&self) -> Vec<Arc<EndpointHealth>> {
        self.endpoints.iter().map(|e| e.health.clone()).collect()
    }
}

/// Upstreams with at most this many endpoints list their health on the stack.
const INLINE_ENDPOINTS: usize = 4;

/// The endpoints' health as `outlier` takes it (a slice of references),
/// without a heap allocation per request for the usual few endpoints.
enum HealthView<'a> {
    Inline([&'a EndpointHealth; INLINE_ENDPOINTS], usize),
    Heap(Vec<&'a EndpointHealth>),
}

impl<'a> HealthView<'a> {
    fn of(endpoints: &'a [Arc<EndpointPool>]) -> HealthView<'a> {
        match endpoints.first() {
            Some(first) if endpoints.len() <= INLINE_ENDPOINTS => {
                let mut inline = [&*first.health; INLINE_ENDPOINTS];
                for (slot, e) in inline.iter_mut().zip(endpoints) {
                    *slot = &*e.health;
                }
                HealthView::Inline(inline, endpoints.len())
            }
            _ => HealthView::Heap(endpoints.iter().map(|e| &*e.health).collect()),
        }
    }

    fn as_slice(&self) -> &[&'a EndpointHealth] {
        match self {
            HealthView::Inline(inline, n) => inline.get(..*n).unwrap_or(&[]),
            HealthView::Heap(v) => v,
        }
    }
}

struct IdleConn {
    conn: Lent,
    since: Instant,
}

/// A pooled connection with its response-header timer.
///
/// The timer lives as long as the connection and is only moved forward for
/// each request: tokio extends a registered timer's deadline with one
/// atomic update, where a timer per request (`tokio::time::timeout`) is
/// inserted into and removed from the timer wheel under its lock every
/// time. When a deadline passes unused (the connection idle, or its last
/// request answered), the wheel drops the entry and the next request
/// registers it again: once per `request_timeout` per connection at most.
struct Lent {
    sender: http1::SendRequest<RequestBody>,
    timer: Pin<Box<Sleep>>,
}

impl Lent {
    fn new(sender: http1::SendRequest<RequestBody>, deadline: Instant) -> Lent {
        Lent {
            sender,
            timer: Box::pin(tokio::time::sleep_until(deadline)),
        }
    }
}

/// Keep-alive connections to one endpoint.
pub struct EndpointPool {
    endpoint: Endpoint,
    protocol: Protocol,
    /// The shared connection, for `protocol = "h2"`.
    h2: H2Conn,
    authority: String,
    /// `authority` as a `Host` value, for requests that came without one.
    host: Option<HeaderValue>,
    idle: [Mutex<Vec<IdleConn>>; POOL_SHARDS],
    health: Arc<EndpointHealth>,
    checker: Mutex<Option<health::Checker>>,
    /// For `https://` endpoints: the CA it was built for and the connector
    /// (`None` when the CA file could not be loaded; connects then fail).
    tls: Mutex<Option<(Option<PathBuf>, Option<TlsConnector>)>>,
}

/// A connection lent to one exchange; [`PoolSlot::release`] gives it back.
/// Empty for h2, whose connection is shared, not lent.
pub struct PoolSlot(Option<(Lent, Arc<EndpointPool>)>);

impl PoolSlot {
    /// Returns the connection to its pool (the response body has ended).
    pub fn release(self) {
        if let Some((conn, pool)) = self.0 {
            pool.put(conn);
        }
    }
}

impl EndpointPool {
    fn new(endpoint: Endpoint, protocol: Protocol) -> EndpointPool {
        EndpointPool {
            protocol,
            h2: H2Conn::default(),
            authority: endpoint.authority(),
            host: HeaderValue::from_str(&endpoint.authority()).ok(),
            endpoint,
            idle: std::array::from_fn(|_| Mutex::new(Vec::new())),
            health: Arc::new(EndpointHealth::default()),
            checker: Mutex::new(None),
            tls: Mutex::new(None),
        }
    }

    /// Builds the TLS connector (system roots, or `ca`) unless it is
    /// current; whether it built one.
    fn set_tls_ca(&self, ca: Option<&Path>) -> bool {
        let mut tls = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        if tls
            .as_ref()
            .is_some_and(|(built_for, _)| built_for.as_deref() == ca)
        {
            return false;
        }
        let alpn: &[u8] = match self.protocol {
            Protocol::Http1 => b"http/1.1",
            Protocol::H2 => b"h2",
        };
        let connector = crate::tls::connector(ca, alpn)
            .map_err(|e| tracing::error!(endpoint = %self.authority, error = %e, "upstream TLS setup failed"))
            .ok();
        *tls = Some((ca.map(Path::to_path_buf), connector));
        true
    }

    /// The `https://` endpoint's TLS connector, if built.
    fn tls_connector(&self) -> Option<TlsConnector> {
        let tls = self.tls.lock().unwrap_or_else(|p| p.into_inner());
        tls.as_ref().and_then(|(_, c)| c.clone())
    }

    /// Starts, replaces or stops the active health check (restarted when
    /// `new_tls`: it connects with the old connector otherwise).
    fn set_health_check(&self, check: Option<&crate::config::types::HealthCheck>, new_tls: bool) {
        let mut checker = self.checker.lock().unwrap_or_else(|p| p.into_inner());
        if !new_tls && checker.as_ref().map(|c| &c.check) == check {
            return;
        }
        *checker = check.and_then(|c| {
            let tls = self.tls_connector();
            health::spawn(self.endpoint.clone(), c.clone(), tls, &self.health)
        });
        if checker.is_none() {
            self.health.set_check_ok(true);
        }
    }

    fn put(&self, conn: Lent) {
        if conn.sender.is_closed() {
            return;
        }
        let mut idle = self.shard().lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE_PER_SHARD {
            idle.push(IdleConn {
                conn,
                since: Instant::now(),
            });
        }
    }

    /// The calling thread's shard of the idle connections.
    fn shard(&self) -> &Mutex<Vec<IdleConn>> {
        &self.idle[POOL_SHARD.with(std::cell::Cell::get)]
    }

    fn take_idle(&self, now: Instant) -> Option<Lent> {
        let mut idle = self.shard().lock().unwrap_or_else(|p| p.into_inner());
        while let Some(idle) = idle.pop() {
            if !idle.conn.sender.is_closed()
                && now.saturating_duration_since(idle.since) < IDLE_TIMEOUT
            {
                return Some(idle.conn);
            }
        }
        None
    }

    async fn connect(
        &self,
        timeout: Duration,
    ) -> Result<http1::SendRequest<RequestBody>, UpstreamFailure> {
        let connect = TcpStream::connect((self.endpoint.host.as_str(), self.endpoint.port));
        let stream = match tokio::time::timeout(timeout, connect).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => {
                tracing::debug!(endpoint = %self.authority, error = %e, "upstream connect failed");
                return Err(UpstreamFailure::Connect);
            }
            Err(_) => return Err(UpstreamFailure::Connect),
        };
        let _ = stream.set_nodelay(true);
        if !self.endpoint.tls {
            return handshake(TokioIo::new(stream), self.authority.clone()).await;
        }
        let connector = self.tls_connector().ok_or(UpstreamFailure::Connect)?;
        let name = ServerName::try_from(self.endpoint.host.clone())
            .map_err(|_| UpstreamFailure::Connect)?;
        let tls = match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(endpoint = %self.authority, error = %e, "upstream TLS handshake failed");
                return Err(UpstreamFailure::Connect);
            }
            Err(_) => return Err(UpstreamFailure::Connect),
        };
        handshake(TokioIo::new(tls), self.authority.clone()).await
    }

    /// Sends `request` (which has a `Host` header if `has_host`) over a
    /// pooled (else a new) connection; no response headers by
    /// `now + timeout` is a timeout.
    pub async fn send(
        self: Arc<Self>,
        mut request: Request<RequestBody>,
        has_host: bool,
        now: Instant,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<(Response<Incoming>, PoolSlot), SendFailure> {
        if self.protocol == Protocol::H2 {
            // Boxed: the h2 exchange's state machine would otherwise sit
            // (unused) inside every HTTP/1 request's future.
            return Box::pin(self.send_h2(request, timeout, connect_timeout)).await;
        }
        let deadline = now + timeout;
        // HTTP/1.1 requires Host (RFC 9112 §3.2): a client that sent none
        // (HTTP/1.0) gets this endpoint's authority, as nginx does. Taken off
        // again when the request comes back unsent, so that the endpoint it
        // goes to next (fallback to stable) can put its own.
        let added_host = !has_host;
        if added_host {
            if let Some(host) = &self.host {
                request.headers_mut().insert(HOST, host.clone());
            }
        }
        let hand_back = |mut request: Request<RequestBody>| {
            if added_host {
                request.headers_mut().remove(HOST);
            }
            request
        };
        // A pooled connection may have been closed by the upstream while
        // idle; hyper then hands the request back unsent and we try a fresh
        // connection. A fresh connection gets one try.
        for reused in [true, false] {
            let mut conn = match self.take_idle(now).filter(|_| reused) {
                Some(mut conn) => {
                    conn.timer.as_mut().reset(deadline);
                    conn
                }
                None if reused => continue,
                // Boxed: connecting (TCP, TLS, handshake) is a ~2.5 KB state
                // machine that would otherwise sit inside every request's
                // future and be copied with it, though most requests take a
                // pooled connection.
                None => match Box::pin(
                    self.connect(
                        deadline
                            .saturating_duration_since(Instant::now())
                            .min(connect_timeout),
                    ),
                )
                .await
                {
                    Ok(sender) => Lent::new(sender, deadline),
                    Err(failure) => {
                        return Err(SendFailure::upstream(failure, Some(hand_back(request))))
                    }
                },
            };
            // An idle connection is ready; only a fresh one may still be
            // finishing its handshake.
            if !conn.sender.is_ready() {
                let ready = tokio::select! {
                    biased;
                    ready = conn.sender.ready() => ready.is_ok(),
                    () = conn.timer.as_mut() => false,
                };
                if !ready {
                    continue;
                }
            }
            // Polled by hand, pinned where it stands: `select!` moves the
            // future into its own tuple first, and a helper `async fn` would
            // hold it twice (as its argument and pinned).
            let mut send = std::pin::pin!(conn.sender.try_send_request(request));
            let timer = &mut conn.timer;
            let sent = std::future::poll_fn(|cx| match send.as_mut().poll(cx) {
                Poll::Ready(sent) => Poll::Ready(Some(sent)),
                Poll::Pending => timer.as_mut().poll(cx).map(|()| None),
            })
            .await;
            match sent {
                Some(Ok(response)) => return Ok((response, PoolSlot(Some((conn, self.clone()))))),
                Some(Err(mut err)) => match err.take_message() {
                    Some(unsent) if reused => request = unsent,
                    unsent => return Err(SendFailure::sent(err.error(), unsent.map(hand_back))),
                },
                None => return Err(SendFailure::timeout()),
            }
        }
        Err(SendFailure::no_connection(hand_back(request)))
    }
}

impl EndpointPool {
    /// Sends over the endpoint's shared h2 connection. The request goes out
    /// with `:scheme` and `:authority` (the client's `Host`, else the
    /// endpoint's); one handed back unsent is restored to how it came.
    async fn send_h2(
        &self,
        request: Request<RequestBody>,
        timeout: Duration,
        connect_timeout: Duration,
    ) -> Result<(Response<Incoming>, PoolSlot), SendFailure> {
        let (request, host) = to_h2(request, &self.endpoint, &self.authority);
        let tls = if self.endpoint.tls {
            self.tls_connector()
        } else {
            None
        };
        let sent = self
            .h2
            .send(&self.endpoint, tls, request, timeout, connect_timeout)
            .await;
        match sent {
            Ok(response) => Ok((response, PoolSlot(None))),
            Err(mut failure) => {
                failure.request = failure.request.map(|r| from_h2(r, host));
                Err(failure)
            }
        }
    }
}
