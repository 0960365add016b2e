//! Hot reload (README, "Reloading") in-process over real sockets: no failed request
//! while the file is rewritten under load, an invalid file keeps the old
//! config live and is reported, a `listen` change needs a restart.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use support::{client, config, eventually, full, get, send, TestProxy, TestUpstream};
use tokio::time::Instant;

async fn setup(
    weight: &str,
) -> (
    TestProxy,
    TestUpstream,
    TestUpstream,
    impl Fn(&str) -> String,
) {
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let (s, c) = (stable.addr, canary.addr);
    let text = move |weight: &str| {
        config(
            "",
            &[("stable", s), ("canary", c)],
            &format!(
                "[[routes]]\nname = \"live\"\nstable = \"stable\"\ncanary = \"canary\"\ncanary_weight = {weight}\n"
            ),
        )
    };
    let proxy = TestProxy::start(&text(weight)).await;
    (proxy, stable, canary, text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_request_fails_while_the_file_is_rewritten_under_load() {
    const CLIENTS: usize = 8;
    const LOAD_FOR: Duration = Duration::from_secs(10);
    const REWRITES: usize = 20;
    let (proxy, _stable, _canary, text) = setup("10.0").await;
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(Mutex::new(Vec::<String>::new()));
    let arms = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let mut clients = Vec::new();
    for id in 0..CLIENTS {
        let (stop, ok, failures, arms) = (stop.clone(), ok.clone(), failures.clone(), arms.clone());
        let url = proxy.url("/live");
        // One client (its own keep-alive connections) per task.
        let c = client();
        clients.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                // Every third request is a POST with a body echoed back.
                let body = Bytes::from(format!("client {id} request {n}"));
                let req = if n % 3 == 0 {
                    Request::post(format!("{url}?c={id}&n={n}")).body(full(body.clone()))
                } else {
                    Request::get(format!("{url}?c={id}&n={n}")).body(support::empty())
                };
                match send(&c, req.unwrap()).await {
                    Ok(a) if a.status == 200 && (n % 3 != 0 || a.body == body) => {
                        let i = usize::from(a.arm() == "canary");
                        arms[i].fetch_add(1, Ordering::Relaxed);
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(a) => failures
                        .lock()
                        .unwrap()
                        .push(format!("{} {:?}", a.status, a.body)),
                    Err(e) => failures.lock().unwrap().push(format!("{e:?}")),
                }
            }
        }));
    }
    // Rewrite the file, alternating weights, each time until the reload is
    // live, for LOAD_FOR and at least REWRITES times.
    let started = Instant::now();
    let mut rewrites = 0;
    while started.elapsed() < LOAD_FOR || rewrites < REWRITES {
        let weight = if rewrites % 2 == 0 { 90.0 } else { 10.0 };
        proxy
            .reload_to(&text(&format!("{weight:.1}")), "live", weight)
            .await;
        rewrites += 1;
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    let failures = failures.lock().unwrap().clone();
    let ok = ok.load(Ordering::Relaxed);
    let reloads = proxy
        .metrics()
        .await
        .value("grayproxy_config_reloads_total", &[("result", "ok")]);
    println!(
        "reload under load: {rewrites} rewrites ({reloads} reloads applied) in {:?}, {ok} requests ok \
         (stable {}, canary {}), {} failed",
        started.elapsed(),
        arms[0].load(Ordering::Relaxed),
        arms[1].load(Ordering::Relaxed),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed requests: {:?}",
        &failures[..failures.len().min(10)]
    );
    assert!(rewrites >= REWRITES);
    assert_eq!(reloads, rewrites as f64, "every rewrite was applied once");
    assert!(ok > 1000, "only {ok} requests in {LOAD_FOR:?}");
    assert!(arms[0].load(Ordering::Relaxed) > 0 && arms[1].load(Ordering::Relaxed) > 0);
    assert_eq!(
        proxy.status().await["config"]["last_error"],
        serde_json::Value::Null
    );
}

/// Every answer of `n` GETs comes from `arm`.
async fn all_on(proxy: &TestProxy, n: usize, arm: &str) {
    let c = client();
    for _ in 0..n {
        let a = get(&c, &proxy.url("/live"), &[]).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.arm(), arm);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_keeps_the_old_split_live_and_is_reported() {
    let (proxy, _stable, _canary, text) = setup("100.0").await;
    let mut applied = proxy.app().reloads.subscribe();
    all_on(&proxy, 20, "canary").await;

    // A value error, then a file cut off mid-write (TOML syntax error).
    let cases = [
        (
            text("150.0"),
            "canary_weight 150 is above 100; use 0.0..=100.0",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:0\"\n[[routes]\nname = ".to_owned(),
            "invalid TOML",
        ),
    ];
    for (i, (bad, message)) in cases.iter().enumerate() {
        proxy.rewrite(bad);
        let admin = proxy.admin;
        let errors = (i + 1) as f64;
        eventually(
            Duration::from_secs(5),
            "reload error counted",
            || async move {
                support::admin_metrics(admin)
                    .await
                    .value("grayproxy_config_reloads_total", &[("result", "error")])
                    == errors
            },
        )
        .await;
        let status = proxy.status().await;
        let last_error = status["config"]["last_error"].as_str().unwrap();
        assert!(last_error.contains(message), "last_error: {last_error}");
        assert!(
            last_error.contains("grayproxy.toml:"),
            "says where: {last_error}"
        );
        assert_eq!(support::route_weight(&status, "live"), 100.0);
        all_on(&proxy, 20, "canary").await;
    }
    assert!(
        applied.try_recv().is_err(),
        "a rejected file is not announced as applied"
    );

    // Fixing the file applies it and clears the error.
    proxy.reload_to(&text("0.0"), "live", 0.0).await;
    all_on(&proxy, 20, "stable").await;
    let status = proxy.status().await;
    assert_eq!(status["config"]["last_error"], serde_json::Value::Null);
    let m = proxy.metrics().await;
    assert_eq!(
        m.value("grayproxy_config_reloads_total", &[("result", "ok")]),
        1.0
    );
    assert_eq!(
        m.value("grayproxy_config_reloads_total", &[("result", "error")]),
        2.0
    );
    assert_eq!(
        m.value("grayproxy_canary_weight_percent", &[("route", "live")]),
        0.0
    );
    let diff = tokio::time::timeout(Duration::from_secs(1), applied.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(diff.can_apply());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listen_change_is_rejected_as_restart_required_and_nothing_is_applied() {
    let (proxy, _stable, _canary, text) = setup("0.0").await;
    // New listen address *and* a new weight: neither may be applied.
    let moved = text("100.0").replacen("listen = \"127.0.0.1:0\"", "listen = \"127.0.0.1:1\"", 1);
    proxy.rewrite(&moved);
    let admin = proxy.admin;
    eventually(Duration::from_secs(5), "reload rejected", || async move {
        !support::admin_json(admin, "/status").await["config"]["last_error"].is_null()
    })
    .await;
    let status = proxy.status().await;
    let last_error = status["config"]["last_error"].as_str().unwrap();
    assert!(last_error.contains("server.listen"), "{last_error}");
    assert!(last_error.contains("restart"), "{last_error}");
    assert_eq!(
        support::route_weight(&status, "live"),
        0.0,
        "the weight was not half-applied"
    );
    let m = proxy.metrics().await;
    assert_eq!(
        m.value("grayproxy_config_reloads_total", &[("result", "error")]),
        1.0
    );
    all_on(&proxy, 10, "stable").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_requests_finish_on_the_config_they_started_with() {
    let old = TestUpstream::spawn("old")
        .await
        .with(support::Fault::Delay(Duration::from_secs(2)));
    let new = TestUpstream::spawn("new").await;
    let canary = TestUpstream::spawn("canary").await;
    let text = |stable: std::net::SocketAddr| {
        config(
            "",
            &[("stable", stable), ("canary", canary.addr)],
            "[[routes]]\nname = \"live\"\nstable = \"stable\"\ncanary = \"canary\"\ncanary_weight = 0.0\n",
        )
    };
    let proxy = TestProxy::start(&text(old.addr)).await;
    let c = client();
    let url = proxy.url("/slow");
    let in_flight = tokio::spawn({
        let c = c.clone();
        async move { get(&c, &url, &[]).await }
    });
    eventually(
        Duration::from_secs(5),
        "request at the old upstream",
        || {
            let n = old.arrived();
            async move { n == 1 }
        },
    )
    .await;
    // Point `stable` somewhere else while the request waits on the old endpoint.
    proxy.rewrite(&text(new.addr));
    let admin = proxy.admin;
    eventually(Duration::from_secs(5), "reload applied", || async move {
        support::admin_metrics(admin)
            .await
            .value("grayproxy_config_reloads_total", &[("result", "ok")])
            == 1.0
    })
    .await;
    let fresh = get(&c, &proxy.url("/fast"), &[]).await;
    assert_eq!(fresh.body, "new", "new requests go to the new endpoint");
    assert!(
        !in_flight.is_finished(),
        "the slow request is still in flight after the swap"
    );
    let a = in_flight.await.unwrap();
    assert_eq!((a.status.as_u16(), &a.body[..]), (200, &b"old"[..]));
    let m = support::admin_metrics(admin).await;
    assert_eq!(m.value("grayproxy_upstream_failures_total", &[]), 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kubernetes_style_symlink_swap_is_picked_up() {
    use std::os::unix::fs::symlink;
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let text = |weight: &str| {
        config(
            "",
            &[("stable", stable.addr), ("canary", canary.addr)],
            &format!("[[routes]]\nname = \"live\"\nstable = \"stable\"\ncanary = \"canary\"\ncanary_weight = {weight}\n"),
        )
    };
    // dir/grayproxy.toml -> ..data/grayproxy.toml, ..data -> ..v1 (what a
    // mounted ConfigMap looks like); an update swaps ..data atomically.
    let dir = support::TempDir::new();
    std::fs::create_dir(dir.join("..v1")).unwrap();
    std::fs::write(dir.join("..v1/grayproxy.toml"), text("0.0")).unwrap();
    symlink("..v1", dir.join("..data")).unwrap();
    symlink("..data/grayproxy.toml", dir.join("grayproxy.toml")).unwrap();
    let app = grayproxy::app::App::start(&dir.join("grayproxy.toml"))
        .await
        .unwrap();
    let admin = app.admin_addr;
    let weight = || async move {
        support::route_weight(&support::admin_json(admin, "/status").await, "live")
    };
    assert_eq!(weight().await, 0.0);

    std::fs::create_dir(dir.join("..v2")).unwrap();
    std::fs::write(dir.join("..v2/grayproxy.toml"), text("100.0")).unwrap();
    symlink("..v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    std::fs::remove_dir_all(dir.join("..v1")).unwrap();
    eventually(
        Duration::from_secs(2),
        "symlink swap applied",
        || async move { weight().await == 100.0 },
    )
    .await;
    let a = get(&client(), &format!("http://{}/x", app.proxy_addr), &[]).await;
    assert_eq!(a.arm(), "canary");
    app.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_and_the_arm_header_come_and_go_with_the_file() {
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let route = |name: &str, prefix: &str| {
        format!(
            "[[routes]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"{prefix}\" }}\n\
             stable = \"stable\"\ncanary = \"canary\"\ncanary_weight = 100.0\n"
        )
    };
    let ups = [("stable", stable.addr), ("canary", canary.addr)];
    let both = config("", &ups, &(route("a", "/a") + &route("b", "/b")));
    let proxy = TestProxy::start(&both).await;
    let c = client();
    assert_eq!(get(&c, &proxy.url("/b"), &[]).await.arm(), "canary");

    // Drop route b and disable the arm header.
    let only_a = config("arm_header = \"\"", &ups, &route("a", "/a"));
    proxy.rewrite(&only_a);
    let admin = proxy.admin;
    eventually(Duration::from_secs(5), "route b removed", || async move {
        support::admin_json(admin, "/status").await["routes"]
            .as_array()
            .unwrap()
            .len()
            == 1
    })
    .await;
    assert_eq!(get(&c, &proxy.url("/b"), &[]).await.status, 404);
    let a = get(&c, &proxy.url("/a"), &[]).await;
    assert_eq!(
        (a.status.as_u16(), a.arm(), &a.body[..]),
        (200, "", &b"canary"[..])
    );
    assert!(!canary.last().headers.contains_key("x-grayproxy-arm"));
    let m = proxy.metrics().await;
    assert_eq!(
        m.value("grayproxy_requests_total", &[("route", "b")]),
        0.0,
        "a removed route's series are gone"
    );
    assert_eq!(
        m.value("grayproxy_canary_weight_percent", &[("route", "a")]),
        100.0
    );

    // Bring both back.
    proxy.rewrite(&both);
    eventually(Duration::from_secs(5), "route b back", || async move {
        support::admin_json(admin, "/status").await["routes"]
            .as_array()
            .unwrap()
            .len()
            == 2
    })
    .await;
    let b = get(&c, &proxy.url("/b"), &[]).await;
    assert_eq!((b.status.as_u16(), b.arm()), (200, "canary"));
    let m = proxy.metrics().await;
    assert_eq!(
        m.value(
            "grayproxy_requests_total",
            &[("route", "b"), ("arm", "canary")]
        ),
        1.0
    );
    assert_eq!(
        m.value("grayproxy_canary_weight_percent", &[("route", "b")]),
        100.0
    );
}
