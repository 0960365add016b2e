//! deploy/ checked by the real tools: promtool (config, rules, rule unit
//! tests), systemd-analyze (verify + offline security score), and
//! kubernetes-validate (every manifest against the Kubernetes schemas), plus
//! `grayproxy check` on the configs those artefacts ship. Install the tools
//! with `scripts/ecosystem-tools.sh`; a missing tool fails, never skips.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::tools::{run, run_ok, tool};
use support::{client, get, read, repo, Binary, TempDir, TestUpstream, BIN};

fn deploy(p: &str) -> PathBuf {
    repo().join("deploy").join(p)
}

fn files_in(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// `grayproxy check -c PATH` with the real binary.
fn grayproxy_check(path: &Path) -> String {
    let out = run_ok(Command::new(BIN).arg("check").arg("-c").arg(path));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `shutdown_grace` of a config text, via the real config parser.
fn shutdown_grace(text: &str, path: &Path) -> Duration {
    let loaded = grayproxy::config::parse(text, path)
        .unwrap_or_else(|e| panic!("{} does not parse:\n{e}", path.display()));
    loaded.config.server.shutdown_grace
}

// ---------------------------------------------------------------- Prometheus

#[test]
fn promtool_checks_the_scrape_config_and_its_rules() {
    let out = run_ok(
        Command::new(tool("promtool"))
            .args(["check", "config"])
            .arg(deploy("prometheus/prometheus.yml")),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS: 2 rule files found"), "{text}");
}

#[test]
fn promtool_checks_the_kubernetes_scrape_config_with_a_static_target() {
    // Debian's promtool is built without Kubernetes service discovery; swap
    // the SD block for a static target and check everything else as written.
    let text = read(&deploy("prometheus/prometheus-kubernetes.yml"));
    let sd = "    kubernetes_sd_configs:\n      - role: pod\n";
    assert!(
        text.contains(sd),
        "the kubernetes_sd_configs block moved; update this test"
    );
    let tmp = TempDir::new();
    std::fs::write(
        tmp.path().join("prometheus.yml"),
        text.replace(
            sd,
            "    static_configs:\n      - targets: [\"127.0.0.1:9901\"]\n",
        ),
    )
    .unwrap();
    std::fs::create_dir(tmp.path().join("rules")).unwrap();
    for rule in files_in(&deploy("prometheus/rules"), "yml") {
        std::fs::copy(
            &rule,
            tmp.path().join("rules").join(rule.file_name().unwrap()),
        )
        .unwrap();
    }
    run_ok(
        Command::new(tool("promtool"))
            .args(["check", "config"])
            .arg(tmp.path().join("prometheus.yml")),
    );
}

#[test]
fn promtool_checks_the_rules() {
    let rules = files_in(&deploy("prometheus/rules"), "yml");
    assert_eq!(rules.len(), 2, "{rules:?}");
    let out = run_ok(
        Command::new(tool("promtool"))
            .args(["check", "rules"])
            .args(&rules),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SUCCESS: 9 rules found"), "{text}");
    assert!(text.contains("SUCCESS: 6 rules found"), "{text}");
}

#[test]
fn promtool_rule_unit_tests_fire_each_alert_and_stay_quiet_on_healthy_series() {
    let tests = files_in(&deploy("prometheus/tests"), "yml");
    assert!(!tests.is_empty());
    run_ok(
        Command::new(tool("promtool"))
            .args(["test", "rules"])
            .args(&tests),
    );
    // Every alert in the rules file has a test that expects it to fire.
    let alerts = read(&deploy("prometheus/rules/grayproxy-alerts.yml"));
    let tested: String = tests.iter().map(|t| read(t)).collect();
    for line in alerts.lines() {
        if let Some(name) = line.trim().strip_prefix("- alert: ") {
            let fires = format!("alertname: {name}\n        exp_alerts:\n          - exp_labels:");
            assert!(tested.contains(&fires), "no promtool test fires {name}");
            let quiet = format!("alertname: {name}\n        exp_alerts: []");
            assert!(
                tested.contains(&quiet),
                "no promtool test keeps {name} quiet"
            );
        }
    }
}

// ------------------------------------------------------------------ systemd

#[test]
fn systemd_unit_verifies_and_scores_well() {
    let unit = read(&deploy("systemd/grayproxy.service"));
    // The unit names /usr/local/bin/grayproxy, which verify requires to
    // exist; point it at the binary cargo just built (a real grayproxy).
    assert!(unit.contains("ExecStart=/usr/local/bin/grayproxy run"));
    let tmp = TempDir::new();
    let path = tmp.path().join("grayproxy.service");
    std::fs::write(&path, unit.replace("/usr/local/bin/grayproxy", BIN)).unwrap();
    let out = run_ok(
        Command::new(tool("systemd-analyze"))
            .arg("verify")
            .arg(&path),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Unknown keys and bad values are warnings with exit 0: fail on them too.
    assert!(
        !stderr.contains("grayproxy"),
        "systemd-analyze verify complained:\n{stderr}"
    );

    let out = run_ok(
        Command::new(tool("systemd-analyze"))
            .args(["security", "--offline=yes", "--no-pager"])
            .arg(&path),
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for grayproxy.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(score <= 2.0, "exposure {score} > 2.0:\n{text}");

    for key in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=grayproxy",
        "ConfigurationDirectory=grayproxy",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "CapabilityBoundingSet=\n",
        "LimitNOFILE=",
    ] {
        assert!(unit.contains(key), "unit lacks {key:?}");
    }
}

#[test]
fn systemd_config_is_valid_and_fits_the_unit() {
    let config = deploy("systemd/grayproxy.toml");
    let summary = grayproxy_check(&config);
    assert!(summary.starts_with("ok:"), "{summary}");
    let text = read(&config);
    let loaded =
        grayproxy::config::parse(&text, Path::new("/etc/grayproxy/grayproxy.toml")).unwrap();
    let c = &loaded.config;
    assert_eq!(
        c.state.dir,
        Path::new("/var/lib/grayproxy"),
        "state.dir must be the StateDirectory"
    );
    assert_eq!(
        c.admin.token_file.as_deref(),
        Some(Path::new("/run/credentials/grayproxy.service/admin.token")),
        "token_file must be the LoadCredential path"
    );
    assert!(
        c.server.listen.port() >= 1024,
        "the unit grants no CAP_NET_BIND_SERVICE"
    );
    let unit = read(&deploy("systemd/grayproxy.service"));
    let stop: u64 = unit
        .lines()
        .find_map(|l| l.strip_prefix("TimeoutStopSec="))
        .and_then(|v| v.strip_suffix('s'))
        .and_then(|v| v.parse().ok())
        .expect("TimeoutStopSec=Ns");
    assert!(
        Duration::from_secs(stop) > shutdown_grace(&text, &config),
        "TimeoutStopSec must exceed shutdown_grace"
    );
}

// --------------------------------------------------------------- Kubernetes

/// Kubernetes versions the manifests are validated against: the oldest with
/// the preStop `sleep` action on by default, and the newest bundled.
const KUBE_VERSIONS: [&str; 2] = ["1.30.0", "1.37.0"];

#[test]
fn kubernetes_manifests_validate_against_the_schemas() {
    let manifests = files_in(&deploy("kubernetes"), "yaml");
    let names: Vec<_> = manifests
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for want in [
        "configmap.yaml",
        "deployment.yaml",
        "pdb.yaml",
        "secret.yaml",
        "service.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "missing {want} in {names:?}"
        );
    }
    for version in KUBE_VERSIONS {
        let out = run(Command::new(tool("kubernetes-validate"))
            .args(["--strict", "-k", version])
            .args(&manifests));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "kubernetes-validate {version}:\n{text}"
        );
        assert_eq!(
            text.matches(" passed for resource ").count(),
            manifests.len(),
            "every manifest must be validated against {version}:\n{text}"
        );
    }
}

#[test]
fn kubernetes_validator_rejects_a_broken_manifest() {
    // The validator is real: a typo in a field name fails under --strict.
    let text = read(&deploy("kubernetes/deployment.yaml"))
        .replace("readOnlyRootFilesystem", "readOnlyRootFilesytem");
    let tmp = TempDir::new();
    let bad = tmp.path().join("deployment.yaml");
    std::fs::write(&bad, text).unwrap();
    let out = run(Command::new(tool("kubernetes-validate"))
        .arg("--strict")
        .arg(&bad));
    assert!(!out.status.success());
}

/// The block scalar under `grayproxy.toml: |` in the ConfigMap.
fn configmap_toml() -> String {
    let text = read(&deploy("kubernetes/configmap.yaml"));
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != "grayproxy.toml: |")
        .skip(1);
    let first = lines.next().expect("grayproxy.toml block");
    let indent = first.len() - first.trim_start().len();
    let mut out = format!("{}\n", &first[indent..]);
    for l in lines {
        if l.trim().is_empty() {
            out.push('\n');
        } else if l.len() - l.trim_start().len() >= indent {
            out.push_str(&l[indent..]);
            out.push('\n');
        } else {
            break;
        }
    }
    out
}

/// The first integer after `key:` in a manifest.
fn yaml_int(text: &str, key: &str) -> u64 {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|v| v.trim().trim_matches('"').parse().ok())
        .unwrap_or_else(|| panic!("no {key} in manifest"))
}

#[test]
fn kubernetes_config_is_valid_and_fits_the_deployment() {
    let toml = configmap_toml();
    let tmp = TempDir::new();
    let path = tmp.path().join("grayproxy.toml");
    std::fs::write(&path, &toml).unwrap();
    let summary = grayproxy_check(&path);
    assert!(summary.starts_with("ok:"), "{summary}");

    let c = grayproxy::config::parse(&toml, Path::new("/etc/grayproxy/config/grayproxy.toml"))
        .unwrap()
        .config;
    let deployment = read(&deploy("kubernetes/deployment.yaml"));
    assert!(
        c.server.listen.ip().is_unspecified(),
        "the proxy must listen on 0.0.0.0 in a pod"
    );
    assert!(
        c.admin.token_file.is_some(),
        "admin on 0.0.0.0 needs a token"
    );
    assert!(c
        .admin
        .token_file
        .as_ref()
        .unwrap()
        .starts_with("/etc/grayproxy/secret"));
    assert!(deployment.contains("mountPath: /etc/grayproxy/secret"));
    assert!(deployment.contains(&format!("mountPath: {}", c.state.dir.display())));
    assert!(deployment.contains("\"-c\", \"/etc/grayproxy/config/grayproxy.toml\""));
    // No subPath: a subPath mount never sees ConfigMap updates.
    assert!(!deployment.contains("subPath"));

    let ports: Vec<u64> = deployment
        .lines()
        .filter_map(|l| l.trim().strip_prefix("containerPort:"))
        .map(|v| v.trim().parse().unwrap())
        .collect();
    assert_eq!(
        ports,
        [
            u64::from(c.server.listen.port()),
            u64::from(c.admin.listen.port())
        ],
        "containerPorts http, admin must match the config"
    );
    assert_eq!(
        yaml_int(&deployment, "prometheus.io/port:"),
        u64::from(c.admin.listen.port())
    );
    assert!(yaml_int(&deployment, "replicas:") >= 2);
    let grace = yaml_int(&deployment, "terminationGracePeriodSeconds:");
    let pre_stop = yaml_int(&deployment, "seconds:");
    assert!(
        Duration::from_secs(grace) > Duration::from_secs(pre_stop) + c.server.shutdown_grace,
        "terminationGracePeriodSeconds {grace} must exceed preStop {pre_stop} s + shutdown_grace"
    );
    for probe in [
        "path: /readyz",
        "path: /healthz",
        "readOnlyRootFilesystem: true",
        "runAsNonRoot: true",
    ] {
        assert!(deployment.contains(probe), "deployment lacks {probe}");
    }
    let pdb = read(&deploy("kubernetes/pdb.yaml"));
    assert!(pdb.contains("kind: PodDisruptionBudget") && pdb.contains("minAvailable: 1"));
}

/// The unit's `KEY=` line (the first one).
fn unit_line<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("unit has no {key}"))
}

/// Runs the unit's commands as systemd would (minus the sandbox, which needs
/// systemd as PID 1): ExecStartPre, ExecStart with the unit's arguments,
/// ExecReload with $MAINPID, then KillSignal; grayproxy must reload on the
/// signal and exit 0 within TimeoutStopSec.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_unit_commands_start_reload_and_stop_grayproxy() {
    let unit = read(&deploy("systemd/grayproxy.service"));
    let tmp = TempDir::new();
    let config = tmp.path().join("grayproxy.toml");
    // The shipped config, pointed at this sandbox: loopback port 0, a temp
    // state dir and token.
    let mut text = read(&deploy("systemd/grayproxy.toml"));
    let upstream = TestUpstream::spawn("reco").await;
    for (from, to) in [
        ("\"127.0.0.1:18081\"", format!("\"{}\"", upstream.addr)),
        ("\"127.0.0.1:18082\"", format!("\"{}\"", upstream.addr)),
        ("\"0.0.0.0:8080\"", "\"127.0.0.1:0\"".to_owned()),
        ("\"127.0.0.1:9901\"", "\"127.0.0.1:0\"".to_owned()),
        (
            "\"/var/lib/grayproxy\"",
            format!("{:?}", tmp.path().join("state")),
        ),
        (
            "\"/run/credentials/grayproxy.service/admin.token\"",
            format!("{:?}", tmp.path().join("admin.token")),
        ),
    ] {
        assert!(text.contains(from), "grayproxy.toml no longer has {from}");
        text = text.replace(from, &to);
    }
    std::fs::write(&config, text).unwrap();
    std::fs::write(tmp.path().join("admin.token"), "t0ken\n").unwrap();
    let args = |line: &str| -> Vec<String> {
        line.replace("/usr/local/bin/grayproxy", BIN)
            .replace("/etc/grayproxy/grayproxy.toml", config.to_str().unwrap())
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };

    let pre = args(unit_line(&unit, "ExecStartPre="));
    run_ok(Command::new(&pre[0]).args(&pre[1..]));

    let start = args(unit_line(&unit, "ExecStart="));
    let mut cmd = Command::new(&start[0]);
    for env in unit.lines().filter_map(|l| l.strip_prefix("Environment=")) {
        let (k, v) = env.split_once('=').unwrap();
        cmd.env(k, v);
    }
    assert_eq!(
        unit_line(&unit, "Environment=GRAYPROXY_ACCESS_LOG="),
        "0.01"
    );
    // Every request, so the one request below is logged.
    cmd.env("GRAYPROXY_ACCESS_LOG", "1");
    cmd.args(&start[1..]);
    // `--log-format json`: one JSON object per line, the addresses in the
    // "grayproxy listening" one.
    let mut proxy = Binary::spawn_listening(cmd);
    // The access log: one JSON line for the request, with the documented
    // fields.
    let c = client();
    let (proxy_addr, admin) = (proxy.proxy, proxy.admin);
    let answer = get(&c, &format!("http://{proxy_addr}/api/recommend/items"), &[]).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let access = next_json(&mut proxy, "target:access");
    let f = &access["fields"];
    assert_eq!(f["route"], "recommend", "{access}");
    assert_eq!(f["arm"], "stable", "{access}");
    assert_eq!(f["reason"], "no_sticky_key", "{access}");
    assert_eq!(f["status"], 200, "{access}");
    assert_eq!(f["upstream"], "reco-v1", "{access}");
    assert_eq!(f["fallback"], false, "{access}");
    assert!(f["duration_ms"].as_f64().is_some(), "{access}");

    let pid = proxy.pid().to_string();
    let reload: Vec<String> = unit_line(&unit, "ExecReload=")
        .replace("$MAINPID", &pid)
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    run_ok(Command::new(&reload[0]).args(&reload[1..]));
    next_json(&mut proxy, "config reloaded");
    let metrics = get(&c, &format!("http://{admin}/metrics"), &[])
        .await
        .text();
    assert!(
        metrics.contains("grayproxy_config_reloads_total{result=\"ok\"} 1"),
        "{metrics}"
    );

    assert_eq!(unit_line(&unit, "KillSignal="), "SIGTERM");
    run_ok(Command::new("/bin/kill").args(["-TERM", &pid]));
    let stop: u64 = unit_line(&unit, "TimeoutStopSec=")
        .trim_end_matches('s')
        .parse()
        .unwrap();
    let status = proxy.wait_exit(Duration::from_secs(stop)).await;
    assert!(status.success(), "exit status {status}");
}

/// The next JSON log line whose message contains `what` (or whose target
/// is `target:NAME`).
fn next_json(proxy: &mut Binary, what: &str) -> serde_json::Value {
    let line = proxy.next_line(Duration::from_secs(10), |line| {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
            return false;
        };
        match what.strip_prefix("target:") {
            Some(target) => v["target"] == target,
            None => v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(what)),
        }
    });
    serde_json::from_str(&line).unwrap()
}

// ------------------------------------------------------------------ Grafana

#[test]
fn grafana_dashboard_is_well_formed() {
    let text = read(&deploy("grafana/grayproxy.json"));
    let dash: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(dash["uid"], "grayproxy");
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "job", "route"]);
    let panels = dash["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut boxes: Vec<(u64, u64, u64, u64, String)> = Vec::new();
    for p in panels {
        let title = p["title"].as_str().unwrap().to_owned();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id in {title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().unwrap(),
            g["y"].as_u64().unwrap(),
            g["w"].as_u64().unwrap(),
            g["h"].as_u64().unwrap(),
        );
        assert!(x + w <= 24, "{title} is wider than the grid");
        for (bx, by, bw, bh, other) in &boxes {
            let overlap = x < bx + bw && *bx < x + w && y < by + bh && *by < y + h;
            assert!(!overlap, "{title} overlaps {other}");
        }
        boxes.push((x, y, w, h, title.clone()));
        if p["type"] == "row" {
            continue;
        }
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            let expr = t["expr"].as_str().unwrap();
            for var in expr.match_indices('$').map(|(i, _)| &expr[i + 1..]) {
                let name: String = var
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    vars.contains(&name.as_str()) || name == "__rate_interval",
                    "{title} uses unknown variable ${name}"
                );
            }
        }
    }
    // What the issue asks the dashboard to show.
    let titles: Vec<&str> = panels
        .iter()
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    for want in [
        "Requests/s by arm",
        "Error ratio by arm",
        "p99 latency by arm",
        "Canary weight",
        "Ramp state",
        "Fallbacks/s",
        "Config reloads",
    ] {
        assert!(titles.contains(&want), "no panel {want:?} in {titles:?}");
    }
}
