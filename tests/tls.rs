//! TLS termination with a generated certificate: h2 and http/1.1 chosen by
//! ALPN, `x-forwarded-proto: https` upstream, and a certificate swapped on
//! disk going live for new connections while an open one keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use support::{client, eventually, fetch, split_config, Binary, TempDir, TestProxy, TestUpstream};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `localhost`: (cert PEM, key PEM, cert DER).
fn generate() -> (String, String, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    (
        ck.cert.pem(),
        ck.key_pair.serialize_pem(),
        ck.cert.der().clone(),
    )
}

fn write_cert(dir: &Path, cert: &(String, String, CertificateDer<'static>)) {
    // Key first, then cert: the proxy reloads when either changes.
    std::fs::write(dir.join("key.pem"), &cert.1).unwrap();
    std::fs::write(dir.join("cert.pem"), &cert.0).unwrap();
}

async fn connect(
    addr: SocketAddr,
    trust: &[&CertificateDer<'static>],
    alpn: &[u8],
) -> TlsStream<TcpStream> {
    let mut roots = RootCertStore::empty();
    for c in trust {
        roots.add((*c).clone()).unwrap();
    }
    let mut config =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

fn served_cert(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// A temp dir with a fresh certificate and a config terminating TLS with it
/// (`server_extra` lines in `[server]` after the `tls` line).
async fn tls_setup(
    server_extra: &str,
) -> (
    TempDir,
    String,
    TestUpstream,
    TestUpstream,
    (String, String, CertificateDer<'static>),
) {
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let dir = TempDir::new();
    let cert = generate();
    write_cert(dir.path(), &cert);
    let toml = split_config(
        &[stable.addr],
        &[canary.addr],
        &format!("tls = {{ cert = \"cert.pem\", key = \"key.pem\" }}\n{server_extra}"),
        "canary_weight = 0.0",
    );
    (dir, toml, stable, canary, cert)
}

/// [`tls_setup`], started in-process.
async fn start(
    server_extra: &str,
) -> (
    TestProxy,
    TestUpstream,
    TestUpstream,
    (String, String, CertificateDer<'static>),
) {
    let (dir, toml, stable, canary, cert) = tls_setup(server_extra).await;
    let p = TestProxy::start_in(dir, &toml).await;
    (p, stable, canary, cert)
}

/// `GET uri` with `Host: localhost`.
fn get(uri: &str) -> Request<Empty<Bytes>> {
    Request::get(uri)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap()
}

/// Waits (≤ 10 s) until the proxy closes the idle `proto` connection that
/// `conn` drives, and checks it was kept for `keepalive_timeout` (3 s).
async fn assert_closed_after_keepalive<E>(conn: tokio::task::JoinHandle<E>, proto: &str) {
    let idle_from = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .unwrap_or_else(|_| panic!("the proxy closes the idle {proto} connection"))
        .unwrap();
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(2900) && idle < Duration::from_secs(6),
        "{proto} closed after {idle:?} idle"
    );
}

/// Over TLS too, an idle connection outlives `header_read_timeout` (1 s)
/// and is closed after `keepalive_timeout` (3 s): HTTP/1.1 between two
/// requests, h2 after its last stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_connections_are_kept_for_keepalive_timeout() {
    let (p, _stable, _canary, cert) =
        start("header_read_timeout = \"1s\"\nkeepalive_timeout = \"3s\"").await;
    let addr = p.proxy;

    let s = connect(addr, &[&cert.2], b"http/1.1").await;
    let (mut h1, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(s))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    assert_eq!(h1.send_request(get("/a")).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let resp = h1.send_request(get("/b")).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    assert_closed_after_keepalive(conn, "http/1.1").await;

    let s = connect(addr, &[&cert.2], b"h2").await;
    let (mut h2, conn) =
        http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let resp = h2.send_request(get("https://localhost/c")).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    assert_closed_after_keepalive(conn, "h2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http1_and_h2_by_alpn() {
    let (p, stable, _canary, cert) = start("").await;
    let addr = p.proxy;

    let s = connect(addr, &[&cert.2], b"http/1.1").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut h1, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let resp = h1.send_request(get("/one")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_11);
    assert_eq!(resp.headers()["x-grayproxy-arm"], "stable");

    let s = connect(addr, &[&cert.2], b"h2").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let (mut h2, conn) =
        http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = Request::get("https://localhost/two")
        .body(Empty::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"stable");

    let seen = stable.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.headers["x-forwarded-proto"], "https");
        assert_eq!(s.headers["host"], "localhost");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_certificate_goes_live_without_dropping_connections() {
    let (p, _stable, _canary, old) = start("").await;
    let addr = p.proxy;
    let new = generate();
    let trust = [&old.2, &new.2];

    let s = connect(addr, &trust, b"http/1.1").await;
    assert_eq!(served_cert(&s), old.2);
    let (mut open, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);

    write_cert(p.dir(), &new);
    eventually(
        Duration::from_secs(4),
        "the new certificate served to new connections",
        || async { served_cert(&connect(addr, &trust, b"http/1.1").await) == new.2 },
    )
    .await;
    // The connection opened before the swap still works.
    assert_eq!(open.send_request(get("/")).await.unwrap().status(), 200);
}

/// Through the real binary, whose log says when the broken file was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_certificate_file_keeps_the_old_one() {
    let (dir, toml, _stable, _canary, old) = tls_setup("").await;
    let path = dir.join("grayproxy.toml");
    std::fs::write(&path, toml).unwrap();
    let proxy = Binary::start(&path);
    let addr = proxy.proxy;
    std::fs::write(dir.join("cert.pem"), "not a certificate").unwrap();
    // Files are looked at on connection arrival (at most once a second):
    // connect until the proxy reports the failed reload, and every
    // connection on the way gets the old certificate.
    eventually(Duration::from_secs(5), "the failed reload logged", || {
        let failed = proxy
            .logs()
            .iter()
            .any(|l| l.contains("TLS certificate reload failed"));
        let old = &old;
        async move {
            let s = connect(addr, &[&old.2], b"http/1.1").await;
            assert_eq!(served_cert(&s), old.2);
            failed
        }
    })
    .await;
    let s = connect(addr, &[&old.2], b"http/1.1").await;
    assert_eq!(served_cert(&s), old.2);
    // Positive control: the watcher still works, a good file goes live.
    let new = generate();
    write_cert(dir.path(), &new);
    let trust = [&old.2, &new.2];
    eventually(
        Duration::from_secs(5),
        "the fixed certificate served",
        || {
            let (trust, new) = (&trust, &new);
            async move { served_cert(&connect(addr, trust, b"http/1.1").await) == new.2 }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_verified_against_a_configured_ca() {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let keys = TempDir::new();
    let files = grayproxy::config::types::TlsFiles {
        cert: keys.join("cert.pem"),
        key: keys.join("key.pem"),
    };
    std::fs::write(&files.cert, ck.cert.pem()).unwrap();
    std::fs::write(&files.key, ck.key_pair.serialize_pem()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(grayproxy::tls::server_config(&files).unwrap());
    let canary = TestUpstream::spawn_tls("canary", acceptor).await;
    let stable = TestUpstream::spawn("stable").await;
    let dir = TempDir::new();
    std::fs::copy(&files.cert, dir.join("ca.pem")).unwrap();
    let toml = split_config(&[stable.addr], &[canary.addr], "", "canary_weight = 100.0").replace(
        &format!("endpoints = [\"{}\"]", canary.addr),
        &format!(
            "endpoints = [\"https://{}\"]\ntls_ca = \"ca.pem\"",
            canary.addr
        ),
    );
    let p = TestProxy::start_in(dir, &toml).await;
    let c = client();
    let a = fetch(&c, http::Method::GET, &p.url("/"), &[], None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("x-upstream"),
        "canary",
        "served over TLS by the canary"
    );
    assert!(!a.headers.contains_key("x-grayproxy-fallback"));

    // The same upstream, verified against the system roots instead, fails the
    // handshake: the canary never received it, so stable answers.
    let untrusted = toml.replace("tls_ca = \"ca.pem\"\n", "");
    assert_ne!(untrusted, toml);
    let p = TestProxy::start(&untrusted).await;
    let a = fetch(&c, http::Method::POST, &p.url("/"), &[], Some("x"))
        .await
        .unwrap();
    assert_eq!(a.header("x-upstream"), "stable");
    assert_eq!(a.header("x-grayproxy-fallback"), "canary");
    assert_eq!(canary.count(), 1);
}
