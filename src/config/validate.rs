//! The validation layer: raw, spanned values → runtime [`Config`].
//!
//! Every check is independent and pushes into one list, so a file with ten
//! mistakes gets ten errors. A value that fails a check is replaced by a
//! placeholder so later checks can still run; the placeholders never escape,
//! because a [`Config`] is only returned when the error list is empty.
//! Names (`stable = "reco-v1"`) are resolved to [`UpstreamId`]s here.

mod fleet;
mod ramp;
mod route;
mod segments;
mod shadow;
mod shadowing;

use std::collections::{HashMap, HashSet};
use std::net::{Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::HeaderName;

use super::duration::parse_duration;
use super::error::{Issue, LineIndex};
use super::raw::{Opt, RawConfig, RawServer, RawUpstream, Sp};
use super::types::{
    AdminConfig, Config, Endpoint, HealthCheck, OutlierPolicy, Protocol, Route, ServerConfig,
    StateConfig, TlsFiles, Upstream,
};
use crate::domain::CanaryWeight;

/// Collects errors and warnings while building a config.
pub(crate) struct Checker<'a> {
    /// Directory that relative paths are resolved against (absolute).
    base_dir: &'a Path,
    lines: &'a LineIndex<'a>,
    /// Everything wrong, unordered.
    pub errors: Vec<Issue>,
    /// Everything suspicious, unordered.
    pub warnings: Vec<Issue>,
}

impl<'a> Checker<'a> {
    /// A checker resolving relative paths against `base_dir`.
    pub fn new(base_dir: &'a Path, lines: &'a LineIndex<'a>) -> Checker<'a> {
        Checker {
            base_dir,
            lines,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }

    fn error(&mut self, at: usize, message: impl Into<String>) {
        self.errors.push(Issue::new(at, message));
    }

    fn warn(&mut self, at: usize, message: impl Into<String>) {
        self.warnings.push(Issue::new(at, message));
    }

    fn line_of(&self, at: usize) -> usize {
        self.lines.locate(at).0
    }

    /// An optional duration, `default` when absent or invalid (reported).
    fn duration(&mut self, v: &Opt<String>, key: &str, default: Duration) -> Duration {
        let Some(v) = v else { return default };
        parse_duration(&v.value).unwrap_or_else(|e| {
            self.error(v.at, format!("`{key}`: {e}"));
            default
        })
    }

    /// A weight in percent, `0.0..=100.0` with at most two decimals.
    fn weight(&mut self, v: &Sp<f64>, key: &str) -> Option<CanaryWeight> {
        let p = v.value;
        let problem = if !p.is_finite() {
            format!("{key} {p} is not a number; use 0.0..=100.0")
        } else if p > 100.0 {
            format!("{key} {p} is above 100; use 0.0..=100.0")
        } else if p < 0.0 {
            format!("{key} {p} is below 0; use 0.0..=100.0")
        } else if let Some(w) = CanaryWeight::from_percent(p) {
            return Some(w);
        } else {
            format!(
                "{key} {p} has more than two decimals; weights go in steps of 0.01 (e.g. {p:.2})"
            )
        };
        self.error(v.at, problem);
        None
    }

    /// A path relative to the config file's directory, made absolute.
    fn path(&mut self, v: &Sp<String>, key: &str) -> PathBuf {
        if v.value.is_empty() {
            self.error(
                v.at,
                format!("`{key}` is empty; give a file or directory path"),
            );
        }
        let p = Path::new(&v.value);
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.base_dir.join(p)
        }
    }

    /// A listen address: an IP literal and a port.
    fn listen(&mut self, v: &Opt<String>, table: &str, default: SocketAddr) -> SocketAddr {
        let Some(v) = v else { return default };
        v.value.parse().unwrap_or_else(|_| {
            let msg = format!(
                "{table}.listen {:?} is not an IP:port address; use e.g. \"127.0.0.1:8080\" \
                 or \"[::1]:8080\" (host names are not resolved; port 0 picks a free port)",
                v.value
            );
            self.error(v.at, msg);
            default
        })
    }

    /// `server.access_log_sample`: a fraction of requests, `0.0..=1.0`.
    fn sample_rate(&mut self, v: &Sp<f64>) -> Option<f64> {
        let r = v.value;
        if (0.0..=1.0).contains(&r) {
            return Some(r);
        }
        let msg = format!(
            "access_log_sample {r} is outside 0.0..=1.0; use a fraction of requests \
             (1.0 = every request, 0.01 = one in a hundred, 0.0 = off)"
        );
        self.error(v.at, msg);
        None
    }

    /// A positive size or count, `default` when absent or invalid.
    fn positive<T: TryFrom<i64> + Copy>(&mut self, v: &Opt<i64>, key: &str, default: T) -> T {
        let Some(v) = v else { return default };
        match T::try_from(v.value) {
            Ok(n) if v.value > 0 => n,
            _ => {
                self.error(v.at, format!("{key} {} must be above 0", v.value));
                default
            }
        }
    }
}

/// Builds the runtime config, or `None` when `c.errors` is not empty.
pub(crate) fn validate(raw: &RawConfig, path: &Path, c: &mut Checker<'_>) -> Option<Config> {
    let server = server(c, &raw.server);
    let admin = AdminConfig {
        listen: c.listen(
            &raw.admin.listen,
            "admin",
            SocketAddr::from(([127, 0, 0, 1], 9901)),
        ),
        token_file: raw
            .admin
            .token_file
            .as_ref()
            .map(|p| c.path(p, "token_file")),
    };
    let state = StateConfig {
        dir: match &raw.state.dir {
            Some(d) => c.path(d, "dir"),
            None => c.base_dir.join("state"),
        },
    };
    let upstreams = upstreams(c, &raw.upstreams);
    let routes: Vec<Route> = raw
        .routes
        .iter()
        .filter_map(|r| route::route(c, r, &upstreams))
        .collect();
    route_set_checks(c, raw, &upstreams);
    let fleet = raw.fleet.as_ref().and_then(|f| fleet::fleet(c, f));
    if !c.errors.is_empty() {
        return None;
    }
    Some(Config {
        path: path.to_path_buf(),
        server,
        admin,
        state,
        upstreams,
        routes,
        fleet,
    })
}

fn server(c: &mut Checker<'_>, s: &RawServer) -> ServerConfig {
    let arm_header = match &s.arm_header {
        None => Some(HeaderName::from_static("x-grayproxy-arm")),
        Some(v) if v.value.is_empty() => None,
        Some(v) => route::header_name(c, v, "arm_header"),
    };
    let workers = match &s.workers {
        None => 0,
        Some(w) => usize::try_from(w.value).unwrap_or_else(|_| {
            let msg = format!("workers {} is negative; use 0 for one per core", w.value);
            c.error(w.at, msg);
            0
        }),
    };
    let tls = s.tls.as_ref().and_then(|t| match (&t.cert, &t.key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: c.path(cert, "cert"),
            key: c.path(key, "key"),
        }),
        (cert, _) => {
            let missing = if cert.is_none() { "cert" } else { "key" };
            let msg = format!("server.tls needs both `cert` and `key`; add `{missing}`");
            c.error(t.at, msg);
            None
        }
    });
    ServerConfig {
        listen: c.listen(
            &s.listen,
            "server",
            SocketAddr::from(([127, 0, 0, 1], 8080)),
        ),
        arm_header,
        workers,
        tls,
        request_timeout: c.duration(&s.request_timeout, "request_timeout", secs(10)),
        header_read_timeout: c.duration(&s.header_read_timeout, "header_read_timeout", secs(5)),
        keepalive_timeout: c.duration(&s.keepalive_timeout, "keepalive_timeout", secs(75)),
        shutdown_grace: c.duration(&s.shutdown_grace, "shutdown_grace", secs(30)),
        max_body_bytes: c.positive(&s.max_body_bytes, "max_body_bytes", 10_485_760),
        max_header_bytes: c.positive(&s.max_header_bytes, "max_header_bytes", 65_536),
        max_headers: c.positive(&s.max_headers, "max_headers", 100),
        connect_timeout: c.duration(&s.connect_timeout, "connect_timeout", secs(3)),
        max_connections: c.positive(&s.max_connections, "max_connections", 10_000),
        access_log_sample: s.access_log_sample.as_ref().and_then(|v| c.sample_rate(v)),
    }
    .checked_timeouts(c, s)
}

impl ServerConfig {
    /// Zero timeouts would fail every request; zero grace is legal (no drain).
    fn checked_timeouts(self, c: &mut Checker<'_>, s: &RawServer) -> ServerConfig {
        for (d, raw, key) in [
            (self.request_timeout, &s.request_timeout, "request_timeout"),
            (
                self.header_read_timeout,
                &s.header_read_timeout,
                "header_read_timeout",
            ),
            (self.connect_timeout, &s.connect_timeout, "connect_timeout"),
            (
                self.keepalive_timeout,
                &s.keepalive_timeout,
                "keepalive_timeout",
            ),
        ] {
            if let (true, Some(raw)) = (d.is_zero(), raw) {
                c.error(raw.at, format!("{key} must be above 0, e.g. \"10s\""));
            }
        }
        self
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Upstreams in name order (so [`super::types::UpstreamId`]s are stable).
fn upstreams(c: &mut Checker<'_>, raw: &[RawUpstream]) -> Vec<Upstream> {
    let mut out: Vec<Upstream> = raw
        .iter()
        .map(|u| {
            let name = &u.name.value;
            let endpoints = match &u.endpoints {
                None => {
                    let msg = format!(
                        "[upstreams.{name}] has no `endpoints`; add endpoints = [\"127.0.0.1:8081\"]"
                    );
                    c.error(u.name.at, msg);
                    Vec::new()
                }
                Some(list) if list.value.is_empty() => {
                    let msg = format!("upstream `{name}` has no endpoints; list at least one host:port");
                    c.error(list.at, msg);
                    Vec::new()
                }
                Some(list) => list
                    .value
                    .iter()
                    .filter_map(|e| match parse_endpoint(&e.value) {
                        Ok(ep) => Some(ep),
                        Err(why) => {
                            c.error(e.at, format!("endpoint {:?} {why}", e.value));
                            None
                        }
                    })
                    .collect(),
            };
            Upstream {
                name: name.clone(),
                endpoints,
                outlier: outlier(c, u),
                health_check: health_check(c, u),
                tls_ca: u.tls_ca.as_ref().map(|p| c.path(p, "tls_ca")),
                protocol: protocol(c, u),
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// An upstream's outlier policy, defaults filled in.
fn outlier(c: &mut Checker<'_>, u: &RawUpstream) -> OutlierPolicy {
    let d = OutlierPolicy::default();
    let Some(o) = &u.outlier else { return d };
    let policy = OutlierPolicy {
        consecutive_failures: c.positive(
            &o.consecutive_failures,
            "consecutive_failures",
            d.consecutive_failures,
        ),
        base_ejection: c.duration(&o.base_ejection, "base_ejection", d.base_ejection),
        max_ejection: c.duration(&o.max_ejection, "max_ejection", d.max_ejection),
    };
    if let Some(raw) = &o.base_ejection {
        if policy.base_ejection.is_zero() {
            c.error(raw.at, "base_ejection must be above 0, e.g. \"30s\"");
        }
    }
    if let (Some(raw), true) = (&o.max_ejection, policy.max_ejection < policy.base_ejection) {
        let msg = "max_ejection is below base_ejection; make it at least as long";
        c.error(raw.at, msg);
    }
    policy
}

/// An upstream's `protocol`, default HTTP/1.1.
fn protocol(c: &mut Checker<'_>, u: &RawUpstream) -> Protocol {
    match u.protocol.as_ref() {
        None => Protocol::Http1,
        Some(p) if p.value == "http1" => Protocol::Http1,
        Some(p) if p.value == "h2" => Protocol::H2,
        Some(p) => {
            let msg = format!(
                "protocol {:?} is not known; use \"http1\" (the default) or \"h2\" (HTTP/2, for gRPC)",
                p.value
            );
            c.error(p.at, msg);
            Protocol::Http1
        }
    }
}

/// An upstream's active health check, when configured.
fn health_check(c: &mut Checker<'_>, u: &RawUpstream) -> Option<HealthCheck> {
    let h = u.health_check.as_ref()?;
    let grpc_service = h.grpc_service.as_ref().map(|s| s.value.clone());
    if let Some(s) = &h.grpc_service {
        if u.protocol.as_ref().map(|p| p.value.as_str()) != Some("h2") {
            let msg = "health_check grpc_service needs protocol = \"h2\" on the upstream (gRPC runs over HTTP/2)";
            c.error(s.at, msg);
            return None;
        }
        if let Some(p) = &h.path {
            let msg = "health_check has both `path` and `grpc_service`; keep one (grpc_service checks grpc.health.v1.Health/Check)";
            c.error(p.at, msg);
            return None;
        }
    }
    let path = match &h.path {
        None if grpc_service.is_some() => crate::grpc::HEALTH_CHECK_PATH.to_owned(),
        Some(p) if p.value.starts_with('/') && !p.value.chars().any(char::is_whitespace) => {
            p.value.clone()
        }
        Some(p) => {
            let msg = format!(
                "health_check path {:?} must start with '/' and have no spaces, e.g. \"/healthz\"",
                p.value
            );
            c.error(p.at, msg);
            return None;
        }
        None => {
            c.error(
                h.at,
                "health_check needs a `path`, e.g. path = \"/healthz\"",
            );
            return None;
        }
    };
    let interval = c.duration(&h.interval, "interval", secs(5));
    let timeout = c.duration(&h.timeout, "timeout", interval.min(secs(2)));
    for (d, raw, key) in [
        (interval, &h.interval, "interval"),
        (timeout, &h.timeout, "timeout"),
    ] {
        if let (true, Some(raw)) = (d.is_zero(), raw) {
            c.error(
                raw.at,
                format!("health_check {key} must be above 0, e.g. \"5s\""),
            );
        }
    }
    Some(HealthCheck {
        path,
        interval,
        timeout,
        grpc_service,
    })
}

/// Parses `host:port`, `http://host:port` or `https://host:port` (a bare
/// trailing `/` is tolerated; any other path is not). The error completes
/// the sentence "endpoint "X" ...".
pub(crate) fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    const FORMS: &str = "use host:port, http://host:port or https://host:port";
    let (tls, default_port, rest) = if let Some(r) = text.strip_prefix("http://") {
        (false, Some(80), r)
    } else if let Some(r) = text.strip_prefix("https://") {
        (true, Some(443), r)
    } else if text.contains("://") {
        return Err(format!("has an unsupported scheme; {FORMS}"));
    } else {
        (false, None, text)
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(format!("must not have a path; {FORMS}"));
    }
    let (host, port) = if let Some(r) = rest.strip_prefix('[') {
        let (h, after) = r
            .split_once(']')
            .ok_or(format!("has an unclosed `[`; {FORMS}"))?;
        if h.parse::<Ipv6Addr>().is_err() {
            return Err(format!(
                "has `{h}` in brackets, which is not an IPv6 address"
            ));
        }
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("has an invalid port {after:?}; use 1..=65535")),
        };
        (h, port)
    } else {
        match rest.rsplit_once(':') {
            Some((h, _)) if h.contains(':') => {
                return Err("has an IPv6 address without brackets; write [::1]:8080".into())
            }
            Some((h, p)) => (h, Some(p)),
            None => (rest, None),
        }
    };
    if host.is_empty()
        || !host
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-._:".contains(ch))
    {
        return Err(format!("has an invalid host; {FORMS}"));
    }
    let port = match (port, default_port) {
        (Some(p), _) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(format!("has an invalid port {p:?}; use 1..=65535")),
        },
        (None, Some(d)) => d,
        (None, None) => return Err(format!("has no port; write {text}:PORT or http://{text}")),
    };
    Ok(Endpoint {
        tls,
        host: host.to_owned(),
        port,
    })
}

/// Checks across routes: at least one, unique names, shadowing, unused upstreams.
fn route_set_checks(c: &mut Checker<'_>, raw: &RawConfig, upstreams: &[Upstream]) {
    if raw.routes.is_empty() {
        c.error(
            0,
            "no [[routes]] defined; every request would get 404 (add a [[routes]] table)",
        );
    }
    let mut first_of: HashMap<&str, usize> = HashMap::with_capacity(raw.routes.len());
    for n in raw.routes.iter().filter_map(|r| r.name.as_ref()) {
        if let Some(&first) = first_of.get(n.value.as_str()) {
            let line = c.line_of(first);
            let msg = format!(
                "route name `{}` is already used on line {line}; route names must be unique",
                n.value
            );
            c.error(n.at, msg);
        } else {
            first_of.insert(&n.value, n.at);
        }
    }
    shadowing::shadowing(c, &raw.routes);
    let used: HashSet<&str> = raw
        .routes
        .iter()
        .flat_map(|r| [&r.stable, &r.canary])
        .filter_map(|s| s.as_ref().map(|s| s.value.as_str()))
        .collect();
    for u in upstreams {
        if !used.contains(u.name.as_str()) {
            if let Some(ru) = raw.upstreams.iter().find(|ru| ru.name.value == u.name) {
                let msg = format!("upstream `{}` is not used by any route", u.name);
                c.warn(ru.name.at, msg);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(tls: bool, host: &str, port: u16) -> Result<Endpoint, String> {
        Ok(Endpoint {
            tls,
            host: host.into(),
            port,
        })
    }

    #[test]
    fn endpoints_parse() {
        assert_eq!(
            parse_endpoint("127.0.0.1:18081"),
            ep(false, "127.0.0.1", 18081)
        );
        assert_eq!(parse_endpoint("http://reco:80/"), ep(false, "reco", 80));
        assert_eq!(parse_endpoint("http://reco"), ep(false, "reco", 80));
        assert_eq!(
            parse_endpoint("https://reco.svc"),
            ep(true, "reco.svc", 443)
        );
        assert_eq!(parse_endpoint("https://reco:8443"), ep(true, "reco", 8443));
        assert_eq!(parse_endpoint("[::1]:9000"), ep(false, "::1", 9000));
        assert_eq!(parse_endpoint("https://[::1]"), ep(true, "::1", 443));
    }

    #[test]
    fn endpoints_reject_with_reason() {
        let err = |s: &str| parse_endpoint(s).err().unwrap_or_default();
        assert!(err("reco").starts_with("has no port; write reco:PORT"));
        assert!(err("http://reco:80/api").starts_with("must not have a path"));
        assert!(err("ftp://reco:21").starts_with("has an unsupported scheme"));
        assert!(err("reco:0").starts_with("has an invalid port \"0\""));
        assert!(err("reco:http").starts_with("has an invalid port"));
        assert!(err("reco:70000").starts_with("has an invalid port"));
        assert!(err("::1:80").starts_with("has an IPv6 address without brackets"));
        assert!(err("[::1:80").starts_with("has an unclosed `[`"));
        assert!(err("[nope]:80").contains("not an IPv6 address"));
        assert!(err("[::1]80").starts_with("has an invalid port"));
        assert!(err(":80").starts_with("has an invalid host"));
        assert!(err("user@host:80").starts_with("has an invalid host"));
    }
}
