//! The demo's built-in traffic: `rps` requests per second through the
//! proxy, each from a random user of a fixed population (`x-user-id`, so
//! the route's sticky bucketing keeps a user on one arm), until stopped.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rand::Rng;
use tokio::sync::{watch, Semaphore};
use tokio::time::MissedTickBehavior;

use crate::shutdown::shutdown_signalled;

/// Distinct users the traffic picks from.
pub const USERS: u32 = 20_000;
/// Requests in flight at most (a slow proxy is not buried under new ones).
const MAX_IN_FLIGHT: usize = 512;
/// How often a batch of requests is sent.
const BATCH_EVERY: Duration = Duration::from_millis(10);
/// One request may take this long before it counts as failed.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the users saw, since the traffic started.
#[derive(Debug, Default)]
pub struct TrafficStats {
    /// Requests sent.
    pub sent: AtomicU64,
    /// Answers 2xx–4xx.
    pub ok: AtomicU64,
    /// Answers 5xx.
    pub errors: AtomicU64,
    /// No answer (connection error, timeout).
    pub failed: AtomicU64,
    /// Answers stamped `x-grayproxy-fallback` (a canary failure hidden by stable).
    pub fallbacks: AtomicU64,
    /// Sends skipped because too many requests were in flight.
    pub skipped: AtomicU64,
}

impl TrafficStats {
    /// One line for the live view.
    pub fn summary(&self) -> String {
        let sent = self.sent.load(Ordering::Relaxed);
        let errors = self.errors.load(Ordering::Relaxed) + self.failed.load(Ordering::Relaxed);
        let fallbacks = self.fallbacks.load(Ordering::Relaxed);
        let rate = if sent > 0 {
            100.0 * errors as f64 / sent as f64
        } else {
            0.0
        };
        format!(
            "users saw {errors} errors in {sent} requests ({rate:.2}%); {fallbacks} canary failures were answered by stable (fallback)"
        )
    }
}

/// Sends `rps` requests per second to `proxy` until `stop` turns true.
pub async fn run(
    proxy: SocketAddr,
    rps: f64,
    stats: Arc<TrafficStats>,
    stop: watch::Receiver<bool>,
) {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Empty<Bytes>> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let counted = stats.clone();
    pace(rps, &counted, stop, move |user| {
        let (client, stats) = (client.clone(), stats.clone());
        async move { one(&client, proxy, user, &stats).await }
    })
    .await;
}

/// Starts `send(user)` `rps` times per second, each in its own task, for a
/// random user; at most [`MAX_IN_FLIGHT`] at once (a send over the limit is
/// skipped and counted). Returns when `stop` turns true.
pub async fn pace<F, Fut>(
    rps: f64,
    stats: &TrafficStats,
    mut stop: watch::Receiver<bool>,
    mut send: F,
) where
    F: FnMut(u32) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let in_flight = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let per_batch = rps.max(0.0) * BATCH_EVERY.as_secs_f64();
    let mut owed = 0.0;
    let mut every = tokio::time::interval(BATCH_EVERY);
    every.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = shutdown_signalled(&mut stop) => return,
        }
        owed += per_batch;
        while owed >= 1.0 {
            owed -= 1.0;
            let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                stats.skipped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            let user = rand::thread_rng().gen_range(1..=USERS);
            let sent = send(user);
            tokio::spawn(async move {
                sent.await;
                drop(permit);
            });
        }
    }
}

async fn one(
    client: &Client<HttpConnector, Empty<Bytes>>,
    proxy: SocketAddr,
    user: u32,
    stats: &TrafficStats,
) {
    stats.sent.fetch_add(1, Ordering::Relaxed);
    let req = Request::get(format!("http://{proxy}/api/recommend?limit=3"))
        .header("x-user-id", format!("user-{user}"))
        .body(Empty::new());
    let Ok(req) = req else {
        stats.failed.fetch_add(1, Ordering::Relaxed);
        return;
    };
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let resp = client.request(req).await.ok()?;
        let status = resp.status();
        let fallback = resp.headers().contains_key("x-grayproxy-fallback");
        // Read the body so the connection goes back to the pool.
        resp.into_body().collect().await.ok()?;
        Some((status, fallback))
    })
    .await;
    match answer {
        Ok(Some((status, fallback))) => {
            if fallback {
                stats.fallbacks.fetch_add(1, Ordering::Relaxed);
            }
            if status.is_server_error() {
                stats.errors.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.ok.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(None) | Err(_) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
        }
    }
}
