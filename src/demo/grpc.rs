//! `demo --grpc`: the same demo over gRPC. The two backends serve
//! `reco.Recommender/Recommend` over h2c and the built-in traffic makes gRPC
//! calls. Messages are framed and encoded by hand (a few protobuf fields),
//! so the binary carries no gRPC stack for a demo.
//!
//! A canary fault is what makes gRPC different: an HTTP 200 whose trailers
//! say `grpc-status: 14` (UNAVAILABLE). Only a proxy that reads the status
//! sees the canary fail.
//!
//! The messages (field numbers as in `docs/demo.md`'s `reco.proto`):
//! `RecommendRequest { string user_id = 1; uint32 count = 2; }` and
//! `RecommendReply { repeated string items = 1; string model = 2; }`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderValue, Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::demo::backend::{self, BackendSpec, DemoBackend};
use crate::demo::traffic::{self, TrafficStats, REQUEST_TIMEOUT};
use crate::grpc::{trailers_only, GrpcCode, GRPC_MESSAGE, GRPC_STATUS};

/// The demo's gRPC method.
pub const METHOD: &str = "/reco.Recommender/Recommend";
/// The largest request message a demo backend reads.
const MAX_REQUEST: usize = 64 * 1024;

/// The demo config for `grpc`: both upstreams speak h2 and the route
/// matches the gRPC service's paths. `http` is the HTTP demo's config.
pub fn config(grpc: bool, http: String) -> String {
    if !grpc {
        return http;
    }
    let mut out = String::with_capacity(http.len() + 64);
    for line in http.lines() {
        out.push_str(&line.replace(
            r#"path_prefix = "/api/recommend""#,
            r#"path_prefix = "/reco.Recommender/""#,
        ));
        out.push('\n');
        if line.starts_with("endpoints = [") {
            out.push_str("protocol = \"h2\"\n");
        }
    }
    out
}

/// What to try against the proxy, for the banner.
pub fn hint(grpc: bool, proxy: SocketAddr) -> String {
    if grpc {
        format!(
            "gRPC over h2c: {METHOD}; try: grpcurl -plaintext -proto reco.proto \
             -H 'x-user-id: alice' -d '{{\"user_id\":\"alice\"}}' {proxy} reco.Recommender/Recommend"
        )
    } else {
        format!("try: curl -H 'x-user-id: alice' http://{proxy}/api/recommend")
    }
}

/// Starts a demo backend: the HTTP one, or for `grpc` the gRPC one.
pub async fn spawn_backend(
    grpc: bool,
    spec: BackendSpec,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<DemoBackend> {
    if !grpc {
        return backend::spawn(spec, shutdown).await;
    }
    let requests = Arc::new(AtomicU64::new(0));
    let (spec, count) = (Arc::new(spec), requests.clone());
    let addr = backend::accept_loop(shutdown, move |stream| {
        let _ = stream.set_nodelay(true);
        let (spec, count) = (spec.clone(), count.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                count.fetch_add(1, Ordering::Relaxed);
                answer(spec.clone(), req)
            });
            let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    })
    .await?;
    Ok(DemoBackend { addr, requests })
}

/// One call: read the request message, wait the drawn service time, then
/// the reply message and OK trailers, or (a fault) UNAVAILABLE trailers.
async fn answer(
    spec: Arc<BackendSpec>,
    req: Request<Incoming>,
) -> Result<Response<Reply>, Infallible> {
    if req.uri().path() != METHOD {
        return Ok(Reply::trailers_only(
            GrpcCode::Unimplemented,
            "no such method; the demo serves /reco.Recommender/Recommend",
        ));
    }
    let body = match Limited::new(req.into_body(), MAX_REQUEST).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(Reply::trailers_only(
                GrpcCode::Internal,
                "unreadable request",
            ))
        }
    };
    let Some(user) = unframe(&body).and_then(user_id) else {
        return Ok(Reply::trailers_only(
            GrpcCode::InvalidArgument,
            "expected one RecommendRequest message",
        ));
    };
    let (delay, fail) = spec.draw();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let mut trailers = HeaderMap::with_capacity(2);
    let message = if fail {
        trailers.insert(GRPC_STATUS, HeaderValue::from_static("14"));
        trailers.insert(GRPC_MESSAGE, HeaderValue::from_static("demo fault"));
        None
    } else {
        trailers.insert(GRPC_STATUS, HeaderValue::from_static("0"));
        Some(frame(&reply_message(spec.version, &user)))
    };
    let mut resp = Response::new(Reply {
        message,
        trailers: Some(trailers),
    });
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    Ok(resp)
}

/// A unary gRPC response body: at most one message, then the trailers.
pub struct Reply {
    message: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl Reply {
    /// A trailers-only answer (the status in the headers, no body).
    fn trailers_only(code: GrpcCode, message: &'static str) -> Response<Reply> {
        let mut resp = Response::new(Reply {
            message: None,
            trailers: None,
        });
        *resp.headers_mut() = trailers_only(code, message);
        resp
    }
}

impl Body for Reply {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if let Some(m) = this.message.take() {
            return Poll::Ready(Some(Ok(Frame::data(m))));
        }
        Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.message.is_none() && self.trailers.is_none()
    }
}

/// Sends gRPC calls (`grpc`) or HTTP requests through the proxy, `rps` a
/// second, until `stop` turns true.
pub fn spawn_traffic(
    grpc: bool,
    proxy: SocketAddr,
    rps: f64,
    stats: Arc<TrafficStats>,
    stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    if !grpc {
        return tokio::spawn(traffic::run(proxy, rps, stats, stop));
    }
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    // One h2 connection carries every call, as a gRPC channel does.
    let client: Client<HttpConnector, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(connector);
    tokio::spawn(async move {
        let counted = stats.clone();
        traffic::pace(rps, &counted, stop, move |user| {
            let (client, stats) = (client.clone(), stats.clone());
            async move { call(&client, proxy, user, &stats).await }
        })
        .await;
    })
}

/// One Recommend call; counts its outcome by `grpc-status` (an answer
/// without one, or none at all, is a failed call).
async fn call(
    client: &Client<HttpConnector, Full<Bytes>>,
    proxy: SocketAddr,
    user: u32,
    stats: &TrafficStats,
) {
    stats.sent.fetch_add(1, Ordering::Relaxed);
    let user = format!("user-{user}");
    let req = Request::post(format!("http://{proxy}{METHOD}"))
        .header(header::CONTENT_TYPE, "application/grpc")
        .header(header::TE, "trailers")
        .header("grpc-timeout", "10S")
        .header("x-user-id", &user)
        .body(Full::new(frame(&request_message(&user, 3))));
    let Ok(req) = req else {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let resp = client.request(req).await.ok()?;
        let fallback = resp.headers().contains_key("x-grayproxy-fallback");
        let in_headers = GrpcCode::in_headers(resp.headers());
        let body = resp.into_body().collect().await.ok()?;
        let code = in_headers.or_else(|| body.trailers().and_then(GrpcCode::in_headers));
        Some((code?, fallback))
    })
    .await;
    match answer {
        Ok(Some((code, fallback))) => {
            if fallback {
                stats.fallbacks.fetch_add(1, Ordering::Relaxed);
            }
            let counter = if code == GrpcCode::Ok {
                &stats.ok
            } else {
                &stats.errors
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
        Ok(None) | Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A gRPC length-prefixed message: uncompressed flag, 4-byte length, payload.
pub fn frame(payload: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(5 + payload.len());
    b.put_u8(0);
    b.put_u32(payload.len() as u32);
    b.put_slice(payload);
    b.freeze()
}

/// The payload of a body holding exactly one uncompressed message.
fn unframe(body: &[u8]) -> Option<&[u8]> {
    let (&flag, rest) = body.split_first()?;
    let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
    (flag == 0 && rest.len() == 4 + len).then(|| &rest[4..])
}

fn put_varint(b: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        b.push((v as u8) | 0x80);
        v >>= 7;
    }
    b.push(v as u8);
}

fn put_string(b: &mut Vec<u8>, field: u64, s: &str) {
    put_varint(b, field << 3 | 2);
    put_varint(b, s.len() as u64);
    b.extend_from_slice(s.as_bytes());
}

/// `RecommendRequest { user_id, count }`, encoded.
pub fn request_message(user: &str, count: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(user.len() + 8);
    put_string(&mut b, 1, user);
    put_varint(&mut b, 2 << 3);
    put_varint(&mut b, u64::from(count));
    b
}

/// `RecommendReply { items, model }`: the user's products, then the version.
fn reply_message(version: &str, user: &str) -> Vec<u8> {
    let mut b = Vec::with_capacity(96);
    for (product, _) in backend::picks(user) {
        put_string(&mut b, 1, product);
    }
    put_string(&mut b, 2, version);
    b
}

/// Reads a varint at the front of `b`; the value and the rest.
fn varint(b: &[u8]) -> Option<(u64, &[u8])> {
    let mut v = 0u64;
    for (i, &byte) in b.iter().enumerate().take(10) {
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Some((v, &b[i + 1..]));
        }
    }
    None
}

/// `user_id` (field 1) of an encoded `RecommendRequest`; `None` when the
/// message is malformed or the field is not UTF-8. Unknown fields are skipped.
fn user_id(mut msg: &[u8]) -> Option<String> {
    let mut user = String::new();
    while !msg.is_empty() {
        let (key, rest) = varint(msg)?;
        msg = match key & 7 {
            0 => varint(rest)?.1,
            1 => rest.get(8..)?,
            5 => rest.get(4..)?,
            2 => {
                let (len, rest) = varint(rest)?;
                let len = usize::try_from(len).ok()?;
                let value = rest.get(..len)?;
                if key >> 3 == 1 {
                    user = std::str::from_utf8(value).ok()?.to_owned();
                }
                &rest[len..]
            }
            _ => return None,
        };
    }
    Some(user)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::types::Protocol;

    #[test]
    fn request_round_trips_and_bad_messages_are_refused() {
        let framed = frame(&request_message("alice", 3));
        assert_eq!(user_id(unframe(&framed).unwrap()).as_deref(), Some("alice"));
        // A long user id needs a two-byte length varint.
        let long = "u".repeat(300);
        assert_eq!(
            user_id(&request_message(&long, 1)).as_deref(),
            Some(long.as_str())
        );
        // Empty message: the default (empty) user id.
        assert_eq!(user_id(&[]).as_deref(), Some(""));
        // A length past the end, a truncated varint, a bad wire type, bad UTF-8.
        assert_eq!(user_id(&[0x0a, 9, b'a']), None);
        assert_eq!(user_id(&[0x10, 0x80]), None);
        assert_eq!(user_id(&[0x0b]), None);
        assert_eq!(user_id(&[0x0a, 1, 0xff]), None);
        // Framing: compressed flag, wrong length, too short.
        assert_eq!(unframe(&[1, 0, 0, 0, 0]), None);
        assert_eq!(unframe(&[0, 0, 0, 0, 2, 1]), None);
        assert_eq!(unframe(&[0, 0]), None);
        assert_eq!(unframe(&[0, 0, 0, 0, 0]), Some(&[][..]));
    }

    #[test]
    fn reply_carries_the_users_picks_and_the_version() {
        let msg = reply_message("reco-v2", "bob");
        let picks = backend::picks("bob");
        // Walk the strings: three items (field 1), then the model (field 2).
        let mut rest = &msg[..];
        let mut fields = Vec::new();
        while !rest.is_empty() {
            let (key, r) = varint(rest).unwrap();
            let (len, r) = varint(r).unwrap();
            let len = len as usize;
            fields.push((key >> 3, std::str::from_utf8(&r[..len]).unwrap()));
            rest = &r[len..];
        }
        let want: Vec<_> = picks
            .iter()
            .map(|(p, _)| (1, *p))
            .chain([(2, "reco-v2")])
            .collect();
        assert_eq!(fields, want);
    }

    #[test]
    fn grpc_config_uses_h2_upstreams_and_the_service_path() {
        let fake = |port| DemoBackend {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            requests: Arc::default(),
        };
        let http = super::super::config_text(&fake(18081), &fake(18082), &Default::default());
        assert_eq!(config(false, http.clone()), http);
        let dir = super::super::temp_dir().unwrap();
        std::fs::write(dir.join("admin.token"), "t\n").unwrap();
        let path = dir.join("grayproxy.toml");
        std::fs::write(&path, config(true, http)).unwrap();
        let loaded = crate::config::load(&path).expect("the gRPC demo config must be valid");
        let _ = std::fs::remove_dir_all(&dir);
        let ups = &loaded.config.upstreams;
        assert_eq!(ups.len(), 2);
        assert!(ups.iter().all(|u| u.protocol == Protocol::H2), "{ups:?}");
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    }
}
