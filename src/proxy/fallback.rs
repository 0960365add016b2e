//! Per-request fallback from a failing canary to stable (`fallback` and
//! `fallback_budget` in the README's configuration reference).

use std::sync::atomic::{AtomicU64, Ordering};

use http::Method;
use tokio::time::Instant;

use super::outcome::{Outcome, SendError};
use crate::grpc::GrpcCode;

/// GET, HEAD and OPTIONS: safe to send twice.
pub fn safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether a canary request that ended with `outcome` may be sent to stable:
/// only a failure ([`Outcome::is_failure`]) falls back; a 5xx answer or a
/// broken exchange for `safe` requests (safe methods, gRPC methods listed in
/// `grpc_idempotent`), and any request the canary provably never received.
/// A gRPC answer falls back only when it is `UNAVAILABLE` before any
/// message (a trailers-only answer) of a safe call.
pub fn eligible(safe: bool, outcome: Outcome, never_received: bool) -> bool {
    if !outcome.is_failure() {
        return false;
    }
    match outcome {
        Outcome::Answered(_) => safe,
        Outcome::Grpc(code, _) => safe && code == GrpcCode::Unavailable,
        Outcome::NoAnswer(SendError::Upstream(_)) => never_received || safe,
        // Not a failure (checked above); listed so a new kind must be placed.
        Outcome::NoAnswer(SendError::ClientBody(_)) => false,
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
        use crate::proxy::body::ClientBodyError::*;
        use crate::proxy::outcome::UpstreamFailure::*;
        use http::StatusCode;
        let up = |f| Outcome::NoAnswer(SendError::Upstream(f));
        let client = |e| Outcome::NoAnswer(SendError::ClientBody(e));
        let status5xx = Outcome::Answered(StatusCode::SERVICE_UNAVAILABLE);
        let get = safe_method(&Method::GET);
        let post = safe_method(&Method::POST);
        let head = safe_method(&Method::HEAD);
        let options = safe_method(&Method::OPTIONS);
        assert!(eligible(get, status5xx, false));
        assert!(!eligible(post, status5xx, false));
        assert!(!eligible(
            get,
            Outcome::Answered(StatusCode::NOT_FOUND),
            false
        ));
        assert!(!eligible(get, Outcome::Answered(StatusCode::OK), true));
        assert!(eligible(head, up(Reset), false));
        assert!(eligible(options, up(Timeout), false));
        assert!(!eligible(post, up(Reset), false));
        assert!(!eligible(post, up(Timeout), false));
        assert!(eligible(post, up(Connect), true));
        assert!(!eligible(get, client(TooLarge), true));
        assert!(!eligible(get, client(Aborted), false));
        // gRPC: UNAVAILABLE (trailers-only) of an idempotent call only.
        let errors = crate::grpc::GrpcCodeSet::default();
        let unavailable = Outcome::Grpc(GrpcCode::Unavailable, errors);
        let internal = Outcome::Grpc(GrpcCode::Internal, errors);
        let ok = Outcome::Grpc(GrpcCode::Ok, errors);
        assert!(eligible(true, unavailable, false));
        assert!(!eligible(false, unavailable, false));
        assert!(!eligible(true, internal, false));
        assert!(!eligible(true, ok, true));
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
