//! The scrape's text: the per-route families written straight from their
//! cells, merged in name order with the registry's ordinary families
//! (which prometheus' own encoder writes).
//!
//! Building prometheus' metric structs for the per-route families (owned
//! label strings for every series, a sort of every family, then encoding)
//! took 150–390 ms for 1,000 routes; writing the same bytes into one
//! preallocated `String` takes a few milliseconds. The format is the text
//! exposition format 0.0.4 exactly as prometheus writes it: `# HELP` and
//! `# TYPE` lines, labels sorted by name, series sorted by their label
//! values, values printed as prometheus prints an `f64`.

use std::fmt::Write as _;
use std::sync::Arc;

use prometheus::proto::MetricFamily;
use prometheus::TextEncoder;

use super::cells::{Hist, RouteCells, RouteFamilies, ShadowCells};
use super::{CodeClass, FailureKind, ShadowResult, DURATION_BUCKETS, RAMP_STATES, RBO_BUCKETS};
use crate::domain::Arm;

/// A per-route family: its name, help text and type.
pub(super) struct Family {
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    kind: &'static str,
}

/// `grayproxy_requests_total`.
pub(super) const REQUESTS: Family = Family {
    name: "grayproxy_requests_total",
    help: "Answers per route and arm by status class (a fallback counts the canary's failure and stable's answer).",
    kind: "counter",
};
/// `grayproxy_request_duration_seconds`.
pub(super) const DURATION: Family = Family {
    name: "grayproxy_request_duration_seconds",
    help: "Time from request received to response headers sent, per route and arm.",
    kind: "histogram",
};
/// `grayproxy_upstream_failures_total`.
pub(super) const FAILURES: Family = Family {
    name: "grayproxy_upstream_failures_total",
    help: "Upstream exchanges that produced no response at all, by kind.",
    kind: "counter",
};
/// `grayproxy_fallbacks_total`.
pub(super) const FALLBACKS: Family = Family {
    name: "grayproxy_fallbacks_total",
    help: "Canary failures answered by stable instead.",
    kind: "counter",
};
/// `grayproxy_canary_weight_percent`.
pub(super) const WEIGHT: Family = Family {
    name: "grayproxy_canary_weight_percent",
    help: "Current canary weight of weight-assigned traffic, in percent.",
    kind: "gauge",
};
/// `grayproxy_ramp_state`.
pub(super) const RAMP_STATE: Family = Family {
    name: "grayproxy_ramp_state",
    help: "1 for the route's current ramp state, 0 for the others.",
    kind: "gauge",
};
/// `grayproxy_shadow_requests_total`.
pub(super) const SHADOW_REQUESTS: Family = Family {
    name: "grayproxy_shadow_requests_total",
    help: "Requests shadow traffic considered, by result (mirrored answers never count in grayproxy_requests_total).",
    kind: "counter",
};
/// `grayproxy_shadow_rbo`.
pub(super) const SHADOW_RBO: Family = Family {
    name: "grayproxy_shadow_rbo",
    help: "Rank-biased overlap (p = 0.9) of the canary's ranked list with stable's, per compared pair.",
    kind: "histogram",
};

/// The routes, sorted by name.
type Routes = [(String, Arc<RouteCells>)];

/// Writes one family's series (without its header).
type Writer = fn(&mut String, &Routes);

/// Every per-route family with its writer, sorted by name.
const FAMILIES: [(&Family, Writer); 8] = [
    (&WEIGHT, weights),
    (&FALLBACKS, fallbacks),
    (&RAMP_STATE, ramp_states),
    (&DURATION, durations),
    (&REQUESTS, requests),
    (&SHADOW_RBO, shadow_rbo),
    (&SHADOW_REQUESTS, shadow_requests),
    (&FAILURES, failures),
];

/// Renders the per-route families of `routes` and the ordinary families
/// `others` (as gathered from the registry: sorted by name).
pub(super) fn render(
    routes: &RouteFamilies,
    others: &[MetricFamily],
) -> Result<String, prometheus::Error> {
    let routes = routes.sorted();
    // About 80 lines per route (a histogram is 17), ~64 bytes each plus the name.
    let capacity: usize = routes.iter().map(|(n, _)| 80 * (64 + n.len())).sum();
    let mut out = String::with_capacity(capacity + 16 * 1024);
    let encoder = TextEncoder::new();
    let mut others = others.iter().peekable();
    // A family without series is not written (as the registry prunes it).
    let ours = if routes.is_empty() {
        &[][..]
    } else {
        &FAMILIES[..]
    };
    for (family, write) in ours {
        while let Some(other) = others.next_if(|o| o.name() < family.name) {
            encoder.encode_utf8(std::slice::from_ref(other), &mut out)?;
        }
        header(&mut out, family);
        write(&mut out, &routes);
    }
    for other in others {
        encoder.encode_utf8(std::slice::from_ref(other), &mut out)?;
    }
    Ok(out)
}

fn header(out: &mut String, f: &Family) {
    out.push_str("# HELP ");
    out.push_str(f.name);
    out.push(' ');
    escape(out, f.help, false);
    out.push_str("\n# TYPE ");
    out.push_str(f.name);
    out.push(' ');
    out.push_str(f.kind);
    out.push('\n');
}

/// `\` → `\\`, newline → `\n` and, in label values, `"` → `\"`.
fn escape(out: &mut String, v: &str, quote: bool) {
    let special = |c: char| c == '\\' || c == '\n' || (quote && c == '"');
    if !v.contains(special) {
        out.push_str(v);
        return;
    }
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

/// `name{labels…,extra} ` — the series' name and labels, up to its value.
fn series(
    out: &mut String,
    name: &str,
    suffix: &str,
    labels: &[(&str, &str)],
    extra: Option<(&str, &str)>,
) {
    out.push_str(name);
    out.push_str(suffix);
    let mut sep = '{';
    for (k, v) in labels.iter().chain(extra.as_ref()) {
        out.push(sep);
        out.push_str(k);
        out.push_str("=\"");
        escape(out, v, true);
        out.push('"');
        sep = ',';
    }
    if sep == ',' {
        out.push('}');
    }
    out.push(' ');
}

/// A count as prometheus prints it: as an `f64` (exact below 2^53, where
/// the integer's digits are the same).
fn count(out: &mut String, v: u64) {
    if v < 1 << 53 {
        let _ = writeln!(out, "{v}");
    } else {
        let _ = writeln!(out, "{}", v as f64);
    }
}

fn float(out: &mut String, v: f64) {
    let _ = writeln!(out, "{v}");
}

fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(std::sync::atomic::Ordering::Relaxed)
}

/// Arms in label-value order (`canary` before `stable`).
fn arms() -> [Arm; 2] {
    let mut arms = Arm::ALL;
    arms.sort_by_key(|a| a.as_str());
    arms
}

fn histogram<const N: usize>(
    out: &mut String,
    name: &str,
    labels: &[(&str, &str)],
    h: &Hist<N>,
    bounds: &[String],
) {
    let mut cumulative = 0;
    for (le, n) in bounds.iter().zip(&h.buckets) {
        cumulative += load(n);
        series(out, name, "_bucket", labels, Some(("le", le)));
        count(out, cumulative);
    }
    let total = h.count(cumulative);
    series(out, name, "_bucket", labels, Some(("le", "+Inf")));
    count(out, total);
    series(out, name, "_sum", labels, None);
    float(out, h.sum.get());
    series(out, name, "_count", labels, None);
    count(out, total);
}

/// Bucket bounds as prometheus prints them (`f64`'s `Display`).
fn bounds(b: &[f64]) -> Vec<String> {
    b.iter().map(f64::to_string).collect()
}

fn requests(out: &mut String, routes: &Routes) {
    let mut codes = CodeClass::ALL;
    codes.sort_by_key(|c| c.as_str());
    for arm in arms() {
        for code in codes {
            for (name, cells) in routes {
                let labels = [
                    ("arm", arm.as_str()),
                    ("code", code.as_str()),
                    ("route", name),
                ];
                series(out, REQUESTS.name, "", &labels, None);
                count(out, load(&cells.arms[arm.index()].codes[code.index()]));
            }
        }
    }
}

fn durations(out: &mut String, routes: &Routes) {
    let bounds = bounds(DURATION_BUCKETS);
    for arm in arms() {
        for (name, cells) in routes {
            let labels = [("arm", arm.as_str()), ("route", name)];
            let h = &cells.arms[arm.index()].duration;
            histogram(out, DURATION.name, &labels, h, &bounds);
        }
    }
}

fn failures(out: &mut String, routes: &Routes) {
    let mut kinds = FailureKind::ALL;
    kinds.sort_by_key(|k| k.as_str());
    for arm in arms() {
        for kind in kinds {
            for (name, cells) in routes {
                let labels = [
                    ("arm", arm.as_str()),
                    ("kind", kind.as_str()),
                    ("route", name),
                ];
                series(out, FAILURES.name, "", &labels, None);
                count(out, load(&cells.arms[arm.index()].failures[kind.index()]));
            }
        }
    }
}

fn fallbacks(out: &mut String, routes: &Routes) {
    for (name, cells) in routes {
        series(out, FALLBACKS.name, "", &[("route", name)], None);
        count(out, load(&cells.fallbacks));
    }
}

fn weights(out: &mut String, routes: &Routes) {
    for (name, cells) in routes {
        series(out, WEIGHT.name, "", &[("route", name)], None);
        float(out, cells.weight.get());
    }
}

fn ramp_states(out: &mut String, routes: &Routes) {
    let mut states: Vec<(usize, &str)> = RAMP_STATES.iter().copied().enumerate().collect();
    states.sort_by_key(|s| s.1);
    for (name, cells) in routes {
        let current = cells.ramp_state();
        for (i, state) in &states {
            series(
                out,
                RAMP_STATE.name,
                "",
                &[("route", name), ("state", state)],
                None,
            );
            count(out, u64::from(*i == current));
        }
    }
}

fn shadow_requests(out: &mut String, routes: &Routes) {
    let mut results = ShadowResult::ALL;
    results.sort_by_key(|r| r.as_str());
    for result in results {
        for (name, cells) in routes {
            let n = cells
                .shadow
                .get()
                .map_or(0, |s| load(&s.results[result.index()]));
            series(
                out,
                SHADOW_REQUESTS.name,
                "",
                &[("result", result.as_str()), ("route", name)],
                None,
            );
            count(out, n);
        }
    }
}

fn shadow_rbo(out: &mut String, routes: &Routes) {
    let bounds = bounds(RBO_BUCKETS);
    let none = ShadowCells::default();
    for (name, cells) in routes {
        let shadow = cells.shadow.get().map_or(&none, |s| &**s);
        histogram(
            out,
            SHADOW_RBO.name,
            &[("route", name)],
            &shadow.rbo,
            &bounds,
        );
    }
}
