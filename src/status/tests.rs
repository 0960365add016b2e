#![allow(clippy::unwrap_used, clippy::expect_used)]
use serde_json::{json, Value};

use super::sample;
use super::*;

fn evidence_json() -> Value {
    json!({
        "e_errors": 0.5, "e_slow": 0.34, "e": 0.42, "rollback_threshold": 100.0, "p_value": 1.0,
        "ratio_errors": {"low": 0.1, "high": null}, "ratio_slow": {"low": null, "high": 2.5},
        "gate": {"tolerance": 5.0, "f_errors": 25.1, "f_slow": 31.7, "passed": true},
        "stable": {"requests": 15120, "errors": 76, "error_rate": 0.005, "slow": 140, "p99_seconds": 0.0098},
        "canary": {"requests": 812, "errors": 0, "error_rate": 0.0, "slow": 3, "p99_seconds": 0.0096},
        "phi_errors": 1.0, "phi_slow": 1.25, "hold": false, "slow_threshold_seconds": 0.05,
        "r0_errors": 1.0, "r0_slow": 1.0
    })
}

fn decision_json(action: &str, weight: f64) -> Value {
    json!({"at": "2026-11-22T10:00:05Z", "at_ms": 1_795_341_605_000u64, "action": action,
           "trigger": "judge", "state": "progressing", "step": 1, "weight": weight,
           "reason": "canary shown < 5× worse", "evidence": evidence_json()})
}

/// The JSON the admin API has always written, field for field (scripts and
/// dashboards read it): a progressing route and an idle one.
fn sample_json() -> Value {
    json!({
        "routes": [
            {"name": "recommend", "canary_weight": 5.0,
             "ramp": {"state": "progressing", "step": 1, "weight": 5.0,
                      "waiting_for": "canary needs 140 more requests (about 40 s)",
                      "decisions": [decision_json("ramp_started", 1.0), decision_json("advance", 5.0)],
                      "error": null},
             "arms": {"stable": {"requests": 20000, "errors": 100, "error_rate": 0.005, "p99_seconds": 0.0123},
                      "canary": {"requests": 900, "errors": 9, "error_rate": 0.01, "p99_seconds": 0.25}},
             "forced": {"stable": {"requests": 0}, "canary": {"requests": 17}}},
            {"name": "plain", "canary_weight": 100.0,
             "ramp": {"state": "idle", "step": null, "waiting_for": null, "decisions": []},
             "arms": {"stable": {"requests": 0, "errors": 0, "error_rate": 0.0, "p99_seconds": 0.0},
                      "canary": {"requests": 0, "errors": 0, "error_rate": 0.0, "p99_seconds": 0.0}},
             "forced": {"stable": {"requests": 0}, "canary": {"requests": 0}}}
        ],
        "config": {"path": "config/grayproxy.toml", "loaded_at": "2026-11-22T10:00:00Z", "last_error": null}
    })
}

#[test]
fn the_json_of_a_sample_document_is_pinned() {
    let written = serde_json::to_value(sample::document()).unwrap();
    assert_eq!(written, sample_json());
}

#[test]
fn a_document_round_trips_through_json() {
    let doc = sample::document();
    let text = serde_json::to_string(&doc).unwrap();
    let back: StatusDocument = serde_json::from_str(&text).unwrap();
    assert_eq!(back, doc);
    // And what the admin API wrote before the types existed reads back as
    // the same document.
    let old: StatusDocument = serde_json::from_value(sample_json()).unwrap();
    assert_eq!(old, doc);
}

fn with_sections() -> StatusDocument {
    let mut doc = sample::document();
    doc.fleet = Some(FleetStatus {
        replica: "gp-1".to_string(),
        leader: Some("gp-2".to_string()),
        etcd: EtcdHealth::Unreachable,
        replicas: vec![
            ReplicaStatus {
                replica: "gp-1".to_string(),
                alive: true,
                config_drift: false,
            },
            ReplicaStatus {
                replica: "gp-2".to_string(),
                alive: false,
                config_drift: false,
            },
        ],
        role: None,
        etcd_since: None,
        decisions: Vec::new(),
    });
    doc.routes[0].shadow = Some(ShadowReport {
        mirrored: 10,
        compared: 8,
        skipped: 1,
        skip_reasons: SkipReasons {
            in_flight: 1,
            ..SkipReasons::default()
        },
        canary_errors: 1,
        stable_errors: 0,
        status_mismatches: 2,
        stable_p99_seconds: Some(0.01),
        canary_p99_seconds: None,
        rbo: RboSummary {
            mean: Some(0.9),
            p10: Some(0.5),
            p50: Some(0.95),
        },
        overlap_at_k: MeanSummary { mean: Some(0.8) },
        fields: vec![FieldDiff {
            path: "items.0.price".to_string(),
            diff_rate: 0.3,
            noise_rate: 0.0,
            flagged: true,
            example: PerArm {
                stable: json!(9.5),
                canary: json!("9.50"),
            },
        }],
    });
    doc
}

#[test]
fn fleet_and_shadow_sections_appear_only_when_present() {
    let plain = serde_json::to_value(sample::document()).unwrap();
    assert!(plain.get("fleet").is_none());
    assert!(plain["routes"][0].get("shadow").is_none());

    let doc = with_sections();
    let v = serde_json::to_value(&doc).unwrap();
    assert_eq!(
        v["fleet"],
        json!({"replica": "gp-1", "leader": "gp-2", "etcd": "unreachable",
               "replicas": [{"replica": "gp-1", "alive": true}, {"replica": "gp-2", "alive": false}]})
    );
    assert_eq!(
        v["routes"][0]["shadow"],
        json!({"mirrored": 10, "compared": 8, "skipped": 1,
               "skip_reasons": {"in_flight": 1, "body_too_large": 0, "body_incomplete": 0}, "canary_errors": 1, "stable_errors": 0,
               "status_mismatches": 2, "stable_p99_seconds": 0.01, "canary_p99_seconds": null,
               "rbo": {"mean": 0.9, "p10": 0.5, "p50": 0.95}, "overlap_at_k": {"mean": 0.8},
               "fields": [{"path": "items.0.price", "diff_rate": 0.3, "noise_rate": 0.0, "flagged": true,
                           "example": {"stable": 9.5, "canary": "9.50"}}]})
    );
    assert!(v["routes"][1].get("shadow").is_none());
    let back: StatusDocument = serde_json::from_value(v).unwrap();
    assert_eq!(back, doc);
}

#[test]
fn a_ramp_missing_a_field_is_an_error_that_names_it() {
    let mut v = sample_json();
    let ramp = v["routes"][0]["ramp"].as_object_mut().unwrap();
    ramp.remove("weight");
    let err = serde_json::from_value::<StatusDocument>(v).unwrap_err();
    assert!(err.to_string().contains("weight"), "{err}");
}

#[test]
fn unknown_fields_from_a_newer_proxy_are_ignored() {
    let mut v = sample_json();
    v["uptime_seconds"] = json!(12);
    v["routes"][0]["arms"]["canary"]["slow"] = json!(3);
    let doc: StatusDocument = serde_json::from_value(v).unwrap();
    assert_eq!(doc, sample::document());
}

#[test]
fn route_ramp_accessors() {
    let doc = sample::document();
    let (ramped, idle) = (&doc.routes[0].ramp, &doc.routes[1].ramp);
    assert_eq!(ramped.state(), Phase::Progressing);
    assert_eq!(ramped.decisions().len(), 2);
    assert_eq!(
        ramped.waiting_for(),
        Some("canary needs 140 more requests (about 40 s)")
    );
    assert_eq!(idle.state(), Phase::Idle);
    assert!(idle.decisions().is_empty() && idle.waiting_for().is_none());
    assert_eq!(RouteRamp::from(None), RouteRamp::Idle);
}

#[test]
fn arm_totals_clamp_errors_and_never_divide_by_zero() {
    assert_eq!(ArmTotals::new(0, 0, None), ArmTotals::default());
    let t = ArmTotals::new(4, 9, Some(0.2));
    assert_eq!((t.errors, t.error_rate, t.p99_seconds), (4, 1.0, 0.2));
    assert_eq!(ArmTotals::new(200, 1, None).error_rate, 0.005);
}

#[test]
fn command_answers_read_back() {
    let answer = CommandAnswer {
        route: "recommend".to_string(),
        ramp: sample::ramp(),
    };
    let v = serde_json::to_value(&answer).unwrap();
    assert_eq!(v["route"], "recommend");
    assert_eq!(v["ramp"], sample_json()["routes"][0]["ramp"]);
    assert_eq!(serde_json::from_value::<CommandAnswer>(v).unwrap(), answer);
}
