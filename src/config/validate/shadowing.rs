//! The shadowed-route warning: a route that an earlier route always takes
//! first. Found with a map of the routes seen so far, so a file of 10,000
//! routes is checked in milliseconds rather than by comparing every pair.

use std::collections::HashMap;

use super::Checker;
use crate::config::raw::RawRoute;

/// A route's match as the warning compares it: host lower-cased as written
/// (`None` = any host), path prefix as written (`None` = any path).
pub(super) type MatchKey<'a> = (Option<&'a str>, Option<&'a str>);

/// Warns about a route that an earlier route always takes first. Only
/// certain shadowing is reported (same host or any host, and a path prefix
/// that contains the later one whether prefixes match by segment or by
/// character), so the warning is never a false alarm.
pub(super) fn shadowing(c: &mut Checker<'_>, routes: &[RawRoute]) {
    let hosts: Vec<Option<String>> = routes
        .iter()
        .map(|r| {
            let host = r.matcher.as_ref().and_then(|m| m.host.as_ref());
            host.map(|h| h.value.to_ascii_lowercase())
        })
        .collect();
    let keys: Vec<MatchKey<'_>> = routes
        .iter()
        .zip(&hosts)
        .map(|(r, host)| {
            let prefix = r.matcher.as_ref().and_then(|m| m.path_prefix.as_ref());
            (host.as_deref(), prefix.map(|p| p.value.as_str()))
        })
        .collect();
    for (later, earlier) in first_shadowing(&keys).into_iter().enumerate() {
        let (Some(earlier), Some(later)) = (earlier.and_then(|i| routes.get(i)), routes.get(later))
        else {
            continue;
        };
        let name = |r: &RawRoute| {
            r.name
                .as_ref()
                .map_or("(unnamed)", |n| n.value.as_str())
                .to_owned()
        };
        let line = c.line_of(earlier.at);
        let msg = format!(
            "route `{}` never matches: route `{}` (line {line}) comes first and matches every request it would; move it earlier or narrow `{}`'s match",
            name(later),
            name(earlier),
            name(earlier)
        );
        c.warn(later.at, msg);
    }
}

/// For each route, the first earlier route that [`covers`] it, if any.
/// Every prefix that can cover a path prefix `l` is a prefix of it that
/// ends at a `/`, right before one, or at the end of `l`; so each route
/// looks up those few candidates, under its own host and under no host,
/// among the first route seen with each key.
pub(super) fn first_shadowing(keys: &[MatchKey<'_>]) -> Vec<Option<usize>> {
    let mut first: HashMap<MatchKey<'_>, usize> = HashMap::with_capacity(keys.len());
    let mut out = Vec::with_capacity(keys.len());
    for (j, &(host, prefix)) in keys.iter().enumerate() {
        let hosts = [None, host];
        let hosts = if host.is_some() {
            &hosts[..]
        } else {
            &hosts[..1]
        };
        let mut found: Option<usize> = None;
        for &h in hosts {
            let mut look = |p: Option<&str>| {
                if let Some(&i) = first.get(&(h, p)) {
                    found = Some(found.map_or(i, |f| f.min(i)));
                }
            };
            look(None);
            if let Some(l) = prefix {
                let bytes = l.as_bytes();
                for k in 0..=bytes.len() {
                    let cut = k == bytes.len()
                        || bytes.get(k) == Some(&b'/')
                        || (k > 0 && bytes.get(k - 1) == Some(&b'/'));
                    // `/` is ASCII, so every cut is a char boundary.
                    if let (true, Some(p)) = (cut, l.get(..k)) {
                        look(Some(p));
                    }
                }
            }
        }
        out.push(found);
        first.entry((host, prefix)).or_insert(j);
    }
    out
}

/// Whether a route matching `earlier` takes every request that one matching
/// `later` would (the definition [`first_shadowing`] implements; kept as
/// its test oracle).
#[cfg(test)]
fn covers(earlier: MatchKey<'_>, later: MatchKey<'_>) -> bool {
    let ((eh, ep), (lh, lp)) = (earlier, later);
    let host_covers = eh.is_none() || eh == lh;
    let path_covers = match (ep, lp) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(e), Some(l)) => {
            l == e || (e.ends_with('/') && l.starts_with(e)) || l.starts_with(&format!("{e}/"))
        }
    };
    host_covers && path_covers
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn by_pairs(keys: &[MatchKey<'_>]) -> Vec<Option<usize>> {
        (0..keys.len())
            .map(|j| (0..j).find(|&i| covers(keys[i], keys[j])))
            .collect()
    }

    #[test]
    fn examples() {
        let keys = [
            (None, Some("/api/")),        // 0
            (None, Some("/api/x")),       // 1: under 0
            (Some("a"), Some("/api")),    // 2: 0 needs `/api/...`
            (Some("a"), Some("/api/v1")), // 3: under 0 (any host)
            (Some("b"), Some("/apix")),   // 4: by characters only
            (Some("b"), None),            // 5
            (Some("b"), Some("/apix")),   // 6: under 4
            (None, None),                 // 7
            (Some("c"), Some("/")),       // 8: under 7
        ];
        let want = [
            None,
            Some(0),
            None,
            Some(0),
            None,
            None,
            Some(4),
            None,
            Some(7),
        ];
        assert_eq!(first_shadowing(&keys), want);
        assert_eq!(by_pairs(&keys), want);
    }

    proptest! {
        /// The map lookup finds what comparing every pair finds.
        #[test]
        fn agrees_with_comparing_every_pair(
            raw in proptest::collection::vec(
                (proptest::option::of("[ab]"), proptest::option::of("[/a\u{fc}]{0,5}")),
                0..30,
            ),
        ) {
            let keys: Vec<MatchKey<'_>> = raw.iter().map(|(h, p)| (h.as_deref(), p.as_deref())).collect();
            prop_assert_eq!(first_shadowing(&keys), by_pairs(&keys));
        }
    }
}
