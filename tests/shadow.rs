//! Shadow traffic end to end over real sockets: mirroring that never costs
//! the user anything, the comparison of ranked lists, the noise floor, and
//! the ramp's shadow phase.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use support::{client, config, eventually, full, get, send, Server, TestProxy};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// What a scripted backend answers: status, delay, body.
type Script = dyn Fn(u64) -> (u16, Duration, String) + Send + Sync;

/// A request a [`JsonBackend`] received.
#[derive(Debug, Clone)]
struct Received {
    method: String,
    shadow: bool,
    arm: String,
    authorization: bool,
}

/// A backend answering with a script of its request count.
struct JsonBackend {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    _server: Server,
}

impl JsonBackend {
    async fn spawn(
        script: impl Fn(u64) -> (u16, Duration, String) + Send + Sync + 'static,
    ) -> JsonBackend {
        let received = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let n = Arc::new(AtomicUsize::new(0));
        let seen = received.clone();
        let server = Server::spawn(move |req: Request<Incoming>| {
            let (script, n, seen) = (script.clone(), n.clone(), seen.clone());
            async move {
                let h = req.headers();
                seen.lock().unwrap().push(Received {
                    method: req.method().to_string(),
                    shadow: h.get("x-grayproxy-shadow").is_some_and(|v| v == "1"),
                    arm: h
                        .get("x-grayproxy-arm")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string(),
                    authorization: h.contains_key("authorization"),
                });
                let i = n.fetch_add(1, Ordering::SeqCst) as u64;
                let (status, delay, body) = script(i);
                tokio::time::sleep(delay).await;
                let mut r = Response::new(Full::new(Bytes::from(body)));
                *r.status_mut() = StatusCode::from_u16(status).unwrap();
                r.headers_mut()
                    .insert("content-type", "application/json".parse().unwrap());
                r
            }
        })
        .await;
        JsonBackend {
            addr: server.addr,
            received,
            _server: server,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

/// A reco answer: a version, a per-answer random nonce and a ranked list.
fn reco(version: &str, items: &[&str]) -> String {
    let items: Vec<_> = items
        .iter()
        .map(|id| serde_json::json!({"id": id}))
        .collect();
    serde_json::json!({"version": version, "nonce": rand::random::<u64>(), "items": items})
        .to_string()
}

fn route(name: &str, prefix: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"{prefix}\" }}\n\
         stable = \"stable\"\ncanary = \"canary\"\nfallback = false\n{extra}\n"
    )
}

fn shadow_of<'a>(status: &'a serde_json::Value, route: &str) -> &'a serde_json::Value {
    let routes = status["routes"].as_array().unwrap();
    let r = routes.iter().find(|r| r["name"] == route).unwrap();
    &r["shadow"]
}

async fn wait_compared(proxy: &TestProxy, route: &str, n: u64) -> serde_json::Value {
    let admin = proxy.admin;
    let route2 = route.to_string();
    eventually(
        Duration::from_secs(10),
        &format!("{n} pairs compared on {route}"),
        || {
            let route = route2.clone();
            async move {
                let s = support::admin_json(admin, "/status").await;
                shadow_of(&s, &route)["compared"].as_u64().unwrap_or(0) >= n
            }
        },
    )
    .await;
    proxy.status().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_get_stable_while_the_canary_gets_mirrored_requests_and_noise_is_recognised() {
    let stable = JsonBackend::spawn(|_| (200, Duration::ZERO, reco("v1", &["a", "b", "c"]))).await;
    let canary = JsonBackend::spawn(|_| (200, Duration::ZERO, reco("v2", &["a", "c", "b"]))).await;
    let text = config(
        "",
        &[("stable", stable.addr), ("canary", canary.addr)],
        &route(
            "reco",
            "/",
            "[routes.shadow]\nitems = \"items\"\nitem_id = \"id\"\nk = 3\nnoise_percent = 50\n\
             methods = [\"GET\"]\nstrip_credentials = true",
        ),
    );
    let proxy = TestProxy::start(&text).await;
    let c = client();
    const N: u64 = 120;
    for _ in 0..N {
        let a = get(&c, &proxy.url("/reco"), &[("authorization", "Bearer x")]).await;
        assert_eq!(a.status, 200);
        assert_eq!(a.arm(), "stable");
        assert_eq!(a.json()["version"], "v1", "the user gets stable's answer");
    }
    // Unsafe methods are not mirrored.
    for _ in 0..10 {
        let req = Request::post(proxy.url("/reco")).body(full("{}")).unwrap();
        assert_eq!(send(&c, req).await.unwrap().status, 200);
    }
    let status = wait_compared(&proxy, "reco", N).await;
    let to_canary = canary.received();
    assert_eq!(to_canary.len() as u64, N, "every GET mirrored, no POST");
    assert!(to_canary
        .iter()
        .all(|r| r.method == "GET" && r.shadow && r.arm == "canary"));
    assert!(
        to_canary.iter().all(|r| !r.authorization),
        "credentials stripped"
    );
    let to_stable = stable.received();
    let noise = to_stable.iter().filter(|r| r.shadow).count();
    assert!(
        noise > 20 && noise < 100,
        "about half sent to stable again: {noise}"
    );
    assert!(to_stable
        .iter()
        .filter(|r| r.shadow)
        .all(|r| r.arm == "stable"));

    let s = shadow_of(&status, "reco");
    assert_eq!(s["mirrored"], N);
    assert_eq!(s["compared"], N);
    assert_eq!(s["canary_errors"], 0);
    // Hand-computed: [a b c] vs [a c b] at k = 3, p = 0.9 →
    // (1/9)·(0.9 + ½·0.81 + 0.729) + 0.729 = 0.955; overlap@3 = 3/3.
    for key in ["mean", "p10", "p50"] {
        let rbo = s["rbo"][key].as_f64().unwrap();
        assert!((rbo - 0.955).abs() < 1e-9, "rbo {key} {rbo}");
    }
    assert_eq!(s["overlap_at_k"]["mean"], 1.0);
    let fields = s["fields"].as_array().unwrap();
    let field = |p: &str| {
        fields
            .iter()
            .find(|f| f["path"] == p)
            .unwrap_or_else(|| panic!("{p}: {s:#}"))
    };
    let version = field("version");
    assert_eq!(version["flagged"], true, "{version}");
    assert_eq!(version["diff_rate"], 1.0);
    assert_eq!(
        version["example"],
        serde_json::json!({"stable": "v1", "canary": "v2"})
    );
    let nonce = field("nonce");
    assert_eq!(
        nonce["flagged"], false,
        "a per-answer random field is noise: {nonce}"
    );
    assert_eq!(nonce["noise_rate"], 1.0);
    assert_eq!(field("items.1.id")["flagged"], true);

    let m = proxy.metrics().await;
    assert_eq!(
        m.value(
            "grayproxy_requests_total",
            &[("route", "reco"), ("arm", "canary")]
        ),
        0.0
    );
    assert_eq!(
        m.value(
            "grayproxy_requests_total",
            &[("route", "reco"), ("arm", "stable")]
        ),
        (N + 10) as f64,
        "mirrored and noise copies are not counted as requests"
    );
    assert_eq!(
        m.value(
            "grayproxy_shadow_requests_total",
            &[("route", "reco"), ("result", "compared")]
        ),
        N as f64
    );
    assert_eq!(
        m.value("grayproxy_shadow_rbo_count", &[("route", "reco")]),
        N as f64
    );
    let arms = &status["routes"][0]["arms"];
    assert_eq!(arms["canary"]["requests"], 0);
}

/// The user-facing latency of `n` GETs to `url`, sorted.
async fn latencies(c: &support::HttpClient, url: &str, n: usize) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let a = get(c, url, &[]).await;
        assert_eq!(a.status, 200, "{a:?}");
        out.push(t.elapsed());
    }
    out.sort();
    out
}

fn p99(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 99).div_ceil(100) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_or_dead_canary_costs_users_nothing() {
    let stable = JsonBackend::spawn(|_| (200, Duration::ZERO, reco("v1", &["a"]))).await;
    let slow = JsonBackend::spawn(|_| (200, Duration::from_millis(800), reco("v1", &["a"]))).await;
    let dead = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let routes = format!(
        "{}{}{}",
        route("on", "/on", "[routes.shadow]\ntimeout = \"300ms\"\nmax_in_flight = 4\nnoise_percent = 0"),
        "[[routes]]\nname = \"down\"\nmatch = { path_prefix = \"/down\" }\nstable = \"stable\"\ncanary = \"dead\"\nfallback = false\n[routes.shadow]\ntimeout = \"300ms\"\n",
        route("off", "/off", ""),
    );
    let text = config(
        "",
        &[
            ("stable", stable.addr),
            ("canary", slow.addr),
            ("dead", dead_addr),
        ],
        &routes,
    );
    let proxy = TestProxy::start(&text).await;
    let c = client();
    // Warm the connection pools, then interleave rounds so both routes see the same machine load.
    latencies(&c, &proxy.url("/on"), 20).await;
    latencies(&c, &proxy.url("/off"), 20).await;
    // One request to each route in turn, so that a burst of load on the
    // machine falls on all three alike.
    let (mut on, mut off, mut down) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..300 {
        on.extend(latencies(&c, &proxy.url("/on"), 1).await);
        off.extend(latencies(&c, &proxy.url("/off"), 1).await);
        down.extend(latencies(&c, &proxy.url("/down"), 1).await);
    }
    for v in [&mut on, &mut off, &mut down] {
        v.sort();
    }
    let (p_on, p_off, p_down) = (p99(&on), p99(&off), p99(&down));
    println!(
        "user p99: shadow off {p_off:?}, canary sleeping 800 ms {p_on:?}, canary down {p_down:?}"
    );
    // Users never wait for the canary's 800 ms.
    assert!(
        on.iter().all(|d| *d < Duration::from_millis(400)),
        "max {:?}",
        on.last()
    );
    let bound = (p_off * 3 / 2).max(p_off + Duration::from_millis(20));
    assert!(
        p_on <= bound && p_down <= bound,
        "p99 on {p_on:?} down {p_down:?} vs off {p_off:?}"
    );

    let status = proxy.status().await;
    let s = shadow_of(&status, "on");
    // Sequential users with a 300 ms canary timeout: at most 4 in flight, the rest skipped.
    assert!(s["skipped"].as_u64().unwrap() > 100, "{s:#}");
    let m = proxy.metrics().await;
    eventually(Duration::from_secs(5), "timeouts counted", || async {
        let m = proxy.metrics().await;
        m.value(
            "grayproxy_shadow_requests_total",
            &[("route", "on"), ("result", "canary_timeout")],
        ) >= 4.0
    })
    .await;
    assert!(
        m.value(
            "grayproxy_shadow_requests_total",
            &[("route", "on"), ("result", "skipped")]
        ) > 100.0
    );
    let status = wait_compared(&proxy, "down", 300).await;
    let d = shadow_of(&status, "down");
    assert_eq!(d["canary_errors"], d["compared"], "{d:#}");
    let m = proxy.metrics().await;
    assert!(
        m.value(
            "grayproxy_shadow_requests_total",
            &[("route", "down"), ("result", "canary_error")]
        ) >= 300.0
    );
    for r in ["on", "down", "off"] {
        assert_eq!(
            m.value(
                "grayproxy_requests_total",
                &[("route", r), ("arm", "canary")]
            ),
            0.0
        );
        assert_eq!(
            m.value("grayproxy_requests_total", &[("route", r), ("code", "5xx")]),
            0.0
        );
    }
    assert!(slow.received().iter().all(|r| r.shadow));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn canary_assigned_requests_are_not_mirrored() {
    let stable = JsonBackend::spawn(|_| (200, Duration::ZERO, reco("v1", &[]))).await;
    let canary = JsonBackend::spawn(|_| (200, Duration::ZERO, reco("v2", &[]))).await;
    let text = config(
        "",
        &[("stable", stable.addr), ("canary", canary.addr)],
        &route(
            "r",
            "/",
            "[[routes.rules]]\nwhen = { header = \"x-beta\", equals = \"1\" }\nto = \"canary\"\n[routes.shadow]\n",
        ),
    );
    let proxy = TestProxy::start(&text).await;
    let c = client();
    for _ in 0..20 {
        let a = get(&c, &proxy.url("/"), &[("x-beta", "1")]).await;
        assert_eq!(a.json()["version"], "v2");
    }
    for _ in 0..5 {
        get(&c, &proxy.url("/"), &[]).await;
    }
    wait_compared(&proxy, "r", 5).await;
    let to_canary = canary.received();
    assert_eq!(to_canary.iter().filter(|r| r.shadow).count(), 5);
    assert_eq!(to_canary.iter().filter(|r| !r.shadow).count(), 20);
    assert_eq!(shadow_of(&proxy.status().await, "r")["mirrored"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_half_failing_canary_is_rolled_back_in_the_shadow_phase_having_served_no_user() {
    let stable = JsonBackend::spawn(|_| (200, Duration::ZERO, reco("v1", &["a", "b"]))).await;
    let canary = JsonBackend::spawn(|i| {
        let status = if i % 2 == 0 { 500 } else { 200 };
        (status, Duration::ZERO, reco("v2", &["a", "b"]))
    })
    .await;
    // The kit's config keeps the ramp's state in `state/` beside the file.
    let text = config(
        "",
        &[("stable", stable.addr), ("canary", canary.addr)],
        &route(
            "reco",
            "/",
            "[routes.ramp]\nsteps = [10, 100]\ntick = \"100ms\"\nbaseline = \"1s\"\nshadow = \"2s\"\nmin_requests = 50",
        ),
    );
    let proxy = TestProxy::start(&text).await;
    let c = client();
    let url = proxy.url("/reco");
    let users = tokio::spawn({
        let c = c.clone();
        async move {
            let mut served = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let a = get(&c, &url, &[]).await;
                served.push((a.status.as_u16(), a.arm().to_string()));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            served
        }
    });
    let admin = proxy.admin;
    let seen_shadowing = Arc::new(std::sync::atomic::AtomicBool::new(false));
    eventually(
        Duration::from_secs(15),
        "rolled back in the shadow phase",
        || {
            let seen = seen_shadowing.clone();
            async move {
                let s = support::admin_json(admin, "/status").await;
                let state = s["routes"][0]["ramp"]["state"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                if state == "shadowing" {
                    seen.store(true, Ordering::SeqCst);
                }
                state == "rolled_back"
            }
        },
    )
    .await;
    assert!(
        seen_shadowing.load(Ordering::SeqCst),
        "the ramp went through the shadow phase"
    );
    let status = proxy.status().await;
    let decisions: Vec<_> = status["routes"][0]["ramp"]["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        decisions,
        ["baseline_started", "shadow_started", "rollback"]
    );
    let reason = status["routes"][0]["ramp"]["decisions"][2]["reason"]
        .as_str()
        .unwrap();
    assert!(reason.contains("no user served"), "{reason}");
    let m = proxy.metrics().await;
    assert_eq!(
        m.value(
            "grayproxy_requests_total",
            &[("route", "reco"), ("arm", "canary")]
        ),
        0.0,
        "the canary served no user"
    );
    assert_eq!(status["routes"][0]["arms"]["canary"]["requests"], 0);
    assert!(
        canary.received().iter().all(|r| r.shadow),
        "the canary got mirrored requests only"
    );
    let s = shadow_of(&status, "reco");
    assert!(s["canary_errors"].as_u64().unwrap() > 0, "{s:#}");
    let pairs = s["compared"].as_u64().unwrap();
    println!("50 %-error canary rolled back in the shadow phase after about {pairs} pairs, 0 users served");
    users.abort();
    // After the rollback the phase is over: without [routes.shadow] nothing is mirrored.
    let before = canary.received().len();
    for _ in 0..20 {
        assert_eq!(
            get(&c, &proxy.url("/reco"), &[]).await.json()["version"],
            "v1"
        );
    }
    assert_eq!(canary.received().len(), before);
}
