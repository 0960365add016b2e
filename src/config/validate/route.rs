//! Per-route checks: upstream references, weight, sticky source, match and
//! rules.

use std::collections::HashSet;

use http::HeaderName;
use regex::Regex;

use super::Checker;
use crate::config::raw::{RawMatch, RawRoute, RawRule, RawWhen, Sp};
use crate::config::types::{
    Condition, Route, RouteMatch, Rule, StickySource, Upstream, UpstreamId, ValueTest,
};
use crate::domain::{Arm, CanaryWeight, RouteName};
use crate::grpc::{GrpcCode, GrpcCodeSet};

/// One route, or `None` when something in it is wrong (reported).
pub(super) fn route(c: &mut Checker<'_>, r: &RawRoute, upstreams: &[Upstream]) -> Option<Route> {
    let before = c.errors.len();
    let name = route_name(c, r);
    let label = name.clone().unwrap_or_else(|| "(unnamed)".to_owned());
    let stable = upstream_ref(c, &r.stable, "stable", &label, r.at, upstreams);
    let canary = upstream_ref(c, &r.canary, "canary", &label, r.at, upstreams);
    let canary_weight = r
        .canary_weight
        .as_ref()
        .and_then(|w| c.weight(w, "canary_weight"));
    let sticky = r.sticky.as_ref().and_then(|s| sticky(c, s));
    let fallback_budget = fallback_budget(c, r);
    let matcher = r
        .matcher
        .as_ref()
        .map(|m| matcher(c, m))
        .unwrap_or_default();
    let rules: Vec<Rule> = r
        .rules
        .iter()
        .filter_map(|rule| rule_of(c, rule, r.sticky.is_some()))
        .collect();
    let ramp = r.ramp.as_ref().map(|ramp| super::ramp::ramp(c, ramp));
    let shadow = super::shadow::shadow(c, r.shadow.as_ref(), ramp.as_ref());
    let grpc_error_codes = grpc_error_codes(c, r);
    let grpc_idempotent = grpc_idempotent(c, r);
    warn_weight_with_ramp(c, r);
    if let (Some(s), Some(k), Some(_)) = (&r.stable, &r.canary, stable.zip(canary)) {
        if s.value == k.value {
            let msg = format!(
                "stable and canary are both `{}`; the canary would be compared with itself",
                s.value
            );
            c.warn(k.at, msg);
        }
    }
    if c.errors.len() > before {
        return None;
    }
    let name = name?;
    Some(Route {
        salt: r
            .salt
            .as_ref()
            .map_or_else(|| name.clone(), |s| s.value.clone()),
        name: RouteName::new(&name),
        matcher,
        stable: stable?,
        canary: canary?,
        canary_weight: canary_weight.unwrap_or(CanaryWeight::ZERO),
        sticky,
        fallback: r.fallback.as_ref().map_or(true, |f| f.value),
        fallback_budget,
        rules,
        ramp: ramp.map(Box::new),
        shadow: shadow.map(Box::new),
        grpc_error_codes,
        grpc_idempotent,
    })
}

/// `grpc_error_codes = ["UNAVAILABLE", ..]`: code names; default
/// [`GrpcCodeSet::default`].
fn grpc_error_codes(c: &mut Checker<'_>, r: &RawRoute) -> GrpcCodeSet {
    let Some(list) = &r.grpc_error_codes else {
        return GrpcCodeSet::default();
    };
    list.value
        .iter()
        .filter_map(|name| {
            let code = GrpcCode::from_name(&name.value);
            if code.is_none() {
                let names: Vec<&str> = GrpcCode::ALL.iter().map(|c| c.as_str()).collect();
                let msg = format!(
                    "grpc_error_codes has {:?}, which is not a gRPC status code; use names like {}",
                    name.value,
                    names.join(", ")
                );
                c.error(name.at, msg);
            }
            code
        })
        .collect()
}

/// `grpc_idempotent = ["/pkg.Service/Method", ..]`: full method paths.
fn grpc_idempotent(c: &mut Checker<'_>, r: &RawRoute) -> Vec<String> {
    let Some(list) = &r.grpc_idempotent else {
        return Vec::new();
    };
    for m in &list.value {
        let ok = m
            .value
            .strip_prefix('/')
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(service, method)| {
                !service.is_empty() && !method.is_empty() && !method.contains('/')
            });
        if !ok {
            let msg = format!(
                "grpc_idempotent entry {:?} is not a gRPC method path; write \"/package.Service/Method\"",
                m.value
            );
            c.error(m.at, msg);
        }
    }
    list.value.iter().map(|m| m.value.clone()).collect()
}

fn route_name(c: &mut Checker<'_>, r: &RawRoute) -> Option<String> {
    match &r.name {
        Some(n) if n.value.is_empty() => {
            c.error(n.at, "route `name` is empty; give the route a name");
            None
        }
        Some(n) => Some(n.value.clone()),
        None => {
            c.error(r.at, "[[routes]] has no `name`; add name = \"...\"");
            None
        }
    }
}

/// Share of the route's requests that may fall back, in [0, 1] (default 0.2).
fn fallback_budget(c: &mut Checker<'_>, r: &RawRoute) -> f64 {
    let Some(b) = &r.fallback_budget else {
        return 0.2;
    };
    if !(0.0..=1.0).contains(&b.value) {
        let msg = format!(
            "fallback_budget {} is outside 0.0..=1.0; it is the share of the route's requests that may fall back",
            b.value
        );
        c.error(b.at, msg);
    }
    b.value
}

/// With a ramp the ramp owns the live weight (docs/ramp.md), so a
/// `canary_weight` beside it would be silently ignored: say so.
fn warn_weight_with_ramp(c: &mut Checker<'_>, r: &RawRoute) {
    if let (Some(w), Some(ramp)) = (&r.canary_weight, &r.ramp) {
        let line = c.line_of(ramp.at);
        let msg = format!(
            "canary_weight is ignored: the ramp (line {line}) owns the weight; remove canary_weight"
        );
        c.warn(w.at, msg);
    }
}

/// Resolves `stable = "NAME"` / `canary = "NAME"` to an id.
fn upstream_ref(
    c: &mut Checker<'_>,
    v: &Option<Sp<String>>,
    key: &str,
    route: &str,
    route_at: usize,
    upstreams: &[Upstream],
) -> Option<UpstreamId> {
    let Some(v) = v else {
        let msg = format!("route `{route}` has no `{key}`; add {key} = \"<upstream name>\"");
        c.error(route_at, msg);
        return None;
    };
    if let Some(i) = upstreams.iter().position(|u| u.name == v.value) {
        return Some(UpstreamId(i));
    }
    let msg = if upstreams.is_empty() {
        format!(
            "upstream `{}` is not defined; no upstreams are defined (add [upstreams.{}])",
            v.value, v.value
        )
    } else {
        let names: Vec<&str> = upstreams.iter().map(|u| u.name.as_str()).collect();
        format!(
            "upstream `{}` is not defined; defined upstreams: {}",
            v.value,
            names.join(", ")
        )
    };
    c.error(v.at, msg);
    None
}

/// A header name (lower-cased by `http`).
pub(super) fn header_name(c: &mut Checker<'_>, v: &Sp<String>, key: &str) -> Option<HeaderName> {
    HeaderName::from_bytes(v.value.as_bytes()).ok().or_else(|| {
        let msg = format!(
            "{key} {:?} is not a valid header name; use letters, digits and '-' (e.g. \"x-user-id\")",
            v.value
        );
        c.error(v.at, msg);
        None
    })
}

/// RFC 6265 cookie-name (an RFC 7230 token).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A query parameter name as it appears in the raw query string.
fn is_query_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_graphic() && !b"&=#".contains(&b))
}

fn cookie_name(c: &mut Checker<'_>, v: &Sp<String>, key: &str) -> Option<String> {
    if is_token(&v.value) {
        return Some(v.value.clone());
    }
    let msg = format!(
        "{key} {:?} is not a valid cookie name; use letters, digits and -_.",
        v.value
    );
    c.error(v.at, msg);
    None
}

fn query_name(c: &mut Checker<'_>, v: &Sp<String>, key: &str) -> Option<String> {
    if is_query_name(&v.value) {
        return Some(v.value.clone());
    }
    let msg = format!(
        "{key} {:?} is not a valid query parameter name; it must be non-empty, without spaces, '&', '=' or '#'",
        v.value
    );
    c.error(v.at, msg);
    None
}

/// `header:NAME`, `cookie:NAME` or `query:NAME`.
fn sticky(c: &mut Checker<'_>, v: &Sp<String>) -> Option<StickySource> {
    source(c, v, "sticky")
}

/// `header:NAME`, `cookie:NAME` or `query:NAME` for key `key` (`sticky`,
/// `segments`).
pub(super) fn source(c: &mut Checker<'_>, v: &Sp<String>, key: &str) -> Option<StickySource> {
    let name = |n: &str| Sp {
        value: n.to_owned(),
        at: v.at,
    };
    match v.value.split_once(':') {
        Some(("header", n)) => {
            header_name(c, &name(n), &format!("{key} header")).map(StickySource::Header)
        }
        Some(("cookie", n)) => {
            cookie_name(c, &name(n), &format!("{key} cookie")).map(StickySource::Cookie)
        }
        Some(("query", n)) => {
            query_name(c, &name(n), &format!("{key} query")).map(StickySource::Query)
        }
        _ => {
            let msg = format!(
                "{key} {:?} must be \"header:NAME\", \"cookie:NAME\" or \"query:NAME\"",
                v.value
            );
            c.error(v.at, msg);
            None
        }
    }
}

fn matcher(c: &mut Checker<'_>, m: &RawMatch) -> RouteMatch {
    let host = m.host.as_ref().map(|h| {
        let host = h.value.to_ascii_lowercase();
        if host.contains(':') {
            let msg = format!(
                "match host {:?} must not include a port; hosts are matched without it",
                h.value
            );
            c.error(h.at, msg);
        } else if host.is_empty()
            || !host
                .chars()
                .all(|ch| ch.is_ascii_alphanumeric() || "-._".contains(ch))
        {
            let msg = format!(
                "match host {:?} is not a valid host name (e.g. \"shop.example\")",
                h.value
            );
            c.error(h.at, msg);
        }
        host
    });
    let path_prefix = m.path_prefix.as_ref().map(|p| {
        if !p.value.starts_with('/') {
            let msg = format!(
                "path_prefix {:?} must start with '/'; write \"/{}\"",
                p.value, p.value
            );
            c.error(p.at, msg);
        }
        p.value.clone()
    });
    RouteMatch { host, path_prefix }
}

/// One rule, or `None` when wrong (reported).
fn rule_of(c: &mut Checker<'_>, r: &RawRule, route_sticky: bool) -> Option<Rule> {
    let to = match &r.to {
        None => {
            c.error(
                r.at,
                "rule has no `to`; add to = \"stable\" or to = \"canary\"",
            );
            None
        }
        Some(t) => Arm::parse(&t.value).or_else(|| {
            let msg = format!(
                "rule `to` must be \"stable\" or \"canary\", found {:?}",
                t.value
            );
            c.error(t.at, msg);
            None
        }),
    };
    let when = match &r.when {
        None => {
            c.error(r.at, "rule has no `when`; add e.g. when = { header = \"x-canary\", equals = \"always\" }");
            None
        }
        Some(w) => condition(c, w, route_sticky),
    };
    Some(Rule {
        when: when?,
        to: to?,
    })
}

fn condition(c: &mut Checker<'_>, w: &RawWhen, route_sticky: bool) -> Option<Condition> {
    let selectors: Vec<(&str, usize)> = [
        ("header", w.header.as_ref().map(|v| v.at)),
        ("cookie", w.cookie.as_ref().map(|v| v.at)),
        ("query", w.query.as_ref().map(|v| v.at)),
        ("sticky_in", w.sticky_in.as_ref().map(|v| v.at)),
    ]
    .into_iter()
    .filter_map(|(k, at)| at.map(|at| (k, at)))
    .collect();
    match selectors.as_slice() {
        [] => {
            c.error(
                w.at,
                "rule `when` needs one of header, cookie, query or sticky_in",
            );
            return None;
        }
        [_] => {}
        [(first, _), (second, at), ..] => {
            let msg = format!("rule `when` has both `{first}` and `{second}`; a rule tests one thing, split it into two rules");
            c.error(*at, msg);
            return None;
        }
    }
    if let Some(keys) = &w.sticky_in {
        return sticky_in(c, w, keys, route_sticky);
    }
    let test = value_test(c, w)?;
    if let Some(h) = &w.header {
        Some(Condition::Header(header_name(c, h, "rule header")?, test))
    } else if let Some(k) = &w.cookie {
        Some(Condition::Cookie(cookie_name(c, k, "rule cookie")?, test))
    } else {
        let q = w.query.as_ref()?;
        Some(Condition::Query(query_name(c, q, "rule query")?, test))
    }
}

fn sticky_in(
    c: &mut Checker<'_>,
    w: &RawWhen,
    keys: &Sp<Vec<Sp<String>>>,
    route_sticky: bool,
) -> Option<Condition> {
    let mut ok = true;
    for (key, extra) in [("equals", &w.equals), ("regex", &w.regex)] {
        if let Some(extra) = extra {
            c.error(
                extra.at,
                format!("`{key}` does not apply to `sticky_in`; remove it"),
            );
            ok = false;
        }
    }
    if !route_sticky {
        let msg = "`sticky_in` needs the route to have `sticky` (e.g. sticky = \"header:x-user-id\"); without a sticky key it can never match";
        c.error(keys.at, msg);
        ok = false;
    }
    if keys.value.is_empty() {
        c.error(
            keys.at,
            "`sticky_in` is empty; list at least one sticky key",
        );
        ok = false;
    }
    let set: HashSet<String> = keys.value.iter().map(|k| k.value.clone()).collect();
    ok.then_some(Condition::StickyIn(set))
}

/// Exactly one of `equals` / `regex`; the regex must compile.
fn value_test(c: &mut Checker<'_>, w: &RawWhen) -> Option<ValueTest> {
    match (&w.equals, &w.regex) {
        (Some(e), None) => Some(ValueTest::Equals(e.value.clone())),
        (None, Some(r)) => match Regex::new(&r.value) {
            Ok(re) => Some(ValueTest::Regex(re.into())),
            Err(e) => {
                let msg = format!("regex {:?} does not compile: {}", r.value, regex_reason(&e));
                c.error(r.at, msg);
                None
            }
        },
        (Some(_), Some(r)) => {
            c.error(r.at, "rule `when` has both `equals` and `regex`; keep one");
            None
        }
        (None, None) => {
            c.error(
                w.at,
                "rule `when` needs `equals` or `regex` to test the value against",
            );
            None
        }
    }
}

/// The one-line reason out of `regex`'s multi-line error with a caret diagram.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    text.lines()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .map_or_else(|| text.replace('\n', " "), str::to_owned)
}
