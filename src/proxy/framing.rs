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
//! - HTTP/1.1 needs exactly one `Host`; no version may send two.
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
    Ok(Head {
        content_length,
        header_bytes,
    })
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
    }
}
