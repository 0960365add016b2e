//! Shadow traffic for requests with a body, over real sockets: the body
//! streams to stable as before (the user never waits for the canary), the
//! canary gets an identical copy, and a body over the copy's cap is not
//! mirrored but counted as skipped with its reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use support::{chunked, client, config, eventually, full, send, BoxError, Server, TestProxy};
use tokio::sync::mpsc;

/// A request a [`BodyBackend`] received, with its whole body.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    shadow: bool,
    body: Bytes,
}

/// A backend that reads the request body frame by frame (recording each
/// byte as it arrives) and answers `{"version": .., "len": .., "sum": ..}`.
struct BodyBackend {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    /// Bytes of request bodies seen so far, including unfinished ones.
    streamed: Arc<Mutex<usize>>,
    _server: Server,
}

impl BodyBackend {
    async fn spawn(version: &'static str) -> BodyBackend {
        let received = Arc::new(Mutex::new(Vec::new()));
        let streamed = Arc::new(Mutex::new(0usize));
        let (seen, bytes) = (received.clone(), streamed.clone());
        let server = Server::spawn(move |req: Request<Incoming>| {
            let (seen, bytes) = (seen.clone(), bytes.clone());
            async move {
                let method = req.method().to_string();
                let shadow = req.headers().contains_key("x-grayproxy-shadow");
                let mut body = req.into_body();
                let mut all = Vec::new();
                while let Some(Ok(frame)) = body.frame().await {
                    if let Ok(data) = frame.into_data() {
                        *bytes.lock().unwrap() += data.len();
                        all.extend_from_slice(&data);
                    }
                }
                let sum: u64 = all.iter().map(|b| u64::from(*b)).sum();
                let answer = serde_json::json!({
                    "version": version, "len": all.len(), "sum": sum,
                });
                seen.lock().unwrap().push(Received {
                    method,
                    shadow,
                    body: Bytes::from(all),
                });
                let mut r = Response::new(Full::new(Bytes::from(answer.to_string())));
                r.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                r
            }
        })
        .await;
        BodyBackend {
            addr: server.addr,
            received,
            streamed,
            _server: server,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn streamed(&self) -> usize {
        *self.streamed.lock().unwrap()
    }
}

/// A request body the test feeds frame by frame.
struct Fed(mpsc::Receiver<Bytes>);

impl Body for Fed {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn shadow_config(stable: SocketAddr, canary: SocketAddr) -> String {
    config(
        "",
        &[("stable", stable), ("canary", canary)],
        "[[routes]]\nname = \"api\"\nstable = \"stable\"\ncanary = \"canary\"\nfallback = false\n\
         [routes.shadow]\nmethods = [\"GET\", \"POST\", \"PUT\"]\nnoise_percent = 0\n",
    )
}

async fn shadow_status(proxy: &TestProxy) -> serde_json::Value {
    proxy.status().await["routes"][0]["shadow"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_body_reaches_stable_and_an_identical_copy_the_canary() {
    let stable = BodyBackend::spawn("v1").await;
    let canary = BodyBackend::spawn("v2").await;
    let proxy = TestProxy::start(&shadow_config(stable.addr, canary.addr)).await;
    let c = client();
    let bodies: Vec<Bytes> = (0..20u8)
        .map(|i| Bytes::from(vec![i; 1000 + usize::from(i) * 37]))
        .collect();
    for (i, body) in bodies.iter().enumerate() {
        // Half with a Content-Length, half chunked.
        let b = if i % 2 == 0 {
            full(body.clone())
        } else {
            chunked(body.clone(), 300)
        };
        let req = Request::post(proxy.url("/orders")).body(b).unwrap();
        let a = send(&c, req).await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["version"], "v1", "the user gets stable's answer");
        assert_eq!(a.json()["len"], body.len(), "stable got the whole body");
    }
    let admin = proxy.admin;
    eventually(
        Duration::from_secs(10),
        "20 pairs compared",
        || async move {
            let s = support::admin_json(admin, "/status").await;
            s["routes"][0]["shadow"]["compared"].as_u64() == Some(20)
        },
    )
    .await;
    let mut to_canary = canary.received();
    assert_eq!(to_canary.len(), 20);
    assert!(to_canary.iter().all(|r| r.method == "POST" && r.shadow));
    to_canary.sort_by_key(|r| r.body.len());
    let sent: Vec<&Bytes> = bodies.iter().collect();
    let got: Vec<&Bytes> = to_canary.iter().map(|r| &r.body).collect();
    assert_eq!(got, sent, "the canary got each body byte for byte");
    assert!(stable.received().iter().all(|r| !r.shadow));
    let s = shadow_status(&proxy).await;
    assert_eq!(
        (s["mirrored"].as_u64(), s["skipped"].as_u64()),
        (Some(20), Some(0))
    );
    // Same bodies, so only the version differs between the answers.
    let fields: Vec<&str> = s["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(fields, ["version"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_body_streams_to_stable_before_the_client_has_sent_it_all() {
    let stable = BodyBackend::spawn("v1").await;
    let canary = BodyBackend::spawn("v2").await;
    let proxy = TestProxy::start(&shadow_config(stable.addr, canary.addr)).await;
    let (tx, rx) = mpsc::channel(4);
    let req = Request::put(proxy.url("/doc"))
        .body(Fed(rx).boxed())
        .unwrap();
    let c = client();
    let answer = tokio::spawn(async move { send(&c, req).await });
    tx.send(Bytes::from(vec![b'a'; 5000])).await.unwrap();
    // Stable sees the first part while the client still holds the rest: the
    // mirror copies the body as it passes and buffers nothing in front of it.
    eventually(
        Duration::from_secs(10),
        "stable streamed 5000 bytes",
        || std::future::ready(stable.streamed() >= 5000),
    )
    .await;
    assert!(
        canary.received().is_empty(),
        "the canary waits for the whole body"
    );
    tx.send(Bytes::from(vec![b'b'; 3000])).await.unwrap();
    drop(tx);
    let a = answer.await.unwrap().unwrap();
    assert_eq!(a.json()["len"], 8000);
    let admin = proxy.admin;
    eventually(
        Duration::from_secs(10),
        "the pair compared",
        || async move {
            let s = support::admin_json(admin, "/status").await;
            s["routes"][0]["shadow"]["compared"].as_u64() == Some(1)
        },
    )
    .await;
    let to_canary = canary.received();
    assert_eq!(to_canary.len(), 1);
    assert_eq!(to_canary[0].body.len(), 8000);
    assert_eq!(&to_canary[0].body[4990..5010], b"aaaaaaaaaabbbbbbbbbb");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_body_over_the_cap_is_not_mirrored_and_counted_as_skipped() {
    let stable = BodyBackend::spawn("v1").await;
    let canary = BodyBackend::spawn("v2").await;
    let proxy = TestProxy::start(&shadow_config(stable.addr, canary.addr)).await;
    let c = client();
    let big = Bytes::from(vec![7u8; (1 << 20) + 1]);
    // Declared too large, then found too large while streaming (chunked).
    for body in [full(big.clone()), chunked(big.clone(), 64 * 1024)] {
        let req = Request::post(proxy.url("/upload")).body(body).unwrap();
        let a = send(&c, req).await.unwrap();
        assert_eq!(a.status, 200);
        assert_eq!(a.json()["len"], big.len(), "stable got it all");
    }
    // A small one after them is mirrored: the mirror is still working.
    let req = Request::post(proxy.url("/upload")).body(full("x")).unwrap();
    assert_eq!(send(&c, req).await.unwrap().status, 200);
    let admin = proxy.admin;
    eventually(
        Duration::from_secs(10),
        "the small one compared",
        || async move {
            let s = support::admin_json(admin, "/status").await;
            s["routes"][0]["shadow"]["compared"].as_u64() == Some(1)
        },
    )
    .await;
    assert_eq!(canary.received().len(), 1, "only the small body mirrored");
    assert_eq!(canary.received()[0].body, Bytes::from("x"));
    let s = shadow_status(&proxy).await;
    assert_eq!(s["mirrored"], 1);
    assert_eq!(s["skipped"], 2);
    assert_eq!(
        s["skip_reasons"],
        serde_json::json!({"in_flight": 0, "body_too_large": 2, "body_incomplete": 0})
    );
    let m = proxy.metrics().await;
    assert_eq!(
        m.value(
            "grayproxy_shadow_requests_total",
            &[("route", "api"), ("result", "skipped")]
        ),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bodies_of_methods_not_listed_are_not_mirrored() {
    let stable = BodyBackend::spawn("v1").await;
    let canary = BodyBackend::spawn("v2").await;
    let text = config(
        "",
        &[("stable", stable.addr), ("canary", canary.addr)],
        "[[routes]]\nname = \"api\"\nstable = \"stable\"\ncanary = \"canary\"\n\
         [routes.shadow]\nnoise_percent = 0\n",
    );
    let proxy = TestProxy::start(&text).await;
    let c = client();
    for _ in 0..5 {
        let req = Request::post(proxy.url("/x")).body(full("{}")).unwrap();
        assert_eq!(send(&c, req).await.unwrap().status, 200);
    }
    let req = Request::get(proxy.url("/x"))
        .body(support::empty())
        .unwrap();
    assert_eq!(send(&c, req).await.unwrap().status, 200);
    let admin = proxy.admin;
    eventually(Duration::from_secs(10), "the GET compared", || async move {
        let s = support::admin_json(admin, "/status").await;
        s["routes"][0]["shadow"]["compared"].as_u64() == Some(1)
    })
    .await;
    let to_canary = canary.received();
    assert_eq!(to_canary.len(), 1);
    assert_eq!(to_canary[0].method, "GET");
    assert_eq!(stable.received().len(), 6);
}
