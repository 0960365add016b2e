//! `[routes.shadow]` checks, and the ramp's `shadow` / `min_rbo`.

use http::Method;

use super::Checker;
use crate::config::raw::{RawRamp, RawShadow};
use crate::config::types::{RampPolicy, ShadowConfig};

/// Most concurrent mirrored requests a route may ask for.
const MAX_IN_FLIGHT: i64 = 10_000;
/// Deepest list comparison.
const MAX_K: i64 = 1_000;

/// The route's shadow settings: the table's, or the defaults when only the
/// ramp's shadow phase asks for mirroring; `None` when neither does.
pub(super) fn shadow(
    c: &mut Checker<'_>,
    raw: Option<&RawShadow>,
    ramp: Option<&RampPolicy>,
) -> Option<ShadowConfig> {
    let phase = ramp.is_some_and(|r| r.shadow.is_some());
    match raw {
        Some(s) => Some(table(c, s)),
        None if phase => Some(ShadowConfig::default()),
        None => None,
    }
}

fn table(c: &mut Checker<'_>, s: &RawShadow) -> ShadowConfig {
    let d = ShadowConfig::default();
    let percent = percent(c, &s.percent, "percent", d.percent);
    let noise_percent = percent_field(c, &s.noise_percent, "noise_percent", d.noise_percent);
    let methods = match &s.methods {
        None => d.methods.clone(),
        Some(list) => {
            if list.value.is_empty() {
                c.error(
                    list.at,
                    "methods is empty; list the methods to mirror, e.g. [\"GET\", \"HEAD\"]",
                );
            }
            list.value
                .iter()
                .filter_map(
                    |m| match Method::from_bytes(m.value.to_ascii_uppercase().as_bytes()) {
                        Ok(method) => Some(method),
                        Err(_) => {
                            c.error(
                                m.at,
                                format!(
                                    "methods: \"{}\" is not an HTTP method, e.g. \"GET\"",
                                    m.value
                                ),
                            );
                            None
                        }
                    },
                )
                .collect()
        }
    };
    let max_in_flight = match &s.max_in_flight {
        None => d.max_in_flight,
        Some(m) if (1..=MAX_IN_FLIGHT).contains(&m.value) => m.value as usize,
        Some(m) => {
            c.error(
                m.at,
                format!("max_in_flight {} must be in 1..={MAX_IN_FLIGHT} (concurrent mirrored requests)", m.value),
            );
            d.max_in_flight
        }
    };
    let timeout = c.duration(&s.timeout, "timeout", d.timeout);
    if timeout.is_zero() {
        if let Some(t) = &s.timeout {
            c.error(t.at, "shadow timeout must be above 0, e.g. \"2s\"");
        }
    }
    let k = match &s.k {
        None => d.k,
        Some(k) if (1..=MAX_K).contains(&k.value) => k.value as usize,
        Some(k) => {
            c.error(
                k.at,
                format!(
                    "k {} must be in 1..={MAX_K} (depth of the list comparison)",
                    k.value
                ),
            );
            d.k
        }
    };
    if s.item_id.is_some() && s.items.is_none() {
        c.warn(
            s.at,
            "item_id has no effect without items; set items = \"<path of the ranked list>\"",
        );
    }
    let non_empty = |v: &Option<crate::config::raw::Sp<String>>| {
        v.as_ref()
            .map(|s| s.value.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    ShadowConfig {
        percent,
        methods,
        max_in_flight,
        timeout,
        items: non_empty(&s.items),
        item_id: non_empty(&s.item_id),
        k,
        ignore: s
            .ignore
            .as_ref()
            .map(|l| l.value.iter().map(|i| i.value.clone()).collect())
            .unwrap_or_default(),
        noise_percent,
        strip_credentials: s.strip_credentials.as_ref().is_some_and(|b| b.value),
        always: true,
    }
}

/// `percent`: in (0, 100].
fn percent(c: &mut Checker<'_>, v: &crate::config::raw::Opt<f64>, key: &str, default: f64) -> f64 {
    let Some(p) = v else { return default };
    if p.value.is_finite() && p.value > 0.0 && p.value <= 100.0 {
        return p.value;
    }
    c.error(
        p.at,
        format!(
            "{key} {} must be above 0 and at most 100 (percent of stable-answered requests)",
            p.value
        ),
    );
    default
}

/// `noise_percent`: in [0, 100] (0 turns the noise floor off).
fn percent_field(
    c: &mut Checker<'_>,
    v: &crate::config::raw::Opt<f64>,
    key: &str,
    default: f64,
) -> f64 {
    let Some(p) = v else { return default };
    if p.value.is_finite() && (0.0..=100.0).contains(&p.value) {
        return p.value;
    }
    c.error(
        p.at,
        format!(
            "{key} {} must be in 0..=100 (percent of mirrored requests sent to stable twice)",
            p.value
        ),
    );
    default
}

/// `[routes.ramp] shadow` and `min_rbo` into the policy.
pub(super) fn ramp_keys(c: &mut Checker<'_>, r: &RawRamp, policy: &mut RampPolicy) {
    if let Some(s) = &r.shadow {
        let d = c.duration(&r.shadow, "shadow", std::time::Duration::ZERO);
        if d.is_zero() {
            c.error(s.at, "shadow must be a positive duration, e.g. \"5m\" (or leave it out for no shadow phase)");
        } else {
            policy.shadow = Some(d);
        }
    }
    if let Some(m) = &r.min_rbo {
        if m.value.is_finite() && (0.0..=1.0).contains(&m.value) {
            policy.min_rbo = Some(m.value);
        } else {
            c.error(
                m.at,
                format!(
                    "min_rbo {} must be in 0.0..=1.0 (mean rank-biased overlap)",
                    m.value
                ),
            );
        }
        if r.shadow.is_none() {
            c.warn(m.at, "min_rbo has no effect without a shadow phase; add shadow = \"5m\" to [routes.ramp]");
        }
    }
}
