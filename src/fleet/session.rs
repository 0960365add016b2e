//! A replica's membership in the fleet: its lease (kept alive), the election,
//! the member list and etcd's health, published as a [`FleetView`] that the
//! rest of the process reads. The thin async shell around `members` and
//! `health`.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::{watch, Mutex, Notify};

use super::health::{EtcdHealth, HealthTracker};
use super::members::{self, LeaderKey, Member, MemberRecord, Role};
use super::store::{Change, KeepAlive, Store, StoreError};
use crate::ramp::Timestamp;

/// What this replica knows about the fleet right now.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FleetView {
    /// This replica's id.
    pub replica: String,
    /// The leader's id (the last one known while etcd is unreachable).
    pub leader: Option<String>,
    /// `ok` or `unreachable`.
    pub etcd: EtcdHealth,
    /// Since when `etcd` holds (unix ms).
    pub etcd_since: Timestamp,
    /// Every replica that ever joined, alive or not.
    pub replicas: Vec<Member>,
    /// This replica's role; `Leader { term }` carries the fence.
    #[serde(skip)]
    pub role: Role,
    /// This replica's current lease.
    #[serde(skip)]
    pub lease: Option<i64>,
}

impl FleetView {
    /// The fencing term when this replica leads.
    pub fn term(&self) -> Option<i64> {
        match self.role {
            Role::Leader { term } => Some(term),
            Role::Follower { .. } => None,
        }
    }
}

/// What a session needs besides the store.
#[derive(Clone, Debug)]
pub struct SessionConfig {
    /// This replica's id.
    pub replica: String,
    /// Lease TTL (whole seconds).
    pub lease_ttl: Duration,
    /// Digest of this replica's routes and ramp policies.
    pub config_digest: String,
}

/// A running session: read its view, publish counts, stop it.
#[derive(Clone)]
pub struct Session {
    store: Store,
    cfg: SessionConfig,
    view: watch::Receiver<FleetView>,
    /// The last counts published, re-put after a new lease is granted.
    counts: Arc<Mutex<Vec<u8>>>,
    wake: Arc<Notify>,
    stop: watch::Sender<bool>,
}

impl Session {
    /// Starts the session task.
    pub fn spawn(store: Store, cfg: SessionConfig) -> Session {
        let view = FleetView {
            replica: cfg.replica.clone(),
            leader: None,
            etcd: EtcdHealth::Ok,
            etcd_since: now_ms(),
            replicas: Vec::new(),
            role: Role::Follower { leader: None },
            lease: None,
        };
        let (tx, rx) = watch::channel(view);
        let s = Session {
            store,
            cfg,
            view: rx,
            counts: Arc::new(Mutex::new(b"{}".to_vec())),
            wake: Arc::new(Notify::new()),
            stop: watch::channel(false).0,
        };
        tokio::spawn(s.clone().run(tx));
        tokio::spawn(s.clone().watch_leader());
        s
    }

    /// The current view.
    pub fn view(&self) -> FleetView {
        self.view.borrow().clone()
    }

    /// A receiver that sees every new view.
    pub fn subscribe(&self) -> watch::Receiver<FleetView> {
        self.view.clone()
    }

    /// The store this session uses.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// This replica's id.
    pub fn replica(&self) -> &str {
        &self.cfg.replica
    }

    /// Publishes this replica's counts (one key, bound to its lease).
    pub async fn publish_counts(&self, value: Vec<u8>) -> Result<(), StoreError> {
        *self.counts.lock().await = value.clone();
        let Some(lease) = self.view.borrow().lease else {
            return Ok(());
        };
        let key = self.store.keys().counts(&self.cfg.replica);
        self.store.put(key, value, Some(lease)).await.map(|_| ())
    }

    /// Re-reads the election now (after a write found this replica deposed).
    pub fn recheck(&self) {
        self.wake.notify_one();
    }

    /// Stops the session and revokes the lease: the leader key and counts
    /// key go at once, so another replica takes over without waiting a lease.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let lease = self.view.borrow().lease;
        if let Some(lease) = lease {
            let _ = self.store.revoke(lease).await;
        }
    }

    /// Resolves once `shutdown` was called.
    async fn stopped(&self) {
        let mut rx = self.stop.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Stops the session WITHOUT revoking its lease: to the fleet this is a
    /// crash (the lease, the leadership and the counts key expire on their
    /// own after `lease_ttl`).
    pub fn halt(&self) {
        self.stop.send_replace(true);
    }

    async fn run(self, tx: watch::Sender<FleetView>) {
        let mut health = HealthTracker::new(ms(self.cfg.lease_ttl), now_ms());
        let round = self.cfg.lease_ttl / 3;
        loop {
            let lease = tokio::select! {
                _ = self.stopped() => return,
                l = self.join(&mut health, &tx) => l,
            };
            let Some((lease, mut keeper)) = lease else {
                self.publish(&tx, &health, None, None, None);
                tokio::select! {
                    _ = self.stopped() => return,
                    _ = tokio::time::sleep(round) => continue,
                }
            };
            let mut last_renewed = tokio::time::Instant::now();
            loop {
                match keeper.renew().await {
                    Ok(true) => {
                        health.ok(now_ms());
                        last_renewed = tokio::time::Instant::now();
                    }
                    Ok(false) => break,
                    Err(_) => {
                        health.failed(now_ms());
                        // The stream dies with the connection: open another
                        // (fails while etcd is down; tried again next round).
                        if let Ok(k) = self.store.keep_alive(lease).await {
                            keeper = k;
                        }
                    }
                }
                if last_renewed.elapsed() >= self.cfg.lease_ttl {
                    // The lease has surely expired: leadership and the
                    // counts key went with it. Start over with a new one.
                    break;
                }
                self.refresh(&tx, &mut health, lease).await;
                tokio::select! {
                    _ = self.stopped() => return,
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(round) => {}
                }
            }
            tx.send_modify(|v| {
                v.lease = None;
                v.role = Role::Follower {
                    leader: v.leader.clone(),
                };
            });
        }
    }

    /// A lease, the member record and the counts key; `None` when etcd
    /// cannot be reached (recorded in `health`).
    async fn join(
        &self,
        health: &mut HealthTracker,
        tx: &watch::Sender<FleetView>,
    ) -> Option<(i64, KeepAlive)> {
        let r = async {
            let lease = self.store.grant(self.cfg.lease_ttl).await?;
            let keeper = self.store.keep_alive(lease).await?;
            let record = MemberRecord {
                replica: self.cfg.replica.clone(),
                joined: now_ms(),
                config: self.cfg.config_digest.clone(),
            };
            let keys = self.store.keys();
            let json = serde_json::to_vec(&record).unwrap_or_default();
            self.store
                .put(keys.member(&self.cfg.replica), json, None)
                .await?;
            let counts = self.counts.lock().await.clone();
            self.store
                .put(keys.counts(&self.cfg.replica), counts, Some(lease))
                .await?;
            Ok::<_, StoreError>((lease, keeper))
        }
        .await;
        match r {
            Ok((lease, keeper)) => {
                health.ok(now_ms());
                tx.send_modify(|v| v.lease = Some(lease));
                Some((lease, keeper))
            }
            Err(e) => {
                tracing::warn!(error = %e, "fleet: cannot join through etcd");
                health.failed(now_ms());
                None
            }
        }
    }

    /// Campaigns when the leader key is vacant, re-reads the member list,
    /// and publishes the view.
    async fn refresh(&self, tx: &watch::Sender<FleetView>, health: &mut HealthTracker, lease: i64) {
        let keys = self.store.keys().clone();
        let r = async {
            let mut key = self.store.leader().await?;
            if key.is_none() {
                key = self.store.campaign(&self.cfg.replica, lease).await?;
            }
            let alive: BTreeSet<String> = self
                .store
                .names(&keys.all_counts())
                .await?
                .into_iter()
                .collect();
            let (records, _) = self.store.list(&keys.members()).await?;
            let records: Vec<MemberRecord> = records
                .iter()
                .filter_map(|e| serde_json::from_slice(&e.value).ok())
                .collect();
            Ok::<_, StoreError>((key, alive, records))
        }
        .await;
        match r {
            Ok((key, alive, records)) => {
                health.ok(now_ms());
                let leader = key.as_ref().map(|k| k.replica.as_str());
                let list = members::members(&records, &alive, leader);
                self.publish(tx, health, Some(lease), key.as_ref(), Some(list));
            }
            Err(e) => {
                tracing::debug!(error = %e, "fleet: refresh failed");
                health.failed(now_ms());
                let known = tx.borrow().clone();
                self.publish_keep(tx, health, known);
            }
        }
    }

    fn publish(
        &self,
        tx: &watch::Sender<FleetView>,
        health: &HealthTracker,
        lease: Option<i64>,
        key: Option<&LeaderKey>,
        list: Option<Vec<Member>>,
    ) {
        let (etcd, etcd_since) = health.status(now_ms());
        let role = members::role(key, &self.cfg.replica, lease);
        tx.send_if_modified(|v| {
            let next = FleetView {
                replica: self.cfg.replica.clone(),
                leader: key.map(|k| k.replica.clone()).or_else(|| v.leader.clone()),
                etcd,
                etcd_since,
                replicas: list.unwrap_or_else(|| v.replicas.clone()),
                role,
                lease,
            };
            let changed = *v != next;
            *v = next;
            changed
        });
    }

    /// etcd failed this round: keep the last known leader and members,
    /// update only the health (a follower stays a follower; a leader keeps
    /// its term, its writes are fenced by etcd anyway).
    fn publish_keep(
        &self,
        tx: &watch::Sender<FleetView>,
        health: &HealthTracker,
        known: FleetView,
    ) {
        let (etcd, etcd_since) = health.status(now_ms());
        tx.send_if_modified(|v| {
            let changed = v.etcd != etcd || v.etcd_since != etcd_since;
            v.etcd = etcd;
            v.etcd_since = etcd_since;
            v.leader = known.leader.clone();
            changed
        });
    }

    /// Wakes the session as soon as the leader key is deleted (its lease
    /// expired or was revoked), so the next campaign does not wait a round.
    async fn watch_leader(self) {
        let key = self.store.keys().leader();
        loop {
            if let Ok(mut w) = self.store.watch(std::slice::from_ref(&key), 0).await {
                loop {
                    tokio::select! {
                        _ = self.stopped() => return,
                        next = w.next() => match next {
                            Ok(Some(changes)) => {
                                if changes.iter().any(|c| matches!(c, Change::Delete(_))) {
                                    self.wake.notify_one();
                                }
                            }
                            _ => break,
                        },
                    }
                }
            }
            tokio::select! {
                _ = self.stopped() => return,
                _ = tokio::time::sleep(self.cfg.lease_ttl / 3) => {}
            }
        }
    }
}

/// Wall-clock unix milliseconds.
pub fn now_ms() -> Timestamp {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(ms)
        .unwrap_or(0)
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
