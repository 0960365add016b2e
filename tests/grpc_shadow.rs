//! Shadow traffic on a gRPC route: stable-answered calls are mirrored to the
//! canary, and both answers are judged by their `grpc-status` (a failed gRPC
//! call is an HTTP 200 with `grpc-status: 14` in its trailers).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use support::eventually;
use support::grpc::{channel, grpc_responses, recommend, split};

const SHADOW: &str =
    "canary_weight = 0.0\n\n[routes.shadow]\nmethods = [\"POST\"]\nnoise_percent = 0.0\n";

#[tokio::test]
async fn a_failing_canary_is_seen_by_its_grpc_status_while_users_get_stable() {
    // The canary answers UNAVAILABLE (trailers-only) on 4 calls in 10.
    let (_stable, canary, proxy) = split(Duration::ZERO, 4, SHADOW).await;
    let ch = channel(proxy.proxy).await;
    for i in 0..50 {
        let reply = recommend(&ch, &format!("u{i}"), None).await.unwrap();
        assert_eq!(reply.get_ref().model, "v1", "users get stable only");
    }
    eventually(
        Duration::from_secs(10),
        "50 mirrored calls compared",
        || async {
            let s = proxy.status().await;
            let shadow = &s["routes"][0]["shadow"];
            (shadow["compared"] == 50).then(|| shadow.clone())
        },
    )
    .await;
    let s = proxy.status().await;
    let shadow = &s["routes"][0]["shadow"];
    assert_eq!(shadow["canary_errors"], 20, "{shadow:#}");
    assert_eq!(shadow["stable_errors"], 0, "{shadow:#}");
    // grpc-status 0 against 14: a status difference on each failed call.
    assert_eq!(shadow["status_mismatches"], 20, "{shadow:#}");
    assert_eq!(canary.state.calls.load(Ordering::SeqCst), 50);
    let m = proxy.metrics().await;
    let result = |r| [("route", "reco"), ("result", r)];
    assert_eq!(
        m.value("grayproxy_shadow_requests_total", &result("canary_error")),
        20.0
    );
    assert_eq!(
        m.value("grayproxy_shadow_requests_total", &result("compared")),
        30.0
    );
    // Mirrored calls never count as user traffic; stable's calls still
    // count at their trailers (the tee does not hide the gRPC body).
    assert_eq!(grpc_responses(&m, "stable", "OK"), 50.0);
    assert_eq!(grpc_responses(&m, "canary", "UNAVAILABLE"), 0.0);
}

#[tokio::test]
async fn a_healthy_grpc_canary_shows_no_errors_and_no_status_differences() {
    let (_stable, _canary, proxy) = split(Duration::ZERO, 0, SHADOW).await;
    let ch = channel(proxy.proxy).await;
    for i in 0..20 {
        recommend(&ch, &format!("u{i}"), None).await.unwrap();
    }
    let shadow = eventually(
        Duration::from_secs(10),
        "20 mirrored calls compared",
        || async {
            let s = proxy.status().await;
            let shadow = &s["routes"][0]["shadow"];
            (shadow["compared"] == 20).then(|| shadow.clone())
        },
    )
    .await;
    assert_eq!(shadow["canary_errors"], 0, "{shadow:#}");
    assert_eq!(shadow["status_mismatches"], 0, "{shadow:#}");
}
