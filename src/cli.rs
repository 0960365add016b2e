//! The command line (CONTRACT §1).

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
}

/// Sets up logging: level from `RUST_LOG` (default `info`).
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Runs the parsed command; the exit code follows the contract.
pub fn run(cli: Cli) -> ExitCode {
    init_logging(cli.log_format);
    match cli.command {
        Command::Check { config } => check(&config),
        Command::Run { config } => run_proxy(&config),
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
    let workers = match config::load(path) {
        Ok(loaded) => loaded.config.server.workers,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(1);
        }
    };
    // One worker: a current-thread runtime. Every task (client connection,
    // upstream connection, timers) then runs on the thread that polls the
    // I/O driver, with no work-stealing queues and no cross-thread wake-ups.
    let mut builder = if workers == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut multi = tokio::runtime::Builder::new_multi_thread();
        if workers > 0 {
            multi.worker_threads(workers);
        }
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
        let app = match App::start(path).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(1);
            }
        };
        wait_for_termination().await;
        tracing::info!("shutting down: draining in-flight requests");
        app.shutdown();
        app.wait().await;
        tracing::info!("stopped");
        ExitCode::SUCCESS
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn wait_for_termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
