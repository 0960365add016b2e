//! The ramp's thin async driver: one tokio task per route with a ramp. It
//! owns the timers and the files; every decision is made by the pure
//! [`RampState`].
//!
//! * Every `tick` the task cuts a tick (`RouteRuntime::take_tick`), feeds it
//!   to the state machine and carries out the effects: `SetWeight` → the live
//!   weight (and the tick timer restarts, so the next tick is all at the new
//!   weight), `Audit` → `audit.jsonl` + a log line, `Persist` → the state file.
//!   An operator command first cuts the tick so far, so no tick mixes two
//!   weights.
//! * Persistence gates progress: effects that **raise** the canary weight
//!   (advance, promote, resume from a rollback) are carried out only after
//!   the audit record and the state file are on disk. When that fails, the
//!   ramp goes back to its last persisted state and holds there (paused,
//!   `waiting_for` says why; rollback protection stays on) until a write
//!   succeeds, then continues by itself. Effects that lower or keep the
//!   weight (rollback, pause, evidence) apply even when the write fails:
//!   that is the safe direction. Every failure is logged and shown as the
//!   ramp's `error` in `/status`.
//! * Start: the route's state file is loaded (a restart, even after
//!   `kill -9`, resumes exactly); none → a new ramp (baseline first); a
//!   corrupt file is moved aside and the ramp is paused at 0 % and reported.
//! * Reloads (`App::reloads`): a changed canary starts a new ramp; a changed
//!   policy keeps the state; new routes with a ramp get a task; removed
//!   routes and removed ramps stop theirs (the file's weight applies again).
//!
//! Wall time for the state machine is unix ms measured as the start time
//! plus tokio's monotonic clock, so paused-time tests work.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::app::App;
use crate::config::types::{Config, PrometheusCheck, RampPolicy, Route};
use crate::domain::CanaryWeight;
use crate::persist::{StateFile, Store, STATE_VERSION};
use crate::ramp::kpi::{KpiOutcome, KpiResult, PromClient, NO_DATA_BEFORE_PAUSE};
use crate::ramp::state::{Command, Effect, Phase, RampEvent, RampState, RampStatus};
use crate::ramp::Timestamp;
use crate::runtime::RouteRuntime;
use crate::shutdown::shutdown_signalled;

/// Why an operator command was not carried out.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CommandError {
    /// No route of that name in the live config.
    #[error("no route named `{0}`")]
    UnknownRoute(String),
    /// The route has no `[routes.ramp]`.
    #[error("route `{0}` has no ramp: add [routes.ramp] to its config to control it")]
    NoRamp(String),
    /// The command does not apply in the ramp's current state.
    #[error("cannot {command} route `{route}`: its ramp is {state}")]
    NotApplicable {
        /// The route.
        route: String,
        /// `pause`, `resume`, `promote` or `rollback`.
        command: &'static str,
        /// The ramp's state.
        state: &'static str,
    },
    /// The new state could not be persisted, so the command (which would
    /// raise the canary's weight) was not applied.
    #[error("{0}")]
    Persist(String),
    /// The driver is not running (shutting down).
    #[error("the ramp driver is not running")]
    Stopped,
}

/// The name of a command as used in URLs and the CLI.
pub fn command_name(c: Command) -> &'static str {
    match c {
        Command::Pause => "pause",
        Command::Resume => "resume",
        Command::Promote => "promote",
        Command::Rollback => "rollback",
    }
}

/// Parses `pause|resume|promote|rollback`.
pub fn parse_command(s: &str) -> Option<Command> {
    match s {
        "pause" => Some(Command::Pause),
        "resume" => Some(Command::Resume),
        "promote" => Some(Command::Promote),
        "rollback" => Some(Command::Rollback),
        _ => None,
    }
}

/// Sends operator commands to the running ramps. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RampHandle {
    tx: mpsc::Sender<SupervisorMsg>,
}

type Reply = oneshot::Sender<Result<RampStatus, CommandError>>;

#[derive(Debug)]
enum SupervisorMsg {
    Command(String, Command, Reply),
}

impl RampHandle {
    /// Applies `command` to `route`'s ramp; returns the ramp's new status.
    pub async fn command(&self, route: &str, command: Command) -> Result<RampStatus, CommandError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(SupervisorMsg::Command(route.to_string(), command, reply))
            .await
            .map_err(|_| CommandError::Stopped)?;
        answer.await.map_err(|_| CommandError::Stopped)?
    }
}

/// Starts the ramp driver beside `app` (one task per route with a ramp, and
/// a supervisor following reloads) and makes the admin API's mutating
/// endpoints use it. Call once, right after [`App::start`].
pub fn start(app: &mut App) -> RampHandle {
    let (tx, rx) = mpsc::channel(64);
    let handle = RampHandle { tx };
    let dir = app.runtime.snapshot().config.state.dir.clone();
    let supervisor = supervisor::Supervisor {
        runtime: app.runtime.clone(),
        store: Arc::new(Store::new(dir)),
        tasks: HashMap::new(),
        shutdown: app.shutdown_signal(),
    };
    let reloads = app.reloads.subscribe();
    app.spawn(supervisor.run(rx, reloads));
    app.set_ramp_handle(handle.clone());
    handle
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

enum RouteMsg {
    Command(Command, Reply),
    Config {
        policy: Box<RampPolicy>,
        canary: String,
        new_ramp: bool,
    },
    /// Stop; with `Some(w)` the route lost its ramp and goes back to the file's weight.
    Stop(Option<CanaryWeight>),
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
        let elapsed = u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.wall0.saturating_add(elapsed)
    }
}

/// One route's ramp task.
struct RouteDriver {
    name: String,
    rt: Arc<RouteRuntime>,
    store: Arc<Store>,
    policy: RampPolicy,
    canary: String,
    state: RampState,
    clock: Clock,
    /// The last persistence problem, shown in `/status`.
    error: Option<String>,
    /// A bad state file found at start: shown until an operator acts.
    load_problem: Option<String>,
    /// The in-memory state is ahead of the state file.
    dirty: bool,
    /// The driver paused the ramp because a raise could not be persisted.
    persist_hold: bool,
    /// A weight was set: restart the tick timer.
    weight_changed: bool,
    /// The business-KPI checks' bookkeeping.
    kpi: KpiGate,
}

/// The driver's view of the business-KPI checks (see [`crate::ramp::kpi`]).
#[derive(Default)]
struct KpiGate {
    /// The last round's results, for `/status`.
    results: Vec<KpiResult>,
    /// Consecutive rounds with a failing check.
    fail_streak: u32,
    /// Consecutive rounds with a check without data.
    no_data_streak: u32,
    /// When the weight last changed: rounds started before do not unblock.
    weight_since: Option<Instant>,
}

/// One round of KPI checks, as the query task sends it.
struct KpiRound {
    started: Instant,
    results: Vec<KpiResult>,
}

/// Queries every check each `interval` and sends the rounds to the driver.
fn spawn_kpi(
    name: &str,
    policy: &RampPolicy,
    tx: mpsc::Sender<KpiRound>,
) -> Option<JoinHandle<()>> {
    let url = policy.prometheus_url.clone()?;
    if policy.prometheus_checks.is_empty() {
        return None;
    }
    let checks = policy.prometheus_checks.clone();
    let period = policy.interval.max(std::time::Duration::from_millis(10));
    let route = name.to_string();
    Some(tokio::spawn(async move {
        let client = PromClient::new(&url);
        let mut every = tokio::time::interval_at(Instant::now() + period, period);
        every.set_missed_tick_behavior(MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let started = Instant::now();
            let mut results = Vec::with_capacity(checks.len());
            for c in &checks {
                results.push(client.check(&route, c).await);
            }
            if tx.send(KpiRound { started, results }).await.is_err() {
                return;
            }
        }
    }))
}

/// The KPI query task; aborted when dropped (replaced or the driver ends).
struct KpiTask(Option<JoinHandle<()>>);

impl KpiTask {
    fn replace(&mut self, task: Option<JoinHandle<()>>) {
        if let Some(old) = std::mem::replace(&mut self.0, task) {
            old.abort();
        }
    }
}

impl Drop for KpiTask {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

fn kpi_key(p: &RampPolicy) -> (Option<String>, Vec<PrometheusCheck>, std::time::Duration) {
    (
        p.prometheus_url.clone(),
        p.prometheus_checks.clone(),
        p.interval,
    )
}

impl RouteDriver {
    /// Loads (or starts) the route's ramp and publishes it.
    fn open(
        name: &str,
        rt: Arc<RouteRuntime>,
        store: Arc<Store>,
        (policy, canary): (RampPolicy, String),
        force_new: bool,
    ) -> RouteDriver {
        let mut d = RouteDriver {
            name: name.to_string(),
            rt,
            store,
            policy,
            canary,
            state: RampState::idle(),
            clock: Clock::new(),
            error: None,
            load_problem: None,
            dirty: false,
            persist_hold: false,
            weight_changed: false,
            kpi: KpiGate::default(),
        };
        let now = d.clock.now();
        match d.store.load(name, now) {
            Ok(Some(file)) => {
                tracing::info!(
                    route = name,
                    state = file.state.phase.as_str(),
                    step = file.state.step,
                    weight = file.state.weight().percent(),
                    "ramp resumed from its state file"
                );
                d.state = file.state;
                let new_ramp = force_new || file.canary != d.canary;
                if new_ramp {
                    tracing::info!(route = name, was = %file.canary, now = %d.canary, "the canary changed while grayproxy was down: new ramp");
                }
                // Re-anchors the step on a policy edited while down, or starts over.
                let _ = d.apply(RampEvent::ConfigChanged { new_ramp });
                if d.state.phase == Phase::Idle {
                    let _ = d.apply(RampEvent::Start);
                }
            }
            Ok(None) => {
                let _ = d.apply(RampEvent::Start);
            }
            Err(e) => d.hold_after_bad_file(&e.to_string()),
        }
        d.rt.set_weight(d.state.weight());
        d.block_until_kpi_passes();
        d.publish();
        d
    }

    fn has_kpi(&self) -> bool {
        self.policy.prometheus_url.is_some() && !self.policy.prometheus_checks.is_empty()
    }

    /// With KPI checks, the ramp may not advance until a round at the
    /// current weight passes.
    fn block_until_kpi_passes(&mut self) {
        self.kpi.weight_since = Some(Instant::now());
        self.kpi.fail_streak = 0;
        self.kpi.no_data_streak = 0;
        self.state.advance_blocked = self
            .has_kpi()
            .then(|| "waiting for the KPI checks to pass at this weight".to_string());
    }

    /// One round of KPI checks: block, unblock, roll back or pause.
    fn on_kpi(&mut self, round: KpiRound) {
        if !self.has_kpi() {
            self.kpi.results.clear();
            return;
        }
        self.kpi.results = round.results;
        if self.state.phase != Phase::Progressing {
            self.kpi.fail_streak = 0;
            self.kpi.no_data_streak = 0;
            return;
        }
        let mut fails = Vec::new();
        let mut no_data = Vec::new();
        for r in &self.kpi.results {
            match &r.outcome {
                KpiOutcome::Pass => {}
                KpiOutcome::Fail { reason } => fails.push(reason.clone()),
                KpiOutcome::NoData { reason } => no_data.push(reason.clone()),
            }
        }
        let n = self.policy.failures_before_rollback;
        self.kpi.fail_streak = if fails.is_empty() {
            0
        } else {
            self.kpi.fail_streak + 1
        };
        self.kpi.no_data_streak = if no_data.is_empty() {
            0
        } else {
            self.kpi.no_data_streak + 1
        };
        if !fails.is_empty() {
            let fails = fails.join("; ");
            if self.kpi.fail_streak >= n {
                let reason = format!(
                    "KPI check failed {} times in a row: {fails}",
                    self.kpi.fail_streak
                );
                tracing::warn!(route = %self.name, "{reason}; rolling back");
                let _ = self.apply(RampEvent::KpiRollback(reason));
                return;
            }
            self.state.advance_blocked = Some(format!(
                "failing ({} of {n} before rollback): {fails}",
                self.kpi.fail_streak
            ));
        } else if !no_data.is_empty() {
            let no_data = no_data.join("; ");
            if self.kpi.no_data_streak >= NO_DATA_BEFORE_PAUSE {
                let reason = format!(
                    "KPI checks without data {} times in a row (never promoted blind): {no_data}",
                    self.kpi.no_data_streak
                );
                tracing::warn!(route = %self.name, "{reason}; pausing");
                let _ = self.apply(RampEvent::KpiPause(reason));
                return;
            }
            self.state.advance_blocked = Some(format!(
                "holding, no data ({} of {NO_DATA_BEFORE_PAUSE} before pausing): {no_data}",
                self.kpi.no_data_streak
            ));
        } else if self.kpi.weight_since.map_or(true, |t| round.started >= t) {
            self.state.advance_blocked = None;
        }
    }

    /// A corrupt or unreadable state file: paused at 0 %, reported, never 100 %.
    fn hold_after_bad_file(&mut self, problem: &str) {
        tracing::error!(route = %self.name, "{problem}; the ramp is paused at 0 % until an operator resumes it (a new ramp from the baseline)");
        let now = self.clock.now();
        let mut fx = self.state.on(RampEvent::Start, now, &self.policy);
        fx.extend(
            self.state
                .on(RampEvent::Command(Command::Pause), now, &self.policy),
        );
        let reason = format!("{problem}; `resume` starts a new ramp");
        self.state.pause_reason = Some(reason.clone());
        for e in &mut fx {
            if let Effect::Audit(rec) = e {
                if rec.action == crate::ramp::Action::Pause {
                    rec.reason.clone_from(&reason);
                }
            }
        }
        if let Some(last) = self.state.decisions.back_mut() {
            last.reason.clone_from(&reason);
        }
        let _ = self.commit(&fx);
        self.carry_out(fx);
        self.load_problem = Some(problem.to_string());
    }

    async fn run(mut self, mut rx: mpsc::Receiver<RouteMsg>, mut shutdown: watch::Receiver<bool>) {
        let mut timer = self.timer();
        let (kpi_tx, mut kpi_rx) = mpsc::channel(4);
        let mut kpi_task = KpiTask(spawn_kpi(&self.name, &self.policy, kpi_tx.clone()));
        loop {
            // The state file is fsynced (about 6 ms on a plain disk):
            // file work runs where it does not stall the proxy's workers.
            tokio::select! {
                _ = timer.tick() => {
                    let counts = self.rt.take_tick();
                    let _ = blocking(|| self.apply(RampEvent::Tick(counts)));
                }
                Some(round) = kpi_rx.recv() => {
                    blocking(|| self.on_kpi(round));
                }
                msg = rx.recv() => match msg {
                    Some(RouteMsg::Command(c, reply)) => {
                        let _ = reply.send(blocking(|| self.command(c)));
                    }
                    Some(RouteMsg::Config { policy, canary, new_ramp }) => {
                        let retime = policy.tick != self.policy.tick;
                        let kpi_changed = kpi_key(&policy) != kpi_key(&self.policy);
                        blocking(|| self.reconfigure(*policy, canary, new_ramp));
                        if retime {
                            timer = self.timer();
                        }
                        if kpi_changed {
                            kpi_task.replace(spawn_kpi(&self.name, &self.policy, kpi_tx.clone()));
                            self.kpi.results.clear();
                            self.block_until_kpi_passes();
                        }
                    }
                    Some(RouteMsg::Stop(file_weight)) => {
                        blocking(|| self.stop(file_weight));
                        return;
                    }
                    None => return,
                },
                () = shutdown_signalled(&mut shutdown) => {
                    blocking(|| self.stop(None));
                    return;
                }
            }
            if std::mem::take(&mut self.weight_changed) {
                timer.reset();
            }
            self.publish();
        }
    }

    fn timer(&self) -> Interval {
        let tick = self.policy.tick.max(std::time::Duration::from_millis(1));
        let mut t = tokio::time::interval_at(Instant::now() + tick, tick);
        t.set_missed_tick_behavior(MissedTickBehavior::Delay);
        t
    }

    fn command(&mut self, c: Command) -> Result<RampStatus, CommandError> {
        // Cut the tick so far: those requests ran at the old weight.
        let counts = self.rt.take_tick();
        let _ = self.apply(RampEvent::Tick(counts));
        if c == Command::Pause && self.persist_hold {
            // The operator's pause replaces the driver's persistence hold.
            self.persist_hold = false;
            self.state.pause_reason = None;
            let _ = self.save();
            self.publish();
            return Ok(self.status());
        }
        let state = self.state.phase;
        match self.apply(RampEvent::Command(c)) {
            Ok(true) => {
                // The operator has acted: on the bad file, and on any hold.
                self.persist_hold = false;
                self.load_problem = None;
                self.publish();
                Ok(self.status())
            }
            Ok(false) => Err(CommandError::NotApplicable {
                route: self.name.clone(),
                command: command_name(c),
                state: state.as_str(),
            }),
            Err(e) => {
                self.publish();
                Err(CommandError::Persist(format!(
                    "not applied: {e}; the ramp stays where it was"
                )))
            }
        }
    }

    fn reconfigure(&mut self, policy: RampPolicy, canary: String, new_ramp: bool) {
        let new_ramp = new_ramp || canary != self.canary;
        if !new_ramp && policy == self.policy {
            return;
        }
        self.policy = policy;
        self.canary = canary;
        if new_ramp {
            tracing::info!(route = %self.name, canary = %self.canary, "canary changed: new ramp");
            self.persist_hold = false;
        }
        let _ = self.apply(RampEvent::ConfigChanged { new_ramp });
    }

    fn stop(&mut self, file_weight: Option<CanaryWeight>) {
        if self.dirty {
            let _ = self.save();
        }
        if let Some(w) = file_weight {
            tracing::info!(route = %self.name, weight = w.percent(), "ramp removed from the config; the file's weight applies");
            self.rt.set_weight(w);
            *self
                .rt
                .ramp_status
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = None;
            self.rt.metrics.set_ramp_state(Phase::Idle.as_str());
        }
    }

    /// Feeds one event to the state machine and carries out its effects.
    /// `Ok(true)` when something changed; `Err` when a raise of the weight
    /// could not be persisted and was undone.
    fn apply(&mut self, event: RampEvent) -> Result<bool, String> {
        let prev = self.state.clone();
        let now = self.clock.now();
        let tick = match &event {
            RampEvent::Tick(c) => Some(c.clone()),
            _ => None,
        };
        let fx = self.state.on(event, now, &self.policy);
        if fx.is_empty() {
            if self.dirty && self.save().is_ok() && self.persist_hold {
                self.end_persist_hold();
            }
            return Ok(false);
        }
        match self.commit(&fx) {
            Ok(()) => {
                self.carry_out(fx);
                if self.persist_hold {
                    self.end_persist_hold();
                }
                Ok(true)
            }
            Err(e) if self.state.weight_bp > prev.weight_bp => {
                // Never raise the canary on a state that is not on disk.
                self.state = prev;
                if let Some(counts) = tick {
                    self.start_persist_hold(&e);
                    // Keep the tick's evidence: a paused ramp still rolls back.
                    let fx = self.state.on(RampEvent::Tick(counts), now, &self.policy);
                    self.carry_out(fx);
                }
                self.dirty = true;
                Err(e)
            }
            Err(_) => {
                self.carry_out(fx);
                self.dirty = true;
                Ok(true)
            }
        }
    }

    /// Writes the effects' audit records, then (when asked) the state file.
    fn commit(&mut self, fx: &[Effect]) -> Result<(), String> {
        let mut result = Ok(());
        for e in fx {
            if let Effect::Audit(rec) = e {
                if let Err(err) = self.store.append_audit(&self.name, rec) {
                    result = Err(err.to_string());
                }
            }
        }
        if fx.contains(&Effect::Persist) || self.dirty {
            if let Err(err) = self.save() {
                result = Err(err);
            }
        }
        if let Err(e) = &result {
            tracing::error!(route = %self.name, error = %e, "cannot persist the ramp state; the proxy keeps serving, the ramp does not advance");
            self.error = Some(format!("cannot persist the ramp state: {e}"));
        }
        result
    }

    fn save(&mut self) -> Result<(), String> {
        let file = StateFile {
            version: STATE_VERSION,
            route: self.name.clone(),
            canary: self.canary.clone(),
            saved_at_ms: self.clock.now(),
            state: self.state.clone(),
        };
        match self.store.save(&file) {
            Ok(()) => {
                if self.dirty {
                    tracing::info!(route = %self.name, "ramp state persisted again");
                }
                self.dirty = false;
                self.error = None;
                Ok(())
            }
            Err(e) => {
                self.dirty = true;
                let msg = e.to_string();
                self.error = Some(format!("cannot persist the ramp state: {msg}"));
                Err(msg)
            }
        }
    }

    /// Carries out effects in memory: weight and log lines (files are `commit`'s).
    fn carry_out(&mut self, fx: Vec<Effect>) {
        for e in fx {
            match e {
                Effect::SetWeight(w) => {
                    if w != self.rt.weight() {
                        self.weight_changed = true;
                        self.block_until_kpi_passes();
                    }
                    self.rt.set_weight(w);
                }
                Effect::Audit(rec) => tracing::info!(
                    route = %self.name,
                    action = rec.action.as_str(),
                    state = rec.state.as_str(),
                    step = rec.step,
                    weight = rec.weight,
                    "ramp decision: {}",
                    rec.reason
                ),
                Effect::Persist => {}
            }
        }
    }

    fn start_persist_hold(&mut self, problem: &str) {
        if !matches!(self.state.phase, Phase::Baseline | Phase::Progressing) {
            return;
        }
        tracing::warn!(route = %self.name, "ramp holds at {}% until its state can be persisted", self.state.weight().percent());
        self.state.paused_from = Some(self.state.phase);
        self.state.phase = Phase::Paused;
        self.state.pause_reason = Some(format!(
            "cannot persist the ramp state ({problem}); holding until the state file can be written"
        ));
        self.persist_hold = true;
    }

    fn end_persist_hold(&mut self) {
        self.persist_hold = false;
        if self.state.phase != Phase::Paused {
            return;
        }
        if let Some(from) = self.state.paused_from.take() {
            self.state.phase = from;
            self.state.pause_reason = None;
            tracing::info!(route = %self.name, "state file writable again; the ramp continues");
            let _ = self.save();
        }
    }

    fn status(&self) -> RampStatus {
        let mut s = self.state.status(&self.policy);
        s.error = match (&self.load_problem, &self.error) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        s.kpi.clone_from(&self.kpi.results);
        s
    }

    /// Publishes the ramp for `/status` and the metrics.
    fn publish(&self) {
        self.rt.metrics.set_ramp_state(self.state.phase.as_str());
        *self
            .rt
            .ramp_status
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(self.status());
    }
}

#[path = "driver_supervisor.rs"]
mod supervisor;

#[cfg(test)]
#[path = "driver_tests.rs"]
mod tests;
