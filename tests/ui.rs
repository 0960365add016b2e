//! The web UI in a real browser: Debian's `chromium` driven over WebDriver
//! (`chromedriver`, installed by `scripts/ui-tools.sh`) from Rust with
//! `fantoccini`, against the real app with a ramp under real traffic.
//!
//! Without chromium or chromedriver these tests FAIL (they never skip):
//! run `bash scripts/ui-tools.sh` first (`scripts/test.sh` does).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use http::{Method, StatusCode};
use serde_json::{json, Value};
use support::ramp::{backends, Traffic, FAST, TOKEN};
use support::{admin_json, client, eventually, fetch, HttpClient, TempDir, TestProxy};
use tokio::time::Instant;

/// A route name and a state directory full of markup: shown as text or
/// not at all, never as elements.
const MARKUP_ROUTE: &str = "<img src=x onerror=alert(1)> & \"q\"";
const MARKUP_DIR: &str = "state <img src=y onerror=alert(2)>";

/// `chromedriver` on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
    profile: TempDir,
}

impl Driver {
    async fn start() -> Driver {
        for tool in ["chromedriver", "chromium"] {
            let found = Command::new(tool)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                found,
                "`{tool}` is missing: the web UI tests need Debian's chromium and \
                 chromium-driver; run `bash scripts/ui-tools.sh` (scripts/test.sh does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let c = client();
        let status = format!("{url}/status");
        eventually(Duration::from_secs(20), "chromedriver answers", || async {
            fetch(&c, Method::GET, &status, &[], None).await.map(|_| ())
        })
        .await;
        Driver {
            child,
            url,
            profile: TempDir::new(),
        }
    }

    /// A fresh headless chromium session.
    async fn browser(&self) -> Client {
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1000",
            &format!("--user-data-dir={}", self.profile.path().display()),
        ];
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "args": args, "binary": chromium_binary() }),
        );
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a chromium session")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real binary behind Debian's `/usr/bin/chromium` wrapper script.
fn chromium_binary() -> String {
    let direct = Path::new("/usr/lib/chromium/chromium");
    if direct.exists() {
        direct.display().to_string()
    } else {
        "chromium".into()
    }
}

/// Runs `script` in the page and returns its value.
async fn js(b: &Client, script: &str) -> Value {
    b.execute(script, vec![]).await.expect(script)
}

/// Polls the page until `script` returns a truthy value.
async fn until(b: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let v = js(b, script).await;
        if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) {
            return v;
        }
        if Instant::now() > deadline {
            let problem = js(b, "return document.getElementById('problem').textContent").await;
            panic!("timed out waiting for {what} (page problem: {problem})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The page reported no script error and no policy violation.
async fn assert_no_page_errors(b: &Client) {
    let errors = js(b, "return document.body.dataset.pageErrors || null").await;
    let problem = js(b, "return document.getElementById('problem').textContent").await;
    assert!(errors.is_null(), "page errors: {errors} ({problem})");
}

/// Clicks the first element found at `at`.
async fn click(b: &Client, at: Locator<'_>) {
    b.find(at).await.unwrap().click().await.unwrap();
}

/// Types `text` into the element with id `id`.
async fn type_into(b: &Client, id: &str, text: &str) {
    b.find(Locator::Id(id))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
}

/// Waits until the open detail row's answers mention `word`; returns their text.
async fn answer_with(b: &Client, what: &str, word: &str) -> Value {
    let answer = "return [...document.querySelectorAll('tr.detail-row .answer')].map(a => a.textContent).join('|')";
    until(
        b,
        what,
        &format!("const t = (() => {{ {answer} }})(); return t.includes('{word}') && t"),
    )
    .await
}

fn config(dir: &TempDir, stable: SocketAddr, canary: SocketAddr, routes: &str) -> PathBuf {
    std::fs::write(dir.join("admin.token"), format!("{TOKEN}\n")).unwrap();
    let text = format!(
        r#"[server]
listen = "127.0.0.1:0"
workers = 2
[admin]
listen = "127.0.0.1:0"
token_file = "admin.token"
[state]
dir = {dir:?}
[upstreams.v1]
endpoints = ["{stable}"]
[upstreams.v2]
endpoints = ["{canary}"]
{routes}"#,
        dir = MARKUP_DIR,
    );
    let path = dir.join("grayproxy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn route(name: &str, prefix: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = {name:?}\nmatch = {{ path_prefix = {prefix:?} }}\nstable = \"v1\"\n\
         canary = \"v2\"\nsticky = \"header:x-user-id\"\nfallback = false\n{extra}\n"
    )
}

async fn admin_get(c: &HttpClient, admin: SocketAddr, path: &str) -> (StatusCode, String) {
    let a = fetch(c, Method::GET, &format!("http://{admin}{path}"), &[], None)
        .await
        .unwrap();
    (a.status, a.text())
}

async fn status(admin: SocketAddr) -> Value {
    admin_json(admin, "/status").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_every_ramp_and_acts_only_with_the_token() {
    let driver = Driver::start().await;
    let (stable, canary) = backends(0.0, 0.0, 0).await;
    let dir = TempDir::new();
    let ramp = format!("[routes.ramp]\nsteps = [5, 50, 100]\nmin_requests = 1000000\n{FAST}");
    let routes = [
        route("recommend", "/api", &ramp),
        route(MARKUP_ROUTE, "/m", &ramp),
        route("fixed", "/f", "canary_weight = 25.0"),
    ]
    .concat();
    let path = config(&dir, stable.addr, canary.addr, &routes);
    // The markup route's stored state is corrupt: its ramp pauses with a
    // reason naming the file, in a directory whose name is markup.
    let state_dir = dir.join(MARKUP_DIR);
    std::fs::create_dir_all(&state_dir).unwrap();
    let stem = grayproxy::persist::file_stem(MARKUP_ROUTE);
    std::fs::write(state_dir.join(format!("{stem}.ramp.json")), "{ torn").unwrap();

    let p = TestProxy::open(&path).await;
    let admin = p.admin;
    let c = client();
    let _traffic = Traffic::start(p.proxy, 200.0);
    eventually(
        Duration::from_secs(30),
        "recommend progressing at 5 %",
        || async {
            let st = status(admin).await;
            (st["routes"][0]["ramp"]["state"] == "progressing").then_some(())
        },
    )
    .await;

    let b = driver.browser().await;
    b.goto(&format!("http://{admin}/ui")).await.unwrap();
    until(
        &b,
        "three route rows",
        "return document.querySelectorAll('tr.route').length === 3",
    )
    .await;

    // Every route with the weight /status gives it, names as plain text.
    let st = status(admin).await;
    let shown = js(
        &b,
        "return [...document.querySelectorAll('tr.route')].map(r => \
        [r.querySelector('td.name').textContent, Number(r.dataset.weight), \
         r.querySelector('td.weight .pct').textContent])",
    )
    .await;
    let shown = shown.as_array().unwrap();
    for (i, r) in st["routes"].as_array().unwrap().iter().enumerate() {
        assert_eq!(shown[i][0], r["name"], "{shown:?}");
        assert_eq!(
            shown[i][1].as_f64(),
            r["canary_weight"].as_f64(),
            "{shown:?}"
        );
    }
    assert_eq!(shown[0][1].as_f64(), Some(5.0));
    assert_eq!(shown[0][2], "5.00%");
    assert_eq!(shown[2][1].as_f64(), Some(25.0));
    assert_eq!(shown[1][0], MARKUP_ROUTE);

    // The markup route: its name and its decision's reason are text.
    let rows = b.find_all(Locator::Css("tr.route")).await.unwrap();
    rows[1].click().await.unwrap();
    let reason = until(
        &b,
        "the markup route's pause reason",
        "return [...document.querySelectorAll('td.reason')]\
        .map(td => td.textContent).find(t => t.includes('corrupt')) || null",
    )
    .await;
    assert!(reason.as_str().unwrap().contains(MARKUP_DIR), "{reason}");
    let images = js(
        &b,
        "return document.querySelectorAll('img, [onerror]').length",
    )
    .await;
    assert_eq!(images, 0, "markup from data became elements");

    // The ramping route: a point per tick on the weight chart.
    rows[0].click().await.unwrap();
    let chart = "document.querySelector('tr.detail-row svg.weight')";
    until(
        &b,
        "a weight chart with 10 points",
        &format!(
            "const s = {chart}; \
        return s && Number(s.dataset.points) >= 10"
        ),
    )
    .await;
    let (points, last_ms) = {
        let v = js(
            &b,
            &format!(
                "const s = {chart}; return [s.querySelector('polyline').getAttribute('points')\
            .trim().split(/\\s+/).length, Number(s.dataset.lastMs), Number(s.dataset.points)]"
            ),
        )
        .await;
        assert_eq!(v[0], v[2], "polyline points vs data-points");
        (v[0].as_u64().unwrap(), v[1].as_u64().unwrap())
    };
    let (code, body) = admin_get(&c, admin, "/routes/recommend/history").await;
    assert_eq!(code, StatusCode::OK);
    let h: Value = serde_json::from_str(&body).unwrap();
    let ticks_then = h["ticks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["at_ms"].as_u64().unwrap() <= last_ms)
        .count() as u64;
    assert_eq!(
        points, ticks_then,
        "one point per tick up to the page's last tick"
    );
    let evidence_lines = js(
        &b,
        "return document.querySelectorAll('tr.detail-row svg.evidence polyline').length",
    )
    .await;
    assert_eq!(evidence_lines, 3, "E combined, E errors, E slow");
    let decisions = js(
        &b,
        "return document.querySelectorAll('tr.detail-row svg.weight circle.decision').length",
    )
    .await;
    assert!(decisions.as_u64().unwrap() >= 1, "ramp_started is marked");

    // A screenshot of the page during the ramp: docs/ui.png (shown in the
    // README) when GRAYPROXY_UI_SCREENSHOT=1, so ordinary runs leave the
    // work tree clean; otherwise beside the test binaries.
    let png = b.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    let shot = if std::env::var_os("GRAYPROXY_UI_SCREENSHOT").is_some_and(|v| v == "1") {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ui.png")
    } else {
        Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui.png")
    };
    std::fs::write(&shot, &png).unwrap();

    // No token: the page asks for it and sends nothing.
    let pause = "tr.detail-row button[data-action=pause]";
    click(&b, Locator::Css(pause)).await;
    let asked = answer_with(&b, "the page asking for the token", "token").await;
    assert!(
        asked.as_str().unwrap().contains("enter the admin token"),
        "{asked}"
    );

    // A wrong token: the API's refusal is shown; the ramp goes on.
    type_into(&b, "token", "wrong-token").await;
    click(&b, Locator::Id("token-set")).await;
    let stored = js(&b, "return [sessionStorage.getItem('grayproxy.admin-token'), localStorage.length, location.href]").await;
    assert_eq!(stored[0], "wrong-token");
    assert_eq!(stored[1], 0, "nothing in localStorage");
    assert!(!stored[2].as_str().unwrap().contains("token"), "{stored}");
    click(&b, Locator::Css(pause)).await;
    let refused = answer_with(&b, "the refusal", "refused").await;
    assert!(refused.as_str().unwrap().contains("HTTP 401"), "{refused}");
    assert_eq!(
        status(admin).await["routes"][0]["ramp"]["state"],
        "progressing"
    );

    // The right token pauses the ramp.
    click(&b, Locator::Id("token-clear")).await;
    type_into(&b, "token", TOKEN).await;
    click(&b, Locator::Id("token-set")).await;
    click(&b, Locator::Css(pause)).await;
    let done = answer_with(&b, "the pause answer", "done").await;
    assert!(
        done.as_str().unwrap().contains("pause done: paused"),
        "{done}"
    );
    assert_eq!(status(admin).await["routes"][0]["ramp"]["state"], "paused");
    until(
        &b,
        "the paused badge",
        "return document.querySelector('tr.route td.state .badge').textContent === 'paused'",
    )
    .await;

    let images = js(
        &b,
        "return document.querySelectorAll('img, [onerror]').length",
    )
    .await;
    assert_eq!(images, 0);
    assert_no_page_errors(&b).await;
    b.close().await.unwrap();
    p.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_stays_quick_with_200_routes() {
    let driver = Driver::start().await;
    let (stable, canary) = backends(0.0, 0.0, 0).await;
    let dir = TempDir::new();
    let ramp = "[routes.ramp]\nsteps = [5, 50, 100]\ntick = \"1s\"\nbaseline = \"10s\"";
    let routes: String = (0..200)
        .map(|i| {
            route(
                &format!("route-{i:03}"),
                &format!("/r{i}/"),
                if i % 2 == 0 {
                    ramp
                } else {
                    "canary_weight = 10.0"
                },
            )
        })
        .collect();
    let path = config(&dir, stable.addr, canary.addr, &routes);
    let p = TestProxy::open(&path).await;
    let admin = p.admin;
    let c = client();
    // Each route has a ramp status (even ones) before the page loads.
    eventually(Duration::from_secs(30), "200 routes in /status", || async {
        let st = status(admin).await;
        let n = st["routes"].as_array().map_or(0, |r| {
            r.iter()
                .filter(|r| r["ramp"]["state"] == "baseline")
                .count()
        });
        (n == 100).then_some(())
    })
    .await;

    let mut payload = 0;
    for file in ["/ui", "/ui/app.js", "/ui/app.css", "/status"] {
        let (code, body) = admin_get(&c, admin, file).await;
        assert_eq!(code, StatusCode::OK, "{file}");
        eprintln!("{file}: {} bytes", body.len());
        payload += body.len();
    }
    eprintln!("payload of the first load with 200 routes: {payload} bytes");

    let b = driver.browser().await;
    let started = Instant::now();
    b.goto(&format!("http://{admin}/ui")).await.unwrap();
    until(
        &b,
        "200 rows",
        "return document.querySelectorAll('tr.route').length === 200",
    )
    .await;
    let wall = started.elapsed();
    let first = js(&b, "return Number(document.body.dataset.firstRenderMs)").await;
    eprintln!(
        "200 routes: first render {first} ms after navigation start (page clock), {} ms until the test saw 200 rows",
        wall.as_millis()
    );
    let first = first.as_f64().unwrap();
    assert!(first < 3_000.0, "first render took {first} ms");
    // One refresh of all 200 rows, timed in the page.
    let refresh = js(
        &b,
        "const t0 = performance.now(); \
        return fetch('/status').then(r => r.json()).then(() => performance.now() - t0)",
    )
    .await;
    eprintln!("one /status fetch + parse with 200 routes: {refresh} ms");
    // The next polls redraw the list in place: time one in the page.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let render = js(&b, "return Number(document.body.dataset.renderMs)").await;
    eprintln!("one redraw of the 200-route list: {render} ms");
    assert!(render.as_f64().unwrap() < 200.0, "redraw took {render} ms");
    // Opening one route among 200 draws its charts.
    click(&b, Locator::Css("tr.route")).await;
    until(
        &b,
        "the first route's details",
        "return document.querySelector('tr.detail-row svg.weight') !== null",
    )
    .await;
    assert_no_page_errors(&b).await;
    b.close().await.unwrap();
    p.stop().await;
}
