//! Upstream protection on real sockets: response-header timeout, passive
//! outlier ejection and its return, active health checks.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support_resilience;

use std::time::Duration;

use http::Method;
use support_resilience::{
    client, config, eventually, send, with_stable_keys, Fault, Proxy, TestUpstream,
};
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_upstream_gets_504_within_request_timeout_plus_one_second() {
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    stable.set(Fault::Delay(Duration::from_secs(5)));
    let p = Proxy::start(&config(
        &[stable.addr],
        &[canary.addr],
        "request_timeout = \"1s\"",
        "canary_weight = 0.0",
    ))
    .await;
    let started = Instant::now();
    let a = send(&client(), Method::GET, &p.url("/"), None)
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(a.status, 504);
    assert_eq!(a.header("x-grayproxy-arm"), Some("stable"));
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
    bad.set(Fault::Status(503));
    let toml = with_stable_keys(
        &config(
            &[bad.addr, good.addr],
            &[canary.addr],
            "",
            "canary_weight = 0.0",
        ),
        "outlier = { consecutive_failures = 5, base_ejection = \"1s\" }",
    );
    let p = Proxy::start(&toml).await;
    let c = client();
    let mut statuses = Vec::new();
    for _ in 0..40 {
        statuses.push(
            send(&c, Method::GET, &p.url("/"), None)
                .await
                .unwrap()
                .status,
        );
    }
    // Round-robin alternates, so `bad` fails 5 in a row within 10 requests;
    // then it is ejected and `good` takes everything.
    assert_eq!(
        bad.count(),
        5,
        "ejected after exactly 5 consecutive failures"
    );
    assert_eq!(good.count(), 35);
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 5);

    // Healed and past its ejection, it rejoins the rotation.
    bad.set(Fault::None);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for _ in 0..20 {
        assert_eq!(
            send(&c, Method::GET, &p.url("/"), None)
                .await
                .unwrap()
                .status,
            200
        );
    }
    assert!(bad.count() >= 5 + 9, "back in rotation: {}", bad.count());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_endpoint_is_never_ejected() {
    let only = TestUpstream::spawn("only").await;
    let canary = TestUpstream::spawn("canary").await;
    only.set(Fault::Status(503));
    let p = Proxy::start(&config(
        &[only.addr],
        &[canary.addr],
        "",
        "canary_weight = 0.0",
    ))
    .await;
    let c = client();
    for _ in 0..20 {
        send(&c, Method::GET, &p.url("/"), None).await.unwrap();
    }
    assert_eq!(only.count(), 20, "a single endpoint keeps getting traffic");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_check_takes_an_endpoint_out_and_back() {
    let a = TestUpstream::spawn("a").await;
    let b = TestUpstream::spawn("b").await;
    let canary = TestUpstream::spawn("canary").await;
    let toml = with_stable_keys(
        &config(&[a.addr, b.addr], &[canary.addr], "", "canary_weight = 0.0"),
        "health_check = { path = \"/healthz\", interval = \"100ms\" }",
    );
    let p = Proxy::start(&toml).await;
    assert!(eventually(Duration::from_secs(2), || a.health_checks() >= 2).await);
    a.set_health(503);
    let checks = a.health_checks();
    assert!(eventually(Duration::from_secs(2), || a.health_checks() >= checks + 2).await);
    let c = client();
    let before = a.count();
    for _ in 0..20 {
        assert_eq!(
            send(&c, Method::GET, &p.url("/"), None)
                .await
                .unwrap()
                .status,
            200
        );
    }
    assert_eq!(
        a.count(),
        before,
        "an endpoint failing its check gets no traffic"
    );
    a.set_health(200);
    let checks = a.health_checks();
    assert!(eventually(Duration::from_secs(2), || a.health_checks() >= checks + 2).await);
    for _ in 0..20 {
        send(&c, Method::GET, &p.url("/"), None).await.unwrap();
    }
    assert!(a.count() >= before + 9, "back after a passing check");
}
