//! `Tick`: the judge's evidence, the baseline's end, advancing a step,
//! holding on shared degradation, pausing a step that cannot be decided.

use super::{ms, Effect, Phase, RampState};
use crate::config::types::RampPolicy;
use crate::ramp::audit::{Action, Trigger};
use crate::ramp::judge::{alpha, Judge, Verdict, GATE_THRESHOLD};
use crate::ramp::window::TickCounts;
use crate::ramp::Timestamp;

const HOLD_REASON: &str = "hold: shared degradation (stable's own events far above its baseline)";

fn rollback_reason(v: &Verdict, judge: &Judge, policy: &RampPolicy) -> String {
    if let (Some(e), Some(name)) = (v.e_combined, &v.segment) {
        if let Some(j) = judge.segments.iter().find(|j| &j.segment == name) {
            return format!(
                "canary shown worse for segment {name:?}: E = {e:.3} ≥ 1/α = {:.0} (½ overall E + ½ mean of {} segments' E; segment {name:?} errors E = {:.3}, slow requests E = {:.3})",
                1.0 / alpha(policy),
                judge.segments.len(),
                j.errors.log_e().min(690.0).exp(),
                j.slow.log_e().min(690.0).exp(),
            );
        }
    }
    if let Some(e) = v.e_combined {
        return format!(
            "canary shown worse: E = {e:.3} ≥ 1/α = {:.0} (½ overall E + ½ mean of {} segments' E; overall errors E = {:.3}, slow requests E = {:.3})",
            1.0 / alpha(policy),
            judge.segments.len(),
            v.e_errors,
            v.e_slow
        );
    }
    format!(
        "canary shown worse: E = {:.3} ≥ 1/α = {:.0} (errors E = {:.3}, slow requests E = {:.3})",
        v.e,
        1.0 / alpha(policy),
        v.e_errors,
        v.e_slow
    )
}

impl RampState {
    pub(super) fn on_tick(
        &mut self,
        tick: &TickCounts,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        let judging = match self.phase {
            Phase::Baseline => false,
            Phase::Shadowing => {
                // Users see stable only: their ticks say nothing of the canary.
                self.last_tick = Some(now);
                self.maybe_end_shadow(now, policy, fx);
                return;
            }
            Phase::Progressing => true,
            // Paused in the shadow phase: nothing to calibrate or judge.
            Phase::Paused if self.paused_from == Some(Phase::Shadowing) => return,
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
                if policy.shadow.is_some() {
                    self.start_shadow(now, policy, fx, Trigger::Judge);
                } else {
                    let why = (Action::RampStarted, Trigger::Judge);
                    self.start_ramp(now, policy, fx, why);
                }
            } else {
                fx.push(Effect::Persist);
            }
            return;
        }
        self.step_stable.merge(&tick.stable);
        self.step_canary.merge(&tick.canary);
        super::merge_segments(&mut self.step_segments, &tick.segments);
        let v = self.judge.observe(tick, now, policy, self.gate(policy));
        if v.rollback {
            let reason = rollback_reason(&v, &self.judge, policy);
            self.roll_back(now, policy, fx, Trigger::Judge, reason);
            return;
        }
        if v.hold != self.hold {
            self.hold = v.hold;
            let (action, reason) = if v.hold {
                (Action::Hold, HOLD_REASON)
            } else {
                (Action::HoldEnded, "shared degradation over")
            };
            let why = (action, Trigger::Judge);
            self.audit(fx, now, policy, why, reason.to_string());
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
        let kpi_ok = self.kpi.blocked().is_none();
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
            self.pause(now, policy, fx, Trigger::Judge, Some(reason));
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
        if let Some(why) = self.kpi.blocked() {
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
}
