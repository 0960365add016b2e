//! `grayproxy demo` and `grayproxy status`, driven through the real binary:
//! a canary failing 30 % of its requests is rolled back, a healthy one is
//! promoted, and `status` renders a running proxy's `/status`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_grayproxy");

/// A child whose stdout lines arrive on a channel; killed when dropped.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(args: &[&str]) -> Running {
        let mut child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the grayproxy binary must start");
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits (bounded) for a line containing `needle`; returns it.
    fn line_with(&mut self, needle: &str, within: Duration) -> String {
        let deadline = std::time::SystemTime::now() + within;
        loop {
            let left = deadline
                .duration_since(std::time::SystemTime::now())
                .unwrap_or_else(|_| {
                    panic!(
                        "no line with {needle:?} within {within:?}; output so far:\n{}",
                        self.seen.join("\n")
                    )
                });
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {within:?} (or the output ended); output so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Waits (bounded) for the exit; returns the code and the rest of the output.
    fn finish(&mut self, within: Duration) -> (Option<i32>, String) {
        let deadline = std::time::SystemTime::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(2)) {
                    self.seen.push(line);
                }
                return (status.code(), self.seen.join("\n"));
            }
            while let Ok(line) = self.lines.try_recv() {
                self.seen.push(line);
            }
            assert!(
                std::time::SystemTime::now() < deadline,
                "still running after {within:?}; output so far:\n{}",
                self.seen.join("\n")
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `http://ADDR` from the banner line `  admin   http://ADDR   (...)`.
fn admin_url(line: &str) -> String {
    line.split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_string()
}

fn status_once(admin: &str) -> (Option<i32>, String, String) {
    let out = Command::new(BIN)
        .args(["status", "--admin", admin])
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_canary_failing_30_percent_is_rolled_back() {
    let mut demo = Running::spawn(&["demo", "--canary-error-rate", "0.3", "--duration", "3m"]);
    let (code, out) = demo.finish(Duration::from_secs(150));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("result: ROLLED BACK"), "{out}");
    // The audit summary: baseline, ramp start, then the judge's rollback with its evidence.
    let audit = out.split("audit log (").nth(1).expect("an audit summary");
    assert!(audit.contains("baseline_started"), "{audit}");
    let rollback = audit
        .lines()
        .find(|l| l.contains(" rollback "))
        .expect("a rollback line");
    assert!(
        rollback.contains("(judge) canary shown worse"),
        "{rollback}"
    );
    assert!(
        rollback.contains("E ") && rollback.contains("canary "),
        "{rollback}"
    );
    assert!(!audit.contains(" promote "), "{audit}");
    // The final view: weight 0, rolled back.
    assert!(out.contains("state  rolled_back"), "{out}");
    assert!(out.contains("  0.00%"), "{out}");
}

#[test]
fn a_healthy_canary_is_promoted_and_status_shows_the_ramp() {
    let mut demo = Running::spawn(&["demo", "--duration", "4m"]);
    let admin = admin_url(&demo.line_with("admin   http://", Duration::from_secs(60)));
    assert!(demo
        .seen
        .iter()
        .any(|l| l.contains("proxy   http://127.0.0.1:")));

    // `status` once, against the running proxy.
    let (code, out, err) = status_once(&admin);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("route recommend\n"), "{out}");
    assert!(out.contains("  canary ["), "{out}");
    assert!(out.contains("stable") && out.contains("p99"), "{out}");

    // `status --watch` redraws (ANSI clear) every second.
    let mut watch = Command::new(BIN)
        .args(["status", "--admin", &admin, "--watch"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = watch.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut frames = Vec::new();
    let deadline = std::time::SystemTime::now() + Duration::from_secs(20);
    while String::from_utf8_lossy(&frames).matches("\x1b[2J").count() < 2 {
        assert!(
            std::time::SystemTime::now() < deadline,
            "no 2 frames in 20 s"
        );
        if let Ok(b) = rx.recv_timeout(Duration::from_secs(1)) {
            frames.extend(b);
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(String::from_utf8_lossy(&frames).contains("route recommend"));

    let (code, out) = demo.finish(Duration::from_secs(230));
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("result: PROMOTED"), "{out}");
    let audit = out.split("audit log (").nth(1).expect("an audit summary");
    let advances = audit.lines().filter(|l| l.contains(" advance ")).count();
    assert_eq!(
        advances, 4,
        "1 → 5 → 10 → 25 → 50 %, then promote:\n{audit}"
    );
    assert!(audit.contains(" promote "), "{audit}");
    assert!(!audit.contains(" rollback "), "{audit}");
    assert!(out.contains("100.00%"), "{out}");
}

#[test]
fn status_without_a_proxy_says_so() {
    // A port nothing listens on: bind one, note it, close it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (code, out, err) = status_once(&format!("http://{addr}"));
    assert_eq!(code, Some(1), "{out}");
    assert!(err.contains("cannot reach the admin API"), "{err}");
}

#[test]
fn demo_rejects_bad_flags() {
    let out = Command::new(BIN)
        .args(["demo", "--canary-error-rate", "1.5", "--rps", "0"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--canary-error-rate 1.5 is outside 0..=1"),
        "{err}"
    );
    assert!(err.contains("--rps 0 must be in"), "{err}");
}

#[test]
fn demo_ends_at_its_duration_with_exit_0() {
    let mut demo = Running::spawn(&["demo", "--duration", "3s"]);
    let (code, out) = demo.finish(Duration::from_secs(60));
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("result: no decision within --duration"),
        "{out}"
    );
    assert!(out.contains("the ramp was baseline"), "{out}");
}
