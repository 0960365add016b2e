//! Work that allocates much and must not run on a runtime worker (parsing,
//! validating and indexing a large config; building a snapshot), on a
//! short-lived thread of its own, with what mimalloc needs to give the
//! freed memory back to the OS.

use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How long a loading thread outlives its work when the work allocated
/// much: longer than mimalloc's purge delay for freed memory (10 ms for
/// pages, 100 ms for whole segments). Measured with 10,000 routes, 3 s
/// released no more than this does.
const LINGER: Duration = Duration::from_millis(250);

/// mimalloc's delay before it returns a freed segment to the OS (its purge
/// delay, 10 ms, times its arena multiplier, 10), with a margin.
const ARENA_PURGE_DELAY: Duration = Duration::from_millis(150);

/// How many sweeps follow a loading thread's exit.
const SWEEPS: usize = 3;

/// Runs `work` on a thread of its own, with the tokio runtime of the caller
/// (if any) entered, so that what `work` builds may start tasks (health
/// checkers). When `work` returns true (it allocated and freed much), the
/// thread lingers [`LINGER`] before it exits, and [`sweep_later`] follows.
/// Gives `work` back when no thread could be started.
///
/// Parsing allocates many times the file's size (the TOML document keeps
/// every key's and value's span: about 60 MiB for a 10,000-route file) and
/// frees it at the end. mimalloc gives freed memory back to the OS only
/// after a delay, and only when the allocator next works on that memory or
/// a thread exits; on the proxy's own thread that never happened, and RSS
/// stayed at the parse's peak. A thread that exits after the delay has its
/// freed memory released. And a runtime worker that parses, validates and
/// indexes a large file serves nobody meanwhile (≈ 1 s for 10,000 routes).
pub fn on_load_thread<W>(work: W) -> Result<(), W>
where
    W: FnOnce() -> bool + Send + 'static,
{
    let slot = Arc::new(Mutex::new(Some(work)));
    let theirs = slot.clone();
    let handle = tokio::runtime::Handle::try_current().ok();
    let spawned = std::thread::Builder::new()
        .name("config-load".into())
        .spawn(move || {
            let work = theirs.lock().unwrap_or_else(|p| p.into_inner()).take();
            let allocated_much = work.is_some_and(|work| {
                let _entered = handle.as_ref().map(tokio::runtime::Handle::enter);
                work()
            });
            drop(handle);
            if allocated_much {
                std::thread::sleep(LINGER);
                sweep_later();
            }
        });
    match spawned {
        Ok(_) => Ok(()),
        // The thread's closure is gone, and `work` with it only if it ran.
        Err(_) => match slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
            Some(work) => Err(work),
            None => Ok(()),
        },
    }
}

/// Runs `work` on a loading thread ([`on_load_thread`], lingering after it)
/// and awaits its result without blocking the runtime; on this thread when
/// none could be started. `None` when the work panicked.
pub async fn off_worker<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let job = move || {
        let _ = tx.send(work());
        true
    };
    if let Err(job) = on_load_thread(job) {
        job();
    }
    rx.await.ok()
}

/// Starts a thread that, [`SWEEPS`] times, waits [`ARENA_PURGE_DELAY`] and
/// lets a short-lived thread exit.
///
/// The segments a loading thread freed go back to mimalloc's arena, and
/// from there to the OS only when some thread next frees arena memory or
/// exits past the delay (`_mi_arenas_collect`, `_mi_abandoned_collect`);
/// on an idle proxy none does. An exiting thread also frees or purges the
/// abandoned segments it visits, which schedules more, hence a few rounds.
/// Without `unsafe` (mimalloc's `mi_collect`), a thread's exit is the way
/// to ask for it.
fn sweep_later() {
    let _ = std::thread::Builder::new()
        .name("config-sweep".into())
        .spawn(|| {
            for _ in 0..SWEEPS {
                std::thread::sleep(ARENA_PURGE_DELAY);
                let exiting = std::thread::Builder::new()
                    .name("config-sweep".into())
                    // An allocation gives the thread a heap, whose teardown
                    // at exit is what collects.
                    .spawn(|| drop(std::hint::black_box(vec![0_u8; 64])));
                if let Ok(thread) = exiting {
                    let _ = thread.join();
                }
            }
        });
}

/// Drops `old` here once nothing else holds it (polled, for at most `wait`;
/// after that the last holder frees it). The last request on a replaced
/// snapshot would otherwise free 10,000 routes' config on a worker.
pub fn release<T>(old: Arc<T>, wait: Duration) {
    const POLL: Duration = Duration::from_millis(5);
    let mut polls = wait.as_millis() / POLL.as_millis();
    while Arc::strong_count(&old) > 1 && polls > 0 {
        std::thread::sleep(POLL);
        polls -= 1;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used)]
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn work_runs_on_another_thread_inside_the_callers_runtime() {
        let caller = std::thread::current().id();
        let (ran_on, spawned) = off_worker(|| {
            // Tasks can be started from there (the snapshot build starts
            // health checkers).
            let task = tokio::spawn(async { 7 });
            (std::thread::current().id(), task)
        })
        .await
        .expect("the work ran");
        assert_ne!(ran_on, caller);
        assert_eq!(spawned.await.ok(), Some(7));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panicking_work_is_none_not_a_hang() {
        let answer: Option<u8> = off_worker(|| panic!("a bug in the work")).await;
        assert_eq!(answer, None);
    }

    #[test]
    fn release_returns_once_the_other_holder_lets_go() {
        let old = Arc::new(1);
        let held = old.clone();
        let holder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            drop(held);
        });
        let weak = Arc::downgrade(&old);
        release(old, Duration::from_secs(30));
        // Released here, not later by the holder.
        assert!(weak.upgrade().is_none());
        let _ = holder.join();
    }

    #[test]
    fn release_gives_up_after_its_wait() {
        let old = Arc::new(1);
        let kept = old.clone();
        release(old, Duration::from_millis(20));
        assert_eq!(Arc::strong_count(&kept), 1);
    }
}
