//! The raw layer: a spanned mirror of the TOML schema (the README's
//! configuration reference).
//!
//! Why not `#[derive(Deserialize)]` with `deny_unknown_fields`: serde stops
//! at the first unknown key or wrong type, and `grayproxy check` reports every
//! error at once. So the file is parsed into a `toml_edit::ImDocument` (which keeps
//! the byte span of every key, value and table header) and walked here: each
//! table's keys are checked against the schema, each value against its type,
//! and every problem is pushed into one list. Values come out wrapped in
//! [`Sp`] so validation can point at them. Nothing here judges values; that
//! is `validate`'s job.

mod reader;
mod suggest;

pub(crate) use reader::read;

/// A value and the byte offset where it starts in the file.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Sp<T> {
    pub value: T,
    pub at: usize,
}

/// Allowed keys per table, in the order the README's reference lists them.
pub(crate) const TOP_KEYS: &[&str] = &["server", "admin", "state", "upstreams", "routes", "fleet"];
pub(crate) const SERVER_KEYS: &[&str] = &[
    "listen",
    "arm_header",
    "workers",
    "tls",
    "request_timeout",
    "header_read_timeout",
    "keepalive_timeout",
    "shutdown_grace",
    "max_body_bytes",
    "max_header_bytes",
    "max_headers",
    "connect_timeout",
    "max_connections",
    "access_log_sample",
];
pub(crate) const TLS_KEYS: &[&str] = &["cert", "key"];
pub(crate) const ADMIN_KEYS: &[&str] = &["listen", "token_file"];
pub(crate) const STATE_KEYS: &[&str] = &["dir"];
pub(crate) const UPSTREAM_KEYS: &[&str] =
    &["endpoints", "outlier", "health_check", "tls_ca", "protocol"];
pub(crate) const OUTLIER_KEYS: &[&str] = &["consecutive_failures", "base_ejection", "max_ejection"];
pub(crate) const HEALTH_KEYS: &[&str] = &["path", "interval", "timeout", "grpc_service"];
pub(crate) const ROUTE_KEYS: &[&str] = &[
    "name",
    "match",
    "stable",
    "canary",
    "canary_weight",
    "sticky",
    "salt",
    "fallback",
    "fallback_budget",
    "rules",
    "ramp",
    "shadow",
    "grpc_error_codes",
    "grpc_idempotent",
];
pub(crate) const MATCH_KEYS: &[&str] = &["host", "path_prefix"];
pub(crate) const RULE_KEYS: &[&str] = &["when", "to"];
pub(crate) const WHEN_KEYS: &[&str] =
    &["header", "cookie", "query", "equals", "regex", "sticky_in"];
pub(crate) const RAMP_KEYS: &[&str] = &[
    "steps",
    "interval",
    "tick",
    "min_requests",
    "baseline",
    "confidence",
    "max_error_rate_increase",
    "max_p99_increase",
    "gate_ratios",
    "max_step_duration",
    "prometheus_url",
    "failures_before_rollback",
    "prometheus_checks",
    "shadow",
    "min_rbo",
    "segments",
    "segment_values",
];
pub(crate) const SHADOW_KEYS: &[&str] = &[
    "percent",
    "methods",
    "max_in_flight",
    "timeout",
    "items",
    "item_id",
    "k",
    "ignore",
    "noise_percent",
    "strip_credentials",
];
pub(crate) const FLEET_KEYS: &[&str] = &[
    "etcd",
    "prefix",
    "replica",
    "lease_ttl",
    "token_file",
    "user",
    "ca",
];
pub(crate) const PROM_CHECK_KEYS: &[&str] =
    &["name", "query", "min_ratio", "max_ratio", "min", "max"];

/// Optional spanned value.
pub(crate) type Opt<T> = Option<Sp<T>>;
/// Optional spanned list of spanned values.
pub(crate) type List<T> = Option<Sp<Vec<Sp<T>>>>;

/// The whole file.
#[derive(Debug, Default)]
pub(crate) struct RawConfig {
    pub server: RawServer,
    pub admin: RawAdmin,
    pub state: RawState,
    /// In file order.
    pub upstreams: Vec<RawUpstream>,
    pub routes: Vec<RawRoute>,
    /// `[fleet]`; its presence turns fleet mode on.
    pub fleet: Option<RawFleet>,
}

/// `[fleet]`.
#[derive(Debug)]
pub(crate) struct RawFleet {
    /// Where the `[fleet]` header is.
    pub at: usize,
    pub etcd: List<String>,
    pub prefix: Opt<String>,
    pub replica: Opt<String>,
    pub lease_ttl: Opt<String>,
    pub token_file: Opt<String>,
    pub user: Opt<String>,
    pub ca: Opt<String>,
}

/// `[server]`.
#[derive(Debug, Default)]
pub(crate) struct RawServer {
    pub listen: Opt<String>,
    pub arm_header: Opt<String>,
    pub workers: Opt<i64>,
    pub tls: Option<RawTls>,
    pub request_timeout: Opt<String>,
    pub header_read_timeout: Opt<String>,
    pub keepalive_timeout: Opt<String>,
    pub shutdown_grace: Opt<String>,
    pub max_body_bytes: Opt<i64>,
    pub max_header_bytes: Opt<i64>,
    pub max_headers: Opt<i64>,
    pub connect_timeout: Opt<String>,
    pub max_connections: Opt<i64>,
    pub access_log_sample: Opt<f64>,
}

/// `server.tls`.
#[derive(Debug)]
pub(crate) struct RawTls {
    pub at: usize,
    pub cert: Opt<String>,
    pub key: Opt<String>,
}

/// `[admin]`.
#[derive(Debug, Default)]
pub(crate) struct RawAdmin {
    pub listen: Opt<String>,
    pub token_file: Opt<String>,
}

/// `[state]`.
#[derive(Debug, Default)]
pub(crate) struct RawState {
    pub dir: Opt<String>,
}

/// `[upstreams.NAME]`.
#[derive(Debug)]
pub(crate) struct RawUpstream {
    /// The table name, located at its key.
    pub name: Sp<String>,
    pub endpoints: List<String>,
    pub outlier: Option<RawOutlier>,
    pub health_check: Option<RawHealthCheck>,
    pub tls_ca: Opt<String>,
    pub protocol: Opt<String>,
}

/// `outlier = { .. }` of an upstream.
#[derive(Debug)]
pub(crate) struct RawOutlier {
    pub consecutive_failures: Opt<i64>,
    pub base_ejection: Opt<String>,
    pub max_ejection: Opt<String>,
}

/// `health_check = { .. }` of an upstream.
#[derive(Debug)]
pub(crate) struct RawHealthCheck {
    pub at: usize,
    pub path: Opt<String>,
    pub interval: Opt<String>,
    pub timeout: Opt<String>,
    pub grpc_service: Opt<String>,
}

/// `[[routes]]`.
#[derive(Debug)]
pub(crate) struct RawRoute {
    /// Where the `[[routes]]` header is.
    pub at: usize,
    pub name: Opt<String>,
    pub matcher: Option<RawMatch>,
    pub stable: Opt<String>,
    pub canary: Opt<String>,
    pub canary_weight: Opt<f64>,
    pub sticky: Opt<String>,
    pub salt: Opt<String>,
    pub fallback: Opt<bool>,
    pub fallback_budget: Opt<f64>,
    pub rules: Vec<RawRule>,
    pub ramp: Option<RawRamp>,
    pub shadow: Option<RawShadow>,
    pub grpc_error_codes: List<String>,
    pub grpc_idempotent: List<String>,
}

/// `[routes.shadow]`.
#[derive(Debug)]
pub(crate) struct RawShadow {
    pub at: usize,
    pub percent: Opt<f64>,
    pub methods: List<String>,
    pub max_in_flight: Opt<i64>,
    pub timeout: Opt<String>,
    pub items: Opt<String>,
    pub item_id: Opt<String>,
    pub k: Opt<i64>,
    pub ignore: List<String>,
    pub noise_percent: Opt<f64>,
    pub strip_credentials: Opt<bool>,
}

/// `match = { .. }`.
#[derive(Debug)]
pub(crate) struct RawMatch {
    pub host: Opt<String>,
    pub path_prefix: Opt<String>,
}

/// `[[routes.rules]]`.
#[derive(Debug)]
pub(crate) struct RawRule {
    pub at: usize,
    pub when: Option<RawWhen>,
    pub to: Opt<String>,
}

/// `when = { .. }`.
#[derive(Debug)]
pub(crate) struct RawWhen {
    pub at: usize,
    pub header: Opt<String>,
    pub cookie: Opt<String>,
    pub query: Opt<String>,
    pub equals: Opt<String>,
    pub regex: Opt<String>,
    pub sticky_in: List<String>,
}

/// `[routes.ramp]`.
#[derive(Debug)]
pub(crate) struct RawRamp {
    pub at: usize,
    pub steps: List<f64>,
    pub interval: Opt<String>,
    pub tick: Opt<String>,
    pub min_requests: Opt<i64>,
    pub baseline: Opt<String>,
    pub confidence: Opt<f64>,
    pub max_error_rate_increase: Opt<f64>,
    pub max_p99_increase: Opt<f64>,
    pub gate_ratios: List<f64>,
    pub max_step_duration: Opt<String>,
    pub prometheus_url: Opt<String>,
    pub failures_before_rollback: Opt<i64>,
    pub prometheus_checks: Vec<RawPromCheck>,
    pub shadow: Opt<String>,
    pub min_rbo: Opt<f64>,
    pub segments: Opt<String>,
    pub segment_values: List<String>,
}

/// `[[routes.ramp.prometheus_checks]]`.
#[derive(Debug)]
pub(crate) struct RawPromCheck {
    pub at: usize,
    pub name: Opt<String>,
    pub query: Opt<String>,
    pub min_ratio: Opt<f64>,
    pub max_ratio: Opt<f64>,
    pub min: Opt<f64>,
    pub max: Opt<f64>,
}
