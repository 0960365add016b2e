//! A healthy canary walks its steps to 100 %, through a real gate (the
//! canary shown < 5× worse on errors and slow requests). In its own test
//! binary: the gate needs slow-request evidence, and latency noise from
//! other tests running beside it would trip the incident hold.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::Value;
use support::ramp::*;
use support::{admin_json, admin_metrics, TestProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_promoted_to_100() {
    // A 4 s baseline: the incident hold compares stable with it, and a p99
    // from a second of traffic is too rough a yardstick.
    let (_stable, _canary, setup) = ramped(
        0.02,
        0.02,
        STEADY_MEAN_MS,
        &format!(
            "steps = [10, 50, 100]\nmin_requests = 30\ngate_ratios = [0, 5]\n{}",
            FAST.replace("baseline = \"1s\"", "baseline = \"4s\"")
        ),
    )
    .await;
    let p = TestProxy::open(&setup.config).await;
    let traffic = Traffic::start(p.proxy, 300.0);
    let started = tokio::time::Instant::now();
    let r = wait_state(p.admin, "promoted", Duration::from_secs(60)).await;
    let took = started.elapsed();
    assert_eq!(r["weight"], 100.0);
    assert_eq!(r["error"], Value::Null);
    let st = admin_json(p.admin, "/status").await;
    assert_eq!(st["routes"][0]["canary_weight"], 100.0);
    assert_eq!(traffic.non_2xx_or_503.load(Ordering::Relaxed), 0);
    // Every decision is in the audit log, with the route and evidence.
    // (A busy test machine may add hold / hold_ended pairs: latency noise
    // on both arms is what the incident hold is for.)
    let audit = setup.audit();
    let steps: Vec<String> = actions(&audit)
        .into_iter()
        .filter(|a| a != "hold" && a != "hold_ended")
        .collect();
    assert_eq!(
        steps,
        ["baseline_started", "ramp_started", "advance", "promote"]
    );
    assert!(audit.iter().all(|r| r["route"] == "r"));
    let promote = audit.last().unwrap();
    assert_eq!(promote["action"], "promote");
    assert!(promote["evidence"]["gate"].is_object(), "{promote:#}");
    assert!(promote["evidence"]["canary"]["requests"].as_u64().unwrap() >= 30);
    // The state file holds the same.
    assert_eq!(setup.read_state()["state"]["phase"], "promoted");
    let metrics = admin_metrics(p.admin).await;
    assert_eq!(
        metrics.value("grayproxy_canary_weight_percent", &[("route", "r")]),
        100.0,
        "{metrics:?}"
    );
    assert_eq!(
        metrics.value(
            "grayproxy_ramp_state",
            &[("route", "r"), ("state", "promoted")]
        ),
        1.0,
        "{metrics:?}"
    );
    eprintln!(
        "healthy canary promoted in {took:?} ({} requests)",
        traffic.sent.load(Ordering::Relaxed)
    );
}
