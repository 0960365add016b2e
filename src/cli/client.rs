//! A small admin-API client for the CLI verbs (`promote`, `rollback`,
//! `pause`, `resume`, `status`): plain HTTP/1.1 over hyper-util.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;

use crate::ramp::state::RampStatus;
use crate::status::{CommandAnswer, StatusDocument};

/// The admin address the CLI talks to by default.
pub const DEFAULT_ADMIN: &str = "http://127.0.0.1:9901";

/// The environment variable holding the admin token.
pub const TOKEN_ENV: &str = "GRAYPROXY_ADMIN_TOKEN";

/// How long one admin call may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Why an admin call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The admin URL is not usable.
    #[error("bad admin URL `{0}`: use http://HOST:PORT")]
    BadUrl(String),
    /// No answer (connection refused, timeout).
    #[error("cannot reach the admin API at {url}: {reason}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The admin API answered with an error.
    #[error("{message} (HTTP {status})")]
    Refused {
        /// The HTTP status.
        status: StatusCode,
        /// The `error` of the JSON body, or the body.
        message: String,
    },
    /// The answer is not JSON.
    #[error("the admin API answered something that is not JSON: {0}")]
    NotJson(String),
    /// The answer is JSON but not the document this grayproxy knows.
    #[error("the admin API answered a document this grayproxy cannot read ({0}); is it the same version?")]
    Unreadable(String),
}

/// The admin token: `--token-file` when given, else `GRAYPROXY_ADMIN_TOKEN`.
pub fn resolve_token(token_file: Option<&Path>) -> Result<String, String> {
    if let Some(path) = token_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the token file {}: {e}", path.display()))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(format!("the token file {} is empty", path.display()));
        }
        return Ok(token.to_string());
    }
    match std::env::var(TOKEN_ENV) {
        Ok(t) if !t.trim().is_empty() => Ok(t.trim().to_string()),
        _ => Err(format!(
            "no admin token: set {TOKEN_ENV} or pass --token-file FILE"
        )),
    }
}

/// `base` (`http://host:port`, or `host:port`) joined with `path`.
fn url(base: &str, path: &str) -> Result<Uri, ClientError> {
    let base = base.trim_end_matches('/');
    let full = if base.contains("://") {
        format!("{base}{path}")
    } else {
        format!("http://{base}{path}")
    };
    let uri: Uri = full
        .parse()
        .map_err(|_| ClientError::BadUrl(base.to_string()))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(ClientError::BadUrl(base.to_string()));
    }
    Ok(uri)
}

/// One call; returns the JSON body of a 2xx answer.
pub async fn call(
    admin: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
) -> Result<serde_json::Value, ClientError> {
    let uri = url(admin, path)?;
    let shown = uri.to_string();
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .header(CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::new()))
        .map_err(|e| ClientError::BadUrl(e.to_string()))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let unreachable = |reason: String| ClientError::Unreachable {
        url: shown.clone(),
        reason,
    };
    let exchange = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| unreachable(error_chain(&e)))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| unreachable(e.to_string()))?
            .to_bytes();
        Ok::<_, ClientError>((status, body))
    };
    let (status, body) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))??;
    let value: Result<serde_json::Value, _> = serde_json::from_slice(&body);
    if !status.is_success() {
        let message = match &value {
            Ok(v) => v
                .get("error")
                .and_then(|e| e.as_str())
                .map_or_else(|| v.to_string(), str::to_string),
            Err(_) => String::from_utf8_lossy(&body).trim().to_string(),
        };
        return Err(ClientError::Refused { status, message });
    }
    value.map_err(|e| ClientError::NotJson(e.to_string()))
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// A JSON answer read as the document `T`.
fn read<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ClientError> {
    serde_json::from_value(value).map_err(|e| ClientError::Unreadable(e.to_string()))
}

/// `GET /status` (for `grayproxy status`).
pub async fn fetch_status(admin: &str) -> Result<StatusDocument, ClientError> {
    read(call(admin, Method::GET, "/status", None).await?)
}

/// `POST /routes/{route}/{action}` with the bearer token; the route's ramp
/// after the command.
pub async fn post_command(
    admin: &str,
    route: &str,
    action: &str,
    token: &str,
) -> Result<CommandAnswer, ClientError> {
    let path = format!("/routes/{}/{action}", encode_segment(route));
    read(call(admin, Method::POST, &path, Some(token)).await?)
}

/// Percent-encodes a path segment (route names are free text).
fn encode_segment(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One line about a ramp: "recommend: paused at step 2, canary weight 10%;
/// waiting for: ...".
pub fn describe_ramp(route: &str, ramp: &RampStatus) -> String {
    let mut line = format!(
        "{route}: {} at step {}, canary weight {}%",
        ramp.state.as_str(),
        ramp.step,
        ramp.weight
    );
    if let Some(wait) = &ramp.waiting_for {
        line.push_str(&format!("; waiting for: {wait}"));
    }
    if let Some(err) = &ramp.error {
        line.push_str(&format!("; ERROR: {err}"));
    }
    line
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            url("http://127.0.0.1:9901/", "/status")
                .unwrap()
                .to_string(),
            "http://127.0.0.1:9901/status"
        );
        assert_eq!(
            url("127.0.0.1:9901", "/status").unwrap().to_string(),
            "http://127.0.0.1:9901/status"
        );
        assert!(url("https://x:1", "/status").is_err());
        assert_eq!(encode_segment("a b/c"), "a%20b%2Fc");
    }

    #[test]
    fn ramps_in_one_line() {
        let mut ramp = crate::status::sample::ramp();
        assert_eq!(
            describe_ramp("recommend", &ramp),
            "recommend: progressing at step 1, canary weight 5%; \
             waiting for: canary needs 140 more requests (about 40 s)"
        );
        ramp.waiting_for = None;
        ramp.error = Some("disk full".to_string());
        assert_eq!(
            describe_ramp("recommend", &ramp),
            "recommend: progressing at step 1, canary weight 5%; ERROR: disk full"
        );
    }

    #[test]
    fn documents_of_another_shape_are_unreadable_not_a_panic() {
        let err = read::<StatusDocument>(serde_json::json!({"routes": 3})).unwrap_err();
        assert!(matches!(err, ClientError::Unreadable(_)), "{err}");
    }
}
