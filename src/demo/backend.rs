//! The demo's recommendation backends: small hyper 1 servers on
//! `127.0.0.1:0`. `GET /api/recommend?user=ID` (or the `x-user-id` header)
//! answers a short JSON list of products, the same list for the same user.
//! Latency is log-normal around a few milliseconds; the canary can add a
//! fixed delay, answer a share of requests with 503, and reshuffle a share
//! of its lists (a bad ranking model: shadow traffic's RBO drops).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rand::Rng;
use rand_distr::{Distribution, LogNormal};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::shutdown::shutdown_signalled;

/// The catalogue the backends recommend from.
/// 13 entries: a prime count, so any stride visits distinct products.
const PRODUCTS: [&str; 13] = [
    "espresso-machine",
    "burr-grinder",
    "milk-frother",
    "pour-over-kettle",
    "aeropress",
    "french-press",
    "coffee-scale",
    "cold-brew-jar",
    "moka-pot",
    "tamper",
    "knock-box",
    "travel-mug",
    "filter-papers",
];

/// How one demo backend behaves.
#[derive(Clone, Debug, PartialEq)]
pub struct BackendSpec {
    /// Version name put into every answer (`reco-v1`, `reco-v2`).
    pub version: &'static str,
    /// Share of requests answered with 503, `0.0..=1.0`.
    pub error_rate: f64,
    /// Median of the log-normal service time.
    pub median_latency: Duration,
    /// σ of ln(service time).
    pub latency_sigma: f64,
    /// Fixed delay added to every answer.
    pub added_latency: Duration,
    /// Share of answers whose list is reshuffled: three products drawn at
    /// random from the whole catalogue, in random order, `0.0..=1.0`.
    pub reorder: f64,
}

impl BackendSpec {
    /// A healthy backend: median 3 ms, σ 0.5 (p99 ≈ 10 ms), no errors.
    pub fn healthy(version: &'static str) -> BackendSpec {
        BackendSpec {
            version,
            error_rate: 0.0,
            median_latency: Duration::from_millis(3),
            latency_sigma: 0.5,
            added_latency: Duration::ZERO,
            reorder: 0.0,
        }
    }
}

impl BackendSpec {
    /// One request's fate, drawn before the wait: its service time (added
    /// latency included) and whether it fails.
    pub fn draw(&self) -> (Duration, bool) {
        let mut rng = rand::thread_rng();
        let median = self.median_latency.as_secs_f64();
        // A zero median is no service time at all (a benchmark's backend).
        let service = if median > 0.0 {
            LogNormal::new(median.ln(), self.latency_sigma.max(0.0))
                .map_or(median, |d| d.sample(&mut rng))
        } else {
            0.0
        };
        let delay = Duration::from_secs_f64(service.min(10.0)) + self.added_latency;
        (delay, rng.gen::<f64>() < self.error_rate)
    }
}

/// A running demo backend.
#[derive(Clone, Debug)]
pub struct DemoBackend {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Requests served so far.
    pub requests: Arc<AtomicU64>,
}

/// Binds `127.0.0.1:0` and serves `spec` until `shutdown` turns true.
pub async fn spawn(
    spec: BackendSpec,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<DemoBackend> {
    let requests = Arc::new(AtomicU64::new(0));
    let (spec, count) = (Arc::new(spec), requests.clone());
    let addr = accept_loop(shutdown, move |stream| {
        let (spec, count) = (spec.clone(), count.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req: Request<Incoming>| {
                count.fetch_add(1, Ordering::Relaxed);
                answer(spec.clone(), req)
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    })
    .await?;
    Ok(DemoBackend { addr, requests })
}

/// Binds `127.0.0.1:0` and hands every accepted connection to `connection`
/// until `shutdown` turns true (the HTTP and the gRPC demo backends alike).
pub(super) async fn accept_loop(
    mut shutdown: watch::Receiver<bool>,
    connection: impl Fn(TcpStream) + Send + 'static,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                () = shutdown_signalled(&mut shutdown) => return,
            };
            let Ok((stream, _)) = accepted else {
                // Out of file descriptors and the like: back off a little.
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            connection(stream);
        }
    });
    Ok(addr)
}

/// What one request gets: the decision is made before the wait.
async fn answer(
    spec: Arc<BackendSpec>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (delay, fail) = spec.draw();
    let shuffle = {
        let mut rng = rand::thread_rng();
        (rng.gen::<f64>() < spec.reorder).then(|| rng.gen::<u64>())
    };
    tokio::time::sleep(delay).await;
    let (status, body) = if req.uri().path() != "/api/recommend" {
        (
            StatusCode::NOT_FOUND,
            r#"{"error":"not found; try /api/recommend?user=alice"}"#.to_string(),
        )
    } else if fail {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(r#"{{"error":"{} is failing (demo fault)"}}"#, spec.version),
        )
    } else {
        let user = user_of(&req);
        let body = match shuffle {
            Some(seed) => reshuffled(spec.version, &user, seed),
            None => recommendations(spec.version, &user),
        };
        (StatusCode::OK, body)
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Ok(resp)
}

/// The user: the `user` query parameter, else `x-user-id`, else `anonymous`.
fn user_of<B>(req: &Request<B>) -> String {
    let from_query = req.uri().query().and_then(|q| {
        q.split('&')
            .filter_map(|kv| kv.split_once('='))
            .find(|(k, _)| *k == "user")
            .map(|(_, v)| v.to_string())
    });
    from_query
        .or_else(|| {
            req.headers()
                .get("x-user-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_else(|| "anonymous".to_string())
}

/// FNV-1a: a stable hash, so a user gets the same list on every run.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Three distinct products and their scores, chosen by the user's hash.
pub fn picks(user: &str) -> [(&'static str, f64); 3] {
    picks_of(fnv1a(user))
}

/// Three distinct products (a stride through a prime-sized catalogue from
/// a start, both taken from `h`), scored in rank order.
fn picks_of(h: u64) -> [(&'static str, f64); 3] {
    let n = PRODUCTS.len() as u64;
    let first = h % n;
    [0u64, 1, 2].map(|i| {
        let idx = ((first + i * (1 + (h >> 32) % (n - 1))) % n) as usize;
        let score = 0.95 - 0.1 * i as f64 - ((h >> (8 * i)) % 7) as f64 / 100.0;
        (PRODUCTS[idx], (score * 100.0).round() / 100.0)
    })
}

/// The JSON answer: the user's three [`picks`].
pub fn recommendations(version: &str, user: &str) -> String {
    answer_json(version, user, picks(user))
}

/// A reshuffled answer: three distinct products picked by `seed` instead of
/// the user's hash, so the list has little in common with the usual one.
pub fn reshuffled(version: &str, user: &str, seed: u64) -> String {
    answer_json(version, user, picks_of(seed))
}

fn answer_json(version: &str, user: &str, picks: [(&'static str, f64); 3]) -> String {
    let picks: Vec<serde_json::Value> = picks
        .into_iter()
        .map(|(product, score)| serde_json::json!({"product": product, "score": score}))
        .collect();
    serde_json::json!({"user": user, "served_by": version, "recommendations": picks}).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn recommendations_are_deterministic_per_user() {
        let a = recommendations("reco-v1", "alice");
        assert_eq!(a, recommendations("reco-v1", "alice"));
        assert_ne!(a, recommendations("reco-v1", "bob"));
        let v: serde_json::Value = serde_json::from_str(&a).unwrap();
        let recs = v["recommendations"].as_array().unwrap();
        assert_eq!(recs.len(), 3);
        let names: std::collections::HashSet<_> = recs
            .iter()
            .map(|r| r["product"].as_str().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{a}");
    }

    #[test]
    fn reshuffled_lists_are_valid_and_differ_from_the_usual_one() {
        let usual = recommendations("reco-v2", "alice");
        let products = |s: &str| -> Vec<String> {
            let v: serde_json::Value = serde_json::from_str(s).unwrap();
            v["recommendations"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| r["product"].as_str().unwrap().to_string())
                .collect()
        };
        let differ = (0..50u64)
            .map(|seed| reshuffled("reco-v2", "alice", seed.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
            .filter(|s| {
                let p = products(s);
                let distinct: std::collections::HashSet<_> = p.iter().collect();
                assert_eq!(distinct.len(), 3, "{s}");
                p != products(&usual)
            })
            .count();
        assert!(differ >= 45, "{differ} of 50 reshuffled lists differ");
    }

    #[test]
    fn user_from_query_then_header() {
        let r = Request::get("/api/recommend?x=1&user=carol")
            .header("x-user-id", "dave")
            .body(())
            .unwrap();
        assert_eq!(user_of(&r), "carol");
        let r = Request::get("/api/recommend")
            .header("x-user-id", "dave")
            .body(())
            .unwrap();
        assert_eq!(user_of(&r), "dave");
    }
}
