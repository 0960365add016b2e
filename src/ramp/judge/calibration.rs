//! The baseline: stable-only history before the first step fixes the base
//! rates, the slow threshold `T`, the null ratios and the A/A dispersion.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use super::{
    Dispersion, Judge, RatioEProcess, GATE_FRACTIONS, INCIDENT_WINDOW_MS, MIN_P99_REQUESTS,
    ROLLBACK_MULTIPLIERS,
};
use crate::config::types::RampPolicy;
use crate::ramp::window::{edge_at_or_above, ArmTick, JudgeHistogram, TickCounts};
use crate::ramp::Timestamp;

/// Stable-only history gathered before the first step.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Calibration {
    /// Stable requests.
    pub requests: u64,
    /// Stable errors.
    pub errors: u64,
    /// Stable latency.
    pub latency: JudgeHistogram,
    /// Calibration ticks.
    pub ticks: u64,
    /// Time the ticks covered, in ms.
    pub covered_ms: u64,
    /// End of the last calibration tick.
    pub last_tick: Option<Timestamp>,
    /// Stable's ticks of the last 60 s (latency kept above the running
    /// p95 only), which seed the incident detector when the ramp starts.
    #[serde(default)]
    pub recent: VecDeque<(Timestamp, ArmTick)>,
}

/// What the baseline fixed for the whole ramp.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    /// Index of the slow threshold `T` among the judge-histogram boundaries;
    /// `None` until stable has served [`MIN_P99_REQUESTS`].
    pub slow_edge: Option<usize>,
    /// Stable's baseline p99, in seconds.
    pub baseline_p99_seconds: Option<f64>,
    /// Stable's baseline error rate.
    pub base_error_rate: f64,
    /// Stable's baseline share of requests slower than `T`.
    pub base_slow_rate: f64,
    /// Null ratio of the error test: 1 + max_error_rate_increase / max(base rate, 0.001).
    pub r0_errors: f64,
    /// Null ratio of the slow-request test (1, or 0.01 / P_baseline(X > T_m)).
    pub r0_slow: f64,
    /// What the operator should know about the calibration (short history etc.).
    pub notes: Vec<String>,
}

/// `arm` with its latency kept above boundary `cut` only (the rest lumped
/// into the first bucket): `T` is at or above the baseline's p99, above
/// this running p95, so the count above `T` stays exact (and can only be
/// under-counted otherwise) while a kept tick costs a few buckets.
fn tail_only(arm: &ArmTick, cut: Option<usize>) -> ArmTick {
    let Some(cut) = cut else {
        return arm.clone();
    };
    let mut latency = JudgeHistogram::new();
    for (b, &n) in arm.latency.counts().iter().enumerate() {
        if n > 0 {
            latency.add_to_bucket(if b > cut { b } else { 0 }, n);
        }
    }
    ArmTick {
        requests: arm.requests,
        errors: arm.errors,
        latency,
    }
}

impl Judge {
    /// One stable-only baseline tick ending at `now`: base rates, p99 and
    /// the A/A dispersion (slow requests counted above the p99 seen so far).
    pub fn calibrate(&mut self, tick: &TickCounts, now: Timestamp, policy: &RampPolicy) {
        let c = &mut self.calibration;
        let tick_ms = policy.tick.as_millis() as u64;
        let covered = c.last_tick.map_or(tick_ms, |t| now.saturating_sub(t));
        c.covered_ms += covered;
        c.last_tick = Some(now);
        c.ticks += 1;
        let [h0, _] = &tick.stable_halves;
        let s = &tick.stable;
        self.dispersion_errors.update(
            h0.requests,
            s.requests,
            h0.errors_clamped(),
            s.errors_clamped(),
        );
        if c.requests >= MIN_P99_REQUESTS {
            if let Some(edge) = c.latency.quantile(0.99).and_then(edge_at_or_above) {
                self.dispersion_slow
                    .update(h0.requests, s.requests, h0.slow(edge), s.slow(edge));
            }
        }
        let cut = c.latency.quantile(0.95).and_then(edge_at_or_above);
        c.recent.push_back((now, tail_only(s, cut)));
        while let Some(&(at, _)) = c.recent.front() {
            if at + INCIDENT_WINDOW_MS <= now {
                c.recent.pop_front();
            } else {
                break;
            }
        }
        c.requests += s.requests;
        c.errors += s.errors_clamped();
        c.latency.merge(&s.latency);
    }

    /// Ends the baseline: fixes the base rates, `T`, `r0` for both tests.
    /// With less history than `policy.baseline` (or too few requests), uses
    /// what exists, resets φ̂ to 1 and says so in the notes.
    pub fn finish_calibration(&mut self, policy: &RampPolicy) -> &Thresholds {
        let c = &self.calibration;
        let mut notes = Vec::new();
        let wanted_ms = policy.baseline.as_millis() as u64;
        let short = c.covered_ms.saturating_mul(10) < wanted_ms.saturating_mul(9);
        if short {
            notes.push(format!(
                "baseline covered {} s of the configured {} s: using what exists, φ̂ = 1 until the A/A halves show otherwise",
                c.covered_ms / 1000,
                wanted_ms / 1000
            ));
            self.dispersion_errors = Dispersion::default();
            self.dispersion_slow = Dispersion::default();
        }
        let base_error_rate = if c.requests > 0 {
            c.errors as f64 / c.requests as f64
        } else {
            0.0
        };
        if c.requests == 0 {
            notes.push("baseline saw no stable requests: base error rate unknown".to_string());
        }
        let r0_errors = 1.0 + policy.max_error_rate_increase / base_error_rate.max(0.001);
        let mut t = Thresholds {
            slow_edge: None,
            baseline_p99_seconds: None,
            base_error_rate,
            base_slow_rate: 0.0,
            r0_errors,
            r0_slow: 1.0,
            notes,
        };
        derive_slow_threshold(&mut t, &c.latency, policy);
        if t.slow_edge.is_none() {
            t.notes.push(format!(
                "stable p99 unknown (fewer than {MIN_P99_REQUESTS} requests): the slow-request test starts once stable has them"
            ));
        }
        self.thresholds.insert(t)
    }

    /// Fills the incident detectors with the baseline's last 60 s, so a
    /// ramp's first minute is judged against a full window (a few
    /// clustered errors then weigh what they would weigh later).
    pub(super) fn seed_incident_windows(&mut self) {
        let edge = self.thresholds.as_ref().and_then(|t| t.slow_edge);
        for (at, arm) in &self.calibration.recent {
            self.incident_errors
                .push(*at, arm.errors_clamped(), arm.requests);
            if let Some(e) = edge {
                self.incident_slow.push(*at, arm.slow(e), arm.requests);
            }
        }
    }

    /// Without a baseline p99, `T` comes from stable's first ramp requests.
    pub(super) fn late_slow_threshold(&mut self, tick: &TickCounts, policy: &RampPolicy) {
        let Some(t) = self.thresholds.as_mut() else {
            return;
        };
        if t.slow_edge.is_some() {
            return;
        }
        self.calibration.latency.merge(&tick.stable.latency);
        derive_slow_threshold(t, &self.calibration.latency, policy);
        if t.slow_edge.is_none() {
            return;
        }
        t.notes
            .push("slow threshold T set from stable's first ramp requests".to_string());
        // No slow-request evidence existed yet: restart those processes with the real r0.
        let r0 = t.r0_slow;
        self.rollback_slow = RatioEProcess::new(r0, &ROLLBACK_MULTIPLIERS);
        for g in &mut self.gates {
            g.slow = RatioEProcess::new(g.tolerance * r0, &GATE_FRACTIONS);
        }
    }
}

/// `T` = the smallest boundary ≥ stable's p99 (or ≥ (1+m)·p99 with
/// `max_p99_increase` m > 0, and then r0_lat = 1 % / P_baseline(X > T)).
pub(super) fn derive_slow_threshold(
    t: &mut Thresholds,
    hist: &JudgeHistogram,
    policy: &RampPolicy,
) {
    let total = hist.total();
    if total < MIN_P99_REQUESTS {
        return;
    }
    let Some(p99) = hist.quantile(0.99) else {
        return;
    };
    let m = policy.max_p99_increase.max(0.0);
    let Some(edge) = edge_at_or_above(p99 * (1.0 + m)) else {
        return;
    };
    let above = hist.count_above(edge);
    t.slow_edge = Some(edge);
    t.baseline_p99_seconds = Some(p99);
    t.base_slow_rate = above as f64 / total as f64;
    if m > 0.0 {
        let p = above.max(1) as f64 / total as f64;
        t.r0_slow = (0.01 / p).max(1.0);
    }
}
