//! The judge: pure statistics that decide, every tick, whether the canary is
//! shown worse than stable (roll back), shown not much worse (a step may
//! advance) or not known yet (hold). The statistics, in words, and the
//! targets they meet: `docs/judge.md`.
//!
//! * Rollback: stratified rate-ratio mixture e-processes for errors and for
//!   slow requests (above `T`, the judge-histogram boundary at or above
//!   stable's baseline p99); roll back when `(E_err + E_lat)/2 ≥ 1/α`.
//! * Advance gate: non-inferiority e-processes `F(tol)`, one per distinct
//!   gate ratio, all running from the start of the ramp (each is a valid
//!   e-process on its own, so the evidence of earlier steps counts).
//! * Guards: over-dispersion φ̂ from stable's A/A halves and from the
//!   canary/stable split itself (evidence tempered by 1/max(1, φ̂)), incident
//!   hold (gate evidence skips held ticks; rollback evidence keeps them).

mod calibration;
mod eprocess;
mod evidence;
mod guards;
pub mod paired;
mod segments;

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

pub use calibration::{Calibration, Thresholds};
pub use eprocess::{
    log_add_exp, log_mean_exp, LikelihoodGrid, RatioEProcess, Stratum, GATE_FRACTIONS,
    ROLLBACK_MULTIPLIERS,
};
pub use evidence::{summarize, ArmSummary, Evidence, RatioRange, SegmentSummary};
pub use guards::{
    Dispersion, IncidentWindow, SplitDispersion, INCIDENT_RECENT_MS, INCIDENT_WINDOW_MS,
};
pub use segments::SegmentJudge;

use crate::config::types::RampPolicy;
use crate::ramp::window::TickCounts;
use crate::ramp::Timestamp;

/// `F` a gate needs (1/0.05): the canary is shown within the gate's ratio.
pub const GATE_THRESHOLD: f64 = 20.0;
/// Stable requests needed before a p99 (and so `T`) is trusted.
pub const MIN_P99_REQUESTS: u64 = 100;
/// Ticks of `ln F` history used for the gate's ETA.
const ETA_HISTORY: usize = 12;
/// Evidence values are capped here so they stay finite in JSON.
const MAX_LOG_E: f64 = 690.0;

fn capped_exp(x: f64) -> f64 {
    x.min(MAX_LOG_E).exp()
}

/// α = 1 − confidence.
pub fn alpha(policy: &RampPolicy) -> f64 {
    (1.0 - policy.confidence).clamp(1e-12, 0.5)
}

/// Non-inferiority e-processes for one gate ratio.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Gate {
    /// The gate ratio (`gate_ratios[i]`).
    pub tolerance: f64,
    /// `F` for errors (null `tolerance·r0_err`).
    pub errors: RatioEProcess,
    /// `F` for slow requests (null `tolerance·r0_lat`).
    pub slow: RatioEProcess,
}

/// A gate's reading at one tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GateReading {
    /// The gate ratio.
    pub tolerance: f64,
    /// `F` for errors.
    pub f_errors: f64,
    /// `F` for slow requests.
    pub f_slow: f64,
    /// Both reached [`GATE_THRESHOLD`].
    pub passed: bool,
}

/// The judge's answer for one tick.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// End of the tick.
    pub at: Timestamp,
    /// The canary is shown worse: roll back.
    pub rollback: bool,
    /// `E` for errors.
    pub e_errors: f64,
    /// `E` for slow requests.
    pub e_slow: f64,
    /// `(E_err + E_lat)/2`, compared with `1/α`.
    pub e: f64,
    /// The current step's gate (`None` for gate 0 = no gate).
    pub gate: Option<GateReading>,
    /// Shared degradation: the ramp must not advance.
    pub hold: bool,
    /// φ̂ of errors.
    pub phi_errors: f64,
    /// φ̂ of slow requests.
    pub phi_slow: f64,
    /// With segments: the weighted mean of `e` and the segments' e-values, the
    /// statistic compared with `1/α` instead of `e`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e_combined: Option<f64>,
    /// With segments: the segment whose evidence leads the overall's (the
    /// one a rollback names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
}

impl Verdict {
    /// The gate lets the step advance (no gate, or passed).
    pub fn gate_passed(&self) -> bool {
        self.gate.as_ref().map_or(true, |g| g.passed)
    }
}

/// The judge's whole state (serde: persisted after every tick).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Judge {
    /// Baseline history.
    pub calibration: Calibration,
    /// Set when the baseline ends.
    pub thresholds: Option<Thresholds>,
    /// φ̂ of errors from stable's A/A halves (calibrated in the baseline).
    pub dispersion_errors: Dispersion,
    /// φ̂ of slow requests from stable's A/A halves.
    pub dispersion_slow: Dispersion,
    /// φ̂ of errors from the canary/stable split (this ramp).
    #[serde(default)]
    pub split_errors: SplitDispersion,
    /// φ̂ of slow requests from the canary/stable split (this ramp).
    #[serde(default)]
    pub split_slow: SplitDispersion,
    /// Rollback e-process, errors.
    pub rollback_errors: RatioEProcess,
    /// Rollback e-process, slow requests.
    pub rollback_slow: RatioEProcess,
    /// Gate e-processes, one per distinct gate ratio.
    pub gates: Vec<Gate>,
    /// Confidence-range grid, errors.
    pub grid_errors: LikelihoodGrid,
    /// Confidence-range grid, slow requests.
    pub grid_slow: LikelihoodGrid,
    /// Incident detector on stable's errors.
    pub incident_errors: IncidentWindow,
    /// Incident detector on stable's slow requests.
    pub incident_slow: IncidentWindow,
    /// Largest `ln((E_err + E_lat)/2)` so far (for the p-value).
    pub max_log_e: f64,
    /// (time, ln F_err, ln F_lat) of the current gate, for the ETA.
    pub gate_history: VecDeque<(Timestamp, f64, f64)>,
    /// The last verdict.
    pub last: Option<Verdict>,
    /// Per-segment rollback e-processes (routes with `segments`; absent in
    /// state files of older versions).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentJudge>,
}

impl Default for Judge {
    fn default() -> Self {
        Judge::new()
    }
}

impl Judge {
    /// An uncalibrated judge.
    pub fn new() -> Judge {
        Judge {
            calibration: Calibration::default(),
            thresholds: None,
            dispersion_errors: Dispersion::default(),
            dispersion_slow: Dispersion::default(),
            split_errors: SplitDispersion::default(),
            split_slow: SplitDispersion::default(),
            rollback_errors: RatioEProcess::new(1.0, &ROLLBACK_MULTIPLIERS),
            rollback_slow: RatioEProcess::new(1.0, &ROLLBACK_MULTIPLIERS),
            gates: Vec::new(),
            grid_errors: LikelihoodGrid::default(),
            grid_slow: LikelihoodGrid::default(),
            incident_errors: IncidentWindow::default(),
            incident_slow: IncidentWindow::default(),
            max_log_e: 0.0,
            gate_history: VecDeque::new(),
            last: None,
            segments: Vec::new(),
        }
    }

    /// True once the baseline has fixed the thresholds.
    pub fn is_calibrated(&self) -> bool {
        self.thresholds.is_some()
    }

    /// φ̂ of errors in use: the larger of the A/A and the split estimate.
    pub fn phi_errors(&self) -> f64 {
        let r = self.grid_errors.mle().unwrap_or(1.0);
        self.dispersion_errors.phi().max(self.split_errors.phi(r))
    }

    /// φ̂ of slow requests in use.
    pub fn phi_slow(&self) -> f64 {
        let r = self.grid_slow.mle().unwrap_or(1.0);
        self.dispersion_slow.phi().max(self.split_slow.phi(r))
    }

    /// Starts a new ramp: fresh e-processes (E = F = 1) and split φ̂, gates
    /// for every distinct gate ratio, incident windows holding the
    /// baseline's last minute. Calibration is kept.
    pub fn start_ramp(&mut self, policy: &RampPolicy) {
        let (r0e, r0s) = self.r0();
        self.rollback_errors = RatioEProcess::new(r0e, &ROLLBACK_MULTIPLIERS);
        self.rollback_slow = RatioEProcess::new(r0s, &ROLLBACK_MULTIPLIERS);
        self.gates.clear();
        for &tol in &policy.gate_ratios {
            self.gate_mut(tol);
        }
        self.grid_errors = LikelihoodGrid::default();
        self.grid_slow = LikelihoodGrid::default();
        self.split_errors = SplitDispersion::default();
        self.split_slow = SplitDispersion::default();
        self.incident_errors = IncidentWindow::default();
        self.incident_slow = IncidentWindow::default();
        self.seed_incident_windows();
        self.max_log_e = 0.0;
        self.gate_history.clear();
        self.last = None;
        self.segments.clear();
        segments::reconcile(&mut self.segments, policy.segments.as_ref(), r0e, r0s);
    }

    /// A step began: the ETA's drift history restarts.
    pub fn start_step(&mut self) {
        self.gate_history.clear();
    }

    fn r0(&self) -> (f64, f64) {
        self.thresholds
            .as_ref()
            .map_or((1.0, 1.0), |t| (t.r0_errors, t.r0_slow))
    }

    fn gate_mut(&mut self, tol: f64) -> Option<&mut Gate> {
        if tol.is_nan() || tol <= 0.0 {
            return None;
        }
        let pos = match self
            .gates
            .iter()
            .position(|g| (g.tolerance - tol).abs() < 1e-9)
        {
            Some(p) => p,
            None => {
                let (r0e, r0s) = self.r0();
                self.gates.push(Gate {
                    tolerance: tol,
                    errors: RatioEProcess::new(tol * r0e, &GATE_FRACTIONS),
                    slow: RatioEProcess::new(tol * r0s, &GATE_FRACTIONS),
                });
                self.gates.len() - 1
            }
        };
        self.gates.get_mut(pos)
    }

    /// One ramp tick ending at `now`, on a step whose gate ratio is
    /// `gate_tolerance` (0 = no gate).
    pub fn observe(
        &mut self,
        tick: &TickCounts,
        now: Timestamp,
        policy: &RampPolicy,
        gate_tolerance: f64,
    ) -> Verdict {
        if self.thresholds.is_none() {
            self.finish_calibration(policy);
        }
        self.late_slow_threshold(tick, policy);
        let th = match &self.thresholds {
            Some(t) => (t.slow_edge, t.base_error_rate, t.base_slow_rate),
            None => (None, 0.0, 0.0),
        };
        let (slow_edge, base_error_rate, base_slow_rate) = th;
        let (err, held_err, t_err) = self.observe_errors(tick, now, base_error_rate);
        let slow = slow_edge.map(|edge| self.observe_slow(tick, now, edge, base_slow_rate));
        let t_slow = slow.as_ref().map_or((1.0, 1.0), |s| s.2);
        self.observe_segments(tick, policy, slow_edge, t_err, t_slow);
        let mut hold = held_err || slow.as_ref().is_some_and(|s| s.1);
        // The gates take the tick's own φ̂: advancing is no final decision
        // (the rollback processes keep watching every tick).
        for g in &mut self.gates {
            if !held_err {
                g.errors.update(&err, t_err.1, t_err.1);
            }
            if let Some((st, false, t)) = &slow {
                g.slow.update(st, t.1, t.1);
            }
        }
        // The ramp also freezes on the flag this tick raised (advancing is
        // not evidence, so it need not be predictable).
        hold |= self.incident_errors.flagged || self.incident_slow.flagged;
        let (le, ls) = (self.rollback_errors.log_e(), self.rollback_slow.log_e());
        let log_e = log_add_exp(le, ls) - std::f64::consts::LN_2;
        let combined = self.combine_segments(log_e, alpha(policy));
        let decisive = combined.as_ref().map_or(log_e, |c| c.0.ln());
        self.max_log_e = self.max_log_e.max(decisive);
        let gate = self.read_gate(now, gate_tolerance, slow_edge.is_some());
        let (e_combined, segment) = combined.map_or((None, None), |(e, s)| (Some(e), s));
        let verdict = Verdict {
            at: now,
            rollback: decisive >= (1.0 / alpha(policy)).ln(),
            e_combined,
            segment,
            e_errors: capped_exp(le),
            e_slow: capped_exp(ls),
            e: capped_exp(log_e),
            gate,
            hold,
            phi_errors: self.phi_errors(),
            phi_slow: self.phi_slow(),
        };
        self.last = Some(verdict.clone());
        verdict
    }

    /// Each segment's share of a tick, tempered like the overall test.
    fn observe_segments(
        &mut self,
        tick: &TickCounts,
        policy: &RampPolicy,
        slow_edge: Option<usize>,
        t_err: (f64, f64),
        t_slow: (f64, f64),
    ) {
        let (r0e, r0s) = self.r0();
        segments::reconcile(&mut self.segments, policy.segments.as_ref(), r0e, r0s);
        for j in &mut self.segments {
            if let Some(t) = tick.segments.iter().find(|t| t.segment == j.segment) {
                j.update(t, slow_edge, t_err, t_slow);
            }
        }
    }

    /// With segments: the weighted mean of the overall and the segments'
    /// e-values (`ramp::segments::combine`)
    /// and the segment it names (`None` without segments).
    fn combine_segments(&self, log_e: f64, alpha: f64) -> Option<(f64, Option<String>)> {
        if self.segments.is_empty() {
            return None;
        }
        let evidence: Vec<crate::ramp::segments::SegmentEvidence<'_>> = self
            .segments
            .iter()
            .map(|j| crate::ramp::segments::SegmentEvidence {
                segment: &j.segment,
                e: j.e(),
            })
            .collect();
        let c = crate::ramp::segments::combine(alpha, capped_exp(log_e), &evidence);
        Some((c.e, c.worst.map(str::to_owned)))
    }

    /// The error half of a tick: its stratum, whether the (predictable)
    /// hold applies to it, its tempering.
    fn observe_errors(
        &mut self,
        tick: &TickCounts,
        now: Timestamp,
        base_rate: f64,
    ) -> (Stratum, bool, (f64, f64)) {
        let (s, c, h0) = (&tick.stable, &tick.canary, &tick.stable_halves[0]);
        let st = Stratum {
            n_c: c.requests,
            n_s: s.requests,
            x_c: c.errors_clamped(),
            x_s: s.errors_clamped(),
        };
        let t = temper(
            &mut self.dispersion_errors,
            &mut self.split_errors,
            &mut self.grid_errors,
            (h0.requests, h0.errors_clamped()),
            &st,
        );
        self.rollback_errors.update(&st, t.0, t.1);
        let held = self
            .incident_errors
            .update(now, st.x_s, s.requests, base_rate);
        (st, held, t)
    }

    /// The slow-request half of a tick, above boundary `edge`.
    fn observe_slow(
        &mut self,
        tick: &TickCounts,
        now: Timestamp,
        edge: usize,
        base_rate: f64,
    ) -> (Stratum, bool, (f64, f64)) {
        let (s, c, h0) = (&tick.stable, &tick.canary, &tick.stable_halves[0]);
        let st = Stratum {
            n_c: c.requests,
            n_s: s.requests,
            x_c: c.slow(edge),
            x_s: s.slow(edge),
        };
        let t = temper(
            &mut self.dispersion_slow,
            &mut self.split_slow,
            &mut self.grid_slow,
            (h0.requests, h0.slow(edge)),
            &st,
        );
        self.rollback_slow.update(&st, t.0, t.1);
        let held = self
            .incident_slow
            .update(now, st.x_s, s.requests, base_rate);
        (st, held, t)
    }

    /// The current gate's reading (and its ETA history); it passes only
    /// once the slow-request test has a threshold.
    fn read_gate(
        &mut self,
        now: Timestamp,
        tolerance: f64,
        slow_known: bool,
    ) -> Option<GateReading> {
        let (tolerance, fe, fs) = self
            .gate_mut(tolerance)
            .map(|g| (g.tolerance, g.errors.log_e(), g.slow.log_e()))?;
        self.gate_history.push_back((now, fe, fs));
        while self.gate_history.len() > ETA_HISTORY {
            self.gate_history.pop_front();
        }
        Some(GateReading {
            tolerance,
            f_errors: capped_exp(fe),
            f_slow: capped_exp(fs),
            passed: slow_known && fe >= GATE_THRESHOLD.ln() && fs >= GATE_THRESHOLD.ln(),
        })
    }

    /// Seconds until the current gate should pass at the recent drift of
    /// `ln F`; `Some(0)` when passed, `None` when not moving towards it.
    pub fn gate_eta_seconds(&self) -> Option<f64> {
        let (&(t1, e1, s1), &(t0, e0, s0)) =
            (self.gate_history.back()?, self.gate_history.front()?);
        let goal = GATE_THRESHOLD.ln();
        let dt = t1.saturating_sub(t0) as f64 / 1000.0;
        let mut eta: f64 = 0.0;
        for (now, then) in [(e1, e0), (s1, s0)] {
            if now >= goal {
                continue;
            }
            let drift = if dt > 0.0 { (now - then) / dt } else { 0.0 };
            if drift <= 0.0 {
                return None;
            }
            eta = eta.max((goal - now) / drift);
        }
        Some(eta)
    }
}

/// One metric's tempering for one tick, `(before, after)`: 1 / max(1, φ̂)
/// with φ̂ the larger of the A/A and the split estimates, as known before
/// the tick and with the tick counted (the split read at the best-fitting
/// ratio of the same moment). Also adds the tick to the likelihood of `r`.
fn temper(
    aa: &mut Dispersion,
    split: &mut SplitDispersion,
    grid: &mut LikelihoodGrid,
    half0: (u64, u64),
    st: &Stratum,
) -> (f64, f64) {
    let phi = |aa: &Dispersion, split: &SplitDispersion, grid: &LikelihoodGrid| {
        let r = grid.mle().unwrap_or(1.0);
        aa.phi().max(split.phi(r)).max(1.0)
    };
    let before = phi(aa, split, grid);
    aa.update(half0.0, st.n_s, half0.1, st.x_s);
    split.update(st);
    // The likelihood of r is tempered like the e-processes (the larger φ̂).
    let mut after = phi(aa, split, grid);
    grid.update(st, 1.0 / before.max(after));
    after = after.max(phi(aa, split, grid));
    (1.0 / before, 1.0 / after)
}

#[cfg(test)]
mod segment_tests;
#[cfg(test)]
mod tests;
