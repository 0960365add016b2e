//! The Kubernetes ConfigMap update, as the kubelet does it: the mounted
//! file is a symlink through `..data`, and an update swaps that symlink
//! atomically. grayproxy must hot-reload each swap (a broken one rejected,
//! the old config kept live).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use support::tools::get_json;
use support::{client, eventually, get, split_config, TempDir, TestProxy, TestUpstream};
use tokio::time::Instant;

/// Stable and canary split at `weight` percent.
fn weighted(stable: SocketAddr, canary: SocketAddr, weight: f64) -> String {
    split_config(
        &[stable],
        &[canary],
        "",
        &format!("canary_weight = {weight:.1}"),
    )
}

/// Lays out a directory the way the kubelet mounts a ConfigMap: the file is
/// a symlink through `..data`, which points at a timestamped directory.
fn kubelet_write(dir: &Path, generation: u32, text: &str) {
    use std::os::unix::fs::symlink;
    let ts = format!(
        "..2026_12_01_10_00_{generation:02}.{:09}",
        generation * 7919
    );
    std::fs::create_dir(dir.join(&ts)).unwrap();
    std::fs::write(dir.join(&ts).join("grayproxy.toml"), text).unwrap();
    let old = std::fs::read_link(dir.join("..data")).ok();
    // The atomic swap: a new symlink, renamed over `..data`.
    symlink(&ts, dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    if !dir.join("grayproxy.toml").exists() {
        symlink("..data/grayproxy.toml", dir.join("grayproxy.toml")).unwrap();
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configmap_symlink_swap_hot_reloads_within_2s() {
    let c = client();
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let (stable, canary) = (stable.addr, canary.addr);
    let dir = TempDir::new();
    let mount = dir.join("config");
    std::fs::create_dir(&mount).unwrap();
    kubelet_write(&mount, 1, &weighted(stable, canary, 10.0));
    let app = TestProxy::open(&mount.join("grayproxy.toml")).await;
    let status_url = app.admin_url("/status");
    let weight = |s: &Value| s["routes"][0]["canary_weight"].as_f64().unwrap();
    assert_eq!(weight(&get_json(&c, &status_url).await), 10.0);

    for (generation, w) in [(2, 20.0), (3, 35.0)] {
        let t0 = Instant::now();
        kubelet_write(&mount, generation, &weighted(stable, canary, w));
        let s = eventually(Duration::from_secs(2), "weight after swap", || async {
            let s = get_json(&c, &status_url).await;
            if weight(&s) == w {
                Ok(s)
            } else {
                Err(format!("weight {}", weight(&s)))
            }
        })
        .await;
        assert!(s["config"]["last_error"].is_null(), "{s}");
        eprintln!("configmap swap {generation} applied in {:?}", t0.elapsed());
    }

    // A broken ConfigMap is rejected; the old config stays live.
    kubelet_write(&mount, 4, "[server]\nlisten = \"nope\"\n");
    let s = eventually(Duration::from_secs(2), "rejection after swap", || async {
        let s = get_json(&c, &status_url).await;
        if s["config"]["last_error"].is_string() {
            Ok(s)
        } else {
            Err(s.to_string())
        }
    })
    .await;
    assert_eq!(weight(&s), 35.0);
    let metrics = get(&c, &app.admin_url("/metrics"), &[]).await.text();
    assert!(
        metrics.contains("grayproxy_config_last_reload_successful 0"),
        "{metrics}"
    );
    assert!(metrics.contains("grayproxy_config_reloads_total{result=\"error\"} 1"));

    // And the next good one applies.
    kubelet_write(&mount, 5, &weighted(stable, canary, 50.0));
    eventually(Duration::from_secs(2), "recovery after swap", || async {
        let s = get_json(&c, &status_url).await;
        if weight(&s) == 50.0 && s["config"]["last_error"].is_null() {
            Ok(())
        } else {
            Err(s.to_string())
        }
    })
    .await;
    app.stop().await;
}
