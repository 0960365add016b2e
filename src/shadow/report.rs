//! Aggregation of compared pairs into the route's `/status` `shadow` section.

use std::collections::HashMap;

use serde_json::Value;

use super::compare::{BodyComparison, PairComparison};
use super::diff::JsonDiff;
use super::noise::above_noise;
use crate::status::{FieldDiff, MeanSummary, PerArm, RboSummary, ShadowReport, SkipReasons};

/// Distinct field paths tracked; later new paths are not (bounded memory).
pub const MAX_FIELDS: usize = 512;
/// Fields listed in the report.
pub const MAX_REPORTED_FIELDS: usize = 20;
/// Recent values kept for percentiles.
const RECENT: usize = 2048;
/// Longest string shown in an example.
const MAX_EXAMPLE_STRING: usize = 64;
/// Largest serialized example value; bigger ones are summarised.
const MAX_EXAMPLE_BYTES: usize = 256;
/// Key fragments whose values are never shown.
const SECRET_KEYS: [&str; 7] = [
    "token", "password", "secret", "auth", "cookie", "session", "email",
];

/// The last [`RECENT`] values of a series.
#[derive(Debug, Default, Clone)]
struct Recent {
    values: Vec<f64>,
    next: usize,
}

impl Recent {
    fn push(&mut self, v: f64) {
        if self.values.len() < RECENT {
            self.values.push(v);
        } else {
            self.values[self.next] = v;
            self.next = (self.next + 1) % RECENT;
        }
    }

    /// The `q` quantile (nearest rank), `None` when empty.
    fn quantile(&self, q: f64) -> Option<f64> {
        if self.values.is_empty() {
            return None;
        }
        let mut sorted = self.values.clone();
        sorted.sort_by(f64::total_cmp);
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        Some(sorted[rank - 1])
    }
}

/// A running mean.
#[derive(Debug, Default, Clone, Copy)]
struct Mean {
    sum: f64,
    n: u64,
}

impl Mean {
    fn push(&mut self, v: f64) {
        self.sum += v;
        self.n += 1;
    }

    fn get(self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }
}

#[derive(Debug, Default, Clone)]
struct FieldTally {
    canary: u64,
    noise: u64,
    example: Option<(Value, Value)>,
}

/// Why a request that the shadow settings took was not mirrored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// `max_in_flight` mirrored requests were already running.
    InFlight,
    /// Its body was over the copy's cap.
    BodyTooLarge,
    /// Its body broke off, or stable did not read it to the end.
    BodyIncomplete,
}

impl FieldTally {
    fn count(&mut self, path: &str, noise: bool, example: Option<(&Value, &Value)>) {
        if noise {
            self.noise += 1;
            return;
        }
        self.canary += 1;
        if self.example.is_none() {
            if let Some((a, b)) = example {
                self.example = Some((redact(path, a), redact(path, b)));
            }
        }
    }
}

/// Everything shadow traffic has seen on one route since start.
#[derive(Debug, Default, Clone)]
pub struct ShadowStats {
    mirrored: u64,
    compared: u64,
    skipped: SkipReasons,
    canary_errors: u64,
    stable_errors: u64,
    status_mismatches: u64,
    stable_latency: Recent,
    canary_latency: Recent,
    rbo_recent: Recent,
    rbo: Mean,
    overlap: Mean,
    /// Canary pairs whose bodies were compared (the fields' denominator).
    body_pairs: u64,
    /// Stable-vs-stable pairs whose bodies were compared.
    noise_pairs: u64,
    fields: HashMap<String, FieldTally>,
    /// Body comparisons in the current second: (second, count).
    body_budget: (u64, u32),
}

/// Body comparisons (JSON diff and ranked lists) per route and second at
/// most. A comparison costs about ten times the CPU of proxying the request
/// (see docs/shadow.md), so at high rates the bodies of a sample are
/// compared; every pair is still compared by status and latency, which is
/// what the shadow phase's failure and slowness test uses.
pub const MAX_BODY_COMPARISONS_PER_SECOND: u32 = 200;

/// The path under which a byte-level body difference is counted.
pub const BODY_PATH: &str = "(body)";

impl ShadowStats {
    /// Whether a pair arriving in second `now_s` may have its bodies
    /// compared (at most [`MAX_BODY_COMPARISONS_PER_SECOND`]); counts it.
    pub fn take_body_budget(&mut self, now_s: u64) -> bool {
        if self.body_budget.0 != now_s {
            self.body_budget = (now_s, 0);
        }
        if self.body_budget.1 >= MAX_BODY_COMPARISONS_PER_SECOND {
            return false;
        }
        self.body_budget.1 += 1;
        true
    }

    /// A request was mirrored to the canary.
    pub fn record_mirrored(&mut self) {
        self.mirrored += 1;
    }

    /// A request was not mirrored, for `reason`.
    pub fn record_skipped(&mut self, reason: SkipReason) {
        let count = match reason {
            SkipReason::InFlight => &mut self.skipped.in_flight,
            SkipReason::BodyTooLarge => &mut self.skipped.body_too_large,
            SkipReason::BodyIncomplete => &mut self.skipped.body_incomplete,
        };
        *count += 1;
    }

    /// One compared canary-vs-stable pair.
    pub fn record_pair(&mut self, pair: &PairComparison) {
        self.compared += 1;
        self.canary_errors += u64::from(pair.canary_failed);
        self.stable_errors += u64::from(pair.stable_failed);
        self.status_mismatches += u64::from(pair.status_mismatch);
        self.stable_latency.push(pair.stable_latency.as_secs_f64());
        self.canary_latency.push(pair.canary_latency.as_secs_f64());
        match &pair.body {
            BodyComparison::NotCompared => {}
            BodyComparison::Bytes { equal } => {
                self.body_pairs += 1;
                if !equal {
                    self.count_field(BODY_PATH, false, None);
                }
            }
            BodyComparison::Json { diff, rank } => {
                self.body_pairs += 1;
                self.count_diff(diff, false);
                if let Some(rank) = rank {
                    self.rbo.push(rank.rbo);
                    self.rbo_recent.push(rank.rbo);
                    self.overlap.push(rank.overlap);
                }
            }
        }
    }

    /// One stable-vs-stable pair: the noise floor.
    pub fn record_noise(&mut self, body: &BodyComparison) {
        match body {
            BodyComparison::NotCompared => {}
            BodyComparison::Bytes { equal } => {
                self.noise_pairs += 1;
                if !equal {
                    self.count_field(BODY_PATH, true, None);
                }
            }
            BodyComparison::Json { diff, .. } => {
                self.noise_pairs += 1;
                self.count_diff(diff, true);
            }
        }
    }

    fn count_diff(&mut self, diff: &JsonDiff, noise: bool) {
        for d in &diff.differences {
            self.count_field(&d.path, noise, Some((&d.stable, &d.canary)));
        }
    }

    fn count_field(&mut self, path: &str, noise: bool, example: Option<(&Value, &Value)>) {
        // One lookup for a known path; the key is copied only for a new one.
        if let Some(tally) = self.fields.get_mut(path) {
            tally.count(path, noise, example);
        } else if self.fields.len() < MAX_FIELDS {
            let mut tally = FieldTally::default();
            tally.count(path, noise, example);
            self.fields.insert(path.to_string(), tally);
        }
    }

    /// Requests mirrored so far.
    pub fn mirrored(&self) -> u64 {
        self.mirrored
    }

    /// The `/status` section.
    pub fn report(&self) -> ShadowReport {
        let mut fields: Vec<FieldDiff> = self
            .fields
            .iter()
            .filter(|(_, t)| t.canary > 0)
            .map(|(path, t)| {
                let (stable, canary) = t.example.clone().unwrap_or((Value::Null, Value::Null));
                FieldDiff {
                    path: path.clone(),
                    diff_rate: rate(t.canary, self.body_pairs),
                    noise_rate: rate(t.noise, self.noise_pairs),
                    flagged: above_noise(t.canary, self.body_pairs, t.noise, self.noise_pairs),
                    example: PerArm { stable, canary },
                }
            })
            .collect();
        fields.sort_by(|a, b| {
            b.flagged
                .cmp(&a.flagged)
                .then(b.diff_rate.total_cmp(&a.diff_rate))
                .then_with(|| a.path.cmp(&b.path))
        });
        fields.truncate(MAX_REPORTED_FIELDS);
        ShadowReport {
            mirrored: self.mirrored,
            compared: self.compared,
            skipped: self.skipped.in_flight
                + self.skipped.body_too_large
                + self.skipped.body_incomplete,
            skip_reasons: self.skipped.clone(),
            canary_errors: self.canary_errors,
            stable_errors: self.stable_errors,
            status_mismatches: self.status_mismatches,
            stable_p99_seconds: self.stable_latency.quantile(0.99),
            canary_p99_seconds: self.canary_latency.quantile(0.99),
            rbo: RboSummary {
                mean: self.rbo.get(),
                p10: self.rbo_recent.quantile(0.10),
                p50: self.rbo_recent.quantile(0.50),
            },
            overlap_at_k: MeanSummary {
                mean: self.overlap.get(),
            },
            fields,
        }
    }
}

fn rate(x: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        x as f64 / n as f64
    }
}

/// An example value fit to show: secrets hidden (by the last key of its
/// path), long strings cut, big containers summarised.
pub fn redact(path: &str, value: &Value) -> Value {
    let key = path.rsplit('.').next().unwrap_or(path).to_ascii_lowercase();
    if SECRET_KEYS.iter().any(|s| key.contains(s)) {
        return Value::String("[redacted]".to_string());
    }
    match value {
        Value::String(s) if s.chars().count() > MAX_EXAMPLE_STRING => {
            let cut: String = s.chars().take(MAX_EXAMPLE_STRING).collect();
            Value::String(format!("{cut}…"))
        }
        Value::Array(_) | Value::Object(_) => {
            let size = serde_json::to_vec(value).map_or(usize::MAX, |v| v.len());
            if size > MAX_EXAMPLE_BYTES {
                Value::String(format!("[{size} bytes]"))
            } else {
                value.clone()
            }
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::*;
    use crate::shadow::compare::{compare_bodies, CompareSpec};

    fn spec() -> CompareSpec {
        CompareSpec {
            items: Some("items".to_string()),
            item_id: Some("id".to_string()),
            ..CompareSpec::default()
        }
    }

    fn pair(body: BodyComparison, canary_failed: bool) -> PairComparison {
        PairComparison {
            stable_failed: false,
            canary_failed,
            status_mismatch: canary_failed,
            stable_latency: Duration::from_millis(10),
            canary_latency: Duration::from_millis(20),
            body,
        }
    }

    #[test]
    fn a_canary_only_difference_is_flagged_and_noise_is_not() {
        let mut stats = ShadowStats::default();
        for i in 0..100 {
            let stable = json!({"v": 1, "nonce": i, "items": [{"id": 1}]}).to_string();
            let canary = json!({"v": 2, "nonce": i + 1000, "items": [{"id": 1}]}).to_string();
            let body = compare_bodies(stable.as_bytes(), canary.as_bytes(), &spec());
            stats.record_mirrored();
            stats.record_pair(&pair(body, false));
            if i % 10 == 0 {
                let again = json!({"v": 1, "nonce": i + 2000, "items": [{"id": 1}]}).to_string();
                stats.record_noise(&compare_bodies(
                    stable.as_bytes(),
                    again.as_bytes(),
                    &spec(),
                ));
            }
        }
        let r = stats.report();
        assert_eq!((r.mirrored, r.compared), (100, 100));
        let v = r
            .fields
            .iter()
            .find(|f| f.path == "v")
            .unwrap_or_else(|| panic!("v"));
        assert!(v.flagged);
        assert_eq!((v.diff_rate, v.noise_rate), (1.0, 0.0));
        assert_eq!(v.example.stable, json!(1));
        assert_eq!(v.example.canary, json!(2));
        let nonce = r
            .fields
            .iter()
            .find(|f| f.path == "nonce")
            .unwrap_or_else(|| panic!("nonce"));
        assert!(!nonce.flagged);
        assert_eq!(nonce.noise_rate, 1.0);
        assert_eq!(r.fields[0].path, "v", "flagged fields first");
        assert_eq!(r.rbo.mean, Some(1.0));
        assert_eq!(r.overlap_at_k.mean, Some(1.0));
    }

    #[test]
    fn counts_percentiles_and_errors() {
        let mut stats = ShadowStats::default();
        assert_eq!(stats.report().rbo.mean, None);
        for i in 0..10 {
            let canary = if i < 5 {
                r#"{"items":[{"id":1},{"id":2}]}"#
            } else {
                r#"{"items":[{"id":3}]}"#
            };
            let body = compare_bodies(
                br#"{"items":[{"id":1},{"id":2}]}"#,
                canary.as_bytes(),
                &spec(),
            );
            stats.record_pair(&pair(body, i == 9));
        }
        stats.record_skipped(SkipReason::InFlight);
        stats.record_skipped(SkipReason::BodyTooLarge);
        stats.record_skipped(SkipReason::BodyTooLarge);
        let r = stats.report();
        assert_eq!(
            (r.compared, r.skipped, r.canary_errors, r.status_mismatches),
            (10, 3, 1, 1)
        );
        assert_eq!(
            r.skip_reasons,
            SkipReasons {
                in_flight: 1,
                body_too_large: 2,
                body_incomplete: 0
            }
        );
        assert_eq!(r.rbo.mean, Some(0.5));
        assert_eq!(r.rbo.p10, Some(0.0));
        assert_eq!(r.rbo.p50, Some(0.0));
        assert_eq!(r.stable_p99_seconds, Some(0.01));
        assert_eq!(r.canary_p99_seconds, Some(0.02));
    }

    #[test]
    fn body_comparisons_are_capped_per_second() {
        let mut stats = ShadowStats::default();
        let granted = (0..500).filter(|_| stats.take_body_budget(7)).count();
        assert_eq!(granted, MAX_BODY_COMPARISONS_PER_SECOND as usize);
        assert!(stats.take_body_budget(8), "a new second, a new budget");
    }

    #[test]
    fn examples_are_redacted_and_capped() {
        assert_eq!(
            redact("user.auth_token", &json!("abc")),
            json!("[redacted]")
        );
        let long = "x".repeat(100);
        let cut = redact("name", &json!(long));
        assert_eq!(cut.as_str().map(|s| s.chars().count()), Some(65));
        let big = Value::Array((0..200).map(|i| json!(i)).collect());
        assert!(redact("items", &big)
            .as_str()
            .is_some_and(|s| s.ends_with("bytes]")));
        assert_eq!(redact("price", &json!(9.5)), json!(9.5));
    }

    #[test]
    fn field_tracking_is_bounded() {
        let mut stats = ShadowStats::default();
        for i in 0..(MAX_FIELDS + 50) {
            stats.count_field(&format!("f{i}"), false, None);
        }
        assert_eq!(stats.fields.len(), MAX_FIELDS);
        assert!(stats.report().fields.len() <= MAX_REPORTED_FIELDS);
    }
}
