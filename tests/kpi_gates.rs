//! Business-KPI gates, live: a real Prometheus scrapes a test backend that
//! exports `reco_impressions_total` and `reco_clicks_total` per route and
//! arm; grayproxy's ramp queries it every `interval`. A canary with half
//! the stable's click-through rate is held at its first step and rolled back
//! (the audit record names the check and the values) while a canary with the
//! same CTR is promoted; with Prometheus unreachable the ramp holds, then
//! pauses with the reason — never promotes blind.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use support::tools::{free_port, get_json, Prometheus};
use support::{client, eventually, get, HttpClient, TempDir, TestProxy, TestUpstream, Toml};
use tokio::net::TcpListener;
use tokio::time::Instant;

const CTR: &str = r#"sum(rate(reco_clicks_total{route="{{route}}",arm="{{arm}}"}[30s])) / sum(rate(reco_impressions_total{route="{{route}}",arm="{{arm}}"}[30s]))"#;

/// The shop's recommender exporter: counters growing linearly in time,
/// 100 impressions/s per route and arm; clicks 10/s except the `bad`
/// route's canary (5/s: half the click-through rate).
async fn exporter() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let t0 = Instant::now();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |_req: Request<Incoming>| async move {
                    let t = t0.elapsed().as_secs_f64();
                    let mut text = String::from(
                        "# TYPE reco_impressions_total counter\n# TYPE reco_clicks_total counter\n",
                    );
                    for route in ["bad", "good"] {
                        for arm in ["stable", "canary"] {
                            let clicks = if route == "bad" && arm == "canary" {
                                5.0
                            } else {
                                10.0
                            };
                            text.push_str(&format!(
                                "reco_impressions_total{{route=\"{route}\",arm=\"{arm}\"}} {}\n\
                                 reco_clicks_total{{route=\"{route}\",arm=\"{arm}\"}} {}\n",
                                100.0 * t,
                                clicks * t
                            ));
                        }
                    }
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// A route with a fast ramp and the CTR gate.
fn route(name: &str, prometheus: &str, interval: &str) -> String {
    format!(
        r#"
[[routes]]
name = "{name}"
match = {{ path_prefix = "/{name}" }}
stable = "v1"
canary = "v2"

  [routes.ramp]
  steps = [10, 50, 100]
  interval = "{interval}"
  tick = "100ms"
  baseline = "0s"
  min_requests = 1
  gate_ratios = [0, 0]
  max_step_duration = "1m"
  prometheus_url = "{prometheus}"
  failures_before_rollback = 3

  [[routes.ramp.prometheus_checks]]
  name = "ctr"
  query = '{CTR}'
  min_ratio = 0.95
"#
    )
}

/// grayproxy with `routes` over two healthy upstreams `v1` and `v2` (kept
/// alive with it).
async fn start(dir: TempDir, routes: &str) -> (TestProxy, [TestUpstream; 2]) {
    let v1 = TestUpstream::spawn("v1").await;
    let v2 = TestUpstream::spawn("v2").await;
    let text = Toml::new()
        .upstream("v1", &[v1.addr], "")
        .upstream("v2", &[v2.addr], "")
        .routes(routes)
        .build();
    (TestProxy::start_in(dir, &text).await, [v1, v2])
}

/// Steady traffic on `paths` so the built-in judge has requests on both arms.
fn traffic(c: &HttpClient, proxy: std::net::SocketAddr, paths: &[&'static str]) {
    for &p in paths {
        let c = c.clone();
        tokio::spawn(async move {
            loop {
                let _ = get(&c, &format!("http://{proxy}{p}/x"), &[]).await;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
    }
}

fn ramp_of<'a>(status: &'a Value, route: &str) -> &'a Value {
    let r = status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == route)
        .unwrap_or_else(|| panic!("no route {route} in {status}"));
    &r["ramp"]
}

/// Polls `/status` until `done(ramp)` for `route`; returns that ramp and
/// every ramp seen on the way.
async fn watch(
    admin: std::net::SocketAddr,
    route: &str,
    limit: Duration,
    done: impl Fn(&Value) -> bool,
) -> (Value, Vec<Value>) {
    let seen = std::cell::RefCell::new(Vec::new());
    let c = client();
    let last = eventually(limit, &format!("route {route} done"), || async {
        let status = get_json(&c, &format!("http://{admin}/status")).await;
        let ramp = ramp_of(&status, route).clone();
        seen.borrow_mut().push(ramp.clone());
        if done(&ramp) {
            Ok(ramp)
        } else {
            Err(format!("{ramp:#}"))
        }
    })
    .await;
    (last, seen.into_inner())
}

fn decisions(ramp: &Value) -> Vec<(String, f64, String)> {
    ramp["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["action"].as_str().unwrap().to_string(),
                d["weight"].as_f64().unwrap(),
                d["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lower_ctr_canary_is_held_and_rolled_back_same_ctr_is_promoted() {
    let started = Instant::now();
    let c = client();
    let exp = exporter().await;
    let dir = TempDir::new();
    let prom_yml = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_yml,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n\
             scrape_configs:\n  - job_name: reco\n    static_configs:\n      - targets: [\"{exp}\"]\n"
        ),
    )
    .unwrap();
    let prom = Prometheus::start(dir.path(), &prom_yml, &c).await;
    // Prometheus has two scrapes (a rate) for every arm before the ramp starts.
    let bad_canary = CTR.replace("{{route}}", "bad").replace("{{arm}}", "canary");
    let ctr = eventually(Duration::from_secs(20), "the CTR in Prometheus", || {
        prom.scalar(&c, &bad_canary)
    })
    .await;
    assert!((ctr - 0.05).abs() < 1e-9, "{ctr}");

    let routes = format!(
        "{}{}",
        route("bad", &prom.url, "500ms"),
        route("good", &prom.url, "500ms")
    );
    let (app, _upstreams) = start(TempDir::new(), &routes).await;
    traffic(&c, app.proxy, &["/bad", "/good"]);

    // The bad canary: held at 10 % (the CTR check fails), then rolled back.
    let (bad, seen) = watch(app.admin, "bad", Duration::from_secs(30), |r| {
        r["state"] == "rolled_back"
    })
    .await;
    let held = seen
        .iter()
        .find(|r| {
            let w = r["waiting_for"].as_str().unwrap_or_default();
            w.contains("KPI checks: failing")
        })
        .expect("the ramp showed the failing KPI check while holding");
    assert_eq!(held["weight"], 10.0, "{held:#}");
    assert_eq!(held["kpi"][0]["name"], "ctr", "{held:#}");
    assert_eq!(held["kpi"][0]["outcome"], "fail", "{held:#}");
    assert!((held["kpi"][0]["stable"].as_f64().unwrap() - 0.10).abs() < 1e-9);
    assert!((held["kpi"][0]["canary"].as_f64().unwrap() - 0.05).abs() < 1e-9);
    let d = decisions(&bad);
    assert!(
        d.iter()
            .all(|(a, w, _)| a != "advance" && a != "promote" && *w <= 10.0),
        "never above the first step: {d:#?}"
    );
    let (_, w, reason) = d.last().unwrap();
    assert_eq!(*w, 0.0);
    assert!(
        reason.starts_with("KPI check failed 3 times in a row: `ctr`: canary/stable = 0.050000/0.100000 = 0.500 < min_ratio 0.95"),
        "{reason}"
    );
    // The audit file has it too.
    let log = walk_audit(&app.dir().join("state"));
    assert!(
        log.contains("KPI check failed 3 times in a row"),
        "audit: {log}"
    );

    // The good canary (same CTR) advanced step by step to 100 %.
    let (good, _) = watch(app.admin, "good", Duration::from_secs(30), |r| {
        r["state"] == "promoted"
    })
    .await;
    assert_eq!(good["kpi"][0]["outcome"], "pass", "{good:#}");
    let d = decisions(&good);
    assert!(
        d.iter().any(|(a, w, _)| a == "advance" && *w == 50.0),
        "{d:#?}"
    );
    eprintln!("kpi gates (real Prometheus): {:?}", started.elapsed());
}

/// Every audit record under the state directory, as one string.
fn walk_audit(dir: &std::path::Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.push_str(&walk_audit(&p));
        } else if p.to_string_lossy().contains("audit") {
            out.push_str(&std::fs::read_to_string(&p).unwrap_or_default());
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_unreachable_holds_then_pauses_with_the_reason() {
    let started = Instant::now();
    let c = client();
    // Nothing listens there.
    let url = format!("http://127.0.0.1:{}", free_port());
    let (app, _upstreams) = start(TempDir::new(), &route("bad", &url, "300ms")).await;
    traffic(&c, app.proxy, &["/bad"]);
    let (ramp, seen) = watch(app.admin, "bad", Duration::from_secs(20), |r| {
        r["state"] == "paused"
    })
    .await;
    let holding = seen.iter().any(|r| {
        let w = r["waiting_for"].as_str().unwrap_or_default();
        w.contains("KPI checks: holding, no data")
    });
    assert!(holding, "the ramp showed it was holding before it paused");
    assert_eq!(ramp["weight"], 10.0, "{ramp:#}");
    let w = ramp["waiting_for"].as_str().unwrap();
    assert!(
        w.starts_with("paused: KPI checks without data 4 times in a row (never promoted blind): `ctr`: Prometheus at http://127.0.0.1:"),
        "{w}"
    );
    assert!(w.contains("unreachable"), "{w}");
    assert_eq!(ramp["kpi"][0]["outcome"], "no_data", "{ramp:#}");
    let d = decisions(&ramp);
    assert!(d.iter().all(|(a, _, _)| a != "advance"), "{d:#?}");
    assert_eq!(d.last().unwrap().0, "pause");
    eprintln!("kpi unreachable: {:?}", started.elapsed());
}
