//! `grayproxy status [--admin URL] [--watch]`: fetches the `/status`
//! document and prints its terminal view; with `--watch`, redraws it every
//! second until SIGINT/SIGTERM.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::client;
use crate::shutdown::wait_for_termination;
use crate::status::view::{render, CLEAR};

/// Runs the verb; exit code 1 when the admin API cannot be read (once).
pub fn status_command(admin: &str, watch: bool) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    if watch {
        rt.block_on(watch_status(admin))
    } else {
        rt.block_on(print_status(admin))
    }
}

async fn print_status(admin: &str) -> ExitCode {
    match client::fetch_status(admin).await {
        Ok(s) => {
            print!("{}", render(&s));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Redraws every second; an unreachable admin API is shown, not fatal.
async fn watch_status(admin: &str) -> ExitCode {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    let stop = wait_for_termination();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            () = &mut stop => return ExitCode::SUCCESS,
        }
        let text = match client::fetch_status(admin).await {
            Ok(s) => render(&s),
            Err(e) => format!("error: {e}\n(retrying every second; Ctrl-C to stop)\n"),
        };
        print!("{CLEAR}grayproxy status — {admin} (every 1 s, Ctrl-C to stop)\n\n{text}");
    }
}
