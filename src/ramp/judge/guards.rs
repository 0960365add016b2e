//! The judge's guards: the over-dispersion estimates φ̂ (stable's A/A
//! halves, and the canary/stable split itself) and the incident hold (on
//! stable only).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::ramp::judge::eprocess::Stratum;
use crate::ramp::Timestamp;

/// Pseudo-ticks that shrink φ̂ towards 1.
const SHRINK_TICKS: f64 = 5.0;
/// Window of the incident detector.
pub const INCIDENT_WINDOW_MS: u64 = 60_000;
/// The recent part of the window that must still look abnormal to hold.
pub const INCIDENT_RECENT_MS: u64 = 20_000;

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

/// Pseudo-events that shrink the split's φ̂ towards 1.
const SPLIT_PRIOR: f64 = 5.0;
/// Standard deviations the split's excess variance must reach before it
/// tempers anything.
const SPLIT_Z: f64 = 2.0;

/// Ratios at which the split's dispersion is kept: 2^(k/2) from 1/16 to
/// 128; values between them are interpolated (they are smooth in ln r).
const SPLIT_POINTS: usize = 23;

fn split_ratio(k: usize) -> f64 {
    2f64.powf((k as f64 - 8.0) / 2.0)
}

/// Over-dispersion of the canary/stable split itself. Given a tick's
/// `K = x_c + x_s` events, independent events put `x_c ~ Bin(K, π(r))` on
/// the canary, `π(r) = n_c·r / (n_c·r + n_s)`; events that come in runs on
/// either arm (the canary's alone included) inflate the variance of `x_c`
/// by about E[S²]/E[S], S the run length. It measures the dispersion of
/// exactly the count the e-processes use, wherever it arises.
///
/// φ̂ = (Σ (x_c − Kπ)² + 5) / (Σ Kπ(1−π) + 5): observed over binomial
/// variance, both summed over the ramp, so each tick weighs what it tells
/// the test (a lone canary error at 1 % weight moves it little; a run of
/// five moves it a lot). The sums are kept for a grid of ratios and read at
/// the ratio that fits best *now*, so a canary that is simply worse is not
/// mistaken for a clustered one while the estimate of its ratio catches up.
/// It tempers only once the excess Σ (x_c − Kπ)² − Σ Kπ(1−π) is two
/// binomial standard deviations (plus one event) above 0, so a canary with
/// independent errors keeps φ̂ = 1, and its full evidence, nearly always.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitDispersion {
    /// Σ (x_c − Kπ)², per grid ratio.
    pub squares: Vec<f64>,
    /// Σ Kπ(1−π), per grid ratio: the binomial expectation of `squares`.
    pub expected: Vec<f64>,
    /// Σ of the binomial variance of (x_c − Kπ)², per grid ratio.
    pub variance: Vec<f64>,
}

impl Default for SplitDispersion {
    fn default() -> Self {
        SplitDispersion {
            squares: vec![0.0; SPLIT_POINTS],
            expected: vec![0.0; SPLIT_POINTS],
            variance: vec![0.0; SPLIT_POINTS],
        }
    }
}

impl SplitDispersion {
    /// Adds one tick.
    pub fn update(&mut self, s: &Stratum) {
        if !s.informative() {
            return;
        }
        if self.squares.len() != SPLIT_POINTS
            || self.expected.len() != SPLIT_POINTS
            || self.variance.len() != SPLIT_POINTS
        {
            *self = SplitDispersion::default();
        }
        let k = (s.x_c + s.x_s) as f64;
        for i in 0..SPLIT_POINTS {
            let nc_r = s.n_c as f64 * split_ratio(i);
            let pi = nc_r / (nc_r + s.n_s as f64);
            let pq = pi * (1.0 - pi);
            let v = k * pq;
            self.squares[i] += (s.x_c as f64 - k * pi).powi(2);
            self.expected[i] += v;
            // Var((X − Kπ)²) for X ~ Bin(K, π): v·(1 + 2v − 6π(1−π)).
            self.variance[i] += v * (1.0 + 2.0 * v - 6.0 * pq).max(0.0);
        }
    }

    /// φ̂ at ratio `r` (the best fit so far): 1 with no data, or while the
    /// excess is not significant.
    pub fn phi(&self, r: f64) -> f64 {
        let n = self
            .squares
            .len()
            .min(self.expected.len())
            .min(self.variance.len());
        if n < 3 || !(r > 0.0 && r.is_finite()) {
            return 1.0;
        }
        let x = (2.0 * r.log2() + 8.0).clamp(0.0, (n - 1) as f64);
        let c = (x.round() as usize).clamp(1, n - 2);
        let t = x - c as f64;
        let at = |v: &[f64]| {
            let (a, b, d) = (v[c - 1], v[c], v[c + 1]);
            b + t * (d - a) / 2.0 + t * t * (a - 2.0 * b + d) / 2.0
        };
        let (sq, ex, var) = (at(&self.squares), at(&self.expected), at(&self.variance));
        if sq - ex <= SPLIT_Z * var.max(0.0).sqrt() + 1.0 {
            return 1.0;
        }
        (sq + SPLIT_PRIOR) / (ex.max(0.0) + SPLIT_PRIOR)
    }
}

/// Stable's events over the previous 60 s against its baseline expectation.
///
/// A hold starts when the 60 s hold more than twice the expected events
/// (and more than `e + 3√e + 1`) *and* the last 20 s are still above their
/// normal band (`e + 2√e + 1`). The second condition bounds the tail: a
/// sum over 60 s stays high until the incident's ticks have left it, so on
/// its own it holds for up to a whole window after stable is back to
/// normal (longer when stable settles close to the line, where one tick's
/// fluctuation raises it again). With it, the hold ends at most 20 s (and
/// one tick, the flag being applied to the next tick) after stable's own
/// numbers are back in their band.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentWindow {
    /// (tick end, events, requests) of the ticks that ended in the last 60 s.
    pub ticks: VecDeque<(Timestamp, u64, u64)>,
    /// The flag computed at the last tick, which applies to the next one.
    pub flagged: bool,
    /// Observed / expected events at the last tick (for the audit record).
    pub excess: f64,
}

/// Expected events `e` and observed events `x` → above the line of a hold.
fn far_above(x: f64, e: f64) -> bool {
    x > 2.0 * e && x > e + 3.0 * e.sqrt() + 1.0
}

/// Within the normal band of a Poisson count with mean `e`.
fn within_band(x: f64, e: f64) -> bool {
    x <= e + 2.0 * e.sqrt() + 1.0
}

impl IncidentWindow {
    /// Adds stable's `x` events in `n` requests for the tick ending at `now`;
    /// returns the flag computed at the previous tick (a predictable hold, so
    /// skipping held ticks keeps the gate's e-process valid).
    pub fn update(&mut self, now: Timestamp, x: u64, n: u64, base_rate: f64) -> bool {
        let previous = self.flagged;
        self.push(now, x, n);
        let sums = |from: Timestamp| {
            self.ticks
                .iter()
                .filter(|t| t.0 > from)
                .fold((0u64, 0u64), |(x, n), t| (x + t.1, n + t.2))
        };
        let (events, requests) = sums(0);
        // The recent part: the last 20 s, and never less than the last two ticks.
        let two_ticks_ago = self.ticks.iter().rev().nth(2).map_or(0, |t| t.0);
        let (recent_x, recent_n) = sums(now.saturating_sub(INCIDENT_RECENT_MS).min(two_ticks_ago));
        let e = base_rate * requests as f64;
        let x = events as f64;
        let recent_e = base_rate * recent_n as f64;
        self.flagged = far_above(x, e) && !within_band(recent_x as f64, recent_e);
        self.excess = if e > 0.0 { x / e } else { 0.0 };
        previous
    }

    /// Records a tick without judging it (the baseline's history, so a
    /// ramp starts with a full window).
    pub fn push(&mut self, now: Timestamp, x: u64, n: u64) {
        self.ticks.push_back((now, x, n));
        while let Some(&(at, _, _)) = self.ticks.front() {
            if at + INCIDENT_WINDOW_MS <= now {
                self.ticks.pop_front();
            } else {
                break;
            }
        }
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

    fn stratum(n_c: u64, n_s: u64, x_c: u64, x_s: u64) -> Stratum {
        Stratum { n_c, n_s, x_c, x_s }
    }

    #[test]
    fn split_dispersion_ignores_lone_errors_and_sees_runs_on_the_canary() {
        // 1 % weight: a lone canary error is no sign of clustering.
        let mut d = SplitDispersion::default();
        d.update(&stratum(20, 1980, 1, 9));
        assert_eq!(d.phi(1.0), 1.0);
        // Independent errors, canary share exactly as expected, many ticks.
        let mut d = SplitDispersion::default();
        for x_c in [2, 3, 2, 4, 1, 3, 2, 3, 1, 2].iter().cycle().take(200) {
            d.update(&stratum(500, 1500, *x_c, 8));
        }
        assert_eq!(d.phi(1.0), 1.0, "{d:?}");
        // A run of five errors on the canary alone at 5 % weight.
        let mut d = SplitDispersion::default();
        for _ in 0..10 {
            d.update(&stratum(100, 1900, 0, 10));
        }
        d.update(&stratum(100, 1900, 5, 10));
        assert!(d.phi(0.5) > 3.0, "{}", d.phi(0.5));
    }

    /// One scripted incident: `(tick_ms, incident_s, stable events per tick
    /// in the incident, after it)` with 200 stable requests a second at a
    /// base rate of 0.5 % (one event a second). Returns the seconds from the
    /// incident's end to the last held tick (the flag the ramp sees).
    fn hold_tail(tick_ms: u64, incident_s: u64, during: f64, after: f64) -> Option<u64> {
        let mut w = IncidentWindow::default();
        let per_tick = tick_ms as f64 / 1000.0;
        let n = (200.0 * per_tick) as u64;
        let (start, end) = (120_000u64, 120_000 + incident_s * 1000);
        let mut last_held = None;
        let mut now = 0;
        while now < end + 200_000 {
            now += tick_ms;
            let in_incident = now > start && now <= end;
            let x = (if in_incident { during } else { after } * per_tick).round() as u64;
            let held = w.update(now, x, n, 0.005) || w.flagged;
            if held && now > end {
                last_held = Some((now - end) / 1000);
            }
        }
        last_held
    }

    #[test]
    fn hold_ends_within_the_recent_part_once_stable_is_back() {
        // (tick, incident length, events/s during, after) → the tail's bound
        let table: [(u64, u64, f64, f64, u64); 7] = [
            (1_000, 40, 11.0, 1.0, 21),
            (1_000, 40, 100.0, 1.0, 21),
            (1_000, 120, 4.0, 1.0, 21),
            (1_000, 10, 40.0, 1.0, 21),
            (5_000, 40, 11.0, 1.0, 25),
            (10_000, 40, 11.0, 1.0, 30),
            (1_000, 40, 11.0, 1.3, 21),
        ];
        for (tick, len, during, after, bound) in table {
            let tail = hold_tail(tick, len, during, after);
            assert!(
                tail.is_some_and(|t| t <= bound),
                "tick {tick} ms, {len} s at {during}/s then {after}/s: held {tail:?} s after"
            );
        }
        // A stable still at twice its baseline keeps the hold (it is degraded).
        assert!(hold_tail(1_000, 40, 11.0, 2.5,).is_some_and(|t| t > 100));
    }

    #[test]
    fn a_sum_over_the_window_alone_would_hold_until_the_incident_left_it() {
        // The same 40 s incident judged on the 60 s sum only: the sum drains
        // as the incident's ticks leave, about 55 s after the end.
        let mut w = IncidentWindow::default();
        let mut last = 0;
        for t in 1..=300u64 {
            let x = if (121..=160).contains(&t) { 11 } else { 1 };
            w.update(t * 1000, x, 200, 0.005);
            let (x, n) = w.ticks.iter().fold((0, 0), |(x, n), t| (x + t.1, n + t.2));
            if far_above(x as f64, 0.005 * n as f64) {
                last = t;
            }
        }
        assert!((50..=60).contains(&(last - 160)), "{}", last - 160);
    }
}
