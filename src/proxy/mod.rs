//! The request path: snapshot → route → decide → rewrite → send → maybe fall
//! back → stamp → finish. Each step is a named function below; `finish`
//! records metrics and feeds the judge, once per exchange.

pub mod body;
pub mod error;
pub mod fallback;
pub mod forward;
pub mod framing;
pub mod health;
pub mod outlier;
pub mod upstream;

use std::sync::Arc;

use http::header::{HeaderValue, HOST};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use rand::Rng;
use tokio::time::Instant;

use crate::domain::Arm;
use crate::routing::{self, Decision, RequestView};
use crate::runtime::{RouteRuntime, Runtime, Snapshot};
use body::{RequestBody, ResponseBody};
use error::ProxyError;
use fallback::CanaryOutcome;
use forward::ClientInfo;
use upstream::{SendFailure, UpstreamFailure};

/// The proxy service; cheap to clone into every connection.
#[derive(Clone)]
pub struct Proxy {
    runtime: Arc<Runtime>,
}

/// How one exchange with one arm ended.
enum Exchange {
    Answered(Response<ResponseBody>),
    Failed(SendFailure),
}

impl Proxy {
    /// A proxy over the runtime's live snapshot.
    pub fn new(runtime: Arc<Runtime>) -> Proxy {
        Proxy { runtime }
    }

    /// Handles one client request; never fails (errors become answers).
    pub async fn handle(
        &self,
        req: Request<Incoming>,
        client: ClientInfo,
    ) -> Response<ResponseBody> {
        let started = Instant::now();
        let version = req.version();
        let head = match framing::inspect(version, req.headers()) {
            Ok(head) => head,
            Err(why) => {
                tracing::debug!(reason = why.as_str(), "request framing refused");
                return closing(ProxyError::BadRequest.response(None, None), version);
            }
        };
        let snap = self.runtime.snapshot();
        // hyper itself refuses heads beyond twice the limit (with an empty
        // 431); between the limit and that, the answer carries the JSON body.
        if request_line_size(&req) + head.header_bytes > snap.config.server.max_header_bytes {
            return closing(ProxyError::HeadersTooLarge.response(None, None), version);
        }
        let limit = snap.config.server.max_body_bytes;
        if head.content_length.is_some_and(|len| len > limit) {
            return closing(ProxyError::BodyTooLarge.response(None, None), version);
        }
        let Some(decision) = decide(&snap, &req) else {
            return ProxyError::NoRoute.response(None, None);
        };
        let Some((route, rt)) = snap.route(decision.route) else {
            return ProxyError::NoRoute.response(None, None);
        };
        rt.budget.record_request(started);
        let (parts, body) = req.into_parts();
        let upstream_req = upstream_request(
            &snap,
            parts,
            RequestBody::limited(body, limit),
            client,
            decision.arm,
        );
        // Only a canary request that may fall back needs its head kept for a resend.
        let spare_head = (decision.arm == Arm::Canary && route.fallback)
            .then(|| resend_head(&upstream_req))
            .flatten();
        let method = upstream_req.method().clone();
        let mut exchange = send(&snap, decision, upstream_req).await;
        let outcome = Outcome::of(&exchange);

        if decision.arm == Arm::Canary && route.fallback {
            match fallback_request(&method, exchange, spare_head, rt, route.fallback_budget) {
                Fallback::Resend(mut stable_req) => {
                    let arm_header = snap.config.server.arm_header.as_ref();
                    forward::set_arm(stable_req.headers_mut(), Arm::Stable, arm_header);
                    // The canary's failure still counts against it.
                    finish(rt, decision, Arm::Canary, started, outcome);
                    rt.metrics.record_fallback();
                    let retry_started = Instant::now();
                    let retry = send_to(&snap, decision.route, Arm::Stable, stable_req).await;
                    let retry_outcome = Outcome::of(&retry);
                    let response = respond(&snap, route.name.as_str(), Arm::Stable, retry, true);
                    // Stable's answer to a fallback is counted in metrics but is
                    // not a weight-assigned stable request: the judge never sees it.
                    record(rt, Arm::Stable, retry_started, retry_outcome);
                    access_log(&snap, decision, Arm::Stable, &response, started, true);
                    return response;
                }
                Fallback::Keep(unchanged) => exchange = unchanged,
            }
        }
        let response = respond(&snap, route.name.as_str(), decision.arm, exchange, false);
        finish(rt, decision, decision.arm, started, outcome);
        access_log(&snap, decision, decision.arm, &response, started, false);
        match outcome.failure {
            // The client's body is unread or broken: the connection cannot carry another request.
            Some(UpstreamFailure::ClientBodyTooLarge | UpstreamFailure::ClientAborted) => {
                closing(response, version)
            }
            _ => response,
        }
    }
}

/// Marks an HTTP/1 answer as the connection's last (`Connection: close`);
/// HTTP/2 has no such header, and the stream ends on its own.
fn closing(mut response: Response<ResponseBody>, version: Version) -> Response<ResponseBody> {
    if version < Version::HTTP_2 {
        response
            .headers_mut()
            .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Fraction of requests that get an access-log line, from
/// `GRAYPROXY_ACCESS_LOG` (`1` = every request, `0.01` = one in a hundred;
/// unset, `0` or unparsable = off). Read once.
fn access_log_sample_rate() -> f64 {
    static RATE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *RATE.get_or_init(|| {
        std::env::var("GRAYPROXY_ACCESS_LOG")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|r| r.is_finite())
            .map_or(0.0, |r| r.clamp(0.0, 1.0))
    })
}

/// Step: one `access` event per proxied request (sampled), with the arm that
/// answered the client. Fields are documented in docs/operating.md.
fn access_log(
    snap: &Snapshot,
    decision: Decision,
    arm: Arm,
    response: &Response<ResponseBody>,
    started: Instant,
    fallback: bool,
) {
    let rate = access_log_sample_rate();
    if rate <= 0.0 || !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return;
    }
    if rate < 1.0 && !rand::thread_rng().gen_bool(rate) {
        return;
    }
    let Some(route) = snap.config.routes.get(decision.route) else {
        return;
    };
    let id = match arm {
        Arm::Stable => route.stable,
        Arm::Canary => route.canary,
    };
    let upstream = snap
        .config
        .upstreams
        .get(id.0)
        .map_or("", |u| u.name.as_str());
    tracing::info!(
        target: "access",
        route = route.name.as_str(),
        arm = arm.as_str(),
        reason = decision.reason.as_str(),
        bucket = decision.bucket,
        status = response.status().as_u16(),
        duration_ms = started.elapsed().as_secs_f64() * 1000.0,
        upstream,
        fallback,
        "request"
    );
}

/// Step: route and pick an arm.
fn decide<B>(snap: &Snapshot, req: &Request<B>) -> Option<Decision> {
    let view = RequestView::of(req);
    routing::decide(
        &snap.config.routes,
        &snap.route_index,
        &view,
        |i| snap.routes.get(i).map(|r| r.weight()).unwrap_or_default(),
        &mut rand::thread_rng(),
    )
}

/// Size of the request line as sent (the header lines are counted by
/// [`framing::inspect`]).
fn request_line_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    req.method().as_str().len() + target + 12
}

/// Step: the request as the upstream sees it (origin-form URI, HTTP/1.1,
/// headers rewritten for `arm`).
fn upstream_request(
    snap: &Snapshot,
    mut parts: Parts,
    body: RequestBody,
    client: ClientInfo,
    arm: Arm,
) -> Request<RequestBody> {
    let host: Option<HeaderValue> = match parts.uri.authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => parts.headers.get(HOST).cloned(),
    };
    forward::rewrite_request(
        &mut parts.headers,
        client,
        host.as_ref(),
        arm,
        snap.config.server.arm_header.as_ref(),
    );
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(path);
    parts.version = Version::HTTP_11;
    Request::from_parts(parts, body)
}

/// A body-less copy of a request, for resending a safe request to stable.
/// `None` when the request has a body (it streams once and cannot be resent).
fn resend_head(req: &Request<RequestBody>) -> Option<Request<RequestBody>> {
    use http_body::Body;
    if !req.body().is_end_stream() {
        return None;
    }
    let mut copy = Request::new(RequestBody::Empty);
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    Some(copy)
}

/// Step: send to the decided arm.
async fn send(snap: &Snapshot, decision: Decision, req: Request<RequestBody>) -> Exchange {
    send_to(snap, decision.route, decision.arm, req).await
}

async fn send_to(snap: &Snapshot, route: usize, arm: Arm, req: Request<RequestBody>) -> Exchange {
    let Some(r) = snap.config.routes.get(route) else {
        return Exchange::Failed(SendFailure {
            failure: UpstreamFailure::Connect,
            request: None,
        });
    };
    let id = match arm {
        Arm::Stable => r.stable,
        Arm::Canary => r.canary,
    };
    let Some(pool) = snap.upstreams.get(id.0) else {
        return Exchange::Failed(SendFailure {
            failure: UpstreamFailure::Connect,
            request: None,
        });
    };
    match pool.send(req, snap.config.server.request_timeout).await {
        Ok((response, slot)) => {
            Exchange::Answered(response.map(|b| ResponseBody::upstream(b, slot)))
        }
        Err(failure) => Exchange::Failed(failure),
    }
}

/// Whether a canary exchange is answered by stable instead.
enum Fallback {
    /// Send this request to stable.
    Resend(Request<RequestBody>),
    /// The canary's exchange stands.
    Keep(Exchange),
}

/// Step: decide whether a canary exchange falls back.
fn fallback_request(
    method: &http::Method,
    exchange: Exchange,
    spare_head: Option<Request<RequestBody>>,
    rt: &RouteRuntime,
    budget: f64,
) -> Fallback {
    let (outcome, unsent) = match &exchange {
        Exchange::Answered(r) if r.status().is_server_error() => (CanaryOutcome::Status5xx, false),
        Exchange::Answered(_) => return Fallback::Keep(exchange),
        Exchange::Failed(f) => (CanaryOutcome::Failed(f.failure), f.request.is_some()),
    };
    // A safe request with a body that the canary consumed cannot be replayed.
    let replayable = unsent || spare_head.is_some();
    if !replayable
        || !fallback::eligible(method, outcome, unsent)
        || !rt.budget.try_take(budget, Instant::now())
    {
        return Fallback::Keep(exchange);
    }
    match (exchange, spare_head) {
        (
            Exchange::Failed(SendFailure {
                request: Some(req), ..
            }),
            _,
        ) => Fallback::Resend(req),
        (_, Some(head)) => Fallback::Resend(head),
        (other, None) => Fallback::Keep(other),
    }
}

/// How an exchange ended, for metrics and the judge.
#[derive(Clone, Copy)]
struct Outcome {
    status: u16,
    failure: Option<UpstreamFailure>,
}

impl Outcome {
    fn of(exchange: &Exchange) -> Outcome {
        match exchange {
            Exchange::Answered(r) => Outcome {
                status: r.status().as_u16(),
                failure: None,
            },
            Exchange::Failed(f) => Outcome {
                status: failure_error(f.failure).status().as_u16(),
                failure: Some(f.failure),
            },
        }
    }
}

fn failure_error(failure: UpstreamFailure) -> ProxyError {
    match failure {
        UpstreamFailure::Connect | UpstreamFailure::Reset | UpstreamFailure::Other => {
            ProxyError::UpstreamUnreachable
        }
        UpstreamFailure::Timeout => ProxyError::UpstreamTimeout,
        UpstreamFailure::ClientBodyTooLarge => ProxyError::BodyTooLarge,
        UpstreamFailure::ClientAborted => ProxyError::BadRequest,
    }
}

/// Step: the client's response — the upstream's, stamped, or a proxy error.
fn respond(
    snap: &Snapshot,
    route: &str,
    arm: Arm,
    exchange: Exchange,
    fell_back: bool,
) -> Response<ResponseBody> {
    let arm_header = snap.config.server.arm_header.as_ref();
    let mut response = match exchange {
        Exchange::Answered(mut r) => {
            forward::rewrite_response(r.headers_mut(), arm, arm_header);
            r
        }
        Exchange::Failed(f) => {
            let mut r: Response<ResponseBody> =
                failure_error(f.failure).response(Some(route), Some(arm));
            forward::set_arm(r.headers_mut(), arm, arm_header);
            r
        }
    };
    if fell_back {
        response.headers_mut().insert(
            forward::X_GRAYPROXY_FALLBACK,
            HeaderValue::from_static("canary"),
        );
    }
    response
}

/// Step: record one exchange in metrics and, for weight-assigned requests,
/// in the judge's window (rule-forced ones are only counted apart).
fn finish(rt: &RouteRuntime, decision: Decision, arm: Arm, since: Instant, outcome: Outcome) {
    let latency = record(rt, arm, since, outcome);
    if decision.reason.is_weight_assigned() {
        let half = match decision.bucket {
            Some(b) => usize::from(b & 1),
            None => usize::from(rand::thread_rng().gen::<bool>()),
        };
        rt.window.record(arm, half, outcome.status >= 500, latency);
    } else {
        rt.record_forced(arm);
    }
}

/// Counts an exchange in the Prometheus metrics; returns its latency.
fn record(rt: &RouteRuntime, arm: Arm, since: Instant, outcome: Outcome) -> std::time::Duration {
    let latency = since.elapsed();
    let metrics = rt.metrics.arm(arm);
    metrics.record_answer(outcome.status, latency.as_secs_f64());
    if let Some(kind) = outcome.failure.and_then(UpstreamFailure::metric_kind) {
        metrics.record_failure(kind);
    }
    latency
}
