//! Forwarding transparency (README, "Forwarding"): "the client sends X,
//! the upstream must see Y" over real sockets, for HTTP/1.1 and h2c clients.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use support::{
    chunked, client, config, full, h2c_client, noise, send, sha256_hex, TestProxy, TestUpstream,
};

const MIB: usize = 1024 * 1024;

async fn setup(weight: &str) -> (TestProxy, TestUpstream, TestUpstream) {
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let routes = format!(
        "[[routes]]\nname = \"all\"\nstable = \"stable\"\ncanary = \"canary\"\ncanary_weight = {weight}\n"
    );
    let text = config(
        "",
        &[("stable", stable.addr), ("canary", canary.addr)],
        &routes,
    );
    (TestProxy::start(&text).await, stable, canary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_5_mib_post_arrives_byte_identical_and_streams_back_identical() {
    let (proxy, _stable, canary) = setup("100.0").await;
    let body = Bytes::from(noise(5 * MIB, 42));
    let sha = sha256_hex(&body);
    let c = client();
    // With Content-Length, and streamed chunked without one.
    for (how, req_body) in [
        ("content-length", full(body.clone())),
        ("chunked", chunked(body.clone(), 64 * 1024)),
    ] {
        let req = Request::post(proxy.url("/upload?name=big"))
            .header("content-type", "application/octet-stream")
            .body(req_body)
            .unwrap();
        let answer = send(&c, req).await.unwrap();
        assert_eq!(answer.status, 200, "{how}");
        assert_eq!(answer.arm(), "canary");
        let seen = canary.last();
        assert_eq!(seen.method, "POST");
        assert_eq!(seen.uri, "/upload?name=big");
        assert_eq!(seen.body_len, 5 * MIB, "{how}: upstream body length");
        assert_eq!(seen.body_sha256, sha, "{how}: upstream body differs");
        assert_eq!(answer.body.len(), 5 * MIB, "{how}: response length");
        assert_eq!(
            sha256_hex(&answer.body),
            sha,
            "{how}: response body differs"
        );
        if how == "content-length" {
            assert_eq!(seen.header("content-length"), (5 * MIB).to_string());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_never_reach_the_upstream_and_forwarding_headers_are_set() {
    let (proxy, stable, _canary) = setup("0.0").await;
    // A raw HTTP/1.1 connection: the client library adds and removes nothing.
    let stream = tokio::net::TcpStream::connect(proxy.proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::post("/t/echo?x=1&y=%20z&x=2")
        .header("host", "shop.example")
        .header("connection", "keep-alive, X-Secret, x-other-secret")
        .header("x-secret", "s3cr3t")
        .header("x-other-secret", "also")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("trailer", "x-checksum")
        .header("proxy-authorization", "Basic YTpi")
        .header("proxy-connection", "keep-alive")
        .header("upgrade", "foo/2")
        .header("x-forwarded-for", "203.0.113.7, 198.51.100.2")
        .header("x-forwarded-proto", "https")
        .header("x-forwarded-host", "spoofed.example")
        .header("x-grayproxy-arm", "canary")
        .header("x-end-to-end", "kept")
        .header("x-multi", "a")
        .header("x-multi", "b")
        .header("authorization", "Bearer user-token")
        .header("x-want-resp-hop", "1")
        .header("content-type", "text/plain")
        .body(http_body_util::Full::new(Bytes::from_static(b"hello")))
        .unwrap();
    let response = sender.send_request(req).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    assert_eq!(parts.status, 200);
    assert_eq!(body, "hello");

    let seen = stable.last();
    assert_eq!(seen.method, "POST");
    assert_eq!(
        seen.uri, "/t/echo?x=1&y=%20z&x=2",
        "path and query pass unchanged"
    );
    assert_eq!(seen.version, Version::HTTP_11);
    for gone in [
        "connection",
        "x-secret",
        "x-other-secret",
        "keep-alive",
        "te",
        "trailer",
        "proxy-authorization",
        "proxy-connection",
        "upgrade",
    ] {
        assert!(
            !seen.headers.contains_key(gone),
            "{gone} reached the upstream: {:?}",
            seen.headers
        );
    }
    assert_eq!(seen.header("host"), "shop.example", "Host is kept");
    assert_eq!(
        seen.header("x-forwarded-for"),
        "203.0.113.7, 198.51.100.2, 127.0.0.1"
    );
    assert_eq!(seen.header("x-forwarded-proto"), "http");
    assert_eq!(seen.header("x-forwarded-host"), "shop.example");
    assert_eq!(
        seen.header("x-grayproxy-arm"),
        "stable",
        "the client cannot pick its arm"
    );
    assert_eq!(seen.header("x-end-to-end"), "kept");
    assert_eq!(seen.header("authorization"), "Bearer user-token");
    assert_eq!(seen.header("content-type"), "text/plain");
    let multi: Vec<_> = seen.headers.get_all("x-multi").iter().collect();
    assert_eq!(multi, ["a", "b"], "repeated headers keep their order");
    assert_eq!(seen.body_sha256, sha256_hex(b"hello"));

    // The response side: arm stamped, the upstream's connection-scoped header gone.
    assert_eq!(parts.headers["x-grayproxy-arm"], "stable");
    assert_eq!(parts.headers["x-upstream"], "stable");
    assert!(
        !parts.headers.contains_key("x-resp-hop"),
        "{:?}",
        parts.headers
    );
    assert!(
        parts
            .headers
            .get("connection")
            .map_or(true, |v| !v.to_str().unwrap().contains("x-resp-hop")),
        "{:?}",
        parts.headers
    );

    // The same connection keeps working (keep-alive survived the rewrite).
    let again = Request::get("/t/again")
        .header("host", "shop.example")
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    sender
        .ready()
        .await
        .expect("the proxy kept the connection open");
    let response = sender.send_request(again).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(stable.last().header("x-forwarded-for"), "127.0.0.1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_clients_are_proxied_to_http1_upstreams() {
    let (proxy, _stable, canary) = setup("100.0").await;
    let c = h2c_client();
    let url = proxy.url("/h2/items?id=7");
    let req = Request::get(&url)
        .header("x-end-to-end", "kept")
        .body(support::empty())
        .unwrap();
    let response = c.request(req).await.unwrap();
    assert_eq!(response.version(), Version::HTTP_2);
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-grayproxy-arm"], "canary");
    let seen = canary.last();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.uri, "/h2/items?id=7");
    let authority = proxy.proxy.to_string();
    assert_eq!(seen.header("host"), authority, ":authority becomes Host");
    assert_eq!(seen.header("x-forwarded-host"), authority);
    assert_eq!(seen.header("x-forwarded-proto"), "http");
    assert_eq!(seen.header("x-grayproxy-arm"), "canary");
    assert_eq!(seen.header("x-end-to-end"), "kept");

    // A POST body over h2 arrives intact too.
    let body = Bytes::from(noise(256 * 1024, 7));
    let req = Request::post(&url).body(full(body.clone())).unwrap();
    let answer = send(&c, req).await.unwrap();
    assert_eq!(answer.status, 200);
    assert_eq!(canary.last().body_sha256, sha256_hex(&body));
    assert_eq!(sha256_hex(&answer.body), sha256_hex(&body));
}

/// Reads from `stream` until `needle` shows up (≤ 5 s); returns everything read.
async fn read_until(stream: &mut tokio::net::TcpStream, needle: &str) -> String {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    while !String::from_utf8_lossy(&out).contains(needle) {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_uploads_work() {
    use tokio::io::AsyncWriteExt;
    let (proxy, stable, _canary) = setup("0.0").await;
    let body = noise(64 * 1024, 3);
    let mut stream = tokio::net::TcpStream::connect(proxy.proxy).await.unwrap();
    let head = format!(
        "PUT /upload HTTP/1.1\r\nhost: shop.example\r\ncontent-length: {}\r\nexpect: 100-continue\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    // Like curl: wait for the interim answer before sending the body.
    let interim = read_until(&mut stream, "\r\n\r\n").await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim:?}");
    stream.write_all(&body).await.unwrap();
    let answer = read_until(&mut stream, "x-grayproxy-arm").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");
    let seen = stable.last();
    assert_eq!(seen.body_sha256, sha256_hex(&body));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_chunked_is_never_forwarded_with_both() {
    use tokio::io::AsyncWriteExt;
    let (proxy, stable, _canary) = setup("0.0").await;
    let mut stream = tokio::net::TcpStream::connect(proxy.proxy).await.unwrap();
    // A smuggling attempt: the length says 40 bytes, the chunked framing says
    // the body is "hello" and a second request follows.
    let attack = "POST /first HTTP/1.1\r\nhost: x\r\ncontent-length: 40\r\ntransfer-encoding: chunked\r\n\r\n\
                  5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nhost: x\r\n\r\n";
    stream.write_all(attack.as_bytes()).await.unwrap();
    let answer = read_until(&mut stream, "\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer:?}");
    for seen in stable.seen() {
        assert!(
            seen.header("content-length").is_empty() || seen.header("transfer-encoding").is_empty(),
            "forwarded with both framings: {seen:?}"
        );
        if seen.uri == "/first" {
            assert_eq!(seen.body_len, 5, "the chunked framing wins");
            assert!(
                seen.header("content-length").is_empty() || seen.header("content-length") == "5"
            );
        }
    }
    assert_eq!(stable.seen()[0].uri, "/first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_clients_without_host_still_send_a_host_upstream() {
    use tokio::io::AsyncWriteExt;
    let (proxy, stable, _canary) = setup("0.0").await;
    let mut stream = tokio::net::TcpStream::connect(proxy.proxy).await.unwrap();
    stream
        .write_all(b"GET /old-client?q=1 HTTP/1.0\r\nuser-agent: ancient\r\n\r\n")
        .await
        .unwrap();
    let answer = read_until(&mut stream, "stable").await;
    assert!(answer.starts_with("HTTP/1.0 200 OK"), "{answer:?}");
    let seen = stable.last();
    assert_eq!(seen.version, Version::HTTP_11);
    assert_eq!(seen.uri, "/old-client?q=1");
    // HTTP/1.1 requires Host (RFC 9112 §3.2); the proxy, as the client of
    // that hop, supplies the upstream's authority when the client sent none.
    assert_eq!(
        seen.header("host"),
        stable.addr.to_string(),
        "{:?}",
        seen.headers
    );
    assert!(!seen.headers.contains_key("x-forwarded-host"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_h2c_streams_on_one_connection() {
    let (proxy, stable, canary) = setup("50.0").await;
    let c = h2c_client();
    let url = std::sync::Arc::new(proxy.url("/h2/many"));
    let answers = support::fan_out(400, 32, move |i| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let body = format!("stream {i}");
            let req = Request::post(url.as_str())
                .body(full(body.clone()))
                .unwrap();
            let a = send(&c, req).await.unwrap();
            (a.status.as_u16(), a.body == body.as_bytes())
        }
    })
    .await;
    assert!(answers.iter().all(|(s, same)| *s == 200 && *same));
    assert_eq!(stable.count() + canary.count(), 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_head_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let text = config(
        "header_read_timeout = \"500ms\"",
        &[("stable", stable.addr), ("canary", canary.addr)],
        "[[routes]]\nname = \"r\"\nstable = \"stable\"\ncanary = \"canary\"\n",
    );
    let proxy = TestProxy::start(&text).await;
    let mut stream = tokio::net::TcpStream::connect(proxy.proxy).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\nx-slow")
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut out = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        stream.read_to_end(&mut out),
    )
    .await;
    let took = started.elapsed();
    assert!(read.is_ok(), "the connection was still open after 5 s");
    assert!(
        took < std::time::Duration::from_secs(2),
        "closed after {took:?}"
    );
    assert_eq!(stable.arrived() + canary.arrived(), 0);
}
