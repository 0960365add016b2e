//! The `grayproxy` binary: parse the command line, run, exit.
#![forbid(unsafe_code)]

use clap::Parser;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    grayproxy::cli::run(grayproxy::cli::Cli::parse())
}
