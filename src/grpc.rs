//! gRPC as the proxy sees it, without I/O: status codes and the set that
//! counts as errors, recognising a gRPC call, its `grpc-timeout`, the
//! answers the proxy makes itself, and how many messages a response carried.
//!
//! Pure data and functions, so `config` (code names in `grpc_error_codes`)
//! and the request path share them.

use std::time::Duration;

use http::{HeaderMap, HeaderValue};

/// A gRPC status code (grpc/doc/statuscodes.md): the 17 defined values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrpcCode {
    /// 0.
    Ok,
    /// 1: the caller cancelled.
    Cancelled,
    /// 2.
    Unknown,
    /// 3.
    InvalidArgument,
    /// 4.
    DeadlineExceeded,
    /// 5.
    NotFound,
    /// 6.
    AlreadyExists,
    /// 7.
    PermissionDenied,
    /// 8.
    ResourceExhausted,
    /// 9.
    FailedPrecondition,
    /// 10.
    Aborted,
    /// 11.
    OutOfRange,
    /// 12.
    Unimplemented,
    /// 13.
    Internal,
    /// 14.
    Unavailable,
    /// 15.
    DataLoss,
    /// 16.
    Unauthenticated,
}

impl GrpcCode {
    /// Every code, in numeric order (index = code).
    pub const ALL: [GrpcCode; 17] = [
        GrpcCode::Ok,
        GrpcCode::Cancelled,
        GrpcCode::Unknown,
        GrpcCode::InvalidArgument,
        GrpcCode::DeadlineExceeded,
        GrpcCode::NotFound,
        GrpcCode::AlreadyExists,
        GrpcCode::PermissionDenied,
        GrpcCode::ResourceExhausted,
        GrpcCode::FailedPrecondition,
        GrpcCode::Aborted,
        GrpcCode::OutOfRange,
        GrpcCode::Unimplemented,
        GrpcCode::Internal,
        GrpcCode::Unavailable,
        GrpcCode::DataLoss,
        GrpcCode::Unauthenticated,
    ];

    /// The numeric code.
    pub fn number(self) -> u8 {
        self as u8
    }

    /// The canonical name (`OK`, `UNAVAILABLE`, ...): the metric label value
    /// and the spelling `grpc_error_codes` accepts.
    pub fn as_str(self) -> &'static str {
        match self {
            GrpcCode::Ok => "OK",
            GrpcCode::Cancelled => "CANCELLED",
            GrpcCode::Unknown => "UNKNOWN",
            GrpcCode::InvalidArgument => "INVALID_ARGUMENT",
            GrpcCode::DeadlineExceeded => "DEADLINE_EXCEEDED",
            GrpcCode::NotFound => "NOT_FOUND",
            GrpcCode::AlreadyExists => "ALREADY_EXISTS",
            GrpcCode::PermissionDenied => "PERMISSION_DENIED",
            GrpcCode::ResourceExhausted => "RESOURCE_EXHAUSTED",
            GrpcCode::FailedPrecondition => "FAILED_PRECONDITION",
            GrpcCode::Aborted => "ABORTED",
            GrpcCode::OutOfRange => "OUT_OF_RANGE",
            GrpcCode::Unimplemented => "UNIMPLEMENTED",
            GrpcCode::Internal => "INTERNAL",
            GrpcCode::Unavailable => "UNAVAILABLE",
            GrpcCode::DataLoss => "DATA_LOSS",
            GrpcCode::Unauthenticated => "UNAUTHENTICATED",
        }
    }

    /// A code by its name (as [`GrpcCode::as_str`] spells it).
    pub fn from_name(name: &str) -> Option<GrpcCode> {
        GrpcCode::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The code of a `grpc-status` value. A value outside 0..=16 (or not a
    /// number) is `UNKNOWN`, as gRPC clients read it.
    pub fn from_header(value: &HeaderValue) -> GrpcCode {
        std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .and_then(|n| GrpcCode::ALL.get(n).copied())
            .unwrap_or(GrpcCode::Unknown)
    }

    /// The `grpc-status` in `headers` (trailers, or the headers of a
    /// trailers-only answer), if any.
    pub fn in_headers(headers: &HeaderMap) -> Option<GrpcCode> {
        headers.get(GRPC_STATUS).map(GrpcCode::from_header)
    }
}

/// The method path of the standard gRPC health check.
pub const HEALTH_CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// The `grpc-status` header or trailer.
pub const GRPC_STATUS: &str = "grpc-status";
/// The `grpc-message` header or trailer.
pub const GRPC_MESSAGE: &str = "grpc-message";

/// The codes that count as errors of an arm (`grpc_error_codes`), as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcCodeSet(u32);

impl Default for GrpcCodeSet {
    /// UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL, UNAVAILABLE,
    /// DATA_LOSS: the server's failures; the others describe the request.
    fn default() -> Self {
        [
            GrpcCode::Unknown,
            GrpcCode::DeadlineExceeded,
            GrpcCode::Unimplemented,
            GrpcCode::Internal,
            GrpcCode::Unavailable,
            GrpcCode::DataLoss,
        ]
        .into_iter()
        .collect()
    }
}

impl FromIterator<GrpcCode> for GrpcCodeSet {
    fn from_iter<I: IntoIterator<Item = GrpcCode>>(iter: I) -> Self {
        GrpcCodeSet(iter.into_iter().fold(0, |s, c| s | 1 << c.number()))
    }
}

impl GrpcCodeSet {
    /// Whether `code` counts as an error.
    pub fn contains(self, code: GrpcCode) -> bool {
        self.0 & (1 << code.number()) != 0
    }
}

/// Whether a request is a gRPC call: `content-type: application/grpc`,
/// optionally followed by `+proto`, `+json`, `;...`.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| is_grpc_content_type(v.as_bytes()))
}

fn is_grpc_content_type(v: &[u8]) -> bool {
    const PREFIX: &[u8] = b"application/grpc";
    v.len() >= PREFIX.len()
        && v[..PREFIX.len()].eq_ignore_ascii_case(PREFIX)
        && matches!(v.get(PREFIX.len()), None | Some(b'+' | b';'))
}

/// The call's deadline from `grpc-timeout` (`TimeoutValue TimeoutUnit`: at
/// most 8 digits and one of `H M S m u n`). `None` when absent or malformed
/// (a malformed value is ignored, as gRPC servers do).
pub fn timeout(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get("grpc-timeout")?.as_bytes();
    let (unit, digits) = v.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n.saturating_mul(3600)),
        b'M' => Duration::from_secs(n.saturating_mul(60)),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Headers of a trailers-only answer (HTTP 200, no body): `content-type`,
/// `grpc-status`, `grpc-message`. `message` is plain ASCII, so it needs no
/// percent-encoding.
pub fn trailers_only(code: GrpcCode, message: &'static str) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(3);
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    h.insert(GRPC_STATUS, HeaderValue::from(u16::from(code.number())));
    h.insert(GRPC_MESSAGE, HeaderValue::from_static(message));
    h
}

/// Counts the length-prefixed messages of a gRPC body as its bytes stream
/// past (each message: 1 flag byte, 4 length bytes, the payload), up to
/// "more than one", which is all the proxy needs: a response of at most one
/// message is unary-shaped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MessageCounter {
    /// Messages started so far (saturates at 2).
    started: u8,
    /// Bytes still to skip of the current message's payload.
    skip: u64,
    /// Prefix bytes of the next message seen so far, and their value.
    prefix_len: u8,
    prefix: [u8; 5],
}

impl MessageCounter {
    /// Feeds the next chunk of the body.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() && self.started < 2 {
            if self.skip > 0 {
                let n = self.skip.min(chunk.len() as u64);
                self.skip -= n;
                chunk = &chunk[n as usize..];
                continue;
            }
            let want = 5 - usize::from(self.prefix_len);
            let take = want.min(chunk.len());
            let at = usize::from(self.prefix_len);
            self.prefix[at..at + take].copy_from_slice(&chunk[..take]);
            self.prefix_len += take as u8;
            chunk = &chunk[take..];
            if self.prefix_len == 5 {
                self.started += 1;
                self.prefix_len = 0;
                let [_, a, b, c, d] = self.prefix;
                self.skip = u64::from(u32::from_be_bytes([a, b, c, d]));
            }
        }
    }

    /// Whether more than one message has started.
    pub fn is_stream(&self) -> bool {
        self.started > 1
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn codes_by_number_and_name() {
        for (i, code) in GrpcCode::ALL.into_iter().enumerate() {
            assert_eq!(usize::from(code.number()), i);
            assert_eq!(GrpcCode::from_name(code.as_str()), Some(code));
            let v = HeaderValue::from(i);
            assert_eq!(GrpcCode::from_header(&v), code);
        }
        for bad in ["17", "-1", "x", ""] {
            let v = HeaderValue::from_str(bad).unwrap();
            assert_eq!(GrpcCode::from_header(&v), GrpcCode::Unknown, "{bad}");
        }
        assert_eq!(GrpcCode::from_name("unavailable"), None);
    }

    #[test]
    fn default_error_set() {
        let set = GrpcCodeSet::default();
        let errors: Vec<&str> = GrpcCode::ALL
            .into_iter()
            .filter(|c| set.contains(*c))
            .map(GrpcCode::as_str)
            .collect();
        assert_eq!(
            errors,
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
        let custom: GrpcCodeSet = [GrpcCode::NotFound].into_iter().collect();
        assert!(custom.contains(GrpcCode::NotFound));
        assert!(!custom.contains(GrpcCode::Unavailable));
    }

    #[test]
    fn grpc_content_types() {
        for (ct, yes) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("Application/GRPC;charset=utf-8", true),
            ("application/grpc-web", false),
            ("application/json", false),
            ("application/grp", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert("content-type", HeaderValue::from_static(ct));
            assert_eq!(is_grpc(&h), yes, "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn grpc_timeouts() {
        for (v, want) in [
            ("1H", Some(Duration::from_secs(3600))),
            ("2M", Some(Duration::from_secs(120))),
            ("3S", Some(Duration::from_secs(3))),
            ("250m", Some(Duration::from_millis(250))),
            ("99999999u", Some(Duration::from_micros(99_999_999))),
            ("5n", Some(Duration::from_nanos(5))),
            ("123456789m", None),
            ("m", None),
            ("10x", None),
            ("1.5S", None),
            ("", None),
        ] {
            let mut h = HeaderMap::new();
            h.insert("grpc-timeout", HeaderValue::from_static(v));
            assert_eq!(timeout(&h), want, "{v:?}");
        }
    }

    #[test]
    fn trailers_only_answer() {
        let h = trailers_only(GrpcCode::Unavailable, "upstream unreachable");
        assert_eq!(h["grpc-status"], "14");
        assert_eq!(h["grpc-message"], "upstream unreachable");
        assert_eq!(h["content-type"], "application/grpc");
    }

    #[test]
    fn message_counter_across_chunk_boundaries() {
        let msg = |len: u32| {
            let mut m = vec![0u8];
            m.extend_from_slice(&len.to_be_bytes());
            m.extend(std::iter::repeat(7).take(len as usize));
            m
        };
        let one = msg(10);
        let two: Vec<u8> = [msg(3), msg(0)].concat();
        for split in 0..two.len() {
            let mut c = MessageCounter::default();
            c.feed(&one);
            assert!(!c.is_stream());
            let mut c = MessageCounter::default();
            c.feed(&two[..split]);
            c.feed(&two[split..]);
            assert!(c.is_stream(), "split at {split}");
        }
        // Byte by byte: one message is still one.
        let mut c = MessageCounter::default();
        for b in &one {
            c.feed(std::slice::from_ref(b));
        }
        assert!(!c.is_stream());
    }
}
