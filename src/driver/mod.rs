//! The ramp's thin async driver: one tokio task per route with a ramp. It
//! owns the timers and the files; every decision is made by the pure
//! [`RampState`](crate::ramp::state::RampState), the driver only reports
//! what it observed (ticks, KPI rounds, commands, reloads, failed or
//! recovered writes) as events and carries out the effects.
//!
//! * Every `tick` the task cuts a tick (`RouteRuntime::take_tick`), feeds it
//!   to the state machine and carries out the effects: `SetWeight` → the live
//!   weight (and the tick timer restarts, so the next tick is all at the new
//!   weight), `Audit` → the store's audit log + a log line, `Persist` → the
//!   state file. An operator command first cuts the tick so far, so no tick
//!   mixes two weights.
//! * Persistence gates progress: a new state that **raises** the canary
//!   weight (advance, promote, resume from a rollback) is adopted only after
//!   its audit records and the state file are stored. When that fails the
//!   driver keeps the last stored state and reports `PersistFailed` (the
//!   state machine holds, paused; rollback protection stays on), and
//!   `PersistRecovered` after the next successful write. A new state that
//!   lowers or keeps the weight (rollback, pause, evidence) is adopted even
//!   when the write fails: that is the safe direction. Every failure is
//!   logged and shown as the ramp's `error` in `/status`.
//! * Start: the route's stored state is loaded and adopted (a restart, even
//!   after `kill -9`, resumes exactly); none → a new ramp (baseline first);
//!   a corrupt file is moved aside and reported as `LoadFailed` (paused at 0 %).
//! * Reloads (the app's reload broadcast): a changed canary starts a new
//!   ramp; a changed policy keeps the state; new routes with a ramp get a
//!   task; removed routes and removed ramps stop theirs (the file's weight
//!   applies again).
//!
//! Seams for a replicated ramp: the driver stores through
//! [`RampStore`](crate::persist::RampStore) only, and `RouteDriver::adopt`
//! takes a state decided elsewhere as it is (weight applied, status
//! published, nothing stored). A follower would call it on every state its
//! leader wrote instead of feeding events.
//!
//! Wall time for the state machine is unix ms measured as the start time
//! plus tokio's monotonic clock, so paused-time tests work. See
//! `docs/ramp.md` for what users see.

mod fleet;
pub mod handle;
mod kpi_task;
mod route;
mod supervisor;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::Instant;

use crate::config::types::{Config, Route};
use crate::config::ConfigDiff;
use crate::driver::handle::{CommandRequest, RampHandle};
use crate::persist::RampStore;
use crate::proxy::runtime::Runtime;
use crate::ramp::Timestamp;

/// The ramp driver, built but not running: [`Driver::run`] is its task.
pub struct Driver {
    supervisor: supervisor::Supervisor,
    requests: mpsc::Receiver<CommandRequest>,
    reloads: broadcast::Receiver<Arc<ConfigDiff>>,
}

impl Driver {
    /// A driver for every route with a ramp in `runtime`, following
    /// `reloads`, keeping state in `store`, stopping at `shutdown`; and the
    /// handle that sends it operator commands.
    pub fn new(
        runtime: Arc<Runtime>,
        store: Arc<dyn RampStore>,
        reloads: broadcast::Receiver<Arc<ConfigDiff>>,
        shutdown: watch::Receiver<bool>,
    ) -> (Driver, RampHandle) {
        let (handle, requests) = RampHandle::channel();
        let driver = Driver {
            supervisor: supervisor::Supervisor::new(runtime, store, shutdown),
            requests,
            reloads,
        };
        (driver, handle)
    }

    /// Fleet mode: the ramps' state lives in the fleet's etcd (see
    /// `docs/fleet.md`); only the leader judges.
    pub fn with_fleet(mut self, link: crate::fleet::link::FleetLink) -> Driver {
        self.supervisor.fleet = Some(link);
        self
    }

    /// Runs until shutdown. With a `delay` the ramps take over their
    /// routes' weights only after it (commands meanwhile are answered
    /// [`CommandError::Stopped`](crate::ramp::command::CommandError::Stopped)).
    pub async fn run(self, delay: Duration) {
        self.supervisor
            .run(self.requests, self.reloads, delay)
            .await;
    }
}

/// What identifies a route's canary: its upstream's name and endpoints.
pub fn canary_fingerprint(config: &Config, route: &Route) -> String {
    let u = config.upstream(route.canary);
    let eps: Vec<String> = u
        .endpoints
        .iter()
        .map(|e| format!("{}{}", if e.tls { "https://" } else { "" }, e.authority()))
        .collect();
    format!("{} [{}]", u.name, eps.join(", "))
}

/// Runs blocking file work: on a multi-threaded runtime the worker hands
/// its other tasks over first (`block_in_place`); elsewhere (current-thread
/// test runtimes) it just runs.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// Unix ms = wall time at start + tokio's monotonic time since.
struct Clock {
    wall0: Timestamp,
    t0: Instant,
}

impl Clock {
    fn new() -> Clock {
        let wall0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        Clock {
            wall0,
            t0: Instant::now(),
        }
    }

    fn now(&self) -> Timestamp {
        self.at(Instant::now())
    }

    /// `t` in unix ms (instants before the clock's start map to its start).
    fn at(&self, t: Instant) -> Timestamp {
        let since = t.saturating_duration_since(self.t0).as_millis();
        self.wall0
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }
}

#[cfg(test)]
mod tests;
