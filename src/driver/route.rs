//! One route's ramp task: feeds the state machine, stores what it decided,
//! applies the weight, publishes the status.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::fleet::{fleet_changed, FleetRoute, FLEET_MOVED, FLEET_UNREACHABLE};
use super::kpi_task::{checks_of, KpiRound, KpiTask};
use super::{blocking, Clock};
use crate::config::types::RampPolicy;
use crate::domain::CanaryWeight;
use crate::driver::handle::Reply;
use crate::fleet::link::FleetLink;
use crate::persist::{RampStore, StateFile, STATE_VERSION};
use crate::proxy::runtime::RouteRuntime;
use crate::ramp::command::{command_name, Command, CommandError};
use crate::ramp::history::{HistoryEntry, HISTORY_TICKS};
use crate::ramp::state::{Effect, Phase, RampEvent, RampState, RampStatus};
use crate::ramp::window::TickCounts;
use crate::shutdown::shutdown_signalled;

/// What the supervisor tells a route's task.
pub(super) enum RouteMsg {
    /// An operator command and where its answer goes.
    Command(Command, Reply),
    /// The live config after a reload.
    Config {
        policy: Box<RampPolicy>,
        canary: String,
        new_ramp: bool,
    },
    /// Stop; with `Some(w)` the route lost its ramp and goes back to the file's weight.
    Stop(Option<CanaryWeight>),
}

/// One route's ramp task.
pub(super) struct RouteDriver {
    pub(super) name: String,
    pub(super) rt: Arc<RouteRuntime>,
    pub(super) store: Arc<dyn RampStore>,
    policy: RampPolicy,
    pub(super) canary: String,
    /// The last state adopted (see [`RouteDriver::apply`]).
    pub(super) state: RampState,
    pub(super) clock: Clock,
    /// The last persistence problem, shown in `/status`.
    pub(super) error: Option<String>,
    /// A bad state file found at start: shown until an operator acts.
    load_problem: Option<String>,
    /// The adopted state is ahead of the stored one.
    pub(super) dirty: bool,
    /// A weight was set: restart the tick timer.
    weight_changed: bool,
    /// Records in the stored history (compacted at twice the bound).
    history_records: usize,
    /// Fleet mode: the state lives in etcd (see `fleet.rs`).
    pub(super) fleet: Option<FleetRoute>,
}

impl RouteDriver {
    /// Loads (or starts) the route's ramp and publishes it.
    pub(super) fn open(
        name: &str,
        rt: Arc<RouteRuntime>,
        store: Arc<dyn RampStore>,
        (policy, canary): (RampPolicy, String),
        force_new: bool,
        fleet: Option<FleetLink>,
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
            weight_changed: false,
            history_records: 0,
            fleet: fleet.map(FleetRoute::new),
        };
        let (history, records) = d.store.load_history(name);
        *d.rt.history.lock().unwrap_or_else(|p| p.into_inner()) = history;
        d.history_records = records;
        if d.fleet.is_some() {
            d.fleet_open();
        } else {
            d.open_stored(name, force_new);
        }
        d.rt.set_weight(d.state.weight());
        // Rounds seen before the (re)start are not trusted to unblock.
        let _ = d.apply(RampEvent::KpiChecksStarted { changed: false });
        d.publish();
        d
    }

    /// Loads the route's state file, or starts a new ramp.
    fn open_stored(&mut self, name: &str, force_new: bool) {
        let d = self;
        match d.store.load(name, d.clock.now()) {
            Ok(Some(file)) => d.resume(file, force_new),
            Ok(None) => {
                let _ = d.apply(RampEvent::Start);
            }
            Err(e) => {
                let problem = e.to_string();
                tracing::error!(route = name, "{problem}; the ramp is paused at 0 % until an operator resumes it (a new ramp from the baseline)");
                let _ = d.apply(RampEvent::LoadFailed {
                    problem: problem.clone(),
                });
                d.load_problem = Some(problem);
            }
        }
    }

    /// Continues from a stored state (the canary may have changed meanwhile).
    fn resume(&mut self, file: StateFile, force_new: bool) {
        let s = &file.state;
        tracing::info!(
            route = %self.name,
            state = s.phase().as_str(),
            step = s.step(),
            weight = s.weight().percent(),
            "ramp resumed from its state file"
        );
        let new_ramp = force_new || file.canary != self.canary;
        if new_ramp {
            tracing::info!(route = %self.name, was = %file.canary, now = %self.canary, "the canary changed while grayproxy was down: new ramp");
        }
        self.adopt(file.state);
        // Re-anchors the step on a policy edited while down, or starts over.
        let _ = self.apply(RampEvent::ConfigChanged { new_ramp });
        if self.state.phase() == Phase::Idle {
            let _ = self.apply(RampEvent::Start);
        }
    }

    /// Takes a state decided elsewhere as it is (today the stored state at
    /// start; a replica would take its leader's): its weight applies and it
    /// is published; nothing is stored.
    pub(super) fn adopt(&mut self, state: RampState) {
        self.state = state;
        self.set_weight(self.state.weight());
        self.publish();
    }

    /// Feeds one event to the state machine and carries out its effects.
    /// `Ok(true)` when something changed; `Err` when a raise of the weight
    /// could not be persisted and was not applied.
    pub(super) fn apply(&mut self, event: RampEvent) -> Result<bool, String> {
        if self.fleet.as_ref().is_some_and(|f| !f.may_apply(&event)) {
            return Ok(false);
        }
        let now = self.clock.now();
        let tick = match &event {
            RampEvent::Tick(c) => Some(c.clone()),
            _ => None,
        };
        let mut next = self.state.clone();
        let mut fx = next.on(event, now, &self.policy);
        self.fleet_stamp(&mut next, &mut fx);
        if fx.is_empty() {
            if self.dirty && self.save(&self.state.clone()).is_ok() {
                self.recovered();
            }
            if let Some(counts) = &tick {
                self.record_history(counts, now);
            }
            return Ok(false);
        }
        let raises = next.weight().basis_points() > self.state.weight().basis_points();
        let result = match self.commit(&next, &fx) {
            Ok(()) => {
                self.state = next;
                self.carry_out(fx);
                self.recovered();
                Ok(true)
            }
            // The fleet refused it (deposed, or the state moved on): the
            // stored state is the truth; take it.
            Err(e) if self.fleet.is_some() && !e.starts_with(FLEET_UNREACHABLE) => {
                self.fleet_sync();
                Err(e)
            }
            // Never raise the canary on a state that is not stored.
            Err(e) if raises => {
                self.dirty = true;
                if let Some(counts) = &tick {
                    self.hold(&e, counts.clone());
                }
                Err(e)
            }
            Err(_) => {
                self.state = next;
                self.carry_out(fx);
                self.dirty = true;
                Ok(true)
            }
        };
        if let Some(counts) = &tick {
            self.record_history(counts, now);
        }
        result
    }

    /// Adds the tick just taken to the route's history (memory and file).
    /// A failed write is logged and never stops the ramp.
    fn record_history(&mut self, counts: &TickCounts, now: crate::ramp::Timestamp) {
        let entry = HistoryEntry::after_tick(&self.state, &self.policy, counts, now);
        let stored = self.store.append_history(&self.name, &entry);
        let mut history = self.rt.history.lock().unwrap_or_else(|p| p.into_inner());
        history.push(entry);
        let result = match stored {
            Ok(()) => {
                self.history_records += 1;
                if self.history_records < 2 * HISTORY_TICKS {
                    return;
                }
                self.history_records = history.len();
                self.store.rewrite_history(&self.name, &history)
            }
            Err(e) => Err(e),
        };
        if let Err(e) = result {
            tracing::warn!(route = %self.name, error = %e, "cannot store the ramp history (the charts only)");
        }
    }

    /// A tick's decision to raise the weight could not be stored: the state
    /// machine holds, and still judges the tick (a held ramp rolls back).
    fn hold(&mut self, problem: &str, counts: TickCounts) {
        let now = self.clock.now();
        let problem = problem.to_string();
        let mut fx = self
            .state
            .on(RampEvent::PersistFailed { problem }, now, &self.policy);
        if !fx.is_empty() {
            tracing::warn!(route = %self.name, "ramp holds at {}% until its state can be persisted", self.state.weight().percent());
        }
        fx.extend(self.state.on(RampEvent::Tick(counts), now, &self.policy));
        let state = self.state.clone();
        let _ = self.commit(&state, &fx);
        self.carry_out(fx);
    }

    /// After a successful write: a ramp held by `PersistFailed` continues.
    fn recovered(&mut self) {
        if self.dirty || !self.state.persist_hold() {
            return;
        }
        let now = self.clock.now();
        let fx = self
            .state
            .on(RampEvent::PersistRecovered, now, &self.policy);
        tracing::info!(route = %self.name, "state file writable again; the ramp continues");
        let state = self.state.clone();
        let _ = self.commit(&state, &fx);
        self.carry_out(fx);
    }

    /// Stores the effects' audit records, then (when asked) `state`.
    fn commit(&mut self, state: &RampState, fx: &[Effect]) -> Result<(), String> {
        if self.fleet.is_some() {
            let r = self.fleet_save(state, fx);
            if let Err(e) = &r {
                tracing::warn!(route = %self.name, error = %e, "fleet: decision not committed");
                if e.starts_with(FLEET_UNREACHABLE) {
                    self.dirty = true;
                    self.error = Some(format!("cannot commit the ramp state to the fleet: {e}"));
                }
            }
            return r;
        }
        let mut result = Ok(());
        for e in fx {
            if let Effect::Audit(rec) = e {
                if let Err(err) = self.store.append_audit(&self.name, rec) {
                    result = Err(err.to_string());
                }
            }
        }
        if fx.contains(&Effect::Persist) || self.dirty {
            if let Err(err) = self.save(state) {
                result = Err(err);
            }
        }
        if let Err(e) = &result {
            tracing::error!(route = %self.name, error = %e, "cannot persist the ramp state; the proxy keeps serving, the ramp does not advance");
            self.error = Some(format!("cannot persist the ramp state: {e}"));
        }
        result
    }

    fn save(&mut self, state: &RampState) -> Result<(), String> {
        if self.fleet.is_some() {
            return self.fleet_save(state, &[]);
        }
        let file = StateFile {
            version: STATE_VERSION,
            route: self.name.clone(),
            canary: self.canary.clone(),
            saved_at_ms: self.clock.now(),
            state: state.clone(),
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

    /// Carries out effects in memory: weight and log lines (storage is `commit`'s).
    fn carry_out(&mut self, fx: Vec<Effect>) {
        for e in fx {
            match e {
                Effect::SetWeight(w) => self.set_weight(w),
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

    fn set_weight(&mut self, w: CanaryWeight) {
        if w != self.rt.weight() {
            self.weight_changed = true;
        }
        self.rt.set_weight(w);
    }

    /// One round of KPI checks, for the state machine.
    fn on_kpi(&mut self, round: KpiRound) {
        let started = self.clock.at(round.started);
        let results = round.results;
        let _ = self.apply(RampEvent::KpiRound { started, results });
    }

    pub(super) fn command(&mut self, c: Command) -> Result<RampStatus, CommandError> {
        // Cut the tick so far: those requests ran at the old weight.
        if self.fleet.is_some() {
            self.fleet_record();
            self.fleet_sync();
        } else {
            let counts = self.rt.take_tick();
            let _ = self.apply(RampEvent::Tick(counts));
        }
        let state = self.state.phase();
        let mut result = self.apply(RampEvent::Command(c));
        if self.fleet.is_some() && result.as_ref().is_err_and(|e| e.contains(FLEET_MOVED)) {
            // Another replica decided meanwhile: once more on its state.
            result = self.apply(RampEvent::Command(c));
        }
        match result {
            Ok(true) => {
                // The operator has acted, on the bad file too.
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

    /// Takes a reloaded config; `true` when the KPI checks changed (the
    /// query task must restart).
    fn reconfigure(&mut self, policy: RampPolicy, canary: String, new_ramp: bool) -> bool {
        let new_ramp = new_ramp || canary != self.canary;
        if !new_ramp && policy == self.policy {
            return false;
        }
        let checks_changed = checks_of(&policy) != checks_of(&self.policy);
        self.policy = policy;
        self.canary = canary;
        if new_ramp {
            tracing::info!(route = %self.name, canary = %self.canary, "canary changed: new ramp");
        }
        let _ = self.apply(RampEvent::ConfigChanged { new_ramp });
        if checks_changed {
            let _ = self.apply(RampEvent::KpiChecksStarted { changed: true });
        }
        checks_changed
    }

    fn stop(&mut self, file_weight: Option<CanaryWeight>) {
        if self.dirty {
            let _ = self.save(&self.state.clone());
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
        self.rt.shadow.set_phase_active(false);
    }

    pub(super) async fn run(
        mut self,
        mut rx: mpsc::Receiver<RouteMsg>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let mut timer = self.timer();
        let mut fleet_rx = self.fleet.as_ref().map(|f| f.link.subscribe());
        let (kpi_tx, mut kpi_rx) = mpsc::channel(4);
        let mut _kpi = KpiTask::spawn(&self.name, &self.policy, kpi_tx.clone());
        loop {
            // The state file is fsynced (about 6 ms on a plain disk):
            // file work runs where it does not stall the proxy's workers.
            tokio::select! {
                _ = timer.tick() => {
                    if self.fleet.is_some() {
                        // The pairs go to the fleet's sum with the counts.
                        blocking(|| self.fleet_tick());
                    } else {
                        let pairs = self.rt.shadow.take_pairs();
                        if !pairs.is_empty() {
                            let _ = blocking(|| self.apply(RampEvent::ShadowPairs(pairs)));
                        }
                        let counts = self.rt.take_tick();
                        let _ = blocking(|| self.apply(RampEvent::Tick(counts)));
                    }
                }
                Ok(()) = fleet_changed(&mut fleet_rx) => {
                    blocking(|| self.fleet_sync());
                }
                Some(round) = kpi_rx.recv() => blocking(|| self.on_kpi(round)),
                msg = rx.recv() => match msg {
                    Some(RouteMsg::Command(c, reply)) => {
                        let _ = reply.send(blocking(|| self.command(c)));
                    }
                    Some(RouteMsg::Config { policy, canary, new_ramp }) => {
                        let retime = policy.tick != self.policy.tick;
                        if blocking(|| self.reconfigure(*policy, canary, new_ramp)) {
                            // Dropping the old task stops its queries.
                            _kpi = KpiTask::spawn(&self.name, &self.policy, kpi_tx.clone());
                        }
                        if retime {
                            timer = self.timer();
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

    pub(super) fn status(&self) -> RampStatus {
        let mut s = self.state.status(&self.policy);
        s.error = match (&self.load_problem, &self.error) {
            (Some(a), Some(b)) => Some(format!("{a}; {b}")),
            (a, b) => a.clone().or_else(|| b.clone()),
        };
        s
    }

    /// Publishes the ramp for `/status` and the metrics.
    pub(super) fn publish(&self) {
        self.rt.metrics.set_ramp_state(self.state.phase().as_str());
        // Mirroring runs in the shadow phase even without [routes.shadow].
        self.rt
            .shadow
            .set_phase_active(self.state.phase() == Phase::Shadowing);
        *self
            .rt
            .ramp_status
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(self.status());
    }
}
