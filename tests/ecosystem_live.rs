//! grayproxy in its ecosystem, live: a real Prometheus (loading the recording
//! and alerting rules from deploy/prometheus) scrapes a running grayproxy
//! while real upstreams answer real traffic; the recording rules and every
//! Grafana panel's PromQL must return series that agree with `/status` and
//! with what the upstreams served (the ConfigMap hot reload is in
//! `tests/configmap_reload.rs`). Tools come from
//! `scripts/ecosystem-tools.sh`; a missing one fails, never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use support::tools::{get_json, label, sample_value, Prometheus};
use support::{client, eventually, get, repo, Fault, HttpClient, TempDir, TestProxy, TestUpstream};
use tokio::time::Instant;

/// `grayproxy_request_duration_seconds` buckets (src/metrics.rs).
const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The histogram bucket `(lower, upper]` that holds `x`.
fn bucket(x: f64) -> (f64, f64) {
    let mut lower = 0.0;
    for &upper in BUCKETS {
        if x <= upper {
            return (lower, upper);
        }
        lower = upper;
    }
    (lower, f64::INFINITY)
}

fn route_config(
    stable: std::net::SocketAddr,
    canary: std::net::SocketAddr,
    weight: &str,
) -> String {
    format!(
        r#"[server]
listen = "127.0.0.1:0"
request_timeout = "5s"
shutdown_grace = "2s"

[admin]
listen = "127.0.0.1:0"

[state]
dir = "state"

[upstreams.reco-v1]
endpoints = ["{stable}"]
[upstreams.reco-v2]
endpoints = ["{canary}"]

[[routes]]
name = "recommend"
match = {{ path_prefix = "/api/recommend" }}
stable = "reco-v1"
canary = "reco-v2"
canary_weight = {weight}
fallback = true
fallback_budget = 1.0

  [[routes.rules]]
  when = {{ header = "x-canary", equals = "always" }}
  to = "canary"

# No traffic; its ramp sits in `baseline` for the whole test, so the ramp
# panels see a state other than idle.
[[routes]]
name = "ramped"
match = {{ path_prefix = "/api/ramped" }}
stable = "reco-v1"
canary = "reco-v2"

  [routes.ramp]
  steps = [5, 100]
  baseline = "1h"
"#
    )
}

/// What the client saw.
#[derive(Default)]
struct Sent {
    requests: AtomicU64,
    fallbacks: AtomicU64,
}

/// `n` GETs through the proxy, `concurrency` at a time; every 15th carries
/// `x-canary: always` (rule-forced to the canary).
async fn traffic(
    c: &HttpClient,
    proxy: std::net::SocketAddr,
    n: u64,
    concurrency: u64,
) -> Arc<Sent> {
    let sent = Arc::new(Sent::default());
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (c, sent, next) = (c.clone(), sent.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= n {
                    return;
                }
                let url = format!("http://{proxy}/api/recommend/items?i={i}");
                let forced: &[(&str, &str)] = if i % 15 == 0 {
                    &[("x-canary", "always")]
                } else {
                    &[]
                };
                let a = get(&c, &url, forced).await;
                assert!(
                    a.status == 200 || a.status == 500,
                    "unexpected {}",
                    a.status
                );
                sent.requests.fetch_add(1, Ordering::SeqCst);
                if a.headers.contains_key("x-grayproxy-fallback") {
                    sent.fallbacks.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    sent
}

/// Every PromQL expression of the dashboard, with Grafana's variables
/// replaced by what they resolve to here: (panel title, expr).
fn dashboard_queries() -> Vec<(String, String)> {
    let path = repo().join("deploy/grafana/grayproxy.json");
    let dash: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap();
            let resolved = expr
                .replace("$__rate_interval", "1m")
                .replace("$job", "grayproxy")
                .replace("$route", ".*");
            assert!(
                !resolved.contains('$'),
                "panel {:?} uses a variable this test does not resolve: {expr}",
                panel["title"]
            );
            out.push((panel["title"].as_str().unwrap().to_owned(), resolved));
        }
    }
    assert!(out.len() >= 10, "{out:?}");
    out
}

fn by_arm(result: &[Value]) -> (f64, f64) {
    let pick = |arm: &str| {
        result
            .iter()
            .find(|s| label(s, "arm") == arm)
            .map(sample_value)
            .unwrap_or_else(|| panic!("no {arm} series in {result:?}"))
    };
    (pick("stable"), pick("canary"))
}

fn close(a: f64, b: f64, tol: f64) -> Result<(), String> {
    if (a - b).abs() <= tol {
        Ok(())
    } else {
        Err(format!("{a} vs {b} (tolerance {tol})"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_grayproxy_and_rules_and_dashboard_agree_with_status() {
    let started = Instant::now();
    let c = client();
    // Stable: 15 ms, every 20th answer a 500. Canary: 60 ms, every 4th a 500
    // (each GET failure falls back to stable).
    let stable = TestUpstream::spawn("stable")
        .await
        .with(Fault::Delay(Duration::from_millis(15)))
        .with(Fault::StatusShare(500, 1.0 / 20.0));
    let canary = TestUpstream::spawn("canary")
        .await
        .with(Fault::Delay(Duration::from_millis(60)))
        .with(Fault::StatusShare(500, 1.0 / 4.0));
    let dir = TempDir::new();
    let app = TestProxy::start(&route_config(stable.addr, canary.addr, "30.0")).await;
    let config = app.path.clone();
    let admin = app.admin;

    let rules = repo().join("deploy/prometheus/rules");
    let prom_yml = dir.path().join("prometheus.yml");
    std::fs::write(
        &prom_yml,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n\
             rule_files:\n  - {}\n  - {}\n\
             scrape_configs:\n  - job_name: grayproxy\n    static_configs:\n      - targets: [\"{admin}\"]\n",
            rules.join("grayproxy-recording.yml").display(),
            rules.join("grayproxy-alerts.yml").display(),
        ),
    )
    .unwrap();
    let prom = Prometheus::start(dir.path(), &prom_yml, &c).await;
    let p = &prom;
    let cl = &c;

    // Prometheus has the idle proxy's zeroes before any traffic, so rates
    // start from 0.
    eventually(Duration::from_secs(20), "first scrape", || async {
        match p
            .scalar(cl, r#"sum(grayproxy_requests_total{job="grayproxy"})"#)
            .await
        {
            Some(0.0) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let sent = traffic(&c, app.proxy, 600, 8).await;
    let requests = sent.requests.load(Ordering::SeqCst);
    let fallbacks = sent.fallbacks.load(Ordering::SeqCst);
    assert_eq!(requests, 600);
    assert!(
        fallbacks > 0,
        "the canary fails every 4th request: some must fall back"
    );
    let stable_n = stable.arrived() as u64;
    let canary_n = canary.arrived() as u64;
    assert_eq!(stable_n + canary_n, requests + fallbacks);

    // Quiescence: Prometheus has scraped the final counts.
    let answers = requests + fallbacks;
    eventually(Duration::from_secs(20), "final scrape", || async {
        let total = p
            .scalar(cl, r#"sum(grayproxy_requests_total{job="grayproxy"})"#)
            .await;
        let fb = p
            .scalar(cl, r#"sum(grayproxy_fallbacks_total{job="grayproxy"})"#)
            .await;
        if total == Some(answers as f64) && fb == Some(fallbacks as f64) {
            Ok(())
        } else {
            Err(format!(
                "requests {total:?} of {answers}, fallbacks {fb:?} of {fallbacks}"
            ))
        }
    })
    .await;
    let status = get_json(&c, &format!("http://{admin}/status")).await;
    let route = &status["routes"][0];
    let n = |v: &Value| v.as_u64().unwrap();

    // Counters, exactly: against /status, the upstreams and the client.
    let counted = p
        .query(
            &c,
            r#"sum by (arm) (grayproxy_requests_total{job="grayproxy",route="recommend"})"#,
        )
        .await;
    let (prom_stable, prom_canary) = by_arm(&counted);
    assert_eq!(
        prom_canary as u64, canary_n,
        "canary answers = what the canary served"
    );
    assert_eq!(
        prom_stable as u64, stable_n,
        "stable answers = what stable served"
    );
    assert_eq!(
        prom_canary as u64,
        n(&route["arms"]["canary"]["requests"]) + n(&route["forced"]["canary"]["requests"]),
        "{route}"
    );
    assert_eq!(
        prom_stable as u64,
        n(&route["arms"]["stable"]["requests"])
            + n(&route["forced"]["stable"]["requests"])
            + fallbacks,
        "stable answers = weight-assigned + forced + fallbacks: {route}"
    );
    let errors = p
        .query(&c, r#"sum by (arm) (grayproxy_requests_total{job="grayproxy",route="recommend",code="5xx"})"#)
        .await;
    let (stable_5xx, canary_5xx) = by_arm(&errors);
    assert_eq!(canary_5xx as u64, canary_n / 4);
    assert_eq!(stable_5xx as u64, stable_n / 20);
    assert!(n(&route["arms"]["canary"]["errors"]) <= canary_5xx as u64);

    // Recording rules: all loaded and healthy, each returns series.
    let rules_doc = get_json(&c, &format!("{}/api/v1/rules", prom.url)).await;
    let mut recorded = Vec::new();
    for group in rules_doc["data"]["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "{rule}");
            if rule["type"] == "recording" {
                recorded.push(rule["name"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(recorded.len(), 9, "{recorded:?}");
    for name in &recorded {
        let name = name.clone();
        eventually(
            Duration::from_secs(10),
            &format!("recording rule {name}"),
            || {
                let name = name.clone();
                async move {
                    let r = p.query(cl, &format!("{name}{{route=\"recommend\"}}")).await;
                    if r.is_empty() {
                        Err(String::from("no series"))
                    } else {
                        Ok(())
                    }
                }
            },
        )
        .await;
    }

    // Value agreement. The rate window holds every sample since the first
    // scrape, and all series share scrape timestamps, so ratios of rates are
    // ratios of counts.
    let exact_stable_ratio = stable_5xx / prom_stable;
    let exact_canary_ratio = canary_5xx / prom_canary;
    let status_err = |arm: &str| route["arms"][arm]["error_rate"].as_f64().unwrap();
    let status_p99 = |arm: &str| route["arms"][arm]["p99_seconds"].as_f64().unwrap();
    eventually(Duration::from_secs(15), "recording rules agree", || async {
        let ratio = p
            .query(
                cl,
                r#"route_arm:grayproxy_error_ratio:rate1m{route="recommend"}"#,
            )
            .await;
        let (s, cn) = by_arm(&ratio);
        close(s, exact_stable_ratio, 1e-3)?;
        close(cn, exact_canary_ratio, 1e-3)?;
        close(s, status_err("stable"), 0.03)?;
        close(cn, status_err("canary"), 0.05)?;
        let rate = p
            .query(
                cl,
                r#"route_arm:grayproxy_requests:rate1m{route="recommend"}"#,
            )
            .await;
        let (s, cn) = by_arm(&rate);
        close(cn / s, prom_canary / prom_stable, 1e-3)?;
        let total = (s + cn) * 60.0;
        if !(answers as f64 * 0.95..=answers as f64 * 1.3).contains(&total) {
            return Err(format!("rate1m × 60 = {total}, answers {answers}"));
        }
        let p99 = p
            .query(
                cl,
                r#"route_arm:grayproxy_request_duration_seconds:p99_1m{route="recommend"}"#,
            )
            .await;
        let (s, cn) = by_arm(&p99);
        for (arm, prom_p99) in [("stable", s), ("canary", cn)] {
            let judge = status_p99(arm);
            let (lo, _) = bucket(judge * 0.8);
            let (_, hi) = bucket(judge * 1.25);
            if !(lo..=hi).contains(&prom_p99) {
                return Err(format!("{arm} p99: prometheus {prom_p99}, /status {judge}"));
            }
        }
        Ok(())
    })
    .await;

    // Every dashboard panel's PromQL returns series, and the values agree.
    // Per route: (canary weight, ramp state code as the panel encodes it).
    let states = grayproxy::metrics::RAMP_STATES;
    let per_route: std::collections::HashMap<String, (f64, f64)> = status["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let state = r["ramp"]["state"].as_str().unwrap();
            let code = states.iter().position(|s| *s == state).unwrap() as f64;
            (
                r["name"].as_str().unwrap().to_owned(),
                (r["canary_weight"].as_f64().unwrap(), code),
            )
        })
        .collect();
    assert_eq!(
        per_route["ramped"].1, 1.0,
        "the ramped route is in baseline: {status}"
    );
    let per_route = &per_route;
    let queries = dashboard_queries();
    let queries = &queries;
    eventually(
        Duration::from_secs(15),
        "dashboard panels agree",
        || async {
            for (title, expr) in queries {
                let all = p.query(cl, expr).await;
                if all.is_empty() {
                    return Err(format!("panel {title:?} has no series: {expr}"));
                }
                // The route with traffic (and the route-less panels).
                let r: Vec<Value> = all
                    .iter()
                    .filter(|s| matches!(label(s, "route"), "recommend" | ""))
                    .cloned()
                    .collect();
                let one = || sample_value(&r[0]);
                // Each route's series against its /status entry.
                let each_route = |pick: fn(&(f64, f64)) -> f64| -> Result<(), String> {
                    for s in &all {
                        let want = per_route
                            .get(label(s, "route"))
                            .ok_or_else(|| format!("{title}: unknown route in {s}"))?;
                        close(sample_value(s), pick(want), 1e-9)?;
                    }
                    if all.len() == per_route.len() {
                        Ok(())
                    } else {
                        Err(format!(
                            "{title}: {} series for {} routes",
                            all.len(),
                            per_route.len()
                        ))
                    }
                };
                match title.as_str() {
                    "Requests/s by arm" => {
                        let (s, cn) = by_arm(&r);
                        close(cn / s, prom_canary / prom_stable, 1e-3)?;
                    }
                    "Error ratio by arm" => {
                        let (s, cn) = by_arm(&r);
                        close(s, exact_stable_ratio, 1e-3)?;
                        close(cn, exact_canary_ratio, 1e-3)?;
                    }
                    "p99 latency by arm" => {
                        let (s, cn) = by_arm(&r);
                        if !(s < cn && bucket(s).1 <= 0.05 && bucket(cn).0 >= 0.05) {
                            return Err(format!("p99 stable {s}, canary {cn}"));
                        }
                    }
                    "Canary weight" => each_route(|w| w.0)?,
                    "Ramp state" => each_route(|w| w.1)?,
                    "Fallbacks/s" => {
                        let total = p
                            .scalar(
                                cl,
                                r#"sum(rate(grayproxy_requests_total{job="grayproxy"}[1m]))"#,
                            )
                            .await
                            .unwrap_or(0.0);
                        close(one() / total, fallbacks as f64 / answers as f64, 1e-3)?;
                    }
                    "Upstream failures/s" => {
                        let sum: f64 = r.iter().map(sample_value).sum();
                        close(sum, 0.0, 0.0)?;
                    }
                    "Config reloads" => {
                        if r.len() != 2 {
                            return Err(format!("reload results {r:?}"));
                        }
                    }
                    "Last reload OK" => close(one(), 1.0, 0.0)?,
                    "Replicas up" => close(one(), 1.0, 0.0)?,
                    other => return Err(format!("no value check for panel {other:?}; add one")),
                }
            }
            Ok(())
        },
    )
    .await;

    // Alerts on live data: the canary errs far more than stable, so the
    // canary alert is pending (it fires after `for: 5m`); nothing else is.
    eventually(Duration::from_secs(15), "canary alert pending", || async {
        let alerts = get_json(cl, &format!("{}/api/v1/alerts", p.url)).await;
        let list = alerts["data"]["alerts"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let names: Vec<String> = list
            .iter()
            .map(|a| {
                format!(
                    "{}:{}",
                    a["labels"]["alertname"].as_str().unwrap_or(""),
                    a["state"].as_str().unwrap_or("")
                )
            })
            .collect();
        if names == ["GrayproxyCanaryErrorRatioAboveStable:pending"] {
            Ok(())
        } else {
            Err(format!("{names:?}"))
        }
    })
    .await;

    // A rejected config shows on the dashboard and in the reload alert.
    std::fs::write(&config, "[server\nlisten = nope\n").unwrap();
    eventually(Duration::from_secs(15), "reload failure visible", || async {
        let ok = p
            .scalar(cl, r#"min by (instance) (grayproxy_config_last_reload_successful{job=~"grayproxy"})"#)
            .await;
        let err = p
            .scalar(cl, r#"sum(grayproxy_config_reloads_total{job="grayproxy",result="error"})"#)
            .await;
        let alerts = get_json(cl, &format!("{}/api/v1/alerts", p.url)).await;
        let pending = alerts["data"]["alerts"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["labels"]["alertname"] == "GrayproxyConfigReloadFailing");
        if ok == Some(0.0) && err.is_some_and(|e| e >= 1.0) && pending {
            Ok(())
        } else {
            Err(format!("last ok {ok:?}, errors {err:?}, alert {pending}"))
        }
    })
    .await;
    let status = get_json(&c, &format!("http://{admin}/status")).await;
    assert!(status["config"]["last_error"].is_string(), "{status}");

    app.stop().await;
    eprintln!("prometheus live test took {:?}", started.elapsed());
}
