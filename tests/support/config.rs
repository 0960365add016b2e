//! grayproxy.toml texts for tests: [`Toml`] builds one (both listeners on
//! port 0, the state in `state/` beside the file), [`config`] and
//! [`split_config`] are its two common shapes, and [`parsed`] looks at what
//! the config parser says about a text without starting anything.

use std::net::SocketAddr;
use std::path::Path;

/// A config text under construction.
#[derive(Clone, Debug)]
pub struct Toml {
    server: String,
    admin: String,
    upstreams: String,
    routes: String,
}

impl Default for Toml {
    fn default() -> Self {
        Toml::new()
    }
}

impl Toml {
    /// `[server]` and `[admin]` on 127.0.0.1:0, `[state] dir = "state"`
    /// (relative to the file), no upstreams, no routes.
    pub fn new() -> Toml {
        Toml {
            server: "listen = \"127.0.0.1:0\"\n".into(),
            admin: "listen = \"127.0.0.1:0\"\n".into(),
            upstreams: String::new(),
            routes: String::new(),
        }
    }

    /// Adds lines to `[server]`.
    pub fn server(mut self, lines: &str) -> Toml {
        push_lines(&mut self.server, lines);
        self
    }

    /// Adds lines to `[admin]`.
    pub fn admin(mut self, lines: &str) -> Toml {
        push_lines(&mut self.admin, lines);
        self
    }

    /// `[upstreams.NAME]` with these endpoints and `extra` lines.
    pub fn upstream(mut self, name: &str, endpoints: &[SocketAddr], extra: &str) -> Toml {
        let list = endpoints
            .iter()
            .map(|a| format!("\"{a}\""))
            .collect::<Vec<_>>()
            .join(", ");
        self.upstreams
            .push_str(&format!("[upstreams.{name}]\nendpoints = [{list}]\n"));
        push_lines(&mut self.upstreams, extra);
        self
    }

    /// Appends route tables (`[[routes]]`…) as written.
    pub fn routes(mut self, text: &str) -> Toml {
        push_lines(&mut self.routes, text);
        self
    }

    /// The text.
    pub fn build(&self) -> String {
        format!(
            "[server]\n{}\n[admin]\n{}\n[state]\ndir = \"state\"\n\n{}\n{}",
            self.server, self.admin, self.upstreams, self.routes
        )
    }
}

fn push_lines(to: &mut String, lines: &str) {
    if !lines.is_empty() {
        to.push_str(lines);
        if !lines.ends_with('\n') {
            to.push('\n');
        }
    }
}

/// A config with `server_extra` lines in `[server]`, one upstream per
/// `(name, addr)` and `routes` appended as is.
pub fn config(server_extra: &str, upstreams: &[(&str, SocketAddr)], routes: &str) -> String {
    let mut toml = Toml::new().server(server_extra);
    for (name, addr) in upstreams {
        toml = toml.upstream(name, &[*addr], "");
    }
    toml.routes(routes).build()
}

/// A config with one route `r` from upstream `stable` (these endpoints) to
/// `canary`: `server` lines go under `[server]`, `route` lines into the route.
pub fn split_config(
    stable: &[SocketAddr],
    canary: &[SocketAddr],
    server: &str,
    route: &str,
) -> String {
    split_toml(stable, canary, "", route).server(server).build()
}

/// [`split_config`] as a [`Toml`], with `stable_extra` lines in
/// `[upstreams.stable]` (outlier detection, health checks, ...).
pub fn split_toml(
    stable: &[SocketAddr],
    canary: &[SocketAddr],
    stable_extra: &str,
    route: &str,
) -> Toml {
    Toml::new()
        .upstream("stable", stable, stable_extra)
        .upstream("canary", canary, "")
        .routes(&format!(
            "[[routes]]\nname = \"r\"\nstable = \"stable\"\ncanary = \"canary\"\n{route}\n"
        ))
}

/// Replaces a file atomically (write beside, rename), like editors and
/// config-management tools do, so the watcher never reads half a file.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("toml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// What the config parser says about a text (for the config test files).
pub mod parsed {
    use std::path::Path;

    use grayproxy::config::types::Config;
    use grayproxy::config::{parse, Loaded};

    /// Two upstreams, `a` and `b`.
    pub const UPSTREAMS: &str = "[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n\
                             [upstreams.b]\nendpoints = [\"127.0.0.1:2\"]\n";

    /// A valid file with `head` before the upstreams and `route` lines inside
    /// the one route (which comes last, so `[routes.ramp]` etc. may follow).
    pub fn file(head: &str, route: &str) -> String {
        format!(
            "{head}\n{UPSTREAMS}[[routes]]\nname = \"r\"\nstable = \"a\"\ncanary = \"b\"\n{route}\n"
        )
    }

    /// Parses as `/etc/gp/c.toml`; errors as `LINE:COL: message`.
    pub fn load(text: &str) -> Result<Loaded, Vec<String>> {
        parse(text, Path::new("/etc/gp/c.toml")).map_err(|e| {
            e.errors()
                .iter()
                .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
                .collect()
        })
    }

    /// The config of a text that must be valid.
    pub fn ok(text: &str) -> Config {
        match load(text) {
            Ok(l) => l.config,
            Err(e) => panic!("expected valid, got {e:#?}"),
        }
    }

    /// The messages (without locations) of an invalid file.
    pub fn errs(text: &str) -> Vec<String> {
        match load(text) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(e) => e
                .into_iter()
                .map(|m| m.split_once(": ").map_or(m.as_str(), |x| x.1).to_owned())
                .collect(),
        }
    }

    /// The one message of an invalid file.
    pub fn one_err(text: &str) -> String {
        let e = errs(text);
        assert_eq!(e.len(), 1, "{e:#?}");
        e[0].clone()
    }

    /// The warnings of a valid file.
    pub fn warnings(text: &str) -> Vec<String> {
        match load(text) {
            Ok(l) => l.warnings.iter().map(|w| w.message.clone()).collect(),
            Err(e) => panic!("expected valid, got {e:#?}"),
        }
    }
}
