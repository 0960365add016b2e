//! A fast h2c gRPC backend for the gRPC benchmark (`benches/e2e/grpc.sh`):
//! two `demo --grpc` backends (`reco-v1`, `reco-v2`) with no added latency
//! and no faults, serving `/reco.Recommender/Recommend` on loopback. Prints
//! `stable ADDR` and `canary ADDR`, then serves until killed.
//!
//!   cargo run --profile quick-release --example grpc_backend
#![forbid(unsafe_code)]

use std::time::Duration;

use grayproxy::demo::backend::BackendSpec;
use grayproxy::demo::grpc::spawn_backend;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let (_stop, stop_rx) = tokio::sync::watch::channel(false);
    for (arm, version) in [("stable", "reco-v1"), ("canary", "reco-v2")] {
        // No service time: the benchmark measures the proxy, not the backend.
        let spec = BackendSpec {
            median_latency: Duration::ZERO,
            latency_sigma: 0.0,
            ..BackendSpec::healthy(version)
        };
        let backend = spawn_backend(true, spec, stop_rx.clone()).await?;
        println!("{arm} {}", backend.addr);
    }
    std::future::pending::<()>().await;
    Ok(())
}
