//! Request-smuggling defence: a pure check of the framing headers, run before
//! anything is forwarded (RFC 9112 §6.3, the rules Envoy and nginx apply).
//!
//! hyper already rejects the worst (conflicting `Content-Length`, a
//! `Transfer-Encoding` whose last coding is not `chunked`, malformed header
//! lines); what it tolerates because the RFC allows it we reject here, since a
//! proxy that forwards an ambiguous message is exactly how smuggling happens:
//! - `Content-Length` must appear once, as plain digits (no lists, no signs);
//! - `Transfer-Encoding` must be exactly one `chunked` (no `chunked, chunked`,
//!   no `gzip, chunked`, no parameters), and only in HTTP/1.1;
//! - never both;
//! - HTTP/1.1 needs exactly one `Host`; no version may send two; its value
//!   must be `host[:port]` (RFC 9112 §3.2 wants 400 for anything else).
//!
//! A rejected request gets 400 and the connection is closed, because the
//! bytes after its head can no longer be trusted to start a new request.

use http::header::{HeaderMap, CONTENT_LENGTH, HOST, TRANSFER_ENCODING};
use http::Version;

/// Why a request's framing is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FramingError {
    /// More than one `Content-Length` (even with equal values).
    DuplicateContentLength,
    /// A `Content-Length` that is not plain digits.
    InvalidContentLength,
    /// A `Transfer-Encoding` other than a single `chunked` (or in HTTP/1.0, HTTP/2).
    UnsupportedTransferEncoding,
    /// Both `Content-Length` and `Transfer-Encoding`.
    ContentLengthWithTransferEncoding,
    /// HTTP/1.1 without `Host`.
    MissingHost,
    /// More than one `Host`.
    DuplicateHost,
    /// A `Host` value that is not `uri-host [ ":" port ]`.
    InvalidHost,
}

impl FramingError {
    /// A short reason for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FramingError::DuplicateContentLength => "duplicate content-length",
            FramingError::InvalidContentLength => "invalid content-length",
            FramingError::UnsupportedTransferEncoding => "unsupported transfer-encoding",
            FramingError::ContentLengthWithTransferEncoding => {
                "both content-length and transfer-encoding"
            }
            FramingError::MissingHost => "missing host",
            FramingError::DuplicateHost => "duplicate host",
            FramingError::InvalidHost => "invalid host",
        }
    }
}

/// What the request path needs from a head whose framing passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The declared body length, if any.
    pub content_length: Option<u64>,
    /// Bytes of the header lines as sent (`name: value\r\n` each).
    pub header_bytes: usize,
}

/// Checks the framing headers of a request head.
pub fn check(version: Version, headers: &HeaderMap) -> Result<(), FramingError> {
    inspect(version, headers).map(|_| ())
}

/// Checks the framing headers and measures the head, in one pass over the
/// header lines: comparing each name with three standard names is cheaper
/// than three hashed lookups, and the request path needs the size and the
/// declared length anyway.
pub fn inspect(version: Version, headers: &HeaderMap) -> Result<Head, FramingError> {
    let mut length = None;
    let mut lengths = 0u32;
    let mut encoding = None;
    let mut encodings = 0u32;
    let mut hosts = 0u32;
    let mut host = None;
    let mut header_bytes = 0;
    for (name, value) in headers {
        header_bytes += name.as_str().len() + value.len() + 4;
        if name == CONTENT_LENGTH {
            lengths += 1;
            length.get_or_insert(value);
        } else if name == TRANSFER_ENCODING {
            encodings += 1;
            encoding.get_or_insert(value);
        } else if name == HOST {
            hosts += 1;
            host.get_or_insert(value);
        }
    }
    if lengths > 1 {
        return Err(FramingError::DuplicateContentLength);
    }
    let content_length = match length {
        Some(v) => {
            let b = v.as_bytes();
            if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
                return Err(FramingError::InvalidContentLength);
            }
            // Digits only; `None` on overflow (hyper refuses those itself).
            v.to_str().ok().and_then(|t| t.parse().ok())
        }
        None => None,
    };
    if let Some(te) = encoding {
        let single_chunked = te.as_bytes().eq_ignore_ascii_case(b"chunked");
        if !single_chunked || encodings > 1 || version != Version::HTTP_11 {
            return Err(FramingError::UnsupportedTransferEncoding);
        }
        if length.is_some() {
            return Err(FramingError::ContentLengthWithTransferEncoding);
        }
    }
    if hosts > 1 {
        return Err(FramingError::DuplicateHost);
    }
    if hosts == 0 && version == Version::HTTP_11 {
        return Err(FramingError::MissingHost);
    }
    if host.is_some_and(|h| !valid_host(h.as_bytes())) {
        return Err(FramingError::InvalidHost);
    }
    Ok(Head {
        content_length,
        header_bytes,
    })
}

/// Whether a `Host` value is `uri-host [ ":" port ]` (RFC 9110 §7.2 with
/// RFC 3986 §3.2.2): a bracketed IP literal or a reg-name (unreserved,
/// sub-delims and `%XX`), then optionally `:` and digits. Empty is valid: a
/// request whose target has no authority sends an empty `Host`.
pub fn valid_host(value: &[u8]) -> bool {
    let (host_ok, port) = match value.strip_prefix(b"[") {
        Some(rest) => {
            let Some(end) = rest.iter().position(|&b| b == b']') else {
                return false;
            };
            let (literal, after) = rest.split_at(end);
            let literal_ok = !literal.is_empty()
                && literal
                    .iter()
                    .all(|&b| is_unreserved_or_sub_delim(b) || b == b':');
            // `after` starts with the `]` just found.
            match after {
                [b']'] => (literal_ok, &[][..]),
                [b']', b':', port @ ..] => (literal_ok, port),
                _ => return false,
            }
        }
        None => match value.iter().position(|&b| b == b':') {
            Some(colon) => {
                let (name, port) = value.split_at(colon);
                (reg_name(name), port.get(1..).unwrap_or_default())
            }
            None => (reg_name(value), &[][..]),
        },
    };
    host_ok && port.iter().all(u8::is_ascii_digit)
}

/// RFC 3986 `reg-name`: unreserved, sub-delims and percent-encoded octets.
fn reg_name(name: &[u8]) -> bool {
    let mut i = 0;
    while let Some(&b) = name.get(i) {
        if b == b'%' {
            let hex = |j: usize| name.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if is_unreserved_or_sub_delim(b) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// RFC 3986 unreserved and sub-delims, by byte: one load per byte of a
/// `Host` instead of a search of the punctuation list for every `.`.
const UNRESERVED_OR_SUB_DELIM: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            );
        i += 1;
    }
    table
};

fn is_unreserved_or_sub_delim(b: u8) -> bool {
    UNRESERVED_OR_SUB_DELIM[usize::from(b)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    fn check11(pairs: &[(&'static str, &'static str)]) -> Result<(), FramingError> {
        check(Version::HTTP_11, &headers(pairs))
    }

    #[test]
    fn plain_requests_pass() {
        assert_eq!(check11(&[("host", "a")]), Ok(()));
        assert_eq!(check11(&[("host", "a"), ("content-length", "12")]), Ok(()));
        assert_eq!(
            check11(&[("host", "a"), ("transfer-encoding", "Chunked")]),
            Ok(())
        );
        assert_eq!(check(Version::HTTP_10, &headers(&[])), Ok(()));
        assert_eq!(check(Version::HTTP_2, &headers(&[])), Ok(()));
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        use FramingError::*;
        let cases: [(&[(&str, &str)], FramingError); 10] = [
            (
                &[("content-length", "5"), ("content-length", "5")],
                DuplicateContentLength,
            ),
            (
                &[("content-length", "5"), ("content-length", "6")],
                DuplicateContentLength,
            ),
            (&[("content-length", "5, 5")], InvalidContentLength),
            (&[("content-length", "+5")], InvalidContentLength),
            (&[("content-length", "")], InvalidContentLength),
            (
                &[("transfer-encoding", "chunked, chunked")],
                UnsupportedTransferEncoding,
            ),
            (
                &[
                    ("transfer-encoding", "chunked"),
                    ("transfer-encoding", "chunked"),
                ],
                UnsupportedTransferEncoding,
            ),
            (
                &[("transfer-encoding", "xchunked")],
                UnsupportedTransferEncoding,
            ),
            (
                &[("transfer-encoding", "chunked;q=1")],
                UnsupportedTransferEncoding,
            ),
            (
                &[("content-length", "5"), ("transfer-encoding", "chunked")],
                ContentLengthWithTransferEncoding,
            ),
        ];
        for (pairs, want) in cases {
            let mut h = headers(&[("host", "a")]);
            for (k, v) in pairs {
                h.append(*k, HeaderValue::from_static(v));
            }
            assert_eq!(check(Version::HTTP_11, &h), Err(want), "{pairs:?}");
        }
        let te10 = headers(&[("transfer-encoding", "chunked")]);
        assert_eq!(
            check(Version::HTTP_10, &te10),
            Err(UnsupportedTransferEncoding)
        );
    }

    #[test]
    fn inspect_measures_the_head() {
        let h = headers(&[("host", "ab"), ("content-length", "120"), ("x-a", "1")]);
        assert_eq!(
            inspect(Version::HTTP_11, &h),
            Ok(Head {
                content_length: Some(120),
                header_bytes: (4 + 2 + 4) + (14 + 3 + 4) + (3 + 1 + 4),
            })
        );
        let huge = headers(&[("host", "a"), ("content-length", "99999999999999999999999")]);
        assert_eq!(
            inspect(Version::HTTP_11, &huge).map(|h| h.content_length),
            Ok(None)
        );
    }

    #[test]
    fn host_rules() {
        assert_eq!(check11(&[]), Err(FramingError::MissingHost));
        assert_eq!(
            check11(&[("host", "a"), ("host", "b")]),
            Err(FramingError::DuplicateHost)
        );
        let two = headers(&[("host", "a"), ("host", "a")]);
        assert_eq!(
            check(Version::HTTP_10, &two),
            Err(FramingError::DuplicateHost)
        );
        assert_eq!(
            check11(&[("host", "shop example")]),
            Err(FramingError::InvalidHost)
        );
        let bad10 = headers(&[("host", "a/b")]);
        assert_eq!(
            check(Version::HTTP_10, &bad10),
            Err(FramingError::InvalidHost)
        );
    }

    #[test]
    fn the_byte_table_is_rfc_3986_unreserved_and_sub_delims() {
        for b in 0..=255u8 {
            let spelled = b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=".contains(&b);
            assert_eq!(is_unreserved_or_sub_delim(b), spelled, "byte {b}");
        }
    }

    #[test]
    fn host_values() {
        let valid = [
            "",
            "a",
            "shop.example",
            "Shop.Example:8080",
            "shop.example:",
            "127.0.0.1:80",
            "[::1]",
            "[::1]:8080",
            "[v1.fe80::a+en1]",
            "xn--bcher-kva.example",
            "a-1_b~c!$&'()*+,;=.example",
            "shop%41.example",
        ];
        for v in valid {
            assert!(valid_host(v.as_bytes()), "{v:?} is valid");
        }
        let invalid = [
            "shop example",
            " shop.example",
            "shop.example/x",
            "shop.example?x",
            "shop.example#x",
            "user@shop.example",
            "shop.example:80x",
            "shop.example:-1",
            "a:b:c",
            "::1",
            "[::1",
            "[]",
            "[::1]x",
            "[::1]:8a",
            "[::1]]",
            "[a b]",
            "shop%zz.example",
            "shop%4",
            "\"shop.example\"",
            "shop\u{e9}.example",
            "a\tb",
        ];
        for v in invalid {
            assert!(!valid_host(v.as_bytes()), "{v:?} is invalid");
        }
    }
}
