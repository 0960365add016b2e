//! Graceful drain of client connections: at shutdown every connection is
//! asked to finish its request in flight and close, and the accept loop
//! waits until all have.
//!
//! hyper-util's `GracefulShutdown` does the same with a `watch` channel,
//! whose `changed()` future every connection polls each time its task runs
//! (about 180 instructions, three times per proxied request). Here a
//! connection's poll reads one flag; its waker is registered once, when
//! the connection is first polled, and again only if the task's waker
//! changes.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use hyper_util::server::graceful::GracefulConnection;
use tokio::sync::Notify;

/// The drain of one accept loop's connections.
#[derive(Debug, Default)]
pub struct Drain {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// Set once, at shutdown.
    draining: AtomicBool,
    waiters: Mutex<Waiters>,
    /// Notified when the last watched connection ends during a drain.
    all_closed: Notify,
}

#[derive(Debug, Default)]
struct Waiters {
    /// Connections being watched (their futures not dropped yet).
    live: usize,
    next_key: u64,
    /// The wakers of the connections polled so far, by key.
    wakers: HashMap<u64, Waker>,
}

impl Shared {
    fn waiters(&self) -> MutexGuard<'_, Waiters> {
        // The map stays consistent even if a holder panicked.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drain {
    /// No connections yet, not draining.
    pub fn new() -> Drain {
        Drain::default()
    }

    /// A connection's place in the drain, taken when it is accepted (the
    /// drain waits for it from then), for [`Watcher::watch`] once the
    /// connection is built.
    pub fn watcher(&self) -> Watcher {
        let key = {
            let mut waiters = self.shared.waiters();
            waiters.live += 1;
            waiters.next_key += 1;
            waiters.next_key
        };
        Watcher {
            shared: self.shared.clone(),
            key,
            waker: None,
            asked: false,
        }
    }

    /// `conn`, shut down gracefully once the drain starts.
    #[cfg(test)]
    fn watch<C: GracefulConnection>(&self, conn: C) -> Watched<C> {
        self.watcher().watch(conn)
    }

    /// Connections being watched.
    pub fn live(&self) -> usize {
        self.shared.waiters().live
    }

    /// Asks every connection to finish and close, and waits until all
    /// have (callers bound the wait).
    pub async fn shutdown(self) {
        self.shared.draining.store(true, Ordering::SeqCst);
        let wakers: Vec<Waker> = self
            .shared
            .waiters()
            .wakers
            .drain()
            .map(|(_, w)| w)
            .collect();
        for waker in wakers {
            waker.wake();
        }
        loop {
            // Created before the check: a connection ending in between
            // still notifies it.
            let closed = self.shared.all_closed.notified();
            if self.live() == 0 {
                return;
            }
            closed.await;
        }
    }
}

pin_project_lite::pin_project! {
    /// A connection under a [`Drain`].
    pub struct Watched<C> {
        #[pin]
        conn: C,
        watcher: Watcher,
    }
}

/// A connection's place in its [`Drain`]; leaves it when dropped.
#[derive(Debug)]
pub struct Watcher {
    shared: Arc<Shared>,
    key: u64,
    /// The waker registered for this connection, if any.
    waker: Option<Waker>,
    /// Whether the connection has been asked to shut down.
    asked: bool,
}

impl Watcher {
    /// `conn`, shut down gracefully once the drain starts.
    pub fn watch<C: GracefulConnection>(self, conn: C) -> Watched<C> {
        Watched {
            conn,
            watcher: self,
        }
    }

    /// Whether the connection is to be asked to shut down now (once);
    /// registers `waker` to be woken when the drain starts, unless it
    /// already is.
    fn ask_now(&mut self, waker: &Waker) -> bool {
        if self.asked {
            return false;
        }
        let mut draining = self.shared.draining.load(Ordering::Acquire);
        if !draining && !self.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
            self.shared.waiters().wakers.insert(self.key, waker.clone());
            self.waker = Some(waker.clone());
            // The drain may have started (and taken the wakers) just before.
            draining = self.shared.draining.load(Ordering::Acquire);
        }
        self.asked = draining;
        draining
    }
}

impl<C: GracefulConnection> Future for Watched<C> {
    type Output = C::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<C::Output> {
        let mut this = self.project();
        if this.watcher.ask_now(cx.waker()) {
            this.conn.as_mut().graceful_shutdown();
        }
        this.conn.poll(cx)
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let mut waiters = self.shared.waiters();
        waiters.wakers.remove(&self.key);
        waiters.live = waiters.live.saturating_sub(1);
        let last = waiters.live == 0;
        drop(waiters);
        if last && self.shared.draining.load(Ordering::Acquire) {
            self.shared.all_closed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    use hyper::server::conn::http1;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A served HTTP/1 connection that answers after `delay`; the client side.
    async fn connection(
        drain: &Drain,
        delay: Duration,
    ) -> (TcpStream, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let service = service_fn(move |_req| async move {
            tokio::time::sleep(delay).await;
            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                bytes::Bytes::from_static(b"done"),
            )))
        });
        let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
        let watched = drain.watch(conn);
        (
            client,
            tokio::spawn(async move {
                let _ = watched.await;
            }),
        )
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_and_lets_requests_finish() {
        let drain = Drain::new();
        let (mut idle, idle_task) = connection(&drain, Duration::ZERO).await;
        let (mut busy, busy_task) = connection(&drain, Duration::from_millis(300)).await;
        busy.write_all(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n")
            .await
            .unwrap();
        // Let both connections be polled once (waker registered).
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(drain.live(), 2);
        tokio::time::timeout(Duration::from_secs(5), drain.shutdown())
            .await
            .unwrap();
        // The request in flight got its answer, then the connection closed.
        let mut got = Vec::new();
        busy.read_to_end(&mut got).await.unwrap();
        let got = String::from_utf8_lossy(&got);
        assert!(got.starts_with("HTTP/1.1 200 OK"), "{got}");
        assert!(got.ends_with("done"), "{got}");
        let mut rest = Vec::new();
        assert_eq!(idle.read_to_end(&mut rest).await.unwrap(), 0);
        idle_task.await.unwrap();
        busy_task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_with_no_connections_returns_at_once() {
        let drain = Drain::new();
        let (client, task) = connection(&drain, Duration::ZERO).await;
        drop(client);
        task.await.unwrap();
        assert_eq!(drain.live(), 0);
        tokio::time::timeout(Duration::from_secs(1), drain.shutdown())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_connection_never_polled_before_the_drain_still_shuts_down() {
        let drain = Drain::new();
        let (mut client, task) = {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let client = TcpStream::connect(listener.local_addr().unwrap())
                .await
                .unwrap();
            let (stream, _) = listener.accept().await.unwrap();
            let service = service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Empty::<
                    bytes::Bytes,
                >::new()))
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            let watched = drain.watch(conn);
            // Started only after the drain began.
            (client, watched)
        };
        let shutdown = tokio::spawn(drain.shutdown());
        tokio::time::sleep(Duration::from_millis(20)).await;
        let _ = task.await;
        tokio::time::timeout(Duration::from_secs(1), shutdown)
            .await
            .unwrap()
            .unwrap();
        let mut rest = Vec::new();
        assert_eq!(client.read_to_end(&mut rest).await.unwrap(), 0);
    }
}
