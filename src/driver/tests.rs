//! Driver tests on paused tokio time: persistence gating (no raise of the
//! weight on unpersisted state), corrupt files, restarts from the file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use std::sync::Arc;

use super::canary_fingerprint;
use super::route::RouteDriver;
use crate::domain::{Arm, CanaryWeight};
use crate::metrics::Metrics;
use crate::persist::Store;
use crate::proxy::runtime::Runtime;
use crate::ramp::command::{Command, CommandError};
use crate::ramp::state::{Phase, RampEvent};

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:0"
[admin]
listen = "127.0.0.1:0"
[upstreams.v1]
endpoints = ["127.0.0.1:1"]
[upstreams.v2]
endpoints = ["127.0.0.1:2"]
[[routes]]
name = "r"
stable = "v1"
canary = "v2"
[routes.ramp]
steps = [10, 100]
gate_ratios = [0]
tick = "1s"
interval = "2s"
baseline = "3s"
min_requests = 5
"#;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("grayproxy-driver-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    let _ = std::fs::remove_file(&d);
    d
}

fn driver(state_dir: &Path) -> RouteDriver {
    let config = crate::config::parse(CONFIG, Path::new("/etc/gp/c.toml"))
        .unwrap()
        .config;
    let route = config.routes[0].clone();
    let canary = canary_fingerprint(&config, &route);
    let runtime = Runtime::new(Metrics::new().unwrap(), config);
    let rt = runtime.snapshot().routes[0].clone();
    RouteDriver::open(
        "r",
        rt,
        Arc::new(Store::new(state_dir)),
        (*route.ramp.unwrap(), canary),
        false,
        None,
    )
}

/// One second of traffic (10 requests per arm at the live weight's arms), then a tick.
async fn second(d: &mut RouteDriver) {
    for i in 0..20 {
        let arm = if i % 2 == 0 && d.rt.weight() != CanaryWeight::ZERO {
            Arm::Canary
        } else {
            Arm::Stable
        };
        d.rt.window
            .record(arm, i % 4 / 2, false, Duration::from_millis(5 + i as u64));
    }
    tokio::time::advance(Duration::from_secs(1)).await;
    let counts = d.rt.take_tick();
    let _ = d.apply(RampEvent::Tick(counts));
    d.publish();
}

#[tokio::test(start_paused = true)]
async fn healthy_ramp_is_persisted_at_every_step_and_restarts_from_the_file() {
    let state_dir = dir("healthy");
    let mut d = driver(&state_dir);
    assert_eq!(d.state.phase(), Phase::Baseline);
    for _ in 0..3 {
        second(&mut d).await;
    }
    assert_eq!(d.state.phase(), Phase::Progressing);
    assert_eq!(d.rt.weight().percent(), 10.0);
    // A restart mid-ramp (the task dropped without a goodbye) resumes exactly.
    let restarted = driver(&state_dir);
    assert_eq!(restarted.state, d.state);
    assert_eq!(restarted.rt.weight().percent(), 10.0);
    // A tick that decides nothing still moves the judge: it is on disk too.
    second(&mut d).await;
    assert_eq!(d.state.phase(), Phase::Progressing);
    let file = Store::new(&state_dir).load("r", 0).unwrap().unwrap();
    assert_eq!(file.state, d.state);
    assert_eq!(file.state.step_canary().requests, 10);
    for _ in 0..3 {
        second(&mut d).await;
    }
    assert_eq!(d.state.phase(), Phase::Promoted);
    assert_eq!(d.error, None);
    let status = d.rt.ramp_status.lock().unwrap().clone().unwrap();
    assert_eq!(status.state, Phase::Promoted);
    assert_eq!(status.weight, 100.0);
    let audit = std::fs::read_to_string(state_dir.join("audit.jsonl")).unwrap();
    let actions: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["action"].to_string())
        .collect();
    assert_eq!(
        actions,
        ["\"baseline_started\"", "\"ramp_started\"", "\"promote\""]
    );
    let _ = std::fs::remove_dir_all(state_dir);
}

#[tokio::test(start_paused = true)]
async fn no_raise_on_unpersisted_state_then_continues_when_writable() {
    let state_dir = dir("gated");
    let mut d = driver(&state_dir);
    // The state dir turns into a plain file: every write fails from now on.
    std::fs::remove_dir_all(&state_dir).unwrap();
    std::fs::write(&state_dir, b"x").unwrap();
    for _ in 0..3 {
        second(&mut d).await;
    }
    // The baseline is over, but the first step is not taken: it is not on disk.
    assert_eq!(
        d.state.phase(),
        Phase::Paused,
        "{:?}",
        d.state.pause_reason()
    );
    assert_eq!(d.rt.weight(), CanaryWeight::ZERO);
    assert!(d.error.as_deref().unwrap().contains("cannot persist"));
    let status = d.rt.ramp_status.lock().unwrap().clone().unwrap();
    assert!(status.error.is_some());
    assert!(status.waiting_for.unwrap().contains("cannot persist"));
    // An operator's promote is refused for the same reason.
    let refused = d.command(Command::Promote);
    assert!(
        matches!(refused, Err(CommandError::Persist(_))),
        "{refused:?}"
    );
    assert_eq!(d.rt.weight(), CanaryWeight::ZERO);
    // ... while a rollback (the safe direction) applies anyway.
    std::fs::remove_file(&state_dir).unwrap();
    // Writable again: the ramp continues by itself, then advances.
    for _ in 0..3 {
        second(&mut d).await;
    }
    assert_eq!(d.error, None);
    assert_eq!(d.state.phase(), Phase::Progressing);
    assert_eq!(d.rt.weight().percent(), 10.0);
    let file = Store::new(&state_dir).load("r", 0).unwrap().unwrap();
    assert_eq!(file.state, d.state);
    let _ = std::fs::remove_dir_all(state_dir);
}

#[tokio::test(start_paused = true)]
async fn rollback_applies_even_when_it_cannot_be_persisted() {
    let state_dir = dir("rollback");
    let mut d = driver(&state_dir);
    for _ in 0..3 {
        second(&mut d).await;
    }
    assert_eq!(d.rt.weight().percent(), 10.0);
    std::fs::remove_dir_all(&state_dir).unwrap();
    std::fs::write(&state_dir, b"x").unwrap();
    let s = d.command(Command::Rollback).unwrap();
    assert_eq!(s.state, Phase::RolledBack);
    assert_eq!(d.rt.weight(), CanaryWeight::ZERO);
    assert!(s.error.is_some(), "the unpersisted rollback is reported");
    std::fs::remove_file(&state_dir).unwrap();
    second(&mut d).await;
    assert_eq!(d.error, None, "the dirty state is written on the next tick");
    let file = Store::new(&state_dir).load("r", 0).unwrap().unwrap();
    assert_eq!(file.state.phase(), Phase::RolledBack);
    let _ = std::fs::remove_dir_all(state_dir);
}

#[tokio::test(start_paused = true)]
async fn corrupt_file_holds_at_zero_and_commands_report_their_state() {
    let state_dir = dir("corrupt");
    std::fs::create_dir_all(&state_dir).unwrap();
    std::fs::write(state_dir.join("r.ramp.json"), b"\0\0\0").unwrap();
    let mut d = driver(&state_dir);
    assert_eq!(d.state.phase(), Phase::Paused);
    assert_eq!(d.rt.weight(), CanaryWeight::ZERO);
    assert!(d.status().error.unwrap().contains("corrupt"));
    for _ in 0..5 {
        second(&mut d).await;
    }
    assert_eq!(d.state.phase(), Phase::Paused, "never moves by itself");
    assert_eq!(d.rt.weight(), CanaryWeight::ZERO);
    assert!(
        d.status().error.unwrap().contains("corrupt"),
        "still reported"
    );
    let e = d.command(Command::Pause).unwrap_err();
    assert_eq!(e.to_string(), "cannot pause route `r`: its ramp is paused");
    let s = d.command(Command::Resume).unwrap();
    assert_eq!(s.state, Phase::Baseline);
    assert_eq!(s.error, None, "the operator has acted");
    let _ = std::fs::remove_dir_all(state_dir);
}
