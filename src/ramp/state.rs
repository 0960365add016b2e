//! The ramp's pure state machine (contract §4): `on(event, now, policy)`
//! updates the state and returns the effects the driver must carry out
//! (set the weight, persist the state, append an audit record). No clock,
//! no files, no sockets: time is passed in.
//!
//! The driver cuts a tick (drains the recorder and sends `Tick`) every
//! `policy.tick` and right after applying every `SetWeight`, so no tick mixes
//! two weights for long.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::types::RampPolicy;
use crate::domain::CanaryWeight;
use crate::ramp::audit::{rfc3339, Action, AuditRecord, Trigger};
use crate::ramp::judge::{Judge, Verdict, GATE_THRESHOLD};
use crate::ramp::status::waiting_for;
use crate::ramp::window::{ArmTick, TickCounts};
use crate::ramp::Timestamp;

/// Audit records kept in the state for `/status`.
pub const RECENT_DECISIONS: usize = 20;

/// Where the ramp is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// No ramp configured: the file's weight applies.
    Idle,
    /// Collecting stable-only history (canary at 0 %).
    Baseline,
    /// On a step, judged every tick.
    Progressing,
    /// Weight frozen (rollback protection stays on).
    Paused,
    /// Canary at 100 %.
    Promoted,
    /// Canary at 0 % until `resume` or a new canary.
    RolledBack,
}

impl Phase {
    /// The snake_case name used in JSON and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Idle => "idle",
            Phase::Baseline => "baseline",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled_back",
        }
    }
}

/// An operator command.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Freeze the weight.
    Pause,
    /// Continue a paused ramp, or start a new one after a rollback.
    Resume,
    /// Jump to 100 %.
    Promote,
    /// Go to 0 %.
    Rollback,
}

/// What the state machine reacts to.
#[derive(Clone, Debug, PartialEq)]
pub enum RampEvent {
    /// Begin (from idle): baseline first.
    Start,
    /// One tick of weight-assigned counts.
    Tick(TickCounts),
    /// An operator command.
    Command(Command),
    /// The config was reloaded; `new_ramp` when the canary upstream or its endpoints changed.
    ConfigChanged {
        /// The canary changed: start a new ramp from the first step.
        new_ramp: bool,
    },
    /// A business-KPI check failed `failures_before_rollback` times in a
    /// row (the driver's Prometheus checks): roll back with this reason.
    KpiRollback(String),
    /// The KPI checks had no data too often: pause (from `Progressing`) with this reason.
    KpiPause(String),
}

/// What the driver must do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Route this share of weight-assigned traffic to the canary.
    SetWeight(CanaryWeight),
    /// Write the state file (atomically).
    Persist,
    /// Append this record to `audit.jsonl`.
    Audit(Box<AuditRecord>),
}

/// The ramp as `/status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RampStatus {
    /// Current state.
    pub state: Phase,
    /// Current step index.
    pub step: usize,
    /// Current canary weight, percent.
    pub weight: f64,
    /// What the ramp waits for, with an estimate.
    pub waiting_for: Option<String>,
    /// Recent audit records, oldest first.
    pub decisions: Vec<AuditRecord>,
    /// A persistence problem the driver reports (corrupt state file, state
    /// directory not writable); `None` when all is well.
    #[serde(default)]
    pub error: Option<String>,
    /// The business-KPI checks' last results (empty without checks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kpi: Vec<crate::ramp::kpi::KpiResult>,
}

/// The whole ramp state of one route (serde: persisted after every change).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RampState {
    /// Current state.
    pub phase: Phase,
    /// The state `resume` returns to from `Paused`.
    pub paused_from: Option<Phase>,
    /// Why the ramp paused itself (operator pauses have none).
    pub pause_reason: Option<String>,
    /// Current step index into `policy.steps`.
    pub step: usize,
    /// Current canary weight in basis points.
    pub weight_bp: u16,
    /// When the current phase began.
    pub phase_since: Timestamp,
    /// When the current step began.
    pub step_since: Timestamp,
    /// Stable's counts on the current step.
    pub step_stable: ArmTick,
    /// Canary's counts on the current step.
    pub step_canary: ArmTick,
    /// Shared-degradation hold in force.
    pub hold: bool,
    /// End of the last tick seen.
    pub last_tick: Option<Timestamp>,
    /// The judge.
    pub judge: Judge,
    /// Recent audit records, oldest first.
    pub decisions: VecDeque<AuditRecord>,
    /// Set by the driver while business-KPI checks block advancing (why);
    /// not persisted: after a restart the checks block until they pass again.
    #[serde(skip)]
    pub advance_blocked: Option<String>,
}

impl RampState {
    /// A ramp in `Baseline` since `now` (canary at 0 %).
    pub fn new(_policy: &RampPolicy, now: Timestamp) -> RampState {
        let mut s = RampState::idle();
        s.phase = Phase::Baseline;
        s.phase_since = now;
        s.step_since = now;
        s
    }

    /// A route without a ramp (or not started yet).
    pub fn idle() -> RampState {
        RampState {
            phase: Phase::Idle,
            paused_from: None,
            pause_reason: None,
            step: 0,
            weight_bp: 0,
            phase_since: 0,
            step_since: 0,
            step_stable: ArmTick::default(),
            step_canary: ArmTick::default(),
            hold: false,
            last_tick: None,
            judge: Judge::new(),
            decisions: VecDeque::new(),
            advance_blocked: None,
        }
    }

    /// The canary weight the ramp wants now.
    pub fn weight(&self) -> CanaryWeight {
        CanaryWeight::from_basis_points(self.weight_bp)
    }

    /// Applies one event at `now`; returns the effects to carry out.
    /// A command that does not apply in the current state returns no effects.
    pub fn on(&mut self, event: RampEvent, now: Timestamp, policy: &RampPolicy) -> Vec<Effect> {
        let mut fx = Vec::new();
        match event {
            RampEvent::Start => {
                if self.phase == Phase::Idle {
                    *self = RampState::new(policy, now);
                    fx.push(Effect::SetWeight(CanaryWeight::ZERO));
                    self.audit(
                        &mut fx,
                        now,
                        policy,
                        Action::BaselineStarted,
                        Trigger::Operator,
                        baseline_reason(policy),
                    );
                }
            }
            RampEvent::Tick(tick) => self.on_tick(&tick, now, policy, &mut fx),
            RampEvent::Command(c) => self.on_command(c, now, policy, &mut fx),
            RampEvent::ConfigChanged { new_ramp } => self.on_config(new_ramp, now, policy, &mut fx),
            RampEvent::KpiRollback(reason) => {
                if matches!(self.phase, Phase::Progressing | Phase::Paused) {
                    self.roll_back(now, policy, &mut fx, Trigger::Judge, reason);
                }
            }
            RampEvent::KpiPause(reason) => {
                if self.phase == Phase::Progressing {
                    self.paused_from = Some(Phase::Progressing);
                    self.phase = Phase::Paused;
                    self.pause_reason = Some(reason.clone());
                    self.audit(&mut fx, now, policy, Action::Pause, Trigger::Judge, reason);
                }
            }
        }
        // Every change is persisted, once, after the other effects. A tick
        // that only moved the judge's evidence asked for `Persist` itself:
        // that state must reach the disk too (kill -9 resumes exactly).
        let asked = fx.contains(&Effect::Persist);
        fx.retain(|e| *e != Effect::Persist);
        if asked || !fx.is_empty() {
            fx.push(Effect::Persist);
        }
        fx
    }

    fn on_tick(
        &mut self,
        tick: &TickCounts,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        let judging = match self.phase {
            Phase::Baseline => false,
            Phase::Progressing => true,
            Phase::Paused => self.paused_from == Some(Phase::Progressing),
            Phase::Idle | Phase::Promoted | Phase::RolledBack => return,
        };
        self.last_tick = Some(now);
        if !judging {
            self.judge.calibrate(tick, now, policy);
            if self.phase == Phase::Baseline
                && now.saturating_sub(self.phase_since) >= ms(policy.baseline)
            {
                self.judge.finish_calibration(policy);
                self.start_ramp(now, policy, fx, Action::RampStarted, Trigger::Judge);
            } else {
                fx.push(Effect::Persist);
            }
            return;
        }
        self.step_stable.merge(&tick.stable);
        self.step_canary.merge(&tick.canary);
        let v = self.judge.observe(tick, now, policy, self.gate(policy));
        if v.rollback {
            let reason = format!(
                "canary shown worse: E = {:.3} ≥ 1/α = {:.0} (errors E = {:.3}, slow requests E = {:.3})",
                v.e,
                1.0 / crate::ramp::judge::alpha(policy),
                v.e_errors,
                v.e_slow
            );
            self.roll_back(now, policy, fx, Trigger::Judge, reason);
            return;
        }
        if v.hold != self.hold {
            self.hold = v.hold;
            let (action, reason) = if v.hold {
                (
                    Action::Hold,
                    "hold: shared degradation (stable's own events far above its baseline)",
                )
            } else {
                (Action::HoldEnded, "shared degradation over")
            };
            self.audit(fx, now, policy, action, Trigger::Judge, reason.to_string());
        }
        if self.phase == Phase::Progressing {
            self.maybe_advance(&v, now, policy, fx);
        }
        fx.push(Effect::Persist);
    }

    fn maybe_advance(
        &mut self,
        v: &Verdict,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        let on_step = now.saturating_sub(self.step_since);
        let enough = self.step_canary.requests >= policy.min_requests
            && self.step_stable.requests >= policy.min_requests;
        let kpi_ok = self.advance_blocked.is_none();
        if on_step >= ms(policy.interval) && enough && !v.hold && v.gate_passed() && kpi_ok {
            let reason = match &v.gate {
                Some(g) => format!(
                    "canary shown < {}× worse: F errors = {:.1}, F slow = {:.1} (≥ {GATE_THRESHOLD})",
                    g.tolerance, g.f_errors, g.f_slow
                ),
                None => format!("step {} has no gate; interval and min_requests met", self.step),
            };
            self.set_step(
                self.step + 1,
                now,
                policy,
                fx,
                (Action::Advance, Trigger::Judge),
                reason,
            );
        } else if on_step >= ms(policy.max_step_duration) {
            let reason = self.insufficient_reason(policy);
            self.phase = Phase::Paused;
            self.paused_from = Some(Phase::Progressing);
            self.pause_reason = Some(reason.clone());
            self.audit(fx, now, policy, Action::Pause, Trigger::Judge, reason);
        }
    }

    fn insufficient_reason(&self, policy: &RampPolicy) -> String {
        let tol = self.gate(policy);
        if self.step_canary.requests < policy.min_requests
            || self.step_stable.requests < policy.min_requests
        {
            return format!(
                "insufficient traffic: canary {} and stable {} of {} requests each on this step",
                self.step_canary.requests, self.step_stable.requests, policy.min_requests
            );
        }
        if self.hold {
            return "shared degradation lasted the whole max_step_duration".to_string();
        }
        if let Some(why) = &self.advance_blocked {
            return format!("KPI checks blocked the step for the whole max_step_duration: {why}");
        }
        let ev = self
            .judge
            .evidence(policy, &self.step_stable, &self.step_canary);
        let hi = match (ev.ratio_errors.high, ev.ratio_slow.high) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        match hi {
            Some(h) => format!("insufficient traffic: canary shown < {h:.3}× worse so far (gate needs < {tol}×)"),
            None => format!("insufficient traffic: no bound on how much worse the canary is yet (gate needs < {tol}×)"),
        }
    }

    fn on_command(
        &mut self,
        c: Command,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        let op = Trigger::Operator;
        match (c, self.phase) {
            (_, Phase::Idle) => {}
            (Command::Pause, Phase::Baseline | Phase::Progressing) => {
                self.paused_from = Some(self.phase);
                self.pause_reason = None;
                self.phase = Phase::Paused;
                self.audit(
                    fx,
                    now,
                    policy,
                    Action::Pause,
                    op,
                    "paused by operator".to_string(),
                );
            }
            (Command::Resume, Phase::Paused) => {
                self.phase = self.paused_from.take().unwrap_or(Phase::Progressing);
                self.pause_reason = None;
                if self.phase == Phase::Progressing {
                    self.step_since = now;
                    self.judge.start_step();
                }
                self.audit(
                    fx,
                    now,
                    policy,
                    Action::Resume,
                    op,
                    "resumed by operator".to_string(),
                );
            }
            (Command::Resume, Phase::RolledBack) => {
                self.new_ramp(now, policy, fx, Action::Resume, op)
            }
            (
                Command::Promote,
                Phase::Baseline | Phase::Progressing | Phase::Paused | Phase::RolledBack,
            ) => {
                self.phase = Phase::Promoted;
                self.paused_from = None;
                self.weight_bp = CanaryWeight::FULL.basis_points();
                self.step = policy.steps.len().saturating_sub(1);
                fx.push(Effect::SetWeight(CanaryWeight::FULL));
                self.audit(
                    fx,
                    now,
                    policy,
                    Action::Promote,
                    op,
                    "promoted by operator".to_string(),
                );
            }
            (
                Command::Rollback,
                Phase::Baseline | Phase::Progressing | Phase::Paused | Phase::Promoted,
            ) => {
                self.roll_back(now, policy, fx, op, "rolled back by operator".to_string());
            }
            (Command::Pause | Command::Resume | Command::Promote | Command::Rollback, _) => {}
        }
    }

    fn on_config(
        &mut self,
        new_ramp: bool,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        if self.phase == Phase::Idle {
            return;
        }
        if new_ramp {
            self.new_ramp(now, policy, fx, Action::NewRamp, Trigger::Config);
            return;
        }
        // Same canary: keep the weight; re-anchor the step index on the new steps.
        let last = policy.steps.len().saturating_sub(1);
        if self.phase != Phase::Promoted {
            let at = policy
                .steps
                .iter()
                .rposition(|w| w.basis_points() <= self.weight_bp)
                .unwrap_or(0);
            self.step = at.min(last);
        }
    }

    /// A new ramp from the first step (baseline first when never calibrated).
    fn new_ramp(
        &mut self,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
        action: Action,
        trig: Trigger,
    ) {
        self.paused_from = None;
        self.pause_reason = None;
        if self.judge.is_calibrated() {
            self.start_ramp(now, policy, fx, action, trig);
        } else {
            self.phase = Phase::Baseline;
            self.phase_since = now;
            self.weight_bp = 0;
            fx.push(Effect::SetWeight(CanaryWeight::ZERO));
            self.audit(
                fx,
                now,
                policy,
                Action::BaselineStarted,
                trig,
                baseline_reason(policy),
            );
        }
    }

    fn start_ramp(
        &mut self,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
        action: Action,
        trig: Trigger,
    ) {
        self.judge.start_ramp(policy);
        self.phase = Phase::Progressing;
        self.phase_since = now;
        self.hold = false;
        let notes = self
            .judge
            .thresholds
            .as_ref()
            .map(|t| t.notes.join("; "))
            .unwrap_or_default();
        let reason = if notes.is_empty() {
            "ramp starts at the first step".to_string()
        } else {
            format!("ramp starts at the first step; {notes}")
        };
        self.step = 0;
        self.set_step(0, now, policy, fx, (action, trig), reason);
    }

    /// Moves to step `i` (promoted at the last step), resetting step counters.
    fn set_step(
        &mut self,
        i: usize,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
        why: (Action, Trigger),
        reason: String,
    ) {
        let last = policy.steps.len().saturating_sub(1);
        let i = i.min(last);
        let w = policy.steps.get(i).copied().unwrap_or(CanaryWeight::FULL);
        let ev_before = self.judge.is_calibrated().then(|| {
            self.judge
                .evidence(policy, &self.step_stable, &self.step_canary)
        });
        self.step = i;
        self.step_since = now;
        self.step_stable = ArmTick::default();
        self.step_canary = ArmTick::default();
        self.judge.start_step();
        self.weight_bp = w.basis_points();
        let action = if i == last || w == CanaryWeight::FULL {
            self.phase = Phase::Promoted;
            Action::Promote
        } else {
            why.0
        };
        fx.push(Effect::SetWeight(w));
        self.record(fx, now, action, why.1, reason, ev_before);
    }

    fn roll_back(
        &mut self,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
        trig: Trigger,
        reason: String,
    ) {
        self.phase = Phase::RolledBack;
        self.paused_from = None;
        self.pause_reason = None;
        self.weight_bp = 0;
        self.hold = false;
        fx.push(Effect::SetWeight(CanaryWeight::ZERO));
        self.audit(fx, now, policy, Action::Rollback, trig, reason);
    }

    fn gate(&self, policy: &RampPolicy) -> f64 {
        policy.gate_ratios.get(self.step).copied().unwrap_or(0.0)
    }

    fn audit(
        &mut self,
        fx: &mut Vec<Effect>,
        now: Timestamp,
        policy: &RampPolicy,
        a: Action,
        t: Trigger,
        reason: String,
    ) {
        let ev = self.judge.is_calibrated().then(|| {
            self.judge
                .evidence(policy, &self.step_stable, &self.step_canary)
        });
        self.record(fx, now, a, t, reason, ev);
    }

    fn record(
        &mut self,
        fx: &mut Vec<Effect>,
        now: Timestamp,
        action: Action,
        trigger: Trigger,
        reason: String,
        evidence: Option<crate::ramp::judge::Evidence>,
    ) {
        let rec = AuditRecord {
            at: rfc3339(now),
            at_ms: now,
            action,
            trigger,
            state: self.phase,
            step: self.step,
            weight: self.weight().percent(),
            reason,
            evidence,
        };
        self.decisions.push_back(rec.clone());
        while self.decisions.len() > RECENT_DECISIONS {
            self.decisions.pop_front();
        }
        fx.push(Effect::Audit(Box::new(rec)));
    }

    /// The ramp for `/status`.
    pub fn status(&self, policy: &RampPolicy) -> RampStatus {
        RampStatus {
            state: self.phase,
            step: self.step,
            weight: self.weight().percent(),
            waiting_for: waiting_for(self, policy),
            decisions: self.decisions.iter().cloned().collect(),
            error: None,
            kpi: Vec::new(),
        }
    }
}

fn baseline_reason(policy: &RampPolicy) -> String {
    format!(
        "collecting {} of stable-only history before the first step",
        crate::ramp::status::human_seconds(policy.baseline.as_secs_f64())
    )
}

/// A duration in ms.
pub(crate) fn ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
#[path = "state_tests.rs"]
mod tests;
