//! Durable ramp state (see `docs/ramp.md`, "Files"): one JSON state file
//! per route, written atomically after every change, and one append-only
//! `audit.jsonl` with a line per decision. The driver reaches it through
//! [`RampStore`], so another store (a replicated one) can take its place.
//!
//! * State file: `<state.dir>/<route>.ramp.json` (the route name with bytes
//!   outside `[A-Za-z0-9._-]` written as `%XX`). Written to a temp file in
//!   the same directory, fsynced, renamed over the old file, then the
//!   directory is fsynced: a crash (even `kill -9` or power loss) leaves
//!   either the old or the new state, never a torn one.
//! * Audit log: `<state.dir>/audit.jsonl`, one [`AuditRecord`] per line with
//!   a `route` field added, appended and fsynced.
//! * Loading: a missing file is a fresh ramp; a file that does not parse is
//!   moved aside to `<file>.corrupt-<unix ms>` and reported as
//!   [`LoadError::Corrupt`]; the caller must not turn it into 100 %.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::ramp::audit::AuditRecord;
use crate::ramp::state::RampState;
use crate::ramp::Timestamp;

/// Format version written into every state file. Version 2 added the
/// KPI checks' streaks and the persistence hold to the state; version-1
/// files load with both at their defaults.
pub const STATE_VERSION: u32 = 2;

/// The oldest state file version that still loads.
pub const OLDEST_STATE_VERSION: u32 = 1;

/// Name of the audit log inside the state directory.
pub const AUDIT_FILE: &str = "audit.jsonl";

/// What a state file holds.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StateFile {
    /// [`STATE_VERSION`].
    pub version: u32,
    /// The route the state belongs to.
    pub route: String,
    /// The canary it was ramping (upstream name and endpoints), so that a
    /// canary changed while the proxy was down starts a new ramp.
    pub canary: String,
    /// When it was written (unix ms).
    pub saved_at_ms: Timestamp,
    /// The whole ramp state, e-process vectors and baseline included.
    pub state: RampState,
}

/// Why a state file could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file exists but cannot be read; it was moved aside (so that the
    /// fresh state written next does not replace it).
    #[error("cannot read state file {path}: {source}; kept as {kept_as}")]
    Read {
        /// The state file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
        /// Where the file now is (or its old path when it could not be moved).
        kept_as: PathBuf,
    },
    /// The file does not parse as a state file; it was moved aside.
    #[error("state file {path} is corrupt ({reason}); kept as {kept_as}")]
    Corrupt {
        /// The state file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
        /// Where the corrupt file now is (or its old path when it could not be moved).
        kept_as: PathBuf,
    },
}

/// Why saving failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct SaveError {
    /// The file being written.
    pub path: PathBuf,
    /// The OS error.
    pub source: io::Error,
}

/// The state directory.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// Serialises appends from every route's driver task.
    audit_lock: Mutex<()>,
}

impl Store {
    /// A store in `dir` (created on first write when missing).
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store {
            dir: dir.into(),
            audit_lock: Mutex::new(()),
        }
    }

    /// The state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The state file of `route`.
    pub fn state_path(&self, route: &str) -> PathBuf {
        self.dir.join(format!("{}.ramp.json", file_stem(route)))
    }

    /// The audit log.
    pub fn audit_path(&self) -> PathBuf {
        self.dir.join(AUDIT_FILE)
    }

    /// Loads `route`'s state: `Ok(None)` when there is none yet.
    /// A corrupt file is renamed to `*.corrupt-<now_ms>` and reported.
    pub fn load(&self, route: &str, now_ms: Timestamp) -> Result<Option<StateFile>, LoadError> {
        let path = self.state_path(route);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                let kept_as = move_aside(&path, "unreadable", now_ms);
                return Err(LoadError::Read {
                    path,
                    source,
                    kept_as,
                });
            }
        };
        let reason = match serde_json::from_slice::<StateFile>(&bytes) {
            Ok(file) if known_version(file.version) && file.route == route => {
                return Ok(Some(file))
            }
            Ok(file) if !known_version(file.version) => {
                format!("unknown version {}", file.version)
            }
            Ok(file) => format!("it belongs to route `{}`", file.route),
            Err(e) => e.to_string(),
        };
        let kept_as = move_aside(&path, "corrupt", now_ms);
        Err(LoadError::Corrupt {
            path,
            reason,
            kept_as,
        })
    }

    /// Writes `file` atomically: temp file in the same directory, fsync,
    /// rename over the old one, fsync the directory.
    pub fn save(&self, file: &StateFile) -> Result<(), SaveError> {
        let path = self.state_path(&file.route);
        let err = |source| SaveError {
            path: path.clone(),
            source,
        };
        let bytes = serde_json::to_vec(file).map_err(|e| err(io::Error::other(e)))?;
        self.ensure_dir().map_err(err)?;
        let tmp = path.with_extension(format!("json.tmp-{}", std::process::id()));
        let written = write_synced(&tmp, &bytes).and_then(|()| fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(err(e));
        }
        sync_dir(&self.dir).map_err(err)
    }

    /// Appends one audit line (the record with `route` added), fsynced.
    pub fn append_audit(&self, route: &str, record: &AuditRecord) -> Result<(), SaveError> {
        let path = self.audit_path();
        let err = |source| SaveError {
            path: path.clone(),
            source,
        };
        let line = audit_line(route, record).map_err(|e| err(io::Error::other(e)))?;
        let _guard = self.audit_lock.lock().unwrap_or_else(|p| p.into_inner());
        self.ensure_dir().map_err(err)?;
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(err)?;
        f.write_all(line.as_bytes()).map_err(err)?;
        f.sync_data().map_err(err)
    }

    fn ensure_dir(&self) -> io::Result<()> {
        if self.dir.is_dir() {
            return Ok(());
        }
        fs::create_dir_all(&self.dir)?;
        if let Some(parent) = self.dir.parent() {
            let _ = sync_dir(parent);
        }
        Ok(())
    }
}

fn known_version(v: u32) -> bool {
    (OLDEST_STATE_VERSION..=STATE_VERSION).contains(&v)
}

/// Where the ramp driver keeps each route's state and the audit records.
/// [`Store`] (files in `state.dir`) is the one there is today.
pub trait RampStore: Send + Sync + std::fmt::Debug {
    /// `route`'s stored state: `Ok(None)` when there is none yet.
    fn load(&self, route: &str, now_ms: Timestamp) -> Result<Option<StateFile>, LoadError>;
    /// Stores `file` (all or nothing).
    fn save(&self, file: &StateFile) -> Result<(), SaveError>;
    /// Appends one audit record of `route`.
    fn append_audit(&self, route: &str, record: &AuditRecord) -> Result<(), SaveError>;
}

impl RampStore for Store {
    fn load(&self, route: &str, now_ms: Timestamp) -> Result<Option<StateFile>, LoadError> {
        Store::load(self, route, now_ms)
    }
    fn save(&self, file: &StateFile) -> Result<(), SaveError> {
        Store::save(self, file)
    }
    fn append_audit(&self, route: &str, record: &AuditRecord) -> Result<(), SaveError> {
        Store::append_audit(self, route, record)
    }
}

/// One audit line (with trailing newline): the record's fields plus `route`.
pub fn audit_line(route: &str, record: &AuditRecord) -> Result<String, serde_json::Error> {
    let mut value = serde_json::to_value(record)?;
    if let serde_json::Value::Object(map) = &mut value {
        map.insert("route".into(), serde_json::Value::from(route));
    }
    let mut line = serde_json::to_string(&value)?;
    line.push('\n');
    Ok(line)
}

/// `route` as a file-name stem: `[A-Za-z0-9._-]` kept, other bytes `%XX`
/// (so two routes never share a file, and no name escapes the directory).
pub fn file_stem(route: &str) -> String {
    let mut out = String::with_capacity(route.len());
    for b in route.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || (b == b'.' && !out.is_empty()) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    if out.is_empty() {
        out.push_str("%00");
    }
    out
}

/// Renames `path` to `<path>.<what>-<now_ms>`; returns where it is now.
fn move_aside(path: &Path, what: &str, now_ms: Timestamp) -> PathBuf {
    let aside = PathBuf::from(format!("{}.{what}-{now_ms}", path.display()));
    match fs::rename(path, &aside) {
        Ok(()) => aside,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot move the {what} state file aside");
            path.to_path_buf()
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use crate::config::types::RampPolicy;
    use crate::ramp::state::{Command, Phase, RampEvent};

    fn tmp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "grayproxy-persist-{name}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn state_file(route: &str) -> StateFile {
        let policy = RampPolicy::default();
        let mut state = RampState::idle();
        state.on(RampEvent::Start, 1_000, &policy);
        state.on(RampEvent::Command(Command::Pause), 2_000, &policy);
        StateFile {
            version: STATE_VERSION,
            route: route.to_string(),
            canary: "v2 [127.0.0.1:2]".into(),
            saved_at_ms: 2_000,
            state,
        }
    }

    #[test]
    fn save_creates_the_dir_and_round_trips() {
        let dir = tmp_dir("roundtrip").join("nested");
        let store = Store::new(&dir);
        assert_eq!(store.load("r", 0).unwrap(), None, "missing file = fresh");
        let f = state_file("r");
        store.save(&f).unwrap();
        assert_eq!(store.load("r", 0).unwrap(), Some(f.clone()));
        // Overwrite: still exactly one file and no temp files left behind.
        let mut g = f;
        g.saved_at_ms = 3_000;
        store.save(&g).unwrap();
        assert_eq!(store.load("r", 0).unwrap(), Some(g));
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, ["r.ramp.json"]);
        let _ = fs::remove_dir_all(dir.parent().unwrap());
    }

    #[test]
    fn corrupt_file_is_moved_aside_and_reported() {
        let dir = tmp_dir("corrupt");
        let store = Store::new(&dir);
        store.save(&state_file("r")).unwrap();
        let path = store.state_path("r");
        // A torn write of the kind atomic rename prevents: half the JSON.
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, &text[..text.len() / 2]).unwrap();
        match store.load("r", 42) {
            Err(LoadError::Corrupt { kept_as, .. }) => {
                assert_eq!(
                    kept_as,
                    PathBuf::from(format!("{}.corrupt-42", path.display()))
                );
                assert!(kept_as.exists(), "the corrupt file is kept for inspection");
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(!path.exists());
        // Valid JSON for another route is not silently adopted either.
        let mut other = state_file("r");
        other.route = "x".into();
        fs::write(&path, serde_json::to_vec(&other).unwrap()).unwrap();
        assert!(matches!(
            store.load("r", 43),
            Err(LoadError::Corrupt { .. })
        ));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn version_1_files_load_and_unknown_versions_do_not() {
        let dir = tmp_dir("v1");
        let store = Store::new(&dir);
        let f = state_file("r");
        store.save(&f).unwrap();
        let path = store.state_path("r");
        // What version 1 wrote: no KPI bookkeeping, no persistence hold.
        let mut v1: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        v1["version"] = 1.into();
        let state = v1["state"].as_object_mut().unwrap();
        assert!(state.remove("kpi").is_some() && state.remove("persist_hold").is_some());
        fs::write(&path, serde_json::to_vec(&v1).unwrap()).unwrap();
        let loaded = store.load("r", 0).unwrap().unwrap();
        assert_eq!((loaded.version, &loaded.state), (1, &f.state));
        // A version from the future is not guessed at.
        v1["version"] = (STATE_VERSION + 1).into();
        fs::write(&path, serde_json::to_vec(&v1).unwrap()).unwrap();
        assert!(matches!(
            store.load("r", 1),
            Err(LoadError::Corrupt { reason, .. }) if reason == "unknown version 3"
        ));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn unreadable_file_is_moved_aside_not_overwritten() {
        let dir = tmp_dir("unreadable");
        let store = Store::new(&dir);
        // A directory where the state file should be: reading it fails.
        fs::create_dir_all(store.state_path("r")).unwrap();
        match store.load("r", 7) {
            Err(LoadError::Read { kept_as, .. }) => {
                assert!(kept_as.to_string_lossy().ends_with(".unreadable-7"));
                assert!(kept_as.exists());
            }
            other => panic!("expected Read, got {other:?}"),
        }
        store.save(&state_file("r")).unwrap();
        assert!(store.load("r", 8).unwrap().is_some());
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn save_into_an_unwritable_dir_fails_without_touching_the_old_state() {
        let dir = tmp_dir("unwritable");
        let store = Store::new(&dir);
        let f = state_file("r");
        store.save(&f).unwrap();
        // The state dir replaced by a plain file: every write fails.
        let moved = dir.with_extension("moved");
        fs::rename(&dir, &moved).unwrap();
        fs::write(&dir, b"not a dir").unwrap();
        assert!(store.save(&f).is_err());
        assert!(store.append_audit("r", &f.state.decisions()[0]).is_err());
        fs::remove_file(&dir).unwrap();
        fs::rename(&moved, &dir).unwrap();
        assert_eq!(store.load("r", 0).unwrap(), Some(f));
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn audit_lines_carry_the_route() {
        let dir = tmp_dir("audit");
        let store = Store::new(&dir);
        let f = state_file("a/b");
        for rec in f.state.decisions() {
            store.append_audit("a/b", rec).unwrap();
        }
        let text = fs::read_to_string(store.audit_path()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["route"], "a/b");
        assert_eq!(lines[0]["action"], "baseline_started");
        assert_eq!(lines[1]["action"], "pause");
        assert_eq!(f.state.phase(), Phase::Paused);
        let _ = fs::remove_dir_all(dir);
    }

    #[test]
    fn file_stems_are_safe_and_distinct() {
        assert_eq!(file_stem("recommend"), "recommend");
        assert_eq!(file_stem("a/b"), "a%2Fb");
        assert_eq!(file_stem(".."), "%2E.");
        assert_ne!(file_stem("a b"), file_stem("a_b"));
        assert_eq!(file_stem(""), "%00");
    }
}
