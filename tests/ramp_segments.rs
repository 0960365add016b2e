//! Per-segment guardrails end to end: real proxy and admin sockets, real
//! backends, the real ramp driver with short ticks. A canary that fails
//! only for `x-user-segment: new` traffic is rolled back with a reason that
//! names the segment; a healthy canary on the same traffic is promoted; the
//! per-segment metric and `/status` count each segment apart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use rand::Rng;
use serde_json::Value;
use support::ramp::*;
use support::upstream::Fault;
use support::{admin_json, admin_metrics, client, eventually, fetch, TestProxy};

const SEGMENTS: &str =
    "segments = \"header:x-user-segment\"\nsegment_values = [\"new\", \"returning\"]";

/// Open-loop traffic at `rps`: 10 % `x-user-segment: new`, 60 %
/// `returning`, 30 % without the header (`other`); random user ids. One
/// returning request in six (10 % of all) also carries `x-cohort: b`, for a
/// fault that evens the arms' overall error rates out.
///
/// Each request's segment is drawn at random, not taken from its sequence
/// number: the backends fail every 20th request they receive, and while one
/// arm gets all the traffic in order (the baseline, after a rollback) a
/// periodic pattern such as "every 10th request is `new`" would line up
/// with it: every 20th request, a `new` one, failed, half of stable's `new`
/// requests in the baseline instead of 5 %.
fn segmented_traffic(proxy: SocketAddr, rps: f64) -> (Arc<AtomicBool>, Arc<AtomicU64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let (stop2, sent2) = (stop.clone(), sent.clone());
    tokio::spawn(async move {
        let c = client();
        let url = format!("http://{proxy}/api");
        let slots = Arc::new(tokio::sync::Semaphore::new(128));
        let mut timer = tokio::time::interval(Duration::from_secs_f64(1.0 / rps));
        while !stop2.load(Ordering::Relaxed) {
            timer.tick().await;
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let draw = rand::thread_rng().gen_range(0..10u8);
            let segment = match draw {
                0 => Some("new"),
                1..=6 => Some("returning"),
                _ => None,
            };
            let (c, url, sent) = (c.clone(), url.clone(), sent2.clone());
            tokio::spawn(async move {
                let user = format!("user-{}", rand::thread_rng().gen::<u32>());
                let mut headers = vec![("x-user-id", user.as_str())];
                if let Some(s) = segment {
                    headers.push(("x-user-segment", s));
                }
                if draw == 1 {
                    headers.push(("x-cohort", "b"));
                }
                let _ = fetch(&c, Method::GET, &url, &headers, None).await;
                sent.fetch_add(1, Ordering::SeqCst);
                drop(permit);
            });
        }
    });
    (stop, sent)
}

fn segment<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["routes"][0]["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["segment"] == name)
        .unwrap_or_else(|| panic!("no segment {name} in {status:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_failing_only_for_new_users_is_rolled_back_naming_the_segment() {
    // Both arms fail 5 % of all requests (the noise a segment stands out
    // from); the canary also fails every `new` user (10 % of the traffic),
    // and stable a returning cohort of the same size, so that the overall
    // error rates are equal: only the segment shows the regression.
    let stable = backend("stable", 0.05, 0)
        .await
        .with(Fault::StatusIfHeader(503, "x-cohort", "b"));
    let canary =
        backend("canary", 0.05, 0)
            .await
            .with(Fault::StatusIfHeader(503, "x-user-segment", "new"));
    // One long step at 50 %: the judge compares the arms on every tick.
    let setup = Setup::new(
        stable.addr,
        canary.addr,
        &format!(
            "steps = [50, 100]\n{SEGMENTS}\n{}",
            FAST.replace("interval = \"300ms\"", "interval = \"10m\"")
                .replace("max_step_duration = \"1m\"", "max_step_duration = \"1h\"")
        ),
    );
    // Each arm's one endpoint must stay in: outlier detection would eject
    // the canary's after a run of failed `new` users, and stable's after a
    // run of cohort-b and random failures (15 % of its requests: five in a
    // row happen in some runs), and then fail every segment's requests.
    let text = std::fs::read_to_string(&setup.config).unwrap();
    let text = text
        .replace(
            "[upstreams.v1]\n",
            "[upstreams.v1]\noutlier = { consecutive_failures = 1000000 }\n",
        )
        .replace(
            "[upstreams.v2]\n",
            "[upstreams.v2]\noutlier = { consecutive_failures = 1000000 }\n",
        );
    std::fs::write(&setup.config, text).unwrap();
    let p = TestProxy::open(&setup.config).await;
    let (stop, _) = segmented_traffic(p.proxy, 300.0);
    let r = wait_state(p.admin, "rolled_back", Duration::from_secs(30)).await;
    stop.store(true, Ordering::Relaxed);
    let last = r["decisions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (&last["action"], &last["trigger"]),
        (&"rollback".into(), &"judge".into())
    );
    let reason = last["reason"].as_str().unwrap();
    assert!(
        reason.starts_with("canary shown worse for segment \"new\": "),
        "{reason}\n{:#}",
        last["evidence"]
    );
    // The audit record carries every segment's evidence and numbers.
    let segs = last["evidence"]["segments"].as_array().unwrap();
    let names: Vec<&str> = segs
        .iter()
        .map(|s| s["segment"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["new", "returning", "other"]);
    let rate = |s: &Value, arm: &str| s[arm]["error_rate"].as_f64().unwrap();
    assert!(rate(&segs[0], "canary") > 0.9, "{last:#}");
    assert!(rate(&segs[1], "canary") < 0.25, "{last:#}");
    assert!(
        last["evidence"]["e_combined"].as_f64().unwrap() >= 100.0,
        "{last:#}"
    );
    // The metric counts each segment apart: canary 5xx only for `new`.
    let m = admin_metrics(p.admin).await;
    let count = |arm: &str, segment: &str, code: &str| {
        m.value(
            "grayproxy_segment_requests_total",
            &[
                ("route", "r"),
                ("arm", arm),
                ("segment", segment),
                ("code", code),
            ],
        )
    };
    assert!(count("canary", "new", "5xx") > 0.0, "{m:?}");
    assert_eq!(count("canary", "new", "2xx"), 0.0);
    for s in ["returning", "other"] {
        let share =
            count("canary", s, "5xx") / (count("canary", s, "2xx") + count("canary", s, "5xx"));
        assert!(share < 0.2, "{s}: canary 5xx share {share}");
    }
    assert!(count("stable", "new", "2xx") > 0.0);
    // `/status` shows the same per segment and arm, counted since the
    // counters began: the baseline, when stable took every request, too.
    let st = admin_json(p.admin, "/status").await;
    let new = segment(&st, "new");
    assert_eq!(new["arms"]["canary"]["error_rate"], 1.0, "{new:#}");
    assert!(
        new["arms"]["stable"]["error_rate"].as_f64().unwrap() < 0.3,
        "{new:#}"
    );
    let returning = segment(&st, "returning");
    assert!(
        returning["arms"]["canary"]["error_rate"].as_f64().unwrap() < 0.2,
        "{returning:#}"
    );
    eprintln!("rolled back: {reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_canary_on_segmented_traffic_is_promoted() {
    let (_stable, _canary, setup) = ramped(
        0.0,
        0.0,
        STEADY_MEAN_MS,
        &format!("steps = [50, 100]\nmin_requests = 100\ngate_ratios = [0]\n{SEGMENTS}\n{FAST}"),
    )
    .await;
    let p = TestProxy::open(&setup.config).await;
    let (stop, _) = segmented_traffic(p.proxy, 300.0);
    wait_state(p.admin, "promoted", Duration::from_secs(30)).await;
    let st = eventually(Duration::from_secs(5), "segment counts", || async {
        let st = admin_json(p.admin, "/status").await;
        let n = segment(&st, "new")["arms"]["canary"]["requests"]
            .as_u64()
            .unwrap_or(0);
        if n > 0 {
            Ok(st)
        } else {
            Err(format!("{st:#}"))
        }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    assert!(!actions(&setup.audit()).contains(&"rollback".to_string()));
    for s in ["new", "returning", "other"] {
        let seg = segment(&st, s);
        for arm in ["stable", "canary"] {
            assert_eq!(seg["arms"][arm]["errors"], 0, "{s} {arm}: {seg:#}");
        }
        assert!(
            seg["arms"]["stable"]["requests"].as_u64().unwrap() > 0,
            "{s}: {seg:#}"
        );
    }
    let m = admin_metrics(p.admin).await;
    let new = m.value(
        "grayproxy_segment_requests_total",
        &[("route", "r"), ("segment", "new"), ("code", "2xx")],
    );
    let all = m.value(
        "grayproxy_requests_total",
        &[("route", "r"), ("code", "2xx")],
    );
    // One request in ten is `new`.
    assert!(new > 0.05 * all && new < 0.15 * all, "new {new} of {all}");
}
