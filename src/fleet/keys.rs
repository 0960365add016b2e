//! Where each piece of fleet data lives under the fleet's prefix.
//!
//! ```text
//! PREFIX/leader              the leader's replica id, bound to its lease
//! PREFIX/state/ROUTE         one route's ramp state (JSON), fenced writes only
//! PREFIX/history/MS.N.ID     one decision (JSON), written with the state it made
//! PREFIX/counts/REPLICA      one replica's counts for all routes, bound to its lease
//! PREFIX/members/REPLICA     a replica's membership record (no lease: outlives it)
//! ```

/// The key layout of one fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (without a trailing `/`).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.trim_end_matches('/').to_owned(),
        }
    }

    /// The election key.
    pub fn leader(&self) -> String {
        format!("{}/leader", self.prefix)
    }

    /// A route's ramp state.
    pub fn state(&self, route: &str) -> String {
        format!("{}/state/{route}", self.prefix)
    }

    /// Prefix of every route's state.
    pub fn states(&self) -> String {
        format!("{}/state/", self.prefix)
    }

    /// One history record: the decision's time (zero-padded, so key order
    /// is time order), its index in the commit, and the deciding replica
    /// (so two replicas deciding in the same millisecond never collide).
    pub fn history(&self, at_ms: u64, n: usize, replica: &str) -> String {
        format!("{}/history/{at_ms:015}.{n:03}.{replica}", self.prefix)
    }

    /// Prefix of the history.
    pub fn histories(&self) -> String {
        format!("{}/history/", self.prefix)
    }

    /// A replica's counts.
    pub fn counts(&self, replica: &str) -> String {
        format!("{}/counts/{replica}", self.prefix)
    }

    /// Prefix of every replica's counts (its presence = the replica is alive).
    pub fn all_counts(&self) -> String {
        format!("{}/counts/", self.prefix)
    }

    /// A replica's membership record.
    pub fn member(&self, replica: &str) -> String {
        format!("{}/members/{replica}", self.prefix)
    }

    /// Prefix of every membership record.
    pub fn members(&self) -> String {
        format!("{}/members/", self.prefix)
    }

    /// The last path segment of `key` when it lies directly under `dir`
    /// (one of the prefixes above); `None` for any other key.
    pub fn name_under<'k>(&self, dir: &str, key: &'k [u8]) -> Option<&'k str> {
        let key = std::str::from_utf8(key).ok()?;
        let name = key.strip_prefix(dir)?;
        (!name.is_empty() && !name.contains('/')).then_some(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() {
        let k = Keys::new("/gp/shop/");
        assert_eq!(k.leader(), "/gp/shop/leader");
        assert_eq!(k.state("reco"), "/gp/shop/state/reco");
        assert_eq!(k.counts("gp-1"), "/gp/shop/counts/gp-1");
        assert_eq!(k.member("gp-1"), "/gp/shop/members/gp-1");
        assert_eq!(
            k.history(42, 1, "gp-1"),
            "/gp/shop/history/000000000000042.001.gp-1"
        );
        assert!(
            k.history(9, 5, "b") < k.history(10, 0, "a"),
            "keys sort in time order"
        );
    }

    #[test]
    fn names_under_a_prefix() {
        let k = Keys::new("/gp");
        assert_eq!(k.name_under(&k.states(), b"/gp/state/reco"), Some("reco"));
        assert_eq!(k.name_under(&k.states(), b"/gp/state/"), None);
        assert_eq!(k.name_under(&k.states(), b"/gp/counts/x"), None);
        assert_eq!(k.name_under(&k.states(), b"/gp/state/a/b"), None);
        assert_eq!(k.name_under(&k.states(), b"/gp/state/\xff"), None);
        // A fleet whose prefix extends ours is not ours.
        assert_eq!(k.name_under(&k.states(), b"/gp2/state/reco"), None);
    }
}
