//! The ramp end to end, in process: real proxy and admin sockets, real
//! backends, the real driver with short ticks (tick 100 ms, interval 300 ms,
//! baseline 1 s), so each story takes seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::{Method, StatusCode};
use serde_json::Value;
use support::ramp::*;
use support::{admin_json, admin_metrics, client, eventually, fetch, read, TestProxy};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_with_30_percent_503s_is_rolled_back() {
    let (_stable, canary, setup) = ramped(
        0.0,
        0.30,
        0,
        &format!("steps = [10, 50, 100]\nmin_requests = 100000\n{FAST}"),
    )
    .await;
    let p = TestProxy::open(&setup.config).await;
    let traffic = Traffic::start(p.proxy, 300.0);
    let r = wait_state(p.admin, "rolled_back", Duration::from_secs(30)).await;
    assert_eq!(r["weight"], 0.0);
    let last = r["decisions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "rollback");
    assert_eq!(last["trigger"], "judge");
    assert!(last["evidence"].is_object(), "{last}");
    // Canary exposure until the rollback.
    let exposure = canary.arrived();
    eprintln!(
        "rolled back after {exposure} canary requests: {}",
        last["reason"]
    );
    // From now on every weight-assigned request goes to stable: once the
    // requests routed before the rollback have landed, the canary gets none
    // of 300 more.
    traffic.landed().await;
    let before = canary.arrived();
    let sent = traffic.sent.load(Ordering::SeqCst);
    eventually(Duration::from_secs(10), "300 more requests", || async {
        traffic.sent.load(Ordering::SeqCst) >= sent + 300
    })
    .await;
    assert_eq!(canary.arrived(), before, "canary still gets traffic");
    let st = admin_json(p.admin, "/status").await;
    assert_eq!(st["routes"][0]["canary_weight"], 0.0);
    assert_eq!(actions(&setup.audit()).last().unwrap(), "rollback");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_arms_at_10_percent_errors_never_roll_back() {
    // One long step at 50 %: the judge compares the arms on every tick.
    let (_stable, canary, setup) = ramped(
        0.10,
        0.10,
        10,
        r#"steps = [50, 100]
tick = "100ms"
interval = "10m"
baseline = "1s"
max_step_duration = "1h""#,
    )
    .await;
    let p = TestProxy::open(&setup.config).await;
    let traffic = Traffic::start(p.proxy, 300.0);
    wait_state(p.admin, "progressing", Duration::from_secs(10)).await;
    let judged_from = canary.arrived();
    // For 8 s the ramp stays where it is (sampled every 200 ms), while the
    // judge keeps seeing errors on both arms.
    let window = tokio::time::Instant::now() + Duration::from_secs(8);
    let mut interval = tokio::time::interval(Duration::from_millis(200));
    while tokio::time::Instant::now() < window {
        interval.tick().await;
        let r = ramp(p.admin).await;
        assert_eq!(r["state"], "progressing", "{r:#}");
    }
    let judged = canary.arrived() - judged_from;
    traffic.stop();
    assert!(judged > 500, "only {judged} canary requests were judged");
    assert!(!actions(&setup.audit()).contains(&"rollback".to_string()));
    let st = admin_json(p.admin, "/status").await;
    let arms = &st["routes"][0]["arms"];
    // Positive control: the judge's windows hold the errors it tolerated
    // (10 % on each arm), so "no rollback" is a decision, not blindness.
    for arm in ["stable", "canary"] {
        let rate = arms[arm]["error_rate"].as_f64().unwrap();
        assert!(
            (0.05..0.2).contains(&rate),
            "{arm} error rate {rate}: {arms:#}"
        );
    }
    eprintln!(
        "10% errors on both arms: {judged} canary requests judged, no rollback; stable error rate {}, canary {}",
        arms["stable"]["error_rate"], arms["canary"]["error_rate"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_per_2s_never_advances_nor_rolls_back_and_says_why() {
    let (_stable, _canary, setup) = ramped(
        0.0,
        0.0,
        0,
        &format!("steps = [10, 100]\nmin_requests = 5\n{FAST}"),
    )
    .await;
    let p = TestProxy::open(&setup.config).await;
    let c = client();
    let url = format!("http://{}/api", p.proxy);
    // The traffic itself: one request, then 2 s (several intervals) of
    // nothing, four times.
    for i in 0..4 {
        let user = format!("user-{i}");
        let a = fetch(&c, Method::GET, &url, &[("x-user-id", &user)], None)
            .await
            .unwrap();
        assert_eq!(a.status, StatusCode::OK);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let r = ramp(p.admin).await;
    assert_eq!(r["state"], "progressing", "{r:#}");
    assert_eq!(r["step"], 0);
    assert_eq!(r["weight"], 10.0);
    let why = r["waiting_for"].as_str().unwrap();
    assert!(why.contains("more requests"), "{why}");
    assert!(why.contains("canary needs"), "{why}");
    let decided: Vec<String> = actions(&setup.audit())
        .into_iter()
        .filter(|a| a != "hold" && a != "hold_ended")
        .collect();
    assert_eq!(decided, ["baseline_started", "ramp_started"]);
    eprintln!("low traffic: waiting_for = {why:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_endpoints_need_the_token() {
    let (_stable, _canary, setup) = ramped(0.0, 0.0, 0, FAST).await;
    // A second route without a ramp.
    let mut text = read(&setup.config);
    text.push_str("[[routes]]\nname = \"plain\"\nmatch = { path_prefix = \"/plain\" }\nstable = \"v1\"\ncanary = \"v2\"\n");
    std::fs::write(&setup.config, text).unwrap();
    let p = TestProxy::open(&setup.config).await;
    let c = client();
    for action in ["promote", "rollback", "pause", "resume"] {
        for token in [None, Some("wrong"), Some("test-token-5f1"), Some("")] {
            let (code, body) = post(&c, p.admin, "r", action, token).await;
            assert_eq!(
                code,
                StatusCode::UNAUTHORIZED,
                "{action} with {token:?}: {body}"
            );
        }
        let (code, body) = post(&c, p.admin, "nope", action, Some(TOKEN)).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
        let (code, body) = post(&c, p.admin, "plain", action, Some(TOKEN)).await;
        assert_eq!(code, StatusCode::CONFLICT, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("no ramp"),
            "{body}"
        );
        let a = fetch(
            &c,
            Method::GET,
            &p.admin_url(&format!("/routes/r/{action}")),
            &[],
            None,
        )
        .await
        .unwrap();
        assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED);
    }
    // Nothing changed.
    assert_eq!(ramp(p.admin).await["state"], "baseline");
    // With the token: applied, 200 and the new status.
    let (code, body) = post(&c, p.admin, "r", "pause", Some(TOKEN)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["ramp"]["state"], "paused");
    // A command that does not apply: 409.
    let (code, body) = post(&c, p.admin, "r", "pause", Some(TOKEN)).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_mutations_are_refused_with_advice() {
    let (_stable, _canary, setup) = ramped(0.0, 0.0, 0, FAST).await;
    let text = read(&setup.config).replace("token_file = \"admin.token\"\n", "");
    std::fs::write(&setup.config, text).unwrap();
    let p = TestProxy::open(&setup.config).await;
    let c = client();
    let (code, body) = post(&c, p.admin, "r", "promote", Some(TOKEN)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"].as_str().unwrap().contains("token_file"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_file_pauses_at_0_and_is_reported() {
    let (stable, canary, setup) = ramped(0.0, 0.0, 0, &format!("steps = [10, 100]\n{FAST}")).await;
    std::fs::create_dir_all(setup.state_dir()).unwrap();
    // What a promoted ramp's file looks like after a bad disk: truncated.
    std::fs::write(
        setup.state_file(),
        br#"{"version":1,"route":"r","canary":"v2","state":{"phase":"promo"#,
    )
    .unwrap();
    let p = TestProxy::open(&setup.config).await;
    let c = client();
    let traffic = Traffic::start(p.proxy, 100.0);
    // 150 requests (about 1.5 s) with the ramp paused: none reaches the canary.
    eventually(Duration::from_secs(10), "150 requests", || async {
        traffic.sent.load(Ordering::SeqCst) >= 150
    })
    .await;
    assert!(stable.arrived() >= 150, "stable served the traffic");
    assert_eq!(canary.arrived(), 0, "the canary got traffic");
    let st = admin_json(p.admin, "/status").await;
    let r = &st["routes"][0]["ramp"];
    assert_eq!(r["state"], "paused", "{r:#}");
    assert_eq!(r["weight"], 0.0);
    assert_eq!(st["routes"][0]["canary_weight"], 0.0);
    assert!(r["error"].as_str().unwrap().contains("corrupt"), "{r:#}");
    assert!(
        r["waiting_for"].as_str().unwrap().contains("corrupt"),
        "{r:#}"
    );
    assert_eq!(st["routes"][0]["arms"]["canary"]["requests"], 0);
    let kept: Vec<_> = std::fs::read_dir(setup.state_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("r.ramp.json.corrupt-"))
        .collect();
    assert_eq!(kept.len(), 1, "the corrupt file is kept aside");
    // The operator resumes: a new ramp from the baseline.
    let (code, body) = post(&c, p.admin, "r", "resume", Some(TOKEN)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["ramp"]["state"], "baseline");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_state_dir_keeps_serving_reports_and_does_not_advance() {
    let (_stable, _canary, setup) = ramped(
        0.0,
        0.0,
        10,
        &format!(
            "steps = [10, 50, 100]\nmin_requests = 40\ngate_ratios = [0, 0]\n{}",
            FAST.replace("baseline = \"1s\"", "baseline = \"3s\"")
        ),
    )
    .await;
    let p = TestProxy::open(&setup.config).await;
    let traffic = Traffic::start(p.proxy, 300.0);
    wait_state(p.admin, "progressing", Duration::from_secs(10)).await;
    // The state dir becomes a plain file: every write fails (like a full disk).
    let moved = setup.dir.join("state.moved");
    std::fs::rename(setup.state_dir(), &moved).unwrap();
    std::fs::write(setup.state_dir(), b"not a directory").unwrap();
    let r = eventually(
        Duration::from_secs(10),
        "a persistence error in /status",
        || async {
            let r = ramp(p.admin).await;
            r["error"].is_string().then_some(r)
        },
    )
    .await;
    let held_at = r["weight"].as_f64().unwrap();
    assert!(held_at < 100.0, "{r:#}");
    // When the step is due to advance, the ramp holds instead (paused, saying why).
    let r = eventually(Duration::from_secs(15), "a persistence hold", || async {
        let r = ramp(p.admin).await;
        (r["state"] == "paused").then_some(r)
    })
    .await;
    assert!(
        r["waiting_for"]
            .as_str()
            .unwrap()
            .contains("cannot persist"),
        "{r:#}"
    );
    assert_eq!(
        r["weight"].as_f64().unwrap(),
        held_at,
        "advanced on unpersisted state: {r:#}"
    );
    // Another 300 requests (about 1 s, several ticks) of evidence the ramp
    // would advance on: it still holds. (It goes on once the disk is back,
    // below.)
    let sent = traffic.sent.load(Ordering::SeqCst);
    eventually(Duration::from_secs(10), "300 more requests", || async {
        traffic.sent.load(Ordering::SeqCst) >= sent + 300
    })
    .await;
    let r = ramp(p.admin).await;
    assert_eq!(
        r["weight"].as_f64().unwrap(),
        held_at,
        "advanced on unpersisted state: {r:#}"
    );
    assert!(
        r["error"].as_str().unwrap().contains("cannot persist"),
        "{r:#}"
    );
    assert_eq!(
        traffic.non_2xx_or_503.load(Ordering::Relaxed),
        0,
        "the proxy kept serving"
    );
    eprintln!(
        "held at {held_at}% while the state dir was unwritable: {}",
        r["waiting_for"]
    );
    // The disk comes back: the error clears and the ramp goes on to 100 %.
    std::fs::remove_file(setup.state_dir()).unwrap();
    std::fs::rename(&moved, setup.state_dir()).unwrap();
    let r = wait_state(p.admin, "promoted", Duration::from_secs(30)).await;
    assert_eq!(r["error"], Value::Null);
    assert_eq!(setup.read_state()["state"]["phase"], "promoted");
}

/// `grayproxy_config_reloads_total{result="ok"}`.
async fn reloads_ok(admin: SocketAddr) -> f64 {
    admin_metrics(admin)
        .await
        .value("grayproxy_config_reloads_total", &[("result", "ok")])
}

/// Replaces `from` with `to` in the config file and waits for the reload.
async fn rewrite(admin: SocketAddr, setup: &Setup, from: &str, to: &str) {
    let before = reloads_ok(admin).await;
    let text = read(&setup.config);
    assert!(text.contains(from), "{from} not in config");
    std::fs::write(&setup.config, text.replace(from, to)).unwrap();
    eventually(Duration::from_secs(10), "the reload", || async {
        let st = admin_json(admin, "/status").await;
        if st["config"]["last_error"].is_string() {
            panic!("reload rejected: {}", st["config"]["last_error"]);
        }
        reloads_ok(admin).await > before
    })
    .await;
}

/// Waits until the driver has persisted `n` more ticks.
async fn ticks_on_disk(setup: &Setup, n: u64) {
    let tick = |s: &Value| s["state"]["last_tick"].as_u64().unwrap();
    let from = tick(&setup.read_state());
    eventually(Duration::from_secs(5), "ticks on disk", || async {
        tick(&setup.read_state()) >= from + n
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_new_canary_new_ramp_policy_edit_keeps_state_ramp_removed_file_weight() {
    let (_stable, canary, setup) = ramped(
        0.0,
        0.0,
        5,
        &format!(
            "steps = [50, 100]\nmin_requests = 20\ngate_ratios = [0]\n{}",
            FAST.replace("baseline = \"1s\"", "baseline = \"3s\"")
        ),
    )
    .await;
    let canary2 = backend("canary2", 0.0, 5).await;
    let p = TestProxy::open(&setup.config).await;
    let c = client();
    let traffic = Traffic::start(p.proxy, 200.0);
    wait_state(p.admin, "promoted", Duration::from_secs(30)).await;

    // A new canary build (other endpoints): a new ramp from the first step.
    rewrite(
        p.admin,
        &setup,
        &canary.addr.to_string(),
        &canary2.addr.to_string(),
    )
    .await;
    let r = eventually(Duration::from_secs(10), "a new ramp", || async {
        let r = ramp(p.admin).await;
        let last = r["decisions"].as_array().unwrap().last().cloned().unwrap();
        (last["action"] == "new_ramp").then_some(r)
    })
    .await;
    let last = r["decisions"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["trigger"], "config");
    assert_eq!(last["weight"], 50.0);
    traffic.stop();
    traffic.landed().await;
    let held = ramp(p.admin).await;

    // A policy edit that leaves the canary alone keeps the ramp where it is.
    rewrite(
        p.admin,
        &setup,
        "max_step_duration = \"1m\"",
        "max_step_duration = \"2m\"",
    )
    .await;
    // The driver has ticked (and persisted) on the new policy.
    ticks_on_disk(&setup, 3).await;
    let r = ramp(p.admin).await;
    assert_eq!(r["state"], held["state"]);
    assert_eq!(r["step"], held["step"]);
    assert_eq!(r["decisions"], held["decisions"]);

    // The ramp removed: the file's weight applies again, the ramp is idle.
    let text = read(&setup.config);
    let cut = text.find("[routes.ramp]").unwrap();
    let before = reloads_ok(p.admin).await;
    std::fs::write(
        &setup.config,
        text[..cut].replace("fallback = false", "fallback = false\ncanary_weight = 7"),
    )
    .unwrap();
    eventually(Duration::from_secs(10), "the file's weight", || async {
        let st = admin_json(p.admin, "/status").await;
        let route = &st["routes"][0];
        reloads_ok(p.admin).await > before
            && route["canary_weight"] == 7.0
            && route["ramp"]["state"] == "idle"
    })
    .await;
    let (code, _) = post(&c, p.admin, "r", "pause", Some(TOKEN)).await;
    assert_eq!(code, StatusCode::CONFLICT, "no ramp any more");
}
