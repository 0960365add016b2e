//! Per-scenario summaries and the table `grayproxy simulate` prints.

use std::fmt;
use std::time::Duration;

use crate::ramp::sim::{RunOutcome, Scenario};
use crate::ramp::state::Phase;

/// All rollouts of one scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct ScenarioResult {
    /// The scenario.
    pub scenario: Scenario,
    /// One outcome per rollout.
    pub outcomes: Vec<RunOutcome>,
}

/// The `q` quantile (linear interpolation, as numpy) of `v`; `None` when empty.
pub fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q.clamp(0.0, 1.0) * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    Some(s[lo] + (s[hi] - s[lo]) * (pos - lo as f64))
}

impl ScenarioResult {
    fn share(&self, f: impl Fn(&RunOutcome) -> bool) -> f64 {
        if self.outcomes.is_empty() {
            return 0.0;
        }
        self.outcomes.iter().filter(|o| f(o)).count() as f64 / self.outcomes.len() as f64
    }

    /// Share of rollouts rolled back.
    pub fn p_rollback(&self) -> f64 {
        self.share(|o| o.phase == Phase::RolledBack)
    }

    /// Share of rollouts promoted to 100 %.
    pub fn p_promoted(&self) -> f64 {
        self.share(|o| o.phase == Phase::Promoted)
    }

    /// Share of rollouts undecided at the horizon.
    pub fn p_undecided(&self) -> f64 {
        self.share(|o| o.decision_s.is_none())
    }

    /// Share of undecided rollouts whose status did not say what they wait for.
    pub fn p_unexplained(&self) -> f64 {
        self.share(|o| o.decision_s.is_none() && !o.explained)
    }

    /// Seconds to a decision (rollback or promotion) over decided rollouts.
    pub fn decision_times(&self) -> Vec<f64> {
        self.outcomes.iter().filter_map(|o| o.decision_s).collect()
    }

    /// Seconds to promotion over promoted rollouts.
    pub fn promotion_times(&self) -> Vec<f64> {
        self.outcomes
            .iter()
            .filter(|o| o.phase == Phase::Promoted)
            .filter_map(|o| o.decision_s)
            .collect()
    }

    /// Canary requests before the rollback, over rolled-back rollouts.
    pub fn rollback_exposure(&self) -> Vec<f64> {
        self.outcomes
            .iter()
            .filter(|o| o.phase == Phase::RolledBack)
            .map(|o| o.canary_requests as f64)
            .collect()
    }
}

/// The result of [`crate::ramp::sim::run`].
#[derive(Clone, Debug, PartialEq)]
pub struct SimReport {
    /// Requests per second.
    pub rps: f64,
    /// Stable's error rate.
    pub stable_error_rate: f64,
    /// Rollouts per scenario.
    pub runs: usize,
    /// Seed.
    pub seed: u64,
    /// Time simulated after the first step.
    pub horizon: Duration,
    /// One row per scenario.
    pub rows: Vec<ScenarioResult>,
}

impl SimReport {
    /// The row of a scenario by name.
    pub fn row(&self, name: &str) -> Option<&ScenarioResult> {
        self.rows.iter().find(|r| r.scenario.name == name)
    }
}

fn pct(p: f64) -> String {
    format!("{:.1}%", 100.0 * p)
}

fn minutes(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |s| format!("{:.1}m", s / 60.0))
}

fn count(v: Option<f64>) -> String {
    v.map_or("–".to_string(), |n| format!("{n:.0}"))
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} req/s, stable error rate {:.2}%, {} rollouts per scenario, seed {}, horizon {:.0} min after the first step",
            self.rps,
            100.0 * self.stable_error_rate,
            self.runs,
            self.seed,
            self.horizon.as_secs_f64() / 60.0
        )?;
        let w = self
            .rows
            .iter()
            .map(|r| r.scenario.name.chars().count())
            .max()
            .unwrap_or(8)
            .max(8);
        writeln!(
            f,
            "{:<w$}  {:>11}  {:>11}  {:>9}  {:>17}  {:>17}  {:>29}",
            "scenario",
            "P(rollback)",
            "P(promoted)",
            "undecided",
            "decision med/p95",
            "to 100% med/p95",
            "canary req. before rb med/p95"
        )?;
        for r in &self.rows {
            let t = r.decision_times();
            let p = r.promotion_times();
            let e = r.rollback_exposure();
            writeln!(
                f,
                "{:<w$}  {:>11}  {:>11}  {:>9}  {:>17}  {:>17}  {:>29}",
                r.scenario.name,
                pct(r.p_rollback()),
                pct(r.p_promoted()),
                pct(r.p_undecided()),
                format!(
                    "{} / {}",
                    minutes(quantile(&t, 0.5)),
                    minutes(quantile(&t, 0.95))
                ),
                format!(
                    "{} / {}",
                    minutes(quantile(&p, 0.5)),
                    minutes(quantile(&p, 0.95))
                ),
                format!(
                    "{} / {}",
                    count(quantile(&e, 0.5)),
                    count(quantile(&e, 0.95))
                ),
            )?;
        }
        Ok(())
    }
}
