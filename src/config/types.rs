//! Runtime configuration: validated, references resolved, ready for the hot
//! path. Built only by [`crate::config::validate`]; nothing here can be
//! invalid, so the request path never re-checks it.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use regex::Regex;

use crate::domain::{Arm, CanaryWeight, RouteName};
use crate::grpc::GrpcCodeSet;

/// A whole validated config file.
#[derive(Debug)]
pub struct Config {
    /// The file this was loaded from (as given on the command line).
    pub path: PathBuf,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[admin]`.
    pub admin: AdminConfig,
    /// `[state]`.
    pub state: StateConfig,
    /// `[upstreams.*]` in name order; [`UpstreamId`] indexes this.
    pub upstreams: Vec<Upstream>,
    /// `[[routes]]` in file order (first match wins).
    pub routes: Vec<Route>,
    /// `[fleet]`: `None` runs one independent process (no etcd).
    pub fleet: Option<FleetConfig>,
}

impl Config {
    /// The upstream a route refers to.
    pub fn upstream(&self, id: UpstreamId) -> &Upstream {
        // Ids are only made by validation, from this same vector.
        &self.upstreams[id.0]
    }

    /// Whether either arm of `route` is an h2 upstream (so it may carry gRPC).
    pub fn is_grpc_route(&self, route: &Route) -> bool {
        [route.stable, route.canary].iter().any(|id| {
            self.upstreams
                .get(id.0)
                .is_some_and(|u| u.protocol == Protocol::H2)
        })
    }

    /// A route by name.
    pub fn route(&self, name: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.name.as_str() == name)
    }
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Proxy listen address; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Header stamped with the arm on responses and upstream requests; `None` when `""`.
    pub arm_header: Option<HeaderName>,
    /// Proxy worker threads; 0 = one per core.
    pub workers: usize,
    /// TLS termination, when configured.
    pub tls: Option<TlsFiles>,
    /// Upstream response-header timeout (default 10 s).
    pub request_timeout: Duration,
    /// Time a client has to send its request head, counted from the
    /// request's first byte (default 5 s).
    pub header_read_timeout: Duration,
    /// How long an idle client connection is kept open, before its first
    /// request and between requests (default 75 s).
    pub keepalive_timeout: Duration,
    /// How long shutdown waits for in-flight requests (default 30 s).
    pub shutdown_grace: Duration,
    /// Largest request body (default 10 MiB).
    pub max_body_bytes: u64,
    /// Largest request head in bytes (default 64 KiB).
    pub max_header_bytes: usize,
    /// Most request headers (default 100).
    pub max_headers: usize,
    /// Time to establish an upstream TCP connection, capped by
    /// `request_timeout` (default 3 s).
    pub connect_timeout: Duration,
    /// Most client connections served at once; further clients wait in the
    /// listen backlog (default 10000).
    pub max_connections: usize,
    /// Fraction of proxied requests that get an `access` log line, in
    /// `0.0..=1.0`; `None` when the file does not say (then the deprecated
    /// `GRAYPROXY_ACCESS_LOG` variable decides, else off).
    pub access_log_sample: Option<f64>,
}

/// Certificate and key files for TLS termination (absolute paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Admin API listen address (default 127.0.0.1:9901).
    pub listen: SocketAddr,
    /// Bearer token file for mutating endpoints (absolute path).
    pub token_file: Option<PathBuf>,
}

/// `[state]`.
#[derive(Debug, Clone)]
pub struct StateConfig {
    /// Directory for ramp state and the audit log (absolute path).
    pub dir: PathBuf,
}

/// `[fleet]`: many replicas share one ramp per route through etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// etcd v3 endpoints (`http://` or `https://` URLs).
    pub etcd: Vec<String>,
    /// Key namespace without a trailing `/`: replicas with the same prefix are one fleet.
    pub prefix: String,
    /// This replica's unique id in the fleet (default: the host name).
    pub replica: String,
    /// Lease time to live: leadership and liveness; whole seconds, at least 2.
    pub lease_ttl: Duration,
    /// etcd user and the file holding its password (absolute path).
    pub auth: Option<(String, PathBuf)>,
    /// CA bundle for `https://` endpoints (absolute path).
    pub ca: Option<PathBuf>,
}

/// Index of an upstream in [`Config::upstreams`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct UpstreamId(pub usize);

/// `[upstreams.NAME]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// The table name.
    pub name: String,
    /// At least one endpoint, in file order.
    pub endpoints: Vec<Endpoint>,
    /// Passive outlier detection of the endpoints.
    pub outlier: OutlierPolicy,
    /// Active health checking, when configured.
    pub health_check: Option<HealthCheck>,
    /// PEM CA bundle that `https://` endpoints are verified against instead
    /// of the system roots (absolute path).
    pub tls_ca: Option<PathBuf>,
    /// The protocol spoken to the endpoints (`protocol`, default HTTP/1.1).
    pub protocol: Protocol,
}

/// `protocol = "http1" | "h2"` of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Protocol {
    /// HTTP/1.1, a pool of keep-alive connections per endpoint.
    #[default]
    Http1,
    /// HTTP/2 (prior knowledge on `http://`, ALPN `h2` on `https://`):
    /// one multiplexed connection per endpoint. Needed for gRPC.
    H2,
}

impl Protocol {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "http1",
            Protocol::H2 => "h2",
        }
    }
}

/// `outlier = { consecutive_failures, base_ejection, max_ejection }`:
/// an endpoint that fails this many exchanges in a row (no answer, or a 5xx)
/// is ejected for `base_ejection × 2^(n-1)` (n = its ejection count), at
/// most `max_ejection`. The last healthy endpoint is never ejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutlierPolicy {
    /// Consecutive failures that eject (default 5, Envoy's `consecutive_5xx`).
    pub consecutive_failures: u32,
    /// First ejection time (default 30 s, Envoy's `base_ejection_time`).
    pub base_ejection: Duration,
    /// Longest ejection (default 300 s, Envoy's `max_ejection_time`).
    pub max_ejection: Duration,
}

impl Default for OutlierPolicy {
    fn default() -> Self {
        OutlierPolicy {
            consecutive_failures: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
        }
    }
}

/// `health_check = { path = "/healthz", interval = "5s" }`: each endpoint is
/// sent `GET path` every `interval`; a non-2xx answer or no answer within
/// `timeout` marks it unhealthy until a check passes again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthCheck {
    /// Request path, starting with `/`.
    pub path: String,
    /// Time between checks (default 5 s).
    pub interval: Duration,
    /// Time a check may take (default: the smaller of `interval` and 2 s).
    pub timeout: Duration,
    /// `grpc_service = "NAME"` (h2 upstreams): the check is the standard
    /// `grpc.health.v1.Health/Check` for this service ("" = the whole
    /// server) and passes on `SERVING`; `path` is then that method's path.
    pub grpc_service: Option<String>,
}

/// One upstream address: `host:port`, `http://host:port` or `https://host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    /// `https://` endpoints are spoken to over TLS.
    pub tls: bool,
    /// Host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Port (default 80, or 443 with `https://`).
    pub port: u16,
}

impl Endpoint {
    /// `host:port`, bracketing IPv6 literals: usable as a URI authority.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// `[[routes]]`.
#[derive(Debug, Clone)]
pub struct Route {
    /// Unique route name.
    pub name: RouteName,
    /// When this route applies.
    pub matcher: RouteMatch,
    /// Upstream for the stable arm.
    pub stable: UpstreamId,
    /// Upstream for the canary arm.
    pub canary: UpstreamId,
    /// The weight from the file (the ramp, when configured, owns the live weight).
    pub canary_weight: CanaryWeight,
    /// Where the sticky key comes from; `None` = random per request.
    pub sticky: Option<StickySource>,
    /// Bucket salt (defaults to the route name).
    pub salt: String,
    /// Retry failed canary requests on stable (default true).
    pub fallback: bool,
    /// Cap on fallbacks as a share of the route's requests over 10 s (default 0.2).
    pub fallback_budget: f64,
    /// Checked in order before the weight; first match wins.
    pub rules: Vec<Rule>,
    /// The ramp, when configured. Boxed, like `shadow`: most routes of a
    /// large table have neither, and inline they made a `Route` ≈ 930 bytes.
    pub ramp: Option<Box<RampPolicy>>,
    /// Shadow traffic: `[routes.shadow]`, or its defaults when only the
    /// ramp's shadow phase asks for it. `None` = nothing is mirrored, and the
    /// request path pays one branch.
    pub shadow: Option<Box<ShadowConfig>>,
    /// gRPC status codes that count as the arm's errors (`grpc_error_codes`).
    pub grpc_error_codes: GrpcCodeSet,
    /// gRPC methods (`/package.Service/Method`) safe to repeat on stable
    /// after a canary `UNAVAILABLE` (`grpc_idempotent`).
    pub grpc_idempotent: Vec<String>,
}

/// `[routes.shadow]`, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ShadowConfig {
    /// Share of the stable-answered requests mirrored, in percent (default 100).
    pub percent: f64,
    /// Methods mirrored (default GET, HEAD).
    pub methods: Vec<http::Method>,
    /// Concurrent mirrored requests at most (default 64); more are skipped.
    pub max_in_flight: usize,
    /// A mirrored exchange slower than this is a canary timeout (default 2 s).
    pub timeout: Duration,
    /// Dotted JSON path of the ranked list; `None` = no list comparison.
    pub items: Option<String>,
    /// Field naming a list element; `None` = the element itself.
    pub item_id: Option<String>,
    /// Depth of the list comparison (default 10).
    pub k: usize,
    /// Fields never compared (by key at any depth, or by dotted path).
    pub ignore: Vec<String>,
    /// Share of mirrored requests also sent to stable again, in percent (default 10).
    pub noise_percent: f64,
    /// Remove `authorization` and `cookie` from mirrored requests (default false).
    pub strip_credentials: bool,
    /// `[routes.shadow]` is in the file: mirror always, not only during a
    /// ramp's shadow phase.
    pub always: bool,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        ShadowConfig {
            percent: 100.0,
            methods: vec![http::Method::GET, http::Method::HEAD],
            max_in_flight: 64,
            timeout: Duration::from_secs(2),
            items: None,
            item_id: None,
            k: 10,
            ignore: Vec::new(),
            noise_percent: 10.0,
            strip_credentials: false,
            always: false,
        }
    }
}

impl Route {
    /// The upstream serving `arm`.
    pub fn upstream(&self, arm: Arm) -> UpstreamId {
        match arm {
            Arm::Stable => self.stable,
            Arm::Canary => self.canary,
        }
    }
}

/// `match = { host = .., path_prefix = .. }`; both optional.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteMatch {
    /// Lower-cased host without port; `None` = any host.
    pub host: Option<String>,
    /// Path prefix; `None` = any path.
    pub path_prefix: Option<String>,
}

/// Where a sticky key is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StickySource {
    /// `header:NAME`.
    Header(HeaderName),
    /// `cookie:NAME`.
    Cookie(String),
    /// `query:NAME`.
    Query(String),
}

/// One `[[routes.rules]]`.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The condition.
    pub when: Condition,
    /// The arm a match sends to.
    pub to: Arm,
}

/// A rule's condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// `{ header = NAME, equals|regex = .. }`.
    Header(HeaderName, ValueTest),
    /// `{ cookie = NAME, equals|regex = .. }`.
    Cookie(String, ValueTest),
    /// `{ query = NAME, equals|regex = .. }`.
    Query(String, ValueTest),
    /// `{ sticky_in = [..] }`: the request's sticky key is one of these.
    StickyIn(HashSet<String>),
}

/// How a header, cookie or query value is tested.
#[derive(Debug, Clone)]
pub enum ValueTest {
    /// Exact byte equality.
    Equals(String),
    /// Unanchored regex search (`regex = "iPhone"` matches anywhere).
    Regex(ValueRegex),
}

/// A value regex, analysed once when the config is loaded: whether its
/// pattern is a plain literal, for the matcher's byte-search fast path
/// (the routing module's `regex_matches`), instead of on every
/// request.
#[derive(Debug, Clone)]
pub struct ValueRegex {
    regex: Regex,
    /// For a literal pattern, the index of its likely rarest byte.
    literal_rare: Option<usize>,
}

impl ValueRegex {
    /// The compiled regex.
    pub fn regex(&self) -> &Regex {
        &self.regex
    }

    /// `Some(index of the rarest byte)` when the pattern is a plain literal.
    pub fn literal_rare(&self) -> Option<usize> {
        self.literal_rare
    }
}

impl From<Regex> for ValueRegex {
    fn from(regex: Regex) -> Self {
        let literal_rare = super::literal::literal_rare(regex.as_str());
        ValueRegex {
            regex,
            literal_rare,
        }
    }
}

impl std::ops::Deref for ValueRegex {
    type Target = Regex;
    fn deref(&self) -> &Regex {
        &self.regex
    }
}

/// `[routes.ramp]`, with defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct RampPolicy {
    /// Weights of the steps; strictly increasing, the last is 100 %.
    pub steps: Vec<CanaryWeight>,
    /// Least time on a step (default 30 s).
    pub interval: Duration,
    /// Judge period (default 10 s).
    pub tick: Duration,
    /// Requests per arm on a step before it may advance (default 200).
    pub min_requests: u64,
    /// Stable-only calibration window before the first step (default 10 m).
    pub baseline: Duration,
    /// Rollback confidence, in (0, 1) (default 0.99).
    pub confidence: f64,
    /// Tolerated absolute error-rate increase (default 0).
    pub max_error_rate_increase: f64,
    /// Tolerated fractional p99 increase (default 0).
    pub max_p99_increase: f64,
    /// One gate per step but the last (0 = no gate); default (0, 5, 3, 2, 1.5, 1.5, ..).
    pub gate_ratios: Vec<f64>,
    /// A step that cannot pass its gate in this time pauses (default
    /// [`RampPolicy::default_max_step_duration`]: 30 m, or 4 × `interval`
    /// when that is longer).
    pub max_step_duration: Duration,
    /// Prometheus base URL for the KPI checks (`None`: no KPI gates).
    pub prometheus_url: Option<String>,
    /// Consecutive failing KPI rounds that roll back (default 3).
    pub failures_before_rollback: u32,
    /// Business-KPI gates (`[[routes.ramp.prometheus_checks]]`).
    pub prometheus_checks: Vec<PrometheusCheck>,
    /// Length of the shadow phase between baseline and the first step
    /// (`None`: no shadow phase).
    pub shadow: Option<Duration>,
    /// Roll back in the shadow phase when the mean RBO of the ranked lists is
    /// below this (`None`: lists do not decide).
    pub min_rbo: Option<f64>,
    /// Per-segment guardrails (`segments`, `segment_values`); `None`: the
    /// judge compares the arms overall only.
    pub segments: Option<SegmentPolicy>,
}

/// `[routes.ramp] segments` and `segment_values`: where a request's segment
/// is read from and the values judged on their own (anything else, or no
/// value, is [`SegmentPolicy::OTHER`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentPolicy {
    /// `header:NAME`, `cookie:NAME` or `query:NAME`.
    pub source: StickySource,
    /// The values, in file order: non-empty, distinct, at most
    /// [`SegmentPolicy::MAX_VALUES`], never `other`.
    pub values: Vec<String>,
}

impl SegmentPolicy {
    /// The segment of every request whose value is not in `values`.
    pub const OTHER: &'static str = "other";
    /// Most values a route may judge apart (bounds the metric's labels and
    /// the judge's state).
    pub const MAX_VALUES: usize = 16;

    /// Every segment judged, `other` last; index `values.len()` is `other`.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.values
            .iter()
            .map(String::as_str)
            .chain(std::iter::once(Self::OTHER))
    }
}

/// One `[[routes.ramp.prometheus_checks]]`: a PromQL template evaluated per
/// arm (`{{route}}`, `{{arm}}` substituted) and its bound.
#[derive(Debug, Clone, PartialEq)]
pub struct PrometheusCheck {
    /// Name shown in `/status` and audit records.
    pub name: String,
    /// The PromQL template.
    pub query: String,
    /// What the values must satisfy.
    pub bound: KpiBound,
}

/// The bound a KPI check enforces. Absent sides are `None`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum KpiBound {
    /// `min_ratio ≤ canary / stable ≤ max_ratio`.
    Ratio {
        /// Lowest allowed canary/stable ratio.
        min: Option<f64>,
        /// Highest allowed canary/stable ratio.
        max: Option<f64>,
    },
    /// `min ≤ canary ≤ max` (stable is queried for display only).
    Absolute {
        /// Lowest allowed canary value.
        min: Option<f64>,
        /// Highest allowed canary value.
        max: Option<f64>,
    },
}

impl Default for RampPolicy {
    fn default() -> Self {
        let steps = [1u16, 5, 10, 25, 50, 100]
            .iter()
            .map(|p| CanaryWeight::from_basis_points(p * 100))
            .collect::<Vec<_>>();
        let interval = Duration::from_secs(30);
        RampPolicy {
            gate_ratios: RampPolicy::default_gates(steps.len()),
            steps,
            interval,
            tick: Duration::from_secs(10),
            min_requests: 200,
            baseline: Duration::from_secs(600),
            confidence: 0.99,
            max_error_rate_increase: 0.0,
            max_p99_increase: 0.0,
            max_step_duration: RampPolicy::default_max_step_duration(interval),
            prometheus_url: None,
            failures_before_rollback: 3,
            prometheus_checks: Vec::new(),
            shadow: None,
            min_rbo: None,
            segments: None,
        }
    }
}

impl RampPolicy {
    /// The default `max_step_duration` for a step of at least `interval`:
    /// 30 minutes, or four intervals when that is longer. A step must be
    /// allowed its interval plus time to gather evidence; a fixed default
    /// shorter than a long interval would make a valid file invalid.
    pub fn default_max_step_duration(interval: Duration) -> Duration {
        Duration::from_secs(1800).max(interval.saturating_mul(4))
    }

    /// The default gates for a ramp of `steps` steps: (0, 5, 3, 2, 1.5, 1.5, ..).
    pub fn default_gates(steps: usize) -> Vec<f64> {
        const GATES: [f64; 5] = [0.0, 5.0, 3.0, 2.0, 1.5];
        (0..steps.saturating_sub(1))
            .map(|i| GATES.get(i).copied().unwrap_or(1.5))
            .collect()
    }
}
