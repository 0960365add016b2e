//! `demo --fleet N`: the demo's proxy plus N-1 more replicas sharing one
//! ramp through an etcd the demo starts itself (Debian: `etcd-server`) on
//! free loopback ports, in the demo's temp dir, stopped at the end.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::app::{App, StartOptions};

/// The demo's own etcd; killed when dropped.
pub(super) struct DemoEtcd {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub(super) endpoint: String,
    port: u16,
}

impl Drop for DemoEtcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

impl DemoEtcd {
    /// Starts etcd with its data in `dir/etcd` and waits (≤ 15 s) until healthy.
    pub(super) async fn start(dir: &Path) -> Result<DemoEtcd, String> {
        let (client, peer) = (free_port()?, free_port()?);
        let data = dir.join("etcd");
        let c = format!("http://127.0.0.1:{client}");
        let p = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .arg("--name=demo")
            .arg(format!("--data-dir={}", data.display()))
            .arg(format!("--listen-client-urls={c}"))
            .arg(format!("--advertise-client-urls={c}"))
            .arg(format!("--listen-peer-urls={p}"))
            .arg(format!("--initial-advertise-peer-urls={p}"))
            .arg(format!("--initial-cluster=demo={p}"))
            .arg("--log-level=error")
            .arg("--logger=zap")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("--fleet needs etcd on PATH (Debian: apt-get install etcd-server): {e}")
            })?;
        let etcd = DemoEtcd {
            child,
            endpoint: c,
            port: client,
        };
        for _ in 0..150 {
            if etcd.healthy().await {
                return Ok(etcd);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err("the demo's etcd did not become healthy within 15 s".into())
    }

    async fn healthy(&self) -> bool {
        let get = async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
            s.write_all(b"GET /health HTTP/1.1\r\nHost: etcd\r\nConnection: close\r\n\r\n")
                .await?;
            let mut out = String::new();
            s.read_to_string(&mut out).await?;
            Ok::<_, std::io::Error>(out)
        };
        matches!(
            tokio::time::timeout(Duration::from_secs(1), get).await,
            Ok(Ok(body)) if body.contains("\"health\":\"true\"")
        )
    }

    /// The `[fleet]` section for replica `n`.
    pub(super) fn section(&self, n: usize) -> String {
        format!(
            "\n[fleet]\netcd = [\"{}\"]\nprefix = \"/grayproxy/demo\"\nreplica = \"demo-{n}\"\nlease_ttl = \"3s\"\n",
            self.endpoint
        )
    }

    /// Replicas 2..=`count`, each in `dir/replica-N` with the same config
    /// (`base`, without `[fleet]`) and the demo's admin token.
    pub(super) async fn replicas(
        &self,
        dir: &Path,
        base: &str,
        count: usize,
        options: &StartOptions,
    ) -> Result<Vec<App>, String> {
        let mut apps = Vec::new();
        for n in 2..=count {
            let d = dir.join(format!("replica-{n}"));
            let config = d.join("grayproxy.toml");
            std::fs::create_dir_all(&d)
                .and_then(|()| std::fs::copy(dir.join("admin.token"), d.join("admin.token")))
                .and_then(|_| std::fs::write(&config, format!("{base}{}", self.section(n))))
                .map_err(|e| format!("cannot write replica {n}'s config: {e}"))?;
            let app = App::start_with(&config, options.clone())
                .await
                .map_err(|e| format!("replica {n}: {e}"))?;
            apps.push(app);
        }
        Ok(apps)
    }
}
