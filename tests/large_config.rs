//! A config of 10,000 routes (prefix routes mixed with host routes) is
//! validated quickly, without warnings, and its last route is reachable
//! through the route index. The checks once compared every pair of routes
//! (45 s for this file in a debug build); the bound here is generous, for a
//! loaded machine, and only catches that kind of regression. Timings of the
//! release build: `benches/large_config.sh`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write;
use std::path::Path;
use std::time::Duration;

use tokio::time::Instant;

use grayproxy::config::parse;
use grayproxy::routing::{find_route_linear, RequestView, RouteIndex};

/// `n` routes as `benches/large_config.sh` writes them: even ones a path
/// prefix (`/svc/{i}/`), odd ones a host with a prefix (`h{i}.example` +
/// `/api`), each with a sticky key and one rule.
fn large_config(n: usize) -> String {
    let mut text = String::from(
        "[server]\nlisten = \"127.0.0.1:0\"\n[admin]\nlisten = \"127.0.0.1:0\"\n\
         [upstreams.v1]\nendpoints = [\"127.0.0.1:9\"]\n\
         [upstreams.v2]\nendpoints = [\"127.0.0.1:9\"]\n",
    );
    for i in 0..n {
        let matcher = if i % 2 == 0 {
            format!("{{ path_prefix = \"/svc/{i}/\" }}")
        } else {
            format!("{{ host = \"h{i}.example\", path_prefix = \"/api\" }}")
        };
        write!(
            text,
            "[[routes]]\nname = \"r{i}\"\nmatch = {matcher}\nstable = \"v1\"\ncanary = \"v2\"\n\
             canary_weight = 5.0\nsticky = \"header:x-user-id\"\n\
             [[routes.rules]]\nwhen = {{ header = \"x-canary\", equals = \"always\" }}\nto = \"canary\"\n"
        )
        .unwrap();
    }
    text
}

#[test]
fn ten_thousand_routes_are_checked_quickly_and_indexed() {
    let text = large_config(10_000);
    let started = Instant::now();
    let loaded = parse(&text, Path::new("/etc/gp/large.toml")).expect("the large config is valid");
    let took = started.elapsed();
    assert!(took < Duration::from_secs(30), "validation took {took:?}");
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings.first());
    let routes = &loaded.config.routes;
    assert_eq!(routes.len(), 10_000);

    let index = RouteIndex::new(routes);
    let headers = http::HeaderMap::new();
    for (host, path, want) in [
        ("H9999.example:8080", "/api/items", Some(9_999)),
        ("shop.example", "/svc/9998/items", Some(9_998)),
        ("h9999.example", "/nope", None),
    ] {
        let req = RequestView {
            host: Some(host),
            path,
            query: None,
            headers: &headers,
        };
        assert_eq!(index.find(&req), want, "{host}{path}");
        assert_eq!(find_route_linear(routes, &req), want, "{host}{path}");
    }
}
