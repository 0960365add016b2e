//! `grayproxy demo` and `grayproxy status`, driven through the real binary:
//! a canary failing 30 % of its requests is rolled back, a healthy one is
//! promoted, and `status` renders a running proxy's `/status`. The same
//! over gRPC (`demo --grpc`): calls go through, the ramp counts them, and a
//! canary whose calls end in UNAVAILABLE trailers (HTTP 200) is rolled back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{admin_metrics, eventually, run_cli, Binary, BIN};

/// `grayproxy ARGS` with its output as lines (`RUST_LOG=warn`).
fn spawn(args: &[&str]) -> Binary {
    let mut cmd = Command::new(BIN);
    cmd.args(args).env("RUST_LOG", "warn");
    Binary::spawn(cmd)
}

/// Waits (bounded) for the exit; returns the code and all the output.
fn finish(demo: &mut Binary, within: Duration) -> (Option<i32>, String) {
    let status = demo.wait_exit_blocking(within);
    (status.code(), demo.logs().join("\n"))
}

/// `http://ADDR` from the banner line `  admin   http://ADDR   (...)`.
fn admin_url(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string()
}

fn status_once(admin: &str) -> (Option<i32>, String, String) {
    let out = run_cli(&std::env::temp_dir(), &["status", "--admin", admin], &[]);
    (out.code, out.stdout, out.stderr)
}

#[test]
fn a_canary_failing_30_percent_is_rolled_back() {
    let mut demo = spawn(&["demo", "--canary-error-rate", "0.3", "--duration", "3m"]);
    let (code, out) = finish(&mut demo, Duration::from_secs(150));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("result: ROLLED BACK"), "{out}");
    // The audit summary: baseline, ramp start, then the judge's rollback with its evidence.
    let audit = out.split("audit log (").nth(1).expect("an audit summary");
    assert!(audit.contains("baseline_started"), "{audit}");
    let rollback = audit
        .lines()
        .find(|l| l.contains(" rollback "))
        .expect("a rollback line");
    assert!(
        rollback.contains("(judge) canary shown worse"),
        "{rollback}"
    );
    assert!(
        rollback.contains("E ") && rollback.contains("canary "),
        "{rollback}"
    );
    assert!(!audit.contains(" promote "), "{audit}");
    // The final view: weight 0, rolled back.
    assert!(out.contains("state  rolled_back"), "{out}");
    assert!(out.contains("  0.00%"), "{out}");
}

#[test]
fn a_healthy_canary_is_promoted_and_status_shows_the_ramp() {
    let mut demo = spawn(&["demo", "--duration", "4m"]);
    let admin =
        admin_url(&demo.next_line(Duration::from_secs(60), |l| l.contains("admin   http://")));
    assert!(demo
        .logs()
        .iter()
        .any(|l| l.contains("proxy   http://127.0.0.1:")));

    // `status` once, against the running proxy.
    let (code, out, err) = status_once(&admin);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("route recommend\n"), "{out}");
    assert!(out.contains("  canary ["), "{out}");
    assert!(out.contains("stable") && out.contains("p99"), "{out}");

    // `status --watch` redraws (ANSI clear) every second.
    let mut watch = spawn(&["status", "--admin", &admin, "--watch"]);
    let clear = |l: &str| l.contains("\x1b[2J");
    watch.next_line(Duration::from_secs(20), clear);
    watch.next_line(Duration::from_secs(20), clear);
    // The first frame lies between the two clears.
    assert!(watch.logs().iter().any(|l| l.contains("route recommend")));
    drop(watch);

    let (code, out) = finish(&mut demo, Duration::from_secs(230));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("result: PROMOTED"), "{out}");
    let audit = out.split("audit log (").nth(1).expect("an audit summary");
    let advances = audit.lines().filter(|l| l.contains(" advance ")).count();
    assert_eq!(
        advances, 4,
        "1 → 5 → 10 → 25 → 50 %, then promote:\n{audit}"
    );
    assert!(audit.contains(" promote "), "{audit}");
    assert!(!audit.contains(" rollback "), "{audit}");
    assert!(out.contains("100.00%"), "{out}");
}

/// The mean RBO the final view shows (`rbo mean 0.123`).
fn rbo_mean(out: &str) -> f64 {
    let after = out
        .rsplit("rbo mean ")
        .next()
        .expect("a shadow section in the view");
    after
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no rbo mean in {out}"))
}

#[test]
fn a_reshuffling_canary_is_rolled_back_in_the_shadow_phase_having_served_no_user() {
    let mut demo = spawn(&[
        "demo",
        "--shadow",
        "--canary-reorder",
        "0.5",
        "--duration",
        "2m",
    ]);
    let (code, out) = finish(&mut demo, Duration::from_secs(110));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("result: ROLLED BACK"), "{out}");
    let audit = out.split("audit log (").nth(1).expect("an audit summary");
    assert!(audit.contains("shadow_started"), "{audit}");
    assert!(
        !audit.contains("ramp_started"),
        "no step was reached:\n{audit}"
    );
    let rollback = audit
        .lines()
        .find(|l| l.contains(" rollback "))
        .expect("a rollback line");
    assert!(
        rollback.contains("mean RBO") && rollback.contains("min_rbo 0.9"),
        "{rollback}"
    );
    // Half the lists reshuffled: the mean RBO is far below 1.
    let rbo = rbo_mean(&out);
    assert!(rbo < 0.8, "rbo mean {rbo}:\n{out}");
    // No user was served by the canary: its arm row counts 0 requests.
    let canary_row = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with("canary ") && !l.contains('['))
        .expect("the canary's row");
    assert_eq!(
        canary_row.split_whitespace().nth(1),
        Some("0"),
        "{canary_row}"
    );
}

#[test]
fn a_dark_launch_demo_reports_the_rbo_drop() {
    let mut demo = spawn(&["demo", "--canary-reorder", "0.5", "--duration", "4s"]);
    let (code, out) = finish(&mut demo, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("shadow  every stable-answered request mirrored"),
        "{out}"
    );
    let rbo = rbo_mean(&out);
    assert!(rbo > 0.2 && rbo < 0.8, "rbo mean {rbo}:\n{out}");
    assert!(out.contains("shadow mirrored"), "{out}");
}

#[test]
fn status_without_a_proxy_says_so() {
    // A port nothing listens on: bind one, note it, close it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, out, err) = status_once(&format!("http://{addr}"));
    assert_eq!(code, Some(1), "{out}");
    assert!(err.contains("cannot reach the admin API"), "{err}");
}

#[test]
fn demo_rejects_bad_flags() {
    let out = run_cli(
        &std::env::temp_dir(),
        &[
            "demo",
            "--canary-error-rate",
            "1.5",
            "--rps",
            "0",
            "--canary-reorder",
            "2",
        ],
        &[],
    );
    assert_eq!(out.code, Some(2));
    let err = out.stderr;
    assert!(
        err.contains("--canary-error-rate 1.5 is outside 0..=1"),
        "{err}"
    );
    assert!(err.contains("--rps 0 must be in"), "{err}");
    assert!(err.contains("--canary-reorder 2 is outside 0..=1"), "{err}");
}

#[test]
fn demo_ends_at_its_duration_with_exit_0() {
    let mut demo = spawn(&["demo", "--duration", "3s"]);
    let (code, out) = finish(&mut demo, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("result: no decision within --duration"),
        "{out}"
    );
    assert!(out.contains("the ramp was baseline"), "{out}");
}

/// `grayproxy_grpc_responses_total` of the demo route's `arm` with `code`.
fn grpc_calls(m: &support::Metrics, arm: &str, code: &str) -> f64 {
    let labels = [("route", "recommend"), ("arm", arm), ("grpc_status", code)];
    m.value("grayproxy_grpc_responses_total", &labels)
}

#[test]
fn grpc_demo_calls_go_through_and_the_ramp_counts_them() {
    let mut demo = spawn(&["demo", "--grpc", "--duration", "25s"]);
    let banner = demo.next_line(Duration::from_secs(60), |l| l.contains("admin   http://"));
    let admin: std::net::SocketAddr = admin_url(&banner)["http://".len()..].parse().unwrap();
    assert!(demo
        .logs()
        .iter()
        .any(|l| l.contains("gRPC over h2c: /reco.Recommender/Recommend")));
    let rt = tokio::runtime::Runtime::new().unwrap();
    // Stable answers from the first second; the canary once the ramp's
    // first step (1 %) starts after the warm-up and the 10 s baseline.
    let m = rt.block_on(eventually(
        Duration::from_secs(25),
        "OK calls on both arms",
        || async {
            let m = admin_metrics(admin).await;
            let both =
                grpc_calls(&m, "stable", "OK") > 100.0 && grpc_calls(&m, "canary", "OK") > 0.0;
            both.then_some(m)
        },
    ));
    let unavailable =
        grpc_calls(&m, "stable", "UNAVAILABLE") + grpc_calls(&m, "canary", "UNAVAILABLE");
    assert!(
        unavailable < grpc_calls(&m, "stable", "OK") / 20.0,
        "{}",
        m.0
    );
    let (code, out) = finish(&mut demo, Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("result: no decision within --duration"),
        "{out}"
    );
    assert!(out.contains("ramp_started"), "{out}");
    // Every call had an answer with a grpc-status; about 0.5 % were stable's
    // background UNAVAILABLEs.
    let summary = out
        .lines()
        .find(|l| l.starts_with("traffic: users saw"))
        .expect("a traffic line");
    let words: Vec<&str> = summary.split_whitespace().collect();
    let (errors, sent): (f64, f64) = (words[3].parse().unwrap(), words[6].parse().unwrap());
    assert!(sent > 3000.0 && errors < sent / 20.0, "{summary}");
}

#[test]
fn grpc_demo_rolls_back_a_canary_answering_unavailable() {
    let mut demo = spawn(&[
        "demo",
        "--grpc",
        "--canary-error-rate",
        "0.5",
        "--duration",
        "2m",
    ]);
    let (code, out) = finish(&mut demo, Duration::from_secs(150));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("result: ROLLED BACK"), "{out}");
    let audit = out.split("audit log (").nth(1).expect("an audit summary");
    let rollback = audit
        .lines()
        .find(|l| l.contains(" rollback "))
        .expect("a rollback line");
    assert!(
        rollback.contains("(judge) canary shown worse"),
        "{rollback}"
    );
    assert!(out.contains("state  rolled_back"), "{out}");
}
