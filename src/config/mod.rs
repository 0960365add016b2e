//! Configuration: raw spanned mirror of the TOML → validation (every error,
//! with its location) → runtime types.
//!
//! ```text
//! text ──toml_edit──▶ spanned document ──raw::read──▶ RawConfig ──validate──▶ Config
//!         (syntax)          (unknown keys, wrong types)      (values, references)
//! ```
//! Errors from every stage after parsing are collected together, so `check`
//! shows them all at once.

pub mod diff;
pub mod duration;
pub mod error;
pub mod literal;
mod raw;
pub mod types;
mod validate;

use std::path::{Path, PathBuf};

pub use diff::ConfigDiff;
pub use error::{ConfigError, ConfigErrors, ConfigWarning};
pub use types::Config;

use error::{Issue, LineIndex};

/// A valid config and what looked suspicious in it.
#[derive(Debug)]
pub struct Loaded {
    /// The validated config.
    pub config: Config,
    /// Legal but probably unintended things, in file order.
    pub warnings: Vec<ConfigWarning>,
}

impl Loaded {
    /// One line for `grayproxy check` (warnings are printed apart), e.g.
    /// `ok: config/grayproxy.toml: 2 upstreams, 1 route (recommend: canary 5% with ramp 1→100%)`.
    pub fn summary(&self) -> String {
        let c = &self.config;
        let routes: Vec<String> = c
            .routes
            .iter()
            .map(|r| {
                let ramp = r.ramp.as_ref().map_or_else(String::new, |p| {
                    let first = p.steps.first().map_or(0.0, |w| w.percent());
                    let last = p.steps.last().map_or(0.0, |w| w.percent());
                    format!(" with ramp {first}→{last}%")
                });
                format!("{}: canary {}{ramp}", r.name, r.canary_weight)
            })
            .collect();
        let mut line = format!(
            "ok: {}: {}, {}",
            c.path.display(),
            plural(c.upstreams.len(), "upstream"),
            plural(c.routes.len(), "route"),
        );
        if !routes.is_empty() {
            line.push_str(&format!(" ({})", routes.join("; ")));
        }
        line
    }
}

fn plural(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

/// Reads and validates a config file. An unreadable file is one error at
/// line 1, column 1 naming the OS error.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, path),
        Err(e) => Err(ConfigErrors(vec![ConfigError {
            path: path.to_path_buf(),
            line: 1,
            col: 1,
            message: format!("cannot read config file: {e}"),
        }])),
    }
}

/// Validates config text as if read from `path` (used for error locations
/// and for resolving relative paths against the file's directory).
///
/// A TOML syntax error is reported alone (nothing after it can be trusted);
/// otherwise every unknown key, wrong type and invalid value is reported.
pub fn parse(text: &str, path: &Path) -> Result<Loaded, ConfigErrors> {
    let lines = LineIndex::new(text);
    let doc = match toml_edit::ImDocument::parse(text) {
        Ok(doc) => doc,
        Err(e) => {
            let at = e.span().map_or(0, |s| s.start);
            let message = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            let issue = Issue::new(at, format!("invalid TOML: {message}"));
            return Err(ConfigErrors(lines.errors(path, vec![issue])));
        }
    };
    let mut issues = Vec::new();
    let raw = raw::read(&doc, &mut issues);
    // Not needed past this point: dropped before validation, which can then
    // reuse its memory for the runtime config (a 10,000-route file's
    // `check` peaks at 98 MiB instead of 104).
    drop(doc);
    let base_dir = base_dir(path);
    let mut checker = validate::Checker::new(&base_dir, &lines);
    checker.errors = issues;
    let config = validate::validate(&raw, path, &mut checker);
    match config {
        Some(config) if checker.errors.is_empty() => Ok(Loaded {
            config,
            warnings: lines.warnings(path, checker.warnings),
        }),
        _ => Err(ConfigErrors(lines.errors(path, checker.errors))),
    }
}

/// The config file's directory, absolute (relative paths in the file are
/// relative to it, not to the process's working directory).
fn base_dir(path: &Path) -> PathBuf {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf())
}
