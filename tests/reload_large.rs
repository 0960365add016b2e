//! A reload of a large file does not stall request serving: the file is
//! parsed, validated and indexed on a thread of its own while the proxy's
//! one worker (`workers = 1`) keeps answering on the old config. A reload
//! that ran on the worker would hold back every request until the new
//! config is swapped in, so a request sent once the reload has begun would
//! be answered by the new config.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::fmt::Write;
use std::time::Duration;

use support::{client, config, get, Binary, TempDir, TestUpstream};

/// Enough routes that the reload takes a good while in a debug build,
/// against a request's milliseconds.
const ROUTES: usize = 10_000;

/// The route `live` (`/live`, canary at `weight`) and `ROUTES` others.
fn routes(weight: &str) -> String {
    let mut text = format!(
        "[[routes]]\nname = \"live\"\nmatch = {{ path_prefix = \"/live\" }}\n\
         stable = \"stable\"\ncanary = \"canary\"\ncanary_weight = {weight}\n"
    );
    for i in 0..ROUTES {
        write!(
            text,
            "[[routes]]\nname = \"r{i}\"\nmatch = {{ path_prefix = \"/svc/{i}/\" }}\n\
             stable = \"stable\"\ncanary = \"canary\"\ncanary_weight = 5.0\n"
        )
        .unwrap();
    }
    text
}

/// Whether a JSON log line's message begins with `message`.
fn has(line: &str, message: &str) -> bool {
    serde_json::from_str::<serde_json::Value>(line).is_ok_and(|v| {
        v["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with(message))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_answered_on_the_old_config_while_a_large_file_reloads() {
    let stable = TestUpstream::spawn("stable").await;
    let canary = TestUpstream::spawn("canary").await;
    let ups = [("stable", stable.addr), ("canary", canary.addr)];
    let dir = TempDir::new();
    let path = dir.join("grayproxy.toml");
    std::fs::write(&path, config("workers = 1", &ups, &routes("0.0"))).unwrap();
    let mut proxy = Binary::start(&path);
    let c = client();
    let url = format!("http://{}/live", proxy.proxy);
    assert_eq!(get(&c, &url, &[]).await.arm(), "stable");

    // Everything to the canary. The watcher sees the rename (a SIGHUP
    // now could come second to it) and logs when the reload begins.
    let new = config("workers = 1", &ups, &routes("100.0"));
    std::fs::write(dir.join("next.toml"), &new).unwrap();
    std::fs::rename(dir.join("next.toml"), &path).unwrap();
    proxy.next_line(Duration::from_secs(30), |l| {
        has(l, "config file changed: reloading")
    });
    // The reload is under way on its thread (or, were it on the worker,
    // holding the worker): this request finds the worker free (or busy).
    let during = get(&c, &url, &[]).await;
    let reloaded = proxy
        .logs()
        .iter()
        .any(|l| has(l, "config reloaded") || has(l, "config rejected"));
    assert!(
        !reloaded,
        "the reload finished before a request sent right after it began was answered; \
         too small a file to tell, or the request waited for it: {:?}",
        proxy
            .logs()
            .iter()
            .filter(|l| l.contains("reload"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        during.arm(),
        "stable",
        "a request sent while the file was reloading was answered on the new config"
    );

    proxy.next_line(Duration::from_secs(60), |l| has(l, "config reloaded"));
    assert_eq!(get(&c, &url, &[]).await.arm(), "canary");
}
