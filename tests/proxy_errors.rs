//! Errors end to end (README, "Forwarding" and "Metrics"): what the client gets when the
//! upstream is down, resets, answers 5xx, is too slow, or the body is too
//! large, and how each case moves the request and failure counters.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use http::Request;
use serde_json::json;
use support::{chunked, client, config, full, get, send, Fault, Metrics, TestProxy, TestUpstream};
use tokio::time::Instant;

const TIMEOUT_MS: u64 = 500;
const MAX_BODY: usize = 1024;

/// One route per failure case; `fallback = false` so the client sees the
/// failing arm's answer (fallback belongs to the resilience tests).
struct Setup {
    proxy: TestProxy,
    healthy: TestUpstream,
    slow: TestUpstream,
    _down: TestUpstream,
    reset: TestUpstream,
    sick: TestUpstream,
}

async fn setup() -> Setup {
    let healthy = TestUpstream::spawn("healthy").await;
    let slow = TestUpstream::spawn("slow")
        .await
        .with(Fault::Delay(Duration::from_secs(3)));
    let down = TestUpstream::spawn("down").await.refuse().await;
    let reset = TestUpstream::spawn("reset").await.with(Fault::Reset);
    let sick = TestUpstream::spawn("sick").await.with(Fault::Status(503));
    let route = |name: &str, canary: &str, weight: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"/{name}\" }}\n\
             stable = \"healthy\"\ncanary = \"{canary}\"\ncanary_weight = {weight}\nfallback = false\n"
        )
    };
    let routes = [
        route("refused", "down", "100.0"),
        route("reset", "reset", "100.0"),
        route("sick", "sick", "100.0"),
        route("slow", "slow", "100.0"),
        // Answered by the healthy stable.
        route("body", "sick", "0.0"),
    ]
    .concat();
    let server = format!("request_timeout = \"{TIMEOUT_MS}ms\"\nmax_body_bytes = {MAX_BODY}");
    let text = config(
        &server,
        &[
            ("healthy", healthy.addr),
            ("slow", slow.addr),
            ("down", down.addr),
            ("reset", reset.addr),
            ("sick", sick.addr),
        ],
        &routes,
    );
    Setup {
        proxy: TestProxy::start(&text).await,
        healthy,
        slow,
        _down: down,
        reset,
        sick,
    }
}

/// Counter deltas between two scrapes for one route.
struct Delta<'a> {
    before: Metrics,
    after: Metrics,
    route: &'a str,
}

impl Delta<'_> {
    fn requests(&self, arm: &str, code: &str) -> f64 {
        let labels = [("route", self.route), ("arm", arm), ("code", code)];
        self.after.value("grayproxy_requests_total", &labels)
            - self.before.value("grayproxy_requests_total", &labels)
    }

    fn failures(&self, arm: &str, kind: &str) -> f64 {
        let labels = [("route", self.route), ("arm", arm), ("kind", kind)];
        self.after
            .value("grayproxy_upstream_failures_total", &labels)
            - self
                .before
                .value("grayproxy_upstream_failures_total", &labels)
    }

    fn all_failures(&self) -> f64 {
        let labels = [("route", self.route)];
        self.after
            .value("grayproxy_upstream_failures_total", &labels)
            - self
                .before
                .value("grayproxy_upstream_failures_total", &labels)
    }

    fn all_requests(&self) -> f64 {
        let labels = [("route", self.route)];
        self.after.value("grayproxy_requests_total", &labels)
            - self.before.value("grayproxy_requests_total", &labels)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upstream_is_a_502_json_naming_route_and_arm() {
    let s = setup().await;
    let before = s.proxy.metrics().await;
    let a = get(&client(), &s.proxy.url("/refused/x"), &[]).await;
    assert_eq!(a.status, 502);
    assert_eq!(a.header("content-type"), "application/json");
    assert_eq!(
        a.json(),
        json!({"error": "upstream unreachable", "route": "refused", "arm": "canary"})
    );
    assert_eq!(a.arm(), "canary");
    let d = Delta {
        before,
        after: s.proxy.metrics().await,
        route: "refused",
    };
    assert_eq!(d.requests("canary", "5xx"), 1.0);
    assert_eq!(d.all_requests(), 1.0);
    assert_eq!(d.failures("canary", "connect"), 1.0);
    assert_eq!(d.all_failures(), 1.0);
    assert_eq!(s.healthy.count(), 0, "no fallback with fallback = false");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_before_answering_is_a_502_counted_as_reset() {
    let s = setup().await;
    let before = s.proxy.metrics().await;
    let a = get(&client(), &s.proxy.url("/reset"), &[]).await;
    assert_eq!(a.status, 502);
    assert_eq!(
        a.json(),
        json!({"error": "upstream unreachable", "route": "reset", "arm": "canary"})
    );
    assert_eq!(
        s.reset.count(),
        1,
        "the upstream got the request, then hung up"
    );
    let d = Delta {
        before,
        after: s.proxy.metrics().await,
        route: "reset",
    };
    assert_eq!(d.requests("canary", "5xx"), 1.0);
    assert_eq!(d.failures("canary", "reset"), 1.0);
    assert_eq!(d.all_failures(), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_5xx_passes_through_and_is_not_a_failure() {
    let s = setup().await;
    let before = s.proxy.metrics().await;
    let a = get(&client(), &s.proxy.url("/sick"), &[]).await;
    assert_eq!(a.status, 503);
    assert_eq!(
        a.body, "sick",
        "the upstream's own answer, not a proxy error"
    );
    assert_eq!(a.arm(), "canary");
    assert_eq!(s.sick.count(), 1);
    let d = Delta {
        before,
        after: s.proxy.metrics().await,
        route: "sick",
    };
    assert_eq!(d.requests("canary", "5xx"), 1.0);
    assert_eq!(d.all_failures(), 0.0, "a 5xx is a response, not a failure");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upstream_is_a_504_within_request_timeout_plus_1s() {
    let s = setup().await;
    let before = s.proxy.metrics().await;
    let started = Instant::now();
    let a = get(&client(), &s.proxy.url("/slow"), &[]).await;
    let took = started.elapsed();
    assert_eq!(a.status, 504);
    assert_eq!(
        a.json(),
        json!({"error": "upstream timed out", "route": "slow", "arm": "canary"})
    );
    let timeout = Duration::from_millis(TIMEOUT_MS);
    assert!(
        took >= timeout,
        "answered 504 after {took:?}, before the timeout"
    );
    assert!(took < timeout + Duration::from_secs(1), "504 took {took:?}");
    assert_eq!(s.slow.arrived(), 1);
    let d = Delta {
        before,
        after: s.proxy.metrics().await,
        route: "slow",
    };
    assert_eq!(d.requests("canary", "5xx"), 1.0);
    assert_eq!(d.failures("canary", "timeout"), 1.0);
    assert_eq!(d.all_failures(), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_over_max_body_bytes_are_413_with_or_without_content_length() {
    let s = setup().await;
    let c = client();
    let url = s.proxy.url("/body/upload");
    // At the limit: fine.
    let ok = send(
        &c,
        Request::post(&url)
            .body(full(vec![b'x'; MAX_BODY]))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(ok.status, 200);
    assert_eq!(ok.body.len(), MAX_BODY);

    let before = s.proxy.metrics().await;
    // Declared too large: refused before any upstream sees it.
    let big = send(
        &c,
        Request::post(&url)
            .body(full(vec![b'x'; MAX_BODY + 1]))
            .unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(big.status, 413);
    assert_eq!(big.json()["error"], "request body too large");
    assert_eq!(
        s.healthy.arrived(),
        1,
        "only the request at the limit reached the upstream"
    );
    let d = Delta {
        before,
        after: s.proxy.metrics().await,
        route: "body",
    };
    println!(
        "413 with Content-Length: requests_total delta {}, failures delta {}",
        d.all_requests(),
        d.all_failures()
    );
    assert_eq!(
        d.all_failures(),
        0.0,
        "the client's fault is not an upstream failure"
    );
    // Refused before routing: no arm was chosen, so no arm counts it.
    assert_eq!(d.all_requests(), 0.0);

    // Chunked, no declared length: cut off while streaming.
    let before = s.proxy.metrics().await;
    let req = Request::post(&url)
        .body(chunked(vec![b'y'; 4 * MAX_BODY], 256))
        .unwrap();
    let streamed = send(&c, req).await.unwrap();
    assert_eq!(streamed.status, 413);
    assert_eq!(streamed.json()["error"], "request body too large");
    assert_eq!(
        s.healthy.count(),
        1,
        "the upstream never got a complete oversized body"
    );
    let d = Delta {
        before,
        after: s.proxy.metrics().await,
        route: "body",
    };
    println!(
        "413 chunked: requests_total delta {} (4xx {}), failures delta {}",
        d.all_requests(),
        d.requests("stable", "4xx"),
        d.all_failures()
    );
    assert_eq!(
        d.all_failures(),
        0.0,
        "the client's fault is not an upstream failure"
    );
    assert_eq!(
        d.requests("stable", "5xx"),
        0.0,
        "not counted against the arm"
    );
    assert_eq!(
        d.requests("stable", "4xx"),
        1.0,
        "the arm's answer was the 413"
    );
    assert_eq!(streamed.json()["route"], "body");
}

/// Sends raw bytes on a fresh connection and returns the status line.
async fn raw_status_line(proxy: &TestProxy, request: &[u8]) -> String {
    raw_response(proxy, request)
        .await
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Sends raw bytes on a fresh connection and returns the whole answer.
async fn raw_response(proxy: &TestProxy, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(proxy.proxy).await.unwrap();
    // The proxy may answer and close before reading all of an oversized head.
    let _ = stream.write_all(request).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_are_431_and_malformed_requests_400() {
    let s = setup().await;
    let mut too_big = b"GET /body HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    too_big.extend_from_slice(&vec![b'a'; 70 * 1024]);
    too_big.extend_from_slice(b"\r\n\r\n");
    let answer = raw_response(&s.proxy, &too_big).await;
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large"),
        "{answer}"
    );
    // Up to twice the limit the proxy itself answers, with the JSON body.
    assert!(
        answer.ends_with(r#"{"error":"request headers too large"}"#),
        "{answer}"
    );
    // Far beyond it, hyper refuses the head before the proxy sees it.
    let mut huge = b"GET /body HTTP/1.1\r\nhost: x\r\nx-big: ".to_vec();
    huge.extend_from_slice(&vec![b'a'; 200 * 1024]);
    huge.extend_from_slice(b"\r\n\r\n");
    let line = raw_status_line(&s.proxy, &huge).await;
    assert_eq!(line, "HTTP/1.1 431 Request Header Fields Too Large");

    let mut many = b"GET /body HTTP/1.1\r\nhost: x\r\n".to_vec();
    for i in 0..120 {
        many.extend_from_slice(format!("x-h{i}: 1\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    let line = raw_status_line(&s.proxy, &many).await;
    assert_eq!(line, "HTTP/1.1 431 Request Header Fields Too Large");

    let line = raw_status_line(&s.proxy, b"GET /body HTTP/1.1\r\nhost x\r\n\r\n").await;
    assert_eq!(line, "HTTP/1.1 400 Bad Request");
    assert_eq!(s.healthy.arrived(), 0, "none of them reached an upstream");
}

/// The response-header timer is kept with the pooled upstream connection
/// and moved forward per request: a slow answer on a reused connection is
/// still cut at `request_timeout`, whether the connection's previous
/// deadline is still ahead (extended) or passed while it sat idle
/// (registered again), and fast answers in between are not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeout_holds_on_reused_upstream_connections() {
    let flaky = TestUpstream::spawn("flaky").await;
    let routes = "[[routes]]\nname = \"flaky\"\nstable = \"flaky\"\ncanary = \"flaky\"\n\
                  canary_weight = 0.0\nfallback = false\n";
    let server = format!("request_timeout = \"{TIMEOUT_MS}ms\"");
    let proxy = TestProxy::start(&config(&server, &[("flaky", flaky.addr)], routes)).await;
    let c = client();
    let timeout = Duration::from_millis(TIMEOUT_MS);
    let slow_is_cut = |what: &'static str| {
        let (c, url) = (c.clone(), proxy.url("/x"));
        async move {
            let started = Instant::now();
            let a = get(&c, &url, &[]).await;
            let took = started.elapsed();
            assert_eq!(a.status, 504, "{what}");
            assert!(
                took >= timeout,
                "{what}: 504 after {took:?}, before the timeout"
            );
            assert!(
                took < timeout + Duration::from_secs(1),
                "{what}: 504 took {took:?}"
            );
        }
    };
    // The first request opens the connection; the slow one reuses it while
    // the first one's deadline is still ahead.
    assert_eq!(get(&c, &proxy.url("/x"), &[]).await.status, 200);
    flaky.set(&[Fault::Delay(Duration::from_secs(3))]);
    slow_is_cut("deadline extended").await;
    // A new connection (the cut one is not reused); its deadline passes
    // while it is idle, then a slow request reuses it.
    flaky.set(&[]);
    for _ in 0..3 {
        assert_eq!(get(&c, &proxy.url("/x"), &[]).await.status, 200);
    }
    tokio::time::sleep(timeout * 2).await;
    assert_eq!(
        get(&c, &proxy.url("/x"), &[]).await.status,
        200,
        "not cut by a stale deadline"
    );
    tokio::time::sleep(timeout * 2).await;
    flaky.set(&[Fault::Delay(Duration::from_secs(3))]);
    slow_is_cut("deadline registered again").await;
}
