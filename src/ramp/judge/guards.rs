//! The judge's guards: the A/A over-dispersion estimate φ̂ and the incident
//! hold. Both look at stable only.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::ramp::Timestamp;

/// Pseudo-ticks that shrink φ̂ towards 1.
const SHRINK_TICKS: f64 = 5.0;
/// Window of the incident detector.
pub const INCIDENT_WINDOW_MS: u64 = 60_000;

/// Pearson dispersion of the stable A/A halves: given a tick's `x` stable
/// events, half 0's share is `Bin(x, n1/n)` when events are independent, so
/// the statistic averages 1; clustered events inflate it to about
/// E[S²]/E[S] (S = cluster size). φ̂ = (χ² + 5)/(D + 5) over D ticks with events.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Dispersion {
    /// Σ χ² over ticks with events.
    pub chi2: f64,
    /// Ticks with events.
    pub ticks: f64,
}

impl Dispersion {
    /// Adds one tick: half 0 had `n1` of `n` requests and `x1` of `x` events.
    pub fn update(&mut self, n1: u64, n: u64, x1: u64, x: u64) {
        if x == 0 || n == 0 || n1 == 0 || n1 >= n {
            return;
        }
        let pi = n1 as f64 / n as f64;
        let x = x as f64;
        let x1 = (x1 as f64).min(x);
        self.chi2 += (x1 - x * pi).powi(2) / (x * pi * (1.0 - pi));
        self.ticks += 1.0;
    }

    /// φ̂ (1 with no data).
    pub fn phi(&self) -> f64 {
        (self.chi2 + SHRINK_TICKS) / (self.ticks + SHRINK_TICKS)
    }

    /// The factor evidence is multiplied by: 1 / max(1, φ̂).
    pub fn scale(&self) -> f64 {
        1.0 / self.phi().max(1.0)
    }
}

/// Stable's events over the previous 60 s against its baseline expectation.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentWindow {
    /// (tick end, events, requests) of the ticks that ended in the last 60 s.
    pub ticks: VecDeque<(Timestamp, u64, u64)>,
    /// The flag computed at the last tick, which applies to the next one.
    pub flagged: bool,
    /// Observed / expected events at the last tick (for the audit record).
    pub excess: f64,
}

impl IncidentWindow {
    /// Adds stable's `x` events in `n` requests for the tick ending at `now`;
    /// returns the flag computed at the previous tick (a predictable hold, so
    /// skipping held ticks keeps the gate's e-process valid).
    pub fn update(&mut self, now: Timestamp, x: u64, n: u64, base_rate: f64) -> bool {
        let previous = self.flagged;
        self.ticks.push_back((now, x, n));
        while let Some(&(at, _, _)) = self.ticks.front() {
            if at + INCIDENT_WINDOW_MS <= now {
                self.ticks.pop_front();
            } else {
                break;
            }
        }
        let events: u64 = self.ticks.iter().map(|t| t.1).sum();
        let requests: u64 = self.ticks.iter().map(|t| t.2).sum();
        let e = base_rate * requests as f64;
        let x = events as f64;
        self.flagged = x > 2.0 * e && x > e + 3.0 * e.sqrt() + 1.0;
        self.excess = if e > 0.0 { x / e } else { 0.0 };
        previous
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dispersion_is_one_without_data_and_grows_with_clusters() {
        let mut d = Dispersion::default();
        assert_eq!(d.phi(), 1.0);
        for _ in 0..20 {
            d.update(500, 1000, 10, 10); // all events in one half: clustered
        }
        assert!(d.phi() > 5.0);
        assert!(d.scale() < 0.2);
    }

    #[test]
    fn incident_flag_applies_to_the_next_tick() {
        let mut w = IncidentWindow::default();
        assert!(!w.update(10_000, 10, 2000, 0.005));
        assert!(!w.update(20_000, 200, 2000, 0.005));
        assert!(w.flagged);
        assert!(w.update(30_000, 10, 2000, 0.005));
        // the burst leaves the 60 s window after six ticks
        for t in 4..=8 {
            w.update(t * 10_000, 10, 2000, 0.005);
        }
        assert!(!w.flagged);
    }
}
