//! `grayproxy check`'s contract, pinned: every error at once, rendered
//! `error: PATH:LINE:COL: message`; the contract's example config loads with
//! the values it documents; no input makes the parser panic.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use grayproxy::config::types::{Condition, RampPolicy, StickySource, UpstreamId, ValueTest};
use grayproxy::config::{load, parse};
use grayproxy::domain::{Arm, CanaryWeight};
use proptest::prelude::*;

const BAD_OUTPUT: &str = r#"error: tests/fixtures/bad.toml:3:10: server.listen "localhost:8080" is not an IP:port address; use e.g. "127.0.0.1:8080" or "[::1]:8080" (host names are not resolved; port 0 picks a free port)
error: tests/fixtures/bad.toml:4:14: arm_header "x arm" is not a valid header name; use letters, digits and '-' (e.g. "x-user-id")
error: tests/fixtures/bad.toml:5:19: `request_timeout`: invalid duration "10": missing or unknown unit after 10; use e.g. "250ms", "30s", "5m", "1h" or "1m30s"
error: tests/fixtures/bad.toml:6:15: max_headers 0 must be above 0
error: tests/fixtures/bad.toml:7:7: server.tls needs both `cert` and `key`; add `key`
error: tests/fixtures/bad.toml:11:1: unknown key `tokenfile` in [admin] (did you mean `token_file`?); expected one of: listen, token_file
error: tests/fixtures/bad.toml:14:33: endpoint "http://reco:80/api" must not have a path; use host:port, http://host:port or https://host:port
error: tests/fixtures/bad.toml:16:13: upstream `reco-v2` has no endpoints; list at least one host:port
error: tests/fixtures/bad.toml:20:25: path_prefix "api" must start with '/'; write "/api"
error: tests/fixtures/bad.toml:22:10: upstream `reco-v3` is not defined; defined upstreams: reco-v1, reco-v2
error: tests/fixtures/bad.toml:23:17: canary_weight 150 is above 100; use 0.0..=100.0
error: tests/fixtures/bad.toml:24:1: unknown key `weigth` in [[routes]]; expected one of: name, match, stable, canary, canary_weight, sticky, salt, fallback, fallback_budget, rules, ramp, shadow, grpc_error_codes, grpc_idempotent
error: tests/fixtures/bad.toml:25:10: sticky "session" must be "header:NAME", "cookie:NAME" or "query:NAME"
error: tests/fixtures/bad.toml:28:43: regex "iPh(one" does not compile: unclosed group
error: tests/fixtures/bad.toml:31:46: `equals` does not apply to `sticky_in`; remove it
error: tests/fixtures/bad.toml:32:8: rule `to` must be "stable" or "canary", found "beta"
error: tests/fixtures/bad.toml:35:15: step 5.125 has more than two decimals; weights go in steps of 0.01 (e.g. 5.12)
error: tests/fixtures/bad.toml:35:26: steps must increase strictly: 25 comes after 50
error: tests/fixtures/bad.toml:35:26: the last step is 25; it must be 100 (full rollout), e.g. add 100
error: tests/fixtures/bad.toml:36:14: `interval`: invalid duration "30x": missing or unknown unit after 30; use e.g. "250ms", "30s", "5m", "1h" or "1m30s"
error: tests/fixtures/bad.toml:37:10: tick must be above 0, e.g. "10s"
error: tests/fixtures/bad.toml:38:16: confidence 1.5 must be between 0 and 1 (exclusive), e.g. 0.99
error: tests/fixtures/bad.toml:39:21: gate ratio 0.5 must be 0 (no gate) or at least 1 (the canary shown less than that many times worse)
error: tests/fixtures/bad.toml:42:8: route name `recommend` is already used on line 19; route names must be unique
error: tests/fixtures/bad.toml:45:17: canary_weight 12.345 has more than two decimals; weights go in steps of 0.01 (e.g. 12.35)"#;

#[test]
fn bad_fixture_reports_every_error_exactly() {
    let errors = load(Path::new("tests/fixtures/bad.toml")).unwrap_err();
    assert_eq!(errors.to_string(), BAD_OUTPUT);
    // Every line the fixture marks "ERR" is reported (one line may hold several).
    let text = std::fs::read_to_string("tests/fixtures/bad.toml").unwrap();
    let marked: HashSet<usize> = text
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains("# ERR"))
        .map(|(i, _)| i + 1)
        .collect();
    let reported: HashSet<usize> = errors.errors().iter().map(|e| e.line).collect();
    assert_eq!(marked, reported);
}

#[test]
fn unreadable_file_is_one_error_at_1_1() {
    let errors = load(Path::new("tests/fixtures/does-not-exist.toml")).unwrap_err();
    assert_eq!(errors.len(), 1);
    let e = &errors.errors()[0];
    assert_eq!((e.line, e.col), (1, 1));
    assert!(
        e.to_string().starts_with(
            "error: tests/fixtures/does-not-exist.toml:1:1: cannot read config file: "
        ),
        "{e}"
    );
}

#[test]
fn syntax_error_is_one_located_error() {
    let errors = parse(
        "[server]\nlisten = \"a\"\nworkers = = 3\n",
        Path::new("x.toml"),
    )
    .unwrap_err();
    assert_eq!(errors.len(), 1, "{errors}");
    let e = &errors.errors()[0];
    assert_eq!(e.line, 3, "{e}");
    assert!(e.message.starts_with("invalid TOML: "), "{e}");
    assert!(!e.to_string().contains('\n'), "one line: {e}");
}

#[test]
fn contract_example_loads_with_documented_values() {
    let loaded = load(Path::new("config/grayproxy.toml")).unwrap();
    let c = &loaded.config;
    let dir = std::path::absolute("config").unwrap();

    assert_eq!(
        c.server.listen,
        "127.0.0.1:8080".parse::<SocketAddr>().unwrap()
    );
    assert_eq!(
        c.server.arm_header.as_ref().map(|h| h.as_str()),
        Some("x-grayproxy-arm")
    );
    assert_eq!(c.server.workers, 0);
    assert!(c.server.tls.is_none());
    assert_eq!(c.server.request_timeout, Duration::from_secs(10));
    assert_eq!(c.server.header_read_timeout, Duration::from_secs(5));
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
    assert_eq!(c.server.max_body_bytes, 10_485_760);
    assert_eq!(c.server.max_header_bytes, 65_536);
    assert_eq!(c.server.max_headers, 100);
    assert_eq!(
        c.admin.listen,
        "127.0.0.1:9901".parse::<SocketAddr>().unwrap()
    );
    // Relative to the config file's directory (README, configuration reference).
    assert_eq!(c.admin.token_file, Some(dir.join("admin.token")));
    assert_eq!(c.state.dir, dir.join("state"));

    let ups: Vec<(&str, String)> = c
        .upstreams
        .iter()
        .map(|u| (u.name.as_str(), u.endpoints[0].authority()))
        .collect();
    assert_eq!(
        ups,
        [
            ("reco-v1", "127.0.0.1:18081".to_owned()),
            ("reco-v2", "127.0.0.1:18082".to_owned())
        ]
    );

    assert_eq!(c.routes.len(), 1);
    let r = &c.routes[0];
    assert_eq!(r.name.as_str(), "recommend");
    assert_eq!(r.matcher.path_prefix.as_deref(), Some("/api/recommend"));
    assert_eq!(r.matcher.host, None);
    assert_eq!((r.stable, r.canary), (UpstreamId(0), UpstreamId(1)));
    assert_eq!(c.upstream(r.canary).name, "reco-v2");
    assert_eq!(r.canary_weight, CanaryWeight::from_basis_points(500));
    assert_eq!(
        r.sticky,
        Some(StickySource::Header(http::HeaderName::from_static(
            "x-user-id"
        )))
    );
    assert_eq!(r.salt, "reco-v2");
    assert!(r.fallback);
    assert_eq!(r.fallback_budget, 0.2);
    assert_eq!(r.ramp.as_deref(), Some(&RampPolicy::default()));

    let rules: Vec<(String, Arm)> = r
        .rules
        .iter()
        .map(|rule| (describe(&rule.when), rule.to))
        .collect();
    assert_eq!(
        rules,
        [
            ("header x-canary equals always".to_owned(), Arm::Canary),
            ("header user-agent regex iPhone".to_owned(), Arm::Canary),
            (
                "sticky_in [\"staff-1001\", \"staff-1002\"]".to_owned(),
                Arm::Canary
            ),
            ("cookie vip equals 1".to_owned(), Arm::Stable),
        ]
    );

    // With a ramp, `check` warns that canary_weight is ignored (the ramp
    // owns the weight: docs/ramp.md).
    let warnings: Vec<String> = loaded.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(
        warnings,
        ["warning: config/grayproxy.toml:27:17: canary_weight is ignored: the ramp (line 46) owns the weight; remove canary_weight"]
    );
    assert_eq!(
        loaded.summary(),
        "ok: config/grayproxy.toml: 2 upstreams, 1 route (recommend: canary 5% with ramp 1→100%)"
    );
}

/// Every relative path in the shipped config resolves beside it, to the
/// files the README tells a user to create (the token file used to resolve
/// to `config/config/admin.token`).
#[test]
fn shipped_config_paths_are_the_ones_the_readme_names() {
    let c = load(Path::new("config/grayproxy.toml")).unwrap().config;
    let token = c.admin.token_file.unwrap();
    assert_eq!(token, std::path::absolute("config/admin.token").unwrap());
    assert_eq!(c.state.dir, std::path::absolute("config/state").unwrap());
    let readme = std::fs::read_to_string("README.md").unwrap();
    assert!(
        readme.contains("openssl rand -hex 32 > config/admin.token"),
        "the README's quick start creates the token file the shipped config names"
    );
    // The same through `check` from another working directory: paths do not
    // depend on where grayproxy is started.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_grayproxy"))
        .args(["check", "-c"])
        .arg(std::path::absolute("config/grayproxy.toml").unwrap())
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

fn describe(c: &Condition) -> String {
    let test = |t: &ValueTest| match t {
        ValueTest::Equals(s) => format!("equals {s}"),
        ValueTest::Regex(r) => format!("regex {}", r.as_str()),
    };
    match c {
        Condition::Header(h, t) => format!("header {h} {}", test(t)),
        Condition::Cookie(n, t) => format!("cookie {n} {}", test(t)),
        Condition::Query(n, t) => format!("query {n} {}", test(t)),
        Condition::StickyIn(keys) => {
            let mut keys: Vec<&String> = keys.iter().collect();
            keys.sort();
            format!("sticky_in {keys:?}")
        }
    }
}

fn good_text() -> String {
    std::fs::read_to_string("config/grayproxy.toml").unwrap()
}

/// Replaces `text[at..at+len]` (clamped to char boundaries) with `insert`.
fn splice(text: &str, at: usize, len: usize, insert: &str) -> String {
    let mut start = at.min(text.len());
    while !text.is_char_boundary(start) {
        start -= 1;
    }
    let mut end = (start + len).min(text.len());
    while !text.is_char_boundary(end) {
        end += 1;
    }
    format!("{}{insert}{}", &text[..start], &text[end..])
}

/// Renders like `check` would; must never panic.
fn check(text: &str) -> String {
    match parse(text, Path::new("p.toml")) {
        Ok(l) => l.summary(),
        Err(e) => {
            assert!(!e.is_empty(), "an Err always carries at least one error");
            for err in e.errors() {
                assert!(err.line >= 1 && err.col >= 1);
            }
            e.to_string()
        }
    }
}

#[test]
fn removing_or_doubling_any_line_of_the_good_file_never_panics() {
    let text = good_text();
    let lines: Vec<&str> = text.lines().collect();
    for i in 0..lines.len() {
        let mut without = lines.clone();
        without.remove(i);
        check(&without.join("\n"));
        let mut doubled = lines.clone();
        doubled.insert(i, lines[i]);
        check(&doubled.join("\n"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn toml_like_text_never_panics(text in r#"[\[\]{}="'.,:a-z0-9_ \n#-]{0,200}"#) {
        check(&text);
    }

    #[test]
    fn mutated_good_file_never_panics(
        edits in prop::collection::vec(
            (0usize..2000, 0usize..12, r#"[\[\]{}="'.,:a-z0-9_ \n#%-]{0,10}"#),
            1..4,
        )
    ) {
        let mut text = good_text();
        for (at, len, insert) in &edits {
            text = splice(&text, *at, *len, insert);
        }
        check(&text);
    }
}
