//! The real `grayproxy` executable: [`Binary`] runs it as a child process
//! (`run`, `demo`, or a command line taken from a deployment file) and
//! reads its output line by line; [`run_cli`] runs a one-shot verb.

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_grayproxy");

/// What a finished `grayproxy` command printed.
#[derive(Debug)]
pub struct CliOutput {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// Exited 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Runs `grayproxy ARGS` in `dir` to completion with `env` set, as a user
/// would: no `RUST_LOG`, no admin token from the test's environment.
pub fn run_cli(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("GRAYPROXY_ADMIN_TOKEN")
        .envs(env.iter().copied())
        .output()
        .unwrap();
    CliOutput {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A running grayproxy process; killed when dropped.
pub struct Binary {
    child: Child,
    /// The proxy's bound address (after [`Binary::start`]).
    pub proxy: SocketAddr,
    /// The admin API's bound address (after [`Binary::start`]).
    pub admin: SocketAddr,
    /// Lines of stdout and stderr, in arrival order, not yet taken by
    /// [`Binary::next_line`].
    lines: mpsc::Receiver<String>,
    /// Every line so far.
    logs: Arc<Mutex<Vec<String>>>,
}

impl Binary {
    /// Starts `grayproxy --log-format json run -c PATH` and waits (≤ 30 s)
    /// for the log line that says where it listens.
    pub fn start(config: &Path) -> Binary {
        let mut cmd = Command::new(BIN);
        cmd.args(["--log-format", "json", "run", "-c"])
            .arg(config)
            .env("RUST_LOG", "info");
        Binary::spawn_listening(cmd)
    }

    /// Spawns `cmd` (a grayproxy command line that logs JSON, e.g. one taken
    /// from a service unit) and waits (≤ 30 s) for its "grayproxy listening"
    /// line.
    pub fn spawn_listening(cmd: Command) -> Binary {
        let mut binary = Binary::spawn(cmd);
        let line = binary.next_line(Duration::from_secs(30), |l| listening(l).is_some());
        (binary.proxy, binary.admin) = listening(&line).unwrap();
        binary
    }

    /// Spawns `cmd` with stdout and stderr captured, without the test's
    /// admin token in its environment; addresses are unknown (0.0.0.0:0).
    pub fn spawn(mut cmd: Command) -> Binary {
        let mut child = cmd
            .env_remove("GRAYPROXY_ADMIN_TOKEN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
        let (tx, lines) = mpsc::channel();
        let logs = Arc::new(Mutex::new(Vec::new()));
        // Keep draining both pipes for the whole life of the child so it
        // never blocks on a full pipe.
        drain(child.stdout.take().unwrap(), tx.clone(), logs.clone());
        drain(child.stderr.take().unwrap(), tx, logs.clone());
        let unknown = SocketAddr::from(([0, 0, 0, 0], 0));
        Binary {
            child,
            proxy: unknown,
            admin: unknown,
            lines,
            logs,
        }
    }

    /// Waits (≤ `within`) for the next line that `matches`; lines before it
    /// are passed over (they stay in [`Binary::logs`]).
    pub fn next_line(&mut self, within: Duration, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if matches(&line) => return line,
                Ok(_) => {}
                Err(_) => panic!(
                    "no such line within {within:?} (or the output ended); output so far:\n{}",
                    self.logs().join("\n")
                ),
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

    /// `kill -9` and reap: no drain, no goodbye.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Every output line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits (≤ `within`) for the process to exit; panics with its output
    /// if it does not. Blocks the thread: call it from a plain `#[test]` or
    /// through [`Binary::wait_exit`].
    pub fn wait_exit_blocking(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Let the drain threads deliver the last lines.
                while self.lines.recv_timeout(Duration::from_secs(2)).is_ok() {}
                return status;
            }
            // Wake on the next line or every 50 ms, whichever comes first.
            if Instant::now() >= deadline {
                panic!(
                    "grayproxy did not exit within {within:?}; output:\n{}",
                    self.logs().join("\n")
                );
            }
            let _ = self.lines.recv_timeout(Duration::from_millis(50));
        }
    }

    /// [`Binary::wait_exit_blocking`] off the async runtime's threads.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        tokio::task::block_in_place(|| self.wait_exit_blocking(within))
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

/// Forwards the lines of `pipe` to `tx` and keeps them in `logs`.
fn drain(
    pipe: impl Read + Send + 'static,
    tx: mpsc::Sender<String>,
    logs: Arc<Mutex<Vec<String>>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            logs.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
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
