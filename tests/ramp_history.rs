//! `GET /routes/{name}/history`: one entry per tick with the weight, the
//! tick's per-arm numbers and the judge's evidence; bounded; only the new
//! ticks with `?since=`; still there after a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;
use support::ramp::*;
use support::{client, eventually, fetch, read, HttpClient, TestProxy};

/// `METHOD http://ADMIN{path}`: status and body text.
async fn call(
    c: &HttpClient,
    method: Method,
    admin: SocketAddr,
    path: &str,
) -> (StatusCode, String) {
    let a = fetch(c, method, &format!("http://{admin}{path}"), &[], None)
        .await
        .unwrap();
    (a.status, a.text())
}

async fn history(c: &HttpClient, admin: SocketAddr, query: &str) -> Value {
    let (code, body) = call(c, Method::GET, admin, &format!("/routes/r/history{query}")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn ticks(h: &Value) -> Vec<Value> {
    h["ticks"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_has_a_tick_per_tick_with_evidence_and_survives_a_restart() {
    let (_stable, _canary, setup) =
        ramped(0.0, 0.0, 0, &format!("steps = [10, 50, 100]\n{FAST}")).await;
    let p = TestProxy::open(&setup.config).await;
    let c = client();
    let traffic = Traffic::start(p.proxy, 300.0);
    // Past the baseline: the judge is calibrated and the canary gets traffic.
    let h = eventually(
        Duration::from_secs(30),
        "ticks with evidence and canary traffic",
        || async {
            let h = history(&c, p.admin, "").await;
            let t = ticks(&h);
            let ok = t.iter().any(|e| e["evidence"].is_object())
                && t.iter().any(|e| e["canary"]["requests"].as_u64() > Some(0));
            ok.then_some(h)
        },
    )
    .await;
    drop(traffic);
    assert_eq!(h["route"], "r");
    assert_eq!(h["tick_seconds"], 0.1);
    assert_eq!(h["capacity"], 720);
    let t = ticks(&h);
    // Oldest first, one per tick, about `tick` apart.
    let at: Vec<u64> = t.iter().map(|e| e["at_ms"].as_u64().unwrap()).collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "{at:?}");
    assert!(t.len() >= 10, "{} ticks", t.len());
    let first = &t[0];
    assert_eq!(first["state"], "baseline");
    assert_eq!(first["weight"], 0.0);
    assert!(
        first.get("evidence").is_none(),
        "no evidence before calibration: {first}"
    );
    let judged = t.iter().find(|e| e["evidence"].is_object()).unwrap();
    let ev = &judged["evidence"];
    for key in ["e_errors", "e_slow", "e", "rollback_threshold"] {
        assert!(ev[key].as_f64().unwrap().is_finite(), "{key}: {ev}");
    }
    assert!(ev["rollback_threshold"].as_f64().unwrap() > 1.0);
    let arm = &t
        .iter()
        .rev()
        .find(|e| e["canary"]["requests"].as_u64() > Some(0))
        .unwrap()["canary"];
    assert_eq!(arm["errors"], 0, "{arm}");
    assert_eq!(arm["error_rate"], 0.0);
    assert!(arm["p99_seconds"].as_f64().unwrap() > 0.0, "{arm}");
    // The per-tick stable counts add up to about what the proxy served.
    let stable_sum: u64 = t
        .iter()
        .map(|e| e["stable"]["requests"].as_u64().unwrap())
        .sum();
    assert!(stable_sum > 0);

    // ?since= gives only the newer ticks.
    let last = *at.last().unwrap();
    let newer = history(&c, p.admin, &format!("?since={last}")).await;
    assert!(ticks(&newer)
        .iter()
        .all(|e| e["at_ms"].as_u64().unwrap() > last));
    let (code, body) = call(&c, Method::GET, p.admin, "/routes/r/history?since=soon").await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "{body}");
    let (code, _) = call(&c, Method::GET, p.admin, "/routes/nope/history").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let (code, _) = call(&c, Method::POST, p.admin, "/routes/r/history").await;
    assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);

    // The file beside the state file holds the same ticks.
    let file = read(&setup.state_dir().join("r.history.jsonl"));
    assert!(file.lines().count() >= t.len());
    p.stop().await;

    // A restart: the ticks seen before are still there.
    // The route's task loads the history file as it starts, which may be
    // just after the admin listener answers: a bounded wait, then the count.
    let p = TestProxy::open(&setup.config).await;
    let before = eventually(
        Duration::from_secs(5),
        "the history loaded again",
        || async {
            let again = history(&c, p.admin, "").await;
            let before: Vec<u64> = ticks(&again)
                .iter()
                .map(|e| e["at_ms"].as_u64().unwrap())
                .filter(|ms| *ms <= last)
                .collect();
            (!before.is_empty()).then_some(before)
        },
    )
    .await;
    assert!(
        before.len() >= at.len(),
        "after restart {} of {} ticks",
        before.len(),
        at.len()
    );
    p.stop().await;
}
