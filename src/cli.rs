//! The command line: the verbs (`run`, `check`, `status`, the operator
//! commands, `simulate`, `demo`) and their exit codes, as the README lists
//! them.

pub mod client;
pub mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::app::App;
use crate::config;

/// grayproxy: a gray-release (canary) reverse proxy.
#[derive(Debug, Parser)]
#[command(name = "grayproxy", version, about)]
pub struct Cli {
    /// Log format: human-readable or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Human)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LogFormat {
    /// For people.
    Human,
    /// For machines.
    Json,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Run {
        /// Config file.
        #[arg(short, long, default_value = "config/grayproxy.toml")]
        config: PathBuf,
    },
    /// Validate a config file and print every error.
    Check {
        /// Config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Jump a route's canary to 100 % (admin API).
    Promote(OperatorArgs),
    /// Send all of a route's weight-assigned traffic to stable (admin API).
    Rollback(OperatorArgs),
    /// Freeze a route's ramp at its current weight (admin API).
    Pause(OperatorArgs),
    /// Continue a paused ramp, or start a new one after a rollback (admin API).
    Resume(OperatorArgs),
    /// What-if: run a route's ramp against seeded simulated traffic.
    Simulate(SimulateArgs),
    /// Built-in backends, proxy, ramp and traffic: watch a canary promote or roll back.
    Demo(DemoArgs),
    /// Routes, weights, ramp state and per-arm numbers from the admin API.
    Status(StatusArgs),
}

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Share of the canary's requests answered with 503 (0.05 = 5 %).
    #[arg(long, default_value_t = 0.0)]
    pub canary_error_rate: f64,
    /// Milliseconds added to every canary answer.
    #[arg(long, default_value_t = 0)]
    pub canary_latency_ms: u64,
    /// The demo ends after this long at the latest ("90s", "10m").
    #[arg(long, default_value = "10m", value_parser = config::duration::parse_duration)]
    pub duration: std::time::Duration,
    /// Share of stable's requests answered with 503 (a realistic background).
    #[arg(long, default_value_t = 0.005)]
    pub stable_error_rate: f64,
    /// Requests per second of built-in traffic.
    #[arg(long, default_value_t = 400.0)]
    pub rps: f64,
    /// Run N replicas sharing one ramp through an etcd the demo starts
    /// itself (needs `etcd` on PATH; Debian: etcd-server).
    #[arg(long, value_name = "N")]
    pub fleet: Option<usize>,
    /// gRPC backends (h2c, `reco.Recommender/Recommend`) and gRPC traffic.
    #[arg(long)]
    pub grpc: bool,
    /// Share of the canary's recommendation lists reshuffled (0.3 = 30 %);
    /// the demo then mirrors traffic to the canary and compares the lists.
    #[arg(long, value_name = "F", default_value_t = 0.0)]
    pub canary_reorder: f64,
    /// Start the ramp with a shadow phase: the canary answers only
    /// mirrored requests until it has shown itself no worse.
    #[arg(long)]
    pub shadow: bool,
}

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// The admin API.
    #[arg(long, default_value = client::DEFAULT_ADMIN)]
    pub admin: String,
    /// Redraw every second until Ctrl-C.
    #[arg(long)]
    pub watch: bool,
}

/// Arguments of `promote|rollback|pause|resume`.
#[derive(Debug, clap::Args)]
pub struct OperatorArgs {
    /// The route.
    pub route: String,
    /// The admin API.
    #[arg(long, default_value = client::DEFAULT_ADMIN)]
    pub admin: String,
    /// File holding the admin token (default: the GRAYPROXY_ADMIN_TOKEN variable).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
}

/// Arguments of `simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// Config file.
    #[arg(short, long)]
    pub config: PathBuf,
    /// The route whose `[routes.ramp]` is simulated.
    #[arg(long)]
    pub route: String,
    /// Weight-assigned requests per second on the route.
    #[arg(long, default_value_t = 200.0)]
    pub rps: f64,
    /// Stable's error rate (0.005 = 0.5 %).
    #[arg(long, default_value_t = 0.005)]
    pub stable_error_rate: f64,
    /// Rollouts per scenario.
    #[arg(long, default_value_t = 1000)]
    pub runs: usize,
    /// Seed (the same seed gives the same table).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Sets up logging: level from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    init_logging_at(format, "info");
}

/// Sets up logging: level from `RUST_LOG`, else `default` (the demo's live
/// view prints the decisions itself, so it logs warnings only).
pub fn init_logging_at(format: LogFormat, default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the parsed command: exit 0 on success, 1 on an error (an invalid
/// config, an unreachable or refusing admin API); `demo` has its own codes.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Demo(_) => init_logging_at(cli.log_format, "warn"),
        _ => init_logging(cli.log_format),
    }
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run_proxy(&config),
        Command::Promote(a) => operator(&a, "promote"),
        Command::Rollback(a) => operator(&a, "rollback"),
        Command::Pause(a) => operator(&a, "pause"),
        Command::Resume(a) => operator(&a, "resume"),
        Command::Simulate(a) => simulate(&a),
        Command::Demo(a) => crate::demo::run(crate::demo::DemoOptions {
            canary_error_rate: a.canary_error_rate,
            canary_latency: std::time::Duration::from_millis(a.canary_latency_ms),
            duration: a.duration,
            stable_error_rate: a.stable_error_rate,
            rps: a.rps,
            fleet: a.fleet.unwrap_or(0),
            grpc: a.grpc,
            canary_reorder: a.canary_reorder,
            shadow: a.shadow,
        }),
        Command::Status(a) => status::status_command(&a.admin, a.watch),
    }
}

fn check(path: &std::path::Path) -> ExitCode {
    match config::load(path) {
        Ok(loaded) => {
            for warning in &loaded.warnings {
                eprintln!("{warning}");
            }
            println!("{}", loaded.summary());
            ExitCode::SUCCESS
        }
        Err(errors) => {
            eprintln!("{errors}");
            ExitCode::from(1)
        }
    }
}

fn run_proxy(path: &std::path::Path) -> ExitCode {
    // The worker count comes from the file, so read it before the runtime exists.
    let loaded = match crate::reload::load_isolated(path) {
        Ok(loaded) => loaded,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(1);
        }
    };
    // One worker: a current-thread runtime. Every task (client connection,
    // upstream connection, timers) then runs on the thread that polls the
    // I/O driver, with no work-stealing queues and no cross-thread wake-ups.
    // More: the proxy threads have runtimes of their own (`workers`), and
    // this one keeps the admin API, the ramp and reloads on one thread of
    // its own (multi-thread flavour, so that the ramp's file writes can
    // step aside with `block_in_place`).
    let mut builder = if crate::workers::thread_count(loaded.config.server.workers) == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut multi = tokio::runtime::Builder::new_multi_thread();
        multi.worker_threads(1);
        multi
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let app = match App::start_loaded(path, loaded, crate::app::StartOptions::default()).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        crate::shutdown::wait_for_termination().await;
        tracing::info!("shutting down: draining in-flight requests");
        app.shutdown();
        app.wait().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// A current-thread runtime for the admin-API client verbs.
fn client_runtime() -> Result<tokio::runtime::Runtime, ExitCode> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            ExitCode::from(1)
        })
}

/// `promote|rollback|pause|resume ROUTE`.
fn operator(args: &OperatorArgs, action: &str) -> ExitCode {
    let token = match client::resolve_token(args.token_file.as_deref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(1);
        }
    };
    let rt = match client_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    match rt.block_on(client::post_command(
        &args.admin,
        &args.route,
        action,
        &token,
    )) {
        Ok(answer) => {
            println!("{}", client::describe_ramp(&args.route, &answer.ramp));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {action} {}: {e}", args.route);
            ExitCode::from(1)
        }
    }
}

/// `simulate -c PATH --route NAME`.
fn simulate(args: &SimulateArgs) -> ExitCode {
    let loaded = match config::load(&args.config) {
        Ok(l) => l,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(1);
        }
    };
    let Some(route) = loaded.config.route(&args.route) else {
        let names: Vec<&str> = loaded
            .config
            .routes
            .iter()
            .map(|r| r.name.as_str())
            .collect();
        eprintln!(
            "error: {}: no route named `{}` (routes: {})",
            args.config.display(),
            args.route,
            names.join(", ")
        );
        return ExitCode::from(1);
    };
    let Some(policy) = &route.ramp else {
        eprintln!(
            "error: {}: route `{}` has no ramp; add a [routes.ramp] table to simulate one",
            args.config.display(),
            args.route
        );
        return ExitCode::from(1);
    };
    let valid = args.rps > 0.0
        && args.rps.is_finite()
        && (0.0..1.0).contains(&args.stable_error_rate)
        && args.runs > 0;
    if !valid {
        eprintln!("error: need --rps > 0, --stable-error-rate in [0, 1) and --runs ≥ 1");
        return ExitCode::from(1);
    }
    let opts = crate::ramp::sim::SimOptions {
        rps: args.rps,
        stable_error_rate: args.stable_error_rate,
        runs: args.runs,
        seed: args.seed,
        // The per-segment scenarios run with segments judged whatever the
        // route says (and once without, for comparison).
        scenarios: [
            crate::ramp::sim::standard_scenarios(),
            crate::ramp::sim::segment_scenarios(),
        ]
        .concat(),
        ..crate::ramp::sim::SimOptions::default()
    };
    println!(
        "route `{}`, ramp policy from {}",
        args.route,
        args.config.display()
    );
    // The step simulation starts at the first step; the shadow phase before
    // it is simulated on its own, on mirrored pairs.
    let steps_only = crate::config::types::RampPolicy {
        shadow: None,
        ..policy.clone()
    };
    print!("{}", crate::ramp::sim::run(&steps_only, &opts));
    if policy.shadow.is_some() {
        let table = crate::ramp::sim::shadow::run(
            policy,
            args.stable_error_rate,
            args.runs.min(1000),
            args.seed,
        );
        print!("{table}");
    }
    ExitCode::SUCCESS
}
