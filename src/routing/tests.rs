//! Table tests and properties of [`decide`] and [`explain`].
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use http::{HeaderMap, HeaderName, HeaderValue, Uri};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::SeedableRng;
use regex::Regex;

use super::*;
use crate::config::types::{RouteMatch, Rule, UpstreamId, ValueTest};
use crate::domain::RouteName;

// ---------------------------------------------------------------- builders

/// Builds runtime `Route`s without going through config validation.
struct RouteBuilder(Route);

fn route(name: &str) -> RouteBuilder {
    RouteBuilder(Route {
        name: RouteName::new(name),
        matcher: RouteMatch::default(),
        stable: UpstreamId(0),
        canary: UpstreamId(1),
        canary_weight: CanaryWeight::ZERO,
        sticky: None,
        salt: name.to_string(),
        fallback: true,
        fallback_budget: 0.2,
        rules: Vec::new(),
        ramp: None,
        shadow: None,
        grpc_error_codes: Default::default(),
        grpc_idempotent: Vec::new(),
    })
}

impl RouteBuilder {
    fn host(mut self, h: &str) -> Self {
        self.0.matcher.host = Some(h.to_string());
        self
    }
    fn prefix(mut self, p: &str) -> Self {
        self.0.matcher.path_prefix = Some(p.to_string());
        self
    }
    fn salt(mut self, s: &str) -> Self {
        self.0.salt = s.to_string();
        self
    }
    fn sticky_header(mut self, name: &str) -> Self {
        self.0.sticky = Some(StickySource::Header(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
        ));
        self
    }
    fn sticky_cookie(mut self, name: &str) -> Self {
        self.0.sticky = Some(StickySource::Cookie(name.to_string()));
        self
    }
    fn sticky_query(mut self, name: &str) -> Self {
        self.0.sticky = Some(StickySource::Query(name.to_string()));
        self
    }
    fn rule(mut self, when: Condition, to: Arm) -> Self {
        self.0.rules.push(Rule { when, to });
        self
    }
    fn build(self) -> Route {
        self.0
    }
}

fn header_eq(name: &str, v: &str) -> Condition {
    Condition::Header(
        HeaderName::from_bytes(name.as_bytes()).unwrap(),
        ValueTest::Equals(v.into()),
    )
}
fn header_re(name: &str, re: &str) -> Condition {
    Condition::Header(
        HeaderName::from_bytes(name.as_bytes()).unwrap(),
        ValueTest::Regex(Regex::new(re).unwrap().into()),
    )
}
fn cookie_eq(name: &str, v: &str) -> Condition {
    Condition::Cookie(name.into(), ValueTest::Equals(v.into()))
}
fn query_eq(name: &str, v: &str) -> Condition {
    Condition::Query(name.into(), ValueTest::Equals(v.into()))
}
fn query_re(name: &str, re: &str) -> Condition {
    Condition::Query(
        name.into(),
        ValueTest::Regex(Regex::new(re).unwrap().into()),
    )
}
fn sticky_in(keys: &[&str]) -> Condition {
    Condition::StickyIn(keys.iter().map(|k| k.to_string()).collect::<HashSet<_>>())
}

/// The routes every table case runs against.
fn routes() -> Vec<Route> {
    use Arm::*;
    vec![
        // 0: host-specific, sticky header, one rule of every kind.
        route("shop")
            .host("shop.example")
            .prefix("/api/recommend")
            .salt("reco-v2")
            .sticky_header("x-user-id")
            .rule(header_eq("x-canary", "always"), Canary) // 0
            .rule(header_re("user-agent", "iPhone"), Canary) // 1
            .rule(sticky_in(&["staff-1001", "staff-1002"]), Canary) // 2
            .rule(cookie_eq("vip", "1"), Stable) // 3
            .rule(query_eq("force", "stable"), Stable) // 4
            .rule(header_eq("x-multi", "b"), Canary) // 5
            .rule(query_re("v", "^2\\."), Canary) // 6
            .build(),
        // 1: sticky cookie.
        route("cookie")
            .prefix("/c")
            .salt("reco-v2")
            .sticky_cookie("uid")
            .build(),
        // 2: sticky query.
        route("query")
            .prefix("/q")
            .salt("reco-v2")
            .sticky_query("uid")
            .build(),
        // 3: no sticky key configured.
        route("random").prefix("/r").build(),
        // 4: any host; reached when route 0's host does not match.
        route("any-host")
            .prefix("/api/recommend")
            .salt("reco-v2")
            .sticky_header("x-user-id")
            .build(),
    ]
}

// ---------------------------------------------------------------- the table

struct Case {
    name: &'static str,
    host: Option<&'static str>,
    uri: &'static str,
    headers: &'static [(&'static str, &'static [u8])],
    weight_bp: u16,
    want: Option<(usize, Arm, Reason, Option<u16>)>,
}

const U1: u16 = 4851; // bucket of "reco-v2:user-1" (the documented known-answer vector)

fn b(key: &[u8]) -> u16 {
    sticky::bucket("reco-v2", key)
}

#[rustfmt::skip] // one row per case reads as a table
fn cases() -> Vec<Case> {
    use Arm::*;
    use Reason::*;
    let shop = Some("shop.example");
    let staff = b(b"staff-1001");
    let c = |name, host, uri, headers, weight_bp, want| Case { name, host, uri, headers, weight_bp, want };
    vec![
        // --- route selection
        c("no route for the path", shop, "/other", &[], 5000, None),
        c("no host, no route for the path", None, "/", &[], 5000, None),
        c("host and prefix", shop, "/api/recommend", &[], 0, Some((0, Stable, NoStickyKey, None))),
        c("host case-insensitive, port stripped", Some("SHOP.Example:8080"), "/api/recommend/x", &[], 0, Some((0, Stable, NoStickyKey, None))),
        c("host trailing dot", Some("shop.example."), "/api/recommend", &[], 0, Some((0, Stable, NoStickyKey, None))),
        c("other host falls through to the any-host route", Some("other.example"), "/api/recommend", &[], 0, Some((4, Stable, NoStickyKey, None))),
        c("no host falls through to the any-host route", None, "/api/recommend", &[], 0, Some((4, Stable, NoStickyKey, None))),
        c("ipv6 host", Some("[::1]:8080"), "/api/recommend", &[], 0, Some((4, Stable, NoStickyKey, None))),
        c("prefix is nginx-like: /api/recommendations matches", shop, "/api/recommendations", &[], 0, Some((0, Stable, NoStickyKey, None))),
        c("prefix is case-sensitive", shop, "/API/recommend", &[], 0, None),
        // --- weight with a sticky header
        c("sticky header below the weight: stable", shop, "/api/recommend", &[("x-user-id", b"user-1")], U1, Some((0, Stable, Bucket(U1), Some(U1)))),
        c("sticky header at bucket+1: canary", shop, "/api/recommend", &[("x-user-id", b"user-1")], U1 + 1, Some((0, Canary, Bucket(U1), Some(U1)))),
        c("weight 0: stable", shop, "/api/recommend", &[("x-user-id", b"user-1")], 0, Some((0, Stable, Bucket(U1), Some(U1)))),
        c("weight 100: canary", shop, "/api/recommend", &[("x-user-id", b"user-1")], 10_000, Some((0, Canary, Bucket(U1), Some(U1)))),
        c("UTF-8 key", shop, "/api/recommend", &[("x-user-id", b"M\xc3\xbcller")], 5568, Some((0, Canary, Bucket(5567), Some(5567)))),
        c("non-UTF-8 key is hashed as bytes", shop, "/api/recommend", &[("x-user-id", b"\xff\xfe")], 10_000, Some((0, Canary, Bucket(b(b"\xff\xfe")), Some(b(b"\xff\xfe"))))),
        c("repeated sticky header: first wins", shop, "/api/recommend", &[("x-user-id", b"user-1"), ("x-user-id", b"other")], 0, Some((0, Stable, Bucket(U1), Some(U1)))),
        c("empty sticky header is no key", shop, "/api/recommend", &[("x-user-id", b"")], 10_000, Some((0, Canary, NoStickyKey, None))),
        c("absent sticky header at weight 0", shop, "/api/recommend", &[], 0, Some((0, Stable, NoStickyKey, None))),
        c("absent sticky header at weight 100", shop, "/api/recommend", &[], 10_000, Some((0, Canary, NoStickyKey, None))),
        // --- rules
        c("header equals", shop, "/api/recommend", &[("x-canary", b"always")], 0, Some((0, Canary, Rule(0), None))),
        c("header equals is exact", shop, "/api/recommend", &[("x-canary", b"Always")], 0, Some((0, Stable, NoStickyKey, None))),
        c("header equals, any of several values", shop, "/api/recommend", &[("x-multi", b"a"), ("x-multi", b"b")], 0, Some((0, Canary, Rule(5), None))),
        c("header equals is not split on commas", shop, "/api/recommend", &[("x-multi", b"a, b")], 0, Some((0, Stable, NoStickyKey, None))),
        c("header regex is an unanchored search", shop, "/api/recommend", &[("user-agent", b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)")], 0, Some((0, Canary, Rule(1), None))),
        c("header regex skips non-UTF-8 values", shop, "/api/recommend", &[("user-agent", b"iPhone \xff")], 0, Some((0, Stable, NoStickyKey, None))),
        c("header regex, any value", shop, "/api/recommend", &[("user-agent", b"\xff"), ("user-agent", b"iPhone")], 0, Some((0, Canary, Rule(1), None))),
        c("sticky_in", shop, "/api/recommend", &[("x-user-id", b"staff-1001")], 0, Some((0, Canary, Rule(2), Some(staff)))),
        c("sticky_in, not in the set", shop, "/api/recommend", &[("x-user-id", b"staff-1003")], 0, Some((0, Stable, Bucket(b(b"staff-1003")), Some(b(b"staff-1003"))))),
        c("bucket reported on a rule match", shop, "/api/recommend", &[("x-user-id", b"user-1"), ("x-canary", b"always")], 0, Some((0, Canary, Rule(0), Some(U1)))),
        c("cookie rule sends to stable at weight 100", shop, "/api/recommend", &[("cookie", b"vip=1")], 10_000, Some((0, Stable, Rule(3), None))),
        c("cookie rule among others, spaces", shop, "/api/recommend", &[("cookie", b"a=b;  vip = 1 ; c=d")], 10_000, Some((0, Stable, Rule(3), None))),
        c("cookie rule, second Cookie header", shop, "/api/recommend", &[("cookie", b"a=b"), ("cookie", b"vip=1")], 10_000, Some((0, Stable, Rule(3), None))),
        c("cookie rule, repeated name, any matches", shop, "/api/recommend", &[("cookie", b"vip=0; vip=1")], 10_000, Some((0, Stable, Rule(3), None))),
        c("cookie rule is exact", shop, "/api/recommend", &[("cookie", b"vip=10; xvip=1")], 10_000, Some((0, Canary, NoStickyKey, None))),
        c("first match wins: header before cookie", shop, "/api/recommend", &[("cookie", b"vip=1"), ("x-canary", b"always")], 0, Some((0, Canary, Rule(0), None))),
        c("first match wins: sticky_in before cookie", shop, "/api/recommend", &[("cookie", b"vip=1"), ("x-user-id", b"staff-1002")], 0, Some((0, Canary, Rule(2), Some(b(b"staff-1002"))))),
        c("query rule to stable", shop, "/api/recommend?force=stable", &[("x-user-id", b"user-1")], 10_000, Some((0, Stable, Rule(4), Some(U1)))),
        c("query rule, later pair", shop, "/api/recommend?a=1&force=stable", &[], 10_000, Some((0, Stable, Rule(4), None))),
        c("query rule value is raw", shop, "/api/recommend?force=st%61ble", &[], 10_000, Some((0, Canary, NoStickyKey, None))),
        c("query regex", shop, "/api/recommend?v=2.1", &[], 0, Some((0, Canary, Rule(6), None))),
        c("query regex anchored by the user", shop, "/api/recommend?v=12.1", &[], 0, Some((0, Stable, NoStickyKey, None))),
        // --- sticky cookie
        c("sticky cookie", None, "/c", &[("cookie", b"a=1;uid=user-1")], U1 + 1, Some((1, Canary, Bucket(U1), Some(U1)))),
        c("sticky cookie, spaces", None, "/c", &[("cookie", b"  uid = user-1 ;")], U1, Some((1, Stable, Bucket(U1), Some(U1)))),
        c("sticky cookie, second header", None, "/c", &[("cookie", b"x=1"), ("cookie", b"uid=user-1")], 0, Some((1, Stable, Bucket(U1), Some(U1)))),
        c("sticky cookie, repeated: first wins", None, "/c", &[("cookie", b"uid=user-1; uid=other")], 0, Some((1, Stable, Bucket(U1), Some(U1)))),
        c("sticky cookie, = in value", None, "/c", &[("cookie", b"uid=a=b")], 0, Some((1, Stable, Bucket(b(b"a=b")), Some(b(b"a=b"))))),
        c("sticky cookie, percent-encoding kept", None, "/c", &[("cookie", b"uid=user%2D1")], 0, Some((1, Stable, Bucket(b(b"user%2D1")), Some(b(b"user%2D1"))))),
        c("sticky cookie, empty is no key", None, "/c", &[("cookie", b"uid=")], 0, Some((1, Stable, NoStickyKey, None))),
        c("sticky cookie, no = is no key", None, "/c", &[("cookie", b"uid")], 0, Some((1, Stable, NoStickyKey, None))),
        c("sticky cookie, names are case-sensitive", None, "/c", &[("cookie", b"UID=user-1")], 0, Some((1, Stable, NoStickyKey, None))),
        c("sticky cookie, no Cookie header", None, "/c", &[], 0, Some((1, Stable, NoStickyKey, None))),
        // --- sticky query
        c("sticky query", None, "/q?uid=user-1&x=1", &[], U1 + 1, Some((2, Canary, Bucket(U1), Some(U1)))),
        c("sticky query, repeated: first wins", None, "/q?x=1&uid=user-1&uid=2", &[], 0, Some((2, Stable, Bucket(U1), Some(U1)))),
        c("sticky query, = in value", None, "/q?uid=a=b", &[], 0, Some((2, Stable, Bucket(b(b"a=b")), Some(b(b"a=b"))))),
        c("sticky query, percent-encoding kept", None, "/q?uid=user%2D1", &[], 0, Some((2, Stable, Bucket(b(b"user%2D1")), Some(b(b"user%2D1"))))),
        c("sticky query, empty pieces", None, "/q?&&uid=user-1&", &[], 0, Some((2, Stable, Bucket(U1), Some(U1)))),
        c("sticky query, empty is no key", None, "/q?uid=", &[], 0, Some((2, Stable, NoStickyKey, None))),
        c("sticky query, bare name is no key", None, "/q?uid", &[], 0, Some((2, Stable, NoStickyKey, None))),
        c("sticky query, no query", None, "/q", &[], 10_000, Some((2, Canary, NoStickyKey, None))),
        // --- random
        c("random at weight 0", None, "/r", &[("x-user-id", b"user-1")], 0, Some((3, Stable, Random, None))),
        c("random at weight 100", None, "/r", &[], 10_000, Some((3, Canary, Random, None))),
    ]
}

fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (name, value) in pairs {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).unwrap(),
        );
    }
    h
}

#[test]
fn decide_table() {
    let routes = routes();
    let mut rng = StdRng::seed_from_u64(7);
    let mut failures = Vec::new();
    for case in cases() {
        let uri: Uri = case.uri.parse().unwrap();
        let h = headers(case.headers);
        let req = RequestView {
            host: case.host,
            path: uri.path(),
            query: uri.query(),
            headers: &h,
        };
        let w = CanaryWeight::from_basis_points(case.weight_bp);
        let got = decide(&routes, &RouteIndex::new(&routes), &req, |_| w, &mut rng);
        let want = case.want.map(|(route, arm, reason, bucket)| Decision {
            route,
            arm,
            reason,
            bucket,
        });
        if got != want {
            failures.push(format!("{}: got {got:?}, want {want:?}", case.name));
        }
        assert_eq!(
            find_route_linear(&routes, &req),
            want.map(|d| d.route),
            "{}",
            case.name
        );
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn percent_encoded_keys_are_not_decoded() {
    assert_ne!(b(b"user%2D1"), U1);
}

#[test]
fn weight_is_only_asked_when_no_rule_matched() {
    let routes = routes();
    let h = headers(&[("x-canary", b"always")]);
    let req = RequestView {
        host: Some("shop.example"),
        path: "/api/recommend",
        query: None,
        headers: &h,
    };
    let mut rng = StdRng::seed_from_u64(1);
    let d = decide(
        &routes,
        &RouteIndex::new(&routes),
        &req,
        |_| panic!("weight asked despite a rule"),
        &mut rng,
    );
    assert_eq!(d.map(|d| d.reason), Some(Reason::Rule(0)));
}

#[test]
fn weight_of_gets_the_route_index() {
    let routes = routes();
    let h = HeaderMap::new();
    let req = RequestView {
        host: None,
        path: "/r",
        query: None,
        headers: &h,
    };
    let mut rng = StdRng::seed_from_u64(1);
    let d = decide(
        &routes,
        &RouteIndex::new(&routes),
        &req,
        |i| {
            if i == 3 {
                CanaryWeight::FULL
            } else {
                CanaryWeight::ZERO
            }
        },
        &mut rng,
    );
    assert_eq!(d.map(|d| d.arm), Some(Arm::Canary));
}

#[test]
fn request_view_of_a_request() {
    let req = http::Request::get("/api/recommend?uid=1")
        .header("host", "Shop.Example:8080")
        .body(())
        .unwrap();
    let v = RequestView::of(&req);
    assert_eq!(
        (v.host, v.path, v.query),
        (Some("Shop.Example:8080"), "/api/recommend", Some("uid=1"))
    );
    // Absolute-form: the URI authority overrides Host.
    let req = http::Request::get("http://other.example/x")
        .header("host", "shop.example")
        .body(())
        .unwrap();
    assert_eq!(RequestView::of(&req).host, Some("other.example"));
    let req = http::Request::get("/x").body(()).unwrap();
    assert_eq!(RequestView::of(&req).host, None);
}

#[test]
fn random_split_is_within_four_sigma() {
    let routes = routes();
    let index = RouteIndex::new(&routes);
    let h = HeaderMap::new();
    for path in ["/r", "/c"] {
        let req = RequestView {
            host: None,
            path,
            query: None,
            headers: &h,
        };
        let mut rng = StdRng::seed_from_u64(0x6772_6179);
        let w = CanaryWeight::from_basis_points(1000);
        let n = 20_000;
        let canary = (0..n)
            .filter(|_| {
                decide(&routes, &index, &req, |_| w, &mut rng).map(|d| d.arm) == Some(Arm::Canary)
            })
            .count() as f64;
        let (mean, sigma) = (n as f64 * 0.1, (n as f64 * 0.1 * 0.9).sqrt());
        assert!(
            (canary - mean).abs() <= 4.0 * sigma,
            "{path}: {canary} canary of {n}, expected {mean} ± {}",
            4.0 * sigma
        );
    }
}

// ---------------------------------------------------------------- explain

#[test]
fn explain_reports_bucket_arm_and_rule() {
    let routes = routes();
    let shop = &routes[0];
    let e = explain(shop, "user-1", CanaryWeight::from_basis_points(U1));
    assert_eq!(
        (e.bucket, e.arm, e.rule, e.canary_from_percent),
        (U1, Arm::Stable, None, 48.52)
    );
    let e = explain(shop, "user-1", CanaryWeight::from_percent(48.52).unwrap());
    assert_eq!(e.arm, Arm::Canary);
    let e = explain(shop, "Müller", CanaryWeight::ZERO);
    assert_eq!(
        (e.bucket, e.arm, e.canary_from_percent),
        (5567, Arm::Stable, 55.68)
    );
    // sticky_in is rule 2; the header rules before it cannot match a bare key.
    let e = explain(shop, "staff-1001", CanaryWeight::ZERO);
    assert_eq!((e.arm, e.rule), (Arm::Canary, Some(2)));
    // A sticky_in rule to stable wins over a weight of 100.
    let r = route("r")
        .sticky_header("x-user-id")
        .rule(sticky_in(&["qa"]), Arm::Stable)
        .build();
    let e = explain(&r, "qa", CanaryWeight::FULL);
    assert_eq!((e.arm, e.rule), (Arm::Stable, Some(0)));
    // No sticky source: sticky_in cannot match (as in decide), bucket still shown.
    let r = route("r").rule(sticky_in(&["qa"]), Arm::Canary).build();
    let e = explain(&r, "qa", CanaryWeight::ZERO);
    assert_eq!(
        (e.arm, e.rule, e.bucket),
        (Arm::Stable, None, sticky::bucket("r", b"qa"))
    );
}

// ---------------------------------------------------------------- properties

fn header_bytes() -> impl Strategy<Value = Vec<u8>> {
    // What `HeaderValue::from_bytes` accepts: no controls but tab.
    proptest::collection::vec(
        any::<u8>().prop_filter("valid header byte", |b| {
            *b == b'\t' || (*b >= 0x20 && *b != 0x7f)
        }),
        0..40,
    )
}

proptest! {
    #[test]
    fn raising_the_weight_never_moves_a_key_from_canary_to_stable(
        key in header_bytes(),
        lo in 0u16..=10_000,
        hi in 0u16..=10_000,
    ) {
        let (lo, hi) = (lo.min(hi), lo.max(hi));
        let routes = routes();
        let index = RouteIndex::new(&routes);
        let mut h = HeaderMap::new();
        h.insert("x-user-id", HeaderValue::from_bytes(&key).unwrap());
        let req = RequestView { host: None, path: "/api/recommend", query: None, headers: &h };
        let mut rng = StdRng::seed_from_u64(0);
        let mut at = |bp| decide(&routes, &index, &req, |_| CanaryWeight::from_basis_points(bp), &mut rng).map(|d| d.arm);
        let (low, high) = (at(lo), at(hi));
        let low_canary = low == Some(Arm::Canary);
        prop_assert!(!low_canary || high == Some(Arm::Canary), "{:?} at {} but {:?} at {}", low, lo, high, hi);
    }

    #[test]
    fn explain_agrees_with_decide(key in "[!-~]{1,30}", bp in 0u16..=10_000) {
        let routes = routes();
        let mut h = HeaderMap::new();
        h.insert("x-user-id", HeaderValue::from_str(&key).unwrap());
        let req = RequestView { host: Some("shop.example"), path: "/api/recommend", query: None, headers: &h };
        let w = CanaryWeight::from_basis_points(bp);
        let d = decide(&routes, &RouteIndex::new(&routes), &req, |_| w, &mut StdRng::seed_from_u64(0)).unwrap();
        let e = explain(&routes[0], &key, w);
        prop_assert_eq!((d.arm, d.bucket), (e.arm, Some(e.bucket)));
        prop_assert_eq!(d.reason, e.rule.map_or(Reason::Bucket(e.bucket), Reason::Rule));
    }

    #[test]
    fn arbitrary_request_bytes_never_panic(
        host in proptest::option::of(".{0,30}"),
        path in ".{0,30}",
        query in proptest::option::of(".{0,60}"),
        hs in proptest::collection::vec(
            (prop::sample::select(vec!["cookie", "x-user-id", "user-agent", "x-canary", "x-multi", "host", "x-other"]), header_bytes()),
            0..8,
        ),
        bp in 0u16..=10_000,
        seed in any::<u64>(),
    ) {
        let routes = routes();
        let mut h = HeaderMap::new();
        for (name, value) in &hs {
            h.append(*name, HeaderValue::from_bytes(value).unwrap());
        }
        let req = RequestView { host: host.as_deref(), path: &path, query: query.as_deref(), headers: &h };
        let mut rng = StdRng::seed_from_u64(seed);
        if let Some(d) = decide(&routes, &RouteIndex::new(&routes), &req, |_| CanaryWeight::from_basis_points(bp), &mut rng) {
            prop_assert!(d.route < routes.len());
            prop_assert!(d.bucket.map_or(true, |b| b < sticky::BUCKETS));
        }
        for r in &routes {
            let _ = explain(r, &path, CanaryWeight::from_basis_points(bp));
        }
    }
}
