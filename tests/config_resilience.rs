//! Config keys for upstream protection and client limits: defaults, values,
//! and the errors for bad ones.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use grayproxy::config::types::{HealthCheck, OutlierPolicy};
use support::config::parsed::{errs, file, ok};

#[test]
fn defaults() {
    let c = ok(&file("", ""));
    assert_eq!(c.server.connect_timeout, Duration::from_secs(3));
    assert_eq!(c.server.max_connections, 10_000);
    for u in &c.upstreams {
        assert_eq!(u.outlier, OutlierPolicy::default());
        assert_eq!(u.outlier.consecutive_failures, 5);
        assert_eq!(u.outlier.base_ejection, Duration::from_secs(30));
        assert_eq!(u.outlier.max_ejection, Duration::from_secs(300));
        assert_eq!(u.health_check, None);
    }
}

#[test]
fn values_are_read() {
    let text = file(
        "[server]\nconnect_timeout = \"250ms\"\nmax_connections = 64",
        "",
    )
    .replace(
        "[upstreams.b]",
        "outlier = { consecutive_failures = 3, base_ejection = \"10s\", max_ejection = \"1m\" }\n\
         health_check = { path = \"/healthz\", interval = \"5s\" }\n\
         tls_ca = \"certs/ca.pem\"\n[upstreams.b]",
    );
    let c = ok(&text);
    assert_eq!(
        c.upstreams[0].tls_ca.as_deref(),
        Some(std::path::Path::new("/etc/gp/certs/ca.pem"))
    );
    assert_eq!(c.upstreams[1].tls_ca, None);
    assert_eq!(c.server.connect_timeout, Duration::from_millis(250));
    assert_eq!(c.server.max_connections, 64);
    let a = &c.upstreams[0];
    assert_eq!(
        a.outlier,
        OutlierPolicy {
            consecutive_failures: 3,
            base_ejection: Duration::from_secs(10),
            max_ejection: Duration::from_secs(60),
        }
    );
    assert_eq!(
        a.health_check,
        Some(HealthCheck {
            path: "/healthz".into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            grpc_service: None,
        })
    );
}

#[test]
fn bad_values_are_all_reported() {
    let text = file(
        "[server]\nconnect_timeout = \"0s\"\nmax_connections = 0",
        "",
    )
    .replace(
        "[upstreams.b]",
        "outlier = { consecutive_failures = 0, base_ejection = \"1m\", max_ejection = \"10s\", x = 1 }\n\
         health_check = { path = \"healthz\", interval = \"0s\" }\n[upstreams.b]",
    );
    let e = errs(&text);
    let expected = [
        "connect_timeout must be above 0",
        "max_connections 0 must be above 0",
        "consecutive_failures 0 must be above 0",
        "max_ejection is below base_ejection",
        "unknown key `x` in [upstreams.a].outlier",
        "health_check path \"healthz\" must start with '/'",
    ];
    for want in expected {
        assert!(
            e.iter().any(|m| m.starts_with(want)),
            "missing {want:?} in {e:#?}"
        );
    }
    let no_path = file("", "").replace(
        "[upstreams.b]",
        "health_check = { interval = \"1s\" }\n[upstreams.b]",
    );
    assert!(errs(&no_path)[0].starts_with("health_check needs a `path`"));
}
