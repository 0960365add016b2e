//! The coordination layer against a real etcd (one per file; each test its
//! own key prefix): election and failover on lease expiry, fenced writes
//! refused to a deposed leader, counts summed over replicas, the member list
//! outliving a lease, etcd health, and watch delivery latency.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use grayproxy::config::types::FleetConfig;
use grayproxy::fleet::counts::{Accumulator, Consumer, CountsReport};
use grayproxy::fleet::health::EtcdHealth;
use grayproxy::fleet::session::{Session, SessionConfig};
use grayproxy::fleet::store::{Change, Fence, Store, Written};
use grayproxy::ramp::{ArmTick, TickCounts};
use support::fleet::{etcd, percentiles, poll_for};

fn cfg(prefix: &str, replica: &str, endpoint: &str) -> FleetConfig {
    FleetConfig {
        etcd: vec![endpoint.to_owned()],
        prefix: prefix.to_owned(),
        replica: replica.to_owned(),
        lease_ttl: Duration::from_secs(2),
        auth: None,
        ca: None,
    }
}

async fn store(prefix: &str) -> Store {
    Store::connect(
        &cfg(prefix, "x", &etcd().endpoint),
        Duration::from_millis(600),
    )
    .await
    .unwrap()
}

async fn session(prefix: &str, replica: &str, digest: &str) -> Session {
    Session::spawn(
        store(prefix).await,
        SessionConfig {
            replica: replica.to_owned(),
            lease_ttl: Duration::from_secs(2),
            config_digest: digest.to_owned(),
        },
    )
}

/// Waits until exactly one of `sessions` leads and all agree on it.
async fn agreed_leader(sessions: &[&Session], limit: Duration) -> Option<String> {
    poll_for(limit, || {
        let views: Vec<_> = sessions.iter().map(|s| s.view()).collect();
        let leaders = views.iter().filter(|v| v.term().is_some()).count();
        let first = views[0].leader.clone()?;
        (leaders == 1 && views.iter().all(|v| v.leader.as_deref() == Some(&first))).then_some(first)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_then_failover_on_lease_expiry_and_the_old_term_is_fenced() {
    let p = "/t/election";
    let (a, b, c) = (
        session(p, "a", "d").await,
        session(p, "b", "d").await,
        session(p, "c", "d").await,
    );
    let all = [&a, &b, &c];
    let first = agreed_leader(&all, Duration::from_secs(5))
        .await
        .expect("a leader within 5 s");
    let old = all.iter().find(|s| s.replica() == first).unwrap();
    let term = old.view().term().unwrap();

    // The leader writes a state, fenced by its term.
    let st = store(p).await;
    let key = st.keys().state("reco");
    let w = st
        .fenced_put(Fence::Leader(term), key.clone(), 0, b"v1".to_vec(), vec![])
        .await
        .unwrap();
    let Written::Committed(rev1) = w else {
        panic!("{w:?}")
    };
    // A stale read revision is refused even to the leader.
    let w = st
        .fenced_put(Fence::Leader(term), key.clone(), 0, b"v1b".to_vec(), vec![])
        .await
        .unwrap();
    assert_eq!(w, Written::Conflict);

    // The leader "crashes" (its lease is not revoked); another takes over
    // once the lease expires.
    let died = tokio::time::Instant::now();
    old.halt();
    let rest: Vec<&Session> = all
        .iter()
        .copied()
        .filter(|s| s.replica() != first)
        .collect();
    let next = poll_for(Duration::from_secs(6), || {
        let v = rest[0].view();
        let l = v.leader.clone()?;
        (l != first && rest.iter().any(|s| s.view().term().is_some())).then_some(l)
    })
    .await
    .expect("a new leader within lease_ttl + a round");
    let failover = died.elapsed();
    println!("failover after a crash: {failover:?} (lease_ttl 2 s)");
    assert!(
        failover < Duration::from_millis(2_000 + 2_000),
        "{failover:?}"
    );
    assert_ne!(next, first);

    // The deposed leader's term can never commit again, even at the right
    // state revision.
    let w = st
        .fenced_put(
            Fence::Leader(term),
            key.clone(),
            rev1,
            b"stale".to_vec(),
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(w, Written::NotLeader);
    assert_eq!(st.get(&key).await.unwrap().unwrap().value, b"v1");
    // The new leader's term commits.
    let new_term = rest.iter().find_map(|s| s.view().term()).unwrap();
    let w = st
        .fenced_put(
            Fence::Leader(new_term),
            key.clone(),
            rev1,
            b"v2".to_vec(),
            vec![],
        )
        .await
        .unwrap();
    assert!(matches!(w, Written::Committed(_)), "{w:?}");

    // The crashed replica stays listed, not alive.
    let dead = poll_for(Duration::from_secs(3), || {
        let v = rest[0].view();
        v.replicas
            .iter()
            .find(|m| m.replica == first && !m.alive)
            .cloned()
    })
    .await;
    assert!(dead.is_some(), "{:?}", rest[0].view().replicas);
    for s in rest {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_shutdown_hands_over_at_once_and_drift_is_reported() {
    let p = "/t/handover";
    let a = session(p, "a", "same").await;
    agreed_leader(&[&a], Duration::from_secs(5)).await.unwrap();
    let b = session(p, "b", "same").await;
    let c = session(p, "c", "other").await;
    let leader = agreed_leader(&[&a, &b, &c], Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(leader, "a", "the first replica keeps leading");
    let drift = poll_for(Duration::from_secs(3), || {
        let v = b.view();
        (v.replicas.len() == 3).then(|| {
            v.replicas
                .iter()
                .map(|m| (m.replica.clone(), m.config_drift))
                .collect::<Vec<_>>()
        })
    })
    .await
    .unwrap();
    assert_eq!(
        drift,
        [("a".into(), false), ("b".into(), false), ("c".into(), true)]
    );
    let t = tokio::time::Instant::now();
    a.shutdown().await;
    let next = poll_for(Duration::from_secs(3), || {
        let l = b.view().leader.clone()?;
        (l != "a" && (b.view().term().is_some() || c.view().term().is_some())).then_some(l)
    })
    .await
    .expect("a new leader");
    println!("handover after a clean shutdown: {:?}", t.elapsed());
    assert!(
        t.elapsed() < Duration::from_millis(1_500),
        "no lease to wait for: {:?}",
        t.elapsed()
    );
    assert!(next == "b" || next == "c");
    b.shutdown().await;
    c.shutdown().await;
}

fn tick(stable: u64, canary: u64, errors: u64) -> TickCounts {
    let arm = |requests, errors| ArmTick {
        requests,
        errors,
        ..ArmTick::default()
    };
    TickCounts::from_halves(
        arm(canary, errors),
        [arm(stable / 2, 0), arm(stable - stable / 2, 0)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_summed_over_live_replicas_at_the_current_weight() {
    let p = "/t/counts";
    let sessions = [
        session(p, "a", "d").await,
        session(p, "b", "d").await,
        session(p, "c", "d").await,
    ];
    poll_for(Duration::from_secs(5), || {
        sessions
            .iter()
            .all(|s| s.view().lease.is_some())
            .then_some(())
    })
    .await
    .unwrap();
    let mut accs: Vec<Accumulator> = (0..3).map(|i| Accumulator::new(i * 1000)).collect();
    let st = store(p).await;
    let read = || async {
        let (entries, _) = st.list(&st.keys().all_counts()).await.unwrap();
        entries
            .iter()
            .map(|e| {
                let r: CountsReport = serde_json::from_slice(&e.value).unwrap();
                (e.key.clone(), r)
            })
            .collect::<Vec<_>>()
    };
    let mut leader = Consumer::new();
    for (s, a) in sessions.iter().zip(&mut accs) {
        a.add("reco", 500, &tick(100, 5, 0));
        s.publish_counts(serde_json::to_vec(a.report()).unwrap())
            .await
            .unwrap();
    }
    assert!(
        leader.take("reco", 500, &read().await).counts.is_empty(),
        "a new term starts from what is there"
    );
    // One more tick everywhere, the third replica at another weight.
    for (i, (s, a)) in sessions.iter().zip(&mut accs).enumerate() {
        let w = if i == 2 { 1000 } else { 500 };
        a.add("reco", w, &tick(90, 10, i as u64));
        s.publish_counts(serde_json::to_vec(a.report()).unwrap())
            .await
            .unwrap();
    }
    let t = leader.take("reco", 500, &read().await);
    assert_eq!((t.replicas, t.other_weight), (2, 1));
    assert_eq!(
        (
            t.counts.stable.requests,
            t.counts.canary.requests,
            t.counts.canary.errors
        ),
        (180, 20, 1)
    );
    // A replica that dies takes its counts key with it (lease-bound).
    sessions[0].halt();
    let mut left = read().await.len();
    for _ in 0..100 {
        if left == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        left = read().await.len();
    }
    assert_eq!(
        left, 2,
        "the halted replica's counts key expired with its lease"
    );
    for s in &sessions[1..] {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_delivers_every_state_change_quickly() {
    let p = "/t/watch";
    let st = store(p).await;
    let (_, rev) = st.list(&st.keys().states()).await.unwrap();
    let mut w = st.watch(&[st.keys().states()], rev + 1).await.unwrap();
    let mut lat = Vec::new();
    let mut expected = 0;
    for i in 0..40 {
        let key = st.keys().state("reco");
        let t = tokio::time::Instant::now();
        let Written::Committed(r) = st
            .fenced_put(
                Fence::StateOnly,
                key,
                expected,
                format!("v{i}").into_bytes(),
                vec![],
            )
            .await
            .unwrap()
        else {
            panic!()
        };
        expected = r;
        let changes = tokio::time::timeout(Duration::from_secs(2), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        lat.push(t.elapsed().as_secs_f64() * 1000.0);
        let Change::Put(e) = &changes[0] else {
            panic!("{changes:?}")
        };
        assert_eq!(e.value, format!("v{i}").as_bytes());
    }
    let (p50, p99, max) = percentiles(&mut lat);
    println!("write→watch delivery ms: p50 {p50:.2} p99 {p99:.2} max {max:.2}");
    assert!(max < 1000.0, "every change within 1 s: {max} ms");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_etcd_is_reported_within_a_lease() {
    // Nothing listens on this port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let c = cfg("/t/none", "a", &format!("http://127.0.0.1:{port}"));
    let st = Store::connect(&c, Duration::from_millis(600))
        .await
        .unwrap();
    let s = Session::spawn(
        st,
        SessionConfig {
            replica: "a".into(),
            lease_ttl: Duration::from_secs(2),
            config_digest: "d".into(),
        },
    );
    let t = tokio::time::Instant::now();
    let v = poll_for(Duration::from_secs(3), || {
        let v = s.view();
        (v.etcd == EtcdHealth::Unreachable).then_some(v)
    })
    .await
    .expect("unreachable within a lease");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert!(v.term().is_none() && v.leader.is_none());
    s.halt();
}

async fn link(prefix: &str, replica: &str) -> grayproxy::fleet::link::FleetLink {
    let mut c = cfg(prefix, replica, &etcd().endpoint);
    c.lease_ttl = Duration::from_secs(2);
    grayproxy::fleet::link::FleetLink::start(&c, "d".into())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_leader_sums_commits_and_every_replica_sees_it() {
    let p = "/t/link";
    let links = [link(p, "a").await, link(p, "b").await, link(p, "c").await];
    let leader = poll_for(Duration::from_secs(5), || {
        links.iter().position(|l| l.view().term().is_some())
    })
    .await
    .expect("a leader");
    let follower = (leader + 1) % 3;
    for l in &links {
        l.record("reco", 500, &tick(100, 10, 1));
        l.publish_counts().await.unwrap();
    }
    assert!(
        links[follower]
            .fleet_counts("reco", 500)
            .await
            .unwrap()
            .is_none(),
        "followers do not judge"
    );
    let primed = links[leader]
        .fleet_counts("reco", 500)
        .await
        .unwrap()
        .unwrap();
    assert!(
        primed.counts.is_empty(),
        "a new term's first read consumes nothing"
    );
    for l in &links {
        l.record("reco", 500, &tick(100, 10, 1));
        l.publish_counts().await.unwrap();
    }
    let t = links[leader]
        .fleet_counts("reco", 500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (t.replicas, t.counts.canary.requests, t.counts.canary.errors),
        (3, 30, 3)
    );

    // Decisions: the leader commits; every replica's snapshot has it within 1 s.
    let mut spread = Vec::new();
    let mut rev = 0;
    for i in 0..25 {
        let value = format!("{{\"step\":{i}}}").into_bytes();
        let decided = tokio::time::Instant::now();
        let w = links[leader]
            .commit(
                "reco",
                rev,
                value.clone(),
                vec![format!("{{\"n\":{i}}}").into_bytes()],
            )
            .await
            .unwrap();
        let Written::Committed(r) = w else {
            panic!("{w:?}")
        };
        rev = r;
        let mut last = 0.0f64;
        for l in &links {
            let mut rx = l.subscribe();
            let got = tokio::time::timeout(
                Duration::from_secs(1),
                rx.wait_for(|s| s.states.get("reco").is_some_and(|s| s.revision >= r)),
            )
            .await;
            assert!(
                got.is_ok(),
                "replica {} did not see revision {r} within 1 s",
                l.session().replica()
            );
            last = last.max(decided.elapsed().as_secs_f64() * 1000.0);
        }
        spread.push(last);
    }
    let (p50, p99, max) = percentiles(&mut spread);
    println!("decision -> last of 3 replicas applied, ms: p50 {p50:.2} p99 {p99:.2} max {max:.2}");
    // The history keeps the last 20, on every replica.
    let h = poll_for(Duration::from_secs(2), || {
        let s = links[follower].snapshot();
        (s.history.len() == 20 && s.history.last().is_some_and(|h| h == b"{\"n\":24}"))
            .then(|| s.history.clone())
    })
    .await;
    assert!(
        h.is_some(),
        "{:?}",
        links[follower].snapshot().history.len()
    );
    assert_eq!(h.unwrap()[0], b"{\"n\":5}");

    // A follower's operator command: fenced by the state revision only; a
    // stale revision conflicts, the current one commits.
    let w = links[follower]
        .commit("reco", rev - 1, b"{}".to_vec(), vec![])
        .await
        .unwrap();
    assert_eq!(w, Written::Conflict);
    let w = links[follower]
        .commit("reco", rev, b"{\"paused\":true}".to_vec(), vec![])
        .await
        .unwrap();
    assert!(matches!(w, Written::Committed(_)));
    for l in &links {
        l.session().shutdown().await;
    }
}
