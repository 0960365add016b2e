//! Shadow traffic in the request path: mirror a stable-answered request to
//! the canary (and now and then to stable again, for the noise floor),
//! compare the answers off the request path, drop the canary's.
//!
//! The user never waits for the canary: the mirrored exchanges run in their
//! own task, and stable's body reaches the client exactly as it streams,
//! copied on the way by a [`Tee`] up to [`MAX_CAPTURE`] bytes. A route
//! without shadow pays one branch on an `Option` in [`super::Proxy::handle`].

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, COOKIE};
use http::{Request, Response};
use http_body::Body;
use http_body_util::BodyExt;
use rand::Rng;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::body::{CopyFailed, RequestBody, RequestTee, ResponseBody, Tee, TeeCopy};
use super::forward;
use super::outcome::Outcome;
use crate::config::types::{Route, ShadowConfig};
use crate::domain::Arm;
use crate::grpc::{self, GrpcCode, GrpcCodeSet};
use crate::metrics::ShadowResult;
use crate::proxy::runtime::{RouteRuntime, Snapshot};
use crate::shadow::compare::compare_with_noise;
use crate::shadow::report::SkipReason;
use crate::shadow::{Answer, CompareSpec, InFlightSlot, ShadowLive};

/// The header that marks a mirrored request.
pub const X_GRAYPROXY_SHADOW: HeaderName = HeaderName::from_static("x-grayproxy-shadow");
/// Largest body copied for comparison (either side); bigger bodies are
/// compared by status and latency only.
pub const MAX_CAPTURE: usize = 1 << 20;
/// Largest request body copied for the canary; a request with a bigger
/// body is not mirrored (counted as skipped, `body_too_large`).
pub const MAX_BODY_CAPTURE: usize = 1 << 20;
/// How long a comparison waits for the client to finish reading stable's
/// body, and a mirror for the client to finish sending its request body.
const STABLE_BODY_WAIT: Duration = Duration::from_secs(60);

/// Stable's side of a mirrored request, sent to the comparison task once
/// the client's answer is known.
struct StableHead {
    status: Option<u16>,
    failed: bool,
    latency: Duration,
    /// A trailers-only gRPC answer's `grpc-status` (in the headers).
    grpc_code: Option<GrpcCode>,
    body: Option<oneshot::Receiver<Option<TeeCopy>>>,
}

/// A request being mirrored; [`Pending::attach`] hands over stable's answer.
pub(super) struct Pending {
    stable: oneshot::Sender<StableHead>,
}

/// One mirrored exchange's result.
struct Mirrored {
    status: Option<u16>,
    failed: bool,
    timed_out: bool,
    latency: Duration,
    body: Option<Bytes>,
}

/// Starts mirroring `req` (stable's request, headers already rewritten)
/// when the route's shadow settings take it. `None` when it is not mirrored.
/// A request with a body gets its body teed: it streams to stable as
/// before, and the canary's copy is sent once the whole body has passed.
pub(super) fn start(
    snap: &Arc<Snapshot>,
    route_index: usize,
    route: &Route,
    rt: &RouteRuntime,
    req: &mut Request<RequestBody>,
) -> Option<Pending> {
    let cfg = route.shadow.as_ref()?;
    let live = &rt.shadow;
    if !(cfg.always || live.phase_active()) || !cfg.methods.contains(req.method()) {
        return None;
    }
    let mut rng = rand::thread_rng();
    if cfg.percent < 100.0 && !rng.gen_bool(cfg.percent / 100.0) {
        return None;
    }
    let has_body = !req.body().is_end_stream();
    if has_body && req.body().size_hint().lower() > MAX_BODY_CAPTURE as u64 {
        skip(rt, SkipReason::BodyTooLarge);
        return None;
    }
    let Some(slot) = live.try_slot(cfg.max_in_flight) else {
        skip(rt, SkipReason::InFlight);
        return None;
    };
    let head = head_of(req);
    let body = if has_body {
        let (tx, rx) = oneshot::channel();
        let inner = std::mem::replace(req.body_mut(), RequestBody::Empty);
        *req.body_mut() = RequestTee::wrap(inner, MAX_BODY_CAPTURE, tx);
        Some(rx)
    } else {
        // Counted now; a request with a body once its copy is complete.
        live.stats().record_mirrored();
        None
    };
    let noise = (cfg.noise_percent > 0.0 && rng.gen_bool(cfg.noise_percent / 100.0))
        .then(|| live.try_slot(cfg.max_in_flight))
        .flatten()
        .map(|slot| (copy_for(&head, Arm::Stable, cfg, snap), slot));
    let canary = copy_for(&head, Arm::Canary, cfg, snap);
    let (tx, rx) = oneshot::channel();
    let task = MirrorTask {
        grpc: grpc::is_grpc(req.headers()).then_some(route.grpc_error_codes),
        snap: snap.clone(),
        route_index,
        live: live.clone(),
        shadow_metrics: rt.metrics.shadow.clone(),
    };
    let copies = Copies {
        canary,
        canary_slot: slot,
        noise,
        body,
    };
    tokio::spawn(task.run(copies, rx));
    Some(Pending { stable: tx })
}

/// Counts a request that the shadow settings took but that is not mirrored.
fn skip(rt: &RouteRuntime, reason: SkipReason) {
    rt.shadow.stats().record_skipped(reason);
    rt.metrics.shadow.record(ShadowResult::Skipped);
}

/// The request's head, without its body.
fn head_of<B>(req: &Request<B>) -> Request<()> {
    let mut copy = Request::new(());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}

/// A copy of the request head for `arm`, marked as shadow traffic.
fn copy_for(head: &Request<()>, arm: Arm, cfg: &ShadowConfig, snap: &Snapshot) -> Request<()> {
    let mut copy = head_of(head);
    let headers = copy.headers_mut();
    forward::set_arm(headers, arm, snap.config.server.arm_header.as_ref());
    headers.insert(X_GRAYPROXY_SHADOW, HeaderValue::from_static("1"));
    if cfg.strip_credentials {
        headers.remove(AUTHORIZATION);
        headers.remove(COOKIE);
    }
    copy
}

/// The mirrored requests' heads, their slots, and the body copy to come.
struct Copies {
    canary: Request<()>,
    canary_slot: InFlightSlot,
    noise: Option<(Request<()>, InFlightSlot)>,
    body: Option<oneshot::Receiver<Result<Bytes, CopyFailed>>>,
}

impl Pending {
    /// Hands stable's answer to the comparison; its body is teed on the way
    /// to the client. `outcome` and `latency` are stable's exchange.
    pub(super) fn attach(
        self,
        response: Response<ResponseBody>,
        outcome: Option<Outcome>,
        latency: Duration,
    ) -> Response<ResponseBody> {
        // A trailers-only gRPC answer is already a `Grpc` outcome here.
        let answered = matches!(outcome, Some(Outcome::Answered(_) | Outcome::Grpc(..)));
        let (response, body) = if answered {
            let (tx, rx) = oneshot::channel();
            (response.map(|b| Tee::wrap(b, MAX_CAPTURE, tx)), Some(rx))
        } else {
            (response, None)
        };
        let head = StableHead {
            status: answered.then(|| response.status().as_u16()),
            failed: outcome.is_some_and(Outcome::is_failure),
            latency,
            grpc_code: GrpcCode::in_headers(response.headers()),
            body,
        };
        // The task is gone only if the runtime is shutting down.
        let _ = self.stable.send(head);
        response
    }
}

/// What the comparison task owns.
struct MirrorTask {
    /// A gRPC call's error codes: both answers are judged by their
    /// `grpc-status`, and compared by it (bodies as bytes).
    grpc: Option<GrpcCodeSet>,
    snap: Arc<Snapshot>,
    route_index: usize,
    live: Arc<ShadowLive>,
    shadow_metrics: crate::metrics::ShadowMetrics,
}

impl MirrorTask {
    async fn run(self, copies: Copies, stable: oneshot::Receiver<StableHead>) {
        let Some((route, _)) = self.snap.route(self.route_index) else {
            return;
        };
        let Some(cfg) = route.shadow.as_ref() else {
            return;
        };
        let Copies {
            canary,
            canary_slot,
            noise,
            body,
        } = copies;
        let body = match body {
            None => None,
            Some(rx) => match self.body_copy(rx).await {
                Ok(bytes) => Some(bytes),
                Err(reason) => {
                    self.live.stats().record_skipped(reason);
                    self.shadow_metrics.record(ShadowResult::Skipped);
                    return;
                }
            },
        };
        let with_body =
            |head: Request<()>| head.map(|()| RequestBody::Buffered(body.clone(), None));
        let canary = with_body(canary);
        let noise = noise.map(|(head, slot)| (with_body(head), slot));
        let canary_fut = async {
            let answer = self
                .exchange(route.upstream(Arm::Canary), canary, cfg)
                .await;
            // The slot is free at the timeout at the latest.
            drop(canary_slot);
            answer
        };
        let noise_fut = async {
            match noise {
                Some((req, slot)) => {
                    let answer = self.exchange(route.upstream(Arm::Stable), req, cfg).await;
                    drop(slot);
                    Some(answer)
                }
                None => None,
            }
        };
        let (canary, noise) = tokio::join!(canary_fut, noise_fut);
        let Ok(mut head) = stable.await else {
            // The client's request ended before stable answered: no pair.
            return;
        };
        let stable_copy = match head.body.take() {
            Some(rx) => tokio::time::timeout(STABLE_BODY_WAIT, rx)
                .await
                .ok()
                .and_then(Result::ok)
                .flatten(),
            None => None,
        };
        if let (Some(errors), Some(_)) = (self.grpc, head.status) {
            let trailers = stable_copy.as_ref().and_then(|c| c.trailers.as_ref());
            (head.status, head.failed) =
                grpc_verdict(errors, head.status, head.grpc_code, trailers);
        }
        let stable_body = stable_copy.and_then(|c| c.body);
        self.record(cfg, &head, stable_body.as_deref(), &canary, noise.as_ref());
    }

    /// Waits for the request body's copy, made while it streams to stable;
    /// counts the request as mirrored once the copy is complete.
    async fn body_copy(
        &self,
        rx: oneshot::Receiver<Result<Bytes, CopyFailed>>,
    ) -> Result<Bytes, SkipReason> {
        let copy = tokio::time::timeout(STABLE_BODY_WAIT, rx).await;
        let bytes = match copy {
            Ok(Ok(Ok(bytes))) => bytes,
            Ok(Ok(Err(CopyFailed::TooLarge))) => return Err(SkipReason::BodyTooLarge),
            Ok(Ok(Err(CopyFailed::Incomplete))) | Ok(Err(_)) | Err(_) => {
                return Err(SkipReason::BodyIncomplete)
            }
        };
        self.live.stats().record_mirrored();
        Ok(bytes)
    }

    fn record(
        &self,
        cfg: &ShadowConfig,
        head: &StableHead,
        stable_body: Option<&[u8]>,
        canary: &Mirrored,
        noise: Option<&Mirrored>,
    ) {
        let spec = CompareSpec::from(cfg);
        // Beyond the per-second budget, status and latency only.
        let now_s = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let bodies = self.live.stats().take_body_budget(now_s);
        let stable = Answer {
            status: head.status,
            failed: head.failed,
            latency: head.latency,
            body: stable_body.filter(|_| bodies),
        };
        let canary_answer = Answer {
            status: canary.status,
            failed: canary.failed,
            latency: canary.latency,
            body: canary.body.as_deref().filter(|_| bodies),
        };
        let noise_body = noise.and_then(|n| n.body.as_deref());
        let (pair, noise_body) = compare_with_noise(&stable, &canary_answer, noise_body, &spec);
        if let crate::shadow::BodyComparison::Json { rank: Some(r), .. } = &pair.body {
            self.shadow_metrics.observe_rbo(r.rbo);
        }
        self.live.record_pair(&pair);
        let result = if canary.timed_out {
            ShadowResult::CanaryTimeout
        } else if canary.failed {
            ShadowResult::CanaryError
        } else {
            ShadowResult::Compared
        };
        self.shadow_metrics.record(result);
        if let Some(body) = noise_body {
            self.live.stats().record_noise(&body);
        }
    }

    /// One mirrored exchange with `upstream`, bounded by the shadow timeout
    /// (head and body together).
    async fn exchange(
        &self,
        upstream: crate::config::types::UpstreamId,
        req: Request<RequestBody>,
        cfg: &ShadowConfig,
    ) -> Mirrored {
        let started = Instant::now();
        let Some(pool) = self.snap.upstreams.get(upstream.0) else {
            return Mirrored::failed(false, started.elapsed());
        };
        let work = async {
            let (response, slot) = match pool.send(req, cfg.timeout).await {
                Ok(answer) => answer,
                Err(f) => {
                    let timed_out = Outcome::NoAnswer(f.error).failure_kind()
                        == Some(crate::metrics::FailureKind::Timeout);
                    return Mirrored::failed(timed_out, started.elapsed());
                }
            };
            let latency = started.elapsed();
            let status = response.status();
            let code_in_head = GrpcCode::in_headers(response.headers());
            let mut body = ResponseBody::upstream(response.into_body(), slot);
            let copy = read_capped(&mut body, self.grpc.is_some()).await;
            let (status, failed) = match self.grpc {
                Some(errors) => grpc_verdict(
                    errors,
                    Some(status.as_u16()),
                    code_in_head,
                    copy.as_ref().and_then(|c| c.trailers.as_ref()),
                ),
                None => (
                    Some(status.as_u16()),
                    Outcome::Answered(status).is_failure(),
                ),
            };
            Mirrored {
                status,
                failed,
                timed_out: false,
                latency,
                body: copy.and_then(|c| c.body),
            }
        };
        match tokio::time::timeout(cfg.timeout, work).await {
            Ok(answer) => answer,
            Err(_) => Mirrored::failed(true, cfg.timeout),
        }
    }
}

impl Mirrored {
    fn failed(timed_out: bool, latency: Duration) -> Mirrored {
        Mirrored {
            status: None,
            failed: true,
            timed_out,
            latency,
            body: None,
        }
    }
}

/// The body (`None` inside when it exceeds [`MAX_CAPTURE`]) and its
/// trailers; `None` when it breaks. A gRPC answer is read to its end past the
/// cap, for the `grpc-status` in its trailers; any other stops there.
async fn read_capped(body: &mut ResponseBody, to_the_end: bool) -> Option<TeeCopy> {
    let mut out = Vec::new();
    let mut over = false;
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        match frame.ok()?.into_data() {
            Ok(data) if over || out.len() + data.len() > MAX_CAPTURE => {
                over = true;
                out = Vec::new();
                if !to_the_end {
                    break;
                }
            }
            Ok(data) => out.extend_from_slice(&data),
            Err(frame) => trailers = frame.into_trailers().ok(),
        }
    }
    Some(TeeCopy {
        body: (!over).then(|| Bytes::from(out)),
        trailers,
    })
}

/// A gRPC answer's status for the comparison and whether it failed: its
/// `grpc-status` (trailers, else a trailers-only answer's headers) as the
/// status, failed when the code is one of the route's error codes. An HTTP
/// answer other than 200, or one without any `grpc-status`, failed.
fn grpc_verdict(
    errors: GrpcCodeSet,
    http_status: Option<u16>,
    code_in_head: Option<GrpcCode>,
    trailers: Option<&http::HeaderMap>,
) -> (Option<u16>, bool) {
    if http_status != Some(200) {
        return (http_status, true);
    }
    match trailers.and_then(GrpcCode::in_headers).or(code_in_head) {
        Some(code) => (Some(u16::from(code.number())), errors.contains(code)),
        None => (None, true),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn trailers(code: &str) -> http::HeaderMap {
        let mut t = http::HeaderMap::new();
        t.insert(grpc::GRPC_STATUS, HeaderValue::from_str(code).unwrap());
        t
    }

    #[test]
    fn grpc_answers_are_judged_by_their_grpc_status() {
        let errors = GrpcCodeSet::default();
        let ok = trailers("0");
        let unavailable = trailers("14");
        let not_found = trailers("5");
        type Case<'a> = (
            Option<u16>,
            Option<GrpcCode>,
            Option<&'a http::HeaderMap>,
            (Option<u16>, bool),
        );
        let cases: [Case<'_>; 7] = [
            (Some(200), None, Some(&ok), (Some(0), false)),
            (Some(200), None, Some(&unavailable), (Some(14), true)),
            // NOT_FOUND is an answer, not an error, by default.
            (Some(200), None, Some(&not_found), (Some(5), false)),
            // Trailers-only: the code came with the headers.
            (
                Some(200),
                Some(GrpcCode::Unavailable),
                None,
                (Some(14), true),
            ),
            // No grpc-status anywhere: a broken call.
            (Some(200), None, None, (None, true)),
            (Some(503), None, None, (Some(503), true)),
            (None, None, None, (None, true)),
        ];
        for (http, head, t, want) in cases {
            assert_eq!(
                grpc_verdict(errors, http, head, t),
                want,
                "{http:?} {head:?} {t:?}"
            );
        }
    }
}
