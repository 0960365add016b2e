//! `waiting_for`: what a ramp waits for, in words, with an estimate.

use crate::config::types::RampPolicy;
use crate::ramp::judge::GATE_THRESHOLD;
use crate::ramp::state::{ms, Phase, RampState};

/// "40 s", "3 min", "1.5 h".
pub fn human_seconds(s: f64) -> String {
    if !s.is_finite() {
        return "unknown".to_string();
    }
    let s = s.max(0.0);
    if s < 90.0 {
        format!("{:.0} s", s.ceil())
    } else if s < 5400.0 {
        format!("{:.0} min", (s / 60.0).ceil())
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

/// What `state` waits for, or `None` when nothing (or nothing more) is due.
pub fn waiting_for(state: &RampState, policy: &RampPolicy) -> Option<String> {
    match state.phase() {
        Phase::Idle | Phase::Promoted => None,
        Phase::RolledBack => Some(
            "rolled back: `resume` (or a new canary) starts a new ramp from the first step"
                .to_string(),
        ),
        Phase::Paused => Some(match state.pause_reason() {
            Some(r) => format!("paused: {r}; `resume` continues"),
            None => "paused by operator; `resume` continues".to_string(),
        }),
        Phase::Baseline => {
            let done = state
                .last_tick()
                .unwrap_or(state.phase_since())
                .saturating_sub(state.phase_since());
            let left = ms(policy.baseline).saturating_sub(done);
            Some(format!(
                "baseline: {} more of stable-only history",
                human_seconds(left as f64 / 1000.0)
            ))
        }
        Phase::Progressing => progressing(state, policy),
    }
}

fn progressing(state: &RampState, policy: &RampPolicy) -> Option<String> {
    if state.hold() {
        return Some("hold: shared degradation (stable is failing or slow too); the ramp holds until it ends".to_string());
    }
    if let Some(why) = state.kpi().blocked() {
        return Some(format!("KPI checks: {why}"));
    }
    let mut needs = Vec::new();
    let now = state.last_tick().unwrap_or(state.step_since());
    let on_step = now.saturating_sub(state.step_since());
    let secs = on_step as f64 / 1000.0;
    if on_step < ms(policy.interval) {
        needs.push(format!(
            "step needs {} more on it",
            human_seconds((ms(policy.interval) - on_step) as f64 / 1000.0)
        ));
    }
    for (name, n) in [
        ("canary", state.step_canary().requests),
        ("stable", state.step_stable().requests),
    ] {
        if n < policy.min_requests {
            let missing = policy.min_requests - n;
            let eta = if n > 0 && secs > 0.0 {
                format!(
                    " (about {})",
                    human_seconds(missing as f64 / (n as f64 / secs))
                )
            } else {
                String::new()
            };
            needs.push(format!("{name} needs {missing} more requests{eta}"));
        }
    }
    if let Some(g) = state.judge().last.as_ref().and_then(|v| v.gate.as_ref()) {
        if !g.passed {
            let eta = match state.judge().gate_eta_seconds() {
                Some(s) => format!("about {} at the recent trend", human_seconds(s)),
                None => "no trend yet".to_string(),
            };
            needs.push(format!(
                "evidence that the canary is < {}× worse (F errors {:.1}, F slow {:.1}, both need {GATE_THRESHOLD}; {eta})",
                g.tolerance, g.f_errors, g.f_slow
            ));
        }
    }
    (!needs.is_empty()).then(|| needs.join("; "))
}
