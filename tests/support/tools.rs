//! For the ecosystem tests: the real external tools (installed by
//! `scripts/ecosystem-tools.sh`; a missing one fails the test, never skips
//! it) and a real Prometheus process.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::eventually;
use super::http::{fetch, get, HttpClient};

/// A tool the ecosystem tests need, or a failure that says how to get it.
pub fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path).chain([PathBuf::from("/usr/local/bin")]) {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "`{name}` is not installed: run `bash scripts/ecosystem-tools.sh` (as root) first; \
         it installs prometheus/promtool and systemd from apt and kubernetes-validate from PyPI"
    );
}

/// Runs a command; returns its output whatever the exit status.
pub fn run(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"))
}

/// Runs a command and fails the test (with its output) unless it exits 0.
pub fn run_ok(cmd: &mut Command) -> Output {
    let shown = format!("{cmd:?}");
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A free loopback port (bound and released; Prometheus binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Percent-encodes a query-string value.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `GET url`, which must answer 200 with JSON (20 s at most).
pub async fn get_json(c: &HttpClient, url: &str) -> Value {
    let a = tokio::time::timeout(Duration::from_secs(20), get(c, url, &[]))
        .await
        .unwrap_or_else(|_| panic!("GET {url} timed out"));
    assert_eq!(a.status, 200, "GET {url}: {}", a.text());
    serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("GET {url}: not JSON ({e})"))
}

/// A real Prometheus process, killed on drop.
pub struct Prometheus {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Its stderr, for failure messages.
    pub log: PathBuf,
}

impl Prometheus {
    /// Starts `prometheus` with `config` (a file in `dir`), its TSDB in
    /// `dir/data`, on a free loopback port; waits (≤ 30 s) until it is ready.
    pub async fn start(dir: &Path, config: &Path, c: &HttpClient) -> Prometheus {
        let port = free_port();
        let log = dir.join("prometheus.err");
        let child = Command::new(tool("prometheus"))
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn prometheus");
        let mut p = Prometheus {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log,
        };
        let ready = format!("{}/-/ready", p.url);
        eventually(Duration::from_secs(30), "prometheus ready", || {
            let exited = p.child.try_wait().ok().flatten();
            let log = p.log_text();
            let (c, ready) = (c.clone(), ready.clone());
            async move {
                if let Some(status) = exited {
                    panic!("prometheus exited ({status}):\n{log}");
                }
                let answer = tokio::time::timeout(
                    Duration::from_secs(2),
                    fetch(&c, http::Method::GET, &ready, &[], None),
                )
                .await;
                match answer {
                    Ok(Ok(a)) if a.status == 200 => Ok(()),
                    other => Err(format!("{other:?}\n{log}")),
                }
            }
        })
        .await;
        p
    }

    /// What Prometheus logged.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query; returns `data.result` (a vector).
    pub async fn query(&self, c: &HttpClient, promql: &str) -> Vec<Value> {
        let url = format!("{}/api/v1/query?query={}", self.url, encode(promql));
        let v = get_json(c, &url).await;
        assert_eq!(v["status"], "success", "{promql}: {v}");
        assert_eq!(v["data"]["resultType"], "vector", "{promql}: {v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }

    /// The value of a one-series result, or `None` when there is no series.
    pub async fn scalar(&self, c: &HttpClient, promql: &str) -> Option<f64> {
        let r = self.query(c, promql).await;
        assert!(r.len() <= 1, "{promql} returned several series: {r:?}");
        r.first().map(sample_value)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of one result sample (`[ts, "v"]`).
pub fn sample_value(sample: &Value) -> f64 {
    sample["value"][1]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no value in {sample}"))
}

/// A label of one result sample.
pub fn label<'a>(sample: &'a Value, name: &str) -> &'a str {
    sample["metric"][name].as_str().unwrap_or("")
}
