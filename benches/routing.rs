//! Criterion benches for the routing hot path: `decide` and `bucket`.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderName, HeaderValue};
use rand::rngs::SmallRng;
use rand::SeedableRng;
use regex::Regex;

use grayproxy::config::types::{
    Condition, Route, RouteMatch, Rule, StickySource, UpstreamId, ValueTest,
};
use grayproxy::domain::{Arm, CanaryWeight, RouteName};
use grayproxy::routing::{decide, sticky, RequestView};

/// The route of `benches/e2e/grayproxy.toml.in`, rules in the file's order.
fn route() -> Route {
    let staff: HashSet<String> = ["staff-1001", "staff-1002"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    Route {
        name: RouteName::new("recommend"),
        matcher: RouteMatch {
            host: None,
            path_prefix: Some("/api/recommend".into()),
        },
        stable: UpstreamId(0),
        canary: UpstreamId(1),
        canary_weight: CanaryWeight::from_basis_points(1000),
        sticky: Some(StickySource::Header(HeaderName::from_static("x-user-id"))),
        salt: "reco-v2".into(),
        fallback: true,
        fallback_budget: 0.2,
        rules: vec![
            Rule {
                when: Condition::Header(
                    HeaderName::from_static("x-canary"),
                    ValueTest::Equals("always".into()),
                ),
                to: Arm::Canary,
            },
            Rule {
                when: Condition::Header(
                    http::header::USER_AGENT,
                    ValueTest::Regex(Regex::new("iPhone").unwrap().into()),
                ),
                to: Arm::Canary,
            },
            Rule {
                when: Condition::StickyIn(staff),
                to: Arm::Canary,
            },
            Rule {
                when: Condition::Cookie("vip".into(), ValueTest::Equals("1".into())),
                to: Arm::Stable,
            },
        ],
        ramp: None,
        grpc_error_codes: Default::default(),
        grpc_idempotent: Vec::new(),
    }
}

fn headers() -> HeaderMap {
    // A realistic browser request that matches none of the rules, so every
    // rule is evaluated and the weight decides.
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("shop.example"));
    h.insert("x-user-id", HeaderValue::from_static("user-8472913"));
    h.insert(
        "user-agent",
        HeaderValue::from_static("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"),
    );
    h.insert("accept", HeaderValue::from_static("application/json"));
    h.insert(
        "accept-encoding",
        HeaderValue::from_static("gzip, deflate, br"),
    );
    h.insert(
        "cookie",
        HeaderValue::from_static("session=abc123def456; theme=dark; vip=0; _ga=GA1.2.3.4"),
    );
    h
}

fn bench_decide(c: &mut Criterion) {
    let routes = vec![route()];
    let h = headers();
    let req = RequestView {
        host: Some("shop.example"),
        path: "/api/recommend/items",
        query: Some("n=10"),
        headers: &h,
    };
    let mut rng = SmallRng::seed_from_u64(1);
    let w = CanaryWeight::from_basis_points(1000);
    c.bench_function("decide/4 rules + sticky header hash", |b| {
        b.iter(|| decide(black_box(&routes), black_box(&req), |_| w, &mut rng))
    });
    let none = HeaderMap::new();
    let req = RequestView {
        host: Some("shop.example"),
        path: "/api/recommend",
        query: None,
        headers: &none,
    };
    c.bench_function("decide/4 rules, no sticky key (random)", |b| {
        b.iter(|| decide(black_box(&routes), black_box(&req), |_| w, &mut rng))
    });
}

fn bench_bucket(c: &mut Criterion) {
    c.bench_function("bucket/reco-v2:user-8472913", |b| {
        b.iter(|| sticky::bucket(black_box("reco-v2"), black_box(b"user-8472913")))
    });
    c.bench_function("bucket/murmur3 crate via Read, same input", |b| {
        // Pre-concatenated input: favours the crate (no join cost).
        let input: &[u8] = b"reco-v2:user-8472913";
        b.iter(|| {
            murmur3::murmur3_32(&mut std::io::Cursor::new(black_box(input)), 0).unwrap() % 10_000
        })
    });
}

criterion_group!(benches, bench_decide, bench_bucket);
criterion_main!(benches);
