//! The ramp end to end, in process: real proxy and admin sockets, real
//! backends, the real driver with short ticks (tick 100 ms, interval 300 ms,
//! baseline 1 s), so each story takes seconds.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ramp_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use grayproxy::app::App;
use http::{Method, StatusCode};
use ramp_support::*;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_with_30_percent_503s_is_rolled_back() {
    let (stable, canary) = (Backend::spawn(0.0).await, Backend::spawn(0.30).await);
    let setup = Setup::new(
        "rollback",
        stable.addr,
        canary.addr,
        &format!("steps = [10, 50, 100]\nmin_requests = 100000\n{FAST}"),
    );
    let app = start(&setup).await;
    let c = client();
    let traffic = Traffic::start(app.proxy_addr, 300.0);
    let r = wait_state(&c, &app, "rolled_back", Duration::from_secs(30)).await;
    assert_eq!(r["weight"], 0.0);
    let last = r["decisions"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["action"], "rollback");
    assert_eq!(last["trigger"], "judge");
    assert!(last["evidence"].is_object(), "{last}");
    // Canary exposure until the rollback.
    let exposure = canary.requests.load(Ordering::Relaxed);
    eprintln!(
        "rolled back after {exposure} canary requests: {}",
        last["reason"]
    );
    // From now on every weight-assigned request goes to stable.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = canary.requests.load(Ordering::Relaxed);
    let sent = traffic.sent.load(Ordering::Relaxed);
    eventually(Duration::from_secs(10), "300 more requests", || async {
        (traffic.sent.load(Ordering::Relaxed) >= sent + 300).then_some(())
    })
    .await;
    assert_eq!(
        canary.requests.load(Ordering::Relaxed),
        before,
        "canary still gets traffic"
    );
    let st = status(&c, app.admin_addr).await;
    assert_eq!(st["routes"][0]["canary_weight"], 0.0);
    assert_eq!(actions(&setup.audit()).last().unwrap(), "rollback");
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_arms_at_10_percent_errors_never_roll_back() {
    let (stable, canary) = (
        Backend::spawn_slow(0.10, 10.0).await,
        Backend::spawn_slow(0.10, 10.0).await,
    );
    // One long step at 50 %: the judge compares the arms on every tick.
    let setup = Setup::new(
        "shared-errors",
        stable.addr,
        canary.addr,
        r#"steps = [50, 100]
tick = "100ms"
interval = "10m"
baseline = "1s"
max_step_duration = "1h""#,
    );
    let app = start(&setup).await;
    let c = client();
    let traffic = Traffic::start(app.proxy_addr, 300.0);
    wait_state(&c, &app, "progressing", Duration::from_secs(10)).await;
    let judged_from = canary.requests.load(Ordering::Relaxed);
    let window = tokio::time::Instant::now() + Duration::from_secs(8);
    while tokio::time::Instant::now() < window {
        let r = ramp(&c, app.admin_addr).await;
        assert_eq!(r["state"], "progressing", "{r:#}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let judged = canary.requests.load(Ordering::Relaxed) - judged_from;
    traffic.stop();
    assert!(judged > 500, "only {judged} canary requests were judged");
    assert!(!actions(&setup.audit()).contains(&"rollback".to_string()));
    let st = status(&c, app.admin_addr).await;
    let arms = &st["routes"][0]["arms"];
    eprintln!(
        "10% errors on both arms: {judged} canary requests judged, no rollback; stable error rate {}, canary {}",
        arms["stable"]["error_rate"], arms["canary"]["error_rate"]
    );
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_request_per_2s_never_advances_nor_rolls_back_and_says_why() {
    let (stable, canary) = (Backend::spawn(0.0).await, Backend::spawn(0.0).await);
    let setup = Setup::new(
        "low-traffic",
        stable.addr,
        canary.addr,
        &format!("steps = [10, 100]\nmin_requests = 5\n{FAST}"),
    );
    let app = start(&setup).await;
    let c = client();
    let url = format!("http://{}/api", app.proxy_addr);
    for i in 0..4 {
        let user = format!("user-{i}");
        let (code, _) = request(&c, Method::GET, &url, &[("x-user-id", &user)]).await;
        assert_eq!(code, StatusCode::OK);
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let r = ramp(&c, app.admin_addr).await;
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
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_endpoints_need_the_token() {
    let (stable, canary) = (Backend::spawn(0.0).await, Backend::spawn(0.0).await);
    let setup = Setup::new("auth", stable.addr, canary.addr, FAST);
    // A second route without a ramp.
    let mut text = read(&setup.config);
    text.push_str("[[routes]]\nname = \"plain\"\nmatch = { path_prefix = \"/plain\" }\nstable = \"v1\"\ncanary = \"v2\"\n");
    std::fs::write(&setup.config, text).unwrap();
    let app = start(&setup).await;
    let c = client();
    for action in ["promote", "rollback", "pause", "resume"] {
        for token in [None, Some("wrong"), Some("test-token-5f1"), Some("")] {
            let (code, body) = post(&c, app.admin_addr, "r", action, token).await;
            assert_eq!(
                code,
                StatusCode::UNAUTHORIZED,
                "{action} with {token:?}: {body}"
            );
        }
        let (code, body) = post(&c, app.admin_addr, "nope", action, Some(TOKEN)).await;
        assert_eq!(code, StatusCode::NOT_FOUND, "{body}");
        let (code, body) = post(&c, app.admin_addr, "plain", action, Some(TOKEN)).await;
        assert_eq!(code, StatusCode::CONFLICT, "{body}");
        assert!(
            body["error"].as_str().unwrap().contains("no ramp"),
            "{body}"
        );
        let (code, _) = request(
            &c,
            Method::GET,
            &format!("http://{}/routes/r/{action}", app.admin_addr),
            &[],
        )
        .await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
    }
    // Nothing changed.
    assert_eq!(ramp(&c, app.admin_addr).await["state"], "baseline");
    // With the token: applied, 200 and the new status.
    let (code, body) = post(&c, app.admin_addr, "r", "pause", Some(TOKEN)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["ramp"]["state"], "paused");
    // A command that does not apply: 409.
    let (code, body) = post(&c, app.admin_addr, "r", "pause", Some(TOKEN)).await;
    assert_eq!(code, StatusCode::CONFLICT, "{body}");
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_file_mutations_are_refused_with_advice() {
    let (stable, canary) = (Backend::spawn(0.0).await, Backend::spawn(0.0).await);
    let setup = Setup::new("no-token", stable.addr, canary.addr, FAST);
    let text = read(&setup.config).replace("token_file = \"admin.token\"\n", "");
    std::fs::write(&setup.config, text).unwrap();
    let app = start(&setup).await;
    let c = client();
    let (code, body) = post(&c, app.admin_addr, "r", "promote", Some(TOKEN)).await;
    assert_eq!(code, StatusCode::UNAUTHORIZED);
    assert!(
        body["error"].as_str().unwrap().contains("token_file"),
        "{body}"
    );
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_state_file_pauses_at_0_and_is_reported() {
    let (stable, canary) = (Backend::spawn(0.0).await, Backend::spawn(0.0).await);
    let setup = Setup::new(
        "corrupt",
        stable.addr,
        canary.addr,
        &format!("steps = [10, 100]\n{FAST}"),
    );
    std::fs::create_dir_all(setup.state_dir()).unwrap();
    // What a promoted ramp's file looks like after a bad disk: truncated.
    std::fs::write(
        setup.state_file(),
        br#"{"version":1,"route":"r","canary":"v2","state":{"phase":"promo"#,
    )
    .unwrap();
    let app = start(&setup).await;
    let c = client();
    let _traffic = Traffic::start(app.proxy_addr, 100.0);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let st = status(&c, app.admin_addr).await;
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
    let (code, body) = post(&c, app.admin_addr, "r", "resume", Some(TOKEN)).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body["ramp"]["state"], "baseline");
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_state_dir_keeps_serving_reports_and_does_not_advance() {
    let (stable, canary) = (
        Backend::spawn_slow(0.0, 10.0).await,
        Backend::spawn_slow(0.0, 10.0).await,
    );
    let setup = Setup::new(
        "unwritable",
        stable.addr,
        canary.addr,
        &format!(
            "steps = [10, 50, 100]\nmin_requests = 40\ngate_ratios = [0, 0]\n{}",
            FAST.replace("baseline = \"1s\"", "baseline = \"3s\"")
        ),
    );
    let app = start(&setup).await;
    let c = client();
    let traffic = Traffic::start(app.proxy_addr, 300.0);
    wait_state(&c, &app, "progressing", Duration::from_secs(10)).await;
    // The state dir becomes a plain file: every write fails (like a full disk).
    let moved = setup.dir.join("state.moved");
    std::fs::rename(setup.state_dir(), &moved).unwrap();
    std::fs::write(setup.state_dir(), b"not a directory").unwrap();
    let r = eventually(
        Duration::from_secs(10),
        "a persistence error in /status",
        || async {
            let r = ramp(&c, app.admin_addr).await;
            r["error"].is_string().then_some(r)
        },
    )
    .await;
    let held_at = r["weight"].as_f64().unwrap();
    assert!(held_at < 100.0, "{r:#}");
    // When the step is due to advance, the ramp holds instead (paused, saying why).
    let r = eventually(Duration::from_secs(15), "a persistence hold", || async {
        let r = ramp(&c, app.admin_addr).await;
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
    tokio::time::sleep(Duration::from_secs(1)).await;
    let r = ramp(&c, app.admin_addr).await;
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
    let r = wait_state(&c, &app, "promoted", Duration::from_secs(30)).await;
    assert_eq!(r["error"], Value::Null);
    assert_eq!(setup.read_state()["state"]["phase"], "promoted");
    app.shutdown();
}

/// `grayproxy_config_reloads_total{result="ok"}`.
async fn reloads_ok(c: &HttpClient, app: &App) -> u64 {
    let text = request(
        c,
        Method::GET,
        &format!("http://{}/metrics", app.admin_addr),
        &[],
    )
    .await
    .1;
    text.lines()
        .find(|l| l.starts_with("grayproxy_config_reloads_total{result=\"ok\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn rewrite(c: &HttpClient, app: &App, setup: &Setup, from: &str, to: &str) {
    let before = reloads_ok(c, app).await;
    let text = read(&setup.config);
    assert!(text.contains(from), "{from} not in config");
    std::fs::write(&setup.config, text.replace(from, to)).unwrap();
    eventually(Duration::from_secs(10), "the reload", || async {
        let st = status(c, app.admin_addr).await;
        if st["config"]["last_error"].is_string() {
            panic!("reload rejected: {}", st["config"]["last_error"]);
        }
        (reloads_ok(c, app).await > before).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_new_canary_new_ramp_policy_edit_keeps_state_ramp_removed_file_weight() {
    let stable = Backend::spawn_slow(0.0, 5.0).await;
    let canary = Backend::spawn_slow(0.0, 5.0).await;
    let canary2 = Backend::spawn_slow(0.0, 5.0).await;
    let setup = Setup::new(
        "reload",
        stable.addr,
        canary.addr,
        &format!(
            "steps = [50, 100]\nmin_requests = 20\ngate_ratios = [0]\n{}",
            FAST.replace("baseline = \"1s\"", "baseline = \"3s\"")
        ),
    );
    let app = start(&setup).await;
    let c = client();
    let traffic = Traffic::start(app.proxy_addr, 200.0);
    wait_state(&c, &app, "promoted", Duration::from_secs(30)).await;

    // A new canary build (other endpoints): a new ramp from the first step.
    rewrite(
        &c,
        &app,
        &setup,
        &canary.addr.to_string(),
        &canary2.addr.to_string(),
    )
    .await;
    let r = eventually(Duration::from_secs(10), "a new ramp", || async {
        let r = ramp(&c, app.admin_addr).await;
        let last = r["decisions"].as_array().unwrap().last().cloned().unwrap();
        (last["action"] == "new_ramp").then_some(r)
    })
    .await;
    let last = r["decisions"].as_array().unwrap().last().cloned().unwrap();
    assert_eq!(last["trigger"], "config");
    assert_eq!(last["weight"], 50.0);
    traffic.stop();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let held = ramp(&c, app.admin_addr).await;

    // A policy edit that leaves the canary alone keeps the ramp where it is.
    rewrite(
        &c,
        &app,
        &setup,
        "max_step_duration = \"1m\"",
        "max_step_duration = \"2m\"",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = ramp(&c, app.admin_addr).await;
    assert_eq!(r["state"], held["state"]);
    assert_eq!(r["step"], held["step"]);
    assert_eq!(r["decisions"], held["decisions"]);

    // The ramp removed: the file's weight applies again, the ramp is idle.
    let text = read(&setup.config);
    let cut = text.find("[routes.ramp]").unwrap();
    let before = reloads_ok(&c, &app).await;
    std::fs::write(
        &setup.config,
        text[..cut].replace("fallback = false", "fallback = false\ncanary_weight = 7"),
    )
    .unwrap();
    eventually(Duration::from_secs(10), "the file's weight", || async {
        let st = status(&c, app.admin_addr).await;
        let route = &st["routes"][0];
        (reloads_ok(&c, &app).await > before
            && route["canary_weight"] == 7.0
            && route["ramp"]["state"] == "idle")
            .then_some(())
    })
    .await;
    let (code, _) = post(&c, app.admin_addr, "r", "pause", Some(TOKEN)).await;
    assert_eq!(code, StatusCode::CONFLICT, "no ramp any more");
    app.shutdown();
}
