//! `[routes.ramp]` checks, through the public `parse` API.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use support::config::parsed::*;

fn ramp(lines: &str) -> String {
    file("", &format!("[routes.ramp]\n{lines}"))
}

#[test]
fn ramp_defaults_and_custom_steps() {
    let c = ok(&ramp(""));
    assert_eq!(c.routes[0].ramp, Some(Default::default()));
    let c = ok(&ramp("steps = [0.5, 20, 100]\ninterval = \"1m\"\ntick = \"1m\"\nmin_requests = 1\nbaseline = \"0s\"\nmax_p99_increase = 0.25"));
    let p = c.routes[0].ramp.clone().unwrap();
    let bp: Vec<u16> = p.steps.iter().map(|w| w.basis_points()).collect();
    assert_eq!(bp, [50, 2000, 10_000]);
    assert_eq!(p.gate_ratios, [0.0, 5.0]);
    assert_eq!(
        (p.interval, p.tick, p.baseline),
        (
            Duration::from_secs(60),
            Duration::from_secs(60),
            Duration::ZERO
        )
    );
    assert_eq!((p.min_requests, p.max_p99_increase), (1, 0.25));
}

#[test]
fn ramp_steps() {
    let e = |steps: &str| errs(&ramp(&format!("steps = {steps}")));
    assert_eq!(
        e("[]"),
        ["steps is empty; list percents ending with 100, e.g. [1, 5, 25, 100]"]
    );
    assert_eq!(
        e("[0, 100]"),
        ["step 0 is not above 0; a ramp step must send some traffic to the canary"]
    );
    assert_eq!(
        e("[5, 5, 100]"),
        ["steps must increase strictly: 5 comes after 5"]
    );
    assert_eq!(
        e("[1, 50]"),
        ["the last step is 50; it must be 100 (full rollout), e.g. add 100"]
    );
    assert_eq!(e("[1, 120]"), ["step 120 is above 100; use 0.0..=100.0"]);
    assert_eq!(
        e("[1.234, 100]"),
        ["step 1.234 has more than two decimals; weights go in steps of 0.01 (e.g. 1.23)"]
    );
    assert_eq!(
        e("[1, \"x\", 100]"),
        ["`steps` in [routes.ramp] must contain only numbers, found string"]
    );
}

#[test]
fn ramp_timing() {
    assert_eq!(
        one_err(&ramp("tick = \"0s\"")),
        "tick must be above 0, e.g. \"10s\""
    );
    assert_eq!(
        one_err(&ramp("tick = \"1m\"")),
        "tick 1m is longer than interval 30s (default); the judge must look at least once per step"
    );
    assert_eq!(
        one_err(&ramp("interval = \"1h\"\nmax_step_duration = \"10m\"")),
        "max_step_duration 10m is shorter than interval 1h; every step would pause before it may advance"
    );
    assert!(
        one_err(&ramp("baseline = \"ten minutes\"")).starts_with("`baseline`: invalid duration")
    );
    assert_eq!(
        one_err(&ramp("min_requests = 0")),
        "min_requests 0 must be at least 1 (requests per arm before a step may advance)"
    );
}

/// A default never makes a file invalid: an interval longer than 30 min
/// without `max_step_duration` gets a longer default (4 × interval), while
/// a value the user wrote is still checked.
#[test]
fn max_step_duration_default_follows_the_interval() {
    let policy = |lines: &str| ok(&ramp(lines)).routes[0].ramp.clone().unwrap();
    assert_eq!(
        policy("interval = \"1h\"").max_step_duration,
        Duration::from_secs(4 * 3600)
    );
    assert_eq!(
        policy("interval = \"10m\"").max_step_duration,
        Duration::from_secs(40 * 60)
    );
    // Up to 7.5 min the 30 min default stands.
    for interval in ["30s", "5m", "7m30s"] {
        let p = policy(&format!("interval = \"{interval}\""));
        assert_eq!(p.max_step_duration, Duration::from_secs(1800), "{interval}");
    }
    assert_eq!(
        policy("interval = \"1h\"\nmax_step_duration = \"2h\"").max_step_duration,
        Duration::from_secs(7200)
    );
}

#[test]
fn ramp_judge_parameters() {
    let e = |l: &str| one_err(&ramp(l));
    assert!(e("confidence = 1").starts_with("confidence 1 must be between 0 and 1"));
    assert!(e("confidence = 0").starts_with("confidence 0 must be between 0 and 1"));
    assert!(e("max_error_rate_increase = 1.0")
        .starts_with("max_error_rate_increase 1 must be in 0.0..1.0"));
    assert!(e("max_error_rate_increase = -0.1").starts_with("max_error_rate_increase -0.1"));
    assert!(e("max_p99_increase = -0.5").starts_with("max_p99_increase -0.5 must be 0 or more"));
    assert!(
        ok(&ramp("max_error_rate_increase = 0.01\nconfidence = 0.95")).routes[0]
            .ramp
            .is_some()
    );
}

#[test]
fn ramp_gate_ratios() {
    assert_eq!(
        one_err(&ramp("gate_ratios = [0, 5]")),
        "gate_ratios has 2 values but there are 6 steps; give one per step but the last (5)"
    );
    assert!(one_err(&ramp("steps = [10, 100]\ngate_ratios = [0.5]"))
        .starts_with("gate ratio 0.5 must be 0 (no gate) or at least 1"));
    let c = ok(&ramp("steps = [10, 100]\ngate_ratios = [2]"));
    assert_eq!(c.routes[0].ramp.as_ref().unwrap().gate_ratios, [2.0]);
}

#[test]
fn weight_with_ramp_warns() {
    let text = ramp("");
    let text = text.replace("canary = \"b\"\n", "canary = \"b\"\ncanary_weight = 5\n");
    assert_eq!(
        warnings(&text),
        ["canary_weight is ignored: the ramp (line 11) owns the weight; remove canary_weight"]
    );
}

#[test]
fn ramp_prometheus_checks() {
    use grayproxy::config::types::KpiBound;
    let ctr = "[[routes.ramp.prometheus_checks]]\nname = \"ctr\"\nquery = 'sum(rate(reco_clicks_total{arm=\"{{arm}}\"}[30s]))'\nmin_ratio = 0.95\n";
    let c = ok(&ramp(&format!(
        "prometheus_url = \"http://127.0.0.1:9090/\"\n{ctr}[[routes.ramp.prometheus_checks]]\nname = \"p99\"\nquery = \"x\"\nmax = 0.5\n"
    )));
    let p = c.routes[0].ramp.clone().unwrap();
    assert_eq!(p.prometheus_url.as_deref(), Some("http://127.0.0.1:9090"));
    assert_eq!(p.failures_before_rollback, 3);
    assert_eq!(p.prometheus_checks.len(), 2);
    assert_eq!(p.prometheus_checks[0].name, "ctr");
    assert!(p.prometheus_checks[0].query.contains("{{arm}}"));
    assert_eq!(
        p.prometheus_checks[0].bound,
        KpiBound::Ratio {
            min: Some(0.95),
            max: None
        }
    );
    assert_eq!(
        p.prometheus_checks[1].bound,
        KpiBound::Absolute {
            min: None,
            max: Some(0.5)
        }
    );
    let p = ok(&ramp("failures_before_rollback = 5")).routes[0]
        .ramp
        .clone()
        .unwrap();
    assert_eq!(
        (p.failures_before_rollback, p.prometheus_checks.len()),
        (5, 0)
    );
}

#[test]
fn ramp_prometheus_check_errors() {
    let url = "prometheus_url = \"http://127.0.0.1:9090\"\n";
    let check = |body: &str| ramp(&format!("{url}[[routes.ramp.prometheus_checks]]\n{body}"));
    // Without prometheus_url: an error at the check, with its location.
    let text =
        ramp("[[routes.ramp.prometheus_checks]]\nname = \"ctr\"\nquery = \"q\"\nmin_ratio = 0.95");
    let e = load(&text).unwrap_err();
    assert_eq!(e.len(), 1, "{e:#?}");
    assert!(
        e[0].starts_with("11:1: prometheus_checks need prometheus_url in [routes.ramp]"),
        "{e:#?}"
    );
    assert_eq!(
        one_err(&check("name = \"ctr\"\nquery = \"q\"\nmin_ratio = 0.9\nmax = 3")),
        "prometheus check `ctr` mixes min_ratio/max_ratio with min/max; use one kind (ratio: canary / stable; absolute: the canary's value)"
    );
    assert_eq!(
        one_err(&check("name = \"ctr\"\nquery = \"q\"")),
        "prometheus check `ctr` has no bound; give min_ratio/max_ratio (canary / stable) or min/max (the canary's value)"
    );
    assert_eq!(
        one_err(&check("query = \"q\"\nmin = 1")),
        "a prometheus check needs a `name`, e.g. name = \"ctr\""
    );
    assert_eq!(
        one_err(&check("name = \"ctr\"\nmin = 1")),
        "prometheus check `ctr` needs a `query` (PromQL; {{route}} and {{arm}} are filled in)"
    );
    assert_eq!(
        one_err(&check(
            "name = \"ctr\"\nquery = \"q\"\nmin_ratio = 2\nmax_ratio = 1"
        )),
        "prometheus check `ctr`: the lower bound 2 is above the upper bound 1"
    );
    assert_eq!(
        one_err(&check("name = \"ctr\"\nquery = \"q\"\nmin = 1\nthreshold = 2")),
        "unknown key `threshold` in [[routes.ramp.prometheus_checks]]; expected one of: name, query, min_ratio, max_ratio, min, max"
    );
    assert_eq!(
        one_err(&ramp("prometheus_url = \"localhost:9090\"")),
        "prometheus_url \"localhost:9090\" must be an http:// URL with a host, e.g. \"http://127.0.0.1:9090\""
    );
    assert_eq!(
        one_err(&ramp("failures_before_rollback = 0")),
        "failures_before_rollback 0 must be at least 1 (consecutive failing KPI checks before a rollback)"
    );
}
