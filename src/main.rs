//! The `grayproxy` binary: parse the command line, run, exit.
#![forbid(unsafe_code)]

use clap::Parser;

fn main() -> std::process::ExitCode {
    grayproxy::cli::run(grayproxy::cli::Cli::parse())
}
