//! grayproxy against a gRPC client no one here wrote: Python's grpcio
//! (installed by scripts/grpc-tools.sh), through the proxy to tonic backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::grpc::{grpc_responses, split};

/// The tools venv's Python (where scripts/grpc-tools.sh installs grpcio).
fn python() -> String {
    let venv = std::env::var("GRAYPROXY_TOOLS_VENV")
        .unwrap_or_else(|_| "/opt/grayproxy-tools/venv".to_owned());
    format!("{venv}/bin/python")
}

#[tokio::test]
async fn grpcio_client_through_the_proxy() {
    let (_stable, _canary, proxy) = split(Duration::ZERO, 0, "canary_weight = 0.0").await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/grpc_client.py");
    let target = proxy.proxy.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(python())
            .arg(script)
            .arg(target)
            .output()
    })
    .await
    .unwrap()
    .unwrap_or_else(|e| panic!("{} not runnable ({e}); run scripts/grpc-tools.sh", python()));
    assert!(
        out.status.success(),
        "grpcio client failed (run scripts/grpc-tools.sh?):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["unary"]["model"], "v1");
    assert_eq!(
        v["unary"]["items"],
        serde_json::json!(["py-user-item-0", "py-user-item-1"])
    );
    assert_eq!(v["unary_code"], "OK");
    assert_eq!(v["unary_metadata"]["x-echo-user"], "py-user");
    assert_eq!(v["unary_metadata"]["x-grayproxy-arm"], "stable");
    assert_eq!(
        v["stream"],
        serde_json::json!(["item-0", "item-1", "item-2", "item-3", "item-4"])
    );
    let e = &v["stream_error"];
    assert_eq!(e["code"], "DATA_LOSS");
    assert_eq!(e["details"], "lost the tail");
    assert_eq!(e["messages"], serde_json::json!(["item-0", "item-1"]));
    assert_eq!(e["trailing"]["x-detail-bin"], serde_json::json!([9, 8, 7]));
    assert_eq!(v["no_route"], "UNIMPLEMENTED");
    let m = proxy.metrics().await;
    assert_eq!(grpc_responses(&m, "stable", "OK"), 2.0);
}
