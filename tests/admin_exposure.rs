//! The admin API is never exposed to the network without a token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use grayproxy::app::{App, StartError};

fn config(dir: &std::path::Path, admin: &str) -> std::path::PathBuf {
    let path = dir.join("grayproxy.toml");
    std::fs::write(
        &path,
        format!(
            r#"[server]
listen = "127.0.0.1:0"
[admin]
{admin}
[state]
dir = "state"
[upstreams.a]
endpoints = ["127.0.0.1:9"]
[[routes]]
name = "r"
stable = "a"
canary = "a"
"#
        ),
    )
    .unwrap();
    path
}

#[tokio::test]
async fn non_loopback_admin_without_token_refuses_to_start() {
    let dir = tempfile_dir("exposed");
    let path = config(&dir, r#"listen = "0.0.0.0:0""#);
    match App::start(&path).await {
        Err(StartError::UnprotectedAdmin(addr)) => assert_eq!(addr.to_string(), "0.0.0.0:0"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("an unprotected admin API on 0.0.0.0 must not start"),
    }
}

#[tokio::test]
async fn non_loopback_admin_with_token_and_loopback_without_start() {
    let dir = tempfile_dir("protected");
    std::fs::write(dir.join("admin.token"), "s3cret\n").unwrap();
    let path = config(&dir, "listen = \"0.0.0.0:0\"\ntoken_file = \"admin.token\"");
    let app = App::start(&path).await.unwrap();
    app.shutdown();
    app.wait().await;
    let path = config(&dir, r#"listen = "127.0.0.1:0""#);
    let app = App::start(&path).await.unwrap();
    app.shutdown();
    app.wait().await;
}

fn tempfile_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("grayproxy-admin-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
