//! Percent-decoding for the admin API: path segments (route names) and
//! query parameters (`explain?key=K`). Pure functions, table-tested.
//!
//! A query string is transport: an HTTP client sends the sticky key
//! `Müller` as `key=M%C3%BCller` and `a b` as `key=a+b`, so the admin API
//! decodes it the way HTML forms and URL libraries encode it
//! (`application/x-www-form-urlencoded`). The proxy itself never decodes
//! keys: it hashes header, cookie and query values as they arrive.

use std::borrow::Cow;

/// Why a percent-encoded string could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// A `%` not followed by two hex digits.
    #[error(
        "bad percent escape `{0}`: write `%` as %25 and other bytes as %XX with two hex digits"
    )]
    BadEscape(String),
    /// The decoded bytes are not UTF-8.
    #[error("the decoded bytes are not UTF-8: encode text as UTF-8 before percent-encoding it")]
    NotUtf8,
}

/// How `+` reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Plus {
    /// A space, as in query strings.
    Space,
    /// A plus sign, as in paths.
    Literal,
}

/// Decodes `%XX` escapes (and `+` as `plus` says); borrows when there is
/// nothing to decode.
fn decode(s: &str, plus: Plus) -> Result<Cow<'_, str>, DecodeError> {
    let b = s.as_bytes();
    let plus_is_space = plus == Plus::Space;
    if !b.iter().any(|&c| c == b'%' || (plus_is_space && c == b'+')) {
        return Ok(Cow::Borrowed(s));
    }
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while let Some(&c) = b.get(i) {
        match c {
            b'%' => {
                let hex = b
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .filter(|h| h.bytes().all(|d| d.is_ascii_hexdigit()))
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                let Some(byte) = hex else {
                    let escape = s.get(i..).unwrap_or("").chars().take(3).collect();
                    return Err(DecodeError::BadEscape(escape));
                };
                out.push(byte);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            _ => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out)
        .map(Cow::Owned)
        .map_err(|_| DecodeError::NotUtf8)
}

/// A route name from a path segment: `%XX`-decoded when it decodes to UTF-8,
/// else as written (a literal `%` in a name still finds the route).
pub fn path_segment(s: &str) -> Cow<'_, str> {
    decode(s, Plus::Literal).unwrap_or(Cow::Borrowed(s))
}

/// The first value of parameter `name` in a query string, decoded as a
/// query string is (`%XX` escapes, `+` as space); `Ok(None)` when absent.
pub fn query_param(query: Option<&str>, name: &str) -> Result<Option<String>, DecodeError> {
    for pair in query.unwrap_or("").split('&') {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        if decode(k, Plus::Space)? == name {
            return decode(v, Plus::Space).map(|v| Some(v.into_owned()));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_names_are_percent_decoded() {
        assert_eq!(path_segment("a%20b%2Fc"), "a b/c");
        assert!(matches!(path_segment("plain"), Cow::Borrowed("plain")));
        assert_eq!(path_segment("a+b"), "a+b");
        // Not decodable: the name as written.
        assert_eq!(path_segment("50%"), "50%");
        assert_eq!(path_segment("%ff"), "%ff");
    }

    #[test]
    fn query_params_decode_like_a_form() {
        let key = |q: &str| query_param(Some(q), "key");
        let cases: &[(&str, Option<&str>)] = &[
            ("key=M%C3%BCller", Some("Müller")),
            ("key=M%c3%bcller", Some("Müller")),
            ("key=a%2Bb", Some("a+b")),
            ("key=a+b", Some("a b")),
            ("key=a%20b", Some("a b")),
            ("key=user%40example.com", Some("user@example.com")),
            ("key=user@example.com", Some("user@example.com")),
            ("key=plain", Some("plain")),
            ("key=", Some("")),
            ("key", Some("")),
            ("other=1&key=x&key=y", Some("x")),
            ("k%65y=x", Some("x")),
            ("keys=x", None),
            ("", None),
        ];
        for (q, want) in cases {
            assert_eq!(key(q), Ok(want.map(str::to_string)), "{q}");
        }
        assert_eq!(query_param(None, "key"), Ok(None));
    }

    #[test]
    fn bad_query_encodings_are_errors() {
        let key = |q: &str| query_param(Some(q), "key");
        let bad = |e: &str| Err(DecodeError::BadEscape(e.to_string()));
        assert_eq!(key("key=50%"), bad("%"));
        assert_eq!(key("key=%zz"), bad("%zz"));
        assert_eq!(key("key=%4"), bad("%4"));
        assert_eq!(key("key=%+1"), bad("%+1"));
        assert_eq!(key("key=%ff"), Err(DecodeError::NotUtf8));
        assert_eq!(key("key=%C3"), Err(DecodeError::NotUtf8));
        // Multi-byte text right after a `%` is a bad escape, not a panic.
        assert_eq!(key("key=%ü"), bad("%ü"));
        assert_eq!(key("key=%%C3%BC"), bad("%%C"));
        // Only the parameter asked for is decoded (and every name on the way).
        assert_eq!(key("x=%&key=1"), Ok(Some("1".to_string())));
        assert_eq!(key("%zz=1&key=1"), bad("%zz"));
    }
}
