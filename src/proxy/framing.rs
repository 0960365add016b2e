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

/// Checks the framing headers of a request head.
pub fn check(version: Version, headers: &HeaderMap) -> Result<(), FramingError> {
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    let length = lengths.next();
    if lengths.next().is_some() {
        return Err(FramingError::DuplicateContentLength);
    }
    if let Some(v) = length {
        let b = v.as_bytes();
        if b.is_empty() || !b.iter().all(u8::is_ascii_digit) {
            return Err(FramingError::InvalidContentLength);
        }
    }
    let mut encodings = headers.get_all(TRANSFER_ENCODING).iter();
    if let Some(te) = encodings.next() {
        let single_chunked = te.as_bytes().eq_ignore_ascii_case(b"chunked");
        if !single_chunked || encodings.next().is_some() || version != Version::HTTP_11 {
            return Err(FramingError::UnsupportedTransferEncoding);
        }
        if length.is_some() {
            return Err(FramingError::ContentLengthWithTransferEncoding);
        }
    }
    let mut hosts = headers.get_all(HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(FramingError::DuplicateHost);
    }
    if host.is_none() && version == Version::HTTP_11 {
        return Err(FramingError::MissingHost);
    }
    Ok(())
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
