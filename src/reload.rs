//! Hot reload: on file change (debounced) and on SIGHUP, validate the whole
//! file, then swap one snapshot atomically. A bad file leaves the old config
//! live and is reported in logs, `/status` and the reload metric.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::sync::{broadcast, mpsc, watch};

use crate::config::types::Config;
use crate::config::{self, ConfigDiff};
use crate::metrics::{Metrics, ReloadResult};
use crate::proxy::runtime::{Runtime, Snapshot};
use crate::shutdown::shutdown_signalled;

mod isolate;

/// Editors write a file in several steps; wait this long after the last
/// event before reading it.
const DEBOUNCE: Duration = Duration::from_millis(300);

/// Longest wait for a quiet moment after a change.
const MAX_DEBOUNCE: Duration = Duration::from_secs(1);

/// How long a reload thread waits for requests still running on the old
/// snapshot before it lets go of it: the last holder frees the old config
/// (12 MiB in 10,000 routes' small allocations), better there than on a
/// worker between two requests.
const OLD_SNAPSHOT_WAIT: Duration = Duration::from_secs(1);

/// [`config::load`] on a thread of its own ([`isolate::on_load_thread`]),
/// which exits a little after. Blocks the caller until the file is loaded:
/// for start-up, before anything is served.
pub fn load_isolated(path: &Path) -> Result<config::Loaded, config::ConfigErrors> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    let owned = path.to_path_buf();
    let started = isolate::on_load_thread(move || {
        let _ = tx.send(config::load(&owned));
        true
    });
    match rx.recv().ok().filter(|_| started.is_ok()) {
        Some(loaded) => loaded,
        // No thread (or it died): load here, as before.
        None => config::load(path),
    }
}

/// [`Runtime::new`] on a loading thread: the first snapshot (10,000 routes'
/// state, metric cells and index) is built there, and the builder's freed
/// memory goes back to the OS with the thread's. `None` if it panicked.
pub async fn build_runtime(metrics: Metrics, config: Config) -> Option<Arc<Runtime>> {
    isolate::off_worker(move || Runtime::new(metrics, config)).await
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

/// What the watcher asks of a reload thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Trigger {
    /// SIGHUP: reload whatever the file holds.
    Signal,
    /// A change in the directory: reload only if the file's fingerprint
    /// differs from this one (the last one seen).
    Event(Option<(usize, u64)>),
}

impl Trigger {
    /// Whether the file, whose fingerprint is now `now`, is to be reloaded.
    fn needs_reload(self, now: Option<(usize, u64)>) -> bool {
        match self {
            Trigger::Signal => true,
            Trigger::Event(last_seen) => now != last_seen,
        }
    }
}

/// A reload thread's answer: the file's fingerprint, and the reload's
/// outcome (`None`: the file was as last seen, nothing was done).
type Answer = (Option<(usize, u64)>, Option<Result<ConfigDiff, String>>);

/// Reads the file's fingerprint and reloads it when `trigger` asks for it;
/// `answer` gets the outcome as soon as it is known (the swap done), then
/// the old snapshot is let go of. Blocking: runs on a loading thread.
/// True when it reloaded (and so allocated much).
fn reload_if_changed(
    runtime: &Runtime,
    path: &Path,
    trigger: Trigger,
    answer: impl FnOnce(Answer),
) -> bool {
    let now = fingerprint(path);
    if !trigger.needs_reload(now) {
        answer((now, None));
        return false;
    }
    if let Trigger::Event(_) = trigger {
        tracing::info!("config file changed: reloading");
    }
    let (outcome, old) = swap_in(runtime, path);
    answer((now, Some(outcome)));
    if let Some(old) = old {
        isolate::release(old, OLD_SNAPSHOT_WAIT);
    }
    true
}

/// [`reload_if_changed`] on a thread of its own, awaited without blocking
/// the runtime: requests keep being served (on a one-worker runtime too)
/// while a large file is parsed, validated, diffed and indexed; all they
/// share with the reload is the swap of one pointer.
async fn reload_off_worker(runtime: &Arc<Runtime>, path: &Path, trigger: Trigger) -> Answer {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let (rt, owned) = (runtime.clone(), path.to_path_buf());
    let job = move || {
        reload_if_changed(&rt, &owned, trigger, |answer| {
            let _ = tx.send(answer);
        })
    };
    if let Err(job) = isolate::on_load_thread(job) {
        // No thread: reload here, as before (the runtime stalls meanwhile).
        job();
    }
    match rx.await {
        Ok(answer) => answer,
        // The thread died without an answer (a bug).
        Err(_) => {
            let outcome = Err("error: the reload failed unexpectedly (see the log)".to_owned());
            record(runtime, path, &outcome);
            (None, Some(outcome))
        }
    }
}

/// Loads `path`, and swaps it in when it is valid and needs no restart.
/// Returns what changed, for side effects (new ramps). Blocking, and long
/// for a large file: the watcher runs it on a thread of its own.
pub fn reload(runtime: &Runtime, path: &Path) -> Result<ConfigDiff, String> {
    swap_in(runtime, path).0
}

/// [`reload`], returning the replaced snapshot too (when one was).
fn swap_in(runtime: &Runtime, path: &Path) -> (Result<ConfigDiff, String>, Option<Arc<Snapshot>>) {
    let mut old = None;
    let outcome = config::load(path).map_err(|e| e.to_string()).and_then(|loaded| {
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
        drop(snap);
        old = Some(runtime.install(loaded.config));
        Ok(diff)
    });
    record(runtime, path, &outcome);
    (outcome, old)
}

/// Logs a reload's outcome and counts it; keeps the error for `/status`.
fn record(runtime: &Runtime, path: &Path, outcome: &Result<ConfigDiff, String>) {
    let mut last_error = runtime.last_error.lock().unwrap_or_else(|p| p.into_inner());
    match outcome {
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
            let trigger = if from_signal {
                tracing::info!("SIGHUP: reloading config");
                Trigger::Signal
            } else {
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
                Trigger::Event(last_seen)
            };
            let (seen, outcome) = tokio::select! {
                answer = reload_off_worker(&runtime, &path, trigger) => answer,
                // The reload thread finishes on its own; nothing waits for it.
                () = shutdown_signalled(&mut shutdown) => return,
            };
            last_seen = seen;
            if let Some(Ok(diff)) = outcome {
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

#[cfg(test)]
mod tests {
    use super::Trigger;

    #[test]
    fn a_signal_always_reloads_an_event_only_a_changed_file() {
        let seen = Some((10, 42));
        assert!(Trigger::Signal.needs_reload(seen));
        assert!(Trigger::Signal.needs_reload(None));
        assert!(!Trigger::Event(seen).needs_reload(seen));
        assert!(Trigger::Event(seen).needs_reload(Some((10, 43))));
        // The file appeared, or went away.
        assert!(Trigger::Event(None).needs_reload(seen));
        assert!(Trigger::Event(seen).needs_reload(None));
        assert!(!Trigger::Event(None).needs_reload(None));
    }
}
