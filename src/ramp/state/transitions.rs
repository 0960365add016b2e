//! Operator commands, reloads, and the moves they share with the judge:
//! a new ramp, the first step, the next step, a rollback.

use super::{baseline_reason, Command, Effect, Phase, RampState};
use crate::config::types::RampPolicy;
use crate::domain::CanaryWeight;
use crate::ramp::audit::{Action, Trigger};
use crate::ramp::window::ArmTick;
use crate::ramp::Timestamp;

impl RampState {
    pub(super) fn on_command(
        &mut self,
        c: Command,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        let op = Trigger::Operator;
        match (c, self.phase) {
            (_, Phase::Idle) => {}
            (Command::Pause, Phase::Baseline | Phase::Shadowing | Phase::Progressing) => {
                self.pause(now, policy, fx, op, None);
            }
            // The operator's pause replaces the hold after a failed write:
            // it no longer ends by itself.
            (Command::Pause, Phase::Paused) if self.persist_hold => {
                self.persist_hold = false;
                self.pause_reason = None;
                self.audit(
                    fx,
                    now,
                    policy,
                    (Action::Pause, op),
                    "paused by operator".into(),
                );
            }
            (Command::Resume, Phase::Paused) => {
                self.resume(now, policy, fx, op, "resumed by operator")
            }
            (Command::Resume, Phase::RolledBack) => {
                self.new_ramp(now, policy, fx, (Action::Resume, op))
            }
            (
                Command::Promote,
                Phase::Baseline
                | Phase::Shadowing
                | Phase::Progressing
                | Phase::Paused
                | Phase::RolledBack,
            ) => {
                self.phase = Phase::Promoted;
                self.clear_pause();
                self.weight_bp = CanaryWeight::FULL.basis_points();
                self.step = policy.steps.len().saturating_sub(1);
                fx.push(Effect::SetWeight(CanaryWeight::FULL));
                self.audit(
                    fx,
                    now,
                    policy,
                    (Action::Promote, op),
                    "promoted by operator".into(),
                );
            }
            (
                Command::Rollback,
                Phase::Baseline
                | Phase::Shadowing
                | Phase::Progressing
                | Phase::Paused
                | Phase::Promoted,
            ) => {
                self.roll_back(now, policy, fx, op, "rolled back by operator".to_string());
            }
            (Command::Pause | Command::Resume | Command::Promote | Command::Rollback, _) => {}
        }
    }

    /// Back to the phase the pause interrupted (a new step clock when that
    /// is `Progressing`: the paused time does not count).
    pub(super) fn resume(
        &mut self,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
        trigger: Trigger,
        reason: &str,
    ) {
        self.phase = self.paused_from.unwrap_or(Phase::Progressing);
        self.clear_pause();
        if self.phase == Phase::Progressing {
            self.step_since = now;
            self.judge.start_step();
        }
        self.audit(
            fx,
            now,
            policy,
            (Action::Resume, trigger),
            reason.to_string(),
        );
    }

    /// Forgets everything about a pause (on leaving `Paused`).
    pub(super) fn clear_pause(&mut self) {
        self.paused_from = None;
        self.pause_reason = None;
        self.persist_hold = false;
    }

    pub(super) fn on_config(
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
            self.new_ramp(now, policy, fx, (Action::NewRamp, Trigger::Config));
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
    pub(super) fn new_ramp(
        &mut self,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
        why: (Action, Trigger),
    ) {
        self.clear_pause();
        if self.judge.is_calibrated() && policy.shadow.is_some() {
            // A new canary is shadowed first, as the first one was.
            self.start_shadow(now, policy, fx, why.1);
        } else if self.judge.is_calibrated() {
            self.start_ramp(now, policy, fx, why);
        } else {
            self.phase = Phase::Baseline;
            self.phase_since = now;
            self.weight_bp = 0;
            fx.push(Effect::SetWeight(CanaryWeight::ZERO));
            let reason = baseline_reason(policy);
            self.audit(fx, now, policy, (Action::BaselineStarted, why.1), reason);
        }
    }

    pub(super) fn start_ramp(
        &mut self,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
        why: (Action, Trigger),
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
        self.set_step(0, now, policy, fx, why, reason);
    }

    /// Moves to step `i` (promoted at the last step), resetting step counters.
    pub(super) fn set_step(
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
        let ev_before = self.evidence(policy);
        self.step = i;
        self.step_since = now;
        self.step_stable = ArmTick::default();
        self.step_canary = ArmTick::default();
        self.step_segments.clear();
        self.judge.start_step();
        self.weight_bp = w.basis_points();
        let action = if i == last || w == CanaryWeight::FULL {
            self.phase = Phase::Promoted;
            Action::Promote
        } else {
            why.0
        };
        fx.push(Effect::SetWeight(w));
        self.record(fx, now, (action, why.1), reason, ev_before);
    }

    pub(super) fn roll_back(
        &mut self,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
        trig: Trigger,
        reason: String,
    ) {
        self.phase = Phase::RolledBack;
        self.clear_pause();
        self.weight_bp = 0;
        self.hold = false;
        fx.push(Effect::SetWeight(CanaryWeight::ZERO));
        self.audit(fx, now, policy, (Action::Rollback, trig), reason);
    }
}
