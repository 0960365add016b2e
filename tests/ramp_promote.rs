//! A healthy canary walks its steps to 100 %, through a real gate (the
//! canary shown < 5× worse on errors and slow requests). In its own test
//! binary: the gate needs slow-request evidence, and latency noise from
//! other tests running beside it would trip the incident hold.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ramp_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use http::Method;
use ramp_support::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_canary_is_promoted_to_100() {
    let (stable, canary) = (
        Backend::spawn_slow(0.02, 10.0).await,
        Backend::spawn_slow(0.02, 10.0).await,
    );
    let setup = Setup::new(
        "healthy",
        stable.addr,
        canary.addr,
        // A 4 s baseline: the incident hold compares stable with it, and
        // a p99 from a second of traffic is too rough a yardstick.
        &format!(
            "steps = [10, 50, 100]\nmin_requests = 30\ngate_ratios = [0, 5]\n{}",
            FAST.replace("baseline = \"1s\"", "baseline = \"4s\"")
        ),
    );
    let app = start(&setup).await;
    let c = client();
    let traffic = Traffic::start(app.proxy_addr, 300.0);
    let started = tokio::time::Instant::now();
    let r = wait_state(&c, &app, "promoted", Duration::from_secs(60)).await;
    let took = started.elapsed();
    assert_eq!(r["weight"], 100.0);
    assert_eq!(r["error"], Value::Null);
    let st = status(&c, app.admin_addr).await;
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
    let metrics = request(
        &c,
        Method::GET,
        &format!("http://{}/metrics", app.admin_addr),
        &[],
    )
    .await
    .1;
    assert!(
        metrics.contains("grayproxy_canary_weight_percent{route=\"r\"} 100"),
        "{metrics}"
    );
    assert!(
        metrics.contains("grayproxy_ramp_state{route=\"r\",state=\"promoted\"} 1"),
        "{metrics}"
    );
    eprintln!(
        "healthy canary promoted in {took:?} ({} requests)",
        traffic.sent.load(Ordering::Relaxed)
    );
    app.shutdown();
}
