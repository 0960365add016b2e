//! Accept loops: client limits, HTTP/1.1 + h2c, graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::{service_fn, Service};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use crate::config::types::ServerConfig;
use crate::keepalive::{Activity, InFlight, Limits, TimedIo, TrackedBody};
use crate::proxy::body::ResponseBody;
use crate::proxy::forward::ClientInfo;
use crate::proxy::runtime::Runtime;
use crate::proxy::Proxy;
use crate::shutdown::shutdown_signalled;
use crate::tls::ServerTls;
use drain::{Drain, Watcher};

/// hyper's default HTTP/1 header count limit (`DEFAULT_MAX_HEADERS`).
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// The HTTP/1.1 half of [`builder`], for connections known to speak HTTP/1.
///
/// hyper's own `header_read_timeout` is off: its timer also runs while a
/// keep-alive connection waits for its next request, so idle connections
/// would close after the header timeout. [`TimedIo`] enforces both the
/// keep-alive and the header deadline instead.
fn http1_builder(server: &ServerConfig) -> http1::Builder {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        .max_buf_size(server.max_header_bytes.saturating_mul(2).max(8192));
    if server.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.max_headers(server.max_headers);
    }
    builder
}

/// The h2 half of [`builder`], for connections that sent the h2 preface.
fn http2_builder(server: &ServerConfig) -> http2::Builder<TokioExecutor> {
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// A connection builder with the client-side limits of `server`.
fn builder(server: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(None)
        // hyper answers a bare 431 when the head outgrows its read buffer (min
        // 8 KiB); up to twice the limit the proxy checks it and answers in JSON.
        .max_buf_size(server.max_header_bytes.saturating_mul(2).max(8192));
    // hyper's own limit is 100 on a stack array; setting the same limit
    // explicitly makes it build and copy a 100-slot heap vector twice per
    // request (about 6% of the proxy's instructions), so only set it when
    // it differs.
    if server.max_headers != HYPER_DEFAULT_MAX_HEADERS {
        builder.http1().max_headers(server.max_headers);
    }
    let header_list = u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .max_header_list_size(header_list);
    builder
}

/// The proxy's connection limit: `server.max_connections` permits (read at
/// start, like the listeners).
pub fn connection_limit(runtime: &Runtime) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(
        runtime.snapshot().config.server.max_connections,
    ))
}

/// Serves the proxy on `listener` until `shutdown`, then lets in-flight
/// requests finish for up to `shutdown_grace` (read from the live config).
/// With `tls`, every connection is TLS (ALPN picks h2 or http/1.1).
/// `limit` holds `max_connections` permits, shared by every listener of
/// the proxy (one per worker thread).
pub async fn serve_proxy(
    listener: TcpListener,
    runtime: Arc<Runtime>,
    shutdown: watch::Receiver<bool>,
    tls: Option<Arc<ServerTls>>,
    limit: Arc<Semaphore>,
) {
    let proxy = Proxy::new(runtime.clone());
    let serve_runtime = runtime.clone();
    let proto = if tls.is_some() { "https" } else { "http" };
    serve_with(
        listener,
        shutdown,
        move || serve_runtime.snapshot().config.server.clone(),
        move |peer| {
            let proxy = proxy.clone();
            let client = ClientInfo::new(peer.ip(), proto);
            move |req: Request<Incoming>| {
                let (proxy, client) = (proxy.clone(), client.clone());
                async move { Ok::<_, Infallible>(proxy.handle(req, &client).await) }
            }
        },
        tls,
        limit,
    )
    .await;
}

/// A response as the connection sends it: the body ends its request's
/// [`InFlight`] when it is done.
type Answer = Response<TrackedBody<ResponseBody>>;

/// The future of one request (see [`boxed_service`]): the handler's future,
/// boxed, and the request's [`InFlight`] guard, which its response body
/// takes over.
///
/// A plain `async` block around the handler's future would move that whole
/// future (kilobytes) from the block's captures into its await slot on the
/// first poll; polled through the box, it is copied once, into the box.
pub struct HandlerFuture<F> {
    answer: Pin<Box<F>>,
    request: Option<InFlight>,
}

impl<F> Future for HandlerFuture<F>
where
    F: Future<Output = Result<Response<ResponseBody>, Infallible>>,
{
    type Output = Result<Answer, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let response = match std::task::ready!(self.answer.as_mut().poll(cx)) {
            Ok(response) => response,
            Err(never) => match never {},
        };
        match self.request.take() {
            Some(request) => Poll::Ready(Ok(response.map(|body| TrackedBody::new(body, request)))),
            // Polled again after it completed: hyper does not.
            None => Poll::Pending,
        }
    }
}

/// The read deadlines of a connection of `server`.
fn limits(server: &ServerConfig) -> Limits {
    Limits {
        keepalive: server.keepalive_timeout,
        header_read: server.header_read_timeout,
    }
}

/// `handler` as a hyper service whose future is boxed per request, counting
/// each request in `activity` from its call until its response body is done
/// (for the connection's [`TimedIo`]).
///
/// hyper's HTTP/1 dispatcher keeps one heap slot sized to the service's
/// future for the connection's whole life, idle or not. The proxy's request
/// future is about 6 KiB, so every idle keep-alive connection held 6 KiB it
/// was not using; boxed, the slot is 16 bytes and the request's state lives
/// only as long as the request.
fn boxed_service<H, F>(
    handler: H,
    activity: Arc<Activity>,
) -> impl Service<Request<Incoming>, Response = Answer, Error = Infallible, Future = HandlerFuture<F>>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    service_fn(move |req| {
        let request = Some(InFlight::start(&activity));
        HandlerFuture {
            answer: Box::pin(handler(req)),
            request,
        }
    })
}

/// The connection preface of HTTP/2 with prior knowledge (h2c).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// What a cleartext client's first bytes say it speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sniffed {
    /// Anything that is not the h2 preface.
    Http1,
    /// The whole h2 preface.
    Http2,
    /// A strict prefix of the h2 preface so far (the rest is still in flight).
    Unsure,
    /// Closed (or failed) before sending a byte.
    Gone,
}

/// Peeks at (does not consume) the first bytes the client sent, once there
/// are some.
async fn sniff(stream: &TcpStream) -> Sniffed {
    let mut buf = [0u8; H2_PREFACE.len()];
    match stream.peek(&mut buf).await {
        Ok(0) | Err(_) => Sniffed::Gone,
        Ok(n) if buf[..n] != H2_PREFACE[..n] => Sniffed::Http1,
        Ok(n) if n == H2_PREFACE.len() => Sniffed::Http2,
        Ok(_) => Sniffed::Unsure,
    }
}

/// What a cleartext connection task starts from, boxed (see
/// [`serve_cleartext`]).
struct Accepted<S> {
    stream: TcpStream,
    peer: SocketAddr,
    service: S,
    activity: Arc<Activity>,
    server: ServerConfig,
    watcher: Watcher,
    shutdown: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
}

/// What the first bytes of `accepted` say, once there are some; `Gone` if
/// none came within `keepalive_timeout` or the proxy is shutting down.
async fn first_bytes<S>(accepted: &mut Accepted<S>) -> Sniffed {
    tokio::select! {
        sniffed = tokio::time::timeout(accepted.server.keepalive_timeout, sniff(&accepted.stream)) => {
            sniffed.unwrap_or(Sniffed::Gone)
        }
        () = shutdown_signalled(&mut accepted.shutdown) => Sniffed::Gone,
    }
}

/// One cleartext client connection, HTTP/1.1 or h2c.
///
/// hyper-util's auto builder would sniff the protocol by *reading* the first
/// bytes and replaying them through a `Rewind` wrapper: hyper's first read
/// then returns those few bytes, its next read asks for 8 KiB more on top,
/// and the read buffer doubles to 16 KiB for the connection's whole life.
/// Its connection future also carries the h2 state machine and a builder
/// clone inline, in every HTTP/1 connection's task. Here the protocol is
/// picked by *peeking*, so the plain socket goes to the HTTP/1 (or h2)
/// connection directly, and only the rare connections that need the bigger
/// futures (h2c, a preface split across packets) box them.
///
/// The wait for the first byte is bounded by `keepalive_timeout` (a new
/// connection is idle until then) and ends at shutdown; from there the
/// connection's reads go through [`TimedIo`].
///
/// The start comes boxed because an async fn keeps its arguments for its
/// whole life: by value, the config (256 bytes) and the moved-out socket
/// and service would sit in every idle connection's task. Boxed, they are
/// freed once the connection is built, and the task keeps the connection,
/// the permit and the peer address only.
async fn serve_cleartext<S>(accepted: Box<Accepted<S>>)
where
    S: Service<Request<Incoming>, Response = Answer, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let mut accepted = accepted;
    let sniffed = first_bytes(&mut accepted).await;
    let peer = accepted.peer;
    let (ended, permit) = if sniffed == Sniffed::Http1 {
        let (conn, watcher, permit) = http1_connection(*accepted);
        (watcher.watch(conn).await.map_err(Into::into), permit)
    } else {
        let (conn, permit) = other_connection(*accepted, sniffed);
        let ended = match conn {
            Some(conn) => conn.await,
            None => Ok(()),
        };
        (ended, permit)
    };
    if let Err(e) = ended {
        tracing::debug!(%peer, error = %e, "client connection ended with an error");
    }
    drop(permit);
}

/// A connection's error, as hyper-util's auto connection reports it.
type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A rare connection's future, boxed (h2c, or hyper-util's auto builder).
type BoxedConn = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send>>;

/// The HTTP/1 connection of `accepted` (almost every connection: inline in
/// the task). A plain function, so that the config it borrows dies here: an
/// async fn would keep a borrowed local until its scope ends, across the
/// connection's await.
fn http1_connection<S>(
    accepted: Accepted<S>,
) -> (
    http1::Connection<TokioIo<TimedIo<TcpStream>>, S>,
    Watcher,
    OwnedSemaphorePermit,
)
where
    S: Service<Request<Incoming>, Response = Answer, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let Accepted {
        stream,
        service,
        activity,
        server,
        watcher,
        permit,
        ..
    } = accepted;
    let io = TokioIo::new(TimedIo::new(stream, activity, limits(&server), true));
    (
        http1_builder(&server).serve_connection(io, service),
        watcher,
        permit,
    )
}

/// The rare connections, boxed: h2c, or a preface split across packets
/// (hyper-util's auto builder decides); none when the client is `Gone`
/// (or speaks HTTP/1: that is [`http1_connection`]'s).
fn other_connection<S>(
    accepted: Accepted<S>,
    sniffed: Sniffed,
) -> (Option<BoxedConn>, OwnedSemaphorePermit)
where
    S: Service<Request<Incoming>, Response = Answer, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
{
    let Accepted {
        stream,
        service,
        activity,
        server,
        watcher,
        permit,
        ..
    } = accepted;
    let h2 = match sniffed {
        Sniffed::Gone | Sniffed::Http1 => return (None, permit),
        Sniffed::Http2 => true,
        Sniffed::Unsure => false,
    };
    let io = TokioIo::new(TimedIo::new(stream, activity, limits(&server), !h2));
    let conn: BoxedConn = if h2 {
        let conn = http2_builder(&server).serve_connection(io, service);
        Box::pin(async move { watcher.watch(conn).await.map_err(Into::into) })
    } else {
        let conn = builder(&server).serve_connection(io, service).into_owned();
        Box::pin(watcher.watch(conn))
    };
    (Some(conn), permit)
}

/// The generic accept loop behind the proxy and the admin API.
///
/// At most `max_connections` (read at start) are served at once: past that
/// the loop holds the one client it has just accepted, unserved, until a
/// connection ends, and further clients wait in the kernel's listen backlog
/// (backpressure instead of an unbounded task pile).
pub async fn serve<S, H, F>(
    listener: TcpListener,
    shutdown: watch::Receiver<bool>,
    settings: impl Fn() -> ServerConfig,
    make_handler: S,
) where
    S: Fn(SocketAddr) -> H,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let limit = Arc::new(Semaphore::new(settings().max_connections));
    serve_with(listener, shutdown, settings, make_handler, None, limit).await;
}

/// [`serve`], optionally terminating TLS (the handshake runs in the
/// connection's own task, bounded by `header_read_timeout`), with the
/// connection limit passed in: the proxy's worker threads share one.
pub async fn serve_with<S, H, F>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    settings: impl Fn() -> ServerConfig,
    make_handler: S,
    tls: Option<Arc<ServerTls>>,
    limit: Arc<Semaphore>,
) where
    S: Fn(SocketAddr) -> H,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let graceful = Drain::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                // The permit after the accept, not before: with one listener
                // per worker thread sharing `limit`, a permit freed on one
                // thread must go to a thread that has a client waiting, not
                // to one idle in `accept` while the client sits in the other
                // socket's backlog.
                let permit = tokio::select! {
                    permit = limit.clone().acquire_owned() => match permit {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                    () = shutdown_signalled(&mut shutdown) => break,
                };
                let _ = stream.set_nodelay(true);
                let server = settings();
                let activity = Arc::new(Activity::default());
                let service = boxed_service(make_handler(peer), activity.clone());
                let watcher = graceful.watcher();
                if let Some(tls) = &tls {
                    let acceptor = tls.acceptor(server.tls.as_ref());
                    tokio::spawn(async move {
                        let handshake = tokio::time::timeout(server.header_read_timeout, acceptor.accept(stream));
                        let stream = match handshake.await {
                            Ok(Ok(stream)) => stream,
                            Ok(Err(e)) => {
                                tracing::debug!(%peer, error = %e, "TLS handshake failed");
                                return;
                            }
                            Err(_) => return,
                        };
                        let heads = stream.get_ref().1.alpn_protocol() != Some(&b"h2"[..]);
                        let io = TimedIo::new(stream, activity, limits(&server), heads);
                        let conn = builder(&server).serve_connection(TokioIo::new(io), service).into_owned();
                        if let Err(e) = watcher.watch(conn).await {
                            tracing::debug!(%peer, error = %e, "client connection ended with an error");
                        }
                        drop(permit);
                    });
                    continue;
                }
                tokio::spawn(serve_cleartext(Box::new(Accepted {
                    stream,
                    peer,
                    service,
                    activity,
                    server,
                    watcher,
                    shutdown: shutdown.clone(),
                    permit,
                })));
            }
            () = shutdown_signalled(&mut shutdown) => break,
        }
    }
    drop(listener);
    let grace = settings().shutdown_grace;
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "shutdown grace expired with requests still in flight"
        );
    }
}

mod drain;
#[cfg(test)]
mod tests;
