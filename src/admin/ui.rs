//! The web UI (`GET /ui`, docs/ui.md) and the history its charts draw
//! (`GET /routes/{name}/history`). Both are read-only and need no token,
//! like `/status`.
//!
//! The page is three files compiled into the binary (`include_str!`): no
//! CDN, no build step, it works with no network. Its script is served as
//! its own file so the Content-Security-Policy can forbid every inline
//! script and style: even markup that slipped into the page (a route name,
//! a decision's reason, an upstream's answer) could not run. The script
//! itself only ever writes data with `textContent`.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderName, HeaderValue, Response, StatusCode};
use serde::Serialize;

use super::{json_error, query, typed_json};
use crate::proxy::body::ResponseBody;
use crate::proxy::runtime::Runtime;
use crate::ramp::history::{HistoryEntry, HISTORY_TICKS};

const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const APP_CSS: &str = include_str!("ui/app.css");

/// Scripts and styles from this origin only (no inline ones, no eval),
/// requests to this origin only, no frames, no forms, no plugins.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; \
     form-action 'none'; frame-ancestors 'none'";

/// One of the page's files, or `None` for another path under `/ui`.
pub fn asset(file: &str) -> Option<Response<ResponseBody>> {
    let (content_type, body) = match file {
        "" | "index.html" => ("text/html; charset=utf-8", INDEX_HTML),
        "app.js" => ("text/javascript; charset=utf-8", APP_JS),
        "app.css" => ("text/css; charset=utf-8", APP_CSS),
        _ => return None,
    };
    let mut response = Response::new(ResponseBody::from(Bytes::from_static(body.as_bytes())));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        HeaderName::from_static("content-security-policy"),
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        HeaderName::from_static("x-content-type-options"),
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        HeaderName::from_static("referrer-policy"),
        HeaderValue::from_static("no-referrer"),
    );
    // A new binary brings a new page: never keep an old one.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Some(response)
}

/// The answer of `GET /routes/{name}/history`.
#[derive(Serialize)]
struct HistoryAnswer<'a> {
    /// The route.
    route: &'a str,
    /// The ramp's tick in seconds (`null` without a ramp).
    tick_seconds: Option<f64>,
    /// How many ticks are kept at most.
    capacity: usize,
    /// One entry per tick, oldest first.
    ticks: Vec<HistoryEntry>,
}

/// `GET /routes/{name}/history[?since=MS]` (`name` percent-encoded): the
/// route's ticks, or only those after unix ms `since` (the page asks for
/// what is new since its last poll).
pub fn history(runtime: &Runtime, name: &str, query: Option<&str>) -> Response<ResponseBody> {
    let name = &*query::path_segment(name);
    let since = match query::query_param(query, "since") {
        Ok(None) => 0,
        Ok(Some(v)) => match v.parse::<u64>() {
            Ok(ms) => ms,
            Err(_) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "?since= takes a unix time in milliseconds (an entry's at_ms)",
                )
            }
        },
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &format!("?since=: {e}")),
    };
    let snap = runtime.snapshot();
    let found = snap
        .config
        .routes
        .iter()
        .zip(&snap.routes)
        .find(|(route, _)| route.name.as_str() == name);
    let Some((route, rt)) = found else {
        return json_error(StatusCode::NOT_FOUND, &format!("no route named `{name}`"));
    };
    let ticks: Vec<HistoryEntry> = rt
        .history
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entries()
        .iter()
        .filter(|e| e.at_ms > since)
        .cloned()
        .collect();
    typed_json(&HistoryAnswer {
        route: name,
        tick_seconds: route.ramp.as_ref().map(|p| p.tick.as_secs_f64()),
        capacity: HISTORY_TICKS,
        ticks,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn every_asset_has_the_strict_policy_and_its_type() {
        for (file, ty) in [
            ("", "text/html; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("app.css", "text/css; charset=utf-8"),
        ] {
            let r = asset(file).unwrap();
            assert_eq!(r.headers()[CONTENT_TYPE], ty);
            let csp = r.headers()["content-security-policy"].to_str().unwrap();
            assert!(csp.contains("script-src 'self';"), "{csp}");
            assert!(!csp.contains("unsafe"), "{csp}");
            assert_eq!(r.headers()["x-content-type-options"], "nosniff");
        }
        assert!(asset("../Cargo.toml").is_none());
        assert!(asset("app.js.map").is_none());
    }

    #[test]
    fn the_page_loads_no_inline_script_or_style_and_nothing_from_elsewhere() {
        assert!(INDEX_HTML.contains("<script src=\"/ui/app.js\""));
        assert!(INDEX_HTML.contains("href=\"/ui/app.css\""));
        let lower = INDEX_HTML.to_ascii_lowercase();
        assert_eq!(lower.matches("<script").count(), 1, "one script, by src");
        assert!(!lower.contains("<style") && !lower.contains("style="));
        let handler = regex::Regex::new(r"\son[a-z]+\s*=").unwrap();
        assert!(!handler.is_match(&lower), "no inline event handlers");
        assert!(!lower.contains("http://") && !lower.contains("https://"));
        assert!(!APP_JS.contains("innerHTML") && !APP_JS.contains("eval("));
        assert!(!APP_JS.contains("localStorage"));
    }
}
