//! Criterion benches for the per-request work around forwarding: header
//! rewriting (`forward::rewrite_request`) and metric recording
//! (`ArmMetrics::record_answer` + `WindowRecorder::record`).
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};

use grayproxy::domain::Arm;
use grayproxy::metrics::Metrics;
use grayproxy::proxy::forward::{rewrite_request, rewrite_response, ClientInfo};
use grayproxy::ramp::window::WindowRecorder;

/// A realistic 12-header browser request behind a load balancer, with one
/// connection-scoped header to strip.
fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut add = |k: &'static str, v: &'static str| {
        h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
    };
    add("host", "shop.example");
    add(
        "user-agent",
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
    );
    add("accept", "application/json, text/plain, */*");
    add("accept-encoding", "gzip, deflate, br");
    add("accept-language", "en-US,en;q=0.9,de;q=0.8");
    add(
        "cookie",
        "session=abc123def456; theme=dark; vip=0; _ga=GA1.2.3.4",
    );
    add("x-user-id", "user-8472913");
    add("x-request-id", "6f1c9a2e-4b7d-4e0a-9c3b-2d8e5f7a1b90");
    add(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    );
    add("x-forwarded-for", "203.0.113.7");
    add("connection", "keep-alive, x-lb-hop");
    add("x-lb-hop", "lb-3");
    h
}

fn bench_rewrite(c: &mut Criterion) {
    let headers = request_headers();
    assert_eq!(headers.len(), 12);
    let client = ClientInfo::new("10.1.2.3".parse().unwrap(), "http");
    let host = HeaderValue::from_static("shop.example");
    let arm_header = HeaderName::from_static("x-grayproxy-arm");
    c.bench_function("forward/rewrite_request 12 headers", |b| {
        b.iter_batched_ref(
            || headers.clone(),
            |h| {
                rewrite_request(
                    black_box(h),
                    &client,
                    Some(&host),
                    Arm::Canary,
                    Some(&arm_header),
                )
            },
            BatchSize::SmallInput,
        )
    });
    let mut response = HeaderMap::new();
    response.insert("content-type", HeaderValue::from_static("application/json"));
    response.insert("content-length", HeaderValue::from_static("1832"));
    response.insert(
        "date",
        HeaderValue::from_static("Tue, 01 Dec 2026 10:00:00 GMT"),
    );
    response.insert("cache-control", HeaderValue::from_static("no-store"));
    c.bench_function("forward/rewrite_response 4 headers", |b| {
        b.iter_batched_ref(
            || response.clone(),
            |h| rewrite_response(black_box(h), Arm::Canary, Some(&arm_header)),
            BatchSize::SmallInput,
        )
    });
}

fn bench_record(c: &mut Criterion) {
    let metrics = Metrics::new().unwrap();
    let route = metrics.route("recommend", false);
    let window = WindowRecorder::new();
    let latency = Duration::from_micros(12_345);
    c.bench_function("metrics/record_answer", |b| {
        b.iter(|| {
            route
                .arm(black_box(Arm::Canary))
                .record_answer(black_box(200), latency.as_secs_f64())
        })
    });
    c.bench_function("metrics/window record", |b| {
        b.iter(|| window.record(black_box(Arm::Stable), 1, false, black_box(latency)))
    });
    c.bench_function("metrics/per request (record_answer + window record)", |b| {
        b.iter(|| {
            route
                .arm(black_box(Arm::Canary))
                .record_answer(black_box(200), latency.as_secs_f64());
            window.record(black_box(Arm::Canary), 0, false, black_box(latency));
        })
    });
}

criterion_group!(benches, bench_rewrite, bench_record);
criterion_main!(benches);
