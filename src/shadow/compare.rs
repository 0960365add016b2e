//! Compares one pair: stable's and the canary's answers to the same request.

use std::time::Duration;

use crate::config::types::ShadowConfig;

use super::diff::{diff_json, JsonDiff};
use super::json::Node;
use super::rank::{overlap_at_k, rbo_ext, RBO_P};

/// What the comparison looks at, from `[routes.shadow]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompareSpec {
    /// Dotted path of the ranked list (`None` = no list comparison).
    pub items: Option<String>,
    /// Field of a list element that names the item (`None` = the element itself).
    pub item_id: Option<String>,
    /// Depth of the list comparison.
    pub k: usize,
    /// Fields never compared.
    pub ignore: Vec<String>,
}

impl Default for CompareSpec {
    fn default() -> Self {
        CompareSpec {
            items: None,
            item_id: None,
            k: 10,
            ignore: Vec::new(),
        }
    }
}

impl From<&ShadowConfig> for CompareSpec {
    fn from(c: &ShadowConfig) -> Self {
        CompareSpec {
            items: c.items.clone(),
            item_id: c.item_id.clone(),
            k: c.k,
            ignore: c.ignore.clone(),
        }
    }
}

/// One side of a pair as the proxy saw it.
#[derive(Debug, Clone, Copy)]
pub struct Answer<'a> {
    /// The status, `None` when there was no answer (connect error, timeout).
    pub status: Option<u16>,
    /// The arm failed this request (decided by the request path's outcome).
    pub failed: bool,
    /// Time to the response head (or to the failure).
    pub latency: Duration,
    /// The whole body, `None` when it was not captured (too big, broken).
    pub body: Option<&'a [u8]>,
}

/// How the two bodies compared.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyComparison {
    /// At least one body was missing: only status and latency compared.
    NotCompared,
    /// Not both JSON: compared byte for byte.
    Bytes {
        /// The bytes are the same.
        equal: bool,
    },
    /// Both JSON: compared by field, and the ranked lists when configured.
    Json {
        /// Fields that differ.
        diff: JsonDiff,
        /// Agreement of the ranked lists, when `items` is set.
        rank: Option<RankAgreement>,
    },
}

/// Agreement of two ranked lists.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankAgreement {
    /// `RBO_ext` at depth k, p = 0.9.
    pub rbo: f64,
    /// overlap@k.
    pub overlap: f64,
}

/// The comparison of one pair.
#[derive(Debug, Clone, PartialEq)]
pub struct PairComparison {
    /// Stable failed this request.
    pub stable_failed: bool,
    /// The canary failed this request.
    pub canary_failed: bool,
    /// The two statuses differ (a missing answer differs from any status).
    pub status_mismatch: bool,
    /// Stable's latency.
    pub stable_latency: Duration,
    /// The canary's latency.
    pub canary_latency: Duration,
    /// The bodies.
    pub body: BodyComparison,
}

/// Compares one pair.
pub fn compare(stable: &Answer<'_>, canary: &Answer<'_>, spec: &CompareSpec) -> PairComparison {
    compare_with_noise(stable, canary, None, spec).0
}

/// Compares one pair and, when there is one, stable's second answer to the
/// same request (the noise floor) with stable's first: stable's body is
/// parsed once for both.
pub fn compare_with_noise(
    stable: &Answer<'_>,
    canary: &Answer<'_>,
    noise: Option<&[u8]>,
    spec: &CompareSpec,
) -> (PairComparison, Option<BodyComparison>) {
    let stable_body = stable.body.map(ParsedBody::parse);
    let body = match (&stable_body, canary.body) {
        (Some(a), Some(b)) if stable.status.is_some() && canary.status.is_some() => {
            compare_parsed(a, &ParsedBody::parse(b), spec)
        }
        _ => BodyComparison::NotCompared,
    };
    let noise = match (&stable_body, noise) {
        (Some(a), Some(b)) => Some(compare_parsed(a, &ParsedBody::parse(b), spec)),
        _ => None,
    };
    let pair = PairComparison {
        stable_failed: stable.failed,
        canary_failed: canary.failed,
        status_mismatch: stable.status != canary.status,
        stable_latency: stable.latency,
        canary_latency: canary.latency,
        body,
    };
    (pair, noise)
}

/// A body and, when it is JSON, its parsed tree (borrowing from it).
#[derive(Debug)]
pub struct ParsedBody<'a> {
    raw: &'a [u8],
    json: Option<Node<'a>>,
}

impl<'a> ParsedBody<'a> {
    /// Parses `raw` as JSON when it is.
    pub fn parse(raw: &'a [u8]) -> ParsedBody<'a> {
        ParsedBody {
            raw,
            json: Node::parse(raw),
        }
    }
}

/// Compares two bodies: as JSON when both parse, else byte for byte.
pub fn compare_bodies(stable: &[u8], canary: &[u8], spec: &CompareSpec) -> BodyComparison {
    compare_parsed(&ParsedBody::parse(stable), &ParsedBody::parse(canary), spec)
}

/// [`compare_bodies`] on parsed bodies.
pub fn compare_parsed(
    stable: &ParsedBody<'_>,
    canary: &ParsedBody<'_>,
    spec: &CompareSpec,
) -> BodyComparison {
    let (Some(a), Some(b)) = (&stable.json, &canary.json) else {
        return BodyComparison::Bytes {
            equal: stable.raw == canary.raw,
        };
    };
    let diff = diff_json(a, b, &spec.ignore);
    let rank = spec.items.as_deref().map(|path| {
        let ia = ranked_items(a, path, spec.item_id.as_deref());
        let ib = ranked_items(b, path, spec.item_id.as_deref());
        RankAgreement {
            rbo: rbo_ext(&ia, &ib, RBO_P, spec.k),
            overlap: overlap_at_k(&ia, &ib, spec.k),
        }
    });
    BodyComparison::Json { diff, rank }
}

/// The value at a dotted path (`data.items`; array indexes allowed).
fn at_path<'n, 'a>(doc: &'n Node<'a>, path: &str) -> Option<&'n Node<'a>> {
    if path.is_empty() {
        return Some(doc);
    }
    path.split('.').try_fold(doc, |v, key| match v {
        Node::Obj(_) => v.get(key),
        Node::Arr(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    })
}

/// The ranked list's item identities: the `item_id` field of each element
/// (or the element itself), borrowed from the document and compared by
/// value (`1` and `1.0` are the same item). A missing list is empty;
/// elements without the id field are skipped.
pub fn ranked_items<'n, 'a>(
    doc: &'n Node<'a>,
    path: &str,
    item_id: Option<&str>,
) -> Vec<&'n Node<'a>> {
    let Some(Node::Arr(list)) = at_path(doc, path) else {
        return Vec::new();
    };
    list.iter()
        .filter_map(|element| match item_id {
            Some(field) => element.get(field),
            None => Some(element),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> CompareSpec {
        CompareSpec {
            items: Some("items".to_string()),
            item_id: Some("id".to_string()),
            k: 10,
            ignore: vec!["request_id".to_string()],
        }
    }

    fn answer(status: u16, body: &[u8]) -> Answer<'_> {
        Answer {
            status: Some(status),
            failed: status >= 500,
            latency: Duration::from_millis(5),
            body: Some(body),
        }
    }

    #[test]
    fn json_pair_with_ranked_lists() {
        let a = br#"{"request_id": 1, "items": [{"id": "a"}, {"id": "b"}, {"id": "c"}]}"#;
        let b = br#"{"request_id": 2, "items": [{"id": "a"}, {"id": "c"}, {"id": "b"}]}"#;
        let c = compare(&answer(200, a), &answer(200, b), &spec());
        assert!(!c.status_mismatch);
        let BodyComparison::Json { diff, rank } = c.body else {
            panic!("json expected")
        };
        let paths: Vec<_> = diff.differences.iter().map(|d| d.path.as_str()).collect();
        assert_eq!(paths, ["items.1.id", "items.2.id"]);
        let rank = rank.unwrap_or_else(|| panic!("rank expected"));
        // Same hand-worked case as rank::tests::swapped_pair_hand_worked.
        assert!((rank.rbo - 0.955).abs() < 1e-9, "{}", rank.rbo);
        assert!((rank.overlap - 1.0).abs() < 1e-9);
    }

    #[test]
    fn lists_of_plain_values_and_nested_paths() {
        let a = br#"{"data": {"recs": [1, 2, 3]}}"#;
        let b = br#"{"data": {"recs": [4, 5, 6]}}"#;
        let spec = CompareSpec {
            items: Some("data.recs".to_string()),
            item_id: None,
            ..CompareSpec::default()
        };
        let BodyComparison::Json { rank: Some(r), .. } = compare_bodies(a, b, &spec) else {
            panic!("rank expected")
        };
        assert_eq!((r.rbo, r.overlap), (0.0, 0.0));
    }

    #[test]
    fn non_json_bodies_compare_as_bytes() {
        assert_eq!(
            compare_bodies(b"hello", b"hello", &spec()),
            BodyComparison::Bytes { equal: true }
        );
        assert_eq!(
            compare_bodies(b"{\"a\":1}", b"<html>", &spec()),
            BodyComparison::Bytes { equal: false }
        );
    }

    #[test]
    fn failures_and_missing_bodies() {
        let stable = answer(200, b"{}");
        let canary = Answer {
            status: None,
            failed: true,
            latency: Duration::from_secs(2),
            body: None,
        };
        let c = compare(&stable, &canary, &spec());
        assert!(c.canary_failed && !c.stable_failed && c.status_mismatch);
        assert_eq!(c.body, BodyComparison::NotCompared);
    }
}
