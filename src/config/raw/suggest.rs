//! "Did you mean": the allowed key closest to a misspelt one.

/// The allowed key closest to a misspelt one, if it is close enough.
pub(super) fn suggest<'a>(key: &str, allowed: &[&'a str]) -> Option<&'a str> {
    allowed
        .iter()
        .map(|a| (edit_distance(key, a), *a))
        .filter(|(d, a)| *d <= 2.max(a.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, a)| a)
}

/// Levenshtein distance, by characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::{ROUTE_KEYS, UPSTREAM_KEYS};

    #[test]
    fn suggests_close_keys_only() {
        assert_eq!(suggest("weigth", &["canary_weight", "name"]), None);
        assert_eq!(suggest("canary_weigth", ROUTE_KEYS), Some("canary_weight"));
        assert_eq!(suggest("endpoint", UPSTREAM_KEYS), Some("endpoints"));
        assert_eq!(suggest("zzz", ROUTE_KEYS), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }
}
