//! The KPI query task: runs a route's Prometheus checks every `interval`
//! and sends each round to the route's driver (which hands it to the state
//! machine as `RampEvent::KpiRound`).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::config::types::{PrometheusCheck, RampPolicy};
use crate::ramp::kpi::{KpiResult, PromClient};

/// One round of KPI checks.
pub(super) struct KpiRound {
    /// When the first query was sent.
    pub(super) started: Instant,
    /// Each check's result.
    pub(super) results: Vec<KpiResult>,
}

/// The running query task, if the route has checks; aborted when dropped
/// (replaced after a reload, or the route's driver ends).
pub(super) struct KpiTask(Option<JoinHandle<()>>);

impl KpiTask {
    /// Starts querying `policy`'s checks for `route` (nothing without checks).
    pub(super) fn spawn(route: &str, policy: &RampPolicy, tx: mpsc::Sender<KpiRound>) -> KpiTask {
        let Some(url) = policy.prometheus_url.clone() else {
            return KpiTask(None);
        };
        if policy.prometheus_checks.is_empty() {
            return KpiTask(None);
        }
        let checks = policy.prometheus_checks.clone();
        let period = policy.interval.max(Duration::from_millis(10));
        let route = route.to_string();
        KpiTask(Some(tokio::spawn(async move {
            let client = PromClient::new(&url);
            let mut every = tokio::time::interval_at(Instant::now() + period, period);
            every.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                let started = Instant::now();
                let mut results = Vec::with_capacity(checks.len());
                for c in &checks {
                    results.push(client.check(&route, c).await);
                }
                if tx.send(KpiRound { started, results }).await.is_err() {
                    return;
                }
            }
        })))
    }
}

impl Drop for KpiTask {
    fn drop(&mut self) {
        if let Some(t) = &self.0 {
            t.abort();
        }
    }
}

/// What the query task depends on: a change restarts it (and the checks).
pub(super) fn checks_of(p: &RampPolicy) -> (Option<&str>, &[PrometheusCheck], Duration) {
    (
        p.prometheus_url.as_deref(),
        &p.prometheus_checks,
        p.interval,
    )
}
