//! Per-request fallback (README, "Routing semantics") on real sockets: the method × body ×
//! failure matrix, a canary killed under load, and the fallback budget.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use support::{
    client, eventually, fetch, refused_addr, split_config, Fault, Split, TestProxy, TestUpstream,
};
use tokio::time::Instant;

const REQUEST_TIMEOUT: Duration = Duration::from_millis(300);

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Status503,
    Reset,
    Refused,
    Timeout,
}

impl Kind {
    /// The `kind` label of `grayproxy_upstream_failures_total`, if any.
    fn failure_label(self) -> Option<&'static str> {
        match self {
            Kind::Status503 => None,
            Kind::Reset => Some("reset"),
            Kind::Refused => Some("connect"),
            Kind::Timeout => Some("timeout"),
        }
    }

    /// What the user gets when the canary's answer stands.
    fn canary_status(self) -> u16 {
        match self {
            Kind::Status503 => 503,
            Kind::Reset | Kind::Refused => 502,
            Kind::Timeout => 504,
        }
    }
}

/// The contract's rule: safe methods fall back on any eligible failure when
/// the request can be replayed (no body the canary consumed); any request
/// falls back when the canary never received it (refused).
fn expect_fallback(method: &Method, has_body: bool, kind: Kind) -> bool {
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    kind == Kind::Refused || (safe && !has_body)
}

struct Deltas {
    canary_5xx: f64,
    stable_2xx: f64,
    failures: f64,
    fallbacks: f64,
}

fn deltas(p: &TestProxy, kind: Kind) -> Deltas {
    let failures = kind.failure_label().map_or(0.0, |k| {
        p.metric(
            "grayproxy_upstream_failures_total",
            &[("route", "r"), ("arm", "canary"), ("kind", k)],
        )
    });
    Deltas {
        canary_5xx: p.metric(
            "grayproxy_requests_total",
            &[("route", "r"), ("arm", "canary"), ("code", "5xx")],
        ),
        stable_2xx: p.metric(
            "grayproxy_requests_total",
            &[("route", "r"), ("arm", "stable"), ("code", "2xx")],
        ),
        failures,
        fallbacks: p.metric("grayproxy_fallbacks_total", &[("route", "r")]),
    }
}

async fn run_matrix(kind: Kind) {
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let canary_addr = if kind == Kind::Refused {
        refused_addr().await
    } else {
        canary.addr
    };
    canary.set(&match kind {
        Kind::Status503 => vec![Fault::Status(503)],
        Kind::Reset => vec![Fault::Reset],
        Kind::Refused => vec![],
        Kind::Timeout => vec![Fault::Delay(Duration::from_secs(3))],
    });
    // Budget 1.0: the matrix checks eligibility; the budget has its own test.
    let p = TestProxy::start(&split_config(
        &[stable.addr],
        &[canary_addr],
        "request_timeout = \"300ms\"",
        "canary_weight = 100.0\nfallback_budget = 1.0",
    ))
    .await;
    let c = client();
    for method in [Method::GET, Method::HEAD, Method::POST] {
        for has_body in [false, true] {
            let case = format!("{kind:?} {method} body={has_body}");
            let before = deltas(&p, kind);
            let (stable_seen, canary_seen) = (stable.count(), canary.count());
            let started = Instant::now();
            let body = has_body.then_some("payload-123");
            let a = fetch(&c, method.clone(), &p.url("/x"), &[], body)
                .await
                .unwrap_or_else(|e| panic!("{case}: transport error {e}"));
            let took = started.elapsed();
            let after = deltas(&p, kind);
            let fell_back = expect_fallback(&method, has_body, kind);

            // What the user sees.
            if fell_back {
                assert_eq!(a.status, 200, "{case}");
                assert_eq!(a.header("x-grayproxy-arm"), "stable", "{case}");
                assert_eq!(a.header("x-grayproxy-fallback"), "canary", "{case}");
                assert_eq!(a.header("x-upstream"), "stable", "{case}");
                if method != Method::HEAD {
                    // Stable echoes the body it received, or names itself.
                    assert_eq!(&a.body[..], body.unwrap_or("stable").as_bytes(), "{case}");
                }
            } else {
                assert_eq!(a.status, kind.canary_status(), "{case}");
                assert_eq!(a.header("x-grayproxy-arm"), "canary", "{case}");
                assert!(!a.headers.contains_key("x-grayproxy-fallback"), "{case}");
            }
            // A fallback gets a fresh request_timeout; a timeout never takes
            // much longer than request_timeout.
            let bound = match kind {
                Kind::Timeout => REQUEST_TIMEOUT * 2 + Duration::from_secs(1),
                _ => Duration::from_secs(1),
            };
            assert!(took < bound, "{case}: took {took:?}");

            // What the upstreams saw: the canary once (never when refused),
            // stable once exactly when falling back, with the body intact.
            let canary_got = canary.count() - canary_seen;
            let expected_canary = usize::from(kind != Kind::Refused);
            assert_eq!(canary_got, expected_canary, "{case}: canary requests");
            assert_eq!(
                stable.count() - stable_seen,
                usize::from(fell_back),
                "{case}: stable requests"
            );
            if fell_back {
                let seen = stable.seen().pop().unwrap();
                assert_eq!(seen.method, method, "{case}");
                assert_eq!(seen.headers["x-grayproxy-arm"], "stable", "{case}");
                assert_eq!(&seen.body[..], body.unwrap_or("").as_bytes(), "{case}");
            }

            // Metrics: the canary's failure always counts against the canary.
            assert_eq!(
                after.canary_5xx - before.canary_5xx,
                1.0,
                "{case}: canary 5xx"
            );
            let failure = if kind.failure_label().is_some() {
                1.0
            } else {
                0.0
            };
            assert_eq!(
                after.failures - before.failures,
                failure,
                "{case}: failures"
            );
            let fb = if fell_back { 1.0 } else { 0.0 };
            assert_eq!(after.fallbacks - before.fallbacks, fb, "{case}: fallbacks");
            assert_eq!(
                after.stable_2xx - before.stable_2xx,
                fb,
                "{case}: stable 2xx"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_canary_503() {
    run_matrix(Kind::Status503).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_canary_reset() {
    run_matrix(Kind::Reset).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_canary_refused() {
    run_matrix(Kind::Refused).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn matrix_canary_timeout() {
    run_matrix(Kind::Timeout).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_off_means_canary_answer_stands() {
    let Split {
        stable,
        canary,
        proxy: p,
    } = Split::start("", "canary_weight = 100.0\nfallback = false").await;
    canary.set(&[Fault::Status(503)]);
    let a = fetch(&client(), Method::GET, &p.url("/"), &[], None)
        .await
        .unwrap();
    assert_eq!(a.status, 503);
    assert_eq!(a.header("x-grayproxy-arm"), "canary");
    assert_eq!(stable.count(), 0);
}

/// Runs `clients` loops of GETs for `for_how_long`; returns (ok, errors).
async fn load(url: String, clients: usize, for_how_long: Duration) -> (u64, u64, Vec<String>) {
    let ok = Arc::new(AtomicU64::new(0));
    let bad = Arc::new(AtomicU64::new(0));
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    let end = Instant::now() + for_how_long;
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (ok, bad, samples, url) = (ok.clone(), bad.clone(), samples.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let c = client();
            while Instant::now() < end {
                match fetch(&c, Method::GET, &url, &[], None).await {
                    Ok(a) if a.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    other => {
                        let mut s = samples.lock().unwrap();
                        if s.len() < 5 {
                            s.push(format!("{other:?}"));
                        }
                        bad.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let samples = samples.lock().unwrap().clone();
    (
        ok.load(Ordering::Relaxed),
        bad.load(Ordering::Relaxed),
        samples,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_killed_mid_load_costs_users_nothing() {
    // 10 %: fallbacks after the kill stay well inside the default 0.2 budget.
    let Split {
        stable: _stable,
        canary,
        proxy: p,
    } = Split::start("", "canary_weight = 10.0").await;
    let run = tokio::spawn(load(p.url("/api"), 8, Duration::from_secs(10)));
    // Kill it once it is really serving its share of the load.
    eventually(Duration::from_secs(5), "the canary under load", || async {
        canary.count() >= 50
    })
    .await;
    let canary_before_kill = canary.count();
    let _refusing = canary.refuse().await;
    let (ok, bad, samples) = run.await.unwrap();
    let failures = p.metric(
        "grayproxy_upstream_failures_total",
        &[("route", "r"), ("arm", "canary")],
    );
    let canary_5xx = p.metric(
        "grayproxy_requests_total",
        &[("route", "r"), ("arm", "canary"), ("code", "5xx")],
    );
    let fallbacks = p.metric("grayproxy_fallbacks_total", &[("route", "r")]);
    eprintln!(
        "killed canary: {ok} ok, {bad} user-visible errors, canary served {canary_before_kill} \
         before the kill, canary failures {failures}, canary 5xx {canary_5xx}, fallbacks {fallbacks}"
    );
    assert_eq!(bad, 0, "user-visible errors: {samples:?}");
    assert!(ok > 1000, "too little load to mean anything: {ok}");
    assert!(canary_before_kill > 0);
    assert!(failures > 0.0, "canary failures must show in metrics");
    assert_eq!(canary_5xx, failures, "every canary failure is a canary 5xx");
    assert_eq!(fallbacks, failures, "every failure was answered by stable");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_failing_everything_stays_within_budget() {
    let Split {
        stable,
        canary,
        proxy: p,
    } = Split::start("", "canary_weight = 100.0\nfallback_budget = 0.2").await;
    canary.set(&[Fault::Status(503)]);
    // Well under 10 s: the whole run is inside one budget window.
    let (ok, bad, _) = load(p.url("/"), 4, Duration::from_secs(3)).await;
    let requests = ok + bad;
    let fallbacks = p.metric("grayproxy_fallbacks_total", &[("route", "r")]);
    let extra = stable.count() as u64;
    let cap = 0.2 * requests as f64 + 10.0;
    eprintln!(
        "canary 503s: {requests} requests, {extra} extra on stable (cap {cap:.0}), \
         {bad} canary 503s reached users"
    );
    assert!(requests > 200, "too little load: {requests}");
    assert_eq!(extra as f64, fallbacks, "stable saw exactly the fallbacks");
    assert!(extra as f64 <= cap, "{extra} fallbacks > cap {cap}");
    // The budget is spent, not starved: at least most of it is used.
    assert!(
        extra as f64 >= 0.8 * (cap - 10.0),
        "{extra} fallbacks, cap {cap}"
    );
    assert_eq!(ok, extra, "every 200 was a fallback");
}
