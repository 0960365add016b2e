//! etcd health as `/status` shows it: `ok`, or `unreachable` since when.
//!
//! Every etcd call reports its outcome here. One failed call does not flip
//! the state (a single timeout is not an outage); etcd is unreachable once
//! no call has succeeded for half a lease, which the keep-alive (every third
//! of a lease) guarantees is noticed within one lease.

use serde::Serialize;

use crate::ramp::Timestamp;

/// What `/status` says about etcd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EtcdHealth {
    /// Calls succeed.
    Ok,
    /// No call has succeeded for half a lease.
    Unreachable,
}

impl EtcdHealth {
    /// The `/status` text.
    pub fn as_str(self) -> &'static str {
        match self {
            EtcdHealth::Ok => "ok",
            EtcdHealth::Unreachable => "unreachable",
        }
    }
}

/// Tracks call outcomes (times in unix milliseconds).
#[derive(Clone, Debug)]
pub struct HealthTracker {
    grace_ms: u64,
    started: Timestamp,
    last_ok: Option<Timestamp>,
    /// When the current run of successes began.
    up_since: Timestamp,
    /// First failure after the last success.
    failing_since: Option<Timestamp>,
}

impl HealthTracker {
    /// A tracker for a fleet with this lease TTL, started at `now`.
    pub fn new(lease_ttl_ms: u64, now: Timestamp) -> HealthTracker {
        HealthTracker {
            grace_ms: lease_ttl_ms / 2,
            started: now,
            last_ok: None,
            up_since: now,
            failing_since: None,
        }
    }

    /// A call succeeded.
    pub fn ok(&mut self, now: Timestamp) {
        if self.status(now).0 == EtcdHealth::Unreachable || self.last_ok.is_none() {
            self.up_since = now;
        }
        self.last_ok = Some(now);
        self.failing_since = None;
    }

    /// A call failed.
    pub fn failed(&mut self, now: Timestamp) {
        self.failing_since.get_or_insert(now);
    }

    /// The state at `now`, and since when it holds.
    pub fn status(&self, now: Timestamp) -> (EtcdHealth, Timestamp) {
        match self.last_ok {
            None => match self.failing_since {
                Some(f) => (EtcdHealth::Unreachable, f),
                None if now < self.started + self.grace_ms => (EtcdHealth::Ok, self.started),
                None => (EtcdHealth::Unreachable, self.started),
            },
            Some(t) if now < t + self.grace_ms => (EtcdHealth::Ok, self.up_since),
            Some(t) => (EtcdHealth::Unreachable, self.failing_since.unwrap_or(t)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use EtcdHealth::*;

    #[test]
    fn transitions() {
        // (event at ms, ok?) then expected status at a time.
        let mut h = HealthTracker::new(4_000, 0);
        assert_eq!(h.status(100).0, Ok, "optimistic until the first calls");
        h.failed(500);
        assert_eq!(h.status(600), (Unreachable, 500), "never reached etcd");
        h.ok(1_000);
        assert_eq!(h.status(1_100), (Ok, 1_000));
        h.ok(1_200);
        assert_eq!(
            h.status(1_300),
            (Ok, 1_000),
            "since the run of successes began"
        );
        h.failed(1_500);
        assert_eq!(h.status(1_600).0, Ok, "one failure within the grace");
        h.failed(2_800);
        assert_eq!(
            h.status(3_500),
            (Unreachable, 1_500),
            "no success for half a lease"
        );
        h.ok(9_000);
        assert_eq!(h.status(9_001), (Ok, 9_000));
        // A hung call (no outcome at all) still turns the state once the grace passes.
        assert_eq!(h.status(11_500).0, Unreachable);
    }
}
