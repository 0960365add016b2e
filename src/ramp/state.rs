//! The ramp's pure state machine: `on(event, now, policy)` updates the
//! state and returns the effects the driver must carry out (set the weight,
//! persist the state, append an audit record). No clock, no files, no
//! sockets: time is passed in. The whole design is in `docs/ramp.md`.
//!
//! Everything the ramp decides is decided here, including what the driver
//! observes about the world: business-KPI rounds ([`RampEvent::KpiRound`])
//! and the state's own storage ([`RampEvent::PersistFailed`],
//! [`RampEvent::PersistRecovered`], [`RampEvent::LoadFailed`]). So the
//! [`RampState`] is complete: persisted (or replicated) and loaded again it
//! makes the same decisions, and every decision is in its audit records.
//!
//! The driver cuts a tick (drains the recorder and sends `Tick`) every
//! `policy.tick` and right after applying every `SetWeight`, so no tick mixes
//! two weights for long.

mod kpi;
mod shadow;
mod storage;
mod tick;
mod transitions;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::types::RampPolicy;
use crate::domain::CanaryWeight;
use crate::ramp::audit::{rfc3339, Action, AuditRecord, Trigger};
use crate::ramp::judge::paired::{Pair, PairedEvidence};
use crate::ramp::judge::{Evidence, Judge, SegmentSummary};
use crate::ramp::kpi::KpiResult;
use crate::ramp::segments::{merge_segments, SegmentTick};
use crate::ramp::status::waiting_for;
use crate::ramp::window::{ArmTick, TickCounts};
use crate::ramp::Timestamp;

pub use crate::ramp::command::Command;
pub use kpi::KpiGate;

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
    /// The canary answers mirrored requests only (0 % of users), judged on
    /// pairs.
    Shadowing,
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
            Phase::Shadowing => "shadowing",
            Phase::Progressing => "progressing",
            Phase::Paused => "paused",
            Phase::Promoted => "promoted",
            Phase::RolledBack => "rolled_back",
        }
    }
}

/// What the state machine reacts to.
#[derive(Clone, Debug, PartialEq)]
pub enum RampEvent {
    /// Begin (from idle): baseline first.
    Start,
    /// One tick of weight-assigned counts.
    Tick(TickCounts),
    /// Pairs of mirrored answers compared since the last ones (judged in
    /// the shadow phase, ignored otherwise).
    ShadowPairs(Vec<Pair>),
    /// In fleet mode, the leader's input for the shadow phase: the paired
    /// evidence summed over the fleet's replicas since the last one.
    ShadowEvidence(PairedEvidence),
    /// An operator command.
    Command(Command),
    /// The config was reloaded; `new_ramp` when the canary upstream or its endpoints changed.
    ConfigChanged {
        /// The canary changed: start a new ramp from the first step.
        new_ramp: bool,
    },
    /// One round of business-KPI checks (Prometheus queries) finished:
    /// block, unblock, roll back or pause.
    KpiRound {
        /// When the round's first query was sent: a round that started
        /// before the last weight change does not unblock advancing.
        started: Timestamp,
        /// Each check's result.
        results: Vec<KpiResult>,
    },
    /// The KPI checks (re)started: at the driver's start or restart, or
    /// with new checks after a reload (`changed`). Advancing waits for a
    /// round that starts from now on and passes; with `changed` the old
    /// checks' streaks and results are dropped too.
    KpiChecksStarted {
        /// The checks themselves (URL, queries, bounds, interval) changed.
        changed: bool,
    },
    /// The state could not be persisted, so the driver did not apply a
    /// decision that raised the weight: hold (paused) at the current weight
    /// until a write succeeds.
    PersistFailed {
        /// What went wrong, in words.
        problem: String,
    },
    /// A write succeeded again: a ramp held by `PersistFailed` continues.
    PersistRecovered,
    /// The stored state could not be loaded (corrupt, unreadable): a new
    /// ramp paused at 0 % until an operator acts. Never 100 %.
    LoadFailed {
        /// What is wrong with the stored state, in words.
        problem: String,
    },
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
    pub kpi: Vec<KpiResult>,
    /// Per-segment evidence and per-arm numbers on the current step
    /// (routes with `segments`, once the judge is calibrated).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentSummary>,
}

/// The whole ramp state of one route: persisted after every change (and
/// what a fleet would replicate). Changed only through [`RampState::on`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RampState {
    /// Current state.
    phase: Phase,
    /// The state `resume` returns to from `Paused`.
    paused_from: Option<Phase>,
    /// Why the ramp paused itself (operator pauses have none).
    pause_reason: Option<String>,
    /// The pause is the hold after a failed write (`PersistFailed`): it
    /// ends by itself when a write succeeds.
    #[serde(default)]
    persist_hold: bool,
    /// Current step index into `policy.steps`.
    step: usize,
    /// Current canary weight in basis points.
    weight_bp: u16,
    /// When the current phase began.
    phase_since: Timestamp,
    /// When the current step began.
    step_since: Timestamp,
    /// Stable's counts on the current step.
    step_stable: ArmTick,
    /// Canary's counts on the current step.
    step_canary: ArmTick,
    /// Both arms' counts per segment on the current step (routes with
    /// `segments`; absent in older state files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    step_segments: Vec<SegmentTick>,
    /// Shared-degradation hold in force.
    hold: bool,
    /// End of the last tick seen.
    last_tick: Option<Timestamp>,
    /// The judge.
    judge: Judge,
    /// Recent audit records, oldest first.
    decisions: VecDeque<AuditRecord>,
    /// The business-KPI checks' streaks and block (absent in version-1 files).
    #[serde(default)]
    kpi: KpiGate,
    /// The shadow phase's paired evidence.
    #[serde(default)]
    shadow: PairedEvidence,
}

/// Read-only views, for `/status`, the driver and tests.
impl RampState {
    /// Current state.
    pub fn phase(&self) -> Phase {
        self.phase
    }
    /// The state `resume` returns to from `Paused`.
    pub fn paused_from(&self) -> Option<Phase> {
        self.paused_from
    }
    /// Why the ramp paused itself (`None` for an operator's pause).
    pub fn pause_reason(&self) -> Option<&str> {
        self.pause_reason.as_deref()
    }
    /// Held (paused) because the state could not be persisted.
    pub fn persist_hold(&self) -> bool {
        self.persist_hold
    }
    /// Current step index.
    pub fn step(&self) -> usize {
        self.step
    }
    /// The canary weight the ramp wants now.
    pub fn weight(&self) -> CanaryWeight {
        CanaryWeight::from_basis_points(self.weight_bp)
    }
    /// When the current phase began.
    pub fn phase_since(&self) -> Timestamp {
        self.phase_since
    }
    /// When the current step began.
    pub fn step_since(&self) -> Timestamp {
        self.step_since
    }
    /// Stable's counts on the current step.
    pub fn step_stable(&self) -> &ArmTick {
        &self.step_stable
    }
    /// Canary's counts on the current step.
    pub fn step_canary(&self) -> &ArmTick {
        &self.step_canary
    }
    /// Both arms' counts per segment on the current step.
    pub fn step_segments(&self) -> &[SegmentTick] {
        &self.step_segments
    }
    /// Shared-degradation hold in force.
    pub fn hold(&self) -> bool {
        self.hold
    }
    /// End of the last tick seen.
    pub fn last_tick(&self) -> Option<Timestamp> {
        self.last_tick
    }
    /// The judge.
    pub fn judge(&self) -> &Judge {
        &self.judge
    }
    /// Recent audit records, oldest first.
    pub fn decisions(&self) -> &VecDeque<AuditRecord> {
        &self.decisions
    }
    /// Fleet mode: names `replica` in the decisions that name none yet
    /// (the ones just made), before the state is committed for the fleet.
    pub fn stamp_replica(&mut self, replica: &str) {
        for d in self.decisions.iter_mut().filter(|d| d.replica.is_none()) {
            d.replica = Some(replica.to_owned());
        }
    }
    /// The business-KPI checks' bookkeeping.
    pub fn kpi(&self) -> &KpiGate {
        &self.kpi
    }
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
            persist_hold: false,
            step: 0,
            weight_bp: 0,
            phase_since: 0,
            step_since: 0,
            step_stable: ArmTick::default(),
            step_canary: ArmTick::default(),
            step_segments: Vec::new(),
            hold: false,
            last_tick: None,
            judge: Judge::new(),
            decisions: VecDeque::new(),
            kpi: KpiGate::default(),
            shadow: PairedEvidence::default(),
        }
    }

    /// Applies one event at `now`; returns the effects to carry out.
    /// A command that does not apply in the current state returns no effects.
    pub fn on(&mut self, event: RampEvent, now: Timestamp, policy: &RampPolicy) -> Vec<Effect> {
        let mut fx = Vec::new();
        let weight_before = self.weight_bp;
        match event {
            RampEvent::Start => self.on_start(now, policy, &mut fx),
            RampEvent::Tick(tick) => self.on_tick(&tick, now, policy, &mut fx),
            RampEvent::ShadowPairs(pairs) => self.on_pairs(&pairs, now, policy, &mut fx),
            RampEvent::ShadowEvidence(ev) => self.on_shadow_evidence(&ev, now, policy, &mut fx),
            RampEvent::Command(c) => self.on_command(c, now, policy, &mut fx),
            RampEvent::ConfigChanged { new_ramp } => self.on_config(new_ramp, now, policy, &mut fx),
            RampEvent::KpiRound { started, results } => {
                self.on_kpi_round(started, results, now, policy, &mut fx)
            }
            RampEvent::KpiChecksStarted { changed } => {
                self.on_kpi_checks_started(changed, now, policy, &mut fx)
            }
            RampEvent::PersistFailed { problem } => {
                self.on_persist_failed(&problem, now, policy, &mut fx)
            }
            RampEvent::PersistRecovered => self.on_persist_recovered(now, policy, &mut fx),
            RampEvent::LoadFailed { problem } => {
                self.on_load_failed(&problem, now, policy, &mut fx)
            }
        }
        if self.weight_bp != weight_before {
            // KPI rounds at the old weight say nothing about the new one.
            self.kpi.block_until_pass(now, policy, true);
            fx.push(Effect::Persist);
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

    fn on_start(&mut self, now: Timestamp, policy: &RampPolicy, fx: &mut Vec<Effect>) {
        if self.phase == Phase::Idle {
            *self = RampState::new(policy, now);
            fx.push(Effect::SetWeight(CanaryWeight::ZERO));
            self.audit(
                fx,
                now,
                policy,
                (Action::BaselineStarted, Trigger::Operator),
                baseline_reason(policy),
            );
        }
    }

    /// Freezes the weight (from `Baseline` or `Progressing`); `reason` is
    /// the ramp's own (`None` for an operator's pause).
    fn pause(
        &mut self,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
        trigger: Trigger,
        reason: Option<String>,
    ) {
        self.paused_from = Some(self.phase);
        self.phase = Phase::Paused;
        self.pause_reason.clone_from(&reason);
        let text = reason.unwrap_or_else(|| "paused by operator".to_string());
        self.audit(fx, now, policy, (Action::Pause, trigger), text);
    }

    fn gate(&self, policy: &RampPolicy) -> f64 {
        policy.gate_ratios.get(self.step).copied().unwrap_or(0.0)
    }

    /// Records a decision with the judge's evidence now (once calibrated).
    fn audit(
        &mut self,
        fx: &mut Vec<Effect>,
        now: Timestamp,
        policy: &RampPolicy,
        what: (Action, Trigger),
        reason: String,
    ) {
        let ev = self.evidence(policy);
        self.record(fx, now, what, reason, ev);
    }

    fn evidence(&self, policy: &RampPolicy) -> Option<Evidence> {
        self.judge.is_calibrated().then(|| {
            let mut ev = self
                .judge
                .evidence(policy, &self.step_stable, &self.step_canary);
            ev.segments = self.judge.segment_evidence(&self.step_segments);
            ev
        })
    }

    fn record(
        &mut self,
        fx: &mut Vec<Effect>,
        now: Timestamp,
        (action, trigger): (Action, Trigger),
        reason: String,
        evidence: Option<Evidence>,
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
            replica: None,
        };
        self.decisions.push_back(rec.clone());
        while self.decisions.len() > RECENT_DECISIONS {
            self.decisions.pop_front();
        }
        fx.push(Effect::Audit(Box::new(rec)));
    }

    /// The ramp for `/status` (the driver adds its own `error`).
    pub fn status(&self, policy: &RampPolicy) -> RampStatus {
        RampStatus {
            state: self.phase,
            step: self.step,
            weight: self.weight().percent(),
            waiting_for: waiting_for(self, policy),
            decisions: self.decisions.iter().cloned().collect(),
            error: None,
            kpi: self.kpi.results().to_vec(),
            segments: self.judge.segment_evidence(&self.step_segments),
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
mod event_tests;
#[cfg(test)]
mod shadow_tests;
#[cfg(test)]
mod tests;
