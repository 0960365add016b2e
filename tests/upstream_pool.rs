//! The proxy's upstream side over real sockets: endpoints balanced
//! round-robin, backends that close every connection, body-less answers
//! (HEAD, 204) that must give their connection back to the pool.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use http::{Method, Request};
use support::{client, config, empty, fan_out, get, send, Fault, TestProxy, TestUpstream};

fn route(weight: &str) -> String {
    format!(
        "[[routes]]\nname = \"r\"\nstable = \"stable\"\ncanary = \"canary\"\ncanary_weight = {weight}\nfallback = false\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_endpoints_of_one_upstream_share_requests_round_robin() {
    let a = TestUpstream::spawn("a").await;
    let b = TestUpstream::spawn("b").await;
    let canary = TestUpstream::spawn("canary").await;
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [upstreams.stable]\nendpoints = [\"{}\", \"http://{}\"]\n\
         [upstreams.canary]\nendpoints = [\"{}\"]\n{}",
        a.addr,
        b.addr,
        canary.addr,
        route("0.0")
    );
    let proxy = TestProxy::start(&text).await;
    let c = client();
    for _ in 0..100 {
        let answer = get(&c, &proxy.url("/rr"), &[]).await;
        assert_eq!(answer.status, 200);
        assert_eq!(answer.arm(), "stable");
    }
    assert_eq!(
        (a.count(), b.count()),
        (50, 50),
        "sequential requests alternate"
    );
    assert_eq!(canary.count(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backends_that_close_every_connection_cause_no_errors() {
    let stable = TestUpstream::spawn("stable").await.with(Fault::Close);
    let canary = TestUpstream::spawn("canary").await.with(Fault::Close);
    let text = config(
        "",
        &[("stable", stable.addr), ("canary", canary.addr)],
        &route("50.0"),
    );
    let proxy = TestProxy::start(&text).await;
    let c = client();
    let url = Arc::new(proxy.url("/close"));
    let statuses = fan_out(600, 8, move |_| {
        let (c, url) = (c.clone(), url.clone());
        async move { get(&c, &url, &[]).await.status.as_u16() }
    })
    .await;
    let failed = statuses.iter().filter(|s| **s != 200).count();
    assert_eq!(failed, 0, "{failed} of 600 requests failed: {statuses:?}");
    assert_eq!(stable.count() + canary.count(), 600);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_and_204_answers_leave_the_pool_usable() {
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await.with(Fault::Status(204));
    let text = config(
        "request_timeout = \"2s\"",
        &[("stable", stable.addr), ("canary", canary.addr)],
        &format!(
            "{}\n[[routes.rules]]\nwhen = {{ header = \"x-canary\", equals = \"always\" }}\nto = \"canary\"\n",
            route("0.0")
        ),
    );
    let proxy = TestProxy::start(&text).await;
    let c = client();
    for i in 0..50 {
        let head = Request::builder()
            .method(Method::HEAD)
            .uri(proxy.url(&format!("/head/{i}")))
            .body(empty())
            .unwrap();
        let a = send(&c, head).await.unwrap();
        assert_eq!(a.status, 200);
        assert!(a.body.is_empty());
        let a = get(&c, &proxy.url("/none"), &[("x-canary", "always")]).await;
        assert_eq!(a.status, 204);
        assert_eq!(a.arm(), "canary");
        let a = get(&c, &proxy.url(&format!("/get/{i}")), &[]).await;
        assert_eq!((a.status.as_u16(), &a.body[..]), (200, &b"stable"[..]));
    }
    assert_eq!(stable.count(), 100);
    assert_eq!(stable.seen()[0].method, Method::HEAD);
    assert_eq!(canary.count(), 50);
}
