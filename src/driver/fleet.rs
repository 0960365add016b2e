//! Fleet mode for a route's ramp task: the same state machine, but the
//! state lives in etcd.
//!
//! * Only the leader feeds it ticks (the fleet's summed counts, taken at the
//!   route's current weight), KPI rounds and config changes; followers
//!   record their counts for the leader and apply what the watch delivers.
//! * Operator commands go through the state machine on whichever replica
//!   receives them, and are committed like the leader's decisions.
//! * Every commit is fenced (see `crate::fleet::store`): a decision that
//!   does not commit is not applied; the stored state arrives by the watch.
//!   While etcd is unreachable nothing commits, so no weight rises; a
//!   decision that lowers the weight (an operator's rollback or pause) is
//!   applied locally and committed when etcd is back (ramp-sm's "dirty"
//!   retry), unless the fleet's state moved on meanwhile.

use crate::fleet::link::FleetLink;
use crate::fleet::store::Written;
use crate::persist::{StateFile, STATE_VERSION};
use crate::ramp::judge::paired::PairedEvidence;
use crate::ramp::state::{Effect, Phase, RampEvent, RampState};

use super::route::RouteDriver;

/// How a commit error says etcd could not be reached (the decision may be
/// retried); other commit errors are the fleet refusing it.
pub(super) const FLEET_UNREACHABLE: &str = "etcd:";
/// How a commit error says the fleet's state moved on meanwhile.
pub(super) const FLEET_MOVED: &str = "state moved on";

/// Resolves when the fleet's states change; never without a fleet.
pub(super) async fn fleet_changed(
    rx: &mut Option<tokio::sync::watch::Receiver<std::sync::Arc<crate::fleet::link::Snapshot>>>,
) -> Result<(), tokio::sync::watch::error::RecvError> {
    match rx {
        Some(rx) => rx.changed().await,
        None => std::future::pending().await,
    }
}

/// A route's state as stored in etcd: the state file's content, and which
/// replica wrote it (for operators reading etcd, and the fencing tests).
#[derive(serde::Serialize, serde::Deserialize)]
struct FleetState {
    /// The replica that committed this version.
    written_by: String,
    #[serde(flatten)]
    file: StateFile,
}

/// A route task's link to the fleet.
pub(crate) struct FleetRoute {
    pub(crate) link: FleetLink,
    /// Revision of the stored state the task's state is (0: none stored).
    pub(crate) revision: i64,
}

impl FleetRoute {
    pub(crate) fn new(link: FleetLink) -> FleetRoute {
        FleetRoute { link, revision: 0 }
    }

    fn leads(&self) -> bool {
        self.link.view().term().is_some()
    }

    /// Whether this replica may feed `event` to the state machine: the
    /// leader anything, a follower only operator commands.
    pub(crate) fn may_apply(&self, event: &RampEvent) -> bool {
        self.leads() || matches!(event, RampEvent::Command(_))
    }

    /// The stored state of `route` newer than ours, if any.
    fn newer(&self, route: &str) -> Option<(StateFile, i64)> {
        let snap = self.link.snapshot();
        let stored = snap.states.get(route)?;
        if stored.revision <= self.revision {
            return None;
        }
        match serde_json::from_slice::<FleetState>(&stored.value) {
            Ok(s) => Some((s.file, stored.revision)),
            Err(e) => {
                tracing::error!(route, error = %e, "fleet: the stored ramp state cannot be read; ignoring it");
                None
            }
        }
    }
}

/// Runs an etcd call from the route task's synchronous code (the task's
/// file work already runs in `block_in_place`).
fn wait<F: std::future::Future>(f: F) -> Result<F::Output, String> {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| h.block_on(f)))
        }
        _ => Err("fleet mode needs the multi-threaded runtime".into()),
    }
}

impl RouteDriver {
    /// Opening in fleet mode: the stored state when there is one; else the
    /// leader starts the ramp, and a follower waits for it (idle, 0 %).
    pub(super) fn fleet_open(&mut self) {
        if !self.fleet_sync() {
            let _ = self.apply(RampEvent::Start);
        }
    }

    /// Adopts the stored state when it is newer than ours; `true` when the
    /// route has a stored state at all.
    pub(super) fn fleet_sync(&mut self) -> bool {
        let Some(f) = &self.fleet else { return false };
        if let Some((file, rev)) = f.newer(&self.name) {
            // Requests so far ran at the old weight: hand them to the fleet
            // under that weight before switching.
            self.fleet_record();
            if let Some(f) = &mut self.fleet {
                f.revision = rev;
            }
            self.dirty = false;
            self.error = None;
            self.adopt(file.state);
        }
        self.fleet.as_ref().is_some_and(|f| f.revision > 0)
    }

    /// Drains this replica's tick into the fleet's counts, tagged with the
    /// weight it was served at; and its mirrored pairs, classified for the
    /// paired judge with the ramp's slow threshold (the leader judges the
    /// fleet's sum).
    pub(super) fn fleet_record(&mut self) {
        let Some(f) = &self.fleet else { return };
        let counts = self.rt.take_tick();
        let weight_bp = self.rt.weight().basis_points();
        f.link.record(&self.name, weight_bp, &counts);
        let pairs = self.rt.shadow.take_pairs();
        if !pairs.is_empty() {
            let mut evidence = PairedEvidence::default();
            evidence.observe(&pairs, self.state.shadow_slow_seconds());
            f.link.record_pairs(&self.name, weight_bp, &evidence);
        }
    }

    /// The tick in fleet mode: record; the leader then judges the fleet's
    /// counts (starting the ramp if no replica has yet).
    pub(super) fn fleet_tick(&mut self) {
        self.fleet_record();
        self.fleet_sync();
        // A decision applied while etcd was away (a lowering one: a pause,
        // a rollback) is committed now, on whichever replica made it.
        if self.dirty {
            let state = self.state.clone();
            if self.fleet_save(&state, &[]).is_ok() {
                tracing::info!(route = %self.name, "fleet: a decision made while etcd was away is committed");
            }
        }
        let Some(link) = self
            .fleet
            .as_ref()
            .filter(|f| f.leads())
            .map(|f| f.link.clone())
        else {
            return;
        };
        let revision = self.fleet.as_ref().map_or(0, |f| f.revision);
        if revision == 0 && self.state.phase() == Phase::Idle && link.snapshot().loaded {
            let _ = self.apply(RampEvent::Start);
            return;
        }
        if link.view().etcd == crate::fleet::health::EtcdHealth::Unreachable {
            // Nothing could be committed: do not hold a worker on a call
            // that will time out.
            return;
        }
        let weight = self.state.weight().basis_points();
        match wait(link.fleet_counts(&self.name, weight)) {
            Ok(Ok(Some(taken))) => {
                if taken.pairs.pairs > 0 {
                    let _ = self.apply(RampEvent::ShadowEvidence(taken.pairs));
                }
                let _ = self.apply(RampEvent::Tick(taken.counts));
            }
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                tracing::warn!(route = %self.name, error = %e, "fleet: cannot read the fleet's counts; this tick is skipped")
            }
            Err(e) => tracing::error!(route = %self.name, "{e}"),
        }
    }

    /// Names this replica in the decisions just made.
    pub(super) fn fleet_stamp(&self, next: &mut RampState, fx: &mut [Effect]) {
        let Some(f) = &self.fleet else { return };
        let replica = f.link.session().replica();
        next.stamp_replica(replica);
        for e in fx {
            if let Effect::Audit(rec) = e {
                rec.replica.get_or_insert_with(|| replica.to_owned());
            }
        }
    }

    /// Commits `state` and the decisions among `fx` for the fleet (one
    /// fenced transaction), then appends the decisions to the local audit log.
    pub(super) fn fleet_save(&mut self, state: &RampState, fx: &[Effect]) -> Result<(), String> {
        let Some(f) = &self.fleet else {
            return Err("not in fleet mode".into());
        };
        let file = StateFile {
            version: STATE_VERSION,
            route: self.name.clone(),
            canary: self.canary.clone(),
            saved_at_ms: self.clock.now(),
            state: state.clone(),
        };
        let written_by = f.link.session().replica().to_owned();
        let value =
            serde_json::to_vec(&FleetState { written_by, file }).map_err(|e| e.to_string())?;
        let records: Vec<_> = fx
            .iter()
            .filter_map(|e| match e {
                Effect::Audit(rec) => Some(rec.as_ref()),
                _ => None,
            })
            .collect();
        let decisions = records
            .iter()
            .filter_map(|r| crate::persist::audit_line(&self.name, r).ok())
            .map(|l| l.trim_end().as_bytes().to_vec())
            .collect();
        let link = f.link.clone();
        let written = wait(link.commit(&self.name, f.revision, value, decisions))?
            .map_err(|e| format!("{FLEET_UNREACHABLE} {e}"))?;
        match written {
            Written::Committed(rev) => {
                if let Some(f) = &mut self.fleet {
                    f.revision = rev;
                }
                for r in records {
                    if let Err(e) = self.store.append_audit(&self.name, r) {
                        tracing::warn!(route = %self.name, error = %e, "cannot append to the local audit log");
                    }
                }
                self.dirty = false;
                self.error = None;
                Ok(())
            }
            Written::NotLeader => {
                Err("this replica no longer leads the fleet; not committed".into())
            }
            Written::Conflict => Err(format!(
                "the fleet's {FLEET_MOVED} meanwhile; not committed"
            )),
        }
    }
}
