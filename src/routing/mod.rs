//! The routing decision: which route, which arm, and why.
//!
//! Pure and synchronous: a borrowed view of the request and an RNG in, a
//! [`Decision`] out. No I/O, no allocation on the request path (see the README, "Routing semantics"):
//!
//! 1. **Route**: the first route, in file order, whose `match` holds
//!    (see [`matcher::route_matches`] for host and prefix rules), looked up
//!    in the table's [`RouteIndex`] built when the config is loaded;
//!    [`find_route_linear`] is the same answer by trying every route.
//! 2. **Rules**, in order, first match wins; a rule sends to either arm.
//! 3. **Weight with a sticky key**: the key's [`sticky::bucket`] against the
//!    weight ([`sticky::in_canary`]).
//! 4. **Weight without one** (not configured, or absent/empty in the request):
//!    `rng.gen_range(0..10000) < weight` per request.
//!
//! An empty sticky key (`x-user-id:` with no value, `uid=`) counts as absent:
//! otherwise every client without an id would share one bucket and move
//! between arms together.

pub mod index;
pub mod matcher;
pub mod sticky;

#[cfg(test)]
mod tests;

use rand::Rng;

use crate::config::types::{Condition, Route, StickySource};
use crate::domain::{Arm, CanaryWeight};

pub use index::RouteIndex;

/// The parts of a request routing looks at, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// The request's host as sent (URI authority or `Host` header), possibly
    /// with a port or IPv6 brackets; routing normalizes it.
    pub host: Option<&'a str>,
    /// The raw path, without the query.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: Option<&'a str>,
    /// All request headers.
    pub headers: &'a http::HeaderMap,
}

impl<'a> RequestView<'a> {
    /// The view of a request. The host is the URI authority when the request
    /// has one (absolute-form, HTTP/2 `:authority`), as RFC 9112 §3.2.2 says
    /// it overrides `Host`; otherwise the `Host` header, if it is visible ASCII.
    pub fn of<B>(req: &'a http::Request<B>) -> RequestView<'a> {
        Self::from_parts(req.uri(), req.headers())
    }

    /// Like [`RequestView::of`], from a URI and headers.
    pub fn from_parts(uri: &'a http::Uri, headers: &'a http::HeaderMap) -> RequestView<'a> {
        let host = match uri.authority() {
            Some(a) => Some(a.as_str()),
            None => headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok()),
        };
        RequestView {
            host,
            path: uri.path(),
            query: uri.query(),
            headers,
        }
    }
}

/// Why a request got its arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Rule number `i` (0-based, in file order) matched: forced traffic,
    /// kept out of the judge's sample.
    Rule(usize),
    /// The sticky key's bucket against the weight.
    Bucket(u16),
    /// No sticky key is configured: random at the weight.
    Random,
    /// A sticky key is configured but the request has none: random at the weight.
    NoStickyKey,
}

impl Reason {
    /// A short label for logs: `rule`, `bucket`, `random`, `no_sticky_key`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Rule(_) => "rule",
            Reason::Bucket(_) => "bucket",
            Reason::Random => "random",
            Reason::NoStickyKey => "no_sticky_key",
        }
    }

    /// Whether the arm came from the weight (what the judge may look at),
    /// rather than from a rule.
    pub fn is_weight_assigned(self) -> bool {
        !matches!(self, Reason::Rule(_))
    }
}

/// The outcome of routing one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Index of the route in the config's route list.
    pub route: usize,
    /// The arm that should serve the request.
    pub arm: Arm,
    /// Why.
    pub reason: Reason,
    /// The sticky key's bucket, whenever the request had a sticky key (also
    /// when a rule decided).
    pub bucket: Option<u16>,
}

/// The index of the first route whose `match` holds, if any, by trying the
/// routes in file order: what [`RouteIndex::find`] answers in time that
/// does not grow with the table, kept as its reference (and test oracle).
pub fn find_route_linear(routes: &[Route], req: &RequestView) -> Option<usize> {
    // Normalized at most once, and only if some route asks for a host.
    let mut host: Option<Option<&str>> = None;
    routes.iter().position(|r| {
        let h = match r.matcher.host {
            Some(_) => *host.get_or_insert_with(|| request_host(req)),
            None => None,
        };
        matcher::route_matches(&r.matcher, h, req.path)
    })
}

fn request_host<'a>(req: &RequestView<'a>) -> Option<&'a str> {
    req.host
        .map(matcher::normalize_host)
        .filter(|h| !h.is_empty())
}

/// Routes a request: route, then rules, then weight. `index` is
/// [`RouteIndex::new`] of these `routes`. `weight_of(route index)` gives the
/// live weight (the ramp's, or the file's); it is only called when no rule
/// matched. `None` when no route matches (the proxy answers 404).
pub fn decide<R: Rng + ?Sized>(
    routes: &[Route],
    index: &RouteIndex,
    req: &RequestView,
    weight_of: impl Fn(usize) -> CanaryWeight,
    rng: &mut R,
) -> Option<Decision> {
    let idx = index.find(req)?;
    let route = routes.get(idx)?;
    let key = route.sticky.as_ref().and_then(|s| sticky_key(s, req));
    let bucket = key.map(|k| sticky::bucket(&route.salt, k));

    for (i, rule) in route.rules.iter().enumerate() {
        if matcher::condition_holds(&rule.when, req.headers, req.query, key) {
            return Some(Decision {
                route: idx,
                arm: rule.to,
                reason: Reason::Rule(i),
                bucket,
            });
        }
    }

    let weight = weight_of(idx);
    let (arm, reason) = match bucket {
        Some(b) => (arm_if(sticky::in_canary(b, weight)), Reason::Bucket(b)),
        None => {
            let reason = if route.sticky.is_some() {
                Reason::NoStickyKey
            } else {
                Reason::Random
            };
            (random_arm(weight, rng), reason)
        }
    };
    Some(Decision {
        route: idx,
        arm,
        reason,
        bucket,
    })
}

fn arm_if(canary: bool) -> Arm {
    if canary {
        Arm::Canary
    } else {
        Arm::Stable
    }
}

/// Canary with probability `weight`; 0 % and 100 % consume no randomness.
fn random_arm<R: Rng + ?Sized>(weight: CanaryWeight, rng: &mut R) -> Arm {
    match weight.basis_points() {
        0 => Arm::Stable,
        bp if bp >= sticky::BUCKETS => Arm::Canary,
        bp => arm_if(rng.gen_range(0..sticky::BUCKETS) < bp),
    }
}

/// The request's sticky key from `source`, as raw bytes: a header's first
/// value, or the first cookie / query parameter of that name, as sent (not
/// percent-decoded). An empty value counts as no key.
pub fn sticky_key<'a>(source: &StickySource, req: &RequestView<'a>) -> Option<&'a [u8]> {
    let key = match source {
        StickySource::Header(name) => matcher::header_value(req.headers, name),
        StickySource::Cookie(name) => matcher::cookie_value(req.headers, name),
        StickySource::Query(name) => req.query.and_then(|q| matcher::query_value(q, name)),
    }?;
    (!key.is_empty()).then_some(key)
}

/// What `GET /routes/{name}/explain?key=K` reports for a sticky key.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Explanation {
    /// The key's bucket, `0..10000`.
    pub bucket: u16,
    /// The arm a request with this key (and nothing else that a rule looks
    /// at) gets now.
    pub arm: Arm,
    /// The rule that decides, if any.
    pub rule: Option<usize>,
    /// `(bucket + 1) / 100`: the smallest weight, in percent, at which the
    /// key is in the canary by weight.
    pub canary_from_percent: f64,
}

/// Explains where sticky key `key` goes on `route` at `weight`.
///
/// Only rules that depend on the key alone (`sticky_in`) are evaluated:
/// header, cookie and query rules cannot match a bare key, so they are
/// skipped, as they would be for a request that carries only the key.
/// The bucket is reported even when the route has no sticky source (it is
/// what the key would get if one were configured); `sticky_in` rules cannot
/// match then, as in [`decide`].
pub fn explain(route: &Route, key: &str, weight: CanaryWeight) -> Explanation {
    let bucket = sticky::bucket(&route.salt, key.as_bytes());
    let rule = if route.sticky.is_some() && !key.is_empty() {
        route.rules.iter().position(
            |r| matches!(&r.when, Condition::StickyIn(set) if matcher::set_contains(set, key)),
        )
    } else {
        None
    };
    let arm = match rule.and_then(|i| route.rules.get(i)) {
        Some(r) => r.to,
        None => arm_if(sticky::in_canary(bucket, weight)),
    };
    Explanation {
        bucket,
        arm,
        rule,
        canary_from_percent: sticky::canary_from_percent(bucket),
    }
}
