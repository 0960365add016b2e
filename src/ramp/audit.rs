//! Audit records: one JSON line per ramp decision, with its evidence.

use serde::{Deserialize, Serialize};

use crate::ramp::judge::Evidence;
use crate::ramp::state::Phase;
use crate::ramp::Timestamp;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Stable-only calibration began (canary at 0 %).
    BaselineStarted,
    /// The baseline ended; the shadow phase starts (canary on mirrored
    /// requests only).
    ShadowStarted,
    /// The baseline (or shadow phase) ended; the ramp starts at the first step.
    RampStarted,
    /// A step was left for the next one.
    Advance,
    /// The canary reached 100 %.
    Promote,
    /// The canary went to 0 %.
    Rollback,
    /// The weight was frozen.
    Pause,
    /// A paused ramp continues, or a rolled-back one starts again.
    Resume,
    /// The canary upstream changed: a new ramp from the first step.
    NewRamp,
    /// Shared degradation: the ramp holds.
    Hold,
    /// The shared degradation ended.
    HoldEnded,
}

impl Action {
    /// The snake_case name used in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::BaselineStarted => "baseline_started",
            Action::ShadowStarted => "shadow_started",
            Action::RampStarted => "ramp_started",
            Action::Advance => "advance",
            Action::Promote => "promote",
            Action::Rollback => "rollback",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::NewRamp => "new_ramp",
            Action::Hold => "hold",
            Action::HoldEnded => "hold_ended",
        }
    }
}

/// Who caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    /// The judge, from the evidence.
    Judge,
    /// An operator command.
    Operator,
    /// A config reload.
    Config,
    /// The state's storage: a write that failed (the ramp holds) or works
    /// again, a stored state that could not be loaded.
    Persistence,
}

/// One decision, as appended to `audit.jsonl` and shown in `/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// RFC 3339 UTC time.
    pub at: String,
    /// Unix time in ms.
    pub at_ms: Timestamp,
    /// What happened.
    pub action: Action,
    /// Who caused it.
    pub trigger: Trigger,
    /// The ramp state after it.
    pub state: Phase,
    /// Step index after it.
    pub step: usize,
    /// Canary weight after it, in percent.
    pub weight: f64,
    /// Why, in words.
    pub reason: String,
    /// The judge's evidence at that moment (absent before the baseline ends).
    pub evidence: Option<Evidence>,
    /// Fleet mode: the replica that made the decision (absent otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
}

impl AuditRecord {
    /// The record as one JSON line (no trailing newline).
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|e| format!("{{\"error\":\"audit record: {e}\"}}"))
    }
}

/// Formats unix ms as `YYYY-MM-DDTHH:MM:SSZ` (UTC, whole seconds).
pub fn rfc3339(ms: Timestamp) -> String {
    let secs = ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_known_values() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_341_600_000), "2026-11-22T10:00:00Z");
    }
}
