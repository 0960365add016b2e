//! Starting fleet mode beside the proxy: the link, the counts publisher,
//! the fleet metrics, and leaving the fleet at shutdown.

use std::hash::{Hash, Hasher};
use std::time::Duration;

use tokio::sync::watch;

use super::health::EtcdHealth;
use super::link::FleetLink;
use super::store::StoreError;
use crate::config::types::{Config, FleetConfig};
use crate::metrics::Metrics;
use crate::shutdown::shutdown_signalled;

/// Joins the fleet: connects, waits (at most one lease) for the first read
/// of the stored states so the ramps open on them, and starts the
/// background tasks. etcd being down is not an error: the replica serves
/// and joins when etcd is back.
pub async fn start(
    cfg: &FleetConfig,
    config: &Config,
    metrics: &Metrics,
    shutdown: watch::Receiver<bool>,
) -> Result<FleetLink, StoreError> {
    let link = FleetLink::start(cfg, config_digest(config)).await?;
    let mut rx = link.subscribe();
    let loaded = tokio::time::timeout(cfg.lease_ttl, rx.wait_for(|s| s.loaded)).await;
    if loaded.is_err() {
        tracing::warn!(etcd = ?cfg.etcd, "fleet: etcd not reachable yet; serving the configured weights until it is");
    }
    let gauges = metrics
        .fleet()
        .map_err(|e| StoreError::Setup(e.to_string()))?;
    tokio::spawn(publish_counts(
        link.clone(),
        publish_every(config),
        shutdown.clone(),
    ));
    tokio::spawn(update_metrics(link.clone(), gauges, shutdown));
    tracing::info!(replica = %cfg.replica, prefix = %cfg.prefix, "fleet mode: joined");
    Ok(link)
}

/// How often a replica publishes its counts: as often as the fastest ramp
/// ticks (so the leader's tick sees fresh counts), at most 5 times a second.
fn publish_every(config: &Config) -> Duration {
    config
        .routes
        .iter()
        .filter_map(|r| r.ramp.as_ref().map(|p| p.tick))
        .min()
        .unwrap_or(Duration::from_secs(1))
        .max(Duration::from_millis(200))
}

/// A digest of what must agree across the fleet: routes, their upstreams
/// and ramp policies. Same binary + same config = same digest.
pub fn config_digest(config: &Config) -> String {
    let mut h = std::hash::DefaultHasher::new();
    for r in &config.routes {
        r.name.as_str().hash(&mut h);
        format!("{:?}", config.upstream(r.stable).endpoints).hash(&mut h);
        format!("{:?}", config.upstream(r.canary).endpoints).hash(&mut h);
        format!("{:?} {:?}", r.canary_weight, r.ramp).hash(&mut h);
    }
    format!("{:016x}", h.finish())
}

async fn publish_counts(link: FleetLink, every: Duration, mut shutdown: watch::Receiver<bool>) {
    let mut t = tokio::time::interval(every);
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = t.tick() => {
                if let Err(e) = link.publish_counts().await {
                    tracing::debug!(error = %e, "fleet: counts not published");
                }
            }
            () = shutdown_signalled(&mut shutdown) => {
                // Leave: the lease goes, and with it leadership and counts.
                link.session().shutdown().await;
                return;
            }
        }
    }
}

async fn update_metrics(
    link: FleetLink,
    gauges: crate::metrics::FleetMetrics,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut views = link.session().subscribe();
    loop {
        {
            let v = views.borrow_and_update();
            gauges.leader.set(i64::from(v.term().is_some()));
            gauges.etcd_up.set(i64::from(v.etcd == EtcdHealth::Ok));
            let me = v.replicas.iter().find(|m| m.replica == v.replica);
            gauges
                .config_drift
                .set(i64::from(me.is_some_and(|m| m.config_drift)));
            let alive = v.replicas.iter().filter(|m| m.alive).count();
            gauges
                .replicas_alive
                .set(i64::try_from(alive).unwrap_or(i64::MAX));
        }
        tokio::select! {
            r = views.changed() => if r.is_err() { return },
            () = shutdown_signalled(&mut shutdown) => return,
        }
    }
}
