//! Routing end to end (README, "Routing semantics") over real sockets: the random split, the
//! sticky formula across a reload, every rule kind and their order, weights
//! 0 and 100, route order and the 404 for no route.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use grayproxy::routing::sticky::bucket;
use support::{client, config, fan_out, get, TestProxy, TestUpstream};

/// Stable and canary upstreams.
async fn arms() -> (TestUpstream, TestUpstream) {
    (
        TestUpstream::spawn("stable").await,
        TestUpstream::spawn("canary").await,
    )
}

fn ups(stable: &TestUpstream, canary: &TestUpstream) -> [(&'static str, SocketAddr); 2] {
    [("stable", stable.addr), ("canary", canary.addr)]
}

/// A route `name` on `prefix` between the two upstreams, with extra lines.
fn route(name: &str, prefix: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"{name}\"\nmatch = {{ path_prefix = \"{prefix}\" }}\n\
         stable = \"stable\"\ncanary = \"canary\"\n{extra}\n"
    )
}

/// GETs `path` with `headers`, checks the answer came from the arm it names
/// (body = upstream name), returns that arm.
async fn arm_of(c: &support::HttpClient, url: &str, headers: &[(&str, &str)]) -> String {
    let a = get(c, url, headers).await;
    assert_eq!(a.status, 200, "{url} {headers:?}: {a:?}");
    assert_eq!(
        a.arm(),
        std::str::from_utf8(&a.body).unwrap(),
        "arm header names the upstream that answered"
    );
    a.arm().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_split_matches_the_weight_within_4_sigma() {
    let (stable, canary) = arms().await;
    let text = config(
        "",
        &ups(&stable, &canary),
        &route("split", "/", "canary_weight = 10.0"),
    );
    let proxy = TestProxy::start(&text).await;
    const N: usize = 5000;
    let c = client();
    let url = Arc::new(proxy.url("/split"));
    let arms = fan_out(N, 16, move |_| {
        let (c, url) = (c.clone(), url.clone());
        async move { arm_of(&c, &url, &[]).await }
    })
    .await;
    let on_canary = arms.iter().filter(|a| *a == "canary").count();
    let p = 0.10;
    let mean = N as f64 * p;
    let sigma = (N as f64 * p * (1.0 - p)).sqrt();
    let z = (on_canary as f64 - mean) / sigma;
    println!(
        "split: {on_canary}/{N} on canary = {:.2}% (expected 10%, z = {z:+.2})",
        100.0 * on_canary as f64 / N as f64
    );
    assert!(
        z.abs() < 4.0,
        "canary share {on_canary}/{N} is {z:.1} σ off 10%"
    );
    // Upstreams and metrics agree with what clients saw.
    assert_eq!(canary.count(), on_canary);
    assert_eq!(stable.count(), N - on_canary);
    let m = proxy.metrics().await;
    let canary_2xx = m.value(
        "grayproxy_requests_total",
        &[("route", "split"), ("arm", "canary"), ("code", "2xx")],
    );
    assert_eq!(canary_2xx, on_canary as f64);
    assert_eq!(
        m.value("grayproxy_canary_weight_percent", &[("route", "split")]),
        10.0
    );
    assert_eq!(
        m.value(
            "grayproxy_request_duration_seconds_count",
            &[("route", "split"), ("arm", "canary")]
        ),
        on_canary as f64
    );
    // /status counts the same weight-assigned requests.
    let status = proxy.status().await;
    let arms = &status["routes"][0]["arms"];
    assert_eq!(arms["canary"]["requests"], on_canary);
    assert_eq!(arms["stable"]["requests"], N - on_canary);
    assert_eq!(arms["canary"]["errors"], 0);
    assert_eq!(status["routes"][0]["forced"]["canary"]["requests"], 0);
    // The arm header reaches the upstream too.
    assert!(canary
        .seen()
        .iter()
        .all(|s| s.header("x-grayproxy-arm") == "canary"));
    assert!(stable
        .seen()
        .iter()
        .all(|s| s.header("x-grayproxy-arm") == "stable"));
}

/// Each user's arm, by header key, for users `0..n`.
async fn sticky_arms(proxy: &TestProxy, n: usize) -> Vec<String> {
    let c = client();
    let url = Arc::new(proxy.url("/reco"));
    fan_out(n, 16, move |i| {
        let (c, url) = (c.clone(), url.clone());
        async move {
            let user = format!("user-{i}");
            arm_of(&c, &url, &[("x-user-id", user.as_str())]).await
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sticky_arms_follow_the_formula_and_survive_a_weight_raise() {
    const USERS: usize = 2000;
    const SALT: &str = "reco-v2";
    let (stable, canary) = arms().await;
    let routes = |w: &str| {
        route(
            "reco",
            "/reco",
            &format!("canary_weight = {w}\nsticky = \"header:x-user-id\"\nsalt = \"{SALT}\""),
        )
    };
    let ups = ups(&stable, &canary);
    let proxy = TestProxy::start(&config("", &ups, &routes("20.0"))).await;

    let expected = |i: usize, percent: u16| -> &'static str {
        if bucket(SALT, format!("user-{i}").as_bytes()) < percent * 100 {
            "canary"
        } else {
            "stable"
        }
    };
    let before = sticky_arms(&proxy, USERS).await;
    for (i, arm) in before.iter().enumerate() {
        assert_eq!(arm, expected(i, 20), "user-{i} at 20%");
    }
    // Asking again gives the same answers: the arm is a function of the key.
    assert_eq!(sticky_arms(&proxy, 200).await, before[..200]);

    proxy
        .reload_to(&config("", &ups, &routes("50.0")), "reco", 50.0)
        .await;
    let after = sticky_arms(&proxy, USERS).await;
    for (i, arm) in after.iter().enumerate() {
        assert_eq!(arm, expected(i, 50), "user-{i} at 50%");
        if before[i] == "canary" {
            assert_eq!(
                arm, "canary",
                "user-{i} went back to stable on a weight raise"
            );
        }
    }
    let (b, a) = (
        before.iter().filter(|a| *a == "canary").count(),
        after.iter().filter(|a| *a == "canary").count(),
    );
    println!("sticky: {b}/{USERS} canary at 20%, {a}/{USERS} at 50%");
    // The contract's vector, through the admin API and the proxy.
    let explain = support::admin_json(proxy.admin, "/routes/reco/explain?key=user-1").await;
    assert_eq!(explain["bucket"], 4851);
    assert_eq!(explain["arm"], "canary", "bucket 4851 is below 50%");
    assert_eq!(explain["canary_from_percent"], 48.52);
    let c = client();
    assert_eq!(
        arm_of(&c, &proxy.url("/reco"), &[("x-user-id", "user-1")]).await,
        "canary"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_keys_from_cookie_and_query_are_used_as_sent() {
    let (stable, canary) = arms().await;
    let routes = format!(
        "{}{}",
        route(
            "by-cookie",
            "/cookie",
            "canary_weight = 50.0\nsticky = \"cookie:uid\"\nsalt = \"s\""
        ),
        route(
            "by-query",
            "/query",
            "canary_weight = 50.0\nsticky = \"query:uid\"\nsalt = \"s\""
        ),
    );
    let proxy = TestProxy::start(&config("", &ups(&stable, &canary), &routes)).await;
    let c = client();
    for i in 0..150 {
        // Percent-encoded keys are bucketed as sent, not decoded.
        let key = format!("u%20{i}");
        let want = if bucket("s", key.as_bytes()) < 5000 {
            "canary"
        } else {
            "stable"
        };
        let cookie = format!("a=1; uid={key}; b=2");
        let by_cookie = arm_of(&c, &proxy.url("/cookie"), &[("cookie", cookie.as_str())]).await;
        assert_eq!(by_cookie, want, "cookie uid={key}");
        let by_query = arm_of(&c, &proxy.url(&format!("/query?x=1&uid={key}")), &[]).await;
        assert_eq!(by_query, want, "query uid={key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rule_kind_sends_where_it_says_and_the_first_match_wins() {
    let (stable, canary) = arms().await;
    // Each rule kind once towards canary (weight 0) and once towards stable (weight 100).
    let rules = |to: &str| {
        format!(
            "sticky = \"header:x-user-id\"\n\
             [[routes.rules]]\nwhen = {{ header = \"x-canary\", equals = \"always\" }}\nto = \"{to}\"\n\
             [[routes.rules]]\nwhen = {{ header = \"user-agent\", regex = \"iPhone\" }}\nto = \"{to}\"\n\
             [[routes.rules]]\nwhen = {{ cookie = \"vip\", equals = \"1\" }}\nto = \"{to}\"\n\
             [[routes.rules]]\nwhen = {{ query = \"beta\", equals = \"on\" }}\nto = \"{to}\"\n\
             [[routes.rules]]\nwhen = {{ sticky_in = [\"staff-1\", \"staff-2\"] }}\nto = \"{to}\"\n"
        )
    };
    let order = "canary_weight = 50.0\n\
         [[routes.rules]]\nwhen = { header = \"x-canary\", equals = \"always\" }\nto = \"canary\"\n\
         [[routes.rules]]\nwhen = { cookie = \"vip\", equals = \"1\" }\nto = \"stable\"\n\
         [[routes.rules]]\nwhen = { header = \"x-canary\", regex = \"^a\" }\nto = \"stable\"\n";
    let routes = format!(
        "{}{}{}",
        route(
            "to-canary",
            "/to-canary",
            &format!("canary_weight = 0.0\n{}", rules("canary"))
        ),
        route(
            "to-stable",
            "/to-stable",
            &format!("canary_weight = 100.0\n{}", rules("stable"))
        ),
        route("order", "/order", order),
    );
    let proxy = TestProxy::start(&config("", &ups(&stable, &canary), &routes)).await;
    let c = client();
    // (path suffix, headers, does the rule match?)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], bool);
    let cases: &[Case] = &[
        ("", &[("x-canary", "always")], true),
        ("", &[("x-canary", "Always")], false),
        (
            "",
            &[("user-agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)")],
            true,
        ),
        ("", &[("user-agent", "Mozilla/5.0 (Android 14)")], false),
        ("", &[("cookie", "theme=dark; vip=1")], true),
        ("", &[("cookie", "vip=10")], false),
        ("?a=b&beta=on", &[], true),
        ("?beta=off", &[], false),
        ("", &[("x-user-id", "staff-2")], true),
        ("", &[("x-user-id", "staff-3")], false),
        ("", &[], false),
    ];
    let mut forced = 0;
    for (query, headers, matches) in cases {
        for (path, by_rule, by_weight) in [
            ("/to-canary", "canary", "stable"),
            ("/to-stable", "stable", "canary"),
        ] {
            let want = if *matches { by_rule } else { by_weight };
            let got = arm_of(&c, &proxy.url(&format!("{path}{query}")), headers).await;
            assert_eq!(got, want, "{path}{query} {headers:?}");
        }
        forced += usize::from(*matches);
    }
    // Rule-forced requests are counted apart from weight-assigned ones.
    let status = proxy.status().await;
    let route = |name: &str| {
        status["routes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(route("to-canary")["forced"]["canary"]["requests"], forced);
    assert_eq!(route("to-stable")["forced"]["stable"]["requests"], forced);
    assert_eq!(route("to-canary")["forced"]["stable"]["requests"], 0);

    // Order: the first matching rule wins, whatever later rules say.
    let order = proxy.url("/order");
    for _ in 0..20 {
        let both = [("x-canary", "always"), ("cookie", "vip=1")];
        assert_eq!(arm_of(&c, &order, &both).await, "canary");
        let later = [("x-canary", "almost"), ("cookie", "vip=1")];
        assert_eq!(arm_of(&c, &order, &later).await, "stable");
        assert_eq!(
            arm_of(&c, &order, &[("x-canary", "almost")]).await,
            "stable"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_0_and_100_send_everyone_to_one_arm() {
    let (stable, canary) = arms().await;
    let sticky = "sticky = \"header:x-user-id\"";
    let routes = format!(
        "{}{}",
        route("zero", "/zero", &format!("canary_weight = 0.0\n{sticky}")),
        route("full", "/full", &format!("canary_weight = 100.0\n{sticky}")),
    );
    let proxy = TestProxy::start(&config("", &ups(&stable, &canary), &routes)).await;
    let c = client();
    for i in 0..300 {
        let user = format!("user-{i}");
        // Every tenth request has no sticky key: random at 0% / 100% is certain too.
        let headers: Vec<(&str, &str)> = if i % 10 == 0 {
            vec![]
        } else {
            vec![("x-user-id", user.as_str())]
        };
        assert_eq!(arm_of(&c, &proxy.url("/zero"), &headers).await, "stable");
        assert_eq!(arm_of(&c, &proxy.url("/full"), &headers).await, "canary");
    }
    assert_eq!(stable.count(), 300);
    assert_eq!(canary.count(), 300);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_match_in_file_order_and_no_route_is_a_404_json() {
    let (stable, canary) = arms().await;
    let routes = "[[routes]]\nname = \"shop\"\nmatch = { host = \"shop.example\", path_prefix = \"/api\" }\n\
         stable = \"stable\"\ncanary = \"canary\"\ncanary_weight = 100.0\n\
         [[routes]]\nname = \"api\"\nmatch = { path_prefix = \"/api\" }\n\
         stable = \"stable\"\ncanary = \"canary\"\ncanary_weight = 0.0\n";
    let proxy = TestProxy::start(&config("", &ups(&stable, &canary), routes)).await;
    let c = client();
    let api = proxy.url("/api/items?id=1");
    assert_eq!(
        arm_of(&c, &api, &[("host", "shop.example")]).await,
        "canary"
    );
    assert_eq!(
        arm_of(&c, &api, &[("host", "other.example")]).await,
        "stable"
    );
    let m = proxy.metrics().await;
    assert_eq!(
        m.value("grayproxy_requests_total", &[("route", "shop")]),
        1.0
    );
    assert_eq!(
        m.value("grayproxy_requests_total", &[("route", "api")]),
        1.0
    );

    let a = get(&c, &proxy.url("/nothing/here"), &[]).await;
    assert_eq!(a.status, 404);
    assert_eq!(a.header("content-type"), "application/json");
    assert_eq!(
        a.json(),
        serde_json::json!({"error": "no route matches this request"})
    );
    assert_eq!(a.arm(), "", "no arm for a request no route took");
    assert_eq!(
        stable.count() + canary.count(),
        2,
        "the 404 reached no upstream"
    );
}
