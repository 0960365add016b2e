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

/// A temp dir with a fresh certificate and a config terminating TLS with it.
async fn tls_setup() -> (
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
        "tls = { cert = \"cert.pem\", key = \"key.pem\" }",
        "canary_weight = 0.0",
    );
    (dir, toml, stable, canary, cert)
}

async fn start() -> (
    TestProxy,
    TestUpstream,
    TestUpstream,
    (String, String, CertificateDer<'static>),
) {
    let (dir, toml, stable, canary, cert) = tls_setup().await;
    let p = TestProxy::start_in(dir, &toml).await;
    (p, stable, canary, cert)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_http1_and_h2_by_alpn() {
    let (p, stable, _canary, cert) = start().await;
    let addr = p.proxy;

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
    let req = Request::get("/")
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    assert_eq!(open.send_request(req).await.unwrap().status(), 200);
}

/// Through the real binary, whose log says when the broken file was read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_certificate_file_keeps_the_old_one() {
    let (dir, toml, _stable, _canary, old) = tls_setup().await;
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
