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
//! The deciding parts are [`Clock`], a pure state machine of plain data, and
//! [`timer_action`]; the service tells the clock about requests through
//! [`Activity`] counters, which an [`InFlight`] guard moves from the
//! request's future into its response body, so a request ends when its
//! body is finished or dropped (also when the client gives up mid-way).
//!
//! Per request this costs two counter updates and one clock read (the
//! request's end): the timer is moved only when it would fire too late
//! (see [`TimerAction`]), and a request's end does not wake the connection.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
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
    /// Bytes of a request head have been read; the head's clock starts
    /// when a read first has to wait for more of it (a head that comes in
    /// one piece, as almost every head does, never reads the clock).
    HeadStarted,
    /// Reading a request head whose reading first had to wait at this
    /// instant (microseconds after its first byte).
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
    /// connection busy; when the last one has ended since the last look,
    /// the connection is idle from `ended()` (the end of the last request,
    /// asked only then: most reads change nothing).
    pub fn observe(&mut self, started: u64, done: u64, ended: impl FnOnce() -> Instant) {
        if started > done {
            self.phase = Phase::Busy;
        } else if (started, done) != self.seen || self.phase == Phase::Busy {
            self.phase = Phase::Idle(ended());
        }
        self.seen = (started, done);
    }

    /// Bytes were read: on an idle HTTP/1 connection, a request head has
    /// started.
    pub fn on_bytes(&mut self) {
        if let (Phase::Idle(_), true) = (self.phase, self.heads) {
            self.phase = Phase::HeadStarted;
        }
    }

    /// A read has to wait at `now()`: a started head's clock starts.
    pub fn on_wait(&mut self, now: impl FnOnce() -> Instant) {
        if self.phase == Phase::HeadStarted {
            self.phase = Phase::Head(now());
        }
    }

    /// When a read that is still waiting must give up, if ever.
    pub fn deadline(&self, limits: Limits) -> Option<Instant> {
        match self.phase {
            Phase::Idle(since) => since.checked_add(limits.keepalive),
            Phase::Head(since) => since.checked_add(limits.header_read),
            Phase::HeadStarted | Phase::Busy => None,
        }
    }
}

/// What the connection's timer must do for a read that waits, given the
/// deadline the [`Clock`] asks for (`None`: none, the connection is busy)
/// and the timer's state: armed at `armed` (`None`: not armed) and whether
/// that has passed.
///
/// The timer is moved only when it would fire too late: one armed for an
/// earlier instant fires early, and the read then looks again. So a
/// connection carrying steady traffic, whose idle deadline moves forward
/// with every request, touches its timer about once per keep-alive period
/// instead of once per request; a busy connection keeps whatever timer it
/// has (it wakes the read to look again, and the request's end is seen
/// then, without the request having to wake the connection).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerAction {
    /// The deadline has passed: the read fails.
    Expire,
    /// The armed timer fires in time: leave it.
    Keep,
    /// (Re)arm the timer at this instant.
    Arm(Instant),
    /// Busy, and no timer armed: arm one a keep-alive period from now.
    ArmFromNow,
}

/// See [`TimerAction`].
pub fn timer_action(wanted: Option<Instant>, armed: Option<Instant>, fired: bool) -> TimerAction {
    match (wanted, armed) {
        // It fired at `at`, not before `wanted`: the time is up.
        (Some(wanted), Some(at)) if fired && at >= wanted => TimerAction::Expire,
        (Some(wanted), Some(at)) if !fired && at <= wanted => TimerAction::Keep,
        (Some(wanted), _) => TimerAction::Arm(wanted),
        (None, Some(_)) if !fired => TimerAction::Keep,
        (None, _) => TimerAction::ArmFromNow,
    }
}

/// Requests of one connection: started and done (response body finished or
/// dropped), and when the last one ended. Shared by the connection's
/// service and its [`TimedIo`].
#[derive(Debug)]
pub struct Activity {
    started: AtomicU64,
    done: AtomicU64,
    /// When a request last ended, in nanoseconds since `base`.
    ended_nanos: AtomicU64,
    base: Instant,
}

impl Default for Activity {
    fn default() -> Activity {
        Activity {
            started: AtomicU64::new(0),
            done: AtomicU64::new(0),
            ended_nanos: AtomicU64::new(0),
            base: Instant::now(),
        }
    }
}

impl Activity {
    /// `(started, done)`.
    fn counts(&self) -> (u64, u64) {
        // `done` first: a request that starts and ends between the two
        // loads then reads as in flight (busy), never as not yet started.
        let done = self.done.load(Ordering::Acquire);
        (self.started.load(Ordering::Acquire), done)
    }

    /// When a request last ended.
    fn last_end(&self) -> Instant {
        self.base + Duration::from_nanos(self.ended_nanos.load(Ordering::Acquire))
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
        let since_base = self.0.base.elapsed().as_nanos();
        let nanos = u64::try_from(since_base).unwrap_or(u64::MAX);
        // The time before the count, so that a reader seeing the count sees
        // the time (or a later one's).
        self.0.ended_nanos.store(nanos, Ordering::Release);
        self.0.done.fetch_add(1, Ordering::AcqRel);
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
    /// Armed only when a read has to wait (most reads find data at once),
    /// and moved lazily (see [`TimerAction`]).
    timer: Option<Pin<Box<Sleep>>>,
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
            timer: None,
        }
    }

    /// Whether the deadline has passed; makes sure a timer wakes the task
    /// in time otherwise.
    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.clock.on_wait(Instant::now);
        let wanted = self.clock.deadline(self.limits);
        let armed = self.timer.as_ref().map(|t| t.deadline());
        let fired = self.timer.as_ref().is_some_and(|t| t.is_elapsed());
        let at = match timer_action(wanted, armed, fired) {
            TimerAction::Expire => return true,
            TimerAction::Keep => {
                // Polled every time, not only for a new waker: a poll made
                // when the task's cooperative budget was spent registers
                // nothing (tokio's `Sleep` checks the budget first), and the
                // idle connection would then wait with no timer at all.
                if let Some(timer) = &mut self.timer {
                    // Not ready: it has not fired.
                    let _ = timer.as_mut().poll(cx);
                }
                return false;
            }
            TimerAction::Arm(at) => at,
            TimerAction::ArmFromNow => Instant::now() + self.limits.keepalive,
        };
        let timer = match &mut self.timer {
            Some(timer) => {
                timer.as_mut().reset(at);
                timer
            }
            None => self.timer.insert(Box::pin(tokio::time::sleep_until(at))),
        };
        // Ready only for a deadline already past (a head or idle spell that
        // ran out while the task was not polled).
        timer.as_mut().poll(cx).is_ready() && wanted.is_some()
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
        let activity = &this.activity;
        this.clock.observe(started, done, || activity.last_end());
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.clock.on_bytes();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending if this.expired(cx) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                match this.clock.phase() {
                    Phase::Head(_) | Phase::HeadStarted => {
                        "request head not received within header_read_timeout"
                    }
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
        // The first bytes at 70 s; the head's clock starts when a read has
        // to wait for more of it: 5 s from then.
        c.on_bytes();
        assert_eq!(c.phase(), Phase::HeadStarted);
        assert_eq!(c.deadline(LIMITS), None);
        c.on_wait(|| at(t0, 70));
        assert_eq!(c.phase(), Phase::Head(at(t0, 70)));
        c.on_bytes();
        c.on_wait(|| at(t0, 72));
        c.observe(0, 0, || at(t0, 72));
        assert_eq!(c.deadline(LIMITS), Some(at(t0, 75)));
        // The service has the request: no deadline while it is served.
        c.observe(1, 0, || at(t0, 73));
        assert_eq!(c.deadline(LIMITS), None);
        c.on_bytes(); // body bytes
        c.on_wait(|| at(t0, 74));
        assert_eq!(c.phase(), Phase::Busy);
        // The response was done at 100 s: idle again, 75 s from then.
        c.observe(1, 1, || at(t0, 100));
        assert_eq!(c.deadline(LIMITS), Some(at(t0, 175)));
        c.observe(1, 1, || at(t0, 150));
        assert_eq!(c.deadline(LIMITS), Some(at(t0, 175)));
    }

    #[test]
    fn a_request_between_two_looks_restarts_the_idle_time() {
        let t0 = Instant::now();
        let mut c = Clock::new(t0, true);
        c.on_bytes();
        // Started and finished (at 2 s) before the connection read again.
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
        c.on_bytes();
        c.on_wait(|| at(t0, 10));
        assert_eq!(c.deadline(LIMITS), Some(at(t0, 75)));
        c.observe(3, 1, || at(t0, 20));
        assert_eq!(c.deadline(LIMITS), None);
        c.observe(3, 3, || at(t0, 30));
        assert_eq!(c.deadline(LIMITS), Some(at(t0, 105)));
    }

    #[test]
    fn the_timer_moves_only_when_it_would_fire_too_late() {
        use TimerAction::*;
        let t0 = Instant::now();
        let (t5, t75, t80) = (at(t0, 5), at(t0, 75), at(t0, 80));
        // Not armed yet.
        assert_eq!(timer_action(Some(t75), None, false), Arm(t75));
        assert_eq!(timer_action(None, None, false), ArmFromNow);
        // Steady traffic: the idle deadline moved later; the armed timer
        // fires early, which is fine.
        assert_eq!(timer_action(Some(t80), Some(t75), false), Keep);
        assert_eq!(timer_action(Some(t75), Some(t75), false), Keep);
        // A head's deadline is earlier: move it.
        assert_eq!(timer_action(Some(t5), Some(t75), false), Arm(t5));
        // Busy: any timer will do (it wakes the read to look again).
        assert_eq!(timer_action(None, Some(t75), false), Keep);
        assert_eq!(timer_action(None, Some(t75), true), ArmFromNow);
        // Fired early (the deadline moved on since): arm for the real one.
        assert_eq!(timer_action(Some(t80), Some(t75), true), Arm(t80));
        // Fired at or after the deadline: the time is up.
        assert_eq!(timer_action(Some(t75), Some(t75), true), Expire);
        assert_eq!(timer_action(Some(t5), Some(t75), true), Expire);
    }

    #[test]
    fn in_flight_counts_until_dropped() {
        let activity = Arc::new(Activity::default());
        let request = InFlight::start(&activity);
        assert_eq!(activity.counts(), (1, 0));
        let body = TrackedBody::new(http_body_util::Empty::<Bytes>::new(), request);
        assert_eq!(activity.counts(), (1, 0));
        let before = Instant::now();
        drop(body);
        assert_eq!(activity.counts(), (1, 1));
        // The request's end is when the connection's idle time starts.
        assert!(activity.last_end() >= before);
    }

    /// A connection whose first wait comes when its task's cooperative
    /// budget is spent (a busy task: tokio's `Sleep` then registers
    /// nothing on that poll) is still closed at its idle deadline.
    #[tokio::test]
    async fn an_idle_read_that_first_waits_with_no_budget_still_times_out() {
        use std::future::poll_fn;
        use tokio::io::{AsyncReadExt, AsyncWrite};
        let (_client, server) = tokio::io::duplex(64);
        let limits = Limits {
            keepalive: Duration::from_millis(100),
            header_read: Duration::from_millis(50),
        };
        let mut io = TimedIo::new(server, Arc::new(Activity::default()), limits, true);
        let (mut spare, _other) = tokio::io::duplex(1 << 20);
        let mut buf = [0u8; 16];
        let spent_budget = poll_fn(|cx| {
            // Writes that never wait, until tokio says the budget is spent.
            let mut writes = 0;
            while Pin::new(&mut spare).poll_write(cx, b"x").is_ready() && writes < 10_000 {
                writes += 1;
            }
            let mut rb = ReadBuf::new(&mut buf);
            let pending = Pin::new(&mut io).poll_read(cx, &mut rb).is_pending();
            Poll::Ready(writes < 10_000 && pending)
        })
        .await;
        assert!(
            spent_budget,
            "the first read must wait with the budget spent"
        );
        let res = tokio::time::timeout(Duration::from_secs(2), io.read(&mut buf)).await;
        match res {
            Ok(Err(e)) => assert_eq!(e.kind(), std::io::ErrorKind::TimedOut),
            other => panic!("idle read not closed at keepalive_timeout: {other:?}"),
        }
    }
}
