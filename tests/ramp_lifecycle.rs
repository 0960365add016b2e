//! The ramp through the real binary: operator commands with the CLI, and
//! `kill -9` in the middle of a ramp followed by a restart that resumes at
//! the same step with the same judge state.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use serde_json::Value;
use support::ramp::*;
use support::{admin_json, eventually, read, run_cli, Binary};

/// `grayproxy ARGS..` with the admin token (if any) in the environment:
/// (exit ok, stdout, stderr).
fn cli(args: &[&str], env_token: Option<&str>) -> (bool, String, String) {
    let env: Vec<(&str, &str)> = env_token
        .map(|t| ("GRAYPROXY_ADMIN_TOKEN", t))
        .into_iter()
        .collect();
    let out = run_cli(&std::env::temp_dir(), args, &env);
    (out.ok(), out.stdout, out.stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_through_the_cli() {
    let (_stable, _canary, setup) = ramped(
        0.0,
        0.0,
        0,
        "steps = [10, 50, 100]\ntick = \"100ms\"\ninterval = \"300ms\"\nbaseline = \"500ms\"\nmin_requests = 1000000",
    )
    .await;
    let p = Binary::start(&setup.config);
    let _traffic = Traffic::start(p.proxy, 100.0);
    eventually(Duration::from_secs(10), "progressing", || async {
        (ramp(p.admin).await["state"] == "progressing").then_some(())
    })
    .await;
    let admin = format!("http://{}", p.admin);
    let token_file = setup.dir.join("admin.token");
    let tf = token_file.to_str().unwrap();
    let run = |verb: &str| cli(&[verb, "r", "--admin", &admin, "--token-file", tf], None);

    let (ok, out, err) = run("pause");
    assert!(ok, "{err}");
    assert!(
        out.starts_with("r: paused at step 0, canary weight 10%"),
        "{out}"
    );
    assert_eq!(ramp(p.admin).await["state"], "paused");

    // The token from the environment works too.
    let (ok, out, err) = cli(&["resume", "r", "--admin", &admin], Some(TOKEN));
    assert!(ok, "{err}");
    assert!(out.starts_with("r: progressing at step 0"), "{out}");

    let (ok, out, err) = run("promote");
    assert!(ok, "{err}");
    assert!(
        out.starts_with("r: promoted at step 2, canary weight 100%"),
        "{out}"
    );
    let st = admin_json(p.admin, "/status").await;
    assert_eq!(st["routes"][0]["canary_weight"], 100.0);

    let (ok, out, err) = run("rollback");
    assert!(ok, "{err}");
    assert!(
        out.starts_with("r: rolled_back at step 2, canary weight 0%"),
        "{out}"
    );
    assert_eq!(
        admin_json(p.admin, "/status").await["routes"][0]["canary_weight"],
        0.0
    );

    // Refusals exit 1 with the admin API's reason.
    let (ok, _, err) = cli(&["pause", "r", "--admin", &admin], Some("wrong"));
    assert!(!ok);
    assert!(err.contains("wrong admin token (HTTP 401"), "{err}");
    let (ok, _, err) = cli(&["pause", "r", "--admin", &admin], None);
    assert!(!ok);
    assert!(err.contains("GRAYPROXY_ADMIN_TOKEN"), "{err}");
    let (ok, _, err) = cli(&["pause", "nope", "--admin", &admin], Some(TOKEN));
    assert!(!ok);
    assert!(err.contains("HTTP 404"), "{err}");
    let (ok, _, err) = run("pause");
    assert!(!ok, "pausing a rolled-back ramp does not apply");
    assert!(err.contains("HTTP 409"), "{err}");

    // Every command is in the audit log, marked as the operator's.
    let audit = setup.audit();
    let ops: Vec<&str> = audit
        .iter()
        .filter(|r| r["trigger"] == "operator" && r["action"] != "baseline_started")
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["pause", "resume", "promote", "rollback"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_ramp_and_restart_resumes_at_the_same_step() {
    let (_stable, _canary, setup) = ramped(
        0.0,
        0.0,
        5,
        "steps = [10, 20, 30, 40, 50, 100]\ngate_ratios = [0, 0, 0, 0, 0]\ntick = \"100ms\"\ninterval = \"1s\"\nbaseline = \"3s\"\nmin_requests = 20",
    )
    .await;
    let p = Binary::start(&setup.config);
    let traffic = Traffic::start(p.proxy, 200.0);
    eventually(Duration::from_secs(30), "step 1 or later", || async {
        let r = ramp(p.admin).await;
        assert_ne!(r["state"], "promoted", "went too fast to catch mid-ramp");
        (r["step"].as_u64().unwrap_or(0) >= 1 && r["state"] == "progressing").then_some(())
    })
    .await;
    // Stop the traffic so the step cannot be left, and let the last requests land.
    traffic.stop();
    traffic.landed().await;
    let before = ramp(p.admin).await;
    assert_eq!(before["state"], "progressing", "{before:#}");
    p.kill9();
    let file = setup.read_state();
    assert_eq!(file["state"]["step"], before["step"]);
    assert_eq!(file["state"]["phase"], "progressing");

    let mut p = Binary::start(&setup.config);
    // The driver starts right after the listeners.
    let after = eventually(Duration::from_secs(5), "the ramp loaded", || async {
        let r = ramp(p.admin).await;
        (r["state"] != "idle").then_some(r)
    })
    .await;
    assert_eq!(after["state"], "progressing", "{after:#}");
    assert_eq!(after["step"], before["step"]);
    assert_eq!(after["weight"], before["weight"]);
    assert_eq!(after["decisions"], before["decisions"], "same history");
    let st = admin_json(p.admin, "/status").await;
    assert_eq!(st["routes"][0]["canary_weight"], before["weight"]);
    // The judge resumed with the exact e-process state it had on disk.
    let resumed: Value = setup.read_state();
    assert_eq!(
        resumed["state"]["judge"]["rollback_errors"],
        file["state"]["judge"]["rollback_errors"]
    );
    assert_eq!(
        resumed["state"]["judge"]["gates"],
        file["state"]["judge"]["gates"]
    );
    eprintln!(
        "resumed at step {} ({}%) after kill -9",
        after["step"], after["weight"]
    );
    // And it carries on from there: judging (and persisting) every tick.
    let _traffic = Traffic::start(p.proxy, 200.0);
    let last_tick = resumed["state"]["last_tick"].as_u64().unwrap();
    eventually(Duration::from_secs(10), "new ticks on disk", || async {
        let now = setup.read_state();
        let judged = now["state"]["step_canary"]["requests"]
            .as_u64()
            .unwrap_or(0);
        (now["state"]["last_tick"].as_u64().unwrap() > last_tick && judged > 0).then_some(())
    })
    .await;
    let live = ramp(p.admin).await;
    // SIGTERM: drain, persist, exit 0.
    p.signal("TERM");
    let code = p.wait_exit(Duration::from_secs(10)).await;
    assert!(code.success(), "{code:?}");
    let file = setup.read_state();
    assert!(
        file["state"]["step"].as_u64() >= live["step"].as_u64(),
        "{file:#}"
    );
}

#[tokio::test]
async fn simulate_needs_a_route_with_a_ramp() {
    let setup = Setup::new(
        "127.0.0.1:1".parse().unwrap(),
        "127.0.0.1:2".parse().unwrap(),
        "steps = [1, 5, 10, 25, 50, 100]\ntick = \"10s\"",
    );
    let mut text = read(&setup.config);
    text.push_str("[[routes]]\nname = \"plain\"\nstable = \"v1\"\ncanary = \"v2\"\n");
    std::fs::write(&setup.config, text).unwrap();
    let cfg = setup.config.to_str().unwrap();
    let (ok, _, err) = cli(&["simulate", "-c", cfg, "--route", "plain"], None);
    assert!(!ok);
    assert!(err.contains("route `plain` has no ramp"), "{err}");
    let (ok, _, err) = cli(&["simulate", "-c", cfg, "--route", "nope"], None);
    assert!(!ok);
    assert!(err.contains("no route named `nope`"), "{err}");
    let args = [
        "simulate", "-c", cfg, "--route", "r", "--runs", "20", "--rps", "200", "--seed", "7",
    ];
    let (ok, out, err) = cli(&args, None);
    assert!(ok, "{err}");
    assert!(out.contains("healthy"), "{out}");
    assert!(out.contains("errors ×5"), "{out}");
    // Deterministic for a seed.
    assert_eq!(cli(&args, None).1, out);
}
