//! The admin API (CONTRACT §5): metrics, status, explain, health.

pub mod status;

mod auth;

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::proxy::body::ResponseBody;
use crate::ramp::handle::{parse_command, CommandError, RampHandle};
use crate::routing;
use crate::runtime::Runtime;

/// How long an operator command may wait for the ramp driver.
const COMMAND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Shared by every admin request.
pub struct Admin {
    runtime: Arc<Runtime>,
    ready: watch::Receiver<bool>,
    ramp: RampHandle,
}

impl Admin {
    /// An admin API over the runtime; `ready` turns true once listeners are
    /// up; `ramp` sends commands to the ramp driver.
    pub fn new(
        runtime: Arc<Runtime>,
        ready: watch::Receiver<bool>,
        ramp: RampHandle,
    ) -> Arc<Admin> {
        Arc::new(Admin {
            runtime,
            ready,
            ramp,
        })
    }

    /// Routes one admin request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<ResponseBody> {
        let path = req.uri().path().to_owned();
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (req.method(), segments.as_slice()) {
            (&Method::GET, ["metrics"]) => match self.runtime.metrics.render() {
                Ok(text) => text_response(StatusCode::OK, "text/plain; version=0.0.4", text),
                Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
            },
            (&Method::GET, ["status"]) => json(StatusCode::OK, &status::status(&self.runtime)),
            (&Method::GET, ["healthz"]) => {
                text_response(StatusCode::OK, "text/plain", "ok\n".into())
            }
            (&Method::GET, ["readyz"]) => {
                if *self.ready.borrow() {
                    text_response(StatusCode::OK, "text/plain", "ready\n".into())
                } else {
                    text_response(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "text/plain",
                        "not ready\n".into(),
                    )
                }
            }
            (&Method::GET, ["routes", name, "explain"]) => self.explain(name, req.uri().query()),
            (
                &Method::POST,
                ["routes", name, action @ ("promote" | "rollback" | "pause" | "resume")],
            ) => self.command(name, action, &req).await,
            (_, ["metrics" | "status" | "healthz" | "readyz"])
            | (_, ["routes", _, "explain" | "promote" | "rollback" | "pause" | "resume"]) => {
                json_error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")
            }
            _ => json_error(StatusCode::NOT_FOUND, "no such admin endpoint"),
        }
    }

    /// `POST /routes/{name}/{action}`: bearer token first (nothing about
    /// routes is told to a caller without it), then the ramp driver.
    async fn command(
        &self,
        name: &str,
        action: &str,
        req: &Request<Incoming>,
    ) -> Response<ResponseBody> {
        let token_file = self.runtime.snapshot().config.admin.token_file.clone();
        if let Err(denied) = auth::check(token_file.as_deref(), req.headers()) {
            return json_error(denied.status(), &denied.to_string());
        }
        // Route names are free text; clients (the CLI) percent-encode them.
        let decoded = percent_decode(name);
        let name = decoded.as_deref().unwrap_or(name);
        let Some(command) = parse_command(action) else {
            return json_error(StatusCode::NOT_FOUND, "no such admin endpoint");
        };
        let answer = tokio::time::timeout(COMMAND_TIMEOUT, self.ramp.command(name, command))
            .await
            .unwrap_or_else(|_| {
                Err(CommandError::Persist(format!(
                    "the ramp did not answer within {} s",
                    COMMAND_TIMEOUT.as_secs()
                )))
            });
        match answer {
            Ok(status) => {
                tracing::info!(
                    route = name,
                    command = action,
                    state = status.state.as_str(),
                    weight = status.weight,
                    "operator command applied"
                );
                let body = serde_json::json!({"route": name, "ramp": status});
                json(StatusCode::OK, &body)
            }
            Err(e) => {
                let code = match &e {
                    CommandError::UnknownRoute(_) => StatusCode::NOT_FOUND,
                    CommandError::NoRamp(_) | CommandError::NotApplicable { .. } => {
                        StatusCode::CONFLICT
                    }
                    CommandError::Persist(_) | CommandError::Stopped => {
                        StatusCode::SERVICE_UNAVAILABLE
                    }
                };
                tracing::warn!(route = name, command = action, error = %e, "operator command refused");
                json_error(code, &e.to_string())
            }
        }
    }

    fn explain(&self, name: &str, query: Option<&str>) -> Response<ResponseBody> {
        let snap = self.runtime.snapshot();
        let Some(index) = snap
            .config
            .routes
            .iter()
            .position(|r| r.name.as_str() == name)
        else {
            return json_error(StatusCode::NOT_FOUND, &format!("no route named `{name}`"));
        };
        let Some((route, rt)) = snap.route(index) else {
            return json_error(StatusCode::NOT_FOUND, &format!("no route named `{name}`"));
        };
        let key = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .find_map(|pair| pair.strip_prefix("key="));
        let Some(key) = key.filter(|k| !k.is_empty()) else {
            return json_error(StatusCode::BAD_REQUEST, "pass the sticky key as ?key=K");
        };
        // The key is compared as sent by clients, so percent-decoding the
        // query here would make `explain` disagree with the proxy.
        let weight = rt.weight();
        let e = routing::explain(route, key, weight);
        let body = serde_json::json!({
            "route": name,
            "key": key,
            "bucket": e.bucket,
            "arm": e.arm.as_str(),
            "rule": e.rule,
            "canary_weight": weight.percent(),
            "canary_from_percent": e.canary_from_percent,
        });
        json(StatusCode::OK, &body)
    }
}

/// `%XX`-decodes a path segment; `None` when it is not valid UTF-8 or has no escapes.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return None;
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// Serves the admin API until `shutdown`.
pub async fn serve_admin(
    listener: TcpListener,
    admin: Arc<Admin>,
    shutdown: watch::Receiver<bool>,
) {
    let runtime = admin.runtime.clone();
    crate::server::serve(
        listener,
        shutdown,
        move || runtime.snapshot().config.server.clone(),
        move |_peer| {
            let admin = admin.clone();
            move |req: Request<Incoming>| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(req).await) }
            }
        },
    )
    .await;
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<ResponseBody> {
    text_response(status, "application/json", value.to_string())
}

/// A JSON error answer `{"error": message}`.
pub fn json_error(status: StatusCode, message: &str) -> Response<ResponseBody> {
    json(status, &serde_json::json!({ "error": message }))
}

fn text_response(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<ResponseBody> {
    let mut response = Response::new(ResponseBody::from(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::percent_decode;

    #[test]
    fn route_names_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b%2Fc").as_deref(), Some("a b/c"));
        assert_eq!(percent_decode("plain"), None);
        assert_eq!(percent_decode("50%").as_deref(), Some("50%"));
        assert_eq!(percent_decode("%ff"), None);
    }
}
