//! The floor under grayproxy's request path: a bare hyper HTTP/1.1 proxy
//! with nothing but a 90/10 weighted pick and a keep-alive pool — no
//! routing rules, metrics, header rewriting, fallback or judge. The
//! performance bench (`benches/e2e/run.sh`, `BARE=1`) measures it beside
//! nginx and grayproxy, to tell what grayproxy adds from what hyper and
//! tokio cost by themselves.
//!
//!   cargo run --release --example bare_hyper_proxy -- LISTEN STABLE CANARY
#![forbid(unsafe_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Empty};

use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

type Pool = Mutex<Vec<SendRequest<Incoming>>>;

struct Upstreams {
    addrs: [SocketAddr; 2],
    pools: [Pool; 2],
    counter: AtomicUsize,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [listen, stable, canary] = args.as_slice() else {
        return Err("usage: bare_hyper_proxy LISTEN STABLE CANARY".into());
    };
    let upstreams = Arc::new(Upstreams {
        addrs: [stable.parse()?, canary.parse()?],
        pools: [Mutex::new(Vec::new()), Mutex::new(Vec::new())],
        counter: AtomicUsize::new(0),
    });
    let listen: SocketAddr = listen.parse()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let listener = TcpListener::bind(listen).await?;
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                let upstreams = upstreams.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| proxy(upstreams.clone(), req));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
}

type Body = Either<Returning, Empty<Bytes>>;

async fn proxy(
    upstreams: Arc<Upstreams>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    // 90/10 by a counter: nine stable, one canary.
    let arm = usize::from(upstreams.counter.fetch_add(1, Ordering::Relaxed) % 10 == 9);
    if let Some(path) = req.uri().path_and_query().cloned() {
        *req.uri_mut() = Uri::from(path);
    }
    let pooled = upstreams.pools[arm]
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .pop();
    let mut sender = match pooled {
        Some(sender) => sender,
        None => match connect(upstreams.addrs[arm]).await {
            Some(sender) => sender,
            None => return Ok(bad_gateway()),
        },
    };
    match sender.send_request(req).await {
        Ok(response) => Ok(response.map(|inner| {
            Either::Left(Returning {
                inner,
                slot: Some((sender, upstreams, arm)),
            })
        })),
        Err(_) => Ok(bad_gateway()),
    }
}

/// The upstream's body; its connection goes back to the pool at the end.
struct Returning {
    inner: Incoming,
    slot: Option<(SendRequest<Incoming>, Arc<Upstreams>, usize)>,
}

impl http_body::Body for Returning {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let done = match &polled {
            Poll::Ready(None) => true,
            Poll::Ready(Some(Ok(_))) => self.inner.is_end_stream(),
            _ => false,
        };
        if done {
            if let Some((sender, upstreams, arm)) = self.slot.take() {
                upstreams.pools[arm]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(sender);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

async fn connect(addr: SocketAddr) -> Option<SendRequest<Incoming>> {
    let stream = TcpStream::connect(addr).await.ok()?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(conn);
    Some(sender)
}

fn bad_gateway() -> Response<Body> {
    let mut response = Response::new(Either::Right(Empty::new()));
    *response.status_mut() = http::StatusCode::BAD_GATEWAY;
    response
}
