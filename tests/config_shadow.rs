//! `[routes.shadow]` and the ramp's `shadow` / `min_rbo`, through `parse`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use grayproxy::config::types::ShadowConfig;
use support::config::parsed::*;

fn shadow(lines: &str) -> String {
    file("", &format!("[routes.shadow]\n{lines}"))
}

#[test]
fn defaults_and_every_key() {
    assert_eq!(ok(&file("", "")).routes[0].shadow, None);
    let c = ok(&shadow(""));
    assert_eq!(
        c.routes[0].shadow.as_deref().cloned(),
        Some(ShadowConfig {
            always: true,
            ..ShadowConfig::default()
        })
    );
    let c = ok(&shadow(
        "percent = 10.0\nmethods = [\"GET\", \"post\"]\nmax_in_flight = 8\ntimeout = \"500ms\"\n\
         items = \"data.items\"\nitem_id = \"id\"\nk = 20\nignore = [\"request_id\"]\n\
         noise_percent = 0\nstrip_credentials = true",
    ));
    let s = c.routes[0].shadow.clone().unwrap();
    assert_eq!(s.percent, 10.0);
    assert_eq!(s.methods, [http::Method::GET, http::Method::POST]);
    assert_eq!(
        (s.max_in_flight, s.timeout, s.k),
        (8, Duration::from_millis(500), 20)
    );
    assert_eq!(
        (s.items.as_deref(), s.item_id.as_deref()),
        (Some("data.items"), Some("id"))
    );
    assert_eq!(s.ignore, ["request_id"]);
    assert_eq!(s.noise_percent, 0.0);
    assert!(s.strip_credentials && s.always);
    // "" means no list comparison.
    let c = ok(&shadow("items = \"\""));
    assert_eq!(c.routes[0].shadow.as_ref().unwrap().items, None);
}

#[test]
fn every_bad_value_is_reported_with_its_location() {
    let e = load(&shadow(
        "percent = 0\nmethods = [\"G ET\"]\nmax_in_flight = 0\ntimeout = \"soon\"\nk = 0\nnoise_percent = 101\nsurprise = 1",
    ))
    .unwrap_err();
    assert_eq!(e.len(), 7, "{e:#?}");
    let line_of = |needle: &str| {
        e.iter()
            .find(|m| m.contains(needle))
            .unwrap_or_else(|| panic!("{needle}: {e:#?}"))
            .clone()
    };
    // The route's table starts on line 9 of the generated file.
    assert!(
        line_of("percent 0 must be above 0").starts_with("11:11: "),
        "{e:#?}"
    );
    assert!(
        line_of("\"G ET\" is not an HTTP method").starts_with("12:12: "),
        "{e:#?}"
    );
    assert!(line_of("max_in_flight 0 must be in 1..=10000").starts_with("13:"));
    assert!(line_of("`timeout`:").starts_with("14:"));
    assert!(line_of("k 0 must be in 1..=1000").starts_with("15:"));
    assert!(line_of("noise_percent 101 must be in 0..=100").starts_with("16:"));
    assert!(line_of("unknown key `surprise` in [routes.shadow]").starts_with("17:"));
    assert_eq!(
        one_err(&shadow("methods = []")),
        "methods is empty; list the methods to mirror, e.g. [\"GET\", \"HEAD\"]"
    );
}

#[test]
fn ramp_shadow_phase_and_min_rbo() {
    let c = ok(&file("", "[routes.ramp]\nshadow = \"5m\"\nmin_rbo = 0.5"));
    let p = c.routes[0].ramp.clone().unwrap();
    assert_eq!(
        (p.shadow, p.min_rbo),
        (Some(Duration::from_secs(300)), Some(0.5))
    );
    // The phase mirrors with the defaults when [routes.shadow] is absent,
    // and only during the phase.
    assert_eq!(
        c.routes[0].shadow.as_deref().cloned(),
        Some(ShadowConfig {
            always: false,
            ..ShadowConfig::default()
        })
    );
    assert_eq!(
        one_err(&file("", "[routes.ramp]\nshadow = \"0s\"")),
        "shadow must be a positive duration, e.g. \"5m\" (or leave it out for no shadow phase)"
    );
    assert_eq!(
        one_err(&file("", "[routes.ramp]\nshadow = \"1m\"\nmin_rbo = 1.5")),
        "min_rbo 1.5 must be in 0.0..=1.0 (mean rank-biased overlap)"
    );
    assert_eq!(
        warnings(&file("", "[routes.ramp]\nmin_rbo = 0.5")),
        ["min_rbo has no effect without a shadow phase; add shadow = \"5m\" to [routes.ramp]"]
    );
}
