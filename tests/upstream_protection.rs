//! Upstream protection on real sockets: response-header timeout, passive
//! outlier ejection and its return, active health checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use http::{Method, StatusCode};
use support::{
    client, eventually, fetch, split_toml, Fault, HttpClient, Split, TestProxy, TestUpstream,
};
use tokio::time::Instant;

/// `n` GETs of `url`, one after another: their statuses.
async fn get_n(c: &HttpClient, url: &str, n: usize) -> Vec<StatusCode> {
    let mut statuses = Vec::new();
    for _ in 0..n {
        statuses.push(fetch(c, Method::GET, url, &[], None).await.unwrap().status);
    }
    statuses
}

/// `n` GETs of `url`, one after another, each answered 200.
async fn get_n_ok(c: &HttpClient, url: &str, n: usize) {
    for _ in 0..n {
        assert_eq!(
            fetch(c, Method::GET, url, &[], None).await.unwrap().status,
            200
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gets_504_within_request_timeout_plus_one_second() {
    let Split {
        stable,
        canary: _canary,
        proxy: p,
    } = Split::start("request_timeout = \"1s\"", "canary_weight = 0.0").await;
    stable.set(&[Fault::Delay(Duration::from_secs(5))]);
    let started = Instant::now();
    let a = fetch(&client(), Method::GET, &p.url("/"), &[], None)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(a.status, 504);
    assert_eq!(a.header("x-grayproxy-arm"), "stable");
    let body: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(body["error"], "upstream timed out");
    assert_eq!(body["route"], "r");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(2),
        "{took:?}"
    );
    let timeouts = p.metric(
        "grayproxy_upstream_failures_total",
        &[("arm", "stable"), ("kind", "timeout")],
    );
    assert_eq!(timeouts, 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outlier_ejection_moves_traffic_off_a_failing_endpoint_and_brings_it_back() {
    let bad = TestUpstream::spawn("bad").await;
    let good = TestUpstream::spawn("good").await;
    let canary = TestUpstream::spawn("canary").await;
    bad.set(&[Fault::Status(503)]);
    let toml = split_toml(
        &[bad.addr, good.addr],
        &[canary.addr],
        "outlier = { consecutive_failures = 5, base_ejection = \"1s\" }",
        "canary_weight = 0.0",
    );
    let p = TestProxy::start(&toml.build()).await;
    let c = client();
    let statuses = get_n(&c, &p.url("/"), 40).await;
    // Round-robin alternates, so `bad` fails 5 in a row within 10 requests;
    // then it is ejected and `good` takes everything.
    assert_eq!(
        bad.count(),
        5,
        "ejected after exactly 5 consecutive failures"
    );
    assert_eq!(good.count(), 35);
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 5);

    // Healed and past its ejection (1 s), it rejoins the rotation: the
    // next requests reach it again.
    bad.set(&[]);
    eventually(Duration::from_secs(5), "bad back in rotation", || {
        let (c, url, bad) = (c.clone(), p.url("/"), &bad);
        async move {
            let a = fetch(&c, Method::GET, &url, &[], None).await.unwrap();
            assert_eq!(a.status, 200);
            bad.count() > 5
        }
    })
    .await;
    let rejoined = bad.count();
    get_n_ok(&c, &p.url("/"), 20).await;
    assert!(
        bad.count() >= rejoined + 9,
        "back in rotation: {}",
        bad.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_endpoint_is_never_ejected() {
    let Split {
        stable: only,
        canary: _canary,
        proxy: p,
    } = Split::start("", "canary_weight = 0.0").await;
    only.set(&[Fault::Status(503)]);
    get_n(&client(), &p.url("/"), 20).await;
    assert_eq!(only.count(), 20, "a single endpoint keeps getting traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_takes_an_endpoint_out_and_back() {
    let a = TestUpstream::spawn("a").await;
    let b = TestUpstream::spawn("b").await;
    let canary = TestUpstream::spawn("canary").await;
    let toml = split_toml(
        &[a.addr, b.addr],
        &[canary.addr],
        "health_check = { path = \"/healthz\", interval = \"100ms\" }",
        "canary_weight = 0.0",
    );
    let p = TestProxy::start(&toml.build()).await;
    let checked = |n: usize| {
        let a = &a;
        move || async move { a.health_checks() >= n }
    };
    eventually(Duration::from_secs(2), "2 health checks", checked(2)).await;
    a.set_health(503);
    let checks = a.health_checks();
    eventually(
        Duration::from_secs(2),
        "2 failed checks",
        checked(checks + 2),
    )
    .await;
    let c = client();
    let before = a.count();
    get_n_ok(&c, &p.url("/"), 20).await;
    assert_eq!(
        a.count(),
        before,
        "an endpoint failing its check gets no traffic"
    );
    a.set_health(200);
    let checks = a.health_checks();
    eventually(
        Duration::from_secs(2),
        "2 passing checks",
        checked(checks + 2),
    )
    .await;
    get_n(&c, &p.url("/"), 20).await;
    assert!(a.count() >= before + 9, "back after a passing check");
}
