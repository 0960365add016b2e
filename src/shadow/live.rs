//! A route's shadow state shared by the request path, `/status` and the
//! ramp: the in-flight count, the shadow-phase switch, the aggregated
//! report and the pairs waiting for the judge. Plain data behind atomics
//! and mutexes; no I/O. Kept across reloads with the route.

use super::compare::{BodyComparison, PairComparison};
use super::report::ShadowStats;
use crate::ramp::judge::paired::Pair;
use crate::status::ShadowReport;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Pairs kept per judge tick at most (the rest are counted, not kept).
pub const MAX_PAIRS_PER_TICK: usize = 100_000;

/// The judge's view of a compared pair.
pub fn judge_pair(pair: &PairComparison) -> Pair {
    Pair {
        stable_failed: pair.stable_failed,
        canary_failed: pair.canary_failed,
        stable_seconds: pair.stable_latency.as_secs_f64(),
        canary_seconds: pair.canary_latency.as_secs_f64(),
        rbo: match &pair.body {
            BodyComparison::Json { rank: Some(r), .. } => Some(r.rbo),
            _ => None,
        },
    }
}

/// A route's live shadow state.
#[derive(Debug, Default)]
pub struct ShadowLive {
    in_flight: AtomicUsize,
    phase: AtomicBool,
    stats: Mutex<ShadowStats>,
    pairs: Mutex<Vec<Pair>>,
}

/// A `max_in_flight` slot, given back when dropped.
#[derive(Debug)]
pub struct InFlightSlot {
    live: Arc<ShadowLive>,
}

impl Drop for InFlightSlot {
    fn drop(&mut self) {
        self.live.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ShadowLive {
    /// Takes one of `max` in-flight slots; `None` when all are taken.
    pub fn try_slot(self: &Arc<Self>, max: usize) -> Option<InFlightSlot> {
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| InFlightSlot { live: self.clone() })
    }

    /// Mirrored requests running now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Whether the ramp is in its shadow phase (mirroring is on even without
    /// `[routes.shadow]`).
    pub fn phase_active(&self) -> bool {
        self.phase.load(Ordering::Relaxed)
    }

    /// Set by the ramp when it enters or leaves its shadow phase.
    pub fn set_phase_active(&self, active: bool) {
        self.phase.store(active, Ordering::Relaxed);
    }

    /// The aggregate, locked (poisoning is ignored: the data stays usable).
    pub fn stats(&self) -> MutexGuard<'_, ShadowStats> {
        self.stats.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a compared pair in the report and for the judge.
    pub fn record_pair(&self, pair: &PairComparison) {
        self.stats().record_pair(pair);
        let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        if pairs.len() < MAX_PAIRS_PER_TICK {
            pairs.push(judge_pair(pair));
        }
    }

    /// The pairs compared since the last call (one judge tick).
    pub fn take_pairs(&self) -> Vec<Pair> {
        let mut pairs = self.pairs.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *pairs)
    }

    /// The `/status` section.
    pub fn report(&self) -> ShadowReport {
        self.stats().report()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_given_back() {
        let live = Arc::new(ShadowLive::default());
        let a = live.try_slot(2);
        let b = live.try_slot(2);
        assert!(a.is_some() && b.is_some());
        assert!(live.try_slot(2).is_none());
        assert_eq!(live.in_flight(), 2);
        drop(a);
        assert!(live.try_slot(2).is_some(), "a freed slot is reusable");
        drop(b);
        assert_eq!(live.in_flight(), 0);
    }
}
