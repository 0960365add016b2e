//! gRPC test kit: a small recommendation service on tonic (built by hand:
//! prost-derived messages, no protoc, no generated code), a tonic client,
//! raw h2c calls ([`framed`], [`raw_call`]), a proxy config for h2
//! upstreams and [`split`], the usual backends + proxy set-up.
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tonic::body::Body;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service};
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::NamedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Response, Status, Streaming};
use tonic_prost::ProstCodec;

use super::metrics::Metrics;
use super::proxy::TestProxy;

/// `reco.RecommendRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RecommendRequest {
    #[prost(string, tag = "1")]
    pub user_id: String,
    #[prost(uint32, tag = "2")]
    pub count: u32,
}

/// `reco.RecommendReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RecommendReply {
    #[prost(string, repeated, tag = "1")]
    pub items: Vec<String>,
    #[prost(string, tag = "2")]
    pub model: String,
}

/// The unary method.
pub const RECOMMEND: &str = "/reco.Recommender/Recommend";
/// The server-streaming method.
pub const STREAM: &str = "/reco.Recommender/StreamItems";

/// How a backend behaves, and what it saw.
pub struct Behaviour {
    /// Name put in replies (`model`) and in the `x-backend` header.
    pub name: &'static str,
    /// Out of every 10 calls, this many answer UNAVAILABLE.
    pub unavailable_per_10: usize,
    /// Delay before answering.
    pub delay: Duration,
    /// Calls received.
    pub calls: AtomicUsize,
    /// TCP connections accepted.
    pub accepted: AtomicUsize,
    /// Calls that were cancelled before they finished.
    pub cancelled: AtomicUsize,
    /// What its gRPC health service answers.
    pub serving: std::sync::atomic::AtomicBool,
    /// gRPC health checks answered.
    pub health_checks: AtomicUsize,
}

/// `grpc.health.v1.HealthCheckRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    pub service: String,
}

/// `grpc.health.v1.HealthCheckResponse` (1 = SERVING, 2 = NOT_SERVING).
#[derive(Clone, PartialEq, prost::Message)]
pub struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    pub status: i32,
}

/// A running tonic backend.
pub struct Backend {
    pub addr: SocketAddr,
    pub state: Arc<Behaviour>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Backend {
    /// Starts a backend on a fresh port.
    pub async fn spawn(name: &'static str, unavailable_per_10: usize, delay: Duration) -> Backend {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let state = Arc::new(Behaviour {
            name,
            unavailable_per_10,
            delay,
            calls: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            serving: std::sync::atomic::AtomicBool::new(true),
            health_checks: AtomicUsize::new(0),
        });
        Backend::serve(listener, state)
    }

    /// Starts a backend on `addr` (a restart), retrying the bind briefly
    /// while the old listener goes away.
    pub async fn respawn(addr: SocketAddr, state: Arc<Behaviour>) -> Backend {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::net::TcpListener::bind(addr).await {
                Ok(l) => return Backend::serve(l, state),
                Err(e) if tokio::time::Instant::now() > deadline => panic!("rebind {addr}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn serve(listener: tokio::net::TcpListener, state: Arc<Behaviour>) -> Backend {
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let counting = state.clone();
        let incoming = async_stream(listener, counting);
        let svc = Reco(state.clone());
        let done = tokio::spawn(async move {
            let _ = tonic::transport::Server::builder()
                .add_service(svc.clone())
                .add_service(HealthSvc(svc))
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Backend {
            addr,
            state,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Graceful shutdown (GOAWAY; calls in flight finish); returns at once.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits until the server has drained.
    pub async fn drained(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        if let Some(done) = &self.done {
            done.abort();
        }
    }
}

/// Accepted sockets as a stream, counting them.
fn async_stream(
    listener: tokio::net::TcpListener,
    state: Arc<Behaviour>,
) -> impl tokio_stream::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use tokio_stream::StreamExt;
    tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |s| {
        state.accepted.fetch_add(1, Ordering::SeqCst);
        s
    })
}

use tonic::codegen::tokio_stream;

#[derive(Clone)]
struct Reco(Arc<Behaviour>);

impl NamedService for Reco {
    const NAME: &'static str = "reco.Recommender";
}

/// The same service under the health service's name (tonic routes by it).
#[derive(Clone)]
struct HealthSvc(Reco);

impl NamedService for HealthSvc {
    const NAME: &'static str = "grpc.health.v1.Health";
}

impl Service<http::Request<Body>> for HealthSvc {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        self.0.call(req)
    }
}

/// Counts a call as cancelled unless it finished.
struct CallGuard(Arc<Behaviour>, bool);

impl Drop for CallGuard {
    fn drop(&mut self) {
        if !self.1 {
            self.0.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Reco {
    async fn recommend(
        b: Arc<Behaviour>,
        req: Request<RecommendRequest>,
    ) -> Result<Response<RecommendReply>, Status> {
        let n = b.calls.fetch_add(1, Ordering::SeqCst);
        let mut guard = CallGuard(b.clone(), false);
        tokio::time::sleep(b.delay).await;
        guard.1 = true;
        if n % 10 < b.unavailable_per_10 {
            let mut md = MetadataMap::new();
            md.insert_bin("x-detail-bin", MetadataValue::from_bytes(&[0, 1, 2, 255]));
            return Err(Status::with_metadata(
                Code::Unavailable,
                "canary overloaded",
                md,
            ));
        }
        let echoed = req
            .metadata()
            .get("x-user-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        let r = req.into_inner();
        let mut reply = Response::new(RecommendReply {
            items: (0..r.count)
                .map(|i| format!("{}-item-{i}", r.user_id))
                .collect(),
            model: b.name.to_owned(),
        });
        reply
            .metadata_mut()
            .insert("x-backend", b.name.parse().unwrap());
        reply
            .metadata_mut()
            .insert("x-echo-user", echoed.parse().unwrap());
        Ok(reply)
    }
}

type ItemStream =
    std::pin::Pin<Box<dyn tokio_stream::Stream<Item = Result<RecommendReply, Status>> + Send>>;

impl Service<http::Request<Body>> for Reco {
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let b = self.0.clone();
        match req.uri().path() {
            RECOMMEND => Box::pin(async move {
                let svc = tower::service_fn(move |r| Reco::recommend(b.clone(), r));
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<
                    RecommendReply,
                    RecommendRequest,
                >::default());
                Ok(grpc.unary(svc, req).await)
            }),
            STREAM => Box::pin(async move {
                let svc = tower::service_fn(move |r: Request<RecommendRequest>| {
                    let b = b.clone();
                    async move {
                        b.calls.fetch_add(1, Ordering::SeqCst);
                        let r = r.into_inner();
                        if r.user_id == "slow-stream" {
                            let stream: ItemStream = Box::pin(SlowItems::new(b.clone(), r.count));
                            return Ok::<_, Status>(Response::new(stream));
                        }
                        let fail = r.user_id == "fail-at-end";
                        let name = b.name;
                        let items = (0..r.count).map(move |i| {
                            Ok(RecommendReply {
                                items: vec![format!("item-{i}")],
                                model: name.to_owned(),
                            })
                        });
                        let end = fail.then(|| {
                            let mut md = MetadataMap::new();
                            md.insert_bin("x-detail-bin", MetadataValue::from_bytes(&[9, 8, 7]));
                            Err(Status::with_metadata(Code::DataLoss, "lost the tail", md))
                        });
                        let stream: ItemStream = Box::pin(tokio_stream::iter(items.chain(end)));
                        Ok::<_, Status>(Response::new(stream))
                    }
                });
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<
                    RecommendReply,
                    RecommendRequest,
                >::default());
                Ok(grpc.server_streaming(svc, req).await)
            }),
            "/grpc.health.v1.Health/Check" => Box::pin(async move {
                b.health_checks.fetch_add(1, Ordering::SeqCst);
                let svc = tower::service_fn(move |r: Request<HealthCheckRequest>| {
                    let serving = b.serving.load(Ordering::SeqCst)
                        && r.get_ref().service == "reco.Recommender";
                    async move {
                        Ok::<_, Status>(Response::new(HealthCheckResponse {
                            status: if serving { 1 } else { 2 },
                        }))
                    }
                });
                let mut grpc = tonic::server::Grpc::new(ProstCodec::<
                    HealthCheckResponse,
                    HealthCheckRequest,
                >::default());
                Ok(grpc.unary(svc, req).await)
            }),
            _ => Box::pin(async move { Ok(Status::unimplemented("no such method").into_http()) }),
        }
    }
}

/// The `slow-stream` reply stream: one message every [`SLOW_EVERY`]; counts
/// the call as cancelled when it is dropped before its last message (the
/// client or the proxy reset the stream).
struct SlowItems {
    left: u32,
    sent: u32,
    next: std::pin::Pin<Box<tokio::time::Sleep>>,
    state: Arc<Behaviour>,
}

/// The pace of a `slow-stream` call.
pub const SLOW_EVERY: Duration = Duration::from_millis(100);

impl SlowItems {
    fn new(state: Arc<Behaviour>, count: u32) -> SlowItems {
        SlowItems {
            left: count,
            sent: 0,
            next: Box::pin(tokio::time::sleep(Duration::ZERO)),
            state,
        }
    }
}

impl tokio_stream::Stream for SlowItems {
    type Item = Result<RecommendReply, Status>;

    fn poll_next(self: std::pin::Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        use std::future::Future;
        let this = self.get_mut();
        if this.left == 0 {
            return Poll::Ready(None);
        }
        if this.next.as_mut().poll(cx).is_pending() {
            return Poll::Pending;
        }
        this.next
            .as_mut()
            .reset(tokio::time::Instant::now() + SLOW_EVERY);
        this.left -= 1;
        this.sent += 1;
        Poll::Ready(Some(Ok(RecommendReply {
            items: vec![format!("item-{}", this.sent - 1)],
            model: this.state.name.to_owned(),
        })))
    }
}

impl Drop for SlowItems {
    fn drop(&mut self) {
        if self.left > 0 {
            self.state.cancelled.fetch_add(1, Ordering::SeqCst);
        }
    }
}

impl Backend {
    /// Starts a backend that speaks gRPC over TLS (h2 by ALPN: `acceptor`
    /// must offer it), served by hyper's HTTP/2 server.
    pub async fn spawn_tls(name: &'static str, acceptor: tokio_rustls::TlsAcceptor) -> Backend {
        use hyper_util::rt::{TokioExecutor, TokioIo};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Behaviour {
            name,
            unavailable_per_10: 0,
            delay: Duration::ZERO,
            calls: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
            cancelled: AtomicUsize::new(0),
            serving: std::sync::atomic::AtomicBool::new(true),
            health_checks: AtomicUsize::new(0),
        });
        let served = state.clone();
        let done = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (acceptor, state) = (acceptor.clone(), served.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    // Counted once TLS is up: only TLS clients count.
                    state.accepted.fetch_add(1, Ordering::SeqCst);
                    let svc = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let mut reco = Reco(state.clone());
                            reco.call(req.map(Body::new))
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), svc)
                        .await;
                });
            }
        });
        Backend {
            addr,
            state,
            stop: None,
            done: Some(done),
        }
    }
}

/// A tonic client channel to `addr` (h2c).
pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// One unary Recommend call.
pub async fn recommend(
    ch: &Channel,
    user: &str,
    timeout: Option<Duration>,
) -> Result<Response<RecommendReply>, Status> {
    let mut client = tonic::client::Grpc::new(ch.clone());
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut req = Request::new(RecommendRequest {
        user_id: user.to_owned(),
        count: 3,
    });
    req.metadata_mut()
        .insert("x-user-id", user.parse().unwrap());
    if let Some(t) = timeout {
        req.set_timeout(t);
    }
    client
        .unary(
            req,
            http::uri::PathAndQuery::from_static(RECOMMEND),
            ProstCodec::default(),
        )
        .await
}

/// One server-streaming call; the stream of replies.
pub async fn stream_items(
    ch: &Channel,
    user: &str,
    count: u32,
) -> Result<Response<Streaming<RecommendReply>>, Status> {
    let mut client = tonic::client::Grpc::new(ch.clone());
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let req = Request::new(RecommendRequest {
        user_id: user.to_owned(),
        count,
    });
    client
        .server_streaming(
            req,
            http::uri::PathAndQuery::from_static(STREAM),
            ProstCodec::default(),
        )
        .await
}

/// A gRPC-framed message (no compression).
pub fn framed(msg: &impl prost::Message) -> Vec<u8> {
    let payload = msg.encode_to_vec();
    let mut out = vec![0u8];
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(&payload);
    out
}

/// A raw h2c gRPC call of `msg` to `url` that states its deadline
/// (`grpc-timeout: deadline`, e.g. `"300m"`) but, unlike tonic's client,
/// does not enforce it itself: whatever ends the call is the proxy.
pub fn raw_call(
    url: String,
    deadline: &str,
    msg: &RecommendRequest,
) -> http::Request<super::http::Body> {
    http::Request::post(url)
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", deadline)
        .body(super::http::full(framed(msg)))
        .unwrap()
}

/// `grayproxy_grpc_responses_total` of route `reco`'s `arm` answered with
/// `grpc_status` (`"OK"`, `"UNAVAILABLE"`, ...).
pub fn grpc_responses(m: &Metrics, arm: &str, grpc_status: &str) -> f64 {
    m.value(
        "grayproxy_grpc_responses_total",
        &[
            ("route", "reco"),
            ("arm", arm),
            ("grpc_status", grpc_status),
        ],
    )
}

/// The usual gRPC set-up: a stable backend `v1` answering after
/// `stable_delay`, a canary `v2` answering UNAVAILABLE on
/// `canary_unavailable_per_10` calls in 10, and a proxy over [`config`]
/// with `route_extra`. The backends run as long as they are kept.
pub async fn split(
    stable_delay: Duration,
    canary_unavailable_per_10: usize,
    route_extra: &str,
) -> (Backend, Backend, TestProxy) {
    let stable = Backend::spawn("v1", 0, stable_delay).await;
    let canary = Backend::spawn("v2", canary_unavailable_per_10, Duration::ZERO).await;
    let proxy = TestProxy::start(&config(stable.addr, canary.addr, route_extra)).await;
    (stable, canary, proxy)
}

/// A proxy config: `stable` and `canary` h2 upstreams, one route with
/// `route_extra` lines (after `canary_weight`).
pub fn config(stable: SocketAddr, canary: SocketAddr, route_extra: &str) -> String {
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[admin]\nlisten = \"127.0.0.1:0\"\n\n\
         [upstreams.reco-v1]\nendpoints = [\"{stable}\"]\nprotocol = \"h2\"\n\
         [upstreams.reco-v2]\nendpoints = [\"{canary}\"]\nprotocol = \"h2\"\n\n\
         [[routes]]\nname = \"reco\"\nmatch = {{ path_prefix = \"/reco.\" }}\nstable = \"reco-v1\"\ncanary = \"reco-v2\"\n{route_extra}\n"
    )
}
