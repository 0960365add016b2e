//! Who is in the fleet, who leads, and whose config differs (pure).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ramp::Timestamp;

/// A replica's membership record (`PREFIX/members/ID`, no lease, so an
/// expired replica stays listed as not alive).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// Replica id.
    pub replica: String,
    /// When this process joined (unix ms).
    pub joined: Timestamp,
    /// Digest of the replica's routes and ramp policies (config drift).
    pub config: String,
}

/// One replica as `/status` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// Replica id.
    pub replica: String,
    /// Holds a live lease.
    pub alive: bool,
    /// Its route/ramp config differs from the leader's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub config_drift: bool,
}

/// The member list: every record, alive when its lease-bound key exists;
/// drift is judged against the leader's config digest (none without a leader).
pub fn members(
    records: &[MemberRecord],
    alive: &BTreeSet<String>,
    leader: Option<&str>,
) -> Vec<Member> {
    let leader_config = leader
        .and_then(|l| records.iter().find(|r| r.replica == l))
        .map(|r| &r.config);
    let mut out: Vec<Member> = records
        .iter()
        .map(|r| Member {
            replica: r.replica.clone(),
            alive: alive.contains(&r.replica),
            config_drift: leader_config.is_some_and(|c| *c != r.config),
        })
        .collect();
    // A live replica whose record is missing (deleted by hand) is still listed.
    for a in alive {
        if !out.iter().any(|m| &m.replica == a) {
            out.push(Member {
                replica: a.clone(),
                alive: true,
                config_drift: false,
            });
        }
    }
    out.sort_by(|a, b| a.replica.cmp(&b.replica));
    out
}

/// Who holds the election key, as read from etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderKey {
    /// The leader's replica id (the key's value).
    pub replica: String,
    /// The key's create revision: unique per leadership term, the fence.
    pub create_revision: i64,
    /// The lease the key is bound to.
    pub lease: i64,
}

/// This replica's role given the election key and its own lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// Leads; its writes compare the leader key's create revision to `term`.
    Leader {
        /// Create revision of the leader key this replica wrote.
        term: i64,
    },
    /// Follows `leader` (none while the key is vacant).
    Follower {
        /// The current leader, if any.
        leader: Option<String>,
    },
}

/// Leads only when the key is bound to this replica's own current lease: a
/// key left behind by an earlier process with the same id (another lease)
/// does not count.
pub fn role(key: Option<&LeaderKey>, replica: &str, lease: Option<i64>) -> Role {
    match key {
        Some(k) if k.replica == replica && Some(k.lease) == lease => Role::Leader {
            term: k.create_revision,
        },
        Some(k) => Role::Follower {
            leader: Some(k.replica.clone()),
        },
        None => Role::Follower { leader: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(r: &str, config: &str) -> MemberRecord {
        MemberRecord {
            replica: r.into(),
            joined: 0,
            config: config.into(),
        }
    }

    #[test]
    fn alive_dead_and_drift() {
        let records = [rec("gp-2", "abc"), rec("gp-1", "abc"), rec("gp-3", "xyz")];
        let alive: BTreeSet<String> = ["gp-1", "gp-2", "gp-4"].map(String::from).into();
        let m = members(&records, &alive, Some("gp-2"));
        let got: Vec<(&str, bool, bool)> = m
            .iter()
            .map(|m| (m.replica.as_str(), m.alive, m.config_drift))
            .collect();
        assert_eq!(
            got,
            [
                ("gp-1", true, false),
                ("gp-2", true, false),
                ("gp-3", false, true),
                ("gp-4", true, false)
            ]
        );
        assert!(
            members(&records, &alive, None)
                .iter()
                .all(|m| !m.config_drift),
            "no leader, no reference"
        );
    }

    #[test]
    fn roles() {
        let key = LeaderKey {
            replica: "gp-1".into(),
            create_revision: 42,
            lease: 7,
        };
        let cases = [
            (Some(&key), "gp-1", Some(7), Role::Leader { term: 42 }),
            (
                Some(&key),
                "gp-1",
                Some(8),
                Role::Follower {
                    leader: Some("gp-1".into()),
                },
            ),
            (
                Some(&key),
                "gp-1",
                None,
                Role::Follower {
                    leader: Some("gp-1".into()),
                },
            ),
            (
                Some(&key),
                "gp-2",
                Some(7),
                Role::Follower {
                    leader: Some("gp-1".into()),
                },
            ),
            (None, "gp-1", Some(7), Role::Follower { leader: None }),
        ];
        for (k, r, l, want) in cases {
            assert_eq!(role(k, r, l), want, "{k:?} {r} {l:?}");
        }
    }
}
