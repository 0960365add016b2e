//! `grayproxy demo`: two built-in recommendation backends (stable healthy,
//! canary with the faults given on the command line), the real proxy and
//! ramp driver in-process on a short-tick ramp, built-in traffic, and the
//! live view. Ends on promote or rollback (or at `--duration`) and prints
//! the audit log, one decision per line with its evidence.
//!
//! The ramp policy is tuned with the `simulate` engine for a demo that
//! decides within about two minutes at the default 400 req/s: 1 s ticks,
//! 5 s per step at least, a 10 s baseline, 50 requests per arm per step,
//! and a tolerated p99 increase of 10 % (so that a canary as fast as stable
//! gathers its latency evidence quickly).

pub mod backend;
mod config;
mod fleet;
pub mod grpc;
pub mod traffic;

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use crate::app::{App, StartOptions};
use crate::demo::backend::{BackendSpec, DemoBackend};
pub use crate::demo::config::config_text;
use crate::demo::traffic::TrafficStats;
use crate::persist::AUDIT_FILE;
use crate::ramp::audit::{Action, AuditRecord, Trigger};
use crate::ramp::state::Phase;
use crate::shutdown::wait_for_termination;
use crate::status::view;
use crate::status::{RouteStatus, StatusDocument};

/// The demo route's name.
pub const ROUTE: &str = "recommend";
/// Traffic before the ramp (and its baseline) starts.
pub const WARMUP: Duration = Duration::from_secs(3);

/// What `grayproxy demo` runs.
#[derive(Clone, Debug, PartialEq)]
pub struct DemoOptions {
    /// Share of the canary's requests answered with 503.
    pub canary_error_rate: f64,
    /// Delay added to every canary answer.
    pub canary_latency: Duration,
    /// The demo ends after this long at the latest.
    pub duration: Duration,
    /// Share of stable's requests answered with 503 (a realistic background).
    pub stable_error_rate: f64,
    /// Requests per second of built-in traffic.
    pub rps: f64,
    /// Replicas sharing one ramp through an etcd the demo starts (0 or 1:
    /// a single process, no etcd).
    pub fleet: usize,
    /// gRPC backends and gRPC traffic instead of HTTP.
    pub grpc: bool,
    /// Share of the canary's lists reshuffled (`--canary-reorder`); above 0
    /// the demo mirrors traffic to the canary and compares the lists.
    pub canary_reorder: f64,
    /// The ramp starts with a shadow phase (`--shadow`).
    pub shadow: bool,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            canary_error_rate: 0.0,
            canary_latency: Duration::ZERO,
            duration: Duration::from_secs(600),
            stable_error_rate: 0.005,
            rps: 400.0,
            fleet: 0,
            grpc: false,
            canary_reorder: 0.0,
            shadow: false,
        }
    }
}

impl DemoOptions {
    /// Every problem with the options, in words.
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        for (flag, v) in [
            ("--canary-error-rate", self.canary_error_rate),
            ("--stable-error-rate", self.stable_error_rate),
            ("--canary-reorder", self.canary_reorder),
        ] {
            if !(0.0..=1.0).contains(&v) {
                p.push(format!(
                    "{flag} {v} is outside 0..=1; use a share, e.g. 0.05 for 5 %"
                ));
            }
        }
        if !(self.rps.is_finite() && self.rps > 0.0 && self.rps <= 20_000.0) {
            p.push(format!("--rps {} must be in (0, 20000]", self.rps));
        }
        if self.fleet > 9 {
            p.push(format!("--fleet {} must be at most 9 replicas", self.fleet));
        }
        if self.duration.is_zero() {
            p.push("--duration must be more than 0".to_string());
        }
        p
    }
}

/// How the demo ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// The canary reached 100 %.
    Promoted,
    /// The canary went back to 0 %.
    RolledBack,
    /// The judge paused the ramp (a step could not gather its evidence in
    /// `max_step_duration`); only an operator moves it on.
    Paused,
    /// `--duration` passed first.
    TimedOut,
    /// Ctrl-C / SIGTERM.
    Interrupted,
}

/// A fresh temp directory for the demo's config and state.
fn temp_dir() -> std::io::Result<PathBuf> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir =
        std::env::temp_dir().join(format!("grayproxy-demo-{}-{nanos:09}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A token for the demo's admin API (printed, so operators can try the
/// `promote|rollback|pause|resume` verbs against the demo).
fn demo_token() -> String {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    (0..24)
        .map(|_| char::from(b"abcdefghijkmnopqrstuvwxyz23456789"[rng.gen_range(0..33)]))
        .collect()
}

/// Runs the demo; exit 0 on promote, rollback or `--duration`.
pub fn run(opts: DemoOptions) -> ExitCode {
    let problems = opts.problems();
    if !problems.is_empty() {
        for p in problems {
            eprintln!("error: {p}");
        }
        return ExitCode::from(2);
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run_async(opts)) {
        Ok(Ending::Interrupted) => ExitCode::from(130),
        // Promote, rollback, a judge's pause and --duration end the demo normally.
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: demo: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run_async(opts: DemoOptions) -> Result<Ending, String> {
    let (stop, stop_rx) = watch::channel(false);
    let stable = grpc::spawn_backend(
        opts.grpc,
        BackendSpec {
            error_rate: opts.stable_error_rate,
            ..BackendSpec::healthy("reco-v1")
        },
        stop_rx.clone(),
    )
    .await
    .map_err(|e| format!("cannot start the stable backend: {e}"))?;
    let canary = grpc::spawn_backend(
        opts.grpc,
        BackendSpec {
            error_rate: opts.canary_error_rate,
            added_latency: opts.canary_latency,
            reorder: opts.canary_reorder,
            ..BackendSpec::healthy("reco-v2")
        },
        stop_rx.clone(),
    )
    .await
    .map_err(|e| format!("cannot start the canary backend: {e}"))?;
    let dir = temp_dir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let result = run_in(&dir, &opts, &stable, &canary, stop_rx).await;
    let _ = stop.send(true);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run_in(
    dir: &Path,
    opts: &DemoOptions,
    stable: &DemoBackend,
    canary: &DemoBackend,
    stop_rx: watch::Receiver<bool>,
) -> Result<Ending, String> {
    let token = demo_token();
    let config = dir.join("grayproxy.toml");
    /// A token file only its owner can read.
    fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
        std::fs::write(path, text)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(())
    }
    let etcd = match opts.fleet {
        0 | 1 => None,
        _ => Some(fleet::DemoEtcd::start(dir).await?),
    };
    let base = grpc::config(opts.grpc, config_text(stable, canary, opts));
    let text = format!(
        "{base}{}",
        etcd.as_ref().map_or(String::new(), |e| e.section(1))
    );
    write_private(&dir.join("admin.token"), &format!("{token}\n"))
        .and_then(|()| std::fs::write(&config, text))
        .map_err(|e| format!("cannot write the demo config in {}: {e}", dir.display()))?;
    // Connections are opened and pools filled before the ramp starts, so
    // the cold start's slow first requests do not calibrate the baseline
    // p99 (the slow-request threshold). Until the driver runs, the file's
    // weight (0) sends everything to stable.
    let options = StartOptions { ramp_delay: WARMUP };
    let app = App::start_with(&config, options.clone())
        .await
        .map_err(|e| e.to_string())?;
    let others = match &etcd {
        Some(e) => e.replicas(dir, &base, opts.fleet, &options).await?,
        None => Vec::new(),
    };
    print_banner(&app, opts, stable, canary, &token);
    if let Some(e) = &etcd {
        println!(
            "  fleet   {} replicas sharing one ramp through etcd at {} (traffic spread evenly)",
            opts.fleet, e.endpoint
        );
        for (n, a) in others.iter().enumerate() {
            println!(
                "          demo-{}: proxy http://{}  admin http://{}",
                n + 2,
                a.proxy_addr,
                a.admin_addr
            );
        }
        println!();
    }

    let stats = Arc::new(TrafficStats::default());
    let share = opts.rps / (1 + others.len()) as f64;
    let traffic = grpc::spawn_traffic(
        opts.grpc,
        app.proxy_addr,
        share,
        stats.clone(),
        stop_rx.clone(),
    );
    let more: Vec<_> = others
        .iter()
        .map(|a| {
            grpc::spawn_traffic(
                opts.grpc,
                a.proxy_addr,
                share,
                stats.clone(),
                stop_rx.clone(),
            )
        })
        .collect();
    tokio::time::sleep(WARMUP).await;
    let started = Instant::now();
    let live = std::io::stdout().is_terminal();
    let ending = watch_ramp(&app, opts, &stats, started, live).await;
    traffic.abort();
    more.iter().for_each(|t| t.abort());
    for (n, a) in others.iter().enumerate() {
        let w = a
            .runtime
            .snapshot()
            .routes
            .first()
            .map_or(0.0, |r| r.weight().percent());
        println!("demo-{}: canary weight {w:.2} %", n + 2);
        a.shutdown();
    }

    let status = crate::admin::status::status(&app.runtime);
    if !live {
        // A terminal shows the last frame already.
        println!("\n{}", view::render(&status));
        println!("traffic: {}", stats.summary());
    }
    print_audit(&dir.join("state").join(AUDIT_FILE));
    let took = started.elapsed().as_secs_f64();
    match ending {
        Ending::Promoted => println!(
            "\nresult: PROMOTED: the canary reached 100 % after {took:.0} s (10 s baseline included)"
        ),
        Ending::RolledBack => println!(
            "\nresult: ROLLED BACK: the canary went back to 0 % after {took:.0} s (10 s baseline included)"
        ),
        Ending::Paused => println!(
            "\nresult: PAUSED by the judge after {took:.0} s: {}",
            waiting_for(&status).unwrap_or("see the audit log")
        ),
        Ending::TimedOut => println!(
            "\nresult: no decision within --duration ({took:.0} s); the ramp was {}",
            ramp_state(&status).map_or("unknown", Phase::as_str)
        ),
        Ending::Interrupted => println!("\nresult: interrupted after {took:.0} s"),
    }
    app.shutdown();
    if tokio::time::timeout(Duration::from_secs(5), app.wait())
        .await
        .is_err()
    {
        tracing::warn!("the proxy did not stop within 5 s");
    }
    Ok(ending)
}

fn print_banner(
    app: &App,
    opts: &DemoOptions,
    stable: &DemoBackend,
    canary: &DemoBackend,
    token: &str,
) {
    println!("grayproxy demo");
    println!(
        "  proxy   http://{}   ({})",
        app.proxy_addr,
        grpc::hint(opts.grpc, app.proxy_addr)
    );
    let fault = if opts.grpc { "UNAVAILABLE" } else { "503s" };
    println!(
        "  admin   http://{}   (grayproxy status --admin http://{} --watch)",
        app.admin_addr, app.admin_addr
    );
    println!(
        "  stable  reco-v1 at {}: {:.2} % {fault}, ~3 ms",
        stable.addr,
        opts.stable_error_rate * 100.0
    );
    println!(
        "  canary  reco-v2 at {}: {:.2} % {fault}, ~3 ms + {} ms",
        canary.addr,
        opts.canary_error_rate * 100.0,
        opts.canary_latency.as_millis()
    );
    println!(
        "  traffic {:.0} req/s from 20000 users (x-user-id), for at most {} s",
        opts.rps,
        opts.duration.as_secs()
    );
    println!("  admin token (GRAYPROXY_ADMIN_TOKEN): {token}");
    println!("  ramp    steps 1/5/10/25/50/100 %, tick 1 s, ≥ 5 s per step, 10 s baseline, confidence 0.99");
    println!(
        "          starting after {} s of warm-up traffic (all to stable)",
        WARMUP.as_secs()
    );
    print_shadow_banner(opts);
    println!();
}

fn print_shadow_banner(opts: &DemoOptions) {
    if opts.shadow {
        println!(
            "  shadow  phase of {} s after the baseline: the canary answers mirrored requests only; \
             worse, or mean RBO < {}, rolls it back with no user served",
            config::SHADOW_PHASE,
            config::MIN_RBO
        );
    }
    if opts.shadow || opts.canary_reorder > 0.0 {
        println!(
            "  shadow  every stable-answered request mirrored; canary reshuffles {:.0} % of its lists \
             (see RBO in the view)",
            opts.canary_reorder * 100.0
        );
    }
}

/// The demo's one route.
fn demo_route(status: &StatusDocument) -> Option<&RouteStatus> {
    status.routes.first()
}

fn waiting_for(status: &StatusDocument) -> Option<&str> {
    demo_route(status)?.ramp.waiting_for()
}

/// The latest decision is the judge's pause (an operator's pause, from
/// `grayproxy pause` against the demo, keeps the demo running).
fn paused_by_judge(status: &StatusDocument) -> bool {
    let last = demo_route(status).and_then(|r| r.ramp.decisions().last());
    last.is_some_and(|d| d.action == Action::Pause && d.trigger == Trigger::Judge)
}

fn ramp_state(status: &StatusDocument) -> Option<Phase> {
    demo_route(status).map(|r| r.ramp.state())
}

/// Redraws the view every second until the ramp decides, `--duration`
/// passes, or the user interrupts.
async fn watch_ramp(
    app: &App,
    opts: &DemoOptions,
    stats: &TrafficStats,
    started: Instant,
    live: bool,
) -> Ending {
    let deadline = started + opts.duration;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let stop = wait_for_termination();
    tokio::pin!(stop);
    let mut printed = 0;
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = &mut stop => return Ending::Interrupted,
        }
        let status = crate::admin::status::status(&app.runtime);
        let secs = started.elapsed().as_secs();
        if live {
            print!(
                "{}grayproxy demo — {secs} s (Ctrl-C to stop)\n\n{}\ntraffic: {}\n",
                view::CLEAR,
                view::render(&status),
                stats.summary()
            );
        } else {
            printed = print_new_decisions(&status, printed, secs);
        }
        match ramp_state(&status) {
            Some(Phase::Promoted) => return Ending::Promoted,
            Some(Phase::RolledBack) => return Ending::RolledBack,
            Some(Phase::Paused) if paused_by_judge(&status) => return Ending::Paused,
            _ => {}
        }
        if Instant::now() >= deadline {
            return Ending::TimedOut;
        }
    }
}

/// Without a terminal: one line per new decision and a progress line every
/// 10 s. `printed` is the time (unix ms) of the latest decision printed so
/// far; returns the new one.
fn print_new_decisions(status: &StatusDocument, printed: u64, secs: u64) -> u64 {
    let Some(route) = demo_route(status) else {
        return printed;
    };
    // The status keeps the latest few; count by time so none is printed twice.
    let mut last = printed;
    for d in route.ramp.decisions() {
        if d.at_ms > printed {
            println!("[{secs:>4} s] {}", view::decision_line(d));
            last = last.max(d.at_ms);
        }
    }
    if secs % 10 == 0 {
        println!(
            "[{secs:>4} s] {} at {}%: {}",
            route.ramp.state().as_str(),
            route.canary_weight,
            route.ramp.waiting_for().unwrap_or("")
        );
    }
    last
}

/// The audit log, one decision per line.
fn print_audit(path: &Path) {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            println!("audit log {}: cannot read it: {e}", path.display());
            return;
        }
    };
    println!("\naudit log ({} decisions):", text.lines().count());
    for line in text.lines() {
        match serde_json::from_str::<AuditRecord>(line) {
            Ok(v) => println!("  {}", view::decision_line(&v)),
            Err(_) => println!("  (unreadable) {line}"),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::ramp::sim::{self, Scenario, SimOptions};

    /// The demo's ramp policy, read back through the real config loader.
    fn demo_policy() -> crate::config::types::RampPolicy {
        let dir = temp_dir().unwrap();
        let fake = |port| DemoBackend {
            addr: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            requests: Arc::default(),
        };
        std::fs::write(dir.join("admin.token"), "t\n").unwrap();
        let path = dir.join("grayproxy.toml");
        std::fs::write(
            &path,
            config_text(&fake(18081), &fake(18082), &DemoOptions::default()),
        )
        .unwrap();
        let loaded = crate::config::load(&path).expect("the demo config must be valid");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        loaded.config.routes[0]
            .ramp
            .as_deref()
            .cloned()
            .expect("a ramp")
    }

    /// The simulate engine (the real judge and state machine) on the demo's
    /// policy and default traffic: a healthy canary promotes and a 5 % 503
    /// canary rolls back, both well within two minutes.
    #[test]
    fn the_demo_policy_decides_within_two_minutes() {
        let policy = demo_policy();
        let d = DemoOptions::default();
        let stable = d.stable_error_rate;
        let scenarios = vec![
            Scenario {
                error_multiplier: 0.0,
                ..Scenario::healthy("healthy (no errors)")
            },
            Scenario {
                error_multiplier: 0.05 / stable,
                bad: true,
                ..Scenario::healthy("5 % errors")
            },
        ];
        let report = sim::run(
            &policy,
            &SimOptions {
                rps: d.rps,
                stable_error_rate: stable,
                runs: 100,
                seed: 7,
                horizon: Some(Duration::from_secs(600)),
                scenarios,
                threads: 2,
            },
        );
        let (healthy, bad) = (&report.rows[0], &report.rows[1]);
        assert!(healthy.p_promoted() >= 0.97, "{report}");
        assert!(bad.p_rollback() >= 0.99, "{report}");
        let median = |r: &sim::ScenarioResult| sim::quantile(&r.decision_times(), 0.5).unwrap();
        assert!(median(healthy) < 100.0, "{report}");
        assert!(median(bad) < 60.0, "{report}");
    }
}
