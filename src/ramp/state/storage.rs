//! Events about the state's own storage: a write that failed (hold), a
//! write that works again (continue), a stored state that cannot be loaded
//! (start over, paused at 0 %). The driver only reports them; what the ramp
//! does about them is decided, and audited, here.

use super::{baseline_reason, Effect, Phase, RampState};
use crate::config::types::RampPolicy;
use crate::domain::CanaryWeight;
use crate::ramp::audit::{Action, Trigger};
use crate::ramp::Timestamp;

impl RampState {
    /// Holds (paused) at the current weight: the driver could not persist a
    /// decision that raised the weight and did not apply it. Judging goes on
    /// while held, so a rollback still happens.
    pub(super) fn on_persist_failed(
        &mut self,
        problem: &str,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        if !matches!(self.phase, Phase::Baseline | Phase::Progressing) {
            return;
        }
        let reason = format!(
            "cannot persist the ramp state ({problem}); holding until the state file can be written"
        );
        self.pause(now, policy, fx, Trigger::Persistence, Some(reason));
        self.persist_hold = true;
    }

    /// A write succeeded: the hold `PersistFailed` started ends (an
    /// operator's pause does not).
    pub(super) fn on_persist_recovered(
        &mut self,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        if self.phase != Phase::Paused || !self.persist_hold {
            return;
        }
        // Unlike an operator's resume, the step's clock and evidence run on:
        // the hold only kept the weight from rising.
        self.phase = self.paused_from.unwrap_or(Phase::Progressing);
        self.clear_pause();
        let reason = "the state file can be written again; the ramp continues".to_string();
        self.audit(
            fx,
            now,
            policy,
            (Action::Resume, Trigger::Persistence),
            reason,
        );
    }

    /// A new ramp paused at 0 % with the problem as the reason: never
    /// 100 %, never a silent reset. `resume` starts the baseline.
    pub(super) fn on_load_failed(
        &mut self,
        problem: &str,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        *self = RampState::new(policy, now);
        fx.push(Effect::SetWeight(CanaryWeight::ZERO));
        let why = (Action::BaselineStarted, Trigger::Persistence);
        self.audit(fx, now, policy, why, baseline_reason(policy));
        let reason = format!("{problem}; `resume` starts a new ramp");
        self.pause(now, policy, fx, Trigger::Persistence, Some(reason));
    }
}
