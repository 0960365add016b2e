//! `[fleet]` checks: etcd endpoints, key prefix, replica id, lease TTL, auth.

use std::time::Duration;

use super::Checker;
use crate::config::raw::{RawFleet, Sp};
use crate::config::types::FleetConfig;

/// Default `prefix` when the section leaves it out.
const DEFAULT_PREFIX: &str = "/grayproxy";
/// Default `lease_ttl`.
const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(5);
/// Shortest lease: etcd's own minimum is a few seconds, and keep-alives go
/// out every third of it.
const MIN_LEASE_TTL: Duration = Duration::from_secs(2);
/// Longest lease accepted: leader failover takes up to one lease.
const MAX_LEASE_TTL: Duration = Duration::from_secs(300);

/// The fleet settings, or `None` with the problems pushed into `c`.
pub(super) fn fleet(c: &mut Checker<'_>, f: &RawFleet) -> Option<FleetConfig> {
    let before = c.errors.len();
    let etcd = endpoints(c, f);
    let prefix = prefix(c, f.prefix.as_ref());
    let replica = replica(c, f);
    let lease_ttl = lease_ttl(c, f);
    let auth = match (&f.user, &f.token_file) {
        (Some(user), Some(file)) => {
            if user.value.is_empty() {
                c.error(user.at, "`user` is empty; give the etcd user name");
            }
            Some((user.value.clone(), c.path(file, "token_file")))
        }
        (Some(user), None) => {
            c.error(
                user.at,
                "`user` needs `token_file`, the file holding that etcd user's password",
            );
            None
        }
        (None, Some(file)) => {
            c.error(
                file.at,
                "`token_file` needs `user`, the etcd user whose password the file holds",
            );
            None
        }
        (None, None) => None,
    };
    let ca = f.ca.as_ref().map(|p| c.path(p, "ca"));
    if let (Some(ca_at), Some(list)) = (&f.ca, &f.etcd) {
        if list.value.iter().any(|e| e.value.starts_with("http://")) {
            let msg = "`ca` is set but an `etcd` endpoint is http://; use https:// endpoints \
                       with `ca` (or drop `ca` for a plain-text cluster)";
            c.error(ca_at.at, msg);
        }
    }
    (c.errors.len() == before).then_some(FleetConfig {
        etcd,
        prefix,
        replica,
        lease_ttl,
        auth,
        ca,
    })
}

fn endpoints(c: &mut Checker<'_>, f: &RawFleet) -> Vec<String> {
    let Some(list) = &f.etcd else {
        c.error(
            f.at,
            "[fleet] needs `etcd`, the etcd endpoints; e.g. etcd = [\"http://127.0.0.1:2379\"]",
        );
        return Vec::new();
    };
    if list.value.is_empty() {
        c.error(list.at, "`etcd` is empty; list at least one endpoint");
    }
    let mut out = Vec::new();
    for e in &list.value {
        match check_endpoint(&e.value) {
            Ok(()) => out.push(e.value.clone()),
            Err(why) => c.error(e.at, format!("etcd endpoint {:?} {why}", e.value)),
        }
    }
    if f.ca.is_none() && out.iter().any(|e| e.starts_with("https://")) {
        c.error(
            list.at,
            "an https:// etcd endpoint needs `ca`, the CA bundle that signed etcd's certificate",
        );
    }
    out
}

/// An etcd endpoint: `http://` or `https://`, a host and a port, no path.
fn check_endpoint(text: &str) -> Result<(), &'static str> {
    let uri: http::Uri = text
        .parse()
        .map_err(|_| "is not a URL; use e.g. \"http://10.0.0.5:2379\"")?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        _ => return Err("must start with http:// or https://"),
    }
    if uri.host().map_or(true, str::is_empty) {
        return Err("has no host");
    }
    if uri.port_u16().is_none() {
        return Err("has no port; etcd's client port is usually 2379");
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err("must not have a path");
    }
    Ok(())
}

/// The prefix without trailing slashes; keys are `PREFIX/leader`, `PREFIX/state/ROUTE`, ...
fn prefix(c: &mut Checker<'_>, v: Option<&Sp<String>>) -> String {
    let Some(v) = v else {
        return DEFAULT_PREFIX.to_owned();
    };
    let p = v.value.trim_end_matches('/');
    if p.is_empty() {
        c.error(
            v.at,
            "`prefix` is empty; give a key namespace such as \"/grayproxy/shop\"",
        );
    } else if p.chars().any(|ch| ch.is_whitespace() || ch.is_control()) {
        c.error(
            v.at,
            "`prefix` must not contain spaces or control characters",
        );
    }
    p.to_owned()
}

fn replica(c: &mut Checker<'_>, f: &RawFleet) -> String {
    let (id, at) = match &f.replica {
        Some(r) => (r.value.clone(), r.at),
        None => match host_name() {
            Some(h) => (h, f.at),
            None => {
                c.error(
                    f.at,
                    "the host name is unknown; set `replica` to a unique id such as \"gp-1\"",
                );
                return String::new();
            }
        },
    };
    if let Err(why) = check_replica(&id) {
        c.error(at, format!("replica id {id:?} {why}"));
    }
    id
}

/// A replica id becomes part of etcd keys and of `/status`.
pub(crate) fn check_replica(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        return Err("is empty; give a unique id such as \"gp-1\"");
    }
    if id.len() > 128 {
        return Err("is longer than 128 characters");
    }
    let ok = |ch: char| ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.');
    if !id.chars().all(ok) {
        return Err("may contain only letters, digits, `-`, `_` and `.`");
    }
    Ok(())
}

fn lease_ttl(c: &mut Checker<'_>, f: &RawFleet) -> Duration {
    let ttl = c.duration(&f.lease_ttl, "lease_ttl", DEFAULT_LEASE_TTL);
    let Some(v) = &f.lease_ttl else { return ttl };
    if ttl < MIN_LEASE_TTL {
        c.error(
            v.at,
            format!("lease_ttl {:?} is below 2s; use at least \"2s\"", v.value),
        );
    } else if ttl > MAX_LEASE_TTL {
        c.error(
            v.at,
            format!(
                "lease_ttl {:?} is above 300s; a dead leader is replaced only after one lease",
                v.value
            ),
        );
    } else if ttl.subsec_nanos() != 0 {
        c.error(
            v.at,
            format!(
                "lease_ttl {:?} is not whole seconds (etcd leases are); e.g. \"{}s\"",
                v.value,
                ttl.as_secs() + 1
            ),
        );
    }
    ttl
}

/// The machine's host name (Kubernetes sets it to the pod name).
fn host_name() -> Option<String> {
    let from_file = |p: &str| std::fs::read_to_string(p).ok();
    from_file("/proc/sys/kernel/hostname")
        .or_else(|| from_file("/etc/hostname"))
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_checked() {
        assert_eq!(check_endpoint("http://127.0.0.1:2379"), Ok(()));
        assert_eq!(check_endpoint("https://etcd.svc:2379"), Ok(()));
        assert!(check_endpoint("127.0.0.1:2379").is_err());
        assert!(check_endpoint("http://etcd").is_err());
        assert!(check_endpoint("http://etcd:2379/v3").is_err());
        assert!(check_endpoint("grpc://etcd:2379").is_err());
    }

    #[test]
    fn replica_ids_are_key_safe() {
        assert_eq!(check_replica("gp-1"), Ok(()));
        assert_eq!(check_replica("grayproxy-7d9f.shop_a"), Ok(()));
        assert!(check_replica("").is_err());
        assert!(check_replica("a/b").is_err());
        assert!(check_replica("a b").is_err());
        assert!(check_replica(&"x".repeat(129)).is_err());
    }
}
