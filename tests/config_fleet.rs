//! `[fleet]` validation through the public `parse` API: defaults, relative
//! paths, and every error reported at once with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use support::config::parsed::*;

#[test]
fn no_fleet_section_means_no_fleet() {
    assert!(ok(&file("", "")).fleet.is_none());
}

#[test]
fn full_section_and_relative_paths() {
    let c = ok(&file(
        "[fleet]\netcd = [\"https://10.0.0.5:2379\", \"https://etcd.svc:2379\"]\n\
         prefix = \"/grayproxy/shop/\"\nreplica = \"gp-1\"\nlease_ttl = \"3s\"\n\
         user = \"grayproxy\"\ntoken_file = \"etcd.password\"\nca = \"/pki/etcd-ca.pem\"",
        "",
    ));
    let f = c.fleet.unwrap();
    assert_eq!(f.etcd, ["https://10.0.0.5:2379", "https://etcd.svc:2379"]);
    assert_eq!(f.prefix, "/grayproxy/shop", "trailing slash trimmed");
    assert_eq!(f.replica, "gp-1");
    assert_eq!(f.lease_ttl, Duration::from_secs(3));
    let (user, file) = f.auth.unwrap();
    assert_eq!(user, "grayproxy");
    assert_eq!(
        file,
        Path::new("/etc/gp/etcd.password"),
        "relative to the config file"
    );
    assert_eq!(f.ca.as_deref(), Some(Path::new("/pki/etcd-ca.pem")));
}

#[test]
fn defaults() {
    let f = ok(&file("[fleet]\netcd = [\"http://127.0.0.1:2379\"]", ""))
        .fleet
        .unwrap();
    assert_eq!(f.prefix, "/grayproxy");
    assert_eq!(f.lease_ttl, Duration::from_secs(5));
    assert!(!f.replica.is_empty(), "the host name");
    assert!(f.auth.is_none() && f.ca.is_none());
}

#[test]
fn every_error_with_its_location() {
    let text = file(
        "[fleet]\netcd = [\"127.0.0.1:2379\", \"http://etcd\"]\nprefix = \"/\"\n\
         replica = \"gp/1\"\nlease_ttl = \"1s\"\nuser = \"gp\"\nbogus = 1",
        "",
    );
    let e = load(&text).unwrap_err();
    let expect = [
        "2:9: etcd endpoint \"127.0.0.1:2379\" must start with http:// or https://",
        "2:27: etcd endpoint \"http://etcd\" has no port; etcd's client port is usually 2379",
        "3:10: `prefix` is empty; give a key namespace such as \"/grayproxy/shop\"",
        "4:11: replica id \"gp/1\" may contain only letters, digits, `-`, `_` and `.`",
        "5:13: lease_ttl \"1s\" is below 2s; use at least \"2s\"",
        "6:8: `user` needs `token_file`, the file holding that etcd user's password",
    ];
    for want in expect {
        assert!(e.iter().any(|m| m == want), "missing {want:?} in {e:#?}");
    }
    assert!(
        e.iter()
            .any(|m| m.starts_with("7:1: unknown key `bogus` in [fleet]")),
        "{e:#?}"
    );
    assert_eq!(e.len(), 7, "{e:#?}");
}

#[test]
fn missing_endpoints_and_odd_ttls() {
    assert_eq!(
        one_err(&file("[fleet]\nreplica = \"a\"", "")),
        "[fleet] needs `etcd`, the etcd endpoints; e.g. etcd = [\"http://127.0.0.1:2379\"]"
    );
    let e = |ttl: &str| {
        one_err(&file(
            &format!("[fleet]\netcd = [\"http://e:1\"]\nreplica = \"a\"\nlease_ttl = \"{ttl}\""),
            "",
        ))
    };
    assert!(e("2500ms").contains("not whole seconds"), "{}", e("2500ms"));
    assert!(e("10m").contains("above 300s"));
    assert!(e("soon").starts_with("`lease_ttl`"));
    assert!(one_err(&file(
        "[fleet]\netcd = [\"https://e:1\"]\nreplica = \"a\"",
        ""
    ))
    .contains("needs `ca`"));
}
