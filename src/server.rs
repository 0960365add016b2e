//! Accept loops: client limits, HTTP/1.1 + h2c, graceful drain.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::{service_fn, Service};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

use crate::config::types::ServerConfig;
use crate::proxy::body::ResponseBody;
use crate::proxy::forward::ClientInfo;
use crate::proxy::Proxy;
use crate::runtime::Runtime;
use crate::tls::ServerTls;

/// Resolves when `shutdown` flips to true (or its sender is gone).
pub async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// hyper's default HTTP/1 header count limit (`DEFAULT_MAX_HEADERS`).
const HYPER_DEFAULT_MAX_HEADERS: usize = 100;

/// A connection builder with the client-side limits of `server`.
fn builder(server: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
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

/// Serves the proxy on `listener` until `shutdown`, then lets in-flight
/// requests finish for up to `shutdown_grace` (read from the live config).
/// With `tls`, every connection is TLS (ALPN picks h2 or http/1.1).
pub async fn serve_proxy(
    listener: TcpListener,
    runtime: Arc<Runtime>,
    shutdown: watch::Receiver<bool>,
    tls: Option<Arc<ServerTls>>,
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
            let client = ClientInfo {
                ip: peer.ip(),
                proto,
            };
            move |req: Request<Incoming>| {
                let proxy = proxy.clone();
                async move { Ok::<_, Infallible>(proxy.handle(req, client).await) }
            }
        },
        tls,
    )
    .await;
}

/// The future of one request, boxed (see [`boxed_service`]).
type HandlerFuture =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, Infallible>> + Send>>;

/// `handler` as a hyper service whose future is boxed per request.
///
/// hyper's HTTP/1 dispatcher keeps one heap slot sized to the service's
/// future for the connection's whole life, idle or not. The proxy's request
/// future is about 6 KiB, so every idle keep-alive connection held 6 KiB it
/// was not using; boxed, the slot is 16 bytes and the request's state lives
/// only as long as the request.
fn boxed_service<H, F>(
    handler: H,
) -> impl Service<
    Request<Incoming>,
    Response = Response<ResponseBody>,
    Error = Infallible,
    Future = HandlerFuture,
>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    service_fn(move |req| -> HandlerFuture { Box::pin(handler(req)) })
}

/// The generic accept loop behind the proxy and the admin API.
///
/// At most `max_connections` (read at start) are served at once: past that
/// the loop stops accepting until one ends, and new clients wait in the
/// kernel's listen backlog (backpressure instead of an unbounded task pile).
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
    serve_with(listener, shutdown, settings, make_handler, None).await;
}

/// [`serve`], optionally terminating TLS: the handshake runs in the
/// connection's own task, bounded by `header_read_timeout`.
pub async fn serve_with<S, H, F>(
    listener: TcpListener,
    mut shutdown: watch::Receiver<bool>,
    settings: impl Fn() -> ServerConfig,
    make_handler: S,
    tls: Option<Arc<ServerTls>>,
) where
    S: Fn(SocketAddr) -> H,
    H: Fn(Request<Incoming>) -> F + Send + Sync + 'static,
    F: Future<Output = Result<Response<ResponseBody>, Infallible>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let limit = Arc::new(Semaphore::new(settings().max_connections));
    loop {
        let permit = tokio::select! {
            permit = limit.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = shutdown_signalled(&mut shutdown) => break,
        };
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
                let _ = stream.set_nodelay(true);
                let server = settings();
                let service = boxed_service(make_handler(peer));
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
                        let conn = builder(&server).serve_connection(TokioIo::new(stream), service).into_owned();
                        if let Err(e) = watcher.watch(conn).await {
                            tracing::debug!(%peer, error = %e, "client connection ended with an error");
                        }
                        drop(permit);
                    });
                    continue;
                }
                let conn = builder(&server).serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = watcher.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(%peer, error = %e, "client connection ended with an error");
                    }
                    drop(permit);
                });
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
