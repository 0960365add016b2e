//! What the ramp sees of the fleet: the stored state of every route (kept
//! current by a watch), the fleet's counts for the leader's ticks, fenced
//! commits, and the fleet's decision history. Built on a [`Session`].

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::counts::{Accumulator, Consumer, CountsReport, Taken};
use super::session::{FleetView, Session, SessionConfig};
use super::store::{Change, Fence, Store, StoreError, Written};
use crate::config::types::FleetConfig;
use crate::ramp::judge::paired::PairedEvidence;
use crate::ramp::TickCounts;

/// Decisions kept in the fleet's history.
pub const HISTORY: usize = 20;

/// A route's state as stored in etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    /// The JSON value.
    pub value: Vec<u8>,
    /// Its mod revision: what a fenced write of the next state compares.
    pub revision: i64,
}

/// Everything the watch keeps current.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    /// Route → stored state.
    pub states: BTreeMap<String, Stored>,
    /// The last [`HISTORY`] decisions (JSON), oldest first.
    pub history: Vec<Vec<u8>>,
    /// False until the first full read succeeded.
    pub loaded: bool,
}

/// The link between this replica's ramps and the fleet.
#[derive(Clone)]
pub struct FleetLink {
    session: Session,
    snapshot: watch::Receiver<Arc<Snapshot>>,
    acc: Arc<Mutex<Accumulator>>,
    /// The leadership term the consumer belongs to.
    consumer: Arc<tokio::sync::Mutex<(i64, Consumer)>>,
    /// The last read of every replica's counts: the leader's routes tick
    /// on their own timers, and one read serves all that tick together.
    reports: Arc<tokio::sync::Mutex<Option<ReportsRead>>>,
}

type Reports = Arc<Vec<(String, CountsReport)>>;

/// One read of every replica's counts, and the routes that used it.
struct ReportsRead {
    at: tokio::time::Instant,
    reports: Reports,
    used_by: std::collections::HashSet<String>,
}

/// How old a read of the counts may be and still serve another route's tick.
const REPORTS_FRESH: Duration = Duration::from_millis(250);

impl FleetLink {
    /// Connects, joins the fleet and starts watching its states.
    pub async fn start(cfg: &FleetConfig, config_digest: String) -> Result<FleetLink, StoreError> {
        let deadline = (cfg.lease_ttl / 3).max(Duration::from_millis(500));
        let store = Store::connect(cfg, deadline).await?;
        let session = Session::spawn(
            store,
            SessionConfig {
                replica: cfg.replica.clone(),
                lease_ttl: cfg.lease_ttl,
                config_digest,
            },
        );
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        tokio::spawn(watch_states(session.clone(), tx, cfg.lease_ttl / 3));
        let first_generation = super::session::now_ms();
        Ok(FleetLink {
            session,
            snapshot: rx,
            acc: Arc::new(Mutex::new(Accumulator::new(first_generation))),
            consumer: Arc::new(tokio::sync::Mutex::new((0, Consumer::new()))),
            reports: Arc::new(tokio::sync::Mutex::new(None)),
        })
    }

    /// The session (view, shutdown).
    pub fn session(&self) -> &Session {
        &self.session
    }

    /// The fleet as this replica sees it.
    pub fn view(&self) -> FleetView {
        self.session.view()
    }

    /// The latest states and history.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// A receiver woken on every change of states or history.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshot.clone()
    }

    /// Adds this replica's drained tick of `route`, served at `weight_bp`.
    pub fn record(&self, route: &str, weight_bp: u16, tick: &TickCounts) {
        self.acc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add(route, weight_bp, tick);
    }

    /// Adds this replica's paired evidence of `route`'s mirrored requests,
    /// gathered at `weight_bp`.
    pub fn record_pairs(&self, route: &str, weight_bp: u16, pairs: &PairedEvidence) {
        self.acc
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add_pairs(route, weight_bp, pairs);
    }

    /// Publishes this replica's counts (one key for all routes).
    pub async fn publish_counts(&self) -> Result<(), StoreError> {
        let json = {
            let acc = self.acc.lock().unwrap_or_else(|p| p.into_inner());
            serde_json::to_vec(acc.report()).unwrap_or_default()
        };
        self.session.publish_counts(json).await
    }

    /// The leader's tick input: the fleet's new counts of `route` at
    /// `weight_bp`. `Ok(None)` when this replica does not lead.
    pub async fn fleet_counts(
        &self,
        route: &str,
        weight_bp: u16,
    ) -> Result<Option<Taken>, StoreError> {
        let Some(term) = self.view().term() else {
            return Ok(None);
        };
        let reports = self.reports(route).await?;
        let mut c = self.consumer.lock().await;
        if c.0 != term {
            // A new term: forget what an earlier term of ours consumed.
            *c = (term, Consumer::new());
        }
        Ok(Some(c.1.take(route, weight_bp, &reports)))
    }

    /// Every replica's counts: a read younger than [`REPORTS_FRESH`] that
    /// `route` has not used yet, else a new one.
    async fn reports(&self, route: &str) -> Result<Reports, StoreError> {
        let mut cache = self.reports.lock().await;
        if let Some(read) = cache.as_mut() {
            if read.at.elapsed() < REPORTS_FRESH && read.used_by.insert(route.to_owned()) {
                return Ok(read.reports.clone());
            }
        }
        let store = self.session.store();
        let dir = store.keys().all_counts();
        let (entries, _) = store.list(&dir).await?;
        let reports: Reports = Arc::new(
            entries
                .iter()
                .filter_map(|e| {
                    let replica = store.keys().name_under(&dir, e.key.as_bytes())?;
                    Some((replica.to_owned(), serde_json::from_slice(&e.value).ok()?))
                })
                .collect(),
        );
        *cache = Some(ReportsRead {
            at: tokio::time::Instant::now(),
            reports: reports.clone(),
            used_by: [route.to_owned()].into(),
        });
        Ok(reports)
    }

    /// Commits `route`'s next state (and its decisions) if the state is
    /// still at `expected`: fenced by leadership on the leader, by the state
    /// revision alone for an operator command on a follower.
    pub async fn commit(
        &self,
        route: &str,
        expected: i64,
        value: Vec<u8>,
        decisions: Vec<Vec<u8>>,
    ) -> Result<Written, StoreError> {
        let fence = match self.view().term() {
            Some(term) => Fence::Leader(term),
            None => Fence::StateOnly,
        };
        self.commit_with(fence, route, expected, value, decisions)
            .await
    }

    /// [`FleetLink::commit`] with an explicit fence.
    pub async fn commit_with(
        &self,
        fence: Fence,
        route: &str,
        expected: i64,
        value: Vec<u8>,
        decisions: Vec<Vec<u8>>,
    ) -> Result<Written, StoreError> {
        let store = self.session.store();
        let keys = store.keys();
        let at = super::session::now_ms();
        let replica = self.session.replica();
        let extra: Vec<(String, Vec<u8>)> = decisions
            .into_iter()
            .enumerate()
            .map(|(i, d)| (keys.history(at, i, replica), d))
            .collect();
        let n = extra.len();
        let w = store
            .fenced_put(fence, keys.state(route), expected, value, extra)
            .await?;
        match w {
            Written::NotLeader => self.session.recheck(),
            Written::Committed(_) if n > 0 => {
                let _ = store.trim(&keys.histories(), HISTORY).await;
            }
            _ => {}
        }
        Ok(w)
    }
}

/// Keeps the snapshot current: a full read, then a watch from just after it;
/// on any failure, read again after `pause`.
async fn watch_states(session: Session, tx: watch::Sender<Arc<Snapshot>>, pause: Duration) {
    let store = session.store().clone();
    let keys = store.keys().clone();
    loop {
        if tx.is_closed() {
            return;
        }
        let read = async {
            let (states, rev) = store.list(&keys.states()).await?;
            let (history, _) = store.list(&keys.histories()).await?;
            let w = store
                .watch(&[keys.states(), keys.histories()], rev + 1)
                .await?;
            Ok::<_, StoreError>((states, history, w))
        };
        if let Ok((states, history, mut w)) = read.await {
            let mut snap = Snapshot {
                states: states
                    .into_iter()
                    .filter_map(|e| {
                        let route = keys
                            .name_under(&keys.states(), e.key.as_bytes())?
                            .to_owned();
                        Some((
                            route,
                            Stored {
                                value: e.value,
                                revision: e.mod_revision,
                            },
                        ))
                    })
                    .collect(),
                history: Vec::new(),
                loaded: true,
            };
            let mut hist: BTreeMap<String, Vec<u8>> =
                history.into_iter().map(|e| (e.key, e.value)).collect();
            snap.history = last(&hist);
            tx.send_replace(Arc::new(snap.clone()));
            while let Ok(Some(changes)) = w.next().await {
                for c in changes {
                    apply_change(&keys, &mut snap, &mut hist, c);
                }
                snap.history = last(&hist);
                tx.send_replace(Arc::new(snap.clone()));
            }
        }
        tokio::time::sleep(pause).await;
    }
}

fn apply_change(
    keys: &super::keys::Keys,
    snap: &mut Snapshot,
    hist: &mut BTreeMap<String, Vec<u8>>,
    c: Change,
) {
    match c {
        Change::Put(e) => {
            if let Some(route) = keys.name_under(&keys.states(), e.key.as_bytes()) {
                snap.states.insert(
                    route.to_owned(),
                    Stored {
                        value: e.value,
                        revision: e.mod_revision,
                    },
                );
            } else {
                hist.insert(e.key, e.value);
            }
        }
        Change::Delete(k) => {
            if let Some(route) = keys.name_under(&keys.states(), k.as_bytes()) {
                snap.states.remove(route);
            } else {
                hist.remove(&k);
            }
        }
    }
}

fn last(hist: &BTreeMap<String, Vec<u8>>) -> Vec<Vec<u8>> {
    let skip = hist.len().saturating_sub(HISTORY);
    hist.values().skip(skip).cloned().collect()
}
