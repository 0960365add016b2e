//! gRPC calls that end early, and health over TLS: a server stream cut by
//! its deadline, a call the client cancels (RST_STREAM), both seen by the
//! tonic upstream as a dropped call; the gRPC health check over TLS h2.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use grayproxy::config::types::{Endpoint, HealthCheck};
use grayproxy::proxy::health::check_once;
use http_body_util::BodyExt;
use support::grpc::{
    channel, config, grpc_responses, raw_call, recommend, split, stream_items, Backend,
    RecommendRequest, STREAM,
};
use support::{eventually, TempDir, TestProxy};

/// How many whole length-prefixed messages `body` holds.
fn messages(mut body: &[u8]) -> usize {
    let mut n = 0;
    while body.len() >= 5 {
        let len = u32::from_be_bytes([body[1], body[2], body[3], body[4]]) as usize;
        if body.len() < 5 + len {
            break;
        }
        body = &body[5 + len..];
        n += 1;
    }
    n
}

#[tokio::test]
async fn a_server_stream_past_its_deadline_ends_deadline_exceeded_and_is_reset_upstream() {
    let (stable, _canary, proxy) = split(Duration::ZERO, 0, "canary_weight = 0.0").await;
    // 50 messages, one every 100 ms: 5 s, far past the call's 450 ms. A raw
    // h2c client that does not enforce the deadline itself, so what ends
    // the stream is the proxy.
    let req = raw_call(
        proxy.url(STREAM),
        "450m",
        &RecommendRequest {
            user_id: "slow-stream".into(),
            count: 50,
        },
    );
    let started = tokio::time::Instant::now();
    let resp = support::h2c_client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-grayproxy-arm"], "stable");
    let collected = resp.into_body().collect().await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(400) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let trailers = collected.trailers().cloned().expect("trailers");
    assert_eq!(trailers["grpc-status"], "4", "{trailers:?}");
    // The messages before the deadline went through as they came.
    let got = messages(&collected.to_bytes());
    assert!((2..10).contains(&got), "{got} messages");
    eventually(
        Duration::from_secs(3),
        "the upstream's stream is dropped (reset by the proxy)",
        || async { stable.state.cancelled.load(Ordering::SeqCst) == 1 },
    )
    .await;
    let m = proxy.metrics().await;
    assert_eq!(grpc_responses(&m, "stable", "DEADLINE_EXCEEDED"), 1.0);
}

#[tokio::test]
async fn a_call_the_client_cancels_is_cancelled_upstream() {
    // Unary calls wait 5 s upstream; the stream sends one message per 100 ms.
    let (stable, _canary, proxy) = split(Duration::from_secs(5), 0, "canary_weight = 0.0").await;
    let ch = channel(proxy.proxy).await;

    // Unary: the client drops the call once the upstream has it (tonic
    // resets the stream: RST_STREAM CANCEL).
    let call = tokio::spawn({
        let ch = ch.clone();
        async move { recommend(&ch, "u", None).await }
    });
    let state = stable.state.clone();
    eventually(
        Duration::from_secs(5),
        "the call reaches the upstream",
        || {
            let state = state.clone();
            async move { state.calls.load(Ordering::SeqCst) == 1 }
        },
    )
    .await;
    call.abort();
    eventually(
        Duration::from_secs(3),
        "the upstream's call is dropped",
        || async { stable.state.cancelled.load(Ordering::SeqCst) == 1 },
    )
    .await;

    // Server stream: two messages, then the client walks away.
    let mut s = stream_items(&ch, "slow-stream", 50)
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        assert!(s.message().await.unwrap().is_some());
    }
    drop(s);
    eventually(
        Duration::from_secs(3),
        "the upstream's stream is dropped",
        || async { stable.state.cancelled.load(Ordering::SeqCst) == 2 },
    )
    .await;
    // The shared upstream connection survived both resets.
    let mut s = stream_items(&ch, "u", 3).await.unwrap().into_inner();
    let first = tokio::time::timeout(Duration::from_secs(1), s.message()).await;
    assert!(first.unwrap().unwrap().is_some());
    assert_eq!(stable.state.accepted.load(Ordering::SeqCst), 1);
}

/// A self-signed certificate for 127.0.0.1, written to a temp dir.
fn tls_files(dir: &TempDir) -> grayproxy::config::types::TlsFiles {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let files = grayproxy::config::types::TlsFiles {
        cert: dir.join("cert.pem"),
        key: dir.join("key.pem"),
    };
    std::fs::write(&files.cert, ck.cert.pem()).unwrap();
    std::fs::write(&files.key, ck.key_pair.serialize_pem()).unwrap();
    files
}

#[tokio::test]
async fn grpc_health_check_over_tls_h2() {
    let dir = TempDir::new();
    let files = tls_files(&dir);
    // The server offers h2 and http/1.1 by ALPN, as grayproxy's own listener.
    let acceptor = tokio_rustls::TlsAcceptor::from(grayproxy::tls::server_config(&files).unwrap());
    let backend = Backend::spawn_tls("v1", acceptor).await;
    let endpoint = Endpoint {
        tls: true,
        host: "127.0.0.1".into(),
        port: backend.addr.port(),
    };
    let check = HealthCheck {
        path: grayproxy::grpc::HEALTH_CHECK_PATH.into(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(2),
        grpc_service: Some("reco.Recommender".into()),
    };
    let trusted = grayproxy::tls::connector(Some(files.cert.as_path()), b"h2").unwrap();
    assert!(check_once(&endpoint, &check, Some(&trusted)).await);
    assert_eq!(backend.state.health_checks.load(Ordering::SeqCst), 1);
    assert_eq!(backend.state.accepted.load(Ordering::SeqCst), 1, "over TLS");
    backend.state.serving.store(false, Ordering::SeqCst);
    assert!(!check_once(&endpoint, &check, Some(&trusted)).await);
    backend.state.serving.store(true, Ordering::SeqCst);
    // A server the connector does not trust fails the check, as it would
    // fail every call; so does an endpoint whose connector could not be built.
    let untrusted = grayproxy::tls::connector(None, b"h2").unwrap();
    assert!(!check_once(&endpoint, &check, Some(&untrusted)).await);
    assert!(!check_once(&endpoint, &check, None).await);
    assert_eq!(backend.state.health_checks.load(Ordering::SeqCst), 2);

    // Through a proxy config: an `https://` h2 upstream with its CA and a
    // gRPC health check; the checks arrive over TLS every interval.
    let stable = Backend::spawn("v0", 0, Duration::ZERO).await;
    let proxy_dir = TempDir::new();
    std::fs::copy(&files.cert, proxy_dir.join("ca.pem")).unwrap();
    let toml = config(stable.addr, backend.addr, "canary_weight = 100.0").replace(
        &format!("endpoints = [\"{}\"]\nprotocol = \"h2\"", backend.addr),
        &format!(
            "endpoints = [\"https://{}\"]\nprotocol = \"h2\"\ntls_ca = \"ca.pem\"\n\
             health_check = {{ grpc_service = \"reco.Recommender\", interval = \"200ms\", timeout = \"1s\" }}",
            backend.addr
        ),
    );
    assert!(toml.contains("https://"), "{toml}");
    let proxy = TestProxy::start_in(proxy_dir, &toml).await;
    eventually(
        Duration::from_secs(5),
        "two more health checks over TLS",
        || async { backend.state.health_checks.load(Ordering::SeqCst) >= 4 },
    )
    .await;
    // And calls reach the canary over TLS h2.
    let reply = recommend(&channel(proxy.proxy).await, "u", None)
        .await
        .unwrap();
    assert_eq!(reply.get_ref().model, "v1");
}
