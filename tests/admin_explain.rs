//! `GET /routes/{name}/explain?key=K` over a real admin socket: the key is a
//! query parameter, so it arrives percent-encoded (`Müller` as
//! `M%C3%BCller`, `a b` as `a+b`) and is decoded before it is hashed; a key
//! that cannot be decoded is a 400 with a JSON error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;

use grayproxy::routing::sticky::bucket;
use support::{admin_json, client, config, get, TestProxy};

/// Route `reco` with the salt of the documented vector (`reco-v2`), at a
/// weight just below Müller's bucket. Nothing is proxied: the upstreams need
/// not exist.
async fn proxy() -> TestProxy {
    let nowhere = SocketAddr::from(([127, 0, 0, 1], 9));
    let routes = "[[routes]]\nname = \"reco\"\nmatch = { path_prefix = \"/\" }\n\
        stable = \"stable\"\ncanary = \"canary\"\ncanary_weight = 55.67\n\
        sticky = \"header:x-user-id\"\nsalt = \"reco-v2\"\n";
    TestProxy::start(&config(
        "",
        &[("stable", nowhere), ("canary", nowhere)],
        routes,
    ))
    .await
}

/// `explain` of route `reco` for a key as written in the query string.
async fn explain(admin: SocketAddr, encoded_key: String) -> serde_json::Value {
    admin_json(admin, &format!("/routes/reco/explain?key={encoded_key}")).await
}

#[tokio::test]
async fn explain_decodes_the_key_like_a_query_string() {
    let proxy = proxy().await;
    let explain = |key: &str| explain(proxy.admin, key.to_string());

    // The documented vector: Müller is in bucket 5567, in the canary from
    // 55.68 %; at 55.67 % it is still stable. (The literal text
    // `M%C3%BCller` would be bucket 5021, in the canary.)
    let muller = explain("M%C3%BCller").await;
    assert_eq!(muller["key"], "Müller");
    assert_eq!(muller["bucket"], 5567);
    assert_eq!(muller["canary_from_percent"], 55.68);
    assert_eq!(muller["arm"], "stable");
    assert_eq!(muller["canary_weight"], 55.67);
    assert_eq!(bucket("reco-v2", b"M%C3%BCller"), 5021);

    let plus = explain("a%2Bb").await;
    assert_eq!(plus["key"], "a+b");
    assert_eq!(plus["bucket"], bucket("reco-v2", b"a+b"));
    let space = explain("a+b").await;
    assert_eq!(space["key"], "a b");
    assert_eq!(space["bucket"], bucket("reco-v2", b"a b"));
    assert_ne!(plus["bucket"], space["bucket"]);
    let at = explain("user%40example.com").await;
    assert_eq!(at["key"], "user@example.com");
    // Unencoded keys are unchanged.
    let plain = explain("user-1").await;
    assert_eq!(plain["key"], "user-1");
    assert_eq!(plain["bucket"], bucket("reco-v2", b"user-1"));
}

#[tokio::test]
async fn keys_that_cannot_be_decoded_are_a_400_with_a_json_error() {
    let proxy = proxy().await;
    let c = client();
    for (query, says) in [
        ("key=%zz", "bad percent escape `%zz`"),
        ("key=50%", "bad percent escape `%`"),
        ("key=%ff", "not UTF-8"),
        ("key=%C3", "not UTF-8"),
        ("key=", "pass the sticky key as ?key=K"),
        ("id=1", "pass the sticky key as ?key=K"),
    ] {
        let url = format!("http://{}/routes/reco/explain?{query}", proxy.admin);
        let answer = get(&c, &url, &[]).await;
        assert_eq!(answer.status, 400, "{query}");
        assert_eq!(answer.header("content-type"), "application/json");
        let error = answer.json()["error"].as_str().unwrap_or("").to_string();
        assert!(error.contains(says), "{query}: {error}");
    }
    // The admin API still answers after them.
    assert_eq!(
        admin_json(proxy.admin, "/routes/reco/explain?key=user-1").await["key"],
        "user-1"
    );
}
