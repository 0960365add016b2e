//! The driver's supervisor: one task per route with a ramp, kept in line
//! with the live config on every reload; operator commands routed to them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use super::blocking;
use super::canary_fingerprint;
use super::route::{RouteDriver, RouteMsg};
use crate::config::types::RampPolicy;
use crate::config::ConfigDiff;
use crate::domain::RouteName;
use crate::driver::handle::CommandRequest;
use crate::persist::RampStore;
use crate::proxy::runtime::{RouteRuntime, Runtime, Snapshot};
use crate::ramp::command::CommandError;
use crate::shutdown::shutdown_signalled;

/// A diff's list of route names as a set (empty without a diff).
fn name_set(names: Option<&[RouteName]>) -> HashSet<&str> {
    names.into_iter().flatten().map(RouteName::as_str).collect()
}

/// A route's running ramp task.
struct RouteTask {
    tx: mpsc::Sender<RouteMsg>,
    rt: Arc<RouteRuntime>,
    join: JoinHandle<()>,
}

/// Keeps one ramp task per route with a ramp and routes commands to them.
pub(super) struct Supervisor {
    runtime: Arc<Runtime>,
    store: Arc<dyn RampStore>,
    tasks: HashMap<String, RouteTask>,
    shutdown: watch::Receiver<bool>,
    /// Fleet mode.
    pub(super) fleet: Option<crate::fleet::link::FleetLink>,
}

impl Supervisor {
    pub(super) fn new(
        runtime: Arc<Runtime>,
        store: Arc<dyn RampStore>,
        shutdown: watch::Receiver<bool>,
    ) -> Supervisor {
        Supervisor {
            runtime,
            store,
            tasks: HashMap::new(),
            shutdown,
            fleet: None,
        }
    }

    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<CommandRequest>,
        mut reloads: broadcast::Receiver<Arc<ConfigDiff>>,
        delay: Duration,
    ) {
        if !delay.is_zero() {
            if !self.wait(delay, &mut commands).await {
                return;
            }
            // The first sync reads the live config: older reloads are in it.
            reloads = reloads.resubscribe();
        }
        self.sync(None).await;
        let mut shutdown = self.shutdown.clone();
        let mut reloads_open = true;
        loop {
            tokio::select! {
                Some(msg) = commands.recv() => self.on_command(msg).await,
                diff = reloads.recv(), if reloads_open => match diff {
                    Ok(diff) => self.sync(Some(&diff)).await,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "ramp driver missed reloads; resyncing with the live config");
                        self.sync(None).await;
                    }
                    Err(broadcast::error::RecvError::Closed) => reloads_open = false,
                },
                () = shutdown_signalled(&mut shutdown) => break,
            }
        }
        // Each task persists its state and exits on the same signal.
        for (_, task) in self.tasks.drain() {
            let _ = task.join.await;
        }
    }

    /// Waits `delay` before the ramps start, refusing commands meanwhile;
    /// `false` when shut down first.
    async fn wait(
        &mut self,
        delay: Duration,
        commands: &mut mpsc::Receiver<CommandRequest>,
    ) -> bool {
        let start = tokio::time::sleep(delay);
        tokio::pin!(start);
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                () = &mut start => return true,
                Some(req) = commands.recv() => {
                    let _ = req.reply.send(Err(CommandError::Stopped));
                }
                () = shutdown_signalled(&mut shutdown) => return false,
            }
        }
    }

    async fn on_command(&mut self, req: CommandRequest) {
        let CommandRequest {
            route,
            command,
            reply,
        } = req;
        let snap = self.runtime.snapshot();
        let Some(config) = snap.config.route(&route) else {
            let _ = reply.send(Err(CommandError::UnknownRoute(route)));
            return;
        };
        if config.ramp.is_none() {
            let _ = reply.send(Err(CommandError::NoRamp(route)));
            return;
        }
        match self.tasks.get(&route) {
            Some(task) => {
                if let Err(mpsc::error::SendError(RouteMsg::Command(_, reply))) =
                    task.tx.send(RouteMsg::Command(command, reply)).await
                {
                    let _ = reply.send(Err(CommandError::Stopped));
                }
            }
            None => {
                let _ = reply.send(Err(CommandError::Stopped));
            }
        }
    }

    /// Brings the set of route tasks in line with the live config.
    async fn sync(&mut self, diff: Option<&ConfigDiff>) {
        let snap = self.runtime.snapshot();
        self.stop_gone(&snap).await;
        // Sets, once: a reload of 10,000 ramped routes asks per route.
        let canary_changed = name_set(diff.map(|d| d.canary_changed.as_slice()));
        let added_routes = name_set(diff.map(|d| d.added_routes.as_slice()));
        for (route, rt) in snap.config.routes.iter().zip(&snap.routes) {
            let Some(policy) = &route.ramp else { continue };
            let canary = canary_fingerprint(&snap.config, route);
            let name = route.name.as_str();
            match self.tasks.get(name) {
                Some(task) => {
                    let new_ramp = canary_changed.contains(name);
                    let msg = RouteMsg::Config {
                        policy: policy.clone(),
                        canary,
                        new_ramp,
                    };
                    let _ = task.tx.send(msg).await;
                }
                None => {
                    // A route added by a reload starts a new ramp even when a
                    // state file of an earlier route of that name is left.
                    let added = added_routes.contains(name);
                    self.spawn(name, rt, (RampPolicy::clone(policy), canary), added);
                }
            }
        }
    }

    /// Stops the tasks of routes that are gone or lost their ramp.
    async fn stop_gone(&mut self, snap: &Snapshot) {
        let live_routes: HashMap<&str, _> = snap
            .config
            .routes
            .iter()
            .zip(&snap.routes)
            .map(|(r, rt)| (r.name.as_str(), (r, rt)))
            .collect();
        let names: Vec<String> = self.tasks.keys().cloned().collect();
        for name in names {
            let live = live_routes.get(name.as_str()).copied();
            let stop = match live {
                None => Some(None),
                Some((route, _)) if route.ramp.is_none() => Some(Some(route.canary_weight)),
                // Removed and re-added between two looks: a new runtime, a new task.
                Some((_, rt))
                    if !self
                        .tasks
                        .get(&name)
                        .is_some_and(|t| Arc::ptr_eq(&t.rt, rt)) =>
                {
                    Some(None)
                }
                Some(_) => None,
            };
            if let Some(file_weight) = stop {
                if let Some(task) = self.tasks.remove(&name) {
                    let _ = task.tx.send(RouteMsg::Stop(file_weight)).await;
                    let _ = task.join.await;
                }
            }
        }
    }

    /// Opens a route's ramp (loading its stored state) and starts its task.
    fn spawn(
        &mut self,
        name: &str,
        rt: &Arc<RouteRuntime>,
        ramp: (RampPolicy, String),
        force_new: bool,
    ) {
        let (tx, rx) = mpsc::channel(16);
        let store = self.store.clone();
        let fleet = self.fleet.clone();
        let driver =
            blocking(|| RouteDriver::open(name, rt.clone(), store, ramp, force_new, fleet));
        let join = tokio::spawn(driver.run(rx, self.shutdown.clone()));
        let task = RouteTask {
            tx,
            rt: rt.clone(),
            join,
        };
        self.tasks.insert(name.to_string(), task);
    }
}
