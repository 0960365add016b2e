//! The shape of the source tree, checked so that it stays carryable: no file
//! in `src/` grows past a size one can read in one sitting, and the top-level
//! modules form no import cycle (an arrow points from the async shell towards
//! the pure core, never back; see docs/architecture.md).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Lines a source file may have at most (tests in their own files count too).
const MAX_LINES: usize = 620;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        panic!("cannot read {}", dir.display());
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn src() -> (PathBuf, Vec<PathBuf>) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    files.sort();
    (root, files)
}

#[test]
fn no_source_file_is_too_long() {
    let (_, files) = src();
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let lines = fs::read_to_string(f).ok()?.lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", f.display()))
        })
        .collect();
    assert!(
        long.is_empty(),
        "split these files (at most {MAX_LINES} lines): {long:?}"
    );
}

/// The top-level module a file belongs to: `src/ramp/judge/mod.rs` → `ramp`,
/// `src/metrics.rs` → `metrics`.
fn module_of(root: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(root).ok()?;
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// `crate::NAME` references in `text`, outside line comments.
fn crate_refs(text: &str) -> BTreeSet<String> {
    let mut refs = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                refs.insert(name);
            }
        }
    }
    refs
}

#[test]
fn top_level_modules_have_no_import_cycle() {
    let (root, files) = src();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in &files {
        let Some(module) = module_of(&root, f) else {
            continue;
        };
        let text = fs::read_to_string(f).unwrap_or_default();
        let entry = graph.entry(module.clone()).or_default();
        for target in crate_refs(&text) {
            if target != module {
                entry.insert(target);
            }
        }
    }
    let modules: BTreeSet<String> = graph.keys().cloned().collect();
    for edges in graph.values_mut() {
        edges.retain(|t| modules.contains(t));
    }
    // A module is on a cycle when it can reach itself.
    let mut cycles = Vec::new();
    for start in &modules {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(&String, Vec<&String>)> = vec![(start, vec![start])];
        while let Some((at, path)) = stack.pop() {
            for next in &graph[at] {
                if next == start {
                    let names: Vec<&str> = path.iter().map(|s| s.as_str()).collect();
                    cycles.push(format!("{} -> {start}", names.join(" -> ")));
                } else if seen.insert(next) {
                    let mut p = path.clone();
                    p.push(next);
                    stack.push((next, p));
                }
            }
        }
    }
    assert!(cycles.is_empty(), "import cycles: {cycles:#?}");
}

#[test]
fn the_cycle_check_sees_references() {
    // Positive control: the scanner finds what the graph is built from.
    let refs = crate_refs("use crate::ramp::judge; // crate::not_this\nlet x = crate::metrics::X;");
    assert_eq!(
        refs.into_iter().collect::<Vec<_>>(),
        ["metrics".to_owned(), "ramp".to_owned()]
    );
}
