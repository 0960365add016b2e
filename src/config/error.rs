//! Config errors and warnings, each pointing at a place in the file.
//!
//! Checks record byte offsets ([`Issue`]); they become 1-based line and
//! column only once, at the end, through a [`LineIndex`] of the source text.

use std::fmt;
use std::path::{Path, PathBuf};

/// One thing wrong with a config file, at a place in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file, as given.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "error: {}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

impl std::error::Error for ConfigError {}

/// Something legal but probably not what was meant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The file, as given.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// What looks wrong and what to do about it.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "warning: {}:{}:{}: {}",
            self.path.display(),
            self.line,
            self.col,
            self.message
        )
    }
}

/// Every error found in a config file, in file order. Never empty when
/// returned by [`crate::config::parse`] or [`crate::config::load`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors, in file order.
    pub fn errors(&self) -> &[ConfigError] {
        &self.0
    }

    /// How many errors.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none (never the case for a returned error).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    /// One line per error, `error: PATH:LINE:COL: message`, newline-separated
    /// (no trailing newline).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// A problem found by a check, located by byte offset into the source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Issue {
    /// Byte offset of the offending key or value.
    pub at: usize,
    /// The message.
    pub message: String,
}

impl Issue {
    /// An issue at a byte offset.
    pub fn new(at: usize, message: impl Into<String>) -> Issue {
        Issue {
            at,
            message: message.into(),
        }
    }
}

/// Maps byte offsets to 1-based line and column (in characters).
pub(crate) struct LineIndex<'a> {
    text: &'a str,
    /// Byte offset where each line starts.
    starts: Vec<usize>,
}

impl<'a> LineIndex<'a> {
    /// Indexes `text`.
    pub fn new(text: &'a str) -> LineIndex<'a> {
        let starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        LineIndex { text, starts }
    }

    /// 1-based (line, column) of a byte offset; offsets past the end or
    /// inside a character are clamped, never a panic.
    pub fn locate(&self, offset: usize) -> (usize, usize) {
        let mut offset = offset.min(self.text.len());
        while !self.text.is_char_boundary(offset) {
            offset -= 1;
        }
        let line = self.starts.partition_point(|&s| s <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let col = self
            .text
            .get(start..offset)
            .map_or(0, |s| s.chars().count())
            + 1;
        (line, col)
    }

    /// Turns issues into errors, sorted by position (stable, so issues at
    /// the same place keep the order the checks found them in).
    pub fn errors(&self, path: &Path, issues: Vec<Issue>) -> Vec<ConfigError> {
        let mut out: Vec<ConfigError> = issues
            .into_iter()
            .map(|i| {
                let (line, col) = self.locate(i.at);
                ConfigError {
                    path: path.to_path_buf(),
                    line,
                    col,
                    message: i.message,
                }
            })
            .collect();
        out.sort_by_key(|e| (e.line, e.col));
        out
    }

    /// Turns issues into warnings, sorted by position.
    pub fn warnings(&self, path: &Path, issues: Vec<Issue>) -> Vec<ConfigWarning> {
        self.errors(path, issues)
            .into_iter()
            .map(|e| ConfigWarning {
                path: e.path,
                line: e.line,
                col: e.col,
                message: e.message,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locates_lines_and_char_columns() {
        let idx = LineIndex::new("ab\nÜx = 1\n");
        assert_eq!(idx.locate(0), (1, 1));
        assert_eq!(idx.locate(1), (1, 2));
        assert_eq!(idx.locate(2), (1, 3)); // the newline itself
        assert_eq!(idx.locate(3), (2, 1));
        assert_eq!(idx.locate(5), (2, 2)); // after the 2-byte Ü
        assert_eq!(idx.locate(4), (2, 1)); // inside Ü: clamped back
        assert_eq!(idx.locate(999), (3, 1));
    }

    #[test]
    fn renders_one_line_per_error() {
        let path = Path::new("c.toml");
        let idx = LineIndex::new("a\nb\n");
        let errs =
            ConfigErrors(idx.errors(path, vec![Issue::new(2, "second"), Issue::new(0, "first")]));
        assert_eq!(
            errs.to_string(),
            "error: c.toml:1:1: first\nerror: c.toml:2:1: second"
        );
        let warns = idx.warnings(path, vec![Issue::new(2, "hm")]);
        assert_eq!(warns[0].to_string(), "warning: c.toml:2:1: hm");
    }
}
