//! The admin API: metrics, status, explain, health, and the operator
//! commands (endpoints listed in the README's admin API section).

pub mod status;

mod auth;
mod query;

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
use crate::status::CommandAnswer;

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
            (&Method::GET, ["status"]) => typed_json(&status::status(&self.runtime)),
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
        let name = &*query::path_segment(name);
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
                typed_json(&CommandAnswer {
                    route: name.to_string(),
                    ramp: status,
                })
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
        let name = &*query::path_segment(name);
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
        // The query string only carries the key here: decode it as clients
        // encode it (`M%C3%BCller` is `Müller`, `a+b` is `a b`).
        let key = match query::query_param(query, "key") {
            Ok(Some(key)) if !key.is_empty() => key,
            Ok(_) => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    "pass the sticky key as ?key=K (percent-encoded)",
                )
            }
            Err(e) => {
                return json_error(StatusCode::BAD_REQUEST, &format!("?key=: {e}"));
            }
        };
        let weight = rt.weight();
        let e = routing::explain(route, &key, weight);
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

/// A JSON answer of a typed document (`/status`, command answers). Through
/// a `Value`, so its keys come out sorted like every other admin answer.
fn typed_json(value: &impl serde::Serialize) -> Response<ResponseBody> {
    match serde_json::to_value(value) {
        Ok(v) => json(StatusCode::OK, &v),
        Err(e) => json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
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
