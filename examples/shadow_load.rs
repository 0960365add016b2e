//! The two halves of `benches/e2e/shadow_p99.sh`, with nothing to install:
//!
//! * `shadow_load backend ADDR stable|canary`: a keep-alive HTTP/1.1 server
//!   answering every request with a typical 20-item recommendation answer
//!   (2.7 KB of JSON; the canary's list is moved by two places);
//! * `shadow_load load URL RATE SECONDS CONNS`: an open-loop load generator
//!   (as wrk2 and `oha --latency-correction` are): request `i` is due at
//!   `start + i / RATE`, spread over `CONNS` keep-alive connections, and
//!   its latency is counted from when it was due, so a stall is charged to
//!   every request it delayed (no coordinated omission). Prints one JSON
//!   line: requests, errors, achieved rate, p50/p90/p99/p99.9 in ms.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

/// A 20-item answer; `shift` moves the list and changes some scores.
fn answer(shift: usize) -> Bytes {
    let items: Vec<_> = (0..20)
        .map(|i| {
            let id = (i + shift) % 24;
            let category = ["books", "music", "garden", "toys"][id % 4];
            serde_json::json!({
                "id": format!("sku-{id:05}"),
                "score": 1.0 - (i as f64) * 0.031 + (shift as f64) * 0.001,
                "title": format!("Recommended product number {id}"),
                "category": category,
                "price": 9.99 + id as f64,
                "in_stock": id % 3 != 0,
            })
        })
        .collect();
    let body = serde_json::json!({
        "model": if shift == 0 { "reco-v1" } else { "reco-v2" },
        "generated_at": "2026-12-03T09:00:00Z",
        "items": items,
    });
    Bytes::from(serde_json::to_vec(&body).unwrap())
}

async fn backend(addr: SocketAddr, body: Bytes) {
    let listener = TcpListener::bind(addr).await.expect("bind the backend");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req: Request<Incoming>| {
                let mut r = Response::new(Full::new(body.clone()));
                r.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                async move { Ok::<_, Infallible>(r) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

/// One connection's share of the schedule: requests `c, c + conns, …`.
async fn connection(
    uri: Uri,
    start: Instant,
    end: Instant,
    every: Duration,
    first: Duration,
) -> (Vec<u32>, u64) {
    let authority = uri.authority().expect("URL with host:port").clone();
    let stream = TcpStream::connect(authority.as_str())
        .await
        .expect("connect");
    let _ = stream.set_nodelay(true);
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(conn);
    let (mut latencies, mut errors) = (Vec::new(), 0u64);
    let mut due = start + first;
    while due < end {
        tokio::time::sleep_until(due).await;
        let req = Request::get(uri.clone())
            .header("host", authority.as_str())
            .header("x-user-id", "u-1")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let ok = match send.send_request(req).await {
            Ok(resp) => {
                let good = resp.status().is_success();
                good && resp.into_body().collect().await.is_ok()
            }
            Err(_) => false,
        };
        if ok {
            let micros = due.elapsed().as_micros().min(u128::from(u32::MAX));
            latencies.push(micros as u32);
        } else {
            errors += 1;
        }
        due += every;
    }
    (latencies, errors)
}

async fn load(uri: Uri, rate: f64, seconds: f64, conns: usize) {
    let start = Instant::now() + Duration::from_millis(200);
    let end = start + Duration::from_secs_f64(seconds);
    let every = Duration::from_secs_f64(conns as f64 / rate);
    let tasks: Vec<_> = (0..conns)
        .map(|c| {
            let first = Duration::from_secs_f64(c as f64 / rate);
            tokio::spawn(connection(uri.clone(), start, end, every, first))
        })
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (l, e) = t.await.expect("a connection task");
        all.extend(l);
        errors += e;
    }
    all.sort_unstable();
    let q = |p: f64| {
        let i = ((p * all.len() as f64).ceil() as usize).clamp(1, all.len().max(1)) - 1;
        all.get(i).map_or(f64::NAN, |v| f64::from(*v) / 1000.0)
    };
    println!(
        "{}",
        serde_json::json!({
            "requests": all.len(), "errors": errors,
            "rps": all.len() as f64 / seconds,
            "p50_ms": q(0.5), "p90_ms": q(0.9), "p99_ms": q(0.99), "p999_ms": q(0.999),
        })
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    match args.get(1).map(String::as_str) {
        Some("backend") if args.len() == 4 => {
            let addr = args[2].parse().expect("ADDR as host:port");
            let body = answer(if args[3] == "canary" { 2 } else { 0 });
            rt.block_on(backend(addr, body));
        }
        Some("load") if args.len() == 6 => {
            let uri: Uri = args[2].parse().expect("URL");
            let rate: f64 = args[3].parse().expect("RATE");
            let seconds: f64 = args[4].parse().expect("SECONDS");
            let conns: usize = args[5].parse().expect("CONNS");
            rt.block_on(load(uri, rate, seconds, conns));
        }
        _ => {
            eprintln!("usage: shadow_load backend ADDR stable|canary\n       shadow_load load URL RATE SECONDS CONNS");
            std::process::exit(2);
        }
    }
}
