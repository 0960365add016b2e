//! Builds and wires the running proxy: listeners, admin API, reload, the
//! ramp driver, the per-second stats drain. Exposes the bound addresses
//! (port 0 works). A running [`App`] always has its ramp driver.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;

use crate::admin::{self, Admin};
use crate::config::{self, ConfigDiff};
use crate::driver::handle::RampHandle;
use crate::driver::Driver;
use crate::metrics::Metrics;
use crate::persist::Store;
use crate::proxy::runtime::Runtime;
use crate::reload;
use crate::server;
use crate::shutdown::shutdown_signalled;
use crate::workers;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The admin API would be reachable from the network without a token.
    #[error("admin.listen {0} is not a loopback address and admin.token_file is not set: anyone who can reach it could change weights; set admin.token_file or listen on 127.0.0.1")]
    UnprotectedAdmin(SocketAddr),
    /// The config file is invalid (every error, rendered).
    #[error("{0}")]
    Config(config::ConfigErrors),
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// `proxy` or `admin`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The TLS certificate or key could not be loaded.
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// Metrics could not be registered (a bug).
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    /// Fleet mode could not be set up (a password or CA file unreadable).
    #[error("fleet: {0}")]
    Fleet(#[from] crate::fleet::store::StoreError),
}

/// How to start an [`App`]; the default is what `grayproxy run` does.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// How long the ramp driver waits before it loads the ramps' state and
    /// takes over their routes' weights (until then the file's weight
    /// applies). The demo warms its connection pools first, so that the
    /// cold start's slow requests do not calibrate the baseline.
    pub ramp_delay: Duration,
}

/// A running grayproxy.
pub struct App {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// Live state.
    pub runtime: Arc<Runtime>,
    /// Every applied reload, for subscribers (the ramp).
    pub reloads: broadcast::Sender<Arc<ConfigDiff>>,
    shutdown: watch::Sender<bool>,
    ready: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// Operator commands to the ramp driver (the admin API has a clone).
    ramp: RampHandle,
}

impl App {
    /// Loads the config at `path`, binds the listeners and starts serving,
    /// the ramp driver included.
    pub async fn start(path: &Path) -> Result<App, StartError> {
        App::start_with(path, StartOptions::default()).await
    }

    /// [`App::start`] with options.
    pub async fn start_with(path: &Path, options: StartOptions) -> Result<App, StartError> {
        let loaded = reload::load_isolated(path).map_err(StartError::Config)?;
        App::start_loaded(path, loaded, options).await
    }

    /// [`App::start_with`] for a config already loaded from `path` (the
    /// binary reads it once, before its runtime exists, for `workers`;
    /// loading a large file twice doubled the start-up's peak memory).
    pub async fn start_loaded(
        path: &Path,
        loaded: config::Loaded,
        options: StartOptions,
    ) -> Result<App, StartError> {
        for warning in &loaded.warnings {
            tracing::warn!("{warning}");
        }
        let proxy_listen = loaded.config.server.listen;
        let tls = match &loaded.config.server.tls {
            Some(files) => Some(Arc::new(crate::tls::ServerTls::new(files)?)),
            None => None,
        };
        let admin_listen = loaded.config.admin.listen;
        check_admin_exposure(&loaded.config.admin)?;
        let proxy_threads = workers::thread_count(loaded.config.server.workers);
        let runtime = Runtime::new(Metrics::new()?, loaded.config);
        let (shutdown, shutdown_rx) = watch::channel(false);
        let mut tasks = JoinSet::new();
        // One worker: the proxy runs on this runtime (the binary makes it a
        // current-thread one). More: each on a thread of its own, bound
        // once the fleet link and the ramp driver are up.
        let proxy_listener = if proxy_threads == 1 {
            Some(bind("proxy", proxy_listen).await?)
        } else {
            None
        };
        let admin_listener = bind("admin", admin_listen).await?;
        let admin_addr = local_addr("admin", &admin_listener, admin_listen)?;

        let (ready_tx, ready_rx) = watch::channel(false);
        let (reloads, _) = broadcast::channel(16);
        let fleet_cfg = runtime.snapshot().config.fleet.clone();
        if let Some(cfg) = fleet_cfg {
            let snap = runtime.snapshot();
            let link = crate::fleet::runner::start(
                &cfg,
                &snap.config,
                &runtime.metrics,
                shutdown_rx.clone(),
            )
            .await?;
            let _ = runtime.fleet.set(link);
        }
        let ramp = spawn_ramp(&mut tasks, &runtime, &reloads, &shutdown_rx, &options);
        let proxy_addr = match proxy_listener {
            Some(listener) => {
                let addr = local_addr("proxy", &listener, proxy_listen)?;
                tasks.spawn(server::serve_proxy(
                    listener,
                    runtime.clone(),
                    shutdown_rx.clone(),
                    tls,
                ));
                addr
            }
            None => {
                let started =
                    workers::start(proxy_threads, proxy_listen, &runtime, &shutdown_rx, tls).await;
                let proxy = started.map_err(|source| StartError::Bind {
                    what: "proxy",
                    addr: proxy_listen,
                    source,
                })?;
                let addr = proxy.addr;
                tasks.spawn(proxy.stopped());
                addr
            }
        };
        tasks.spawn(admin::serve_admin(
            admin_listener,
            Admin::new(runtime.clone(), ready_rx, ramp.clone()),
            shutdown_rx.clone(),
        ));
        tasks.spawn(reload::watch_config(
            runtime.clone(),
            PathBuf::from(path),
            reloads.clone(),
            shutdown_rx.clone(),
        ));
        tasks.spawn(drain_stats(runtime.clone(), shutdown_rx));
        let _ = ready_tx.send(true);
        tracing::info!(proxy = %proxy_addr, admin = %admin_addr, config = %path.display(), "grayproxy listening");
        Ok(App {
            proxy_addr,
            admin_addr,
            runtime,
            reloads,
            shutdown,
            ready: ready_tx,
            tasks,
            ramp,
        })
    }

    /// Stops accepting; in-flight requests get `shutdown_grace` to finish.
    pub fn shutdown(&self) {
        // Not ready any more: load balancers stop sending before we stop accepting.
        let _ = self.ready.send(false);
        let _ = self.shutdown.send(true);
    }

    /// A receiver that turns true at shutdown, for tasks started beside the app.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.subscribe()
    }

    /// Runs a task beside the app; it is awaited by [`App::wait`].
    pub fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(task);
    }

    /// Sends operator commands to the ramp driver.
    pub fn ramp(&self) -> &RampHandle {
        &self.ramp
    }

    /// Waits until every task has finished (after [`App::shutdown`]).
    pub async fn wait(mut self) {
        while let Some(result) = self.tasks.join_next().await {
            if let Err(e) = result {
                if e.is_panic() {
                    tracing::error!(error = %e, "a grayproxy task panicked");
                }
            }
        }
    }
}

/// Builds the ramp driver (its state in `state.dir`) and runs it among `tasks`.
fn spawn_ramp(
    tasks: &mut JoinSet<()>,
    runtime: &Arc<Runtime>,
    reloads: &broadcast::Sender<Arc<ConfigDiff>>,
    shutdown: &watch::Receiver<bool>,
    options: &StartOptions,
) -> RampHandle {
    let store = Arc::new(Store::new(runtime.snapshot().config.state.dir.clone()));
    let (mut driver, ramp) = Driver::new(
        runtime.clone(),
        store,
        reloads.subscribe(),
        shutdown.clone(),
    );
    if let Some(link) = runtime.fleet.get() {
        driver = driver.with_fleet(link.clone());
    }
    tasks.spawn(driver.run(options.ramp_delay));
    ramp
}

/// Refuses a network-reachable admin API without a token, and warns when
/// the token file can be read by every local user.
fn check_admin_exposure(admin: &crate::config::types::AdminConfig) -> Result<(), StartError> {
    match &admin.token_file {
        None if !admin.listen.ip().is_loopback() => Err(StartError::UnprotectedAdmin(admin.listen)),
        None => Ok(()),
        Some(path) => {
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                if let Ok(meta) = std::fs::metadata(path) {
                    if meta.permissions().mode() & 0o004 != 0 {
                        tracing::warn!(
                            file = %path.display(),
                            "the admin token file is world-readable; chmod 600 it"
                        );
                    }
                }
            }
            Ok(())
        }
    }
}

async fn bind(what: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { what, addr, source })
}

fn local_addr(
    what: &'static str,
    l: &TcpListener,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    l.local_addr()
        .map_err(|source| StartError::Bind { what, addr, source })
}

/// Folds each route's judge window into its since-start totals once a
/// second, so `/status` is fresh even for routes without a ramp.
async fn drain_stats(runtime: Arc<Runtime>, mut shutdown: watch::Receiver<bool>) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = every.tick() => {
                for rt in &runtime.snapshot().routes {
                    rt.drain();
                }
            }
            () = shutdown_signalled(&mut shutdown) => return,
        }
    }
}
