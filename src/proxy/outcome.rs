//! How one exchange with an upstream ended, and the one place that says
//! which endings count against the arm.
//!
//! Metrics, the ramp's window, fallback and outlier detection all read an
//! [`Outcome`]; none of them looks at a status code on its own. A gRPC call
//! answered with HTTP 200 is [`Outcome::Grpc`]: its `grpc-status` (from the
//! trailers, or the headers of a trailers-only answer) decides, against the
//! route's `grpc_error_codes`.

use std::error::Error as StdError;
use std::io;

use http::{Request, StatusCode};

use super::body::{is_body_too_large, ClientBodyError, RequestBody};
use super::error::ProxyError;
use crate::grpc::{GrpcCode, GrpcCodeSet};
use crate::metrics::FailureKind;

/// Why an upstream produced no usable response. Classified once, here; the
/// rest of the proxy matches on it. The client's own body breaking is not an
/// upstream failure: see [`SendError::ClientBody`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpstreamFailure {
    /// Connecting failed: the upstream never saw the request.
    Connect,
    /// No response headers within `request_timeout`.
    Timeout,
    /// The connection broke after the request was (perhaps partly) sent.
    Reset,
    /// A protocol error or anything else.
    Other,
}

impl UpstreamFailure {
    /// The `kind` label.
    pub fn metric_kind(self) -> FailureKind {
        match self {
            UpstreamFailure::Connect => FailureKind::Connect,
            UpstreamFailure::Timeout => FailureKind::Timeout,
            UpstreamFailure::Reset => FailureKind::Reset,
            UpstreamFailure::Other => FailureKind::Other,
        }
    }
}

/// A failed send. `request` is `Some` when the upstream provably never
/// received it, so it can be sent elsewhere unchanged.
pub struct SendFailure {
    /// What went wrong.
    pub error: SendError,
    /// The untouched request, when it was never written.
    pub request: Option<Request<RequestBody>>,
}

impl SendFailure {
    /// No connection to send over (none could be opened, or no endpoint is
    /// up): `request` was never written.
    pub fn no_connection(request: Request<RequestBody>) -> SendFailure {
        SendFailure::upstream(UpstreamFailure::Connect, Some(request))
    }

    /// The upstream's side failed this way; `request` is handed back when it
    /// was never written.
    pub fn upstream(
        failure: UpstreamFailure,
        request: Option<Request<RequestBody>>,
    ) -> SendFailure {
        SendFailure {
            error: SendError::Upstream(failure),
            request,
        }
    }

    /// No response headers in time; the request was written and is gone.
    pub fn timeout() -> SendFailure {
        SendFailure::upstream(UpstreamFailure::Timeout, None)
    }

    /// hyper's send failed with `err`. A request it handed back (`unsent`)
    /// never reached the upstream: its connection had gone, so that counts
    /// as a connect failure; otherwise `err` says what broke.
    pub fn sent(err: &hyper::Error, unsent: Option<Request<RequestBody>>) -> SendFailure {
        SendFailure {
            error: match unsent {
                Some(_) => SendError::Upstream(UpstreamFailure::Connect),
                None => classify(err),
            },
            request: unsent,
        }
    }
}

/// Why a send produced no response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// The upstream's side: connect, timeout, reset, protocol.
    Upstream(UpstreamFailure),
    /// The client's body broke while streaming; the upstream is not to blame.
    ClientBody(ClientBodyError),
}

/// How an exchange with one arm ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Answered(StatusCode),
    /// No usable answer.
    NoAnswer(SendError),
    /// A gRPC call answered (HTTP 200) with this `grpc-status`; the set is
    /// the route's codes that count as errors.
    Grpc(GrpcCode, GrpcCodeSet),
}

impl Outcome {
    /// Whether this exchange counts as the arm's failure: a 5xx answer or no
    /// answer through the upstream's fault. A client whose body broke says
    /// nothing about the upstream. Decided here only.
    pub fn is_failure(self) -> bool {
        match self {
            Outcome::Answered(status) => status.is_server_error(),
            Outcome::Grpc(code, errors) => errors.contains(code),
            Outcome::NoAnswer(SendError::Upstream(_)) => true,
            Outcome::NoAnswer(SendError::ClientBody(_)) => false,
        }
    }

    /// The status the client gets: the upstream's, or the proxy's own.
    pub fn status(self) -> StatusCode {
        match self {
            Outcome::Answered(status) => status,
            Outcome::Grpc(..) => StatusCode::OK,
            Outcome::NoAnswer(e) => e.proxy_error().status(),
        }
    }

    /// The `kind` label of `grayproxy_upstream_failures_total`, when the
    /// upstream gave no answer.
    pub fn failure_kind(self) -> Option<FailureKind> {
        match self {
            Outcome::NoAnswer(SendError::Upstream(f)) => Some(f.metric_kind()),
            Outcome::Answered(_)
            | Outcome::Grpc(..)
            | Outcome::NoAnswer(SendError::ClientBody(_)) => None,
        }
    }

    /// Whether the client's body broke: its connection cannot carry another
    /// request.
    pub fn client_body_broke(self) -> bool {
        matches!(self, Outcome::NoAnswer(SendError::ClientBody(_)))
    }
}

impl Outcome {
    /// The `grpc-status` the client of a gRPC call sees: the upstream's, or
    /// the proxy's own answer's. `None` for an HTTP answer (not 200) to a
    /// gRPC call, which the client maps itself.
    pub fn grpc_code(self) -> Option<GrpcCode> {
        match self {
            Outcome::Grpc(code, _) => Some(code),
            Outcome::NoAnswer(e) => Some(e.proxy_error().grpc_code()),
            Outcome::Answered(_) => None,
        }
    }
}

impl SendError {
    /// The answer the proxy makes for it.
    pub fn proxy_error(self) -> ProxyError {
        match self {
            SendError::Upstream(
                UpstreamFailure::Connect | UpstreamFailure::Reset | UpstreamFailure::Other,
            ) => ProxyError::UpstreamUnreachable,
            SendError::Upstream(UpstreamFailure::Timeout) => ProxyError::UpstreamTimeout,
            SendError::ClientBody(ClientBodyError::TooLarge) => ProxyError::BodyTooLarge,
            SendError::ClientBody(ClientBodyError::Aborted) => ProxyError::BadRequest,
        }
    }
}

/// Classifies a hyper error from `send_request`: the client's body or the
/// upstream.
pub(super) fn classify(err: &hyper::Error) -> SendError {
    if is_body_too_large(err) {
        return SendError::ClientBody(ClientBodyError::TooLarge);
    }
    if err.is_body_write_aborted() || is_client_body_error(err) {
        return SendError::ClientBody(ClientBodyError::Aborted);
    }
    if err.is_incomplete_message() || err.is_canceled() || err.is_closed() {
        return SendError::Upstream(UpstreamFailure::Reset);
    }
    let mut source = err.source();
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            return SendError::Upstream(match io.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => UpstreamFailure::Reset,
                _ => UpstreamFailure::Other,
            });
        }
        source = e.source();
    }
    SendError::Upstream(UpstreamFailure::Other)
}

/// True when the error came from reading the client's request body.
fn is_client_body_error(err: &hyper::Error) -> bool {
    err.is_user() && {
        let mut source = err.source();
        let mut found = false;
        while let Some(e) = source {
            if e.downcast_ref::<hyper::Error>().is_some() {
                found = true;
                break;
            }
            source = e.source();
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ClientBodyError::*;
    use UpstreamFailure::*;

    fn no_answer_upstream(f: UpstreamFailure) -> Outcome {
        Outcome::NoAnswer(SendError::Upstream(f))
    }

    #[test]
    fn failure_is_5xx_or_the_upstreams_no_answer() {
        let cases = [
            (Outcome::Answered(StatusCode::OK), false, 200, None),
            (Outcome::Answered(StatusCode::NOT_FOUND), false, 404, None),
            (Outcome::Answered(StatusCode::BAD_GATEWAY), true, 502, None),
            (
                Outcome::Answered(StatusCode::SERVICE_UNAVAILABLE),
                true,
                503,
                None,
            ),
            (
                no_answer_upstream(Connect),
                true,
                502,
                Some(FailureKind::Connect),
            ),
            (
                no_answer_upstream(Timeout),
                true,
                504,
                Some(FailureKind::Timeout),
            ),
            (
                no_answer_upstream(Reset),
                true,
                502,
                Some(FailureKind::Reset),
            ),
            (
                no_answer_upstream(Other),
                true,
                502,
                Some(FailureKind::Other),
            ),
            (
                Outcome::NoAnswer(SendError::ClientBody(TooLarge)),
                false,
                413,
                None,
            ),
            (
                Outcome::NoAnswer(SendError::ClientBody(Aborted)),
                false,
                400,
                None,
            ),
        ];
        for (outcome, failure, status, kind) in cases {
            assert_eq!(outcome.is_failure(), failure, "{outcome:?}");
            assert_eq!(outcome.status().as_u16(), status, "{outcome:?}");
            assert_eq!(outcome.failure_kind(), kind, "{outcome:?}");
            assert_eq!(
                outcome.client_body_broke(),
                matches!(outcome, Outcome::NoAnswer(SendError::ClientBody(_))),
            );
        }
    }
}
