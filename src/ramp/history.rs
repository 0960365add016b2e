//! A route's ramp history: one [`HistoryEntry`] per tick (the weight after
//! the tick's decision, the tick's own per-arm counts, the judge's evidence
//! against its thresholds), kept bounded in a [`History`] ring. It feeds
//! the web UI's charts (`GET /routes/{name}/history`).
//!
//! Pure data: the driver builds an entry from the state after each tick
//! ([`HistoryEntry::after_tick`]) and stores it beside the state file (see
//! `persist::history`). The history is not part of the [`RampState`]: the
//! state file is rewritten and fsynced after every change and must stay
//! small, and nothing the ramp decides depends on what it drew.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::config::types::RampPolicy;
use crate::ramp::judge::GATE_THRESHOLD;
use crate::ramp::state::{Phase, RampState};
use crate::ramp::window::{ArmTick, TickCounts};
use crate::ramp::Timestamp;

/// Ticks kept per route: 12 minutes at a 1 s tick, 6 hours at 30 s.
pub const HISTORY_TICKS: usize = 720;

/// One tick of a route's ramp.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// End of the tick (unix ms).
    pub at_ms: Timestamp,
    /// The ramp's state after the tick's decision.
    pub state: Phase,
    /// Its step after the decision.
    pub step: usize,
    /// The canary weight after the decision, percent.
    pub weight: f64,
    /// Stable's requests in this tick.
    pub stable: ArmPoint,
    /// The canary's requests in this tick.
    pub canary: ArmPoint,
    /// The judge's evidence after the tick (`None` during the baseline,
    /// before the judge is calibrated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evidence: Option<EvidencePoint>,
}

/// One arm's requests in one tick.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmPoint {
    /// Requests answered (or failed).
    pub requests: u64,
    /// Errors (never more than `requests`).
    pub errors: u64,
    /// `errors / requests`, 0 without requests.
    pub error_rate: f64,
    /// p99 latency in seconds; `None` without requests.
    pub p99_seconds: Option<f64>,
}

impl ArmPoint {
    /// The point of one arm's tick counts.
    pub fn of(arm: &ArmTick) -> ArmPoint {
        let errors = arm.errors_clamped();
        ArmPoint {
            requests: arm.requests,
            errors,
            error_rate: if arm.requests == 0 {
                0.0
            } else {
                errors as f64 / arm.requests as f64
            },
            p99_seconds: arm.latency.quantile(0.99),
        }
    }
}

/// The judge's evidence after a tick, with the thresholds it is held to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EvidencePoint {
    /// Rollback e-value for errors.
    pub e_errors: f64,
    /// Rollback e-value for slow requests.
    pub e_slow: f64,
    /// The combined e-value `(E_err + E_slow)/2`: rollback when it
    /// reaches `rollback_threshold`.
    pub e: f64,
    /// `1/α`.
    pub rollback_threshold: f64,
    /// The current step's gate; `None` when the step has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<GatePoint>,
    /// Shared degradation (stable is failing too): the ramp does not advance.
    pub hold: bool,
}

/// A step's gate after a tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GatePoint {
    /// The gate's tolerated canary/stable ratio.
    pub tolerance: f64,
    /// Gate statistic for errors.
    pub f_errors: f64,
    /// Gate statistic for slow requests.
    pub f_slow: f64,
    /// Both statistics must reach this for the step to advance.
    pub target: f64,
    /// Both reached it.
    pub passed: bool,
}

impl HistoryEntry {
    /// The entry of the tick `counts`, ending at `now`, from `state` after
    /// the state machine took that tick.
    pub fn after_tick(
        state: &RampState,
        policy: &RampPolicy,
        counts: &TickCounts,
        now: Timestamp,
    ) -> HistoryEntry {
        let judge = state.judge();
        let evidence = judge.is_calibrated().then(|| {
            let ev = judge.evidence(policy, state.step_stable(), state.step_canary());
            EvidencePoint {
                e_errors: ev.e_errors,
                e_slow: ev.e_slow,
                e: ev.e,
                rollback_threshold: ev.rollback_threshold,
                gate: ev.gate.map(|g| GatePoint {
                    tolerance: g.tolerance,
                    f_errors: g.f_errors,
                    f_slow: g.f_slow,
                    target: GATE_THRESHOLD,
                    passed: g.passed,
                }),
                hold: ev.hold,
            }
        });
        HistoryEntry {
            at_ms: now,
            state: state.phase(),
            step: state.step(),
            weight: state.weight().percent(),
            stable: ArmPoint::of(&counts.stable),
            canary: ArmPoint::of(&counts.canary),
            evidence,
        }
    }
}

/// The last [`HISTORY_TICKS`] entries of a route, oldest first.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct History {
    entries: VecDeque<HistoryEntry>,
}

impl History {
    /// A history holding the newest [`HISTORY_TICKS`] of `entries` (oldest first).
    pub fn from_entries(entries: impl IntoIterator<Item = HistoryEntry>) -> History {
        let mut h = History::default();
        for e in entries {
            h.push(e);
        }
        h
    }

    /// Adds the newest entry, dropping the oldest beyond the bound.
    pub fn push(&mut self, entry: HistoryEntry) {
        self.entries.push_back(entry);
        while self.entries.len() > HISTORY_TICKS {
            self.entries.pop_front();
        }
    }

    /// The entries, oldest first.
    pub fn entries(&self) -> &VecDeque<HistoryEntry> {
        &self.entries
    }

    /// How many entries there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::ramp::state::RampEvent;
    use crate::ramp::window::JudgeHistogram;

    fn arm(requests: u64, errors: u64, ms: u64) -> ArmTick {
        let mut latency = JudgeHistogram::new();
        for _ in 0..requests {
            latency.record(std::time::Duration::from_millis(ms));
        }
        ArmTick {
            requests,
            errors,
            latency,
        }
    }

    fn counts(stable: ArmTick, canary: ArmTick) -> TickCounts {
        let mut halves = [stable.clone(), ArmTick::default()];
        halves[1] = ArmTick::default();
        TickCounts::from_halves(canary, halves)
    }

    #[test]
    fn an_entry_has_the_ticks_own_counts_and_the_state_after_it() {
        let policy = RampPolicy::default();
        let mut state = RampState::idle();
        state.on(RampEvent::Start, 1_000, &policy);
        let tick = counts(arm(100, 2, 20), arm(0, 0, 0));
        state.on(RampEvent::Tick(tick.clone()), 2_000, &policy);
        let e = HistoryEntry::after_tick(&state, &policy, &tick, 2_000);
        assert_eq!(
            (e.at_ms, e.state, e.step, e.weight),
            (2_000, Phase::Baseline, 0, 0.0)
        );
        assert_eq!((e.stable.requests, e.stable.errors), (100, 2));
        assert!((e.stable.error_rate - 0.02).abs() < 1e-12);
        let p99 = e.stable.p99_seconds.unwrap();
        assert!((0.015..=0.03).contains(&p99), "p99 {p99}");
        assert_eq!(
            e.canary,
            ArmPoint::default(),
            "no canary request: rate 0, no p99"
        );
        assert_eq!(e.evidence, None, "not calibrated during the baseline");
    }

    #[test]
    fn errors_are_clamped_to_requests() {
        let p = ArmPoint::of(&arm(3, 7, 1));
        assert_eq!((p.requests, p.errors, p.error_rate), (3, 3, 1.0));
    }

    #[test]
    fn the_history_keeps_the_newest_entries_in_order() {
        let policy = RampPolicy::default();
        let state = RampState::idle();
        let tick = TickCounts::default();
        let h = History::from_entries(
            (0..HISTORY_TICKS as u64 + 5)
                .map(|t| HistoryEntry::after_tick(&state, &policy, &tick, t)),
        );
        assert_eq!(h.len(), HISTORY_TICKS);
        assert_eq!(h.entries().front().unwrap().at_ms, 5);
        assert_eq!(h.entries().back().unwrap().at_ms, HISTORY_TICKS as u64 + 4);
    }

    #[test]
    fn entries_round_trip_through_json() {
        let e = HistoryEntry {
            at_ms: 7,
            state: Phase::Progressing,
            step: 2,
            weight: 5.0,
            stable: ArmPoint::of(&arm(10, 1, 5)),
            canary: ArmPoint::of(&arm(1, 0, 5)),
            evidence: Some(EvidencePoint {
                e_errors: 1.5,
                e_slow: 0.5,
                e: 1.0,
                rollback_threshold: 100.0,
                gate: Some(GatePoint {
                    tolerance: 1.5,
                    f_errors: 3.0,
                    f_slow: 30.0,
                    target: GATE_THRESHOLD,
                    passed: false,
                }),
                hold: false,
            }),
        };
        let text = serde_json::to_string(&e).unwrap();
        assert_eq!(serde_json::from_str::<HistoryEntry>(&text).unwrap(), e);
    }
}
