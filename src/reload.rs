//! Hot reload: on file change (debounced) and on SIGHUP, validate the whole
//! file, then swap one snapshot atomically. A bad file leaves the old config
//! live and is reported in logs, `/status` and the reload metric.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::{self, ConfigDiff};
use crate::metrics::ReloadResult;
use crate::proxy::runtime::Runtime;
use crate::shutdown::shutdown_signalled;

/// Editors write a file in several steps; wait this long after the last
/// event before reading it.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Longest wait for a quiet moment after a change.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// How long the loading thread of [`load_isolated`] outlives its work:
/// longer than mimalloc's purge delay for freed memory (10 ms for pages,
/// 100 ms for whole segments). Measured with 10,000 routes, 3 s released
/// no more than this does.
const LINGER: Duration = Duration::from_millis(250);

/// [`config::load`] on a thread of its own, which exits a little after.
///
/// Parsing allocates many times the file's size (the TOML document keeps
/// every key's and value's span: about 60 MiB for a 10,000-route file) and
/// frees it at the end. mimalloc gives freed memory back to the OS only
/// after a delay, and only when the allocator next works on that memory or
/// a thread exits; on the proxy's own thread that never happened, and
/// RSS stayed at the parse's peak (155 MiB with 10,000 routes, 80 MiB of
/// it live). A thread that exits after the delay has its freed memory
/// released. The caller does not wait for the linger.
pub fn load_isolated(path: &Path) -> Result<config::Loaded, config::ConfigErrors> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let owned = path.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("config-load".into())
        .spawn(move || {
            let _ = tx.send(config::load(&owned));
            std::thread::sleep(LINGER);
        });
    match spawned.ok().and_then(|_| rx.recv().ok()) {
        Some(loaded) => loaded,
        // No thread (or it died): load here, as before.
        None => config::load(path),
    }
}

/// The file's length and a 64-bit hash of its bytes: tells an edit from an
/// event that left the file as it was, without keeping a copy of a large
/// file (2.2 MiB for 10,000 routes).
fn fingerprint(path: &Path) -> Option<(usize, u64)> {
    use std::hash::Hasher;
    let bytes = std::fs::read(path).ok()?;
    let mut h = std::hash::DefaultHasher::new();
    h.write(&bytes);
    Some((bytes.len(), h.finish()))
}

/// Loads `path`, and swaps it in when it is valid and needs no restart.
/// Returns what changed, for side effects (new ramps).
pub fn reload(runtime: &Runtime, path: &Path) -> Result<ConfigDiff, String> {
    let outcome = load_isolated(path).map_err(|e| e.to_string()).and_then(|loaded| {
        let snap = runtime.snapshot();
        let diff = ConfigDiff::between(&snap.config, &loaded.config);
        if !diff.can_apply() {
            return Err(format!(
                "error: {}: {} changed; restart grayproxy to apply it (nothing in this file was applied)",
                path.display(),
                diff.restart_required.join(", ")
            ));
        }
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        runtime.install(loaded.config);
        Ok(diff)
    });
    let mut last_error = runtime.last_error.lock().unwrap_or_else(|p| p.into_inner());
    match &outcome {
        Ok(_) => {
            runtime.metrics.record_reload(ReloadResult::Ok);
            *last_error = None;
            tracing::info!(path = %path.display(), "config reloaded");
        }
        Err(message) => {
            runtime.metrics.record_reload(ReloadResult::Error);
            *last_error = Some(message.clone());
            tracing::error!(path = %path.display(), "config rejected, the previous config stays live:\n{message}");
        }
    }
    outcome
}

/// Watches the config file and SIGHUP until `shutdown`; every applied reload
/// is announced on `applied`.
///
/// The file watch, the SIGHUP handler and the "last seen" content are set up
/// *before* this returns (it must be called inside the tokio runtime), not
/// when the returned task is first polled: otherwise an edit made right after
/// `App::start` returns could be missed for good, and a SIGHUP
/// sent once the "listening" line is logged could still find the default
/// disposition and kill the process.
pub fn watch_config(
    runtime: Arc<Runtime>,
    path: PathBuf,
    applied: broadcast::Sender<Arc<ConfigDiff>>,
    mut shutdown: watch::Receiver<bool>,
) -> impl std::future::Future<Output = ()> + Send + 'static {
    let (events_tx, mut events) = mpsc::unbounded_channel::<()>();
    // Watch the directory, not the file: editors and Kubernetes ConfigMaps
    // replace the file (rename, symlink swap) rather than write into it.
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        // Opening or reading something in the directory changes nothing (the
        // ramp fsyncs its state directory, a child of this one, every tick).
        if event.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_))) {
            let _ = events_tx.send(());
        }
    })
    .and_then(|mut w| w.watch(&dir, RecursiveMode::NonRecursive).map(|()| w));
    let _watcher = match watcher {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the config directory; reload with SIGHUP");
            None
        }
    };
    let mut hangup = hangup_signal();
    let mut last_seen = fingerprint(&path);
    async move {
        let _watcher = _watcher;
        loop {
            let from_signal = tokio::select! {
                Some(()) = events.recv() => false,
                () = recv_hangup(&mut hangup) => true,
                () = shutdown_signalled(&mut shutdown) => return,
            };
            if !from_signal {
                // Debounce: swallow the burst of events one save produces, but
                // never for longer than MAX_DEBOUNCE (a busy directory must not
                // starve reloads).
                let give_up = tokio::time::Instant::now() + MAX_DEBOUNCE;
                loop {
                    tokio::select! {
                        Some(()) = events.recv() => continue,
                        () = tokio::time::sleep(DEBOUNCE) => break,
                        () = tokio::time::sleep_until(give_up) => break,
                    }
                }
                // Events in the directory that leave the file as it was (other
                // files, touch) are not reloads.
                let now = fingerprint(&path);
                if now == last_seen {
                    continue;
                }
                last_seen = now;
            } else {
                tracing::info!("SIGHUP: reloading config");
                last_seen = fingerprint(&path);
            }
            if let Ok(diff) = reload(&runtime, &path) {
                let _ = applied.send(Arc::new(diff));
            }
        }
    }
}

#[cfg(unix)]
fn hangup_signal() -> Option<tokio::signal::unix::Signal> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangup_signal() -> Option<()> {
    None
}

#[cfg(unix)]
async fn recv_hangup(signal: &mut Option<tokio::signal::unix::Signal>) {
    match signal {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(not(unix))]
async fn recv_hangup(_: &mut Option<()>) {
    std::future::pending::<()>().await;
}
