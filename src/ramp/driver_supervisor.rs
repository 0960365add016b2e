//! The driver's supervisor: one task per route with a ramp, kept in line
//! with the live config on every reload; operator commands routed to them.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::task::JoinHandle;

use super::{blocking, canary_fingerprint, CommandError, RouteDriver, RouteMsg, SupervisorMsg};
use crate::config::ConfigDiff;
use crate::persist::Store;
use crate::runtime::{RouteRuntime, Runtime};
use crate::shutdown::shutdown_signalled;

pub(super) struct RouteTask {
    tx: mpsc::Sender<RouteMsg>,
    rt: Arc<RouteRuntime>,
    join: JoinHandle<()>,
}

pub(super) struct Supervisor {
    pub(super) runtime: Arc<Runtime>,
    pub(super) store: Arc<Store>,
    pub(super) tasks: HashMap<String, RouteTask>,
    pub(super) shutdown: watch::Receiver<bool>,
}

impl Supervisor {
    pub(super) async fn run(
        mut self,
        mut commands: mpsc::Receiver<SupervisorMsg>,
        mut reloads: broadcast::Receiver<Arc<ConfigDiff>>,
    ) {
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

    async fn on_command(&mut self, msg: SupervisorMsg) {
        let SupervisorMsg::Command(route, command, reply) = msg;
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
        let names: Vec<String> = self.tasks.keys().cloned().collect();
        for name in names {
            let live = snap
                .config
                .routes
                .iter()
                .zip(&snap.routes)
                .find(|(r, _)| r.name.as_str() == name);
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
        for (route, rt) in snap.config.routes.iter().zip(&snap.routes) {
            let Some(policy) = &route.ramp else { continue };
            let canary = canary_fingerprint(&snap.config, route);
            let name = route.name.as_str();
            match self.tasks.get(name) {
                Some(task) => {
                    let new_ramp = diff.is_some_and(|d| d.canary_changed.contains(&route.name));
                    let _ = task
                        .tx
                        .send(RouteMsg::Config {
                            policy: Box::new(policy.clone()),
                            canary,
                            new_ramp,
                        })
                        .await;
                }
                None => {
                    let (tx, rx) = mpsc::channel(16);
                    // A route added by a reload starts a new ramp even when a
                    // state file of an earlier route of that name is left.
                    let added = diff.is_some_and(|d| d.added_routes.contains(&route.name));
                    let driver = blocking(|| {
                        RouteDriver::open(
                            name,
                            rt.clone(),
                            self.store.clone(),
                            (policy.clone(), canary),
                            added,
                        )
                    });
                    let join = tokio::spawn(driver.run(rx, self.shutdown.clone()));
                    self.tasks.insert(
                        name.to_string(),
                        RouteTask {
                            tx,
                            rt: rt.clone(),
                            join,
                        },
                    );
                }
            }
        }
    }
}
