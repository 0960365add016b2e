//! The request path, top to bottom in [`Proxy::handle`]: snapshot → admit
//! → route and decide → rewrite headers → send → maybe fall back → stamp
//! headers → finish. A [`RequestCtx`] is filled as the steps complete, and
//! [`RequestCtx::finish`] records metrics, feeds the ramp's window and writes
//! the access log, once per request.

pub mod body;
pub mod error;
pub mod fallback;
pub mod forward;
pub mod framing;
pub mod health;
pub mod mirror;
pub mod outcome;
pub mod outlier;
pub mod runtime;
pub mod upstream;

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderValue, HOST};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;
use rand::Rng;
use tokio::time::Instant;

use crate::config::types::Route;
use crate::domain::Arm;
use crate::proxy::runtime::{RouteRuntime, Runtime, Snapshot};
use crate::routing::{self, Decision, RequestView};
use body::{RequestBody, ResponseBody};
use error::ProxyError;
use forward::ClientInfo;
use outcome::{Outcome, SendError};
use upstream::{SendFailure, UpstreamFailure};

/// The proxy service; cheap to clone into every connection.
#[derive(Clone)]
pub struct Proxy {
    runtime: Arc<Runtime>,
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
        let snap = self.runtime.snapshot();
        let limit = match admit(&snap, &req) {
            Ok(limit) => limit,
            // The bytes after a refused head cannot be trusted to start a request.
            Err(refused) => return closing(refused.response(None, None), version),
        };
        let Some(mut ctx) = RequestCtx::route(&snap, &req, started) else {
            return ProxyError::NoRoute.response(None, None);
        };
        let (parts, body) = req.into_parts();
        let body = RequestBody::limited(body, limit);
        let mut upstream_req = upstream_request(&snap, parts, body, client, ctx.arm);
        // One branch for routes without shadow traffic.
        let mirror = match &ctx.route.shadow {
            Some(_) if ctx.arm == Arm::Stable => mirror::start(
                &snap,
                ctx.decision.route,
                ctx.route,
                ctx.rt,
                &mut upstream_req,
            ),
            _ => None,
        };
        // Only a request that may fall back needs its head kept for a resend.
        let spare_head = ctx
            .may_fall_back()
            .then(|| resend_head(&upstream_req))
            .flatten();
        let method = upstream_req.method().clone();
        let exchange = ctx.send(upstream_req).await;
        let exchange = match ctx.fall_back(&method, exchange, spare_head) {
            Fallback::Keep(exchange) => exchange,
            Fallback::Resend(stable_req) => ctx.send(stable_req).await,
        };
        let mut response = ctx.respond(exchange);
        if let Some(mirror) = mirror {
            response = mirror.attach(response, ctx.outcome, ctx.attempt_started.elapsed());
        }
        ctx.finish(response, version)
    }
}

/// Step: refuse what must not be forwarded (ambiguous framing, an invalid or
/// repeated `Host`, oversized heads or declared bodies). Returns the body limit.
fn admit<B>(snap: &Snapshot, req: &Request<B>) -> Result<u64, ProxyError> {
    let head = framing::inspect(req.version(), req.headers()).map_err(|why| {
        tracing::debug!(reason = why.as_str(), "request framing refused");
        ProxyError::BadRequest
    })?;
    let server = &snap.config.server;
    // hyper itself refuses heads beyond twice the limit (with an empty
    // 431); between the limit and that, the answer carries the JSON body.
    if request_line_size(req) + head.header_bytes > server.max_header_bytes {
        return Err(ProxyError::HeadersTooLarge);
    }
    if head
        .content_length
        .is_some_and(|len| len > server.max_body_bytes)
    {
        return Err(ProxyError::BodyTooLarge);
    }
    Ok(server.max_body_bytes)
}

/// Size of the request line as sent (the header lines are counted by
/// [`framing::inspect`]).
fn request_line_size<B>(req: &Request<B>) -> usize {
    let uri = req.uri();
    let target = uri.path_and_query().map_or(1, |p| p.as_str().len())
        + uri.authority().map_or(0, |a| a.as_str().len());
    req.method().as_str().len() + target + 12
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

/// How one exchange with one arm ended.
enum Exchange {
    Answered(Response<ResponseBody>),
    Failed(SendFailure),
}

impl Exchange {
    fn outcome(&self) -> Outcome {
        match self {
            Exchange::Answered(r) => Outcome::Answered(r.status()),
            Exchange::Failed(f) => Outcome::NoAnswer(f.error),
        }
    }
}

/// Whether a canary exchange is answered by stable instead.
enum Fallback {
    /// Send this request to stable.
    Resend(Request<RequestBody>),
    /// The exchange stands.
    Keep(Exchange),
}

/// One request as far as it got: its route, decision and the exchange in
/// progress. Borrowed from the snapshot, so building it allocates nothing.
struct RequestCtx<'s> {
    snap: &'s Snapshot,
    route: &'s Route,
    rt: &'s RouteRuntime,
    decision: Decision,
    /// When the request arrived.
    started: Instant,
    /// The arm being asked; the one whose answer the client gets (stable
    /// after a fallback).
    arm: Arm,
    /// When the exchange with `arm` began.
    attempt_started: Instant,
    /// How the exchange with `arm` ended, once it has.
    outcome: Option<Outcome>,
    /// The canary's outcome and latency, when it fell back to stable.
    canary_fell_back: Option<(Outcome, Duration)>,
}

impl<'s> RequestCtx<'s> {
    /// Step: route and pick an arm; counts the request in the route's
    /// fallback budget. `None` when no route matches.
    fn route<B>(snap: &'s Snapshot, req: &Request<B>, started: Instant) -> Option<Self> {
        let decision = routing::decide(
            &snap.config.routes,
            &snap.route_index,
            &RequestView::of(req),
            |i| snap.routes.get(i).map(|r| r.weight()).unwrap_or_default(),
            &mut rand::thread_rng(),
        )?;
        let (route, rt) = snap.route(decision.route)?;
        rt.budget.record_request(started);
        Some(RequestCtx {
            snap,
            route,
            rt,
            decision,
            started,
            arm: decision.arm,
            attempt_started: started,
            outcome: None,
            canary_fell_back: None,
        })
    }

    /// Whether a failure of this exchange may be answered by stable.
    fn may_fall_back(&self) -> bool {
        self.arm == Arm::Canary && self.route.fallback
    }

    /// Step: send to the current arm's upstream.
    async fn send(&mut self, req: Request<RequestBody>) -> Exchange {
        let id = self.route.upstream(self.arm);
        let exchange = match self.snap.upstreams.get(id.0) {
            Some(pool) => match pool
                .send(req, self.snap.config.server.request_timeout)
                .await
            {
                Ok((response, slot)) => {
                    Exchange::Answered(response.map(|b| ResponseBody::upstream(b, slot)))
                }
                Err(failure) => Exchange::Failed(failure),
            },
            None => Exchange::Failed(SendFailure {
                error: SendError::Upstream(UpstreamFailure::Connect),
                request: None,
            }),
        };
        self.outcome = Some(exchange.outcome());
        exchange
    }

    /// Step: decide whether a canary exchange falls back; when it does, the
    /// canary's outcome is kept for [`RequestCtx::finish`] and the context
    /// moves on to stable.
    fn fall_back(
        &mut self,
        method: &Method,
        exchange: Exchange,
        spare_head: Option<Request<RequestBody>>,
    ) -> Fallback {
        let Some(outcome) = self.outcome.filter(|_| self.may_fall_back()) else {
            return Fallback::Keep(exchange);
        };
        let unsent = matches!(&exchange, Exchange::Failed(f) if f.request.is_some());
        // A request with a body that the canary consumed cannot be replayed.
        let replayable = unsent || spare_head.is_some();
        if !replayable
            || !fallback::eligible(method, outcome, unsent)
            || !self
                .rt
                .budget
                .try_take(self.route.fallback_budget, Instant::now())
        {
            return Fallback::Keep(exchange);
        }
        let mut stable_req = match (exchange, spare_head) {
            (
                Exchange::Failed(SendFailure {
                    request: Some(req), ..
                }),
                _,
            ) => req,
            (_, Some(head)) => head,
            (other, None) => return Fallback::Keep(other),
        };
        let arm_header = self.snap.config.server.arm_header.as_ref();
        forward::set_arm(stable_req.headers_mut(), Arm::Stable, arm_header);
        self.canary_fell_back = Some((outcome, self.attempt_started.elapsed()));
        self.arm = Arm::Stable;
        self.attempt_started = Instant::now();
        self.outcome = None;
        Fallback::Resend(stable_req)
    }

    /// Step: the client's response — the upstream's, stamped, or a proxy error.
    fn respond(&self, exchange: Exchange) -> Response<ResponseBody> {
        let arm_header = self.snap.config.server.arm_header.as_ref();
        let mut response = match exchange {
            Exchange::Answered(mut r) => {
                forward::rewrite_response(r.headers_mut(), self.arm, arm_header);
                r
            }
            Exchange::Failed(f) => {
                let route = Some(self.route.name.as_str());
                let mut r: Response<ResponseBody> =
                    f.error.proxy_error().response(route, Some(self.arm));
                forward::set_arm(r.headers_mut(), self.arm, arm_header);
                r
            }
        };
        if self.canary_fell_back.is_some() {
            response.headers_mut().insert(
                forward::X_GRAYPROXY_FALLBACK,
                HeaderValue::from_static("canary"),
            );
        }
        response
    }

    /// Step: record the request, once. The weight-assigned exchange goes to
    /// metrics and the ramp's window (rule-forced ones are only counted
    /// apart); stable's answer to a fallback goes to metrics only, because it
    /// is not a weight-assigned stable request. Then the access log.
    fn finish(self, response: Response<ResponseBody>, version: Version) -> Response<ResponseBody> {
        let last = self.outcome.map(|o| (o, self.attempt_started.elapsed()));
        match (self.canary_fell_back, last) {
            (Some((canary, canary_latency)), stable) => {
                // The canary's failure still counts against it.
                self.judge(Arm::Canary, canary, canary_latency);
                self.rt.metrics.record_fallback();
                if let Some((outcome, latency)) = stable {
                    record_metrics(self.rt, Arm::Stable, outcome, latency);
                }
            }
            (None, Some((outcome, latency))) => self.judge(self.arm, outcome, latency),
            (None, None) => {}
        }
        self.access_log(&response);
        match last {
            // The client's body is unread or broken: the connection cannot carry another request.
            Some((outcome, _)) if outcome.client_body_broke() => closing(response, version),
            _ => response,
        }
    }

    /// Counts the decided arm's exchange in metrics and, when the weight
    /// assigned the arm, in the ramp's window.
    fn judge(&self, arm: Arm, outcome: Outcome, latency: Duration) {
        record_metrics(self.rt, arm, outcome, latency);
        if !self.decision.reason.is_weight_assigned() {
            self.rt.record_forced(arm);
            return;
        }
        let half = match self.decision.bucket {
            Some(b) => usize::from(b & 1),
            None => usize::from(rand::thread_rng().gen::<bool>()),
        };
        self.rt
            .window
            .record(arm, half, outcome.is_failure(), latency);
    }

    /// One `access` event per proxied request (sampled), with the arm that
    /// answered the client. Fields are documented in docs/operating.md.
    fn access_log(&self, response: &Response<ResponseBody>) {
        let rate = self
            .snap
            .config
            .server
            .access_log_sample
            .unwrap_or_else(env_access_log_sample);
        if rate <= 0.0 || !tracing::enabled!(target: "access", tracing::Level::INFO) {
            return;
        }
        if rate < 1.0 && !rand::thread_rng().gen_bool(rate) {
            return;
        }
        let id = self.route.upstream(self.arm);
        let upstream = self
            .snap
            .config
            .upstreams
            .get(id.0)
            .map_or("", |u| u.name.as_str());
        tracing::info!(
            target: "access",
            route = self.route.name.as_str(),
            arm = self.arm.as_str(),
            reason = self.decision.reason.as_str(),
            bucket = self.decision.bucket,
            status = response.status().as_u16(),
            duration_ms = self.started.elapsed().as_secs_f64() * 1000.0,
            upstream,
            fallback = self.canary_fell_back.is_some(),
            "request"
        );
    }
}

/// Counts an exchange in the route × arm's Prometheus metrics.
fn record_metrics(rt: &RouteRuntime, arm: Arm, outcome: Outcome, latency: Duration) {
    let metrics = rt.metrics.arm(arm);
    metrics.record_answer(outcome.status().as_u16(), latency.as_secs_f64());
    if let Some(kind) = outcome.failure_kind() {
        metrics.record_failure(kind);
    }
}

/// The access-log sample rate from `GRAYPROXY_ACCESS_LOG`, for configs
/// without `server.access_log_sample` (deprecated; read once): a fraction,
/// clamped to `0.0..=1.0`; unset or unparsable = off.
fn env_access_log_sample() -> f64 {
    static RATE: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *RATE.get_or_init(|| {
        std::env::var("GRAYPROXY_ACCESS_LOG")
            .ok()
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|r| r.is_finite())
            .map_or(0.0, |r| r.clamp(0.0, 1.0))
    })
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn size_of_output<F, Fut>(_: &F) -> usize
    where
        F: Fn(Request<Incoming>) -> Fut,
    {
        std::mem::size_of::<Fut>()
    }

    /// The request future is boxed per request (server.rs); keep it from
    /// growing unnoticed.
    #[test]
    fn request_future_stays_small() {
        let text = "[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n[[routes]]\nname = \"r\"\nstable = \"a\"\ncanary = \"a\"\n";
        let config = crate::config::parse(text, std::path::Path::new("/x/g.toml"))
            .unwrap()
            .config;
        let proxy = Proxy::new(Runtime::new(
            crate::metrics::Metrics::new().unwrap(),
            config,
        ));
        let client = ClientInfo {
            ip: std::net::Ipv4Addr::LOCALHOST.into(),
            proto: "http",
        };
        let handler = move |req: Request<Incoming>| {
            let proxy = proxy.clone();
            async move { proxy.handle(req, client).await }
        };
        let size = size_of_output(&handler);
        println!("request future: {size} bytes");
        // 3,920 bytes before the request context (debug build), 3,368 after.
        assert!(size <= 4096, "request future is {size} bytes");
    }
}
