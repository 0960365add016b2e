//! A JSON document borrowed from the bytes it was parsed from: the
//! comparison's own tree, cheaper than `serde_json::Value`.
//!
//! A comparison parses both answers, walks them once and keeps almost
//! nothing, so the tree is built for that: strings and keys borrow from the
//! body (an owned copy only for a string with escapes), objects are small
//! vectors sorted by key (walked side by side, no map nodes, no hashing),
//! numbers are kept as parsed. Only a difference that is reported is turned
//! into a `serde_json::Value` ([`Node::to_value`]). serde_json's parser does
//! the parsing, with its nesting limit, so a hostile body cannot overflow
//! the stack.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

/// A JSON number as parsed.
#[derive(Debug, Clone, Copy)]
pub enum Num {
    /// A non-negative integer.
    U(u64),
    /// A negative integer.
    I(i64),
    /// Anything else.
    F(f64),
}

impl Num {
    fn as_f64(self) -> f64 {
        match self {
            Num::U(u) => u as f64,
            Num::I(i) => i as f64,
            Num::F(f) => f,
        }
    }
}

/// One JSON value, borrowing from the parsed bytes.
#[derive(Debug, Clone)]
pub enum Node<'a> {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// A number.
    Num(Num),
    /// A string (borrowed unless it had escapes).
    Str(Cow<'a, str>),
    /// An array.
    Arr(Vec<Node<'a>>),
    /// An object, sorted by key; a repeated key keeps its last value.
    Obj(Vec<(Cow<'a, str>, Node<'a>)>),
}

impl<'a> Node<'a> {
    /// Parses `bytes`; `None` when they are not one JSON document.
    pub fn parse(bytes: &'a [u8]) -> Option<Node<'a>> {
        serde_json::from_slice(bytes).ok()
    }

    /// The value of `key`, for an object.
    pub fn get(&self, key: &str) -> Option<&Node<'a>> {
        match self {
            Node::Obj(fields) => fields
                .binary_search_by(|(k, _)| k.as_ref().cmp(key))
                .ok()
                .map(|i| &fields[i].1),
            _ => None,
        }
    }

    /// The same value as a `serde_json::Value` (for reports).
    pub fn to_value(&self) -> Value {
        match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Num(Num::U(u)) => Value::from(*u),
            Node::Num(Num::I(i)) => Value::from(*i),
            Node::Num(Num::F(f)) => Value::from(*f),
            Node::Str(s) => Value::String(s.to_string()),
            Node::Arr(items) => Value::Array(items.iter().map(Node::to_value).collect()),
            Node::Obj(fields) => Value::Object(
                fields
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            ),
        }
    }
}

/// Equality as the comparison means it: numbers by value (`1` = `1.0`),
/// objects regardless of key order.
impl PartialEq for Node<'_> {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Node::Null, Node::Null) => true,
            (Node::Bool(a), Node::Bool(b)) => a == b,
            (Node::Num(a), Node::Num(b)) => a.as_f64() == b.as_f64(),
            (Node::Str(a), Node::Str(b)) => a == b,
            (Node::Arr(a), Node::Arr(b)) => a == b,
            (Node::Obj(a), Node::Obj(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for Node<'_> {}

impl Hash for Node<'_> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Node::Null => {}
            Node::Bool(b) => b.hash(state),
            // +0.0 for -0.0, so equal numbers hash alike (NaN is not JSON).
            Node::Num(n) => (n.as_f64() + 0.0).to_bits().hash(state),
            Node::Str(s) => s.hash(state),
            Node::Arr(items) => items.hash(state),
            Node::Obj(fields) => fields.hash(state),
        }
    }
}

/// An object key, borrowed when it has no escapes.
struct Key<'a>(Cow<'a, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E>(self, v: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(v)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

impl<'de> Deserialize<'de> for Node<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor)
    }
}

struct NodeVisitor;

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Node<'de>, E> {
        Ok(Node::Null)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Node<'de>, E> {
        Ok(Node::Bool(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Node<'de>, E> {
        Ok(Node::Num(Num::U(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Node<'de>, E> {
        Ok(Node::Num(if v >= 0 { Num::U(v as u64) } else { Num::I(v) }))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Node<'de>, E> {
        Ok(Node::Num(Num::F(v)))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Node<'de>, E> {
        Ok(Node::Str(Cow::Owned(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node<'de>, A::Error> {
        // serde_json gives no length: start where a typical list fits.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(16).min(64));
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        Ok(Node::Arr(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node<'de>, A::Error> {
        let mut fields: Vec<(Cow<'de, str>, Node<'de>)> =
            Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
        while let Some((Key(k), v)) = map.next_entry::<Key<'de>, Node<'de>>()? {
            fields.push((k, v));
        }
        // Stable: of a repeated key, the last one stays (as serde_json does).
        fields.sort_by(|a, b| a.0.cmp(&b.0));
        if fields.windows(2).any(|w| w[0].0 == w[1].0) {
            let mut out: Vec<(Cow<'de, str>, Node<'de>)> = Vec::with_capacity(fields.len());
            for (k, v) in fields {
                match out.last_mut() {
                    Some(last) if last.0 == k => last.1 = v,
                    _ => out.push((k, v)),
                }
            }
            fields = out;
        }
        Ok(Node::Obj(fields))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_through_value() {
        let v = json!({"b": [1, -2, 2.5, "x\"y", null, true], "a": {"z": {}, "y": []}});
        let text = v.to_string();
        let n = Node::parse(text.as_bytes()).unwrap();
        assert_eq!(n.to_value(), v);
        assert!(matches!(n.get("b"), Some(Node::Arr(a)) if a.len() == 6));
        assert!(n.get("c").is_none());
    }

    #[test]
    fn strings_without_escapes_borrow() {
        let n = Node::parse(br#"{"k": "plain", "e": "a\nb"}"#).unwrap();
        assert!(matches!(
            n.get("k"),
            Some(Node::Str(Cow::Borrowed("plain")))
        ));
        assert!(matches!(n.get("e"), Some(Node::Str(Cow::Owned(s))) if s == "a\nb"));
    }

    #[test]
    fn equality_by_value() {
        fn p(s: &str) -> Node<'_> {
            Node::parse(s.as_bytes()).unwrap()
        }
        assert_eq!(p(r#"{"a": 1, "b": 2}"#), p(r#"{"b": 2.0, "a": 1}"#));
        assert_ne!(p(r#"[1, 2]"#), p(r#"[2, 1]"#));
        assert_ne!(p("1"), p(r#""1""#));
        // A repeated key keeps its last value.
        assert_eq!(p(r#"{"a": 1, "a": 3}"#), p(r#"{"a": 3}"#));
        let hash = |n: &Node<'_>| {
            let mut h = std::hash::DefaultHasher::new();
            n.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&p("1")), hash(&p("1.0")));
        assert_eq!(hash(&p("0")), hash(&p("-0.0")));
    }

    #[test]
    fn not_json_and_deep_nesting_are_refused() {
        assert!(Node::parse(b"<html>").is_none());
        assert!(Node::parse(b"{} {}").is_none());
        let deep = "[".repeat(100_000);
        assert!(Node::parse(deep.as_bytes()).is_none());
    }
}
