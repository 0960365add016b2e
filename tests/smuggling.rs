//! Malformed requests and smuggling attempts over raw sockets: each gets the
//! expected status, the connection is closed where the rest of the bytes can
//! no longer be trusted, the upstream never sees a second (smuggled) request
//! and the proxy keeps serving.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use support::Split;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

#[derive(Debug)]
struct RawAnswer {
    /// Status of each response read, in order.
    statuses: Vec<u16>,
    /// The server closed the connection.
    closed: bool,
    text: String,
}

/// Writes `bytes`, then reads until the server closes or stays quiet for `quiet`.
async fn exchange(addr: SocketAddr, bytes: &[u8], quiet: Duration) -> RawAnswer {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may close before reading everything; that is its right.
    let _ = s.write_all(bytes).await;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(quiet, s.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Err(_) => break false,
        }
    };
    let text = String::from_utf8_lossy(&buf).into_owned();
    let statuses = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text.get(i + 9..i + 12)?.parse().ok())
        .collect();
    RawAnswer {
        statuses,
        closed,
        text,
    }
}

struct Case {
    name: &'static str,
    request: Vec<u8>,
    /// The statuses the client reads (one, unless the framing is unambiguous).
    statuses: Vec<u16>,
    /// The proxy must close the connection after answering.
    closes: bool,
    /// Requests the upstream may see (a streamed body can fail after the head went out).
    upstream_at_most: usize,
}

fn case(name: &'static str, head: &str, body: &str, status: u16, upstream_at_most: usize) -> Case {
    Case {
        name,
        request: format!("{head}\r\n\r\n{body}{SMUGGLED}").into_bytes(),
        statuses: vec![status],
        closes: true,
        upstream_at_most,
    }
}

fn cases() -> Vec<Case> {
    let post = "POST /in HTTP/1.1\r\nHost: a";
    let big_headers: String = (0..70)
        .map(|i| format!("\r\nx-filler-{i}: {}", "v".repeat(1024)))
        .collect();
    let chunked_2k = format!("800\r\n{}\r\n0\r\n\r\n", "b".repeat(2048));
    // Identical duplicates are folded by hyper before the proxy sees them
    // (RFC 9110 §8.6 allows it): the framing is unambiguous, so what follows
    // the body really is a second request, and is served as one.
    let mut duplicate_cl = case(
        "duplicate CL, same value",
        &format!("{post}\r\nContent-Length: 5\r\nContent-Length: 5"),
        "hello",
        200,
        2,
    );
    duplicate_cl.request = format!("{post}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhelloGET /second HTTP/1.1\r\nHost: a\r\n\r\n").into_bytes();
    duplicate_cl.statuses = vec![200, 200];
    duplicate_cl.closes = false;
    vec![
        // RFC 9112 §6.3: chunked wins, Content-Length is dropped (never
        // forwarded), and hyper closes the connection after the answer, so
        // the bytes after the chunked body are never read as a request.
        case(
            "CL+TE",
            &format!("{post}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked"),
            "0\r\n\r\n",
            200,
            1,
        ),
        case(
            "TE+CL",
            &format!("{post}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5"),
            "0\r\n\r\n",
            200,
            1,
        ),
        duplicate_cl,
        case(
            "conflicting CL",
            &format!("{post}\r\nContent-Length: 5\r\nContent-Length: 6"),
            "hello!",
            400,
            0,
        ),
        case(
            "CL list",
            &format!("{post}\r\nContent-Length: 5, 5"),
            "hello",
            400,
            0,
        ),
        case(
            "TE chunked, chunked",
            &format!("{post}\r\nTransfer-Encoding: chunked, chunked"),
            "0\r\n\r\n",
            400,
            0,
        ),
        case(
            "TE twice",
            &format!("{post}\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked"),
            "0\r\n\r\n",
            400,
            0,
        ),
        case(
            "TE space before colon",
            &format!("{post}\r\nTransfer-Encoding : chunked"),
            "0\r\n\r\n",
            400,
            0,
        ),
        case(
            "TE xchunked",
            &format!("{post}\r\nTransfer-Encoding: xchunked"),
            "0\r\n\r\n",
            400,
            0,
        ),
        case(
            "TE chunked;q=1",
            &format!("{post}\r\nTransfer-Encoding: chunked;q=1"),
            "0\r\n\r\n",
            400,
            0,
        ),
        case(
            "TE gzip, chunked",
            &format!("{post}\r\nTransfer-Encoding: gzip, chunked"),
            "0\r\n\r\n",
            400,
            0,
        ),
        case(
            "TE in HTTP/1.0",
            "POST /in HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked",
            "0\r\n\r\n",
            400,
            0,
        ),
        case(
            "bad chunk size",
            &format!("{post}\r\nTransfer-Encoding: chunked"),
            "zz\r\nhello\r\n0\r\n\r\n",
            400,
            1,
        ),
        case(
            "chunk size overflow",
            &format!("{post}\r\nTransfer-Encoding: chunked"),
            "fffffffffffffffffff\r\nhello\r\n0\r\n\r\n",
            400,
            1,
        ),
        case(
            "missing Host",
            "GET /in HTTP/1.1\r\nUser-Agent: t",
            "",
            400,
            0,
        ),
        case(
            "duplicate Host",
            "GET /in HTTP/1.1\r\nHost: a\r\nHost: b",
            "",
            400,
            0,
        ),
        case(
            "70 KiB of headers",
            &format!("GET /in HTTP/1.1\r\nHost: a{big_headers}"),
            "",
            431,
            0,
        ),
        case(
            "CL over max_body_bytes",
            &format!("{post}\r\nContent-Length: 2048"),
            &"b".repeat(2048),
            413,
            0,
        ),
        case(
            "chunked over max_body_bytes",
            &format!("{post}\r\nTransfer-Encoding: chunked"),
            &chunked_2k,
            413,
            1,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_smuggling_requests_are_refused() {
    let Split {
        stable,
        canary: _canary,
        proxy: p,
    } = Split::start("max_body_bytes = 1024", "canary_weight = 0.0").await;
    let addr = p.proxy;
    let mut failures = Vec::new();
    for c in cases() {
        let before = stable.count();
        let quiet = Duration::from_millis(if c.closes { 3000 } else { 300 });
        let a = exchange(addr, &c.request, quiet).await;
        let seen = stable.count() - before;
        let got = stable.seen();
        let new = &got[got.len() - seen..];
        let smuggled = new.iter().any(|s| s.uri.contains("smuggled"));
        let ambiguous = new.iter().any(|s| {
            s.headers.contains_key("content-length") && s.headers.contains_key("transfer-encoding")
        });
        let ok = a.statuses == c.statuses
            && (a.closed || !c.closes)
            && seen <= c.upstream_at_most
            && !smuggled
            && !ambiguous;
        if !ok {
            failures.push(format!(
                "{}: statuses {:?} (want {:?}), closed {}, upstream saw {seen}, smuggled {smuggled}, \
                 ambiguous framing forwarded {ambiguous}\n{}",
                c.name,
                a.statuses,
                c.statuses,
                a.closed,
                a.text.lines().next().unwrap_or("")
            ));
        }
        // The proxy stays up and serves the next client.
        let ok = exchange(
            addr,
            b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n",
            Duration::from_millis(300),
        )
        .await;
        assert_eq!(ok.statuses, [200], "after {}: {}", c.name, ok.text);
        assert!(!ok.closed, "a good request keeps its connection");
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
    assert!(
        stable.seen().iter().all(|s| !s.uri.contains("smuggled")),
        "a smuggled request reached the upstream: {:?}",
        stable
            .seen()
            .iter()
            .map(|s| (s.method.clone(), s.uri.clone(), s.headers.clone()))
            .collect::<Vec<_>>()
    );
}

/// RFC 9112 §3.2: a Host field with an invalid value, or more than one Host
/// line, is answered 400 (with the usual JSON error body) and never
/// forwarded; the route here matches any host, so forwarding would be a 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_or_repeated_host_is_answered_400_and_not_forwarded() {
    let Split {
        stable,
        canary: _canary,
        proxy: p,
    } = Split::start("", "canary_weight = 0.0").await;
    let addr = p.proxy;
    let invalid = [
        "Host: shop example",
        "Host: shop.example/x",
        "Host: user@shop.example",
        "Host: shop.example:80x",
        "Host: a:b:c",
        "Host: [::1",
        "Host: [::1]x",
        "Host: shop%zz.example",
        "Host: \"shop.example\"",
        "Host: shop.example\r\nHost: shop.example",
        "Host: shop.example\r\nHost: other.example",
    ];
    for host in invalid {
        let request = format!("GET /in HTTP/1.1\r\n{host}\r\n\r\n");
        let a = exchange(addr, request.as_bytes(), Duration::from_secs(3)).await;
        assert_eq!(a.statuses, [400], "{host:?}: {}", a.text);
        assert!(
            a.text.ends_with(r#"{"error":"malformed request"}"#),
            "{host:?}: {}",
            a.text
        );
        assert!(a.closed, "{host:?}: the connection is closed");
    }
    assert_eq!(stable.count(), 0, "an invalid Host reached the upstream");

    // Valid hosts (the positive control) are forwarded as before.
    let valid = [
        "shop.example",
        "Shop.Example:8080",
        "[::1]:8080",
        "[v1.fe80::a+en1]",
        "127.0.0.1",
        "xn--bcher-kva.example",
        "a-1_b~c!$&'()*+,;=.example",
        "shop%41.example",
        "shop.example:",
        "",
    ];
    for host in valid {
        let request = format!("GET /in HTTP/1.1\r\nHost: {host}\r\n\r\n");
        let a = exchange(addr, request.as_bytes(), Duration::from_millis(300)).await;
        assert_eq!(a.statuses, [200], "{host:?}: {}", a.text);
    }
    assert_eq!(stable.count(), valid.len());
}
