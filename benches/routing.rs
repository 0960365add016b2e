//! Criterion benches for the routing hot path: `decide`, `bucket`, route
//! lookup as the table grows, and `sticky_in` as its list grows.
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
use grayproxy::routing::{decide, find_route_linear, matcher, sticky, RequestView, RouteIndex};

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
        shadow: None,
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
    let index = RouteIndex::new(&routes);
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
        b.iter(|| decide(black_box(&routes), &index, black_box(&req), |_| w, &mut rng))
    });
    let none = HeaderMap::new();
    let req = RequestView {
        host: Some("shop.example"),
        path: "/api/recommend",
        query: None,
        headers: &none,
    };
    c.bench_function("decide/4 rules, no sticky key (random)", |b| {
        b.iter(|| decide(black_box(&routes), &index, black_box(&req), |_| w, &mut rng))
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

/// `n` routes in the shape of a shop with many endpoints: even ones a path
/// prefix on any host (`/svc/{i}/`), odd ones a host with a prefix
/// (`h{i}.example` + `/api`).
fn table(n: usize) -> Vec<Route> {
    (0..n)
        .map(|i| {
            let mut r = route();
            r.name = RouteName::new(&format!("r{i}"));
            r.rules.clear();
            r.matcher = if i % 2 == 0 {
                RouteMatch {
                    host: None,
                    path_prefix: Some(format!("/svc/{i}/")),
                }
            } else {
                RouteMatch {
                    host: Some(format!("h{i}.example")),
                    path_prefix: Some("/api".into()),
                }
            };
            r
        })
        .collect()
}

/// Finding the route of a request that matches only the table's last route
/// (a host route) and the second to last (a prefix route), indexed and by
/// the linear scan, at 10, 1,000 and 10,000 routes.
fn bench_route_scaling(c: &mut Criterion) {
    let h = HeaderMap::new();
    let mut g = c.benchmark_group("find_route");
    for n in [10, 1_000, 10_000] {
        let routes = table(n);
        let index = RouteIndex::new(&routes);
        let last_host = format!("H{}.Example:8080", n - 1);
        let last = RequestView {
            host: Some(&last_host),
            path: "/api/recommend/items",
            query: None,
            headers: &h,
        };
        let prefix_path = format!("/svc/{}/items", n - 2);
        let prefix = RequestView {
            host: Some("shop.example"),
            path: &prefix_path,
            query: None,
            headers: &h,
        };
        assert_eq!(index.find(&last), Some(n - 1));
        assert_eq!(index.find(&prefix), Some(n - 2));
        g.bench_function(format!("indexed/{n} routes/last (host)"), |b| {
            b.iter(|| index.find(black_box(&last)))
        });
        g.bench_function(format!("indexed/{n} routes/second to last (prefix)"), |b| {
            b.iter(|| index.find(black_box(&prefix)))
        });
        g.bench_function(format!("linear/{n} routes/last (host)"), |b| {
            b.iter(|| find_route_linear(black_box(&routes), black_box(&last)))
        });
    }
    g.finish();
}

/// `sticky_in` membership of a key, hit and miss, in a list of 2 (the
/// usual staff list, compared one by one) and 100,000 ids (hashed).
fn bench_sticky_in(c: &mut Criterion) {
    let mut g = c.benchmark_group("sticky_in");
    for n in [2usize, 100_000] {
        let set: HashSet<String> = (0..n).map(|i| format!("staff-{}", 1001 + i)).collect();
        let hit = format!("staff-{}", 1000 + n);
        for (what, key) in [("hit", hit.as_bytes()), ("miss", &b"user-8472913"[..])] {
            assert_eq!(matcher::set_contains_bytes(&set, key), what == "hit");
            g.bench_function(format!("{n} ids/{what}"), |b| {
                b.iter(|| matcher::set_contains_bytes(black_box(&set), black_box(key)))
            });
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    bench_decide,
    bench_bucket,
    bench_route_scaling,
    bench_sticky_in
);
criterion_main!(benches);
