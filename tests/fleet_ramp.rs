//! Fleet mode end to end with three in-process replicas (real `App`s, real
//! sockets) against a real etcd (one for the file; each test its own
//! prefix): a healthy ramp promoted with every replica agreeing, a
//! 40 %-error canary rolled back on the fleet's summed counts, an operator
//! pause sent to a follower seen by every replica within 1 s, and a
//! 20 %-error canary rolled back in the shadow phase on the fleet's summed
//! mirrored pairs, having served no user.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use grayproxy::app::App;
use serde_json::Value;
use support::eventually;
use support::fleet::{etcd, percentiles};
use support::http::{admin_json, client};
use support::ramp::*;
use support::upstream::TestUpstream;

async fn status(admin: SocketAddr) -> Value {
    admin_json(admin, "/status").await
}

/// Three replicas of one config (each its own state dir), in one fleet.
async fn fleet(
    name: &str,
    stable: &TestUpstream,
    canary: &TestUpstream,
    ramp: &str,
) -> (Vec<Setup>, Vec<App>) {
    let mut setups = Vec::new();
    let mut apps = Vec::new();
    for i in 1..=3 {
        let s = Setup::new(stable.addr, canary.addr, ramp);
        let mut text = std::fs::read_to_string(&s.config).unwrap();
        text.push_str(&etcd().fleet_toml(&format!("/t/{name}"), &format!("gp-{i}"), 2));
        std::fs::write(&s.config, text).unwrap();
        apps.push(App::start(&s.config).await.unwrap());
        setups.push(s);
    }
    (setups, apps)
}

fn weights(apps: &[App]) -> Vec<f64> {
    apps.iter()
        .map(|a| a.runtime.snapshot().routes[0].weight().percent())
        .collect()
}

async fn leader(apps: &[App]) -> usize {
    eventually(
        Duration::from_secs(6),
        "one leader all agree on",
        || async {
            let mut leaders = Vec::new();
            let mut named = Vec::new();
            for (i, a) in apps.iter().enumerate() {
                let f = status(a.admin_addr).await["fleet"].clone();
                if f["role"] == "leader" {
                    leaders.push(i);
                }
                named.push(f["leader"].clone());
            }
            (leaders.len() == 1 && named.iter().all(|n| *n == named[0])).then(|| leaders[0])
        },
    )
    .await
}

/// Open-loop traffic at `rps` on each replica.
fn traffic(apps: &[App], rps: f64) -> Vec<Traffic> {
    apps.iter()
        .map(|a| Traffic::start(a.proxy_addr, rps))
        .collect()
}

/// The last decision in `decisions` with this `action`.
fn last_decision(decisions: &[Value], action: &str) -> Value {
    decisions
        .iter()
        .rev()
        .find(|d| d["action"] == action)
        .cloned()
        .unwrap_or_else(|| panic!("no {action} among {decisions:#?}"))
}

/// Every replica serves the canary 0 %; then each is shut down.
fn assert_at_0_and_shut_down(apps: &[App]) {
    for a in apps {
        assert_eq!(a.runtime.snapshot().routes[0].weight().percent(), 0.0);
        a.shutdown();
    }
}

/// Samples every replica's weight every 5 ms until all are `state`; returns
/// how long each disagreement (a decision reaching the replicas) lasted, ms.
async fn watch_spread(apps: &[App], state: &str, limit: Duration) -> Vec<f64> {
    let start = tokio::time::Instant::now();
    let mut spans = Vec::new();
    let mut since: Option<tokio::time::Instant> = None;
    let mut last_check = start;
    let mut last_agreed = weights(apps)[0];
    loop {
        let w = weights(apps);
        let agree = w.iter().all(|x| *x == w[0]);
        if agree && since.is_none() && w[0] != last_agreed {
            // All replicas moved between two samples (< 5 ms apart).
            spans.push(0.0);
        }
        if agree {
            last_agreed = w[0];
        }
        match (agree, since) {
            (false, None) => since = Some(tokio::time::Instant::now()),
            (true, Some(t)) => {
                spans.push(t.elapsed().as_secs_f64() * 1000.0);
                since = None;
            }
            _ => {}
        }
        if agree && last_check.elapsed() > Duration::from_millis(200) {
            last_check = tokio::time::Instant::now();
            let mut all = true;
            for a in apps {
                all &= ramp(a.admin_addr).await["state"] == state;
            }
            if all {
                return spans;
            }
        }
        if start.elapsed() > limit {
            let r = ramp(apps[0].admin_addr).await;
            panic!("not all {state} within {limit:?}; weights {w:?}; replica 1's ramp: {r:#}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_ramp_is_promoted_with_every_replica_agreeing() {
    // As in the single-process test (ramp_promote.rs): the gate needs
    // slow-request evidence, and a 4 s baseline a steady yardstick.
    let (stable, canary) = (
        backend("b", 0.02, STEADY_MEAN_MS).await,
        backend("b", 0.02, STEADY_MEAN_MS).await,
    );
    let policy = format!(
        "steps = [10, 50, 100]\nmin_requests = 30\ngate_ratios = [0, 5]\n{}",
        FAST.replace("baseline = \"1s\"", "baseline = \"4s\"")
    );
    let (setups, apps) = fleet("healthy", &stable, &canary, &policy).await;
    let lead = leader(&apps).await;
    let traffic = traffic(&apps, 100.0);
    let mut spans = watch_spread(&apps, "promoted", Duration::from_secs(40)).await;
    assert!(!spans.is_empty(), "the weights changed during the ramp");
    let (p50, p99, max) = percentiles(&mut spans);
    println!("weight spread across 3 replicas after a decision, ms: p50 {p50:.1} p99 {p99:.1} max {max:.1} ({} decisions)", spans.len());
    assert!(
        max < 1000.0,
        "every replica applies a decision within 1 s: {max} ms"
    );
    for t in &traffic {
        t.stop();
        assert_eq!(
            t.non_2xx_or_503.load(std::sync::atomic::Ordering::Relaxed),
            0
        );
    }
    // Every replica shows the same decisions, each naming the leader.
    let leader_name = format!("gp-{}", lead + 1);
    let mut seen: Option<Value> = None;
    for a in &apps {
        let r = ramp(a.admin_addr).await;
        assert_eq!(r["weight"], 100.0);
        let d = r["decisions"].clone();
        assert!(
            d.as_array()
                .unwrap()
                .iter()
                .all(|x| x["replica"] == leader_name.as_str()),
            "{d:#}"
        );
        if let Some(s) = &seen {
            assert_eq!(s, &d);
        }
        seen = Some(d);
    }
    let acts: Vec<String> = seen
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["action"].as_str().unwrap().to_owned())
        .filter(|a| a != "hold" && a != "hold_ended")
        .collect();
    assert_eq!(
        acts,
        ["baseline_started", "ramp_started", "advance", "promote"]
    );
    // The deciding replica's local audit log has them; the others' do not.
    for (i, s) in setups.iter().enumerate() {
        let local = actions(&s.audit());
        assert_eq!(
            local.contains(&"promote".to_string()),
            i == lead,
            "replica {i}: {local:?}"
        );
    }
    for a in &apps {
        a.shutdown();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_is_rolled_back_on_the_fleets_summed_counts() {
    let (stable, canary) = (backend("b", 0.0, 0).await, backend("b", 0.4, 0).await);
    let policy = format!("steps = [20, 50, 100]\nmin_requests = 30\n{FAST}");
    let (_setups, apps) = fleet("failing", &stable, &canary, &policy).await;
    let lead = leader(&apps).await;
    let _traffic = traffic(&apps, 100.0);
    watch_spread(&apps, "rolled_back", Duration::from_secs(60)).await;
    let r = ramp(apps[lead].admin_addr).await;
    let rb = last_decision(r["decisions"].as_array().unwrap(), "rollback");
    assert_eq!(rb["replica"], format!("gp-{}", lead + 1).as_str());
    // The evidence is the fleet's: more canary requests than the deciding
    // replica itself sent to the canary in the whole test.
    let evidence = rb["evidence"]["canary"]["requests"].as_u64().unwrap();
    let own = status(apps[lead].admin_addr).await["routes"][0]["arms"]["canary"]["requests"]
        .as_u64()
        .unwrap();
    println!(
        "rollback evidence: {evidence} canary requests fleet-wide, the leader alone served {own}"
    );
    assert!(
        evidence > own,
        "evidence {evidence} must exceed the leader's own {own}: {rb:#}"
    );
    assert_at_0_and_shut_down(&apps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_canary_is_rolled_back_in_the_shadow_phase_on_the_fleets_summed_pairs() {
    // A modest rate: the evidence grows over several publishes, so the
    // leader's own share of it at the decision is clearly below the sum.
    let (stable, canary) = (backend("b", 0.0, 0).await, backend("b", 0.2, 0).await);
    let policy = format!("steps = [20, 50, 100]\nmin_requests = 30\nshadow = \"1m\"\n{FAST}");
    let (_setups, apps) = fleet("shadow", &stable, &canary, &policy).await;
    let lead = leader(&apps).await;
    let _traffic = traffic(&apps, 30.0);
    watch_spread(&apps, "rolled_back", Duration::from_secs(60)).await;
    let r = ramp(apps[lead].admin_addr).await;
    let decisions = r["decisions"].as_array().unwrap();
    assert!(decisions.iter().any(|d| d["action"] == "shadow_started"));
    assert!(!decisions.iter().any(|d| d["action"] == "ramp_started"));
    let rb = last_decision(decisions, "rollback");
    assert_eq!(rb["replica"], format!("gp-{}", lead + 1).as_str());
    let reason = rb["reason"].as_str().unwrap();
    // "… (canary-only failures B vs stable-only C, …)": B is the fleet's.
    let fleet_failures: u64 = reason
        .split("canary-only failures ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{reason}"));
    let mut own = Vec::new();
    for a in &apps {
        let s = status(a.admin_addr).await;
        let route = &s["routes"][0];
        assert_eq!(route["arms"]["canary"]["requests"], 0, "no user served");
        own.push(route["shadow"]["canary_errors"].as_u64().unwrap_or(0));
    }
    println!("shadow rollback on {fleet_failures} canary-only failures fleet-wide; each replica's own: {own:?}");
    assert!(
        own.iter().filter(|n| **n > 0).count() >= 2,
        "pairs on more than one replica: {own:?}"
    );
    assert!(
        fleet_failures > own[lead],
        "the leader judged more than its own {} failures: {reason}",
        own[lead]
    );
    assert_at_0_and_shut_down(&apps);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_pause_on_a_follower_reaches_every_replica_within_a_second() {
    let (stable, canary) = (backend("b", 0.0, 0).await, backend("b", 0.0, 0).await);
    // A long step: nothing but the operator moves the ramp.
    let policy = "steps = [10, 100]\nmin_requests = 1000000\ntick = \"100ms\"\ninterval = \"1h\"\nbaseline = \"300ms\"\nmax_step_duration = \"2h\"";
    let (_setups, apps) = fleet("pause", &stable, &canary, policy).await;
    let c = client();
    let lead = leader(&apps).await;
    let _traffic = traffic(&apps, 50.0);
    eventually(
        Duration::from_secs(20),
        "progressing everywhere",
        || async {
            let w = weights(&apps);
            w.iter().all(|x| *x == 10.0).then_some(())
        },
    )
    .await;
    let follower = (lead + 1) % 3;
    let t = tokio::time::Instant::now();
    let (code, body) = post(&c, apps[follower].admin_addr, "r", "pause", Some(TOKEN)).await;
    assert_eq!(code, 200, "{body}");
    for a in &apps {
        eventually(
            Duration::from_secs(1),
            "paused on every replica",
            || async { (ramp(a.admin_addr).await["state"] == "paused").then_some(()) },
        )
        .await;
    }
    println!(
        "operator pause on a follower seen by all 3 replicas after {:?}",
        t.elapsed()
    );
    assert!(t.elapsed() < Duration::from_secs(1));
    let d = ramp(apps[lead].admin_addr).await["decisions"]
        .as_array()
        .unwrap()
        .last()
        .cloned()
        .unwrap();
    assert_eq!(
        (d["action"].as_str(), d["replica"].as_str()),
        (Some("pause"), Some(format!("gp-{}", follower + 1).as_str()))
    );
    // And resume, again from a follower, reaches everyone.
    let (code, _) = post(
        &c,
        apps[(lead + 2) % 3].admin_addr,
        "r",
        "resume",
        Some(TOKEN),
    )
    .await;
    assert_eq!(code, 200);
    for a in &apps {
        eventually(
            Duration::from_secs(1),
            "progressing again everywhere",
            || async { (ramp(a.admin_addr).await["state"] == "progressing").then_some(()) },
        )
        .await;
        a.shutdown();
    }
}
