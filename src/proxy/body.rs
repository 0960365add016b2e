//! Body types of the request path. Both stream: nothing is buffered whole.

use std::error::Error as StdError;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::grpc_body::GrpcBody;
use super::upstream::PoolSlot;

/// The request body sent upstream: the client's body, counted against
/// `max_body_bytes` while it streams (so chunked bodies are limited too), or
/// nothing (a fallback resend of a body-less request).
pub enum RequestBody {
    /// The client's body.
    Client {
        /// The body as hyper received it.
        inner: Incoming,
        /// Bytes still allowed.
        remaining: u64,
    },
    /// No body.
    Empty,
    /// A body read whole (a gRPC call that may be asked of stable again, or
    /// a mirrored request's copy), and its trailers (boxed: a `HeaderMap`
    /// inline would more than double the size of every request, which is
    /// moved several times on its way to the upstream).
    Buffered(Option<Bytes>, Option<Box<HeaderMap>>),
    /// The client's body on a mirrored request: streamed to stable as is,
    /// and copied (up to a cap) for the canary.
    Teed(Box<RequestTee>),
}

/// The error type of request bodies.
type BoxError = Box<dyn StdError + Send + Sync>;

/// Why a request body's copy was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFailed {
    /// The body exceeded the copy's cap.
    TooLarge,
    /// The body broke off or was not read to its end.
    Incomplete,
}

/// Copies a request body while it streams to stable; hands the copy over
/// when the body ends. The copy never holds the stream back: a frame is
/// copied when it passes, and a body over the cap just stops being copied.
pub struct RequestTee {
    inner: RequestBody,
    copy: Vec<u8>,
    cap: usize,
    over: bool,
    done: Option<tokio::sync::oneshot::Sender<Result<Bytes, CopyFailed>>>,
}

impl RequestTee {
    /// Wraps `inner`; the copy (or why there is none) goes to `done`.
    pub fn wrap(
        inner: RequestBody,
        cap: usize,
        done: tokio::sync::oneshot::Sender<Result<Bytes, CopyFailed>>,
    ) -> RequestBody {
        RequestBody::Teed(Box::new(RequestTee {
            inner,
            copy: Vec::new(),
            cap,
            over: false,
            done: Some(done),
        }))
    }

    fn finish(&mut self, complete: bool) {
        if let Some(done) = self.done.take() {
            let copy = match (complete, self.over) {
                (_, true) => Err(CopyFailed::TooLarge),
                (false, false) => Err(CopyFailed::Incomplete),
                (true, false) => Ok(Bytes::from(std::mem::take(&mut self.copy))),
            };
            // The mirror may be gone (runtime shutting down); nothing to do then.
            let _ = done.send(copy);
        }
    }

    fn poll_tee(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if self.copy.len() + data.len() > self.cap {
                        self.over = true;
                        self.copy = Vec::new();
                    } else if !self.over {
                        self.copy.extend_from_slice(data);
                    }
                }
                if self.over || self.inner.is_end_stream() {
                    // Over the cap, the outcome is known: tell the mirror now.
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for RequestTee {
    fn drop(&mut self) {
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

impl RequestBody {
    /// Reads the body whole (within its limit). A body that breaks becomes
    /// an empty one that fails the same way when sent: it is passed on as is.
    pub async fn buffered(self) -> RequestBody {
        use http_body_util::BodyExt;
        if !matches!(self, RequestBody::Client { .. }) {
            return self;
        }
        let (mut data, mut trailers) = (bytes::BytesMut::new(), None);
        let mut body = self;
        while let Some(frame) = body.frame().await {
            match frame.map(Frame::into_data) {
                Ok(Ok(bytes)) => data.extend_from_slice(&bytes),
                Ok(Err(frame)) => trailers = frame.into_trailers().ok().map(Box::new),
                Err(_) => return body,
            }
        }
        RequestBody::Buffered(Some(data.freeze()), trailers)
    }

    /// A copy to send again, when the body can be (none, or read whole).
    pub fn try_clone(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Empty => Some(RequestBody::Empty),
            RequestBody::Buffered(data, trailers) => {
                Some(RequestBody::Buffered(data.clone(), trailers.clone()))
            }
            RequestBody::Client { .. } | RequestBody::Teed(_) => None,
        }
    }

    /// Wraps the client's body with the size limit.
    pub fn limited(inner: Incoming, limit: u64) -> RequestBody {
        RequestBody::Client {
            inner,
            remaining: limit,
        }
    }
}

/// The client's body exceeded `max_body_bytes` while streaming.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge;

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request body exceeds max_body_bytes")
    }
}

impl StdError for BodyTooLarge {}

/// The client's request body broke while it streamed to an upstream: the
/// client's fault, never counted against the upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientBodyError {
    /// It exceeded `max_body_bytes` (a chunked body, or one longer than declared).
    TooLarge,
    /// It broke off (the client went away, or sent bad chunked framing).
    Aborted,
}

/// True when `err` (or anything in its source chain) is [`BodyTooLarge`].
pub fn is_body_too_large(err: &(dyn StdError + 'static)) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if e.is::<BodyTooLarge>() {
            return true;
        }
        current = e.source();
    }
    false
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Box<dyn StdError + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Buffered(data, trailers) => Poll::Ready(match data.take() {
                Some(d) => Some(Ok(Frame::data(d))),
                None => trailers.take().map(|t| Ok(Frame::trailers(*t))),
            }),
            RequestBody::Teed(tee) => tee.poll_tee(cx),
            RequestBody::Client { inner, remaining } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        let len = data.len() as u64;
                        if len > *remaining {
                            *remaining = 0;
                            return Poll::Ready(Some(Err(Box::new(BodyTooLarge))));
                        }
                        *remaining -= len;
                    }
                    Poll::Ready(Some(Ok(frame)))
                }
                Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Box::new(e)))),
                Poll::Ready(None) => Poll::Ready(None),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Buffered(data, trailers) => data.is_none() && trailers.is_none(),
            RequestBody::Client { inner, .. } => inner.is_end_stream(),
            RequestBody::Teed(tee) => tee.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Buffered(data, _) => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            RequestBody::Client { inner, .. } => inner.size_hint(),
            RequestBody::Teed(tee) => tee.inner.size_hint(),
        }
    }
}

/// The response body sent to the client: an upstream's streamed body (which
/// gives its connection back to the pool when it ends) or a proxy-made one.
pub enum ResponseBody {
    /// Streamed from an upstream.
    Upstream {
        /// The upstream body.
        inner: Incoming,
        /// The connection, returned to its pool at end of stream.
        slot: Option<PoolSlot>,
    },
    /// A complete body made by the proxy (errors, admin answers).
    Full(Option<Bytes>),
    /// Stable's body on a mirrored request: streamed to the client as is,
    /// and copied (up to a cap) for the shadow comparison.
    Teed(Box<Tee>),
    /// A gRPC call's answer, counted when its trailers pass.
    Grpc(Box<GrpcBody>),
}

impl Default for ResponseBody {
    /// No body at all (a trailers-only gRPC answer ends with its headers).
    fn default() -> Self {
        ResponseBody::Full(None)
    }
}

/// What a [`Tee`] copied of a complete body.
#[derive(Debug, Default)]
pub struct TeeCopy {
    /// The body, `None` when it exceeded the cap.
    pub body: Option<Bytes>,
    /// The trailers, when the body had some (a gRPC answer's `grpc-status`).
    pub trailers: Option<http::HeaderMap>,
}

/// Copies a body while it streams; hands the copy over when the body ends
/// (`None` when it broke or was dropped unfinished).
pub struct Tee {
    inner: ResponseBody,
    copy: Vec<u8>,
    trailers: Option<http::HeaderMap>,
    cap: usize,
    over: bool,
    done: Option<tokio::sync::oneshot::Sender<Option<TeeCopy>>>,
}

impl Tee {
    /// Wraps `inner`; the copy goes to `done`.
    pub fn wrap(
        inner: ResponseBody,
        cap: usize,
        done: tokio::sync::oneshot::Sender<Option<TeeCopy>>,
    ) -> ResponseBody {
        ResponseBody::Teed(Box::new(Tee {
            inner,
            copy: Vec::new(),
            trailers: None,
            cap,
            over: false,
            done: Some(done),
        }))
    }

    fn finish(&mut self, complete: bool) {
        if let Some(done) = self.done.take() {
            let copy = complete.then(|| TeeCopy {
                body: (!self.over).then(|| Bytes::from(std::mem::take(&mut self.copy))),
                trailers: self.trailers.take(),
            });
            // The comparison may have given up waiting; nothing to do then.
            let _ = done.send(copy);
        }
    }

    fn poll_tee(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    if self.copy.len() + data.len() > self.cap {
                        self.over = true;
                        self.copy = Vec::new();
                    } else if !self.over {
                        self.copy.extend_from_slice(data);
                    }
                } else if let Some(trailers) = frame.trailers_ref() {
                    self.trailers = Some(trailers.clone());
                }
                if self.inner.is_end_stream() {
                    self.finish(true);
                }
            }
            Poll::Ready(None) => self.finish(true),
            Poll::Ready(Some(Err(_))) => self.finish(false),
            Poll::Pending => {}
        }
        polled
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        // HEAD, 204 and 304 answers end without a poll.
        let complete = self.inner.is_end_stream();
        self.finish(complete);
    }
}

impl ResponseBody {
    /// A streamed upstream body whose connection goes back to the pool at the end.
    pub fn upstream(inner: Incoming, slot: PoolSlot) -> ResponseBody {
        ResponseBody::Upstream {
            inner,
            slot: Some(slot),
        }
    }

    /// Gives the connection back when the body is complete.
    fn release_if_done(&mut self) {
        if let ResponseBody::Upstream { inner, slot } = self {
            if inner.is_end_stream() {
                if let Some(slot) = slot.take() {
                    slot.release();
                }
            }
        }
    }
}

impl From<Bytes> for ResponseBody {
    fn from(bytes: Bytes) -> Self {
        ResponseBody::Full(Some(bytes))
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        match this {
            ResponseBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ResponseBody::Teed(tee) => tee.poll_tee(cx),
            ResponseBody::Upstream { inner, slot } => {
                let polled = Pin::new(inner).poll_frame(cx);
                match &polled {
                    Poll::Ready(None) => {
                        if let Some(slot) = slot.take() {
                            slot.release();
                        }
                    }
                    Poll::Ready(Some(Err(_))) => {
                        // A broken connection is never reused.
                        slot.take();
                    }
                    Poll::Ready(Some(Ok(_))) => this.release_if_done(),
                    Poll::Pending => {}
                }
                polled
            }
            ResponseBody::Grpc(body) => Pin::new(&mut **body).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            ResponseBody::Full(bytes) => bytes.is_none(),
            ResponseBody::Upstream { inner, .. } => inner.is_end_stream(),
            ResponseBody::Teed(tee) => tee.inner.is_end_stream(),
            ResponseBody::Grpc(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            ResponseBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            ResponseBody::Full(None) => SizeHint::with_exact(0),
            ResponseBody::Upstream { inner, .. } => inner.size_hint(),
            ResponseBody::Teed(tee) => tee.inner.size_hint(),
            ResponseBody::Grpc(body) => body.size_hint(),
        }
    }
}

impl Drop for ResponseBody {
    fn drop(&mut self) {
        // HEAD, 204 and 304 answers are complete without ever being polled.
        self.release_if_done();
    }
}
