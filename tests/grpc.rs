//! gRPC through the proxy, end to end: tonic backends behind h2 upstreams,
//! a tonic client in front (h2c).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::grpc::{
    self as grpc_support, channel, config, grpc_responses, raw_call, recommend, split,
    stream_items, Backend,
};
use support::{eventually, refused_addr, TestProxy};
use tonic::Code;

const NO_DELAY: Duration = Duration::ZERO;

#[tokio::test]
async fn unary_and_streaming_calls_keep_metadata_and_trailers() {
    let (_stable, _canary, proxy) = split(NO_DELAY, 0, "canary_weight = 0.0").await;
    let ch = channel(proxy.proxy).await;

    let reply = recommend(&ch, "user-7", None).await.unwrap();
    assert_eq!(reply.metadata().get("x-backend").unwrap(), "v1");
    assert_eq!(reply.metadata().get("x-echo-user").unwrap(), "user-7");
    assert_eq!(reply.metadata().get("x-grayproxy-arm").unwrap(), "stable");
    assert_eq!(
        reply.get_ref().items,
        ["user-7-item-0", "user-7-item-1", "user-7-item-2"]
    );

    // A stream of 50 messages, then OK trailers.
    let mut s = stream_items(&ch, "u", 50).await.unwrap().into_inner();
    let mut n = 0;
    while let Some(item) = s.message().await.unwrap() {
        assert_eq!(item.items, [format!("item-{n}")]);
        n += 1;
    }
    assert_eq!(n, 50);

    // A stream that ends in an error: messages, then real trailers with
    // grpc-status, grpc-message and binary metadata.
    let mut s = stream_items(&ch, "fail-at-end", 3)
        .await
        .unwrap()
        .into_inner();
    for _ in 0..3 {
        assert!(s.message().await.unwrap().is_some());
    }
    let err = s.message().await.unwrap_err();
    assert_eq!(err.code(), Code::DataLoss);
    assert_eq!(err.message(), "lost the tail");
    let bin = err
        .metadata()
        .get_bin("x-detail-bin")
        .unwrap()
        .to_bytes()
        .unwrap();
    assert_eq!(&bin[..], &[9, 8, 7]);

    let m = proxy.metrics().await;
    assert_eq!(grpc_responses(&m, "stable", "OK"), 2.0);
    assert_eq!(grpc_responses(&m, "stable", "DATA_LOSS"), 1.0);
}

#[tokio::test]
async fn canary_unavailable_calls_count_as_errors() {
    let (_stable, _canary, proxy) =
        split(NO_DELAY, 4, "canary_weight = 100.0\nfallback = false").await;
    let ch = channel(proxy.proxy).await;
    let mut unavailable = 0;
    for i in 0..50 {
        match recommend(&ch, &format!("u{i}"), None).await {
            Ok(r) => assert_eq!(r.get_ref().model, "v2"),
            Err(s) => {
                assert_eq!(s.code(), Code::Unavailable);
                assert_eq!(s.message(), "canary overloaded");
                // Trailers-only answer: its binary metadata came through too.
                let bin = s
                    .metadata()
                    .get_bin("x-detail-bin")
                    .unwrap()
                    .to_bytes()
                    .unwrap();
                assert_eq!(&bin[..], &[0, 1, 2, 255]);
                assert_eq!(s.metadata().get("x-grayproxy-arm").unwrap(), "canary");
                unavailable += 1;
            }
        }
    }
    assert_eq!(unavailable, 20);
    let m = proxy.metrics().await;
    assert_eq!(grpc_responses(&m, "canary", "UNAVAILABLE"), 20.0);
    assert_eq!(grpc_responses(&m, "canary", "OK"), 30.0);
    // HTTP class stays 2xx; the error accounting is the gRPC status.
    let http = [("route", "reco"), ("arm", "canary"), ("code", "2xx")];
    assert_eq!(m.value("grayproxy_requests_total", &http), 50.0);
    eventually(
        Duration::from_secs(5),
        "/status counts the errors",
        || async {
            let s = proxy.status().await;
            let canary = &s["routes"][0]["arms"]["canary"];
            canary["requests"] == 50 && canary["errors"] == 20
        },
    )
    .await;
}

#[tokio::test]
async fn deadline_through_the_proxy_is_deadline_exceeded_and_cancels_upstream() {
    let (stable, _canary, proxy) = split(Duration::from_secs(5), 0, "canary_weight = 0.0").await;
    // A raw h2c call that states its deadline but does not enforce it
    // itself (tonic's client would give up on its own at the same time):
    // the answer must come from the proxy.
    let req = raw_call(
        proxy.url(grpc_support::RECOMMEND),
        "300m",
        &grpc_support::RecommendRequest {
            user_id: "slow".into(),
            count: 1,
        },
    );
    let started = tokio::time::Instant::now();
    let answer = support::send(&support::h2c_client(), req).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(answer.status, 200);
    assert_eq!(answer.header("grpc-status"), "4", "{answer:?}");
    assert_eq!(answer.header("content-type"), "application/grpc");
    assert_eq!(answer.arm(), "stable");
    assert!(answer.body.is_empty(), "trailers-only");
    eventually(
        Duration::from_secs(3),
        "the upstream call is cancelled",
        || async {
            stable
                .state
                .cancelled
                .load(std::sync::atomic::Ordering::SeqCst)
                == 1
        },
    )
    .await;
    let m = proxy.metrics().await;
    assert_eq!(grpc_responses(&m, "stable", "DEADLINE_EXCEEDED"), 1.0);
    let t = [("route", "reco"), ("arm", "stable"), ("kind", "timeout")];
    assert_eq!(m.value("grayproxy_upstream_failures_total", &t), 1.0);
}

#[tokio::test]
async fn proxy_made_answers_are_grpc_answers() {
    // Nothing listens on the canary's port; the stable arm is fine.
    let stable = Backend::spawn("v1", 0, NO_DELAY).await;
    let dead_addr = refused_addr().await;
    let proxy = TestProxy::start(&config(
        stable.addr,
        dead_addr,
        "canary_weight = 100.0\nfallback = false",
    ))
    .await;
    let ch = channel(proxy.proxy).await;
    let err = recommend(&ch, "u", None).await.unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(err.message(), "upstream unreachable");
    assert_eq!(err.metadata().get("x-grayproxy-arm").unwrap(), "canary");
    let m = proxy.metrics().await;
    assert_eq!(grpc_responses(&m, "canary", "UNAVAILABLE"), 1.0);

    // No route: UNIMPLEMENTED.
    let mut client = tonic::client::Grpc::new(ch.clone());
    client.ready().await.unwrap();
    let err = client
        .unary::<_, grpc_support::RecommendReply, _>(
            tonic::Request::new(grpc_support::RecommendRequest::default()),
            http::uri::PathAndQuery::from_static("/other.Service/Method"),
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented);
}

#[tokio::test]
async fn connect_failure_falls_back_to_stable() {
    let stable = Backend::spawn("v1", 0, NO_DELAY).await;
    let dead_addr = refused_addr().await;
    let proxy = TestProxy::start(&config(stable.addr, dead_addr, "canary_weight = 100.0")).await;
    let ch = channel(proxy.proxy).await;
    let reply = recommend(&ch, "u", None).await.unwrap();
    assert_eq!(reply.get_ref().model, "v1");
    assert_eq!(reply.metadata().get("x-grayproxy-arm").unwrap(), "stable");
    assert_eq!(
        reply.metadata().get("x-grayproxy-fallback").unwrap(),
        "canary"
    );
    let m = proxy.metrics().await;
    assert_eq!(
        m.value("grayproxy_fallbacks_total", &[("route", "reco")]),
        1.0
    );
}

#[tokio::test]
async fn idempotent_method_retries_canary_unavailable_on_stable() {
    let extra = "canary_weight = 100.0\ngrpc_idempotent = [\"/reco.Recommender/Recommend\"]";
    let (_stable, _canary, proxy) = split(NO_DELAY, 10, extra).await;
    let ch = channel(proxy.proxy).await;
    let reply = recommend(&ch, "u", None).await.unwrap();
    assert_eq!(reply.get_ref().model, "v1");
    assert_eq!(
        reply.get_ref().items.len(),
        3,
        "the request body was replayed whole"
    );
    assert_eq!(
        reply.metadata().get("x-grayproxy-fallback").unwrap(),
        "canary"
    );
    let m = proxy.metrics().await;
    assert_eq!(grpc_responses(&m, "canary", "UNAVAILABLE"), 1.0);
}

#[tokio::test]
async fn many_concurrent_calls_share_one_upstream_connection() {
    let (stable, _canary, proxy) = split(Duration::from_millis(50), 0, "canary_weight = 0.0").await;
    // Several client connections, so the proxy sees real concurrency.
    let mut calls = Vec::new();
    for c in 0..4 {
        let ch = channel(proxy.proxy).await;
        for i in 0..50 {
            let ch = ch.clone();
            calls.push(tokio::spawn(async move {
                recommend(&ch, &format!("c{c}-{i}"), None).await
            }));
        }
    }
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert_eq!(
        stable.state.calls.load(std::sync::atomic::Ordering::SeqCst),
        200
    );
    assert_eq!(
        stable
            .state
            .accepted
            .load(std::sync::atomic::Ordering::SeqCst),
        1
    );
}

#[tokio::test]
async fn upstream_restart_mid_traffic_loses_no_call() {
    let (mut stable, _canary, proxy) =
        split(Duration::from_millis(300), 0, "canary_weight = 0.0").await;
    let ch = channel(proxy.proxy).await;
    let call = |i: usize| {
        let ch = ch.clone();
        tokio::spawn(async move { recommend(&ch, &format!("u{i}"), None).await })
    };
    let first: Vec<_> = (0..20).map(call).collect();
    // All twenty are on the old server before it starts to go away.
    let state = stable.state.clone();
    eventually(Duration::from_secs(5), "20 calls in flight", || async {
        state.calls.load(std::sync::atomic::Ordering::SeqCst) == 20
    })
    .await;
    stable.begin_shutdown();
    let restarted = Backend::respawn(stable.addr, state.clone()).await;
    let second: Vec<_> = (20..40).map(call).collect();
    for c in first.into_iter().chain(second) {
        let reply = c
            .await
            .unwrap()
            .expect("no call is lost across the restart");
        assert_eq!(reply.get_ref().model, "v1");
    }
    stable.drained().await;
    // The second twenty may still have gone to the old server (its first
    // GOAWAY does not refuse streams already on the way); once it has
    // closed, a call must reach the restarted one over a new connection.
    let after = recommend(&ch, "u40", None)
        .await
        .expect("a call after the old server closed is served");
    assert_eq!(after.get_ref().model, "v1");
    assert_eq!(state.calls.load(std::sync::atomic::Ordering::SeqCst), 41);
    assert_eq!(state.accepted.load(std::sync::atomic::Ordering::SeqCst), 2);
    drop(restarted);
}

#[tokio::test]
async fn grpc_health_check_reads_serving_status() {
    use grayproxy::config::types::{Endpoint, HealthCheck};
    let backend = Backend::spawn("v1", 0, NO_DELAY).await;
    let endpoint = Endpoint {
        tls: false,
        host: "127.0.0.1".into(),
        port: backend.addr.port(),
    };
    let check = |service: &str| HealthCheck {
        path: grayproxy::grpc::HEALTH_CHECK_PATH.into(),
        interval: Duration::from_secs(1),
        timeout: Duration::from_secs(1),
        grpc_service: Some(service.into()),
    };
    let health = grayproxy::proxy::health::check_once;
    assert!(health(&endpoint, &check("reco.Recommender"), None).await);
    assert!(!health(&endpoint, &check("other.Service"), None).await);
    backend
        .state
        .serving
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(!health(&endpoint, &check("reco.Recommender"), None).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_failing_40_percent_with_unavailable_is_rolled_back() {
    let ramp = "[routes.ramp]\nsteps = [10, 50, 100]\nmin_requests = 100000\n\
                tick = \"100ms\"\ninterval = \"300ms\"\nbaseline = \"1s\"\n";
    let (_stable, _canary, proxy) = split(NO_DELAY, 4, ramp).await;
    let ch = channel(proxy.proxy).await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let (ch, stop) = (ch.clone(), stop.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Answers are HTTP 200 either way; only grpc-status differs.
                    let _ = recommend(&ch, &format!("w{w}-{i}"), None).await;
                    i += 1;
                }
            })
        })
        .collect();
    eventually(
        Duration::from_secs(30),
        "the ramp rolls the canary back",
        || async { proxy.status().await["routes"][0]["ramp"]["state"] == "rolled_back" },
    )
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let s = proxy.status().await;
    let route = &s["routes"][0];
    assert_eq!(route["canary_weight"], 0.0);
    let last = route["ramp"]["decisions"]
        .as_array()
        .unwrap()
        .last()
        .unwrap();
    assert_eq!(last["action"], "rollback", "{last}");
    let canary_arm = &route["arms"]["canary"];
    assert!(canary_arm["errors"].as_u64().unwrap() > 0, "{canary_arm}");
    assert_eq!(route["arms"]["stable"]["errors"], 0);
}
