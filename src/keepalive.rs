//! Client connection deadlines: how long an idle connection is kept
//! (`keepalive_timeout`), and how long a started request head may take
//! (`header_read_timeout`, slowloris protection).
//!
//! hyper has one timer for both: its `header_read_timeout` starts as soon as
//! the connection waits for a request, so an idle keep-alive connection is
//! closed after the (short) header timeout. Here hyper's timer is off and
//! [`TimedIo`] keeps the two apart, like nginx's `keepalive_timeout` and
//! `client_header_timeout`:
//!
//! - **idle** (no request in flight, nothing of the next one read): the
//!   connection may stay `keepalive_timeout` from when it became idle (its
//!   accept, or the end of the last response);
//! - **head** (bytes of a request read, the service not called yet): the
//!   head must be complete `header_read_timeout` after its first byte;
//! - **busy** (a request is being served, until its response body is done):
//!   no read deadline here (the request timeout and body limits apply).
//!
//! The deciding part is [`Clock`], a pure state machine of plain data; the
//! service tells it about requests through [`Activity`] counters, which an
//! [`InFlight`] guard moves from the request's future into its response
//! body, so a request ends when its body is finished or dropped (also when
//! the client gives up mid-way).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The two deadlines, from `[server]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Idle time allowed before a request and between requests.
    pub keepalive: Duration,
    /// Time from a request's first byte to its complete head.
    pub header_read: Duration,
}

/// Where a connection is, as far as its read deadline goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Waiting for a request since this instant.
    Idle(Instant),
    /// Reading a request head whose first byte came at this instant.
    Head(Instant),
    /// Serving a request: no read deadline.
    Busy,
}

/// The read-deadline state machine of one connection.
#[derive(Debug, Clone)]
pub struct Clock {
    phase: Phase,
    /// `(started, done)` requests when last looked at.
    seen: (u64, u64),
    /// Whether bytes read while idle start a request head (HTTP/1). On h2
    /// they may be pings or settings, so only whole requests count there.
    heads: bool,
}

impl Clock {
    /// A connection accepted (or whose handshake ended) at `now`.
    pub fn new(now: Instant, heads: bool) -> Clock {
        Clock {
            phase: Phase::Idle(now),
            seen: (0, 0),
            heads,
        }
    }

    /// The phase now.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Catches up with the request counters: a request in flight makes the
    /// connection busy; one that ended since the last look makes it idle
    /// from `now()` (asked only then: most reads change nothing).
    pub fn observe(&mut self, started: u64, done: u64, now: impl FnOnce() -> Instant) {
        if started > done {
            self.phase = Phase::Busy;
        } else if (started, done) != self.seen || self.phase == Phase::Busy {
            self.phase = Phase::Idle(now());
        }
        self.seen = (started, done);
    }

    /// Bytes were read at `now()`: on an idle HTTP/1 connection, a request
    /// head has started.
    pub fn on_bytes(&mut self, now: impl FnOnce() -> Instant) {
        if let (Phase::Idle(_), true) = (self.phase, self.heads) {
            self.phase = Phase::Head(now());
        }
    }

    /// When a read that is still waiting must give up, if ever.
    pub fn deadline(&self, limits: Limits) -> Option<Instant> {
        match self.phase {
            Phase::Idle(since) => since.checked_add(limits.keepalive),
            Phase::Head(since) => since.checked_add(limits.header_read),
            Phase::Busy => None,
        }
    }
}

/// Requests of one connection: started and done (response body finished or
/// dropped). Shared by the connection's service and its [`TimedIo`].
#[derive(Debug, Default)]
pub struct Activity {
    started: AtomicU64,
    done: AtomicU64,
    /// The connection's read, when it waits without a deadline because a
    /// request is in flight: woken when the request ends, so that the idle
    /// deadline is armed even if nothing else wakes the connection.
    reader: Mutex<Option<Waker>>,
}

impl Activity {
    /// `(started, done)`.
    fn counts(&self) -> (u64, u64) {
        // `done` first: a request that starts and ends between the two
        // loads then reads as in flight (busy), never as not yet started.
        let done = self.done.load(Ordering::Acquire);
        (self.started.load(Ordering::Acquire), done)
    }
}

/// One request in flight; counts as done when dropped.
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl InFlight {
    /// A request of the connection `activity` starts.
    pub fn start(activity: &Arc<Activity>) -> InFlight {
        activity.started.fetch_add(1, Ordering::AcqRel);
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.done.fetch_add(1, Ordering::AcqRel);
        let reader = self
            .0
            .reader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(reader) = reader {
            reader.wake();
        }
    }
}

/// A response body that keeps its request [`InFlight`] until hyper has
/// sent all of it (or dropped it).
#[derive(Debug)]
pub struct TrackedBody<B> {
    inner: B,
    _request: InFlight,
}

impl<B> TrackedBody<B> {
    /// `inner`, ending `request` when dropped.
    pub fn new(inner: B, request: InFlight) -> TrackedBody<B> {
        TrackedBody {
            inner,
            _request: request,
        }
    }
}

impl<B> Body for TrackedBody<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A client stream whose reads give up (with `TimedOut`, which ends the
/// connection) at the [`Clock`]'s deadline. Writes pass through.
pub struct TimedIo<T> {
    inner: T,
    activity: Arc<Activity>,
    clock: Clock,
    limits: Limits,
    /// Armed only when a read has to wait: most reads find data at once.
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<T> TimedIo<T> {
    /// Wraps a stream accepted (or handshaken) now. `heads`: HTTP/1, where
    /// bytes after an idle spell start a request head.
    pub fn new(inner: T, activity: Arc<Activity>, limits: Limits, heads: bool) -> TimedIo<T> {
        TimedIo {
            inner,
            activity,
            clock: Clock::new(Instant::now(), heads),
            limits,
            sleep: None,
        }
    }

    /// Whether the deadline has passed; arms the timer to wake the task at
    /// the deadline otherwise (or, while busy, asks the request's end to).
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        let Some(deadline) = self.clock.deadline(self.limits) else {
            let mut reader = self
                .activity
                .reader
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if !reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *reader = Some(cx.waker().clone());
            }
            drop(reader);
            // The request may have ended before the waker was in place.
            let (started, done) = self.activity.counts();
            self.clock.observe(started, done, Instant::now);
            return match self.clock.deadline(self.limits) {
                Some(_) => self.expired(cx),
                None => false,
            };
        };
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if sleep.deadline() != deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        sleep.as_mut().poll(cx).is_ready()
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for TimedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        let (started, done) = this.activity.counts();
        this.clock.observe(started, done, Instant::now);
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.on_bytes(Instant::now);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                match this.clock.phase() {
                    Phase::Head(_) => "request head not received within header_read_timeout",
                    Phase::Idle(_) | Phase::Busy => {
                        "idle connection closed after keepalive_timeout"
                    }
                },
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for TimedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        keepalive: Duration::from_secs(75),
        header_read: Duration::from_secs(5),
    };

    fn at(t0: Instant, secs: u64) -> Instant {
        t0 + Duration::from_secs(secs)
    }

    #[test]
    fn idle_then_head_then_busy_then_idle() {
        let t0 = Instant::now();
        let mut c = Clock::new(t0, true);
        assert_eq!(c.deadline(LIMITS), Some(at(t0, 75)));
        // Still nothing after a minute: the same deadline.
        c.observe(0, 0, || at(t0, 60));
        assert_eq!(c.deadline(LIMITS), Some(at(t0, 75)));
        // The first byte at 70 s: the head has 5 s from then.
        c.on_bytes(|| at(t0, 70));
        assert_eq!(c.phase(), Phase::Head(at(t0, 70)));
        c.on_bytes(|| at(t0, 72));
        c.observe(0, 0, || at(t0, 72));
        assert_eq!(c.deadline(LIMITS), Some(at(t0, 75)));
        // The service has the request: no deadline while it is served.
        c.observe(1, 0, || at(t0, 73));
        assert_eq!(c.deadline(LIMITS), None);
        c.on_bytes(|| at(t0, 74)); // body bytes
        assert_eq!(c.phase(), Phase::Busy);
        // The response is done at 100 s: idle again, 75 s from then.
        c.observe(1, 1, || at(t0, 100));
        assert_eq!(c.deadline(LIMITS), Some(at(t0, 175)));
        c.observe(1, 1, || at(t0, 150));
        assert_eq!(c.deadline(LIMITS), Some(at(t0, 175)));
    }

    #[test]
    fn a_request_between_two_looks_restarts_the_idle_time() {
        let t0 = Instant::now();
        let mut c = Clock::new(t0, true);
        c.on_bytes(|| at(t0, 1));
        // Started and finished before the connection read again.
        c.observe(1, 1, || at(t0, 2));
        assert_eq!(c.phase(), Phase::Idle(at(t0, 2)));
        // Pipelined: the next request was already buffered and is served.
        c.observe(2, 1, || at(t0, 3));
        assert_eq!(c.phase(), Phase::Busy);
        c.observe(2, 2, || at(t0, 4));
        assert_eq!(c.deadline(LIMITS), Some(at(t0, 79)));
    }

    #[test]
    fn on_h2_only_requests_end_idleness() {
        let t0 = Instant::now();
        let mut c = Clock::new(t0, false);
        // A ping or settings frame read while idle is not a request head.
        c.on_bytes(|| at(t0, 10));
        assert_eq!(c.deadline(LIMITS), Some(at(t0, 75)));
        c.observe(3, 1, || at(t0, 20));
        assert_eq!(c.deadline(LIMITS), None);
        c.observe(3, 3, || at(t0, 30));
        assert_eq!(c.deadline(LIMITS), Some(at(t0, 105)));
    }

    #[test]
    fn in_flight_counts_until_dropped() {
        let activity = Arc::new(Activity::default());
        let request = InFlight::start(&activity);
        assert_eq!(activity.counts(), (1, 0));
        let body = TrackedBody::new(http_body_util::Empty::<Bytes>::new(), request);
        assert_eq!(activity.counts(), (1, 0));
        drop(body);
        assert_eq!(activity.counts(), (1, 1));
    }
}
