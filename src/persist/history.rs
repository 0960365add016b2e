//! The history file: `<state.dir>/<route>.history.jsonl`, one
//! [`HistoryEntry`] per line, beside the route's state file.
//!
//! Appended after every tick without fsync: the history is for the eyes
//! (the web UI's charts); every decision is already in the fsynced audit
//! log and the state file. An appended line survives a crash of the
//! process (`kill -9`): it is in the OS's page cache. Only a power loss can
//! lose the last few lines or tear the last one, and loading skips lines
//! that do not parse. When the file holds twice [`HISTORY_TICKS`] lines it
//! is rewritten (temp file, rename) with the newest [`HISTORY_TICKS`], so
//! it stays bounded without rewriting it on every tick.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::PathBuf;

use super::{file_stem, SaveError, Store};
use crate::ramp::history::{History, HistoryEntry, HISTORY_TICKS};

impl Store {
    /// The history file of `route`.
    pub fn history_path(&self, route: &str) -> PathBuf {
        self.dir.join(format!("{}.history.jsonl", file_stem(route)))
    }

    /// `route`'s stored history (empty when there is none or it cannot be
    /// read: a lost chart never stops a ramp) and its line count.
    pub fn load_history(&self, route: &str) -> (History, usize) {
        let path = self.history_path(route);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %path.display(), error = %e, "cannot read the ramp history; the charts start empty");
                }
                return (History::default(), 0);
            }
        };
        let mut lines = 0;
        let mut skipped = 0;
        let mut entries = std::collections::VecDeque::with_capacity(HISTORY_TICKS);
        for line in BufReader::new(file).lines() {
            let Ok(line) = line else { break };
            lines += 1;
            match serde_json::from_str::<HistoryEntry>(&line) {
                Ok(e) => {
                    entries.push_back(e);
                    if entries.len() > HISTORY_TICKS {
                        entries.pop_front();
                    }
                }
                Err(_) => skipped += 1,
            }
        }
        if skipped > 0 {
            tracing::warn!(path = %path.display(), skipped, "ramp history lines that do not parse were skipped");
        }
        (History::from_entries(entries), lines)
    }

    /// Appends one entry to `route`'s history file.
    pub fn append_history(&self, route: &str, entry: &HistoryEntry) -> Result<(), SaveError> {
        let path = self.history_path(route);
        let err = |source| SaveError {
            path: path.clone(),
            source,
        };
        let mut line = serde_json::to_string(entry).map_err(|e| err(io::Error::other(e)))?;
        line.push('\n');
        self.ensure_dir().map_err(err)?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        f.write_all(line.as_bytes()).map_err(err)
    }

    /// Replaces `route`'s history file with `history` (temp file, rename).
    pub fn rewrite_history(&self, route: &str, history: &History) -> Result<(), SaveError> {
        let path = self.history_path(route);
        let err = |source| SaveError {
            path: path.clone(),
            source,
        };
        let mut text = String::new();
        for e in history.entries() {
            let line = serde_json::to_string(e).map_err(|e| err(io::Error::other(e)))?;
            text.push_str(&line);
            text.push('\n');
        }
        self.ensure_dir().map_err(err)?;
        let tmp = path.with_extension(format!("jsonl.tmp-{}", std::process::id()));
        let written = fs::write(&tmp, text.as_bytes()).and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(err(e));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::ramp::history::ArmPoint;
    use crate::ramp::state::Phase;

    fn entry(at_ms: u64) -> HistoryEntry {
        HistoryEntry {
            at_ms,
            state: Phase::Progressing,
            step: 1,
            weight: 5.0,
            stable: ArmPoint::default(),
            canary: ArmPoint::default(),
            evidence: None,
        }
    }

    fn tmp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "grayproxy-history-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn appended_entries_load_back_in_order() {
        let dir = tmp_dir("append");
        let store = Store::new(&dir);
        assert_eq!(store.load_history("a/b"), (History::default(), 0));
        for t in 0..3 {
            store.append_history("a/b", &entry(t)).unwrap();
        }
        let (h, lines) = store.load_history("a/b");
        assert_eq!(lines, 3);
        let at: Vec<u64> = h.entries().iter().map(|e| e.at_ms).collect();
        assert_eq!(at, [0, 1, 2]);
        assert!(store.history_path("a/b").ends_with("a%2Fb.history.jsonl"));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn a_torn_line_is_skipped_and_the_bound_holds() {
        let dir = tmp_dir("torn");
        let store = Store::new(&dir);
        let many = History::from_entries((0..HISTORY_TICKS as u64 + 10).map(entry));
        store.rewrite_history("r", &many).unwrap();
        let path = store.history_path("r");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"at_ms\": 99, \"sta").unwrap();
        let (h, lines) = store.load_history("r");
        assert_eq!(lines, HISTORY_TICKS + 1);
        assert_eq!(h.len(), HISTORY_TICKS);
        assert_eq!(h.entries().front().unwrap().at_ms, 10);
        let _ = fs::remove_dir_all(dir);
    }
}
