//! `server.workers` other than 1: the proxy listener served by N threads,
//! each with its own current-thread tokio runtime and its own listening
//! socket on the same address (`SO_REUSEPORT`), the way nginx runs its
//! workers. The kernel spreads new connections over the sockets; a client
//! connection, its requests and the upstream connections it opens then stay
//! on one thread, with no work-stealing queues between them. tokio's
//! multi-thread runtime with one accept loop, used before, moved every
//! request between threads at least twice.
//!
//! The admin API, the ramp driver, reloads and fleet mode stay on the
//! runtime that started the [`App`](crate::app::App).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{oneshot, watch, Semaphore};

use crate::proxy::runtime::Runtime;
use crate::server;
use crate::tls::ServerTls;

/// The listen backlog of each worker's socket (tokio's own default).
const BACKLOG: u32 = 1024;

/// How many proxy threads `workers` asks for: 0 is one per core.
pub fn thread_count(workers: usize) -> usize {
    match workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
}

/// The running proxy threads.
pub struct ProxyWorkers {
    /// The address every worker listens on (the bound port when the config
    /// asked for port 0).
    pub addr: SocketAddr,
    /// One per thread, resolved when the thread has drained and stopped.
    stopped: Vec<oneshot::Receiver<()>>,
    /// Held while the workers run: closing it stops them (see [`start`]).
    abort: watch::Sender<bool>,
}

impl ProxyWorkers {
    /// Resolves when every proxy thread has drained and stopped.
    pub async fn stopped(self) {
        for done in self.stopped {
            let _ = done.await;
        }
        drop(self.abort);
    }
}

/// Starts `count` proxy threads listening on `addr`. They stop when
/// `shutdown` turns true or its sender is dropped, after the usual drain.
/// On a bind error the threads already started are stopped through a
/// channel of their own, since the caller's `shutdown` stays open.
pub async fn start(
    count: usize,
    addr: SocketAddr,
    runtime: &Arc<Runtime>,
    shutdown: &watch::Receiver<bool>,
    tls: Option<Arc<ServerTls>>,
) -> io::Result<ProxyWorkers> {
    claim(addr)?;
    // Workers started so far stop on this if a later one cannot bind.
    let (abort, abort_rx) = watch::channel(false);
    // `max_connections` counts the proxy's connections, not each thread's.
    let limit = server::connection_limit(runtime);
    let mut bound = addr;
    let mut stopped = Vec::with_capacity(count);
    for i in 0..count {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let worker = Worker {
            index: i,
            addr: bound,
            runtime: runtime.clone(),
            shutdown: shutdown.clone(),
            abort: abort_rx.clone(),
            tls: tls.clone(),
            limit: limit.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("proxy-worker-{i}"))
            .spawn(move || worker.run(ready_tx, done_tx));
        let result = match spawned {
            Ok(_) => ready_rx
                .await
                .unwrap_or_else(|_| Err(io::Error::other("proxy thread ended at start"))),
            Err(e) => Err(e),
        };
        match result {
            Ok(local) => bound = local,
            Err(e) => {
                let _ = abort.send(true);
                return Err(e);
            }
        }
        stopped.push(done_rx);
    }
    Ok(ProxyWorkers {
        addr: bound,
        stopped,
        abort,
    })
}

/// What one proxy thread needs.
struct Worker {
    /// 0, 1, …: picks the thread's shard of the upstream idle pools.
    index: usize,
    addr: SocketAddr,
    runtime: Arc<Runtime>,
    shutdown: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
    tls: Option<Arc<ServerTls>>,
    limit: Arc<Semaphore>,
}

impl Worker {
    /// The thread's body: binds, reports the bound address (or the error)
    /// on `ready`, serves until shutdown, and says so on `done`.
    fn run(self, ready: oneshot::Sender<io::Result<SocketAddr>>, done: oneshot::Sender<()>) {
        crate::proxy::upstream::use_pool_shard(self.index + 1);
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        rt.block_on(async move {
            let listener = match listen(self.addr) {
                Ok(l) => l,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(listener.local_addr());
            let stop = either(self.shutdown, self.abort);
            server::serve_proxy(listener, self.runtime, stop, self.tls, self.limit).await;
        });
        // The runtime (and every connection task left on it) goes before
        // the thread says it is done.
        drop(rt);
        let _ = done.send(());
    }
}

/// A listening socket on `addr` that shares the port with the other
/// workers' (`SO_REUSEPORT`; the kernel balances new connections).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    #[cfg(unix)]
    socket.set_reuseport(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Fails when another process already listens on `addr`. `SO_REUSEPORT`
/// would otherwise let a second grayproxy (same user) join the port, and the
/// kernel would split the clients between two proxies with two configs
/// without a word. A plain bind (no `SO_REUSEPORT`) fails on a port held by
/// anyone; it is closed again at once, so the workers' sockets can bind.
/// (A process that binds in the microseconds between is not caught.)
fn claim(addr: SocketAddr) -> io::Result<()> {
    if addr.port() == 0 {
        return Ok(()); // a fresh port each bind: nobody else has it
    }
    std::net::TcpListener::bind(addr).map(drop)
}

/// A shutdown receiver that turns true when either input does (or closes).
fn either(mut a: watch::Receiver<bool>, mut b: watch::Receiver<bool>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        tokio::select! {
            () = crate::shutdown::shutdown_signalled(&mut a) => {}
            () = crate::shutdown::shutdown_signalled(&mut b) => {}
            () = tx.closed() => return,
        }
        let _ = tx.send(true);
    });
    rx
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn zero_workers_is_one_per_core() {
        assert!(thread_count(0) >= 1);
        assert_eq!(thread_count(3), 3);
    }

    /// Two sockets bind the same port; a third socket without
    /// `SO_REUSEPORT` cannot (the group is closed to other users).
    #[tokio::test]
    async fn workers_share_one_port() {
        let first = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = first.local_addr().unwrap();
        let second = listen(addr).unwrap();
        assert_eq!(second.local_addr().unwrap(), addr);
        assert!(std::net::TcpListener::bind(addr).is_err());
    }

    /// A port another process's `SO_REUSEPORT` group holds is refused
    /// before any worker joins it; a free one is claimed and released.
    #[tokio::test]
    async fn a_port_held_elsewhere_is_refused() {
        let other = listen("127.0.0.1:0".parse().unwrap()).unwrap();
        let addr = other.local_addr().unwrap();
        let err = claim(addr).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse);
        drop(other);
        claim(addr).unwrap();
        // Released: the workers' sockets bind it afterwards.
        let worker = listen(addr).unwrap();
        assert_eq!(worker.local_addr().unwrap(), addr);
    }
}
