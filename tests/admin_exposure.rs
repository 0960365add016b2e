//! The admin API is never exposed to the network without a token.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use grayproxy::app::{App, StartError};
use support::{TempDir, Toml};

/// A config whose `[admin]` table is `admin` (listen included).
fn config(dir: &TempDir, admin: &str) -> std::path::PathBuf {
    let path = dir.join("grayproxy.toml");
    let text = Toml::new()
        .upstream("a", &["127.0.0.1:9".parse().unwrap()], "")
        .routes("[[routes]]\nname = \"r\"\nstable = \"a\"\ncanary = \"a\"\n")
        .build()
        .replacen(
            "[admin]\nlisten = \"127.0.0.1:0\"\n",
            &format!("[admin]\n{admin}\n"),
            1,
        );
    assert!(text.contains(admin), "{text}");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn non_loopback_admin_without_token_refuses_to_start() {
    let dir = TempDir::new();
    let path = config(&dir, r#"listen = "0.0.0.0:0""#);
    match App::start(&path).await {
        Err(StartError::UnprotectedAdmin(addr)) => assert_eq!(addr.to_string(), "0.0.0.0:0"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("an unprotected admin API on 0.0.0.0 must not start"),
    }
}

#[tokio::test]
async fn non_loopback_admin_with_token_and_loopback_without_start() {
    let dir = TempDir::new();
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
