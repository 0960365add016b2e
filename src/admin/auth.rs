//! Bearer-token check for the mutating admin endpoints. The token is read
//! from `admin.token_file` on every request (so it can be rotated without a
//! restart), compared in constant time, and never logged.

use std::path::Path;

use http::header::AUTHORIZATION;
use http::{HeaderMap, StatusCode};

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum Denied {
    /// No `admin.token_file` (or an empty one): mutating endpoints are off.
    #[error("no admin token is configured: set admin.token_file in the config to a file holding a secret token, then send it as `Authorization: Bearer <token>`")]
    NotConfigured,
    /// The token file cannot be read.
    #[error("the admin token file cannot be read; see the proxy's log")]
    Unreadable,
    /// No `Authorization: Bearer` header.
    #[error("missing `Authorization: Bearer <token>` header")]
    Missing,
    /// A token that is not the configured one.
    #[error("wrong admin token")]
    Wrong,
}

impl Denied {
    /// The HTTP status for this refusal.
    pub fn status(&self) -> StatusCode {
        match self {
            Denied::NotConfigured | Denied::Missing | Denied::Wrong => StatusCode::UNAUTHORIZED,
            Denied::Unreadable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// Checks the request's bearer token against the token file.
pub fn check(token_file: Option<&Path>, headers: &HeaderMap) -> Result<(), Denied> {
    let Some(path) = token_file else {
        return Err(Denied::NotConfigured);
    };
    let expected = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            tracing::error!(path = %path.display(), error = %e, "cannot read the admin token file");
            return Err(Denied::Unreadable);
        }
    };
    let expected = expected.trim_ascii();
    if expected.is_empty() {
        return Err(Denied::NotConfigured);
    }
    let given = headers
        .get(AUTHORIZATION)
        .and_then(|v| bearer(v.as_bytes()))
        .ok_or(Denied::Missing)?;
    if constant_time_eq(given, expected) {
        Ok(())
    } else {
        Err(Denied::Wrong)
    }
}

/// The token of `Bearer <token>` (scheme case-insensitive).
fn bearer(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Equality whose time depends only on the lengths, not on where the bytes differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn token_checks() {
        let path = std::env::temp_dir().join(format!("gp-token-{}", std::process::id()));
        std::fs::write(&path, "s3cret\n").unwrap();
        let p = Some(path.as_path());
        assert!(check(p, &headers(Some("Bearer s3cret"))).is_ok());
        assert!(check(p, &headers(Some("bearer s3cret"))).is_ok());
        assert!(matches!(check(p, &headers(None)), Err(Denied::Missing)));
        assert!(matches!(
            check(p, &headers(Some("Bearer nope"))),
            Err(Denied::Wrong)
        ));
        assert!(matches!(
            check(p, &headers(Some("Bearer s3cret2"))),
            Err(Denied::Wrong)
        ));
        assert!(matches!(
            check(p, &headers(Some("Basic s3cret"))),
            Err(Denied::Missing)
        ));
        assert!(matches!(
            check(None, &headers(Some("Bearer s3cret"))),
            Err(Denied::NotConfigured)
        ));
        std::fs::write(&path, "  \n").unwrap();
        assert!(matches!(
            check(p, &headers(Some("Bearer x"))),
            Err(Denied::NotConfigured)
        ));
        let _ = std::fs::remove_file(&path);
        assert!(matches!(
            check(p, &headers(Some("Bearer x"))),
            Err(Denied::Unreadable)
        ));
    }

    #[test]
    fn constant_time_eq_is_eq() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(constant_time_eq(b"", b""));
    }
}
