//! The `/status` document, defined once: the admin API builds and writes a
//! [`StatusDocument`]; `grayproxy status`, `status --watch` and the demo read
//! one back and render it with [`view`]. A renamed or retyped field breaks
//! the build on both sides instead of silently blanking the terminal view.
//!
//! The JSON shape is public (dashboards and scripts read it; see the admin
//! API section of the README): field names and nesting stay as they are,
//! new sections are added as optional fields that are left out when absent.
//! This module holds plain data only: no server, no runtime, no I/O.

pub mod view;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::domain::Arm;
use crate::ramp::audit::AuditRecord;
use crate::ramp::state::{Phase, RampStatus};

/// The whole answer of `GET /status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusDocument {
    /// Every configured route, in config order.
    pub routes: Vec<RouteStatus>,
    /// The config file and its last reload.
    pub config: ConfigStatus,
    /// Fleet mode only: this replica, the leader and etcd's health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetStatus>,
}

/// One route in `/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// The route's name.
    pub name: String,
    /// The weight the route serves now, in percent.
    pub canary_weight: f64,
    /// The ramp, or the idle marker when the route has none.
    pub ramp: RouteRamp,
    /// Weight-assigned requests per arm since the process started (what the
    /// judge sees).
    pub arms: PerArm<ArmTotals>,
    /// Rule-assigned requests per arm since the process started (kept apart:
    /// a biased sample the judge never sees).
    pub forced: PerArm<ForcedTotals>,
    /// Shadow traffic only: the comparison of mirrored answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowReport>,
    /// Routes with `segments` only: per segment (`other` last), its
    /// weight-assigned requests per arm and the judge's evidence.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<SegmentStatus>,
}

/// One segment of a route in `/status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SegmentStatus {
    /// A value of `segment_values`, or `other`.
    pub segment: String,
    /// Weight-assigned requests of the segment per arm since its counters
    /// began (process start, or the reload that set the segments).
    pub arms: PerArm<ArmTotals>,
    /// The judge's rollback evidence within the segment on this ramp,
    /// `(E_err + E_slow)/2` (`null` before the ramp judges).
    pub e: Option<f64>,
    /// `E` for errors within the segment.
    pub e_errors: Option<f64>,
    /// `E` for slow requests within the segment.
    pub e_slow: Option<f64>,
}

/// A value for each arm, as `{"stable": .., "canary": ..}`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PerArm<T> {
    /// The stable arm's value.
    pub stable: T,
    /// The canary arm's value.
    pub canary: T,
}

impl<T> PerArm<T> {
    /// Builds both arms' values with `f`.
    pub fn from_fn(mut f: impl FnMut(Arm) -> T) -> PerArm<T> {
        PerArm {
            stable: f(Arm::Stable),
            canary: f(Arm::Canary),
        }
    }

    /// The value of `arm`.
    pub fn get(&self, arm: Arm) -> &T {
        match arm {
            Arm::Stable => &self.stable,
            Arm::Canary => &self.canary,
        }
    }
}

/// One arm's weight-assigned requests since start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmTotals {
    /// Requests answered (or failed).
    pub requests: u64,
    /// 5xx answers plus upstream failures (never more than `requests`).
    pub errors: u64,
    /// `errors / requests`, 0 without requests.
    pub error_rate: f64,
    /// p99 latency in seconds, 0 without requests.
    pub p99_seconds: f64,
}

impl ArmTotals {
    /// Totals from counts; `errors` is clamped to `requests` and the rate
    /// is 0 (not NaN) without requests.
    pub fn new(requests: u64, errors: u64, p99_seconds: Option<f64>) -> ArmTotals {
        let errors = errors.min(requests);
        let error_rate = if requests == 0 {
            0.0
        } else {
            errors as f64 / requests as f64
        };
        ArmTotals {
            requests,
            errors,
            error_rate,
            p99_seconds: p99_seconds.unwrap_or(0.0),
        }
    }
}

/// One arm's rule-assigned requests since start.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ForcedTotals {
    /// Requests a rule sent to the arm.
    pub requests: u64,
}

/// The config file as `/status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConfigStatus {
    /// The file the proxy reads.
    pub path: String,
    /// When the live config was loaded (RFC 3339, UTC).
    pub loaded_at: String,
    /// Why the last reload was rejected; `null` after a good one.
    pub last_error: Option<String>,
}

/// A route's ramp: the ramp's own status, or nothing configured.
///
/// In JSON an idle route reads
/// `{"state": "idle", "step": null, "waiting_for": null, "decisions": []}`
/// so that readers find the same keys on every route.
#[derive(Clone, Debug, PartialEq)]
pub enum RouteRamp {
    /// No ramp configured: the file's weight applies.
    Idle,
    /// The route's ramp as its driver reports it.
    Ramp(RampStatus),
}

impl RouteRamp {
    /// The ramp's state (`Idle` without a ramp).
    pub fn state(&self) -> Phase {
        match self {
            RouteRamp::Idle => Phase::Idle,
            RouteRamp::Ramp(s) => s.state,
        }
    }

    /// The ramp's status, when there is a ramp.
    pub fn status(&self) -> Option<&RampStatus> {
        match self {
            RouteRamp::Idle => None,
            RouteRamp::Ramp(s) => Some(s),
        }
    }

    /// Recent decisions, oldest first (none without a ramp).
    pub fn decisions(&self) -> &[AuditRecord] {
        self.status().map_or(&[], |s| s.decisions.as_slice())
    }

    /// What the ramp waits for, in words.
    pub fn waiting_for(&self) -> Option<&str> {
        self.status().and_then(|s| s.waiting_for.as_deref())
    }
}

impl From<Option<RampStatus>> for RouteRamp {
    fn from(status: Option<RampStatus>) -> RouteRamp {
        status.map_or(RouteRamp::Idle, RouteRamp::Ramp)
    }
}

/// The JSON of [`RouteRamp::Idle`].
#[derive(Serialize)]
struct IdleRamp {
    state: Phase,
    step: Option<usize>,
    waiting_for: Option<String>,
    decisions: [AuditRecord; 0],
}

impl Serialize for RouteRamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            RouteRamp::Idle => IdleRamp {
                state: Phase::Idle,
                step: None,
                waiting_for: None,
                decisions: [],
            }
            .serialize(s),
            RouteRamp::Ramp(status) => status.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for RouteRamp {
    /// A ramp without a step number is the idle marker; anything else must
    /// be a whole [`RampStatus`] (so its errors name the missing field).
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RouteRamp, D::Error> {
        let value = serde_json::Value::deserialize(d)?;
        let step_missing = value.get("step").map_or(true, serde_json::Value::is_null);
        if step_missing && value.get("state").and_then(|s| s.as_str()) == Some("idle") {
            return Ok(RouteRamp::Idle);
        }
        RampStatus::deserialize(value)
            .map(RouteRamp::Ramp)
            .map_err(serde::de::Error::custom)
    }
}

/// Fleet mode's section: who this replica is, who leads, whether etcd
/// answers, and every replica the fleet knows.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetStatus {
    /// This replica's id.
    pub replica: String,
    /// The leading replica's id (the last one known while etcd is
    /// unreachable; `null` before any is known).
    pub leader: Option<String>,
    /// Whether etcd answers.
    pub etcd: EtcdHealth,
    /// Every replica of the fleet, live or with an expired lease.
    pub replicas: Vec<ReplicaStatus>,
    /// This replica's role: `leader` or `follower`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<FleetRole>,
    /// Since when `etcd` holds (RFC 3339 UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etcd_since: Option<String>,
    /// The fleet's last decisions over all routes, oldest first, each
    /// naming its route and the replica that made it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub decisions: Vec<FleetDecision>,
}

/// A replica's part in the fleet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FleetRole {
    /// Judges and decides for the fleet.
    Leader,
    /// Applies the leader's decisions.
    Follower,
}

/// One decision of the fleet's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetDecision {
    /// The route it was about.
    pub route: String,
    /// The decision.
    #[serde(flatten)]
    pub record: AuditRecord,
}

/// etcd as a replica sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EtcdHealth {
    /// etcd answers.
    Ok,
    /// etcd does not answer: weights stay as they are.
    Unreachable,
}

/// One replica of the fleet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ReplicaStatus {
    /// Its id.
    pub replica: String,
    /// Its lease is alive.
    pub alive: bool,
    /// Its routes or ramp policies differ from the leader's.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub config_drift: bool,
}

/// Shadow traffic's comparison of one route (mirrored canary answers
/// against stable's).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowReport {
    /// Requests mirrored to the canary.
    pub mirrored: u64,
    /// Pairs compared.
    pub compared: u64,
    /// Requests not mirrored (too many in flight, or a body that could
    /// not be copied): the sum of `skip_reasons`.
    pub skipped: u64,
    /// `skipped` by reason.
    #[serde(default)]
    pub skip_reasons: SkipReasons,
    /// Mirrored requests the canary failed or answered too late.
    pub canary_errors: u64,
    /// Pairs whose stable answer failed.
    pub stable_errors: u64,
    /// Pairs whose status codes differ.
    pub status_mismatches: u64,
    /// Stable's p99 over compared pairs, in seconds.
    pub stable_p99_seconds: Option<f64>,
    /// The canary's p99 over compared pairs, in seconds.
    pub canary_p99_seconds: Option<f64>,
    /// Rank-biased overlap of the ranked lists.
    pub rbo: RboSummary,
    /// Overlap of the top k items.
    pub overlap_at_k: MeanSummary,
    /// JSON fields that differ between the arms.
    pub fields: Vec<FieldDiff>,
}

/// Requests the shadow settings took but that were not mirrored, by reason.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SkipReasons {
    /// `max_in_flight` mirrored requests were already running.
    pub in_flight: u64,
    /// The request body was over the copy's cap (1 MiB).
    pub body_too_large: u64,
    /// The request body broke off or was not read to its end by stable.
    pub body_incomplete: u64,
}

/// Distribution of rank-biased overlap over compared pairs (`null` before
/// any pair with a list).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RboSummary {
    /// Mean.
    pub mean: Option<f64>,
    /// 10th percentile.
    pub p10: Option<f64>,
    /// Median.
    pub p50: Option<f64>,
}

/// A mean over compared pairs (`null` before any).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct MeanSummary {
    /// Mean.
    pub mean: Option<f64>,
}

/// One JSON field that differs between stable's and the canary's answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FieldDiff {
    /// Dotted path (`items.0.price`).
    pub path: String,
    /// Share of compared pairs where the canary's value differs.
    pub diff_rate: f64,
    /// Share of stable-vs-stable pairs where it differs (the noise floor).
    pub noise_rate: f64,
    /// The difference is above the noise floor beyond chance.
    pub flagged: bool,
    /// One pair of differing values.
    pub example: PerArm<serde_json::Value>,
}

/// The answer of `POST /routes/{name}/promote|rollback|pause|resume`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CommandAnswer {
    /// The route the command applied to.
    pub route: String,
    /// Its ramp after the command.
    pub ramp: RampStatus,
}

#[cfg(test)]
pub(crate) mod sample;

#[cfg(test)]
mod tests;
