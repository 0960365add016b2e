//! Per-request fallback from a failing canary to stable (CONTRACT §3).

use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;
use tokio::time::Instant;

use super::upstream::UpstreamFailure;

/// What the canary did with a request, as far as fallback cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryOutcome {
    /// It answered with a 5xx.
    Status5xx,
    /// It gave no answer.
    Failed(UpstreamFailure),
}

/// Whether a failed canary request may be sent to stable: safe methods on any
/// eligible failure, any method when the canary provably never received it.
pub fn eligible(method: &Method, outcome: CanaryOutcome, never_received: bool) -> bool {
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    match outcome {
        CanaryOutcome::Status5xx => safe,
        CanaryOutcome::Failed(failure) => failure.fallback_eligible() && (never_received || safe),
    }
}

const SLOTS: usize = 10;

/// Caps fallbacks at `budget × requests + 10` over the last 10 s, so a
/// canary that fails everything cannot double the load on stable.
pub struct FallbackBudget {
    start: Instant,
    /// Per one-second slot: (second it belongs to, requests, fallbacks).
    slots: [(AtomicU64, AtomicU64, AtomicU64); SLOTS],
}

impl Default for FallbackBudget {
    fn default() -> Self {
        FallbackBudget {
            start: Instant::now(),
            slots: std::array::from_fn(|_| {
                (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0))
            }),
        }
    }
}

impl FallbackBudget {
    fn slot(&self, now: Instant) -> &(AtomicU64, AtomicU64, AtomicU64) {
        let second = now.saturating_duration_since(self.start).as_secs();
        let slot = &self.slots[(second % SLOTS as u64) as usize];
        // A slot last used 10+ s ago is reset by whoever gets there first;
        // a racing increment may land in the old count, which only errs by one.
        let seen = slot.0.load(Ordering::Relaxed);
        if seen != second
            && slot
                .0
                .compare_exchange(seen, second, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.1.store(0, Ordering::Relaxed);
            slot.2.store(0, Ordering::Relaxed);
        }
        slot
    }

    /// Counts one request of the route.
    pub fn record_request(&self, now: Instant) {
        self.slot(now).1.fetch_add(1, Ordering::Relaxed);
    }

    /// Takes one fallback from the budget; false when it is spent.
    pub fn try_take(&self, budget: f64, now: Instant) -> bool {
        let second = now.saturating_duration_since(self.start).as_secs();
        let (mut requests, mut fallbacks) = (0u64, 0u64);
        for slot in &self.slots {
            let at = slot.0.load(Ordering::Relaxed);
            if at + (SLOTS as u64) > second && at <= second {
                requests += slot.1.load(Ordering::Relaxed);
                fallbacks += slot.2.load(Ordering::Relaxed);
            }
        }
        if (fallbacks as f64) + 1.0 > budget * requests as f64 + 10.0 {
            return false;
        }
        self.slot(now).2.fetch_add(1, Ordering::Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn eligibility_matrix() {
        use CanaryOutcome::*;
        use UpstreamFailure::*;
        let get = Method::GET;
        let post = Method::POST;
        assert!(eligible(&get, Status5xx, false));
        assert!(!eligible(&post, Status5xx, false));
        assert!(eligible(&Method::HEAD, Failed(Reset), false));
        assert!(eligible(&Method::OPTIONS, Failed(Timeout), false));
        assert!(!eligible(&post, Failed(Reset), false));
        assert!(!eligible(&post, Failed(Timeout), false));
        assert!(eligible(&post, Failed(Connect), true));
        assert!(!eligible(&get, Failed(ClientBodyTooLarge), true));
        assert!(!eligible(&get, Failed(ClientAborted), false));
    }

    #[tokio::test(start_paused = true)]
    async fn budget_caps_fallbacks_over_ten_seconds() {
        let budget = FallbackBudget::default();
        let now = Instant::now();
        for _ in 0..100 {
            budget.record_request(now);
        }
        // 0.2 × 100 + 10 = 30 fallbacks allowed.
        let taken = (0..100).filter(|_| budget.try_take(0.2, now)).count();
        assert_eq!(taken, 30);
        // Ten seconds on, the window has moved past all of it.
        tokio::time::advance(Duration::from_secs(11)).await;
        let later = Instant::now();
        let taken = (0..100).filter(|_| budget.try_take(0.2, later)).count();
        assert_eq!(taken, 10);
    }
}
