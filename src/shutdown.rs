//! Stopping: the operating system's request to stop (SIGTERM, SIGINT) and
//! the in-process shutdown flag that every long-running task watches.
//!
//! `grayproxy run`, `grayproxy demo` and `status --watch` wait for
//! [`wait_for_termination`]; the accept loops, the reload watcher, the ramp
//! driver and the demo's helpers stop when [`shutdown_signalled`] resolves.

use tokio::sync::watch;

/// Resolves when `shutdown` flips to true (or its sender is gone, so a task
/// never outlives the app that started it).
pub async fn shutdown_signalled(shutdown: &mut watch::Receiver<bool>) {
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            return;
        }
    }
}

/// Resolves on SIGTERM or SIGINT (Ctrl-C where there are no Unix signals).
pub async fn wait_for_termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn resolves_when_the_flag_turns_true_or_the_sender_is_gone() {
        let (tx, mut rx) = watch::channel(false);
        let waiting = tokio::time::timeout(Duration::from_secs(1), shutdown_signalled(&mut rx));
        assert!(waiting.await.is_err(), "must wait while the flag is false");
        let _ = tx.send(true);
        shutdown_signalled(&mut rx).await;
        // Already true: resolves at once, every time.
        shutdown_signalled(&mut rx).await;

        let (tx, mut rx) = watch::channel(false);
        drop(tx);
        shutdown_signalled(&mut rx).await;
    }
}
