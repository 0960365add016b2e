//! A real etcd for the fleet tests: Debian's `etcd` (package etcd-server,
//! installed by scripts/fleet-tools.sh) on free loopback ports with a
//! temporary data dir. One per test file (tests in a file use distinct key
//! prefixes), stopped by PID. A missing etcd fails the test, never skips it.
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// A running etcd.
pub struct Etcd {
    /// `http://127.0.0.1:PORT`.
    pub endpoint: String,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    /// The watchdog shell and etcd's PID; the shell kills etcd when our
    /// end of its stdin closes (this process exited, even by a panic).
    run: Mutex<Option<(Child, ChildStdin, u32)>>,
}

static ETCD: OnceLock<Etcd> = OnceLock::new();

/// The test file's shared etcd, started on first use.
pub fn etcd() -> &'static Etcd {
    ETCD.get_or_init(Etcd::start)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Etcd {
    /// Starts a new etcd (its own data dir and ports).
    pub fn start() -> Etcd {
        let status = Command::new("etcd").arg("--version").output();
        assert!(
            status.is_ok_and(|o| o.status.success()),
            "etcd is not installed: run scripts/fleet-tools.sh (Debian package etcd-server)"
        );
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "grayproxy-etcd-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (client_port, peer_port) = (free_port(), free_port());
        let e = Etcd {
            endpoint: format!("http://127.0.0.1:{client_port}"),
            client_port,
            peer_port,
            dir,
            run: Mutex::new(None),
        };
        e.resume();
        e
    }

    /// (Re)starts etcd on the same ports and data (after `stop`).
    ///
    /// The watchdog shell removes the data dir (≈ 120 MB, mostly the
    /// preallocated WAL) when this process ends, unless `keep` marks a
    /// [`Etcd::stop`] that a `resume` will follow.
    pub fn resume(&self) {
        let _ = std::fs::remove_file(self.dir.join("keep"));
        let (c, p) = (self.client_port, self.peer_port);
        let cmd = format!(
            "etcd --name t --data-dir '{dir}/data' \
             --listen-client-urls http://127.0.0.1:{c} --advertise-client-urls http://127.0.0.1:{c} \
             --listen-peer-urls http://127.0.0.1:{p} --initial-advertise-peer-urls http://127.0.0.1:{p} \
             --initial-cluster t=http://127.0.0.1:{p} --log-level error --logger zap \
             >>'{dir}/etcd.log' 2>&1 & pid=$!; echo $pid; cat >/dev/null; kill -9 $pid 2>/dev/null; \
             [ -e '{dir}/keep' ] || rm -rf '{dir}'",
            dir = self.dir.display()
        );
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let pid: u32 = line.trim().parse().unwrap();
        *self.run.lock().unwrap() = Some((child, stdin, pid));
        self.wait_healthy();
    }

    /// etcd's own `/health` says `"health":"true"`.
    pub fn healthy(&self) -> bool {
        let get = || -> std::io::Result<String> {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", self.client_port))?;
            s.set_read_timeout(Some(Duration::from_secs(1)))?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            Ok(out)
        };
        get().is_ok_and(|r| r.contains("\"health\":\"true\""))
    }

    fn wait_healthy(&self) {
        for _ in 0..200 {
            if self.healthy() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(self.dir.join("etcd.log")).unwrap_or_default();
        panic!("etcd did not become healthy within 20 s; its log:\n{log}");
    }

    /// Stops etcd by PID (SIGKILL: an outage, not a clean shutdown).
    pub fn stop(&self) {
        if let Some((mut child, stdin, pid)) = self.run.lock().unwrap().take() {
            // The data outlives this etcd: `resume` starts on it.
            std::fs::write(self.dir.join("keep"), b"").unwrap();
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
            drop(stdin);
            let _ = child.wait();
        }
    }

    /// A `[fleet]` section for this etcd.
    pub fn fleet_toml(&self, prefix: &str, replica: &str, ttl_s: u64) -> String {
        format!(
            "[fleet]\netcd = [\"{}\"]\nprefix = \"{prefix}\"\nreplica = \"{replica}\"\nlease_ttl = \"{ttl_s}s\"\n",
            self.endpoint
        )
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Polls the synchronous check `f` every 20 ms until it returns `Some`, for
/// at most `limit`; `None` then, so the caller fails with its own context
/// (the kit's [`super::eventually`] takes async checks and fails itself).
pub async fn poll_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// p50, p99 and max of `v` (sorted in place).
pub fn percentiles(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| v[((v.len() as f64 - 1.0) * q).round() as usize];
    (at(0.5), at(0.99), at(1.0))
}
