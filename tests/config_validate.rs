//! One test per validation check, through the public `parse` API: each bad
//! value gives the documented message at the right place, each good value
//! the right runtime value.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use grayproxy::config::parse;
use grayproxy::config::types::{Condition, StickySource, ValueTest};
use grayproxy::domain::CanaryWeight;
use support::config::parsed::*;
#[test]
fn defaults_and_path_resolution() {
    let c = ok(&file(
        "[state]\ndir = \"/var/lib/gp\"\n[admin]\ntoken_file = \"tok\"",
        "",
    ));
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
    assert_eq!(c.admin.listen.to_string(), "127.0.0.1:9901");
    assert_eq!(
        c.admin.token_file.as_deref(),
        Some(Path::new("/etc/gp/tok"))
    );
    assert_eq!(c.state.dir, Path::new("/var/lib/gp"));
    let r = &c.routes[0];
    assert_eq!(r.canary_weight, CanaryWeight::ZERO);
    assert_eq!(r.salt, "r");
    assert!(r.fallback);
    assert_eq!(r.fallback_budget, 0.2);
    assert!(r.ramp.is_none() && r.sticky.is_none() && r.rules.is_empty());
    let c = ok(&file("", ""));
    assert_eq!(c.state.dir, Path::new("/etc/gp/state"));
    assert_eq!(c.admin.token_file, None);
}

#[test]
fn listen_addresses() {
    let c = ok(&file(
        "[server]\nlisten = \"[::1]:0\"\n[admin]\nlisten = \"0.0.0.0:9\"",
        "",
    ));
    assert_eq!(c.server.listen.port(), 0);
    assert_eq!(c.admin.listen.to_string(), "0.0.0.0:9");
    assert!(one_err(&file("[admin]\nlisten = \"localhost:1\"", ""))
        .starts_with("admin.listen \"localhost:1\" is not an IP:port address"));
    assert!(one_err(&file("[server]\nlisten = \"127.0.0.1\"", "")).starts_with("server.listen"));
}

#[test]
fn arm_header_and_workers() {
    let c = ok(&file("[server]\narm_header = \"\"\nworkers = 4", ""));
    assert_eq!(c.server.arm_header, None);
    assert_eq!(c.server.workers, 4);
    let c = ok(&file("[server]\narm_header = \"X-Arm\"", ""));
    assert_eq!(
        c.server.arm_header.map(|h| h.to_string()).as_deref(),
        Some("x-arm")
    );
    assert!(one_err(&file("[server]\narm_header = \"a:b\"", ""))
        .starts_with("arm_header \"a:b\" is not a valid header name"));
    assert_eq!(
        one_err(&file("[server]\nworkers = -1", "")),
        "workers -1 is negative; use 0 for one per core"
    );
}

#[test]
fn server_durations_and_limits() {
    let c = ok(&file(
        "[server]\nrequest_timeout = \"1m30s\"\nheader_read_timeout = \"250ms\"\nshutdown_grace = \"0s\"\nmax_body_bytes = 1\nmax_header_bytes = 2\nmax_headers = 3",
        "",
    ));
    assert_eq!(c.server.request_timeout, Duration::from_secs(90));
    assert_eq!(c.server.header_read_timeout, Duration::from_millis(250));
    assert_eq!(c.server.shutdown_grace, Duration::ZERO);
    assert_eq!(
        (
            c.server.max_body_bytes,
            c.server.max_header_bytes,
            c.server.max_headers
        ),
        (1, 2, 3)
    );
    assert_eq!(
        errs(&file("[server]\nrequest_timeout = \"0s\"\nshutdown_grace = \"5\"\nmax_body_bytes = -5\nmax_header_bytes = 0", "")),
        [
            "request_timeout must be above 0, e.g. \"10s\"",
            "`shutdown_grace`: invalid duration \"5\": missing or unknown unit after 5; use e.g. \"250ms\", \"30s\", \"5m\", \"1h\" or \"1m30s\"",
            "max_body_bytes -5 must be above 0",
            "max_header_bytes 0 must be above 0",
        ]
    );
}

#[test]
fn access_log_sample_is_a_fraction() {
    assert_eq!(ok(&file("", "")).server.access_log_sample, None);
    for (text, want) in [("0.0", 0.0), ("0.01", 0.01), ("1", 1.0), ("1.0", 1.0)] {
        let c = ok(&file(&format!("[server]\naccess_log_sample = {text}"), ""));
        assert_eq!(c.server.access_log_sample, Some(want), "{text}");
    }
    // Out of range: an error at the value, saying what to write instead.
    for text in ["1.5", "-0.1", "100", "nan", "inf"] {
        let e = load(&file(&format!("[server]\naccess_log_sample = {text}"), "")).unwrap_err();
        assert_eq!(
            e,
            [format!(
                "2:21: access_log_sample {} is outside 0.0..=1.0; use a fraction of requests \
                 (1.0 = every request, 0.01 = one in a hundred, 0.0 = off)",
                text.parse::<f64>().unwrap()
            )],
            "{text}"
        );
    }
    assert_eq!(
        one_err(&file("[server]\naccess_log_sample = \"1%\"", "")),
        "`access_log_sample` in [server] must be a number, found string"
    );
}

#[test]
fn keepalive_timeout_default_value_and_errors() {
    assert_eq!(
        ok(&file("", "")).server.keepalive_timeout,
        Duration::from_secs(75)
    );
    let c = ok(&file("[server]\nkeepalive_timeout = \"2m\"", ""));
    assert_eq!(c.server.keepalive_timeout, Duration::from_secs(120));
    // Located at the value: line 2 of the file, column 21.
    assert_eq!(
        load(&file("[server]\nkeepalive_timeout = \"0s\"", "")).err(),
        Some(vec![
            "2:21: keepalive_timeout must be above 0, e.g. \"10s\"".to_owned()
        ])
    );
    assert_eq!(
        load(&file("[server]\nkeepalive_timeout = \"75\"", "")).err(),
        Some(vec!["2:21: `keepalive_timeout`: invalid duration \"75\": missing or unknown unit after 75; use e.g. \"250ms\", \"30s\", \"5m\", \"1h\" or \"1m30s\"".to_owned()])
    );
    assert_eq!(
        load(&file("[server]\nkeepalive_timeout = 75", "")).err(),
        Some(vec![
            "2:21: `keepalive_timeout` in [server] must be a string, found integer".to_owned()
        ])
    );
}

#[test]
fn tls_needs_cert_and_key() {
    let c = ok(&file(
        "[server]\ntls = { cert = \"c.pem\", key = \"/k.pem\" }",
        "",
    ));
    let tls = c.server.tls.unwrap();
    assert_eq!(
        (tls.cert.as_path(), tls.key.as_path()),
        (Path::new("/etc/gp/c.pem"), Path::new("/k.pem"))
    );
    assert_eq!(
        one_err(&file("[server.tls]\nkey = \"k\"", "")),
        "server.tls needs both `cert` and `key`; add `cert`"
    );
}

#[test]
fn upstreams_need_valid_endpoints() {
    let text = "[upstreams.a]\nendpoints = [\"https://x\", \"[::1]:81\"]\n[upstreams.b]\n[upstreams.c]\nendpoints = [\"c\"]\n\
                [[routes]]\nname = \"r\"\nstable = \"a\"\ncanary = \"b\"\n";
    assert_eq!(
        errs(text),
        [
            "[upstreams.b] has no `endpoints`; add endpoints = [\"127.0.0.1:8081\"]",
            "endpoint \"c\" has no port; write c:PORT or http://c",
        ]
    );
    let c = ok(&file(
        "[upstreams.z]\nendpoints = [\"https://x\", \"[::1]:81\"]",
        "",
    ));
    // Name order, so ids do not depend on where tables sit in the file.
    let names: Vec<&str> = c.upstreams.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "z"]);
    assert_eq!(c.upstreams[2].endpoints[0].authority(), "x:443");
    assert!(c.upstreams[2].endpoints[0].tls);
    assert_eq!(c.upstreams[2].endpoints[1].authority(), "[::1]:81");
}

#[test]
fn unused_upstream_is_a_warning() {
    let w = warnings(&file("[upstreams.z]\nendpoints = [\"z:1\"]", ""));
    assert_eq!(w, ["upstream `z` is not used by any route"]);
}

#[test]
fn same_stable_and_canary_is_a_warning() {
    let text = file("", "").replace("canary = \"b\"", "canary = \"a\"");
    assert_eq!(
        warnings(&text),
        [
            "upstream `b` is not used by any route",
            "stable and canary are both `a`; the canary would be compared with itself",
        ]
    );
}

#[test]
fn canary_weight_range_and_precision() {
    let w = |v: &str| {
        ok(&file("", &format!("canary_weight = {v}"))).routes[0]
            .canary_weight
            .basis_points()
    };
    assert_eq!(
        (w("5"), w("12.34"), w("0.01"), w("100.0"), w("0")),
        (500, 1234, 1, 10_000, 0)
    );
    assert_eq!(
        one_err(&file("", "canary_weight = 150")),
        "canary_weight 150 is above 100; use 0.0..=100.0"
    );
    assert_eq!(
        one_err(&file("", "canary_weight = -1")),
        "canary_weight -1 is below 0; use 0.0..=100.0"
    );
    assert_eq!(
        one_err(&file("", "canary_weight = nan")),
        "canary_weight NaN is not a number; use 0.0..=100.0"
    );
    assert_eq!(
        one_err(&file("", "canary_weight = 0.001")),
        "canary_weight 0.001 has more than two decimals; weights go in steps of 0.01 (e.g. 0.00)"
    );
    assert_eq!(
        one_err(&file("", "canary_weight = \"5\"")),
        "`canary_weight` in [[routes]] must be a number, found string"
    );
}

#[test]
fn upstream_references_must_exist() {
    let text = format!("{UPSTREAMS}[[routes]]\nname = \"r\"\nstable = \"x\"\n");
    assert_eq!(
        errs(&text),
        [
            "route `r` has no `canary`; add canary = \"<upstream name>\"",
            "upstream `x` is not defined; defined upstreams: a, b",
        ]
    );
    assert_eq!(
        errs("[[routes]]\nname = \"r\"\nstable = \"a\"\ncanary = \"a\"\n"),
        [
            "upstream `a` is not defined; no upstreams are defined (add [upstreams.a])",
            "upstream `a` is not defined; no upstreams are defined (add [upstreams.a])",
        ]
    );
}

#[test]
fn route_names_are_present_unique_and_non_empty() {
    let text = format!(
        "{UPSTREAMS}[[routes]]\nname = \"r\"\nstable = \"a\"\ncanary = \"b\"\n\
         [[routes]]\nname = \"r\"\nstable = \"a\"\ncanary = \"b\"\n\
         [[routes]]\nstable = \"a\"\ncanary = \"b\"\n\
         [[routes]]\nname = \"\"\nstable = \"a\"\ncanary = \"b\"\n"
    );
    let e = load(&text).unwrap_err();
    assert_eq!(
        e,
        [
            "10:8: route name `r` is already used on line 6; route names must be unique",
            "13:1: [[routes]] has no `name`; add name = \"...\"",
            "17:8: route `name` is empty; give the route a name",
        ]
    );
}

#[test]
fn at_least_one_route() {
    assert_eq!(
        load(UPSTREAMS).unwrap_err(),
        ["1:1: no [[routes]] defined; every request would get 404 (add a [[routes]] table)"]
    );
}

#[test]
fn sticky_sources() {
    let s = |v: &str| {
        ok(&file("", &format!("sticky = \"{v}\""))).routes[0]
            .sticky
            .clone()
    };
    assert_eq!(
        s("header:X-User"),
        Some(StickySource::Header(http::HeaderName::from_static(
            "x-user"
        )))
    );
    assert_eq!(s("cookie:sid"), Some(StickySource::Cookie("sid".into())));
    assert_eq!(s("query:uid"), Some(StickySource::Query("uid".into())));
    let e = |v: &str| one_err(&file("", &format!("sticky = \"{v}\"")));
    assert_eq!(
        e("session"),
        "sticky \"session\" must be \"header:NAME\", \"cookie:NAME\" or \"query:NAME\""
    );
    assert_eq!(
        e("body:x"),
        "sticky \"body:x\" must be \"header:NAME\", \"cookie:NAME\" or \"query:NAME\""
    );
    assert!(e("header:a b").starts_with("sticky header \"a b\" is not a valid header name"));
    assert!(e("cookie:").starts_with("sticky cookie \"\" is not a valid cookie name"));
    assert!(e("query:a&b").starts_with("sticky query \"a&b\" is not a valid query parameter name"));
}

#[test]
fn route_match() {
    let c = ok(&file(
        "",
        "match = { host = \"Shop.Example\", path_prefix = \"/api\" }",
    ));
    assert_eq!(c.routes[0].matcher.host.as_deref(), Some("shop.example"));
    assert_eq!(c.routes[0].matcher.path_prefix.as_deref(), Some("/api"));
    assert_eq!(
        errs(&file(
            "",
            "match = { host = \"shop:443\", path_prefix = \"api\" }"
        )),
        [
            "match host \"shop:443\" must not include a port; hosts are matched without it",
            "path_prefix \"api\" must start with '/'; write \"/api\"",
        ]
    );
    assert_eq!(
        one_err(&file("", "match = { pth_prefix = \"/a\" }")),
        "unknown key `pth_prefix` in routes.match (did you mean `path_prefix`?); expected one of: host, path_prefix"
    );
}

#[test]
fn fallback_settings() {
    let r = &ok(&file("", "fallback = false\nfallback_budget = 1")).routes[0];
    assert!(!r.fallback);
    assert_eq!(r.fallback_budget, 1.0);
    assert!(one_err(&file("", "fallback_budget = 1.5"))
        .starts_with("fallback_budget 1.5 is outside 0.0..=1.0"));
    assert!(
        one_err(&file("", "fallback_budget = -0.1")).starts_with("fallback_budget -0.1 is outside")
    );
}

fn rule(when: &str, to: &str) -> String {
    file(
        "",
        &format!("sticky = \"header:u\"\n[[routes.rules]]\nwhen = {when}\nto = \"{to}\""),
    )
}

#[test]
fn rules_build_conditions() {
    let c = ok(&rule("{ query = \"beta\", regex = \"^y\" }", "canary"));
    match &c.routes[0].rules[0].when {
        Condition::Query(name, ValueTest::Regex(re)) => {
            assert_eq!(name, "beta");
            assert!(re.is_match("yes") && !re.is_match("no"));
        }
        other => panic!("{other:?}"),
    }
    let c = ok(&rule("{ sticky_in = [\"u1\", \"u2\"] }", "stable"));
    assert!(
        matches!(&c.routes[0].rules[0].when, Condition::StickyIn(k) if k.len() == 2 && k.contains("u1"))
    );
}

#[test]
fn rule_condition_shape() {
    let e = |when: &str| one_err(&rule(when, "canary"));
    assert_eq!(
        e("{ equals = \"x\" }"),
        "rule `when` needs one of header, cookie, query or sticky_in"
    );
    assert_eq!(
        e("{ header = \"h\", cookie = \"c\", equals = \"x\" }"),
        "rule `when` has both `header` and `cookie`; a rule tests one thing, split it into two rules"
    );
    assert_eq!(
        e("{ header = \"h\" }"),
        "rule `when` needs `equals` or `regex` to test the value against"
    );
    assert_eq!(
        e("{ cookie = \"c\", equals = \"x\", regex = \"y\" }"),
        "rule `when` has both `equals` and `regex`; keep one"
    );
    assert_eq!(
        e("{ header = \"h\", regex = \"a[\" }"),
        "regex \"a[\" does not compile: unclosed character class"
    );
    assert_eq!(
        e("{ sticky_in = [\"u\"], regex = \"y\" }"),
        "`regex` does not apply to `sticky_in`; remove it"
    );
    assert_eq!(
        e("{ sticky_in = [] }"),
        "`sticky_in` is empty; list at least one sticky key"
    );
    assert!(e("{ cookie = \"a;b\", equals = \"1\" }")
        .starts_with("rule cookie \"a;b\" is not a valid cookie name"));
    assert!(e("{ header = \"\", equals = \"1\" }")
        .starts_with("rule header \"\" is not a valid header name"));
}

#[test]
fn rule_target_and_presence() {
    assert_eq!(
        one_err(&rule("{ header = \"h\", equals = \"1\" }", "beta")),
        "rule `to` must be \"stable\" or \"canary\", found \"beta\""
    );
    assert_eq!(
        errs(&file(
            "",
            "[[routes.rules]]\n[[routes.rules]]\nwhen = { header = \"h\", equals = \"1\" }"
        )),
        [
            "rule has no `to`; add to = \"stable\" or to = \"canary\"",
            "rule has no `when`; add e.g. when = { header = \"x-canary\", equals = \"always\" }",
            "rule has no `to`; add to = \"stable\" or to = \"canary\"",
        ]
    );
}

#[test]
fn sticky_in_requires_route_sticky() {
    let text = file(
        "",
        "[[routes.rules]]\nwhen = { sticky_in = [\"u\"] }\nto = \"canary\"",
    );
    assert!(one_err(&text).starts_with("`sticky_in` needs the route to have `sticky`"));
}

fn routes(matches: &[(&str, &str)]) -> String {
    let mut text = UPSTREAMS.to_owned();
    for (name, m) in matches {
        text.push_str(&format!(
            "[[routes]]\nname = \"{name}\"\nstable = \"a\"\ncanary = \"b\"\n{m}\n"
        ));
    }
    text
}

#[test]
fn shadowed_routes_warn() {
    let w = warnings(&routes(&[
        ("all", ""),
        ("api", "match = { path_prefix = \"/api\" }"),
    ]));
    assert_eq!(w, ["route `api` never matches: route `all` (line 5) comes first and matches every request it would; move it earlier or narrow `all`'s match"]);
    let w = warnings(&routes(&[
        ("api", "match = { path_prefix = \"/api\" }"),
        ("v1", "match = { path_prefix = \"/api/v1\", host = \"h\" }"),
    ]));
    assert_eq!(w.len(), 1, "{w:?}");
    // Not shadowed: a different host, a prefix that only matches by characters, a narrower earlier route.
    for pair in [
        [
            ("h1", "match = { host = \"one\" }"),
            ("h2", "match = { host = \"two\" }"),
        ],
        [
            ("api", "match = { path_prefix = \"/api\" }"),
            ("apix", "match = { path_prefix = \"/apix\" }"),
        ],
        [
            ("v1", "match = { path_prefix = \"/api/v1\" }"),
            ("api", "match = { path_prefix = \"/api\" }"),
        ],
    ] {
        assert_eq!(warnings(&routes(&pair)), Vec::<String>::new(), "{pair:?}");
    }
}

#[test]
fn every_unknown_key_and_type_error_at_once() {
    let text = file(
        "[server]\nlistn = \"x\"\nworkers = \"2\"\n[state]\ndirectory = \"s\"\n[metrics]\n",
        "colour = 1\nsticky = 5\n[routes.ramp]\nstep = [1]\ntick = 10",
    );
    let e = load(&text).unwrap_err();
    assert_eq!(
        e,
        [
            "2:1: unknown key `listn` in [server] (did you mean `listen`?); expected one of: listen, arm_header, workers, tls, request_timeout, header_read_timeout, keepalive_timeout, shutdown_grace, max_body_bytes, max_header_bytes, max_headers, connect_timeout, max_connections, access_log_sample",
            "3:11: `workers` in [server] must be an integer, found string",
            "5:1: unknown key `directory` in [state]; expected one of: dir",
            "6:2: unknown key `metrics` in the top level; expected one of: server, admin, state, upstreams, routes, fleet",
            "16:1: unknown key `colour` in [[routes]]; expected one of: name, match, stable, canary, canary_weight, sticky, salt, fallback, fallback_budget, rules, ramp, shadow, grpc_error_codes, grpc_idempotent",
            "17:10: `sticky` in [[routes]] must be a string, found integer",
            "19:1: unknown key `step` in [routes.ramp] (did you mean `steps`?); expected one of: steps, interval, tick, min_requests, baseline, confidence, max_error_rate_increase, max_p99_increase, gate_ratios, max_step_duration, prometheus_url, failures_before_rollback, prometheus_checks, shadow, min_rbo, segments, segment_values",
            "20:8: `tick` in [routes.ramp] must be a string, found integer",
        ]
    );
}

#[test]
fn summary_lists_routes() {
    let text = routes(&[
        ("one", "canary_weight = 12.5"),
        (
            "two",
            "match = { host = \"h\" }\n[routes.ramp]\nsteps = [2, 100]",
        ),
    ]);
    let l = parse(&text, Path::new("c.toml")).unwrap();
    assert_eq!(
        l.summary(),
        "ok: c.toml: 2 upstreams, 2 routes (one: canary 12.5%; two: canary 0% with ramp 2→100%)"
    );
}
