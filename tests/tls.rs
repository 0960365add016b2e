//! TLS termination with a generated certificate: h2 and http/1.1 chosen by
//! ALPN, `x-forwarded-proto: https` upstream, and a certificate swapped on
//! disk going live for new connections while an open one keeps working.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support_resilience;

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
use support_resilience::{config, temp_dir, Proxy, TestUpstream};
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

async fn start() -> (
    Proxy,
    TestUpstream,
    TestUpstream,
    (String, String, CertificateDer<'static>),
) {
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let dir = temp_dir("tls");
    let cert = generate();
    write_cert(&dir, &cert);
    let toml = config(
        &[stable.addr],
        &[canary.addr],
        "tls = { cert = \"cert.pem\", key = \"key.pem\" }",
        "canary_weight = 0.0",
    );
    let p = Proxy::start_in(dir, &toml).await;
    (p, stable, canary, cert)
}

/// Over TLS too, an idle connection outlives `header_read_timeout` (1 s)
/// and is closed after `keepalive_timeout` (3 s): HTTP/1.1 between two
/// requests, h2 after its last stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_tls_connections_are_kept_for_keepalive_timeout() {
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let dir = temp_dir("tls-keepalive");
    let cert = generate();
    write_cert(&dir, &cert);
    let toml = config(
        &[stable.addr],
        &[canary.addr],
        "tls = { cert = \"cert.pem\", key = \"key.pem\" }\nheader_read_timeout = \"1s\"\nkeepalive_timeout = \"3s\"",
        "canary_weight = 0.0",
    );
    let p = Proxy::start_in(dir, &toml).await;
    let addr = p.app.proxy_addr;
    let get = |uri: &str| {
        Request::get(uri)
            .header("host", "localhost")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };

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
    let idle_from = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the proxy closes the idle connection")
        .unwrap()
        .ok();
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(2900) && idle < Duration::from_secs(6),
        "http/1.1 closed after {idle:?} idle"
    );

    let s = connect(addr, &[&cert.2], b"h2").await;
    let (mut h2, conn) =
        http2::handshake::<_, _, Empty<Bytes>>(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let resp = h2.send_request(get("https://localhost/c")).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.into_body().collect().await.unwrap();
    let idle_from = tokio::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), conn)
        .await
        .expect("the proxy closes the idle h2 connection")
        .unwrap()
        .ok();
    let idle = idle_from.elapsed();
    assert!(
        idle >= Duration::from_millis(2900) && idle < Duration::from_secs(6),
        "h2 closed after {idle:?} idle"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http1_and_h2_by_alpn() {
    let (p, stable, _canary, cert) = start().await;
    let addr = p.app.proxy_addr;

    let s = connect(addr, &[&cert.2], b"http/1.1").await;
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut h1, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/one")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let resp = h1.send_request(req).await.unwrap();
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
    let (p, _stable, _canary, old) = start().await;
    let addr = p.app.proxy_addr;
    let new = generate();
    let trust = [&old.2, &new.2];

    let s = connect(addr, &trust, b"http/1.1").await;
    assert_eq!(served_cert(&s), old.2);
    let (mut open, conn) = http1::handshake::<_, Empty<Bytes>>(TokioIo::new(s))
        .await
        .unwrap();
    tokio::spawn(conn);

    write_cert(&p.dir, &new);
    let mut swapped = false;
    for _ in 0..40 {
        let s = connect(addr, &trust, b"http/1.1").await;
        if served_cert(&s) == new.2 {
            swapped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swapped, "the new certificate is served to new connections");
    // The connection opened before the swap still works.
    let req = Request::get("/")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    assert_eq!(open.send_request(req).await.unwrap().status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_certificate_file_keeps_the_old_one() {
    let (p, _stable, _canary, old) = start().await;
    std::fs::write(p.dir.join("cert.pem"), "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let s = connect(p.app.proxy_addr, &[&old.2], b"http/1.1").await;
    assert_eq!(served_cert(&s), old.2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upstream_verified_against_a_configured_ca() {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let files = grayproxy::config::types::TlsFiles {
        cert: temp_dir("upstream-cert").join("cert.pem"),
        key: temp_dir("upstream-key").join("key.pem"),
    };
    std::fs::write(&files.cert, ck.cert.pem()).unwrap();
    std::fs::write(&files.key, ck.key_pair.serialize_pem()).unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(grayproxy::tls::server_config(&files).unwrap());
    let canary = TestUpstream::spawn_with("canary", Some(acceptor)).await;
    let stable = TestUpstream::spawn("stable").await;
    let dir = temp_dir("https-upstream");
    std::fs::copy(&files.cert, dir.join("ca.pem")).unwrap();
    let toml = config(&[stable.addr], &[canary.addr], "", "canary_weight = 100.0").replace(
        &format!("endpoints = [\"{}\"]", canary.addr),
        &format!(
            "endpoints = [\"https://{}\"]\ntls_ca = \"ca.pem\"",
            canary.addr
        ),
    );
    let p = Proxy::start_in(dir, &toml).await;
    let c = support_resilience::client();
    let a = support_resilience::send(&c, http::Method::GET, &p.url("/"), None)
        .await
        .unwrap();
    assert_eq!(a.status, 200);
    assert_eq!(
        a.header("x-served-by"),
        Some("canary"),
        "served over TLS by the canary"
    );
    assert_eq!(a.header("x-grayproxy-fallback"), None);

    // The same upstream, verified against the system roots instead, fails the
    // handshake: the canary never received it, so stable answers.
    let untrusted = std::fs::read_to_string(p.dir.join("grayproxy.toml"))
        .unwrap()
        .replace("tls_ca = \"ca.pem\"\n", "");
    let dir = temp_dir("https-untrusted");
    let p = Proxy::start_in(dir, untrusted.split("\n[state]").next().unwrap()).await;
    let a = support_resilience::send(&c, http::Method::POST, &p.url("/"), Some("x"))
        .await
        .unwrap();
    assert_eq!(a.header("x-served-by"), Some("stable"));
    assert_eq!(a.header("x-grayproxy-fallback"), Some("canary"));
    assert_eq!(canary.count(), 1);
}
