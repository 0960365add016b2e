//! Matching a request against a route's `match` and its rules' conditions.
//!
//! Everything works on borrowed bytes of the request as sent: nothing is
//! percent-decoded, case-folded (except the host) or copied.

use std::collections::HashSet;

use http::header::COOKIE;
use http::{HeaderMap, HeaderName};

use crate::config::literal::Literal;
use crate::config::types::{Condition, RouteMatch, ValueRegex, ValueTest};

/// The host part of a `Host` header or URI authority: port stripped, IPv6
/// brackets removed, one trailing dot (`example.com.`) removed. Case is left
/// alone; compare with [`host_eq`].
///
/// `"Shop.Example:8080"` → `"Shop.Example"`, `"[::1]:80"` → `"::1"`,
/// `"::1"` (unbracketed, not valid but seen) → `"::1"`.
pub fn normalize_host(raw: &str) -> &str {
    let raw = raw.trim();
    // Userinfo is not allowed in Host, but a URI authority may carry it.
    let raw = match raw.rfind('@') {
        Some(at) => &raw[at + 1..],
        None => raw,
    };
    let host = if let Some(rest) = raw.strip_prefix('[') {
        match rest.find(']') {
            Some(end) => &rest[..end],
            None => rest,
        }
    } else {
        match raw.find(':') {
            // Exactly one colon: `host:port`. More: an unbracketed IPv6 literal.
            Some(colon) if raw[colon + 1..].find(':').is_none() => &raw[..colon],
            _ => raw,
        }
    };
    host.strip_suffix('.').unwrap_or(host)
}

/// Whether a request host (already [`normalize_host`]d) is the route's host.
/// The route's host is lower-cased by validation; brackets and a trailing dot
/// on it are tolerated too.
pub fn host_eq(request_host: &str, route_host: &str) -> bool {
    request_host.eq_ignore_ascii_case(normalize_host(route_host))
}

/// Whether a route's `match` holds. `host` is the request's normalized host,
/// if it has one; a route with a host never matches a request without one.
///
/// `path_prefix` is a plain (nginx-like) byte prefix of the raw path:
/// `/api/recommend` matches `/api/recommend`, `/api/recommend/x` *and*
/// `/api/recommendations`. To match whole segments only, configure
/// `/api/recommend/`. The path is not decoded or normalized.
pub fn route_matches(m: &RouteMatch, host: Option<&str>, path: &str) -> bool {
    if let Some(want) = &m.host {
        match host {
            Some(h) if host_eq(h, want) => {}
            _ => return false,
        }
    }
    match &m.path_prefix {
        Some(prefix) => path.as_bytes().starts_with(prefix.as_bytes()),
        None => true,
    }
}

/// Whether a value passes a test. `Equals` is byte equality; `Regex` is an
/// unanchored search and never matches a value that is not UTF-8.
pub fn test_value(test: &ValueTest, value: &[u8]) -> bool {
    match test {
        ValueTest::Equals(want) => value == want.as_bytes(),
        ValueTest::Regex(re) => regex_matches(re, value),
    }
}

/// `re.is_match(value)` if `value` is UTF-8, else `false`.
///
/// A regex that is a plain literal (`regex = "iPhone"`, the usual rule) is
/// first looked for as bytes: a value without it is rejected without
/// validating it as UTF-8 or entering the regex engine, which together cost
/// more than the rest of [`crate::routing::decide`] (a 110-byte user agent:
/// ~650 of 2,600 instructions). A value that has it still goes through the
/// regex, so the fast path only ever answers "no", and only where the regex
/// would: this relies on the regex having been built by `Regex::new`, as the
/// config does (flags can only come inline then, and `(` is not literal).
pub fn regex_matches(re: &ValueRegex, value: &[u8]) -> bool {
    if let Some(rare) = re.literal_rare() {
        let lit = Literal {
            bytes: re.as_str().as_bytes(),
            rare,
        };
        if !lit.is_in(value) {
            return false;
        }
    }
    match std::str::from_utf8(value) {
        Ok(s) => re.is_match(s),
        Err(_) => false,
    }
}

/// Whether a rule's condition holds. `sticky` is the request's sticky key
/// (the route's source, already extracted), used by `sticky_in`.
pub fn condition_holds(
    cond: &Condition,
    headers: &HeaderMap,
    query: Option<&str>,
    sticky: Option<&[u8]>,
) -> bool {
    match cond {
        // A header sent several times matches when any instance does.
        Condition::Header(name, test) => headers
            .get_all(name)
            .iter()
            .any(|v| test_value(test, v.as_bytes())),
        // A cookie sent several times (several paths, several `Cookie`
        // headers) matches when any instance does.
        Condition::Cookie(name, test) => cookie_values(headers, name).any(|v| test_value(test, v)),
        Condition::Query(name, test) => match query {
            Some(q) => query_pairs(q).any(|(n, v)| n == name.as_bytes() && test_value(test, v)),
            None => false,
        },
        Condition::StickyIn(set) => sticky.is_some_and(|key| set_contains_bytes(set, key)),
    }
}

/// `set.contains(key)`, without SipHash for the small sets `sticky_in` usually
/// holds (a few staff ids): comparing a handful of strings, most rejected on
/// length, is several times cheaper than hashing the key.
#[inline]
pub fn set_contains(set: &HashSet<String>, key: &str) -> bool {
    const LINEAR_UP_TO: usize = 8;
    if set.len() <= LINEAR_UP_TO {
        set.iter().any(|s| s == key)
    } else {
        set.contains(key)
    }
}

/// [`set_contains`] for a key as raw bytes: a key that is not UTF-8 is in
/// no set. Small sets compare bytes, so the key is not validated first.
#[inline]
pub fn set_contains_bytes(set: &HashSet<String>, key: &[u8]) -> bool {
    const LINEAR_UP_TO: usize = 8;
    if set.len() <= LINEAR_UP_TO {
        set.iter().any(|s| s.as_bytes() == key)
    } else {
        std::str::from_utf8(key).is_ok_and(|k| set.contains(k))
    }
}

/// The first value of a header, as raw bytes.
pub fn header_value<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a [u8]> {
    headers.get(name).map(|v| v.as_bytes())
}

/// The first cookie called `name`, as sent. Browsers send the cookie with the
/// most specific path first (RFC 6265 §5.4), so the first one is the one the
/// application at this path sees too.
pub fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a [u8]> {
    cookie_values(headers, name).next()
}

/// The first query parameter called `name`, as sent (not percent-decoded,
/// `+` kept). A bare `name` without `=` has the empty value.
pub fn query_value<'a>(query: &'a str, name: &str) -> Option<&'a [u8]> {
    query_pairs(query)
        .find(|(n, _)| *n == name.as_bytes())
        .map(|(_, v)| v)
}

const OWS: &[u8] = b" \t";

fn trim_start_ows(mut s: &[u8]) -> &[u8] {
    while let [first, rest @ ..] = s {
        if !OWS.contains(first) {
            break;
        }
        s = rest;
    }
    s
}

fn trim_end_ows(mut s: &[u8]) -> &[u8] {
    while let [rest @ .., last] = s {
        if !OWS.contains(last) {
            break;
        }
        s = rest;
    }
    s
}

fn trim_ows(s: &[u8]) -> &[u8] {
    trim_end_ows(trim_start_ows(s))
}

/// Every `name=value` pair of every `Cookie` header, in order. Pairs are split
/// on `;`, name and value trimmed of spaces and tabs, the value split at the
/// first `=` (so `a=b=c` is `a` → `b=c`); a pair without `=` is skipped.
/// Quotes around a value are kept: the value is as sent.
pub fn cookies(headers: &HeaderMap) -> Cookies<'_> {
    Cookies {
        values: headers.get_all(COOKIE).into_iter(),
        rest: &[],
    }
}

/// Iterator over cookie pairs; see [`cookies`]. Hand-written rather than a
/// `flat_map` chain: this runs per request and the chain cost twice as much.
#[derive(Debug)]
pub struct Cookies<'a> {
    values: http::header::ValueIter<'a, http::HeaderValue>,
    rest: &'a [u8],
}

impl<'a> Iterator for Cookies<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let pair = self.next_raw()?;
            let (name, value) = split_once(pair, b'=');
            // `split_once` leaves the separator's slot out: a pair without `=`
            // has `name == pair`.
            if name.len() < pair.len() {
                return Some((trim_ows(name), trim_ows(value)));
            }
        }
    }
}

/// The values of every cookie called `name`, in order; the same pairs as
/// [`cookies`] yields for that name, found faster: `memchr` jumps to each
/// occurrence of the name's first byte, and only there is the name compared
/// and the pair's start checked. The bench's `Cookie` header (four pairs,
/// the name in none but one) costs a third of walking it pair by pair.
pub fn cookie_values<'a, 'n>(headers: &'a HeaderMap, name: &'n str) -> CookieValues<'a, 'n> {
    let name = name.as_bytes();
    CookieValues {
        values: cookie_name_possible(name).then(|| headers.get_all(COOKIE).into_iter()),
        header: &[],
        pos: 0,
        name,
    }
}

/// A name with `=` can never be a cookie name (the split is at the first
/// `=`), nor can one with `;` (pairs are split there) or surrounding
/// whitespace (names are trimmed).
fn cookie_name_possible(name: &[u8]) -> bool {
    // One pass: two `contains` and a trim cost 78 instructions for `vip`.
    let edge_ok = |b: Option<&u8>| !matches!(b, Some(b' ' | b'\t'));
    edge_ok(name.first()) && edge_ok(name.last()) && name.iter().all(|&b| b != b'=' && b != b';')
}

/// Iterator over the values of one cookie name; see [`cookie_values`].
#[derive(Debug)]
pub struct CookieValues<'a, 'n> {
    /// The `Cookie` headers not yet looked at; `None` when nothing can match.
    values: Option<http::header::ValueIter<'a, http::HeaderValue>>,
    /// The `Cookie` header being scanned, and where to go on from.
    header: &'a [u8],
    pos: usize,
    name: &'n [u8],
}

impl<'a> Iterator for CookieValues<'a, '_> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        // The empty name is matched by pairs that start with `=`.
        let first = self.name.first().copied().unwrap_or(b'=');
        loop {
            let rest = self.header.get(self.pos..).unwrap_or_default();
            let Some(i) = find_byte(first, rest) else {
                self.header = self.values.as_mut()?.next()?.as_bytes();
                self.pos = 0;
                continue;
            };
            let at = self.pos + i;
            self.pos = at + 1;
            if let Some((value, end)) = named_value_at(self.header, at, self.name) {
                self.pos = end;
                return Some(value);
            }
        }
    }
}

/// If a pair of `header` starts at `at` (only spaces or tabs between it and
/// the previous `;` or the start) and its name is `name` (then spaces or
/// tabs, then `=`): its trimmed value, and the index of the pair's end.
#[inline]
fn named_value_at<'a>(header: &'a [u8], at: usize, name: &[u8]) -> Option<(&'a [u8], usize)> {
    let (before, from_name) = (header.get(..at)?, header.get(at..)?);
    if !matches!(trim_end_ows(before).last(), None | Some(b';')) {
        return None;
    }
    let after = trim_start_ows(from_name.strip_prefix(name)?).strip_prefix(b"=")?;
    let (value, _) = split_once(after, b';');
    let end = header.len() - after.len() + value.len();
    Some((trim_ows(value), end))
}

impl<'a> Cookies<'a> {
    /// The next `;`-separated piece, untrimmed, across `Cookie` headers.
    #[inline]
    fn next_raw(&mut self) -> Option<&'a [u8]> {
        while self.rest.is_empty() {
            self.rest = self.values.next()?.as_bytes();
        }
        let (pair, tail) = split_once(self.rest, b';');
        self.rest = tail;
        Some(pair)
    }
}

/// The index of the first `byte` in `s`. `memchr` dispatches to its SIMD
/// routine through a function pointer and sets up vectors, ~60
/// instructions a call; under 16 bytes a plain loop is cheaper (cookie
/// values and the tail after the last candidate are often that short).
#[inline]
fn find_byte(byte: u8, s: &[u8]) -> Option<usize> {
    if s.len() < 16 {
        s.iter().position(|&b| b == byte)
    } else {
        memchr::memchr(byte, s)
    }
}

/// `(before, after)` the first `sep`, or `(s, [])` without one.
#[inline]
fn split_once(s: &[u8], sep: u8) -> (&[u8], &[u8]) {
    match find_byte(sep, s) {
        Some(i) => (&s[..i], &s[i + 1..]),
        None => (s, &s[s.len()..]),
    }
}

/// Every `name=value` pair of a raw query string, in order, split on `&`;
/// empty pieces (`a=1&&b=2`) are skipped, `name` alone is `name` → `""`.
pub fn query_pairs(query: &str) -> impl Iterator<Item = (&[u8], &[u8])> {
    query
        .as_bytes()
        .split(|b| *b == b'&')
        .filter(|p| !p.is_empty())
        .map(|pair| split_once(pair, b'='))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use http::HeaderValue;
    use proptest::prelude::*;

    #[test]
    fn hosts_normalize() {
        assert_eq!(normalize_host("shop.example"), "shop.example");
        assert_eq!(normalize_host("Shop.Example:8080"), "Shop.Example");
        assert_eq!(normalize_host("shop.example."), "shop.example");
        assert_eq!(normalize_host("shop.example.:443"), "shop.example");
        assert_eq!(normalize_host("[::1]:8080"), "::1");
        assert_eq!(normalize_host("[::1]"), "::1");
        assert_eq!(normalize_host("[2001:DB8::1"), "2001:DB8::1");
        assert_eq!(normalize_host("::1"), "::1");
        assert_eq!(normalize_host("user:pw@shop.example:80"), "shop.example");
        assert_eq!(normalize_host(""), "");
        assert_eq!(normalize_host(":"), "");
        assert!(host_eq("SHOP.example", "shop.example"));
        assert!(host_eq("2001:DB8::1", "[2001:db8::1]"));
        assert!(!host_eq("shop.example.evil", "shop.example"));
    }

    #[test]
    fn path_prefix_is_a_plain_prefix() {
        let m = RouteMatch {
            host: None,
            path_prefix: Some("/api/recommend".into()),
        };
        assert!(route_matches(&m, None, "/api/recommend"));
        assert!(route_matches(&m, None, "/api/recommend/x"));
        assert!(route_matches(&m, None, "/api/recommendations"));
        assert!(!route_matches(&m, None, "/api/recommen"));
        assert!(!route_matches(&m, None, "/API/recommend"));
        assert!(!route_matches(&m, None, "/x/api/recommend"));
        assert!(!route_matches(&m, None, ""));
    }

    fn cookie_headers(values: &[&[u8]]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(COOKIE, HeaderValue::from_bytes(v).unwrap());
        }
        h
    }

    #[test]
    fn cookie_parsing() {
        let h = cookie_headers(&[b"a=1; b=x=y ;c=\"q\";;  d = 2 ;e=;flag", b"a=second; f=%41"]);
        let all: Vec<_> = cookies(&h).collect();
        assert_eq!(
            all,
            vec![
                (&b"a"[..], &b"1"[..]),
                (b"b", b"x=y"),
                (b"c", b"\"q\""),
                (b"d", b"2"),
                (b"e", b""),
                (b"a", b"second"),
                (b"f", b"%41"),
            ]
        );
        assert_eq!(cookie_value(&h, "a"), Some(&b"1"[..]));
        assert_eq!(cookie_value(&h, "f"), Some(&b"%41"[..]));
        assert_eq!(cookie_value(&h, "flag"), None);
        assert_eq!(cookie_value(&h, "A"), None);
        assert_eq!(cookie_value(&HeaderMap::new(), "a"), None);
    }

    #[test]
    fn cookie_name_only_at_a_pair_start() {
        let h = cookie_headers(&[b"a=vip=1; x vip=2;vipx=3; \t vip \t= 4 ;vip=5"]);
        assert_eq!(
            cookie_values(&h, "vip").collect::<Vec<_>>(),
            vec![&b"4"[..], b"5"]
        );
        let h = cookie_headers(&[b"vip", b"=0; vip=1"]);
        assert_eq!(
            cookie_values(&h, "vip").collect::<Vec<_>>(),
            vec![&b"1"[..]]
        );
        assert_eq!(cookie_values(&h, "").collect::<Vec<_>>(), vec![&b"0"[..]]);
        // A name with `;` spans two pairs in the bytes, never in the parse.
        let h = cookie_headers(&[b"a;b=1"]);
        assert_eq!(cookie_value(&h, "a;b"), None);
        assert_eq!(cookie_value(&h, "b"), Some(&b"1"[..]));
    }

    #[test]
    fn query_parsing() {
        let q = "a=1&&b=x=y&flag&c=&a=2&d=%41+b&";
        let all: Vec<_> = query_pairs(q).collect();
        assert_eq!(
            all,
            vec![
                (&b"a"[..], &b"1"[..]),
                (b"b", b"x=y"),
                (b"flag", b""),
                (b"c", b""),
                (b"a", b"2"),
                (b"d", b"%41+b"),
            ]
        );
        assert_eq!(query_value(q, "a"), Some(&b"1"[..]));
        assert_eq!(query_value(q, "d"), Some(&b"%41+b"[..]));
        assert_eq!(query_value(q, "flag"), Some(&b""[..]));
        assert_eq!(query_value(q, "z"), None);
        assert_eq!(query_value("", "a"), None);
    }

    proptest::proptest! {
        #[test]
        fn cookie_values_agrees_with_cookies(
            values in proptest::collection::vec("[ a-c=;\t\"]{0,24}", 0..3),
            name in "[ a-c=;\t]{0,3}",
        ) {
            let mut h = HeaderMap::new();
            for v in &values {
                h.append(COOKIE, HeaderValue::from_str(v).unwrap());
            }
            let slow: Vec<_> = cookies(&h).filter(|(n, _)| *n == name.as_bytes()).map(|(_, v)| v).collect();
            let fast: Vec<_> = cookie_values(&h, &name).collect();
            proptest::prop_assert_eq!(fast, slow);
        }

        /// The literal fast path answers as the regex does, for literal
        /// and non-literal patterns (meta characters in the alphabet), on
        /// values that are not always UTF-8.
        #[test]
        fn regex_matches_agrees_with_the_regex(
            pattern in "[aAb1 /;.*()|?^$-]{0,5}",
            value in proptest::collection::vec(
                prop::sample::select(vec![b'a', b'A', b'b', b'1', b' ', b'/', b';', b'.', b'-', 0xc3, 0xbc, 0xff]),
                0..48,
            ),
        ) {
            let Ok(re) = regex::Regex::new(&pattern) else {
                return Ok(());
            };
            let re = ValueRegex::from(re);
            prop_assert_eq!(regex_matches(&re, &value), regex_slow(&re, &value));
        }

        /// The candidate search agrees with memmem, also past the candidate
        /// limit (a two-letter alphabet gives many false candidates).
        #[test]
        fn literal_search_agrees_with_memmem(
            needle in "[aA]{0,5}",
            haystack in "[aA]{0,80}",
        ) {
            let lit = Literal::of(&needle).unwrap();
            let want = memchr::memmem::find(haystack.as_bytes(), needle.as_bytes()).is_some();
            prop_assert_eq!(lit.is_in(haystack.as_bytes()), want);
        }

        #[test]
        fn set_contains_agrees_with_contains(
            set in proptest::collection::hash_set("[a-c]{0,3}", 0..20),
            key in "[a-c]{0,3}",
        ) {
            proptest::prop_assert_eq!(set_contains(&set, &key), set.contains(&key));
            proptest::prop_assert_eq!(set_contains_bytes(&set, key.as_bytes()), set.contains(&key));
        }

        #[test]
        fn set_contains_bytes_agrees_on_any_bytes(
            set in proptest::collection::hash_set("[a\u{fc}]{0,2}", 0..20),
            key in proptest::collection::vec(prop::sample::select(vec![b'a', 0xc3, 0xbc, 0xff]), 0..5),
        ) {
            let want = std::str::from_utf8(&key).is_ok_and(|k| set.contains(k));
            proptest::prop_assert_eq!(set_contains_bytes(&set, &key), want);
        }
    }

    /// What [`regex_matches`] must answer: the regex on the value as UTF-8.
    fn regex_slow(re: &regex::Regex, value: &[u8]) -> bool {
        std::str::from_utf8(value).is_ok_and(|s| re.is_match(s))
    }

    #[test]
    fn literal_fast_path_is_taken_for_plain_patterns_only() {
        let lit = |p| Literal::of(p).map(|l| (l.bytes, l.rare));
        assert_eq!(lit("iPhone"), Some((&b"iPhone"[..], 1)));
        assert_eq!(lit("android"), Some((&b"android"[..], 0)));
        assert_eq!(lit("Mobile Safari/6"), Some((&b"Mobile Safari/6"[..], 0)));
        assert_eq!(lit("x-1"), Some((&b"x-1"[..], 1)));
        assert_eq!(lit(""), Some((&b""[..], 0)));
        for meta in [
            "a.b", "^a", "a$", "a*", "a+", "a?", "(a)", "[a]", "a{2}", "a|b", "\\d", "(?i)a", "#",
            "&", "~", "\u{fc}", "\t",
        ] {
            assert_eq!(lit(meta), None, "{meta}");
        }
        let re = ValueRegex::from(regex::Regex::new("iPhone").unwrap());
        assert!(regex_matches(
            &re,
            b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0)"
        ));
        assert!(!regex_matches(
            &re,
            b"Mozilla/5.0 (X11; Linux x86_64) Chrome/126"
        ));
        assert!(!regex_matches(&re, b"iphone"));
        assert!(!regex_matches(&re, b"iPhone \xff"));
        // More than eight false candidates for the rare byte: the memmem tail.
        let many = [&b"iPhonX ".repeat(20)[..], b"iPhone"].concat();
        assert!(regex_matches(&re, &many));
        assert!(!regex_matches(&re, &many[..many.len() - 1]));
        // The empty pattern matches every UTF-8 value.
        let empty = ValueRegex::from(regex::Regex::new("").unwrap());
        assert!(regex_matches(&empty, b""));
        assert!(regex_matches(&empty, b"abc"));
        assert!(!regex_matches(&empty, b"\xff"));
    }

    #[test]
    fn regex_skips_non_utf8() {
        let re = ValueTest::Regex(regex::Regex::new("iPhone").unwrap().into());
        assert!(test_value(&re, b"Mozilla (iPhone; CPU)"));
        assert!(!test_value(&re, b"iPhone \xff"));
        let eq = ValueTest::Equals("\u{fc}".into());
        assert!(test_value(&eq, "\u{fc}".as_bytes()));
        assert!(!test_value(&eq, b"\xfc"));
    }
}
