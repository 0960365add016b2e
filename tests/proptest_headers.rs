//! Property tests: arbitrary header names and values never panic the header
//! rewrite, the framing check or `decide`, and the rewrite's promises hold
//! for all of them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

use grayproxy::config::parse;
use grayproxy::domain::Arm;
use grayproxy::proxy::forward::{rewrite_request, rewrite_response, ClientInfo};
use grayproxy::proxy::framing;
use grayproxy::routing::{decide, RequestView, RouteIndex};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;

const NAMES: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
    "host",
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-grayproxy-arm",
    "x-user-id",
    "cookie",
    "user-agent",
    "x-canary",
    "content-length",
];

fn header_name() -> impl Strategy<Value = HeaderName> {
    prop_oneof![
        prop::sample::select(NAMES).prop_map(HeaderName::from_static),
        "[a-z0-9!#$%&'*+.^_`|~-]{1,20}".prop_map(|s| HeaderName::from_bytes(s.as_bytes()).unwrap()),
    ]
}

fn header_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        // Any bytes the http crate accepts as a value (obs-text included).
        prop::collection::vec(any::<u8>(), 0..60)
            .prop_filter_map("invalid value", |b| HeaderValue::from_bytes(&b).ok()),
        // Token lists, as Connection / cookies carry them.
        "[ ,;=a-zA-Z0-9_-]{0,40}".prop_map(|s| HeaderValue::from_str(&s).unwrap()),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    prop::collection::vec((header_name(), header_value()), 0..16).prop_map(|pairs| {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(k, v);
        }
        h
    })
}

fn ip() -> impl Strategy<Value = IpAddr> {
    prop_oneof![
        any::<u32>().prop_map(|n| IpAddr::V4(Ipv4Addr::from(n))),
        any::<u128>().prop_map(|n| IpAddr::V6(Ipv6Addr::from(n))),
    ]
}

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

const ROUTES: &str = r#"
[upstreams.a]
endpoints = ["127.0.0.1:1"]
[upstreams.b]
endpoints = ["127.0.0.1:2"]
[[routes]]
name = "h"
match = { path_prefix = "/h" }
stable = "a"
canary = "b"
canary_weight = 30.0
sticky = "header:x-user-id"
  [[routes.rules]]
  when = { header = "user-agent", regex = "iPh.ne" }
  to = "canary"
  [[routes.rules]]
  when = { cookie = "vip", equals = "1" }
  to = "stable"
[[routes]]
name = "c"
stable = "a"
canary = "b"
canary_weight = 50.0
sticky = "cookie:uid"
  [[routes.rules]]
  when = { query = "beta", equals = "1" }
  to = "canary"
  [[routes.rules]]
  when = { sticky_in = ["staff-1"] }
  to = "canary"
"#;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn rewrite_request_never_panics_and_keeps_its_promises(
        mut h in headers(),
        client_ip in ip(),
        host in prop::option::of(header_value()),
        canary in any::<bool>(),
        stamp in any::<bool>(),
    ) {
        let arm = if canary { Arm::Canary } else { Arm::Stable };
        let arm_header = stamp.then(|| HeaderName::from_static("x-grayproxy-arm"));
        let had_host = h.get("host").cloned();
        let client = ClientInfo::new(client_ip, "http");
        rewrite_request(&mut h, &client, host.as_ref(), arm, arm_header.as_ref());
        for name in HOP_BY_HOP {
            prop_assert!(!h.contains_key(*name), "{name} survived");
        }
        prop_assert_eq!(h.get_all("x-forwarded-proto").iter().count(), 1);
        let xff: Vec<_> = h.get_all("x-forwarded-for").iter().collect();
        prop_assert!(xff.len() <= 1);
        if let Some(v) = xff.first() {
            prop_assert!(v.as_bytes().ends_with(client_ip.to_string().as_bytes()));
        }
        if stamp {
            prop_assert_eq!(h.get_all("x-grayproxy-arm").iter().count(), 1);
            prop_assert_eq!(h["x-grayproxy-arm"].as_bytes(), arm.as_str().as_bytes());
        }
        if let Some(had) = had_host {
            prop_assert_eq!(h.get("host"), Some(&had), "Host is kept");
        }
        rewrite_response(&mut h, arm, arm_header.as_ref());
    }

    #[test]
    fn framing_check_never_panics(h in headers(), v in 0u8..3) {
        let version = [http::Version::HTTP_10, http::Version::HTTP_11, http::Version::HTTP_2][v as usize];
        let _ = framing::check(version, &h);
    }

    #[test]
    fn decide_never_panics(
        h in headers(),
        path in "/[a-z/?=&%0-9]{0,20}",
        seed in any::<u64>(),
    ) {
        static CONFIG: std::sync::OnceLock<grayproxy::config::Config> = std::sync::OnceLock::new();
        let config = CONFIG.get_or_init(|| parse(ROUTES, Path::new("/tmp/p.toml")).unwrap().config);
        let mut req = http::Request::builder().uri(path.as_str()).body(()).unwrap();
        *req.headers_mut() = h;
        let view = RequestView::of(&req);
        let mut rng = SmallRng::seed_from_u64(seed);
        let index = RouteIndex::new(&config.routes);
        let d = decide(&config.routes, &index, &view, |i| config.routes[i].canary_weight, &mut rng);
        prop_assert!(d.is_some(), "the second route matches everything");
    }
}
