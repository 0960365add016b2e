//! The real binary's life (README, "Commands" and "Reloading"), driven
//! like an operator would: `check` a bad file and the shipped one; `run`,
//! serve, break the file, keep serving, fix it, SIGHUP; SIGTERM with slow
//! requests in flight.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use support::{
    admin_json, admin_metrics, client, config, eventually, get, route_weight, run_cli,
    write_atomically, Binary, Fault, TempDir, TestUpstream,
};

const BAD: &str = r#"[server]
listen = "127.0.0.1:0"
request_timeout = "10"
colour = "blue"

[upstreams.reco-v1]
endpoints = ["127.0.0.1:18081"]

[[routes]]
name = "recommend"
stable = "reco-v1"
canary = "reco-v2"
canary_weight = 150
sticky = "session"
"#;

const BAD_STDERR: &str = r#"error: grayproxy.toml:3:19: `request_timeout`: invalid duration "10": missing or unknown unit after 10; use e.g. "250ms", "30s", "5m", "1h" or "1m30s"
error: grayproxy.toml:4:1: unknown key `colour` in [server]; expected one of: listen, arm_header, workers, tls, request_timeout, header_read_timeout, keepalive_timeout, shutdown_grace, max_body_bytes, max_header_bytes, max_headers, connect_timeout, max_connections, access_log_sample
error: grayproxy.toml:12:10: upstream `reco-v2` is not defined; defined upstreams: reco-v1
error: grayproxy.toml:13:17: canary_weight 150 is above 100; use 0.0..=100.0
error: grayproxy.toml:14:10: sticky "session" must be "header:NAME", "cookie:NAME" or "query:NAME"
"#;

#[test]
fn check_reports_every_error_of_a_bad_file_and_exits_1() {
    let dir = TempDir::new();
    std::fs::write(dir.join("grayproxy.toml"), BAD).unwrap();
    let out = run_cli(dir.path(), &["check", "-c", "grayproxy.toml"], &[]);
    assert_eq!(out.code, Some(1));
    assert_eq!(out.stderr, BAD_STDERR);
    assert_eq!(out.stdout, "");
    // `run` refuses the same file with the same report.
    let out = run_cli(dir.path(), &["run", "-c", "grayproxy.toml"], &[]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains(BAD_STDERR));
}

#[test]
fn check_accepts_the_shipped_config_with_a_one_line_summary() {
    let out = run_cli(
        Path::new(env!("CARGO_MANIFEST_DIR")),
        &["check", "-c", "config/grayproxy.toml"],
        &[],
    );
    assert_eq!(out.code, Some(0));
    assert_eq!(
        out.stdout,
        "ok: config/grayproxy.toml: 2 upstreams, 1 route (recommend: canary 5% with ramp 1→100%)\n"
    );
    assert_eq!(
        out.stderr,
        "warning: config/grayproxy.toml:27:17: canary_weight is ignored: the ramp (line 46) owns the weight; remove canary_weight\n"
    );
}

fn route(weight: &str) -> String {
    format!(
        "[[routes]]\nname = \"reco\"\nstable = \"stable\"\ncanary = \"canary\"\ncanary_weight = {weight}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_break_keep_serving_fix_sighup_sigterm() {
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let ups = [("stable", stable.addr), ("canary", canary.addr)];
    let dir = TempDir::new();
    let path = dir.join("grayproxy.toml");
    std::fs::write(&path, config("", &ups, &route("0.0"))).unwrap();
    let check = run_cli(dir.path(), &["check", "-c", "grayproxy.toml"], &[]);
    assert_eq!(check.code, Some(0), "{check:?}");

    let mut proxy = Binary::start(&path);
    let c = client();
    let url = format!("http://{}/reco", proxy.proxy);
    let serving = |arm: &'static str| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            for _ in 0..10 {
                let a = get(&c, &url, &[]).await;
                assert_eq!((a.status.as_u16(), a.arm()), (200, arm));
            }
        }
    };
    serving("stable").await;
    let health = get(&c, &format!("http://{}/healthz", proxy.admin), &[]).await;
    assert_eq!(health.status, 200);
    let ready = get(&c, &format!("http://{}/readyz", proxy.admin), &[]).await;
    assert_eq!(ready.status, 200);

    // Break the file: still serving the old split, the error is visible.
    write_atomically(&path, &config("", &ups, &route("101.0")));
    let admin = proxy.admin;
    eventually(
        Duration::from_secs(5),
        "reload error reported",
        || async move { !admin_json(admin, "/status").await["config"]["last_error"].is_null() },
    )
    .await;
    let m = admin_metrics(admin).await;
    assert_eq!(
        m.value("grayproxy_config_reloads_total", &[("result", "error")]),
        1.0
    );
    serving("stable").await;

    // Fix it: applied within 2 s, error cleared.
    write_atomically(&path, &config("", &ups, &route("100.0")));
    eventually(
        Duration::from_secs(2),
        "fixed file applied",
        || async move { route_weight(&admin_json(admin, "/status").await, "reco") == 100.0 },
    )
    .await;
    assert!(admin_json(admin, "/status").await["config"]["last_error"].is_null());
    serving("canary").await;

    // SIGHUP reloads even without a file change.
    let ok_before = admin_metrics(admin)
        .await
        .value("grayproxy_config_reloads_total", &[("result", "ok")]);
    proxy.signal("HUP");
    eventually(
        Duration::from_secs(5),
        "SIGHUP reload counted",
        || async move {
            admin_metrics(admin)
                .await
                .value("grayproxy_config_reloads_total", &[("result", "ok")])
                == ok_before + 1.0
        },
    )
    .await;
    assert!(proxy.logs().iter().any(|l| l.contains("SIGHUP")));
    serving("canary").await;

    proxy.signal("TERM");
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "logs:\n{}", proxy.logs().join("\n"));
}

/// `server.access_log_sample` is read from the live config: on at 1.0, off
/// at 0.0 after a reload, on again after the next. The requests made while
/// it was off go to the canary, the logged ones to stable, so one stray line
/// from the off period would show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_sample_follows_the_file() {
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let ups = [("stable", stable.addr), ("canary", canary.addr)];
    let dir = TempDir::new();
    let path = dir.join("grayproxy.toml");
    let text = |sample: &str, weight: &str| {
        config(
            &format!("access_log_sample = {sample}"),
            &ups,
            &route(weight),
        )
    };
    std::fs::write(&path, text("1.0", "0.0")).unwrap();
    let proxy = Binary::start(&path);
    let access_arms = |proxy: &Binary| -> Vec<String> {
        proxy
            .logs()
            .iter()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "access")
            .map(|v| v["fields"]["arm"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let (c, admin) = (client(), proxy.admin);
    let url = format!("http://{}/reco", proxy.proxy);
    assert_eq!(get(&c, &url, &[]).await.arm(), "stable");
    eventually(Duration::from_secs(5), "an access line", || {
        let n = access_arms(&proxy).len();
        async move { n == 1 }
    })
    .await;

    write_atomically(&path, &text("0.0", "100.0"));
    eventually(
        Duration::from_secs(5),
        "sample 0.0 applied",
        || async move { route_weight(&admin_json(admin, "/status").await, "reco") == 100.0 },
    )
    .await;
    for _ in 0..5 {
        assert_eq!(get(&c, &url, &[]).await.arm(), "canary");
    }

    write_atomically(&path, &text("1.0", "0.0"));
    eventually(
        Duration::from_secs(5),
        "sample 1.0 applied",
        || async move { route_weight(&admin_json(admin, "/status").await, "reco") == 0.0 },
    )
    .await;
    assert_eq!(get(&c, &url, &[]).await.arm(), "stable");
    // Lines arrive in the order they were written: the canary requests'
    // lines, had there been any, would come before this one.
    eventually(Duration::from_secs(5), "a second access line", || {
        let n = access_arms(&proxy).len();
        async move { n >= 2 }
    })
    .await;
    assert_eq!(access_arms(&proxy), ["stable", "stable"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_20_slow_requests_finish_and_refuses_new_connections() {
    sigterm_drains("workers = 1").await;
}

/// The same with two proxy threads, each with its own listening socket:
/// both close at once and both drain.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_with_two_workers_drains_both() {
    sigterm_drains("workers = 2").await;
}

async fn sigterm_drains(workers: &str) {
    const IN_FLIGHT: usize = 20;
    let slow = TestUpstream::spawn("stable")
        .await
        .with(Fault::Delay(Duration::from_millis(1500)));
    let canary = TestUpstream::spawn("canary").await;
    let dir = TempDir::new();
    let path = dir.join("grayproxy.toml");
    let text = config(
        &format!("shutdown_grace = \"10s\"\n{workers}"),
        &[("stable", slow.addr), ("canary", canary.addr)],
        &route("0.0"),
    );
    std::fs::write(&path, text).unwrap();
    let mut proxy = Binary::start(&path);
    let proxy_addr = proxy.proxy;

    let done = Arc::new(AtomicUsize::new(0));
    let c = client();
    let requests: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let (c, done) = (c.clone(), done.clone());
            let url = format!("http://{proxy_addr}/slow/{i}");
            tokio::spawn(async move {
                let a = get(&c, &url, &[]).await;
                done.fetch_add(1, Ordering::SeqCst);
                a
            })
        })
        .collect();
    eventually(
        Duration::from_secs(10),
        "20 requests at the upstream",
        || {
            let n = slow.arrived();
            async move { n == IN_FLIGHT }
        },
    )
    .await;

    proxy.signal("TERM");
    // The listener closes at once, while the 20 are still waiting on the upstream.
    eventually(
        Duration::from_secs(1),
        "new connections refused",
        || async move { tokio::net::TcpStream::connect(proxy_addr).await.is_err() },
    )
    .await;
    assert_eq!(
        done.load(Ordering::SeqCst),
        0,
        "the listener closed only after requests finished"
    );

    for r in requests {
        let a = r.await.unwrap();
        assert_eq!(a.status, 200, "{a:?}");
        assert_eq!(a.body, "stable");
    }
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    assert_eq!(status.code(), Some(0), "logs:\n{}", proxy.logs().join("\n"));
    assert!(proxy.logs().iter().any(|l| l.contains("stopped")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigint_stops_cleanly_and_shutdown_grace_caps_the_drain() {
    let slow = TestUpstream::spawn("stable")
        .await
        .with(Fault::Delay(Duration::from_secs(30)));
    let canary = TestUpstream::spawn("canary").await;
    let dir = TempDir::new();
    let path = dir.join("grayproxy.toml");
    let text = config(
        "shutdown_grace = \"1s\"\nrequest_timeout = \"60s\"",
        &[("stable", slow.addr), ("canary", canary.addr)],
        &route("0.0"),
    );
    std::fs::write(&path, text).unwrap();
    let mut proxy = Binary::start(&path);
    let url = format!("http://{}/stuck", proxy.proxy);
    let c = client();
    let stuck = tokio::spawn(async move {
        support::send(&c, http::Request::get(url).body(support::empty()).unwrap()).await
    });
    eventually(Duration::from_secs(10), "request at the upstream", || {
        let n = slow.arrived();
        async move { n == 1 }
    })
    .await;
    let started = tokio::time::Instant::now();
    proxy.signal("INT");
    let status = proxy.wait_exit(Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert_eq!(status.code(), Some(0), "logs:\n{}", proxy.logs().join("\n"));
    assert!(
        took >= Duration::from_millis(900),
        "exited after {took:?}, before the grace"
    );
    assert!(
        took < Duration::from_secs(5),
        "took {took:?} for a 1 s grace"
    );
    assert!(proxy.logs().iter().any(|l| l.contains("grace expired")));
    // The stuck request was cut off, not answered.
    assert!(stuck.await.unwrap().is_err());
}

/// CPU ticks (user + system) of each of `pid`'s threads named `prefix…`.
fn thread_ticks(pid: u32, prefix: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !name.starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is the 3rd field,
        // utime the 14th and stime the 15th.
        let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks = fields
            .get(11)
            .and_then(|u| u.parse::<u64>().ok())
            .unwrap_or(0)
            + fields
                .get(12)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
        out.push((name.trim().to_string(), ticks));
    }
    out.sort();
    out
}

/// `workers = 2`: two proxy threads, each with its own socket on the one
/// port; the kernel spreads 32 client connections over both, and both
/// threads do the work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_workers_share_the_port_and_both_serve() {
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let dir = TempDir::new();
    let path = dir.join("grayproxy.toml");
    let text = config(
        "workers = 2",
        &[("stable", stable.addr), ("canary", canary.addr)],
        &route("50.0"),
    );
    std::fs::write(&path, text).unwrap();
    let proxy = Binary::start(&path);
    let names: Vec<String> = thread_ticks(proxy.pid(), "proxy-worker")
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(names, ["proxy-worker-0", "proxy-worker-1"]);

    // 32 connections (a client each), 150 requests on each.
    let url = format!("http://{}/api", proxy.proxy);
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let url = url.clone();
            tokio::spawn(async move {
                let c = client();
                let mut arms = [0usize; 2];
                for _ in 0..150 {
                    let a = get(&c, &url, &[]).await;
                    assert_eq!(a.status, 200, "{a:?}");
                    arms[usize::from(a.body == "canary")] += 1;
                }
                arms
            })
        })
        .collect();
    let mut arms = [0usize; 2];
    for t in tasks {
        let a = t.await.unwrap();
        arms[0] += a[0];
        arms[1] += a[1];
    }
    assert_eq!(arms[0] + arms[1], 32 * 150);
    assert!(arms[0] > 1500 && arms[1] > 1500, "{arms:?}");
    let ticks = thread_ticks(proxy.pid(), "proxy-worker");
    eprintln!("CPU ticks per proxy thread: {ticks:?}");
    // Each thread served its share of 4,800 requests: far more than one
    // clock tick (10 ms) of CPU each. A thread whose socket got no
    // connection would sit at its start-up ticks (0 or 1).
    assert!(
        ticks.iter().all(|(_, t)| *t >= 3),
        "CPU ticks per proxy thread: {ticks:?}"
    );
}
