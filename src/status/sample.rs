//! A sample `/status` document for tests: one progressing route with two
//! decisions, one idle route. Built from the real types, so the tests that
//! pin the JSON and the view read what the admin API writes.

use crate::ramp::audit::{Action, AuditRecord, Trigger};
use crate::ramp::judge::{ArmSummary, Evidence, GateReading, RatioRange};
use crate::ramp::state::{Phase, RampStatus};
use crate::status::{
    ArmTotals, ConfigStatus, ForcedTotals, PerArm, RouteRamp, RouteStatus, StatusDocument,
};

/// The judge's evidence of the sample decisions.
pub fn evidence() -> Evidence {
    Evidence {
        e_errors: 0.5,
        e_slow: 0.34,
        e: 0.42,
        rollback_threshold: 100.0,
        p_value: 1.0,
        ratio_errors: RatioRange {
            low: Some(0.1),
            high: None,
        },
        ratio_slow: RatioRange {
            low: None,
            high: Some(2.5),
        },
        gate: Some(GateReading {
            tolerance: 5.0,
            f_errors: 25.1,
            f_slow: 31.7,
            passed: true,
        }),
        stable: ArmSummary {
            requests: 15120,
            errors: 76,
            error_rate: 0.005,
            slow: 140,
            p99_seconds: Some(0.0098),
        },
        canary: ArmSummary {
            requests: 812,
            errors: 0,
            error_rate: 0.0,
            slow: 3,
            p99_seconds: Some(0.0096),
        },
        phi_errors: 1.0,
        phi_slow: 1.25,
        hold: false,
        slow_threshold_seconds: Some(0.05),
        r0_errors: 1.0,
        r0_slow: 1.0,
        e_combined: None,
        segments: Vec::new(),
    }
}

/// A judge decision at 10:00:05 UTC to `weight` percent, with evidence.
pub fn decision(action: Action, weight: f64) -> AuditRecord {
    AuditRecord {
        at: "2026-11-22T10:00:05Z".to_string(),
        at_ms: 1_795_341_605_000,
        action,
        trigger: Trigger::Judge,
        state: Phase::Progressing,
        step: 1,
        weight,
        reason: "canary shown < 5× worse".to_string(),
        evidence: Some(evidence()),
        replica: None,
    }
}

/// A progressing ramp on step 1 (5 %), with two decisions.
pub fn ramp() -> RampStatus {
    RampStatus {
        state: Phase::Progressing,
        step: 1,
        weight: 5.0,
        waiting_for: Some("canary needs 140 more requests (about 40 s)".to_string()),
        decisions: vec![
            decision(Action::RampStarted, 1.0),
            decision(Action::Advance, 5.0),
        ],
        error: None,
        kpi: Vec::new(),
        segments: Vec::new(),
    }
}

/// Route `recommend` on that ramp, and route `plain` without one.
pub fn document() -> StatusDocument {
    StatusDocument {
        routes: vec![
            RouteStatus {
                name: "recommend".to_string(),
                canary_weight: 5.0,
                ramp: RouteRamp::Ramp(ramp()),
                arms: PerArm {
                    stable: ArmTotals::new(20000, 100, Some(0.0123)),
                    canary: ArmTotals::new(900, 9, Some(0.25)),
                },
                forced: PerArm {
                    stable: ForcedTotals { requests: 0 },
                    canary: ForcedTotals { requests: 17 },
                },
                shadow: None,
                segments: Vec::new(),
            },
            RouteStatus {
                name: "plain".to_string(),
                canary_weight: 100.0,
                ramp: RouteRamp::Idle,
                arms: PerArm::default(),
                forced: PerArm::default(),
                shadow: None,
                segments: Vec::new(),
            },
        ],
        config: ConfigStatus {
            path: "config/grayproxy.toml".to_string(),
            loaded_at: "2026-11-22T10:00:00Z".to_string(),
            last_error: None,
        },
        fleet: None,
    }
}
