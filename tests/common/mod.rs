//! Helpers shared by the config test files: a small valid file to edit, and
//! ways to look at what `parse` says about it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;

use grayproxy::config::types::Config;
use grayproxy::config::{parse, Loaded};

pub const UPSTREAMS: &str = "[upstreams.a]\nendpoints = [\"127.0.0.1:1\"]\n\
                         [upstreams.b]\nendpoints = [\"127.0.0.1:2\"]\n";

/// A valid file with `head` before the upstreams and `route` lines inside
/// the one route (which comes last, so `[routes.ramp]` etc. may follow).
pub fn file(head: &str, route: &str) -> String {
    format!(
        "{head}\n{UPSTREAMS}[[routes]]\nname = \"r\"\nstable = \"a\"\ncanary = \"b\"\n{route}\n"
    )
}

pub fn load(text: &str) -> Result<Loaded, Vec<String>> {
    parse(text, Path::new("/etc/gp/c.toml")).map_err(|e| {
        e.errors()
            .iter()
            .map(|e| format!("{}:{}: {}", e.line, e.col, e.message))
            .collect()
    })
}

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

pub fn one_err(text: &str) -> String {
    let e = errs(text);
    assert_eq!(e.len(), 1, "{e:#?}");
    e[0].clone()
}

pub fn warnings(text: &str) -> Vec<String> {
    match load(text) {
        Ok(l) => l.warnings.iter().map(|w| w.message.clone()).collect(),
        Err(e) => panic!("expected valid, got {e:#?}"),
    }
}
