//! Differences between two JSON documents, by field path.
//!
//! Paths are dotted: object keys by name, array elements by index
//! (`items.0.price`); object keys in sorted order. A field named in `ignore` (by its key, at any depth,
//! or by its whole path) is skipped with everything under it. Work is
//! bounded: at most [`MAX_NODES`] values are visited and [`MAX_DIFFS`]
//! differences kept, so a huge answer costs a bounded amount of CPU.

use std::fmt::Write;

use serde_json::Value;

/// Values visited per comparison at most.
pub const MAX_NODES: usize = 20_000;
/// Differences kept per comparison at most.
pub const MAX_DIFFS: usize = 64;
/// Path length cap; deeper paths are cut (they would be unreadable anyway).
const MAX_PATH: usize = 200;

/// One field that differs: its path and both values (`Null` when absent).
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// Dotted path.
    pub path: String,
    /// Stable's value.
    pub stable: Value,
    /// The canary's value.
    pub canary: Value,
}

/// The result of comparing two documents.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JsonDiff {
    /// The differences found, in document order.
    pub differences: Vec<Difference>,
    /// The walk stopped early (node or difference cap).
    pub truncated: bool,
}

/// Compares `stable` and `canary` field by field.
pub fn diff_json(stable: &Value, canary: &Value, ignore: &[String]) -> JsonDiff {
    let mut walk = Walk {
        ignore,
        budget: MAX_NODES,
        out: JsonDiff::default(),
        path: String::new(),
    };
    walk.value(stable, canary);
    walk.out
}

struct Walk<'a> {
    ignore: &'a [String],
    budget: usize,
    out: JsonDiff,
    path: String,
}

impl Walk<'_> {
    fn full(&mut self) -> bool {
        if self.budget == 0 || self.out.differences.len() >= MAX_DIFFS {
            self.out.truncated = true;
            return true;
        }
        false
    }

    fn value(&mut self, stable: &Value, canary: &Value) {
        if self.full() {
            return;
        }
        self.budget -= 1;
        match (stable, canary) {
            (Value::Object(a), Value::Object(b)) => {
                for (key, va) in a {
                    self.child(key, Some(va), b.get(key));
                }
                for (key, vb) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
                    self.child(key, None, Some(vb));
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                let mut index = String::with_capacity(8);
                for i in 0..a.len().max(b.len()) {
                    index.clear();
                    let _ = write!(index, "{i}");
                    self.child(&index, a.get(i), b.get(i));
                }
            }
            (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => {}
            (a, b) if a == b => {}
            (a, b) => self.differ(a.clone(), b.clone()),
        }
    }

    fn child(&mut self, key: &str, stable: Option<&Value>, canary: Option<&Value>) {
        if self.full() {
            return;
        }
        let len = self.path.len();
        if !self.path.is_empty() {
            self.path.push('.');
        }
        self.path.push_str(key);
        let ignored = self
            .ignore
            .iter()
            .any(|i| i.as_str() == key || *i == self.path);
        if !ignored && self.path.len() <= MAX_PATH {
            match (stable, canary) {
                (Some(a), Some(b)) => self.value(a, b),
                (a, b) => {
                    self.budget = self.budget.saturating_sub(1);
                    let a = a.cloned().unwrap_or(Value::Null);
                    let b = b.cloned().unwrap_or(Value::Null);
                    self.differ(a, b);
                }
            }
        }
        self.path.truncate(len);
    }

    fn differ(&mut self, stable: Value, canary: Value) {
        self.out.differences.push(Difference {
            path: self.path.clone(),
            stable,
            canary,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn paths(d: &JsonDiff) -> Vec<&str> {
        d.differences.iter().map(|d| d.path.as_str()).collect()
    }

    #[test]
    fn equal_documents_have_no_difference() {
        let v = json!({"a": 1, "items": [{"id": 1}, {"id": 2}], "s": "x"});
        assert_eq!(diff_json(&v, &v, &[]), JsonDiff::default());
        // 1 and 1.0 are the same number.
        assert!(diff_json(&json!({"a": 1}), &json!({"a": 1.0}), &[])
            .differences
            .is_empty());
    }

    #[test]
    fn differences_by_path_arrays_by_index() {
        let a = json!({"items": [{"id": 1, "price": 9.5}, {"id": 2}], "n": 1, "gone": true});
        let b =
            json!({"items": [{"id": 1, "price": "9.50"}, {"id": 3}, {"id": 4}], "n": 1, "new": 0});
        let d = diff_json(&a, &b, &[]);
        assert_eq!(
            paths(&d),
            ["gone", "items.0.price", "items.1.id", "items.2", "new"]
        );
        assert_eq!(d.differences[1].stable, json!(9.5));
        assert_eq!(d.differences[1].canary, json!("9.50"));
        assert_eq!(d.differences[3].stable, Value::Null);
        assert!(!d.truncated);
    }

    #[test]
    fn ignored_fields_are_skipped_by_key_or_path() {
        let a = json!({"request_id": "x", "meta": {"at": 1, "v": 1}, "items": [{"score": 1}]});
        let b = json!({"request_id": "y", "meta": {"at": 2, "v": 2}, "items": [{"score": 2}]});
        let ignore = [
            "request_id".to_string(),
            "meta.at".to_string(),
            "score".to_string(),
        ];
        assert_eq!(paths(&diff_json(&a, &b, &ignore)), ["meta.v"]);
    }

    #[test]
    fn type_change_is_one_difference_at_its_path() {
        let d = diff_json(&json!({"a": {"b": 1}}), &json!({"a": [1]}), &[]);
        assert_eq!(paths(&d), ["a"]);
        let d = diff_json(&json!([1]), &json!("x"), &[]);
        assert_eq!(paths(&d), [""]);
    }

    #[test]
    fn huge_documents_cost_bounded_work() {
        let a = Value::Array((0..100_000).map(|i| json!(i)).collect());
        let b = Value::Array((0..100_000).map(|i| json!(i + 1)).collect());
        let d = diff_json(&a, &b, &[]);
        assert!(d.truncated);
        assert_eq!(d.differences.len(), MAX_DIFFS);
        let same = diff_json(&a, &a, &[]);
        assert!(same.truncated, "stopped at the node cap");
        assert!(same.differences.is_empty());
    }
}
