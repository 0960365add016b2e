//! Live state shared by the proxy, the admin API, reload and the ramp: the
//! current config snapshot (swapped atomically on reload) and per-route state
//! that outlives reloads (live weight, counters, judge window).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::{ArcSwap, ArcSwapOption};

use crate::config::types::{Config, Route};
use crate::domain::{Arm, CanaryWeight, RouteName};
use crate::metrics::{Metrics, RouteMetrics};
use crate::proxy::fallback::FallbackBudget;
use crate::proxy::segments::SegmentLive;
use crate::proxy::upstream::{Pools, UpstreamPool};
use crate::ramp::history::History;
use crate::ramp::state::RampStatus;
use crate::ramp::window::{ArmTick, TickCounts, WindowRecorder};
use crate::routing::RouteIndex;
use crate::shadow::ShadowLive;

/// One route's live state. Kept across reloads (looked up by name) so that
/// counters, the judge window and a ramp-owned weight survive a config edit.
pub struct RouteRuntime {
    /// The route's name.
    pub name: RouteName,
    weight: AtomicU16,
    /// Pre-resolved metric handles.
    pub metrics: RouteMetrics,
    /// Weight-assigned requests since the judge last drained it.
    pub window: WindowRecorder,
    forced: [AtomicU64; 2],
    /// Caps fallbacks to stable.
    pub budget: FallbackBudget,
    /// Weight-assigned totals since start, folded in from `window` by
    /// [`RouteRuntime::drain`]; `None` until the first request (a route's
    /// histograms are ~6 KiB, and most routes of a large table are idle).
    totals: Mutex<Option<Box<[ArmTick; 2]>>>,
    /// Drained from `window` but not yet taken by the ramp as a tick.
    pending: Mutex<Option<TickCounts>>,
    /// The ramp as `/status` shows it; `None` for routes without a ramp.
    pub ramp_status: Mutex<Option<RampStatus>>,
    /// The ramp's last ticks (`GET /routes/{name}/history`), kept by its driver.
    pub history: Mutex<History>,
    /// Shadow traffic's state (idle unless the route mirrors).
    pub shadow: Arc<ShadowLive>,
    /// Per-segment counters (routes whose ramp has `segments`).
    segments: ArcSwapOption<SegmentLive>,
}

impl RouteRuntime {
    fn new(name: RouteName, metrics: RouteMetrics) -> RouteRuntime {
        RouteRuntime {
            name,
            weight: AtomicU16::new(0),
            metrics,
            window: WindowRecorder::new(),
            forced: [AtomicU64::new(0), AtomicU64::new(0)],
            budget: FallbackBudget::default(),
            totals: Mutex::new(None),
            pending: Mutex::new(None),
            ramp_status: Mutex::new(None),
            history: Mutex::new(History::default()),
            shadow: Arc::new(ShadowLive::default()),
            segments: ArcSwapOption::empty(),
        }
    }

    /// The route's per-segment counters, when its ramp has `segments`.
    pub fn segments(&self) -> Option<Arc<SegmentLive>> {
        self.segments.load_full()
    }

    /// Follows the config's segment policy: keeps the counters while it is
    /// unchanged, starts new ones (and drops the old series) when it changed.
    fn set_segments(&self, route: &Route, metrics: &Metrics) {
        let policy = route.ramp.as_ref().and_then(|r| r.segments.as_ref());
        let current = self.segments.load();
        match (policy, current.as_deref()) {
            (Some(p), Some(live)) if live.policy() == p => {}
            (Some(p), _) => {
                let live = SegmentLive::new(p, metrics, self.name.as_str());
                self.segments.store(Some(Arc::new(live)));
            }
            (None, Some(_)) => {
                metrics.forget_segments(self.name.as_str());
                self.segments.store(None);
            }
            (None, None) => {}
        }
    }

    /// The live canary weight.
    pub fn weight(&self) -> CanaryWeight {
        CanaryWeight::from_basis_points(self.weight.load(Ordering::Relaxed))
    }

    /// Sets the live weight (from the file, or from the ramp) and publishes it.
    pub fn set_weight(&self, weight: CanaryWeight) {
        self.weight.store(weight.basis_points(), Ordering::Relaxed);
        self.metrics.set_weight(weight);
    }

    /// Counts a rule-forced request.
    pub fn record_forced(&self, arm: Arm) {
        self.forced[arm.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Rule-forced requests per arm since start.
    pub fn forced(&self, arm: Arm) -> u64 {
        self.forced[arm.index()].load(Ordering::Relaxed)
    }

    /// Drains the recorder into the since-start totals (for `/status`) and
    /// into the pending tick (for the ramp). Called every second, and by the
    /// ramp right before it cuts a tick.
    pub fn drain(&self) {
        // Most routes of a large table are idle most seconds: skip them
        // without building an empty tick.
        if !self.window.has_requests() {
            return;
        }
        let mut tick = self.window.take();
        if tick.is_empty() {
            return;
        }
        if let Some(segments) = self.segments.load().as_deref() {
            tick.segments = segments.take();
        }
        {
            let mut totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
            let totals = totals.get_or_insert_with(Box::default);
            totals[Arm::Stable.index()].merge(&tick.stable);
            totals[Arm::Canary.index()].merge(&tick.canary);
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        match pending.as_mut() {
            None => *pending = Some(tick),
            Some(pending) => pending.merge(&tick),
        }
    }

    /// Everything recorded since the last call: one judge tick.
    pub fn take_tick(&self) -> TickCounts {
        self.drain();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.take().unwrap_or_default()
    }

    /// Weight-assigned totals of one arm since start (as of the last drain).
    pub fn totals(&self, arm: Arm) -> ArmTick {
        let totals = self.totals.lock().unwrap_or_else(|p| p.into_inner());
        totals
            .as_ref()
            .map_or_else(ArmTick::default, |t| t[arm.index()].clone())
    }
}

/// One immutable view of the config, with everything the request path needs
/// resolved. Requests load it once and finish on it even if a reload swaps
/// in a newer one.
pub struct Snapshot {
    /// The validated config.
    pub config: Config,
    /// Live state of each route, in `config.routes` order.
    pub routes: Vec<Arc<RouteRuntime>>,
    /// `config.routes` indexed by host and path prefix, for routing.
    pub route_index: RouteIndex,
    /// Balancers of each upstream, in `config.upstreams` order.
    pub upstreams: Vec<UpstreamPool>,
    /// When this config was loaded.
    pub loaded_at: SystemTime,
}

impl Snapshot {
    /// The live state of route `index`, with its config.
    pub fn route(&self, index: usize) -> Option<(&Route, &Arc<RouteRuntime>)> {
        Some((self.config.routes.get(index)?, self.routes.get(index)?))
    }
}

/// What survives reloads, and builds snapshots from configs.
pub struct Runtime {
    /// All metric families.
    pub metrics: Metrics,
    pools: Pools,
    routes: Mutex<HashMap<RouteName, Arc<RouteRuntime>>>,
    current: ArcSwap<Snapshot>,
    /// The last reload error, for `/status`.
    pub last_error: Mutex<Option<String>>,
    /// Fleet mode's link to etcd, set once at start (never without `[fleet]`).
    pub fleet: std::sync::OnceLock<crate::fleet::link::FleetLink>,
}

impl Runtime {
    /// Builds the runtime around a first config.
    pub fn new(metrics: Metrics, config: Config) -> Arc<Runtime> {
        let pools = Pools::default();
        let routes = Mutex::new(HashMap::new());
        let first = Runtime::build_snapshot(&metrics, &pools, &routes, config);
        Arc::new(Runtime {
            metrics,
            pools,
            routes,
            current: ArcSwap::from_pointee(first),
            last_error: Mutex::new(None),
            fleet: std::sync::OnceLock::new(),
        })
    }

    /// The current snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Builds a snapshot for `config` beside the live one and swaps it in.
    /// Returns the old snapshot.
    pub fn install(&self, config: Config) -> Arc<Snapshot> {
        let next = Runtime::build_snapshot(&self.metrics, &self.pools, &self.routes, config);
        let live: Vec<_> = next
            .config
            .upstreams
            .iter()
            .flat_map(|u| u.endpoints.iter().cloned())
            .collect();
        let old = self.current.swap(Arc::new(next));
        self.pools.retain(&live);
        let snapshot = self.snapshot();
        let names: HashSet<&str> = snapshot
            .config
            .routes
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.retain(|name, _| {
            let keep = names.contains(name.as_str());
            if !keep {
                self.metrics.forget_route(name.as_str());
            }
            keep
        });
        old
    }

    fn build_snapshot(
        metrics: &Metrics,
        pools: &Pools,
        routes: &Mutex<HashMap<RouteName, Arc<RouteRuntime>>>,
        config: Config,
    ) -> Snapshot {
        let mut known = routes.lock().unwrap_or_else(|p| p.into_inner());
        let route_states = config
            .routes
            .iter()
            .map(|route| {
                let state = known
                    .entry(route.name.clone())
                    .or_insert_with(|| {
                        let rt = RouteRuntime::new(
                            route.name.clone(),
                            metrics.route(route.name.as_str(), config.is_grpc_route(route)),
                        );
                        rt.metrics.set_ramp_state("idle");
                        Arc::new(rt)
                    })
                    .clone();
                state.set_segments(route, metrics);
                // Without a ramp the file owns the weight; with one, the ramp does.
                if route.ramp.is_none() {
                    state.set_weight(route.canary_weight);
                }
                state
            })
            .collect();
        let connect_timeout = config.server.connect_timeout;
        let upstreams = config
            .upstreams
            .iter()
            .map(|u| pools.upstream(u, connect_timeout))
            .collect();
        Snapshot {
            route_index: RouteIndex::new(&config.routes),
            config,
            routes: route_states,
            upstreams,
            loaded_at: SystemTime::now(),
        }
    }
}
