//! The thin etcd shell: each method is one etcd call with a deadline, and
//! returns plain data. Nothing here decides anything.

use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, GetOptions, KeyValue,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse,
    WatchOptions, WatchStream,
};

use super::keys::Keys;
use super::members::LeaderKey;
use crate::config::types::FleetConfig;

/// What went wrong talking to etcd.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The call did not finish within its deadline.
    #[error("etcd did not answer within {0:?}")]
    Timeout(Duration),
    /// etcd (or the connection to it) failed the call.
    #[error("etcd: {0}")]
    Etcd(#[from] etcd_client::Error),
    /// A file the fleet config names (password, CA) could not be read.
    #[error("{0}")]
    Setup(String),
}

/// A key's value and revisions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Revision of the last write.
    pub mod_revision: i64,
}

/// The outcome of a fenced write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// Committed at this revision.
    Committed(i64),
    /// Not committed: the writer no longer leads (the leader key's create
    /// revision is not the writer's term).
    NotLeader,
    /// Not committed: the state moved since it was read.
    Conflict,
}

/// What a write must still hold to commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fence {
    /// The leader key still has this create revision (the writer's term).
    Leader(i64),
    /// No leadership needed (an operator command on a follower); the state
    /// revision alone fences it.
    StateOnly,
}

/// One change seen by a watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Written.
    Put(Entry),
    /// Deleted (or its lease expired).
    Delete(String),
}

/// A connection to the fleet's etcd.
#[derive(Clone)]
pub struct Store {
    client: Client,
    keys: Keys,
    deadline: Duration,
}

impl Store {
    /// Connects (lazily: without auth no call is made yet, so an unreachable
    /// etcd is found by the first call, not here). Each call gets `deadline`.
    pub async fn connect(cfg: &FleetConfig, deadline: Duration) -> Result<Store, StoreError> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(deadline)
            .with_keep_alive(deadline, deadline)
            .with_keep_alive_while_idle(true);
        if let Some((user, file)) = &cfg.auth {
            let password = std::fs::read_to_string(file).map_err(|e| {
                StoreError::Setup(format!("fleet token_file {}: {e}", file.display()))
            })?;
            opts = opts.with_user(user.clone(), password.trim_end().to_owned());
        }
        if let Some(ca) = &cfg.ca {
            let pem = std::fs::read(ca)
                .map_err(|e| StoreError::Setup(format!("fleet ca {}: {e}", ca.display())))?;
            opts = opts.with_tls(TlsOptions::new().ca_certificate(Certificate::from_pem(pem)));
        }
        let client = timed(deadline, Client::connect(cfg.etcd.clone(), Some(opts))).await?;
        Ok(Store {
            client,
            keys: Keys::new(&cfg.prefix),
            deadline,
        })
    }

    /// The fleet's key layout.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A new lease of `ttl` (whole seconds).
    pub async fn grant(&self, ttl: Duration) -> Result<i64, StoreError> {
        let secs = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        let mut c = self.client.clone();
        Ok(timed(self.deadline, c.lease_grant(secs, None)).await?.id())
    }

    /// Opens a keep-alive stream for `lease`.
    pub async fn keep_alive(&self, lease: i64) -> Result<KeepAlive, StoreError> {
        let mut c = self.client.clone();
        let (keeper, stream) = timed(self.deadline, c.lease_keep_alive(lease)).await?;
        Ok(KeepAlive {
            keeper,
            stream,
            deadline: self.deadline,
        })
    }

    /// Revokes `lease` (its keys go at once): a clean shutdown.
    pub async fn revoke(&self, lease: i64) -> Result<(), StoreError> {
        let mut c = self.client.clone();
        timed(self.deadline, c.lease_revoke(lease)).await?;
        Ok(())
    }

    /// Writes `key` (bound to `lease` when given); returns the revision.
    pub async fn put(
        &self,
        key: String,
        value: Vec<u8>,
        lease: Option<i64>,
    ) -> Result<i64, StoreError> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let mut c = self.client.clone();
        let r = timed(self.deadline, c.put(key, value, opts)).await?;
        Ok(r.header().map_or(0, |h| h.revision()))
    }

    /// Every key under `prefix`, and the revision the read saw.
    pub async fn list(&self, prefix: &str) -> Result<(Vec<Entry>, i64), StoreError> {
        let mut c = self.client.clone();
        let r = timed(
            self.deadline,
            c.get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        let rev = r.header().map_or(0, |h| h.revision());
        Ok((r.kvs().iter().filter_map(entry).collect(), rev))
    }

    /// One key.
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, StoreError> {
        let mut c = self.client.clone();
        let r = timed(self.deadline, c.get(key, None)).await?;
        Ok(r.kvs().first().and_then(entry))
    }

    /// The names (last segments) of the keys under `prefix`.
    pub async fn names(&self, prefix: &str) -> Result<Vec<String>, StoreError> {
        let mut c = self.client.clone();
        let opts = GetOptions::new().with_prefix().with_keys_only();
        let r = timed(self.deadline, c.get(prefix, Some(opts))).await?;
        Ok(r.kvs()
            .iter()
            .filter_map(|kv| self.keys.name_under(prefix, kv.key()))
            .map(str::to_owned)
            .collect())
    }

    /// The election key's holder.
    pub async fn leader(&self) -> Result<Option<LeaderKey>, StoreError> {
        let mut c = self.client.clone();
        let r = timed(self.deadline, c.get(self.keys.leader(), None)).await?;
        Ok(r.kvs().first().and_then(leader_key))
    }

    /// Creates the election key for `replica` on `lease` if it is vacant;
    /// returns whoever holds it afterwards.
    pub async fn campaign(
        &self,
        replica: &str,
        lease: i64,
    ) -> Result<Option<LeaderKey>, StoreError> {
        let key = self.keys.leader();
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(
                key.clone(),
                replica,
                Some(PutOptions::new().with_lease(lease)),
            )])
            .or_else([TxnOp::get(key.clone(), None)]);
        let mut c = self.client.clone();
        let r = timed(self.deadline, c.txn(txn)).await?;
        if r.succeeded() {
            let rev = r.header().map_or(0, |h| h.revision());
            return Ok(Some(LeaderKey {
                replica: replica.to_owned(),
                create_revision: rev,
                lease,
            }));
        }
        Ok(first_get(&r.op_responses()).and_then(|kvs| kvs.first().and_then(leader_key)))
    }

    /// Writes `key` = `value` (plus `extra` puts in the same transaction)
    /// only if `fence` still holds and `key` is still at `expected`
    /// (its mod revision when read; 0 when it did not exist).
    pub async fn fenced_put(
        &self,
        fence: Fence,
        key: String,
        expected: i64,
        value: Vec<u8>,
        extra: Vec<(String, Vec<u8>)>,
    ) -> Result<Written, StoreError> {
        let leader = self.keys.leader();
        let mut when = vec![Compare::mod_revision(
            key.clone(),
            CompareOp::Equal,
            expected,
        )];
        if let Fence::Leader(term) = fence {
            when.push(Compare::create_revision(
                leader.clone(),
                CompareOp::Equal,
                term,
            ));
        }
        let mut ops = vec![TxnOp::put(key, value, None)];
        ops.extend(extra.into_iter().map(|(k, v)| TxnOp::put(k, v, None)));
        let txn = Txn::new()
            .when(when)
            .and_then(ops)
            .or_else([TxnOp::get(leader, None)]);
        let mut c = self.client.clone();
        let r = timed(self.deadline, c.txn(txn)).await?;
        if r.succeeded() {
            return Ok(Written::Committed(r.header().map_or(0, |h| h.revision())));
        }
        let holder = first_get(&r.op_responses()).and_then(|kvs| kvs.first().and_then(leader_key));
        Ok(match fence {
            Fence::Leader(term) if holder.map(|h| h.create_revision) != Some(term) => {
                Written::NotLeader
            }
            _ => Written::Conflict,
        })
    }

    /// Deletes the oldest keys under `prefix`, keeping the newest `keep`.
    pub async fn trim(&self, prefix: &str, keep: usize) -> Result<(), StoreError> {
        let (entries, _) = self.list(prefix).await?;
        if entries.len() <= keep {
            return Ok(());
        }
        let mut c = self.client.clone();
        for e in &entries[..entries.len() - keep] {
            timed(self.deadline, c.delete(e.key.clone(), None)).await?;
        }
        Ok(())
    }

    /// Watches every key under each of `prefixes` from revision `from`.
    pub async fn watch(&self, prefixes: &[String], from: i64) -> Result<Watch, StoreError> {
        let mut c = self.client.clone();
        let opts = || {
            let o = WatchOptions::new().with_prefix();
            if from > 0 {
                o.with_start_revision(from)
            } else {
                o
            }
        };
        let first = prefixes.first().cloned().unwrap_or_default();
        let mut stream = timed(self.deadline, c.watch(first, Some(opts()))).await?;
        for p in prefixes.iter().skip(1) {
            stream.watch(p.clone(), Some(opts())).await?;
        }
        Ok(Watch { stream })
    }
}

/// A lease's keep-alive stream.
pub struct KeepAlive {
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
    deadline: Duration,
}

impl KeepAlive {
    /// Renews the lease once; `Ok(false)` when it has already expired.
    pub async fn renew(&mut self) -> Result<bool, StoreError> {
        timed(self.deadline, self.keeper.keep_alive()).await?;
        let resp = timed(self.deadline, self.stream.message()).await?;
        Ok(resp.is_some_and(|r| r.ttl() > 0))
    }
}

/// A running watch.
pub struct Watch {
    stream: WatchStream,
}

impl Watch {
    /// The next batch of changes; `Ok(None)` when etcd closed the watch
    /// (e.g. the revision was compacted): list again and re-watch.
    pub async fn next(&mut self) -> Result<Option<Vec<Change>>, StoreError> {
        loop {
            let Some(resp) = self.stream.message().await? else {
                return Ok(None);
            };
            if resp.canceled() {
                return Ok(None);
            }
            let changes: Vec<Change> = resp
                .events()
                .iter()
                .filter_map(|ev| {
                    // Not `ev.event_type()`: it panics on an event type it
                    // does not know. A put always has a create revision; a
                    // delete's tombstone has none.
                    let kv = ev.kv()?;
                    if kv.create_revision() > 0 {
                        entry(kv).map(Change::Put)
                    } else {
                        Some(Change::Delete(kv.key_str().ok()?.to_owned()))
                    }
                })
                .collect();
            if !changes.is_empty() {
                return Ok(Some(changes));
            }
        }
    }
}

async fn timed<T>(
    deadline: Duration,
    call: impl std::future::Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, StoreError> {
    match tokio::time::timeout(deadline, call).await {
        Ok(r) => r.map_err(StoreError::Etcd),
        Err(_) => Err(StoreError::Timeout(deadline)),
    }
}

fn entry(kv: &KeyValue) -> Option<Entry> {
    Some(Entry {
        key: kv.key_str().ok()?.to_owned(),
        value: kv.value().to_vec(),
        mod_revision: kv.mod_revision(),
    })
}

fn leader_key(kv: &KeyValue) -> Option<LeaderKey> {
    Some(LeaderKey {
        replica: kv.value_str().ok()?.to_owned(),
        create_revision: kv.create_revision(),
        lease: kv.lease(),
    })
}

fn first_get(ops: &[TxnOpResponse]) -> Option<Vec<KeyValue>> {
    ops.iter().find_map(|op| match op {
        TxnOpResponse::Get(g) => Some(g.kvs().to_vec()),
        _ => None,
    })
}
