//! The one test kit of the integration tests. Every test file that needs a
//! helper declares `mod support;` and takes it from here:
//!
//! - [`upstream`]: [`TestUpstream`], a real upstream on port 0 that counts
//!   and records what it receives and misbehaves on demand ([`Fault`]),
//!   and [`Server`], a bare HTTP/1.1 server for hand-written upstreams;
//! - [`proxy`]: [`TestProxy`], grayproxy started in-process (with its ramp
//!   driver, as `grayproxy run` starts it), and [`Split`], the usual
//!   stable + canary + proxy set-up;
//! - [`binary`]: [`Binary`], the real `grayproxy` executable as a child
//!   process, and [`run_cli`] for one-shot verbs;
//! - [`http`]: an HTTP client, request bodies and [`Answer`];
//! - [`metrics`]: [`Metrics`], a `/metrics` scrape that answers "what is the
//!   value of this sample";
//! - [`config`]: [`config()`] and [`split_config`] build grayproxy.toml
//!   texts; `config::{ok, errs, ...}` look at what the parser says;
//! - [`ramp`]: a ramped route in a temp dir, its two backends
//!   (`ramp::ramped`), open-loop traffic, admin calls;
//! - [`tools`]: the external tools of the ecosystem tests and a real
//!   Prometheus;
//! - [`grpc`]: a tonic recommendation service (unary, server-streaming,
//!   health) that counts calls, connections and cancellations, a tonic
//!   client, raw h2c calls, a config with h2 upstreams and `grpc::split`
//!   (two backends + proxy);
//! - [`fleet`]: a real etcd for the fleet tests;
//! - here: [`eventually`], the one bounded poll, and [`TempDir`].
//!
//! Waiting is always a bounded poll on something observable; tests never
//! sleep and then assume that something happened (or did not).
#![allow(dead_code, unused_imports, clippy::unwrap_used, clippy::expect_used)]

pub mod binary;
pub mod config;
pub mod fleet;
pub mod grpc;
pub mod http;
pub mod metrics;
pub mod proxy;
pub mod ramp;
pub mod tools;
pub mod upstream;

use std::fmt::Display;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub use self::binary::{run_cli, Binary, CliOutput, BIN};
pub use self::config::{config, split_config, split_toml, write_atomically, Toml};
pub use self::http::{
    admin_json, admin_metrics, chunked, client, empty, fetch, full, get, h2c_client, send, Answer,
    Body, BoxError, HttpClient,
};
pub use self::metrics::Metrics;
pub use self::proxy::{route_weight, Split, TestProxy};
pub use self::upstream::{refused_addr, sha256_hex, Fault, Seen, Server, TestUpstream};

/// What a check polled by [`eventually`] returns: `bool` (done or not),
/// `Option<T>` (done with a value) or `Result<T, E>` (done, or not yet and
/// why: the last reason is in the failure message).
pub trait Poll {
    /// What [`eventually`] returns once the check holds.
    type Value;
    /// `Ok` when done; otherwise why not (yet).
    fn poll(self) -> Result<Self::Value, String>;
}

impl Poll for bool {
    type Value = ();
    fn poll(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("still false".into())
        }
    }
}

impl<T> Poll for Option<T> {
    type Value = T;
    fn poll(self) -> Result<T, String> {
        self.ok_or_else(|| "still None".into())
    }
}

impl<T, E: Display> Poll for Result<T, E> {
    type Value = T;
    fn poll(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Polls `check` until it holds and returns its value; fails the test,
/// naming `what` and the last reason, once `within` has passed. The first
/// polls come quickly (10 ms apart), later ones back off to 200 ms, so
/// waiting on a fast event costs little and waiting on a slow one (a
/// Prometheus scrape, a ramp step) does not spin.
pub async fn eventually<F, Fut, P>(within: Duration, what: &str, mut check: F) -> P::Value
where
    F: FnMut() -> Fut,
    Fut: Future<Output = P>,
    P: Poll,
{
    let deadline = Instant::now() + within;
    let mut pause = Duration::from_millis(10);
    loop {
        let why = match check().await.poll() {
            Ok(v) => return v,
            Err(why) => why,
        };
        if Instant::now() >= deadline {
            panic!("timed out after {within:?} waiting for {what}: {why}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 3 / 2).min(Duration::from_millis(200));
    }
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// A new, empty directory.
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "grayproxy-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// A path inside.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A file that must exist, read as text.
pub fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Deterministic pseudo-random bytes (xorshift), for large bodies.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Runs `f(0..n)` on `workers` concurrent tasks; results in index order.
pub async fn fan_out<F, Fut, T>(n: usize, workers: usize, f: F) -> Vec<T>
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = T> + Send,
    T: Send + 'static,
{
    let f = std::sync::Arc::new(f);
    let mut tasks = Vec::new();
    for w in 0..workers {
        let f = f.clone();
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::new();
            let mut i = w;
            while i < n {
                out.push((i, f(i).await));
                i += workers;
            }
            out
        }));
    }
    let mut all = Vec::with_capacity(n);
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    all.sort_by_key(|(i, _)| *i);
    all.into_iter().map(|(_, v)| v).collect()
}
