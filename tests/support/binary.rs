//! The real `grayproxy` binary as a child process: started with
//! `--log-format json`, its bound addresses read from the
//! "grayproxy listening" log line, signalled with `kill`.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_grayproxy");

/// Runs `grayproxy ARGS` in `dir` to completion (no `RUST_LOG`, as a user would).
pub fn run_cli(dir: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

/// A running `grayproxy run`.
pub struct Binary {
    child: Child,
    /// The proxy's bound address.
    pub proxy: SocketAddr,
    /// The admin API's bound address.
    pub admin: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    /// Starts `grayproxy --log-format json run -c PATH` and waits (≤ 30 s)
    /// for the line that says where it listens.
    pub fn start(config: &Path) -> Binary {
        let mut child = Command::new(BIN)
            .args(["--log-format", "json", "run", "-c"])
            .arg(config)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel::<(SocketAddr, SocketAddr)>();
        let sink = logs.clone();
        // Keep draining stderr for the whole life of the child so it never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(addrs) = listening(&line) {
                    let _ = tx.send(addrs);
                }
                sink.lock().unwrap().push(line);
            }
        });
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok((proxy, admin)) => Binary {
                child,
                proxy,
                admin,
                logs,
            },
            Err(_) => {
                let _ = child.kill();
                panic!(
                    "grayproxy did not report its addresses; logs:\n{}",
                    logs.lock().unwrap().join("\n")
                );
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal (`HUP`, `TERM`, ...) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (≤ `timeout`) for the process to exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "grayproxy did not exit within {timeout:?}; logs:\n{}",
                    self.logs().join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The addresses of a JSON "grayproxy listening" log line.
fn listening(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = &v["fields"];
    if fields["message"] != "grayproxy listening" {
        return None;
    }
    let proxy = fields["proxy"].as_str()?.parse().ok()?;
    let admin = fields["admin"].as_str()?.parse().ok()?;
    Some((proxy, admin))
}
