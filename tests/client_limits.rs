//! Client-side limits on real sockets: slowloris clients are cut off by
//! `header_read_timeout` while normal clients are served; `max_connections`
//! holds further clients back until a connection ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::Method;
use support::{client, fetch, Split};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Opens a connection and trickles a request head that never ends, one byte
/// every 200 ms; returns how long until the proxy closed it.
async fn slowloris(addr: SocketAddr, give_up: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).await.ok()?;
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\nx-slow: ")
        .await
        .ok()?;
    let mut buf = [0u8; 1024];
    while started.elapsed() < give_up {
        if s.write_all(b"a").await.is_err() {
            return Some(started.elapsed());
        }
        // Whatever the proxy sends (a 408 or nothing), then EOF, means closed.
        match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Some(started.elapsed()),
            Ok(Ok(_)) | Err(_) => {}
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_are_closed_and_normal_clients_served() {
    let split = Split::start("header_read_timeout = \"1s\"", "canary_weight = 0.0").await;
    let p = &split.proxy;
    let addr = p.proxy;
    let bound = Duration::from_secs(1 + 2);
    let slow: Vec<_> = (0..200)
        .map(|_| tokio::spawn(slowloris(addr, bound + Duration::from_secs(2))))
        .collect();
    // Meanwhile, normal clients.
    let c = client();
    let end = Instant::now() + Duration::from_secs(2);
    let (mut ok, mut errors) = (0, 0);
    while Instant::now() < end {
        match fetch(&c, Method::GET, &p.url("/"), &[], None).await {
            Ok(a) if a.status == 200 => ok += 1,
            _ => errors += 1,
        }
    }
    let mut closed_after = Vec::new();
    for t in slow {
        closed_after.push(t.await.unwrap());
    }
    let slowest = closed_after.iter().flatten().max().copied();
    let never = closed_after.iter().filter(|c| c.is_none()).count();
    eprintln!("slowloris: 200 connections, {never} never closed, slowest closed after {slowest:?}; normal clients {ok} ok, {errors} errors");
    assert_eq!(never, 0, "every slowloris connection is closed");
    assert!(slowest.unwrap() <= bound, "{slowest:?}");
    assert_eq!(errors, 0);
    assert!(ok > 20);
}

async fn raw_get(s: &mut TcpStream) {
    s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
}

async fn read_some(s: &mut TcpStream, within: Duration) -> Option<String> {
    let mut buf = [0u8; 4096];
    match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(n)) if n > 0 => Some(String::from_utf8_lossy(&buf[..n]).into_owned()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_holds_further_clients_back() {
    let split = Split::start(
        "max_connections = 3\nheader_read_timeout = \"30s\"",
        "canary_weight = 0.0",
    )
    .await;
    let p = &split.proxy;
    let addr = p.proxy;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        raw_get(&mut s).await;
        assert!(read_some(&mut s, Duration::from_secs(2))
            .await
            .unwrap()
            .starts_with("HTTP/1.1 200"));
        held.push(s); // kept alive, idle
    }
    // The fourth connects (kernel backlog) but is not served...
    let mut fourth = TcpStream::connect(addr).await.unwrap();
    raw_get(&mut fourth).await;
    assert_eq!(
        read_some(&mut fourth, Duration::from_millis(500)).await,
        None
    );
    // ...until a held connection ends.
    drop(held.pop());
    let answer = read_some(&mut fourth, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// The defaults, in real time: a kept-alive connection idle for 60 s (12×
/// the 5 s `header_read_timeout`) still serves its next request, and a
/// connection that never sends a byte is closed at `keepalive_timeout`
/// (75 s), not before. (The same rules with short timeouts, and the
/// slowloris cut, are tested in the server's unit tests and above.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_kept_for_the_default_75s() {
    let split = Split::start("", "canary_weight = 0.0").await;
    let p = &split.proxy;
    let opened = Instant::now();
    let mut used = TcpStream::connect(p.proxy).await.unwrap();
    let mut silent = TcpStream::connect(p.proxy).await.unwrap();
    raw_get(&mut used).await;
    let first = read_some(&mut used, Duration::from_secs(5)).await;
    assert!(first.unwrap_or_default().starts_with("HTTP/1.1 200"));

    tokio::time::sleep_until(opened + Duration::from_secs(61)).await;
    raw_get(&mut used).await;
    let after_idle = read_some(&mut used, Duration::from_secs(5)).await;
    assert!(
        after_idle
            .as_deref()
            .unwrap_or_default()
            .starts_with("HTTP/1.1 200"),
        "after 60 s idle: {after_idle:?}"
    );

    // The silent connection: open at 61 s, closed (EOF) by ~75 s.
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(25), silent.read(&mut buf)).await;
    let closed_at = opened.elapsed();
    assert!(matches!(read, Ok(Ok(0)) | Ok(Err(_))), "{read:?}");
    assert!(
        closed_at >= Duration::from_secs(74) && closed_at < Duration::from_secs(80),
        "a never-used connection closed after {closed_at:?}"
    );
}
