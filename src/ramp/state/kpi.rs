//! Business-KPI rounds (Prometheus checks, see [`crate::ramp::kpi`]): the
//! streaks and the block on advancing are part of the ramp state, so a
//! restart neither forgets a failing streak nor trusts a round it did not see.

use serde::{Deserialize, Serialize};

use super::{Effect, Phase, RampState};
use crate::config::types::RampPolicy;
use crate::ramp::audit::Trigger;
use crate::ramp::kpi::{KpiOutcome, KpiResult, NO_DATA_BEFORE_PAUSE};
use crate::ramp::Timestamp;

/// What advancing waits for right after the weight (or the checks) changed.
const WAITING: &str = "waiting for the KPI checks to pass at this weight";

/// The KPI checks' part of the ramp state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KpiGate {
    /// The last round's results, for `/status`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    results: Vec<KpiResult>,
    /// Consecutive rounds with a failing check.
    fail_streak: u32,
    /// Consecutive rounds with a check without data.
    no_data_streak: u32,
    /// Why advancing is blocked; `None` when the checks allow it.
    blocked: Option<String>,
    /// Rounds that started before this (the last weight or checks change)
    /// do not unblock.
    since: Option<Timestamp>,
}

impl KpiGate {
    /// The last round's results.
    pub fn results(&self) -> &[KpiResult] {
        &self.results
    }
    /// Consecutive rounds with a failing check.
    pub fn fail_streak(&self) -> u32 {
        self.fail_streak
    }
    /// Consecutive rounds with a check without data.
    pub fn no_data_streak(&self) -> u32 {
        self.no_data_streak
    }
    /// Why advancing is blocked, if it is.
    pub fn blocked(&self) -> Option<&str> {
        self.blocked.as_deref()
    }

    /// With checks, advancing waits for a round that starts from `now` on
    /// and passes; `reset` also drops the streaks.
    pub(super) fn block_until_pass(&mut self, now: Timestamp, policy: &RampPolicy, reset: bool) {
        if reset {
            self.fail_streak = 0;
            self.no_data_streak = 0;
        }
        if has_checks(policy) {
            self.since = Some(now);
            self.blocked = Some(WAITING.to_string());
        } else {
            self.since = None;
            self.blocked = None;
        }
    }
}

/// The route's ramp has KPI checks to run.
fn has_checks(policy: &RampPolicy) -> bool {
    policy.prometheus_url.is_some() && !policy.prometheus_checks.is_empty()
}

impl RampState {
    pub(super) fn on_kpi_checks_started(
        &mut self,
        changed: bool,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        let before = self.kpi.clone();
        if changed {
            self.kpi.results.clear();
        }
        self.kpi.block_until_pass(now, policy, changed);
        if self.kpi != before {
            fx.push(Effect::Persist);
        }
    }

    /// One round: block, unblock, roll back (failing `failures_before_rollback`
    /// rounds in a row) or pause (no data `NO_DATA_BEFORE_PAUSE` rounds in a row).
    pub(super) fn on_kpi_round(
        &mut self,
        started: Timestamp,
        results: Vec<KpiResult>,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        let before = self.kpi.clone();
        self.kpi_round(started, results, now, policy, fx);
        if self.kpi != before {
            fx.push(Effect::Persist);
        }
    }

    fn kpi_round(
        &mut self,
        started: Timestamp,
        results: Vec<KpiResult>,
        now: Timestamp,
        policy: &RampPolicy,
        fx: &mut Vec<Effect>,
    ) {
        if !has_checks(policy) {
            self.kpi.results.clear();
            return;
        }
        self.kpi.results = results;
        if self.phase != Phase::Progressing {
            self.kpi.fail_streak = 0;
            self.kpi.no_data_streak = 0;
            return;
        }
        let (fails, no_data) = reasons(&self.kpi.results);
        let k = &mut self.kpi;
        k.fail_streak = if fails.is_empty() {
            0
        } else {
            k.fail_streak + 1
        };
        k.no_data_streak = if no_data.is_empty() {
            0
        } else {
            k.no_data_streak + 1
        };
        let n = policy.failures_before_rollback;
        if !fails.is_empty() {
            if k.fail_streak >= n {
                let reason = format!("KPI check failed {} times in a row: {fails}", k.fail_streak);
                self.roll_back(now, policy, fx, Trigger::Judge, reason);
                return;
            }
            k.blocked = Some(format!(
                "failing ({} of {n} before rollback): {fails}",
                k.fail_streak
            ));
        } else if !no_data.is_empty() {
            if k.no_data_streak >= NO_DATA_BEFORE_PAUSE {
                let reason = format!(
                    "KPI checks without data {} times in a row (never promoted blind): {no_data}",
                    k.no_data_streak
                );
                self.pause(now, policy, fx, Trigger::Judge, Some(reason));
                return;
            }
            k.blocked = Some(format!(
                "holding, no data ({} of {NO_DATA_BEFORE_PAUSE} before pausing): {no_data}",
                k.no_data_streak
            ));
        } else if k.since.map_or(true, |t| started >= t) {
            k.blocked = None;
        }
    }
}

/// The failing checks' and the checks without data's reasons, `; `-joined
/// (empty when none).
fn reasons(results: &[KpiResult]) -> (String, String) {
    let mut fails = Vec::new();
    let mut no_data = Vec::new();
    for r in results {
        match &r.outcome {
            KpiOutcome::Pass => {}
            KpiOutcome::Fail { reason } => fails.push(reason.as_str()),
            KpiOutcome::NoData { reason } => no_data.push(reason.as_str()),
        }
    }
    (fails.join("; "), no_data.join("; "))
}
