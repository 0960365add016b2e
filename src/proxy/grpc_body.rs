//! The response body of a gRPC call: streamed from the upstream as it comes,
//! watched on the way for what counting needs — the `grpc-status` of the
//! trailers, and whether more than one message went by — and cut at the
//! call's deadline.
//!
//! The call is counted (metrics, the ramp's window) when its trailers pass,
//! not at the response headers: a stream's status is only known at its end.
//! Latency for the judge: to the trailers for a unary-shaped answer (at most
//! one message), to the response headers for a stream (whose length is the
//! stream's business, not the backend's speed).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::outcome::Outcome;
use super::record::{record, Ended};
use crate::grpc::{self, GrpcCode, GrpcCodeSet, MessageCounter};
use crate::proxy::runtime::RouteRuntime;
use crate::routing::Decision;

/// What is needed to count the call when it ends.
pub struct PendingCall {
    /// The route's live state.
    pub rt: Arc<RouteRuntime>,
    /// The routing decision.
    pub decision: Decision,
    /// How the request got here (arm, fallback); `last` is filled at the end.
    pub ended: Ended,
    /// The route's `grpc_error_codes`.
    pub errors: GrpcCodeSet,
    /// When the exchange with the answering arm began.
    pub attempt_started: Instant,
    /// Time from then to the response headers.
    pub header_latency: Duration,
}

impl PendingCall {
    fn end(self, code: GrpcCode, unary: bool) {
        let latency = if unary {
            self.attempt_started.elapsed()
        } else {
            self.header_latency
        };
        let ended = Ended {
            last: Some((Outcome::Grpc(code, self.errors), latency)),
            ..self.ended
        };
        record(&self.rt, &self.decision, &ended);
    }
}

/// A gRPC call's response body.
pub struct GrpcBody {
    /// `None` once cut at the deadline (dropping it resets the stream upstream).
    inner: Option<Incoming>,
    /// Counted at the end; `None` once counted (or not to be counted here).
    pending: Option<Box<PendingCall>>,
    messages: MessageCounter,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl GrpcBody {
    /// Wraps an upstream body; `deadline` from the call's `grpc-timeout`.
    pub fn new(inner: Incoming, deadline: Option<Instant>) -> GrpcBody {
        GrpcBody {
            inner: Some(inner),
            pending: None,
            messages: MessageCounter::default(),
            deadline: deadline.map(|d| Box::pin(tokio::time::sleep_until(d))),
        }
    }

    /// Counts the call when it ends.
    pub fn count_at_end(&mut self, pending: PendingCall) {
        self.pending = Some(Box::new(pending));
    }

    fn end(&mut self, code: GrpcCode) {
        if let Some(p) = self.pending.take() {
            p.end(code, !self.messages.is_stream());
        }
    }
}

impl Body for GrpcBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Some(deadline) = this.deadline.as_mut() {
            if deadline.as_mut().poll(cx).is_ready() {
                // Past the deadline: reset upstream, tell the client.
                this.inner = None;
                this.end(GrpcCode::DeadlineExceeded);
                let mut trailers =
                    grpc::trailers_only(GrpcCode::DeadlineExceeded, "deadline exceeded");
                trailers.remove(http::header::CONTENT_TYPE);
                return Poll::Ready(Some(Ok(Frame::trailers(trailers))));
            }
        }
        let polled = Pin::new(inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.messages.feed(data);
                } else if let Some(trailers) = frame.trailers_ref() {
                    // No grpc-status at the end is a broken call (clients say INTERNAL).
                    let code = GrpcCode::in_headers(trailers).unwrap_or(GrpcCode::Internal);
                    this.end(code);
                }
            }
            Poll::Ready(Some(Err(_))) => this.end(GrpcCode::Unavailable),
            Poll::Ready(None) => this.end(GrpcCode::Internal),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().map_or(true, Incoming::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), Incoming::size_hint)
    }
}

impl Drop for GrpcBody {
    fn drop(&mut self) {
        // The client went away (or reset the stream) before the end.
        self.end(GrpcCode::Cancelled);
    }
}
