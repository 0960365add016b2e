//! `[routes.ramp]` checks. Absent keys take [`RampPolicy::default`]'s values.

use std::time::Duration;

use super::Checker;
use crate::config::duration::format_duration;
use crate::config::raw::{RawPromCheck, RawRamp, Sp};
use crate::config::types::{KpiBound, PrometheusCheck, RampPolicy};
use crate::domain::CanaryWeight;

/// The ramp policy, defaults filled in; problems are pushed into `c`.
pub(super) fn ramp(c: &mut Checker<'_>, r: &RawRamp) -> RampPolicy {
    let d = RampPolicy::default();
    let steps = r
        .steps
        .as_ref()
        .map_or_else(|| d.steps.clone(), |s| steps(c, s));
    let gate_ratios = match &r.gate_ratios {
        None => RampPolicy::default_gates(steps.len()),
        Some(g) => gates(
            c,
            g,
            r.steps
                .as_ref()
                .map(|s| s.value.len())
                .unwrap_or(d.steps.len()),
        ),
    };
    let interval = c.duration(&r.interval, "interval", d.interval);
    let tick = c.duration(&r.tick, "tick", d.tick);
    let max_step_duration = c.duration(
        &r.max_step_duration,
        "max_step_duration",
        RampPolicy::default_max_step_duration(interval),
    );
    let mut policy = RampPolicy {
        steps,
        interval,
        tick,
        min_requests: min_requests(c, r, d.min_requests),
        baseline: c.duration(&r.baseline, "baseline", d.baseline),
        confidence: fraction(c, &r.confidence, d.confidence, Bound::Confidence),
        max_error_rate_increase: fraction(
            c,
            &r.max_error_rate_increase,
            d.max_error_rate_increase,
            Bound::ErrorRate,
        ),
        max_p99_increase: fraction(c, &r.max_p99_increase, d.max_p99_increase, Bound::P99),
        gate_ratios,
        max_step_duration,
        prometheus_url: prometheus_url(c, r),
        failures_before_rollback: failures_before_rollback(c, r, d.failures_before_rollback),
        prometheus_checks: r
            .prometheus_checks
            .iter()
            .filter_map(|k| check(c, k))
            .collect(),
        shadow: None,
        min_rbo: None,
        segments: super::segments::segments(c, r),
    };
    super::shadow::ramp_keys(c, r, &mut policy);
    timing(c, r, &policy);
    if policy.prometheus_url.is_none() && r.prometheus_url.is_none() {
        if let Some(k) = r.prometheus_checks.first() {
            c.error(
                k.at,
                "prometheus_checks need prometheus_url in [routes.ramp], e.g. prometheus_url = \"http://127.0.0.1:9090\"",
            );
        }
    }
    policy
}

/// `http://host:port[/prefix]`, no trailing slash kept.
fn prometheus_url(c: &mut Checker<'_>, r: &RawRamp) -> Option<String> {
    let u = r.prometheus_url.as_ref()?;
    let rest = u.value.strip_prefix("http://");
    match rest {
        Some(rest) if !rest.is_empty() && !rest.starts_with('/') => {
            Some(u.value.trim_end_matches('/').to_string())
        }
        _ => {
            let msg = format!(
                "prometheus_url \"{}\" must be an http:// URL with a host, e.g. \"http://127.0.0.1:9090\"",
                u.value
            );
            c.error(u.at, msg);
            None
        }
    }
}

fn failures_before_rollback(c: &mut Checker<'_>, r: &RawRamp, default: u32) -> u32 {
    let Some(f) = &r.failures_before_rollback else {
        return default;
    };
    match u32::try_from(f.value) {
        Ok(n) if n > 0 => n,
        _ => {
            let msg = format!(
                "failures_before_rollback {} must be at least 1 (consecutive failing KPI checks before a rollback)",
                f.value
            );
            c.error(f.at, msg);
            default
        }
    }
}

/// One KPI check: name, query, and exactly one kind of bound.
fn check(c: &mut Checker<'_>, k: &RawPromCheck) -> Option<PrometheusCheck> {
    let mut ok = true;
    let name = match &k.name {
        Some(n) if !n.value.trim().is_empty() => n.value.clone(),
        _ => {
            c.error(
                k.at,
                "a prometheus check needs a `name`, e.g. name = \"ctr\"",
            );
            ok = false;
            String::new()
        }
    };
    let query = match &k.query {
        Some(q) if !q.value.trim().is_empty() => q.value.clone(),
        _ => {
            let msg = format!(
                "prometheus check `{name}` needs a `query` (PromQL; {{{{route}}}} and {{{{arm}}}} are filled in)"
            );
            c.error(k.at, msg);
            ok = false;
            String::new()
        }
    };
    for v in [&k.min_ratio, &k.max_ratio, &k.min, &k.max]
        .into_iter()
        .flatten()
    {
        if !v.value.is_finite() {
            c.error(v.at, format!("{} is not a finite number", v.value));
            ok = false;
        }
    }
    for (lo, hi) in [(&k.min_ratio, &k.max_ratio), (&k.min, &k.max)] {
        if let (Some(lo), Some(hi)) = (lo, hi) {
            if lo.value > hi.value {
                let msg = format!(
                    "prometheus check `{name}`: the lower bound {} is above the upper bound {}",
                    lo.value, hi.value
                );
                c.error(lo.at, msg);
                ok = false;
            }
        }
    }
    if let Some(r) = [&k.min_ratio, &k.max_ratio]
        .into_iter()
        .flatten()
        .find(|r| r.value < 0.0)
    {
        let msg = format!(
            "ratio {} must be 0 or more (canary value / stable value)",
            r.value
        );
        c.error(r.at, msg);
        ok = false;
    }
    let ratio = k.min_ratio.is_some() || k.max_ratio.is_some();
    let absolute = k.min.is_some() || k.max.is_some();
    let bound = match (ratio, absolute) {
        (true, false) => KpiBound::Ratio {
            min: k.min_ratio.as_ref().map(|v| v.value),
            max: k.max_ratio.as_ref().map(|v| v.value),
        },
        (false, true) => KpiBound::Absolute {
            min: k.min.as_ref().map(|v| v.value),
            max: k.max.as_ref().map(|v| v.value),
        },
        (true, true) => {
            let at = k.min.as_ref().or(k.max.as_ref()).map_or(k.at, |v| v.at);
            let msg = format!(
                "prometheus check `{name}` mixes min_ratio/max_ratio with min/max; use one kind (ratio: canary / stable; absolute: the canary's value)"
            );
            c.error(at, msg);
            return None;
        }
        (false, false) => {
            let msg = format!(
                "prometheus check `{name}` has no bound; give min_ratio/max_ratio (canary / stable) or min/max (the canary's value)"
            );
            c.error(k.at, msg);
            return None;
        }
    };
    ok.then_some(PrometheusCheck { name, query, bound })
}

/// tick in (0, interval]; a written max_step_duration ≥ interval.
fn timing(c: &mut Checker<'_>, r: &RawRamp, p: &RampPolicy) {
    let shown = |v: &Option<Sp<String>>, d: Duration| {
        v.as_ref().map_or_else(
            || format!("{} (default)", format_duration(d)),
            |s| s.value.clone(),
        )
    };
    let tick_at = r.tick.as_ref().map_or(r.at, |t| t.at);
    if p.tick.is_zero() {
        c.error(tick_at, "tick must be above 0, e.g. \"10s\"");
    } else if p.tick > p.interval {
        let msg = format!(
            "tick {} is longer than interval {}; the judge must look at least once per step",
            shown(&r.tick, p.tick),
            shown(&r.interval, p.interval)
        );
        c.error(tick_at, msg);
    }
    // The default follows the interval and is never shorter; only a value
    // the user wrote can be.
    if let (Some(m), true) = (&r.max_step_duration, p.max_step_duration < p.interval) {
        let msg = format!(
            "max_step_duration {} is shorter than interval {}; every step would pause before it may advance",
            m.value,
            shown(&r.interval, p.interval)
        );
        c.error(m.at, msg);
    }
}

fn min_requests(c: &mut Checker<'_>, r: &RawRamp, default: u64) -> u64 {
    let Some(m) = &r.min_requests else {
        return default;
    };
    match u64::try_from(m.value) {
        Ok(n) if n > 0 => n,
        _ => {
            let msg = format!(
                "min_requests {} must be at least 1 (requests per arm before a step may advance)",
                m.value
            );
            c.error(m.at, msg);
            default
        }
    }
}

/// Steps: non-empty, each in (0, 100] with at most two decimals, strictly
/// increasing, ending at 100.
fn steps(c: &mut Checker<'_>, s: &Sp<Vec<Sp<f64>>>) -> Vec<CanaryWeight> {
    let Some(last) = s.value.last() else {
        c.error(
            s.at,
            "steps is empty; list percents ending with 100, e.g. [1, 5, 25, 100]",
        );
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut prev: Option<f64> = None;
    for step in &s.value {
        if step.value == 0.0 {
            c.error(
                step.at,
                "step 0 is not above 0; a ramp step must send some traffic to the canary",
            );
        } else if let Some(w) = c.weight(step, "step") {
            out.push(w);
        }
        if let Some(p) = prev.filter(|p| step.value <= *p) {
            let msg = format!(
                "steps must increase strictly: {} comes after {p}",
                step.value
            );
            c.error(step.at, msg);
        }
        prev = Some(step.value);
    }
    if last.value < 100.0 {
        let msg = format!(
            "the last step is {}; it must be 100 (full rollout), e.g. add 100",
            last.value
        );
        c.error(last.at, msg);
    }
    out
}

/// One gate per step but the last; each 0 (no gate) or at least 1.
fn gates(c: &mut Checker<'_>, g: &Sp<Vec<Sp<f64>>>, steps: usize) -> Vec<f64> {
    let want = steps.saturating_sub(1);
    if steps > 0 && g.value.len() != want {
        let msg = format!(
            "gate_ratios has {} values but there are {steps} steps; give one per step but the last ({want})",
            g.value.len()
        );
        c.error(g.at, msg);
    }
    for r in &g.value {
        if !(r.value == 0.0 || (r.value >= 1.0 && r.value.is_finite())) {
            let msg = format!(
                "gate ratio {} must be 0 (no gate) or at least 1 (the canary shown less than that many times worse)",
                r.value
            );
            c.error(r.at, msg);
        }
    }
    g.value.iter().map(|r| r.value).collect()
}

/// Range checks for the judge's parameters.
#[derive(Clone, Copy)]
enum Bound {
    /// (0, 1)
    Confidence,
    /// [0, 1)
    ErrorRate,
    /// [0, ∞)
    P99,
}

fn fraction(c: &mut Checker<'_>, v: &Option<Sp<f64>>, default: f64, bound: Bound) -> f64 {
    let Some(v) = v else { return default };
    let x = v.value;
    let (ok, msg) = match bound {
        Bound::Confidence => (
            x > 0.0 && x < 1.0,
            format!("confidence {x} must be between 0 and 1 (exclusive), e.g. 0.99"),
        ),
        Bound::ErrorRate => (
            (0.0..1.0).contains(&x),
            format!("max_error_rate_increase {x} must be in 0.0..1.0 (an absolute error-rate increase, e.g. 0.01 = one point)"),
        ),
        Bound::P99 => (
            x >= 0.0 && x.is_finite(),
            format!("max_p99_increase {x} must be 0 or more (a fraction: 0.2 = 20% slower)"),
        ),
    };
    if !ok {
        c.error(v.at, msg);
    }
    x
}
