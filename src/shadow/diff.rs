//! Differences between two JSON documents, by field path.
//!
//! Paths are dotted: object keys by name, array elements by index
//! (`items.0.price`); object keys in sorted order. A field named in `ignore` (by its key, at any depth,
//! or by its whole path) is skipped with everything under it. Work is
//! bounded: at most [`MAX_NODES`] values are visited and [`MAX_DIFFS`]
//! differences kept, so a huge answer costs a bounded amount of CPU.

use std::borrow::Cow;
use std::cmp::Ordering;

use serde_json::Value;

use super::json::Node;

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
pub fn diff_json(stable: &Node<'_>, canary: &Node<'_>, ignore: &[String]) -> JsonDiff {
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
    /// The current path; one buffer for the whole walk, copied only into a
    /// difference.
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

    fn value(&mut self, stable: &Node<'_>, canary: &Node<'_>) {
        if self.full() {
            return;
        }
        self.budget -= 1;
        match (stable, canary) {
            (Node::Obj(a), Node::Obj(b)) => self.object(a, b),
            (Node::Arr(a), Node::Arr(b)) => {
                let mut index = itoa_buf();
                for i in 0..a.len().max(b.len()) {
                    self.child(index.format(i), a.get(i), b.get(i));
                    if self.full() {
                        return;
                    }
                }
            }
            (a, b) if a == b => {}
            (a, b) => self.differ(Some(a), Some(b)),
        }
    }

    /// Both objects' fields side by side, in key order (they are sorted).
    fn object(&mut self, a: &[(Cow<'_, str>, Node<'_>)], b: &[(Cow<'_, str>, Node<'_>)]) {
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let order = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.0.cmp(&y.0),
                (Some(_), None) => Ordering::Less,
                _ => Ordering::Greater,
            };
            match order {
                Ordering::Less => {
                    self.child(&a[i].0, Some(&a[i].1), None);
                    i += 1;
                }
                Ordering::Greater => {
                    self.child(&b[j].0, None, Some(&b[j].1));
                    j += 1;
                }
                Ordering::Equal => {
                    self.child(&a[i].0, Some(&a[i].1), Some(&b[j].1));
                    i += 1;
                    j += 1;
                }
            }
            if self.full() {
                return;
            }
        }
    }

    fn child(&mut self, key: &str, stable: Option<&Node<'_>>, canary: Option<&Node<'_>>) {
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
                    self.differ(a, b);
                }
            }
        }
        self.path.truncate(len);
    }

    fn differ(&mut self, stable: Option<&Node<'_>>, canary: Option<&Node<'_>>) {
        self.out.differences.push(Difference {
            path: self.path.clone(),
            stable: stable.map_or(Value::Null, Node::to_value),
            canary: canary.map_or(Value::Null, Node::to_value),
        });
    }
}

/// Formats array indexes without an allocation per element.
struct IndexBuf([u8; 20]);

fn itoa_buf() -> IndexBuf {
    IndexBuf([0; 20])
}

impl IndexBuf {
    fn format(&mut self, mut n: usize) -> &str {
        let mut at = self.0.len();
        loop {
            at -= 1;
            self.0[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        // Only ASCII digits were written.
        std::str::from_utf8(&self.0[at..]).unwrap_or("")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `diff_json` on two `Value`s, through their text.
    fn diff_values(a: &Value, b: &Value, ignore: &[String]) -> JsonDiff {
        let (ta, tb) = (a.to_string(), b.to_string());
        let (Some(na), Some(nb)) = (Node::parse(ta.as_bytes()), Node::parse(tb.as_bytes())) else {
            panic!("test documents are JSON");
        };
        diff_json(&na, &nb, ignore)
    }

    fn paths(d: &JsonDiff) -> Vec<&str> {
        d.differences.iter().map(|d| d.path.as_str()).collect()
    }

    #[test]
    fn equal_documents_have_no_difference() {
        let v = json!({"a": 1, "items": [{"id": 1}, {"id": 2}], "s": "x"});
        assert_eq!(diff_values(&v, &v, &[]), JsonDiff::default());
        // 1 and 1.0 are the same number.
        assert!(diff_values(&json!({"a": 1}), &json!({"a": 1.0}), &[])
            .differences
            .is_empty());
    }

    #[test]
    fn differences_by_path_arrays_by_index() {
        let a = json!({"items": [{"id": 1, "price": 9.5}, {"id": 2}], "n": 1, "gone": true});
        let b =
            json!({"items": [{"id": 1, "price": "9.50"}, {"id": 3}, {"id": 4}], "n": 1, "new": 0});
        let d = diff_values(&a, &b, &[]);
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
        assert_eq!(paths(&diff_values(&a, &b, &ignore)), ["meta.v"]);
    }

    #[test]
    fn type_change_is_one_difference_at_its_path() {
        let d = diff_values(&json!({"a": {"b": 1}}), &json!({"a": [1]}), &[]);
        assert_eq!(paths(&d), ["a"]);
        let d = diff_values(&json!([1]), &json!("x"), &[]);
        assert_eq!(paths(&d), [""]);
    }

    #[test]
    fn huge_documents_cost_bounded_work() {
        let a = Value::Array((0..100_000).map(|i| json!(i)).collect());
        let b = Value::Array((0..100_000).map(|i| json!(i + 1)).collect());
        let d = diff_values(&a, &b, &[]);
        assert!(d.truncated);
        assert_eq!(d.differences.len(), MAX_DIFFS);
        let same = diff_values(&a, &a, &[]);
        assert!(same.truncated, "stopped at the node cap");
        assert!(same.differences.is_empty());
    }
}
