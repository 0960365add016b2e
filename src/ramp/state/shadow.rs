//! The shadow phase: between the baseline and the first step, the canary
//! answers only mirrored requests (it serves no user) and the paired judge
//! ([`crate::ramp::judge::paired`]) compares it with stable on the same
//! requests. Shown worse → rolled back with no user served; otherwise, once
//! the phase's time has passed and `min_requests` pairs were compared, the
//! ramp moves to the first step.

use super::{ms, Effect, Phase, RampState};
use crate::config::types::RampPolicy;
use crate::domain::CanaryWeight;
use crate::ramp::audit::{Action, Trigger};
use crate::ramp::judge::alpha;
use crate::ramp::judge::paired::{Pair, PairedEvidence, PairedVerdict};
use crate::ramp::status::human_seconds;
use crate::ramp::window::edge_seconds;
use crate::ramp::Timestamp;

impl RampState {
    /// The shadow phase's evidence (empty outside it).
    pub fn shadow_evidence(&self) -> &PairedEvidence {
        &self.shadow
    }

    /// Enters the shadow phase (canary at 0 %, mirrored requests only).
    pub(super) fn start_shadow(
        &mut self,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
        trigger: Trigger,
    ) {
        self.judge.start_ramp(policy);
        self.phase = Phase::Shadowing;
        self.phase_since = now;
        self.step = 0;
        self.weight_bp = 0;
        self.shadow = PairedEvidence::default();
        fx.push(Effect::SetWeight(CanaryWeight::ZERO));
        let length = policy.shadow.map_or(0.0, |d| d.as_secs_f64());
        let reason = format!(
            "shadow phase: the canary answers mirrored requests only for {} and at least {} pairs",
            human_seconds(length),
            policy.min_requests
        );
        self.audit(fx, now, policy, (Action::ShadowStarted, trigger), reason);
    }

    /// The slow-request threshold `T` the paired judge classifies pairs
    /// with (`None` before the baseline set one: slowness not judged).
    pub fn shadow_slow_seconds(&self) -> Option<f64> {
        self.judge
            .thresholds
            .as_ref()
            .and_then(|t| t.slow_edge)
            .map(edge_seconds)
    }

    /// Mirrored pairs compared since the last call.
    pub(super) fn on_pairs(
        &mut self,
        pairs: &[Pair],
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        let mut evidence = PairedEvidence::default();
        evidence.observe(pairs, self.shadow_slow_seconds());
        self.on_shadow_evidence(&evidence, now, policy, fx);
    }

    /// New paired evidence (this process's pairs, or the fleet's sum).
    pub(super) fn on_shadow_evidence(
        &mut self,
        evidence: &PairedEvidence,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        let judging = self.phase == Phase::Shadowing
            || (self.phase == Phase::Paused && self.paused_from == Some(Phase::Shadowing));
        if !judging || evidence.pairs == 0 {
            return;
        }
        self.shadow.add(evidence);
        match self
            .shadow
            .verdict(alpha(policy), policy.min_rbo, policy.min_requests)
        {
            PairedVerdict::Worse(reason) => {
                self.roll_back(now, policy, fx, Trigger::Judge, reason);
            }
            PairedVerdict::NotWorse => fx.push(Effect::Persist),
        }
    }

    /// On a tick in the shadow phase: the first step once the phase's time
    /// has passed and enough pairs were compared.
    pub(super) fn maybe_end_shadow(
        &mut self,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        let length = policy.shadow.map_or(0, ms);
        if now.saturating_sub(self.phase_since) < length || self.shadow.pairs < policy.min_requests
        {
            return;
        }
        let rbo = self
            .shadow
            .mean_rbo()
            .map(|r| format!(", mean RBO {r:.3}"))
            .unwrap_or_default();
        let reason = format!(
            "shadow phase passed: {} pairs, E = {:.3}{rbo}; ramp starts at the first step",
            self.shadow.pairs,
            self.shadow.e()
        );
        self.phase = Phase::Progressing;
        self.phase_since = now;
        self.hold = false;
        self.set_step(
            0,
            now,
            policy,
            fx,
            (Action::RampStarted, Trigger::Judge),
            reason,
        );
    }

    /// What the shadow phase waits for.
    pub(crate) fn shadow_waiting_for(&self, policy: &RampPolicy) -> String {
        let now = self.last_tick.unwrap_or(self.phase_since);
        let left = policy
            .shadow
            .map_or(0, ms)
            .saturating_sub(now.saturating_sub(self.phase_since));
        let pairs_left = policy.min_requests.saturating_sub(self.shadow.pairs);
        format!(
            "shadow phase: {} more and {pairs_left} more mirrored pairs (canary serves no user; E = {:.3})",
            human_seconds(left as f64 / 1000.0),
            self.shadow.e()
        )
    }
}
