//! Fleet mode with the real binary, three processes on one etcd (one for
//! the file, a prefix per test): the leader killed with `kill -9` (another
//! leads within lease_ttl + one tick and continues from the stored state),
//! and the leader frozen with SIGSTOP past its lease, then thawed: it must
//! not commit anything (fencing).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::Value;
use support::binary::Binary;
use support::eventually;
use support::fleet::etcd;
use support::http::admin_json;
use support::ramp::*;
use support::upstream::TestUpstream;

async fn status(admin: SocketAddr) -> Value {
    admin_json(admin, "/status").await
}

/// A slow, steady ramp: every step needs 1,500 requests per arm, so the
/// state moves only by ticks (evidence) during the test.
const SLOW: &str = "steps = [10, 20, 100]\nmin_requests = 1500\ntick = \"200ms\"\ninterval = \"1s\"\nbaseline = \"1s\"\nmax_step_duration = \"1h\"";

fn replicas(name: &str, stable: &TestUpstream, canary: &TestUpstream) -> Vec<(Setup, Binary)> {
    (1..=3)
        .map(|i| {
            let s = Setup::new(stable.addr, canary.addr, SLOW);
            let mut text = std::fs::read_to_string(&s.config).unwrap();
            text.push_str(&etcd().fleet_toml(&format!("/t/{name}"), &format!("gp-{i}"), 2));
            std::fs::write(&s.config, text).unwrap();
            let b = Binary::start(&s.config);
            (s, b)
        })
        .collect()
}

async fn fleet_of(b: &Binary) -> Value {
    status(b.admin).await["fleet"].clone()
}

/// The index of the replica that leads, once every given replica names it
/// (and it is not `not`).
async fn agreed_not(all: &[&Binary], not: Option<usize>, limit: Duration) -> usize {
    eventually(limit, "one leader all agree on", || async {
        let mut names = Vec::new();
        for b in all {
            names.push(fleet_of(b).await["leader"].as_str().map(str::to_owned));
        }
        let first = names[0].clone()?;
        let i = first[3..].parse::<usize>().unwrap() - 1;
        (Some(i) != not && names.iter().all(|n| n.as_deref() == Some(&first))).then_some(i)
    })
    .await
}

async fn agreed(all: &[&Binary], limit: Duration) -> usize {
    agreed_not(all, None, limit).await
}

async fn ramp_of(b: &Binary) -> Value {
    status(b.admin).await["routes"][0]["ramp"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_another_leads_and_continues_from_the_stored_state() {
    let (stable, canary) = (backend("b", 0.0, 0).await, backend("b", 0.0, 0).await);
    let nodes = replicas("kill9", &stable, &canary);
    let all: Vec<&Binary> = nodes.iter().map(|(_, b)| b).collect();
    let lead = agreed(&all, Duration::from_secs(8)).await;
    let _traffic: Vec<Traffic> = nodes
        .iter()
        .map(|(_, b)| Traffic::start(b.proxy, 60.0))
        .collect();
    // Progressing at 10 % with evidence on the step.
    eventually(
        Duration::from_secs(20),
        "progressing with evidence",
        || async {
            let r = ramp_of(all[(lead + 1) % 3]).await;
            (r["state"] == "progressing" && r["step"] == 0).then_some(r)
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // What the new leader must continue from: read right before the kill
    // (on a loaded machine the old leader may still decide during the pause).
    let before = ramp_of(all[(lead + 1) % 3]).await;
    assert_eq!(before["state"], "progressing", "{before:#}");
    let killed = tokio::time::Instant::now();
    nodes[lead].1.signal("KILL");
    let rest: Vec<&Binary> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != lead)
        .map(|(_, (_, b))| b)
        .collect();
    let next = eventually(
        Duration::from_secs(8),
        "a new leader both survivors name",
        || async {
            let mut names = Vec::new();
            for b in &rest {
                names.push(fleet_of(b).await["leader"].as_str().map(str::to_owned));
            }
            let old = format!("gp-{}", lead + 1);
            let first = names[0].clone()?;
            (first != old && names.iter().all(|n| n.as_deref() == Some(&first))).then_some(first)
        },
    )
    .await;
    let failover = killed.elapsed();
    println!("kill -9 of the leader: {next} leads after {failover:?} (lease_ttl 2 s, tick 200 ms)");
    assert!(
        failover < Duration::from_millis(2_000 + 200 + 1_000),
        "{failover:?}"
    );
    // The new leader continues the same ramp: same step, no new baseline,
    // the evidence keeps growing from where it was.
    let after = eventually(
        Duration::from_secs(5),
        "evidence growing under the new leader",
        || async {
            let r = ramp_of(rest[0]).await;
            let d = r["decisions"].as_array().unwrap().clone();
            let n = |v: &Value| v["decisions"].as_array().map_or(0, Vec::len);
            (d.iter().any(|x| x["replica"] == next.as_str()) || n(&r) == n(&before)).then_some(r)
        },
    )
    .await;
    assert_eq!(after["state"], "progressing", "{after:#}");
    assert_eq!(after["step"], before["step"]);
    assert_eq!(after["weight"], 10.0);
    let baselines = after["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["action"] == "baseline_started")
        .count();
    assert_eq!(baselines, 1, "no new baseline: {after:#}");
    // The dead replica is listed, not alive.
    eventually(
        Duration::from_secs(5),
        "the killed replica listed as not alive",
        || async {
            let f = fleet_of(rest[0]).await;
            let dead = format!("gp-{}", lead + 1);
            f["replicas"]
                .as_array()?
                .iter()
                .any(|m| m["replica"] == dead.as_str() && m["alive"] == false)
                .then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_leader_thawed_after_losing_its_lease_commits_nothing() {
    let (stable, canary) = (backend("b", 0.0, 0).await, backend("b", 0.0, 0).await);
    let nodes = replicas("sigstop", &stable, &canary);
    let all: Vec<&Binary> = nodes.iter().map(|(_, b)| b).collect();
    let lead = agreed(&all, Duration::from_secs(8)).await;
    let _traffic: Vec<Traffic> = nodes
        .iter()
        .map(|(_, b)| Traffic::start(b.proxy, 60.0))
        .collect();
    eventually(Duration::from_secs(20), "progressing", || async {
        (ramp_of(all[(lead + 1) % 3]).await["state"] == "progressing").then_some(())
    })
    .await;
    // Every state write, as etcd itself reports it, with its writer.
    let writes = std::sync::Arc::new(std::sync::Mutex::new(
        Vec::<(String, tokio::time::Instant)>::new(),
    ));
    let store = grayproxy::fleet::store::Store::connect(
        &grayproxy::config::types::FleetConfig {
            etcd: vec![etcd().endpoint.clone()],
            prefix: "/t/sigstop".into(),
            replica: "observer".into(),
            lease_ttl: Duration::from_secs(2),
            auth: None,
            ca: None,
        },
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let mut w = store.watch(&[store.keys().states()], 0).await.unwrap();
    let sink = writes.clone();
    tokio::spawn(async move {
        while let Ok(Some(changes)) = w.next().await {
            for ch in changes {
                if let grayproxy::fleet::store::Change::Put(e) = ch {
                    let v: Value = serde_json::from_slice(&e.value).unwrap();
                    let by = v["written_by"].as_str().unwrap().to_owned();
                    sink.lock().unwrap().push((by, tokio::time::Instant::now()));
                }
            }
        }
    });
    let old = format!("gp-{}", lead + 1);
    nodes[lead].1.signal("STOP");
    let stopped = tokio::time::Instant::now();
    let rest: Vec<&Binary> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != lead)
        .map(|(_, (_, b))| b)
        .collect();
    let next = agreed_not(&rest, Some(lead), Duration::from_secs(8)).await;
    assert_ne!(next, lead);
    println!(
        "SIGSTOP of the leader: gp-{} leads after {:?}",
        next + 1,
        stopped.elapsed()
    );
    // Let the new leader commit a few ticks, then thaw the old one: its
    // timers fire at once, it still believes it leads, and tries to commit.
    tokio::time::sleep(Duration::from_secs(1)).await;
    nodes[lead].1.signal("CONT");
    eventually(
        Duration::from_secs(5),
        "the thawed replica follows",
        || async {
            let f = fleet_of(&nodes[lead].1).await;
            (f["role"] == "follower" && f["leader"] != old.as_str()).then_some(())
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Not one decision in the fleet's history names the old leader after
    // it was frozen, and the stored ramp is the new leader's.
    let f = fleet_of(rest[0]).await;
    let stopped_ms = f["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["replica"] == old.as_str())
        .filter_map(|d| d["at_ms"].as_u64())
        .max()
        .unwrap_or(0);
    let since_stop: Vec<&Value> = f["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["replica"] == old.as_str() && d["at_ms"].as_u64().unwrap_or(0) > stopped_ms)
        .collect();
    assert!(since_stop.is_empty(), "{since_stop:#?}");
    // etcd saw state writes from the new leader after the freeze, and not
    // one from the frozen leader (whose attempts, if its timers fired
    // before it noticed, were refused by the fence: it logs each).
    let writes = writes.lock().unwrap().clone();
    let after_stop: Vec<&String> = writes
        .iter()
        .filter(|(_, t)| *t > stopped + Duration::from_millis(300))
        .map(|(by, _)| by)
        .collect();
    let new = format!("gp-{}", next + 1);
    assert!(
        after_stop.iter().any(|by| **by == new),
        "the new leader commits: {after_stop:?}"
    );
    assert!(
        !after_stop.iter().any(|by| **by == old),
        "a frozen leader's write committed: {after_stop:?}"
    );
    let fenced = nodes[lead]
        .1
        .logs()
        .join("\n")
        .matches("no longer leads the fleet")
        .count();
    println!(
        "after the freeze etcd committed {} state writes, {} by the old leader; its refused attempts: {fenced}",
        after_stop.len(),
        after_stop.iter().filter(|by| ***by == old).count()
    );
    // All three serve the same weight again.
    eventually(Duration::from_secs(2), "one weight everywhere", || async {
        let mut w = Vec::new();
        for (_, b) in &nodes {
            w.push(status(b.admin).await["routes"][0]["canary_weight"].as_f64());
        }
        w.iter().all(|x| *x == w[0]).then_some(())
    })
    .await;
}

#[test]
fn demo_runs_a_fleet_of_three_on_its_own_etcd() {
    // Needs etcd on PATH, as the other fleet tests (a missing etcd fails).
    support::fleet::etcd();
    let out = std::process::Command::new(support::binary::BIN)
        .args(["demo", "--fleet", "3", "--duration", "15s", "--rps", "150"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for want in [
        "fleet   3 replicas sharing one ramp through etcd at http://127.0.0.1:",
        "fleet: this replica demo-1",
        "replicas: 3 of 3 alive",
        "demo-2: canary weight",
        "demo-3: canary weight",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
    let bad = std::process::Command::new(support::binary::BIN)
        .args(["demo", "--fleet", "10"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--fleet 10 must be at most 9"));
}
