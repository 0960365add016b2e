//! Passive outlier detection and endpoint choice (Envoy's `consecutive_5xx`).
//!
//! Every exchange with an endpoint reports success or failure here. After
//! `consecutive_failures` failures in a row (no answer at all, or a 5xx) the
//! endpoint is ejected for `base_ejection × 2^(n-1)` (n = how often it was
//! ejected, capped at `max_ejection`); when the time is up it simply rejoins
//! the rotation, and a further run of failures ejects it for longer. The
//! multiplier decays by one for every `base_ejection` the endpoint stays
//! healthy. The last available endpoint of an upstream is never ejected, and
//! when every endpoint is unavailable the balancer ignores health altogether
//! (Envoy's panic mode): a request sent somewhere beats a certain 502.
//!
//! Time is passed in, so the logic is tested with paused time.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Mutex;

use tokio::time::Instant;

use crate::config::types::OutlierPolicy;

/// How one exchange with an endpoint went, as far as its health goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An answer below 500.
    Success,
    /// No answer, or a 5xx.
    Failure,
    /// Not the endpoint's doing (the client's body was too large or broke off).
    Neutral,
}

#[derive(Debug, Default)]
struct Ejection {
    /// Times ejected, decayed while healthy; drives the backoff.
    count: u32,
    /// Ejected until then.
    until: Option<Instant>,
    /// When `count` last decayed (or the ejection ended).
    decay_from: Option<Instant>,
}

/// Health of one endpoint: passive (ejections) and active (health checks).
#[derive(Debug)]
pub struct EndpointHealth {
    consecutive: AtomicU32,
    /// Fast-path flag: set while an ejection may be in force.
    ejected: AtomicBool,
    /// The last active health check passed (true when none is configured).
    check_ok: AtomicBool,
    ejection: Mutex<Ejection>,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        EndpointHealth {
            consecutive: AtomicU32::new(0),
            ejected: AtomicBool::new(false),
            check_ok: AtomicBool::new(true),
            ejection: Mutex::new(Ejection::default()),
        }
    }
}

impl EndpointHealth {
    /// Whether the endpoint may be picked now.
    pub fn available(&self, now: Instant) -> bool {
        self.check_ok.load(Ordering::Relaxed) && !self.is_ejected(now)
    }

    /// Whether an ejection is in force at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        if !self.ejected.load(Ordering::Relaxed) {
            return false;
        }
        let mut e = self.ejection.lock().unwrap_or_else(|p| p.into_inner());
        match e.until {
            Some(until) if now < until => true,
            _ => {
                // The ejection is over: back in rotation.
                e.until = None;
                e.decay_from = Some(now);
                self.ejected.store(false, Ordering::Relaxed);
                false
            }
        }
    }

    /// Records the result of an active health check.
    pub fn set_check_ok(&self, ok: bool) {
        self.check_ok.store(ok, Ordering::Relaxed);
    }

    /// Whether the last active health check passed.
    pub fn check_ok(&self) -> bool {
        self.check_ok.load(Ordering::Relaxed)
    }

    /// Times the endpoint has been ejected (decayed while healthy).
    pub fn ejections(&self) -> u32 {
        self.ejection
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .count
    }

    /// Counts a success; true when a run of failures reached the threshold.
    fn observe(&self, verdict: Verdict, policy: &OutlierPolicy, now: Instant) -> bool {
        match verdict {
            Verdict::Neutral => false,
            Verdict::Success => {
                if self.consecutive.load(Ordering::Relaxed) != 0 {
                    self.consecutive.store(0, Ordering::Relaxed);
                }
                self.decay(policy, now);
                false
            }
            Verdict::Failure => {
                let n = self.consecutive.fetch_add(1, Ordering::Relaxed) + 1;
                n >= policy.consecutive_failures
            }
        }
    }

    /// One step of backoff is forgiven per `base_ejection` of health.
    fn decay(&self, policy: &OutlierPolicy, now: Instant) {
        if self.ejected.load(Ordering::Relaxed) {
            return;
        }
        let mut e = self.ejection.lock().unwrap_or_else(|p| p.into_inner());
        if e.count == 0 {
            return;
        }
        if let Some(from) = e.decay_from {
            if now.saturating_duration_since(from) >= policy.base_ejection {
                e.count -= 1;
                e.decay_from = Some(now);
            }
        }
    }

    /// Ejects for `base × 2^(count-1)`, capped at `max`.
    fn eject(&self, policy: &OutlierPolicy, now: Instant) {
        let mut e = self.ejection.lock().unwrap_or_else(|p| p.into_inner());
        e.count = e.count.saturating_add(1);
        let factor = 1u32 << (e.count - 1).min(16);
        let time = policy
            .base_ejection
            .saturating_mul(factor)
            .min(policy.max_ejection);
        e.until = Some(now + time);
        self.consecutive.store(0, Ordering::Relaxed);
        self.ejected.store(true, Ordering::Relaxed);
        tracing::warn!(ejections = e.count, ?time, "upstream endpoint ejected");
    }
}

/// Picks an endpoint starting at `start` (round-robin): the first available
/// one, or `start` itself when none is (panic mode).
pub fn pick(health: &[&EndpointHealth], start: usize, now: Instant) -> usize {
    let n = health.len().max(1);
    (0..n)
        .map(|k| (start + k) % n)
        .find(|&i| health.get(i).is_some_and(|h| h.available(now)))
        .unwrap_or(start % n)
}

/// Records an exchange with endpoint `i`; ejects it when it has failed
/// often enough and another endpoint is still available.
pub fn observe(
    health: &[&EndpointHealth],
    i: usize,
    verdict: Verdict,
    policy: &OutlierPolicy,
    now: Instant,
) {
    let Some(h) = health.get(i) else { return };
    if !h.observe(verdict, policy, now) {
        return;
    }
    let others_available = health
        .iter()
        .enumerate()
        .any(|(j, o)| j != i && o.available(now));
    if others_available && !h.is_ejected(now) {
        h.eject(policy, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn policy() -> OutlierPolicy {
        OutlierPolicy::default()
    }

    fn fail(hs: &[&EndpointHealth], i: usize, times: usize) {
        for _ in 0..times {
            observe(hs, i, Verdict::Failure, &policy(), Instant::now());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn five_failures_eject_for_a_growing_time() {
        let (a, b) = (EndpointHealth::default(), EndpointHealth::default());
        let hs = [&a, &b];
        fail(&hs, 0, 4);
        assert!(a.available(Instant::now()), "four failures are not enough");
        fail(&hs, 0, 1);
        assert!(!a.available(Instant::now()));
        assert_eq!(pick(&hs, 0, Instant::now()), 1, "traffic moves to b");
        tokio::time::advance(Duration::from_secs(30)).await;
        assert!(a.available(Instant::now()), "back after 30 s");
        fail(&hs, 0, 5);
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!a.available(Instant::now()), "second ejection lasts 60 s");
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(a.available(Instant::now()));
        assert_eq!(a.ejections(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_is_capped_and_decays_while_healthy() {
        let (a, b) = (EndpointHealth::default(), EndpointHealth::default());
        let hs = [&a, &b];
        for _ in 0..6 {
            fail(&hs, 0, 5);
            tokio::time::advance(Duration::from_secs(300)).await;
            assert!(
                a.available(Instant::now()),
                "never longer than max_ejection"
            );
        }
        assert_eq!(a.ejections(), 6);
        for _ in 0..6 {
            observe(&hs, 0, Verdict::Success, &policy(), Instant::now());
            tokio::time::advance(Duration::from_secs(30)).await;
        }
        observe(&hs, 0, Verdict::Success, &policy(), Instant::now());
        assert_eq!(a.ejections(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_reset_the_run_and_neutral_counts_nothing() {
        let (a, b) = (EndpointHealth::default(), EndpointHealth::default());
        let hs = [&a, &b];
        fail(&hs, 0, 4);
        observe(&hs, 0, Verdict::Success, &policy(), Instant::now());
        fail(&hs, 0, 4);
        for _ in 0..10 {
            observe(&hs, 0, Verdict::Neutral, &policy(), Instant::now());
        }
        assert!(a.available(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_available_endpoint_is_never_ejected() {
        let (a, b) = (EndpointHealth::default(), EndpointHealth::default());
        let hs = [&a, &b];
        fail(&hs, 0, 5);
        fail(&hs, 1, 50);
        assert!(b.available(Instant::now()), "b is the last one left");
        let single = [&a];
        tokio::time::advance(Duration::from_secs(30)).await;
        fail(&single, 0, 50);
        assert!(a.available(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn health_checks_take_endpoints_out_and_panic_mode_uses_all() {
        let (a, b) = (EndpointHealth::default(), EndpointHealth::default());
        let hs = [&a, &b];
        a.set_check_ok(false);
        assert_eq!(pick(&hs, 0, Instant::now()), 1);
        assert_eq!(pick(&hs, 1, Instant::now()), 1);
        b.set_check_ok(false);
        assert_eq!(
            pick(&hs, 0, Instant::now()),
            0,
            "none available: round-robin"
        );
        assert_eq!(pick(&hs, 1, Instant::now()), 1);
    }
}
