//! Business-KPI gates (`[[routes.ramp.prometheus_checks]]`): a PromQL
//! template is rendered per arm, queried from Prometheus' HTTP API
//! (`/api/v1/query`) and the canary's value is judged against the stable's
//! (`min_ratio`/`max_ratio`) or against absolute bounds (`min`/`max`).
//!
//! [`evaluate`] is pure; [`PromClient`] does the I/O. The driver calls them
//! every `interval` and decides (hold, roll back, pause).

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde::{Deserialize, Serialize};

use crate::config::types::{KpiBound, PrometheusCheck};

/// How long one Prometheus query may take.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// Consecutive rounds without data (Prometheus unreachable, empty result)
/// after which the ramp pauses.
pub const NO_DATA_BEFORE_PAUSE: u32 = 4;

/// The verdict on one check.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum KpiOutcome {
    /// Within bounds.
    Pass,
    /// Out of bounds.
    Fail {
        /// Which bound and the values.
        reason: String,
    },
    /// No number to judge (unreachable, empty result, NaN, stable at 0 for a ratio).
    NoData {
        /// Why.
        reason: String,
    },
}

/// One check's last result, as `/status` shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KpiResult {
    /// The check's name.
    pub name: String,
    /// The stable arm's value, when there was one.
    pub stable: Option<f64>,
    /// The canary arm's value, when there was one.
    pub canary: Option<f64>,
    /// The verdict.
    #[serde(flatten)]
    pub outcome: KpiOutcome,
}

/// Judges one check on the two arms' values. Pure.
pub fn evaluate(check: &PrometheusCheck, stable: Option<f64>, canary: Option<f64>) -> KpiOutcome {
    let name = &check.name;
    let Some(c) = canary.filter(|v| v.is_finite()) else {
        return KpiOutcome::NoData {
            reason: format!("`{name}`: no value for the canary"),
        };
    };
    match check.bound {
        KpiBound::Absolute { min, max } => {
            if let Some(lo) = min.filter(|lo| c < *lo) {
                return KpiOutcome::Fail {
                    reason: format!("`{name}`: canary {c:.6} < min {lo}"),
                };
            }
            if let Some(hi) = max.filter(|hi| c > *hi) {
                return KpiOutcome::Fail {
                    reason: format!("`{name}`: canary {c:.6} > max {hi}"),
                };
            }
            KpiOutcome::Pass
        }
        KpiBound::Ratio { min, max } => {
            let Some(s) = stable.filter(|v| v.is_finite()) else {
                return KpiOutcome::NoData {
                    reason: format!("`{name}`: no value for stable"),
                };
            };
            if s == 0.0 {
                if c == 0.0 {
                    return KpiOutcome::Pass;
                }
                return KpiOutcome::NoData {
                    reason: format!("`{name}`: stable is 0, the ratio is undefined"),
                };
            }
            let ratio = c / s;
            if let Some(lo) = min.filter(|lo| ratio < *lo) {
                return KpiOutcome::Fail {
                    reason: format!(
                        "`{name}`: canary/stable = {c:.6}/{s:.6} = {ratio:.3} < min_ratio {lo}"
                    ),
                };
            }
            if let Some(hi) = max.filter(|hi| ratio > *hi) {
                return KpiOutcome::Fail {
                    reason: format!(
                        "`{name}`: canary/stable = {c:.6}/{s:.6} = {ratio:.3} > max_ratio {hi}"
                    ),
                };
            }
            KpiOutcome::Pass
        }
    }
}

/// The query for one arm: `{{route}}` and `{{arm}}` filled in.
pub fn render(template: &str, route: &str, arm: &str) -> String {
    template.replace("{{route}}", route).replace("{{arm}}", arm)
}

/// Percent-encodes a query-string value (RFC 3986 unreserved kept).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The number in a `/api/v1/query` answer: the single sample of a vector
/// (summed if several), or a scalar. `Ok(None)` for an empty result.
pub fn parse_answer(body: &[u8]) -> Result<Option<f64>, String> {
    #[derive(Deserialize)]
    struct Answer {
        status: String,
        #[serde(default)]
        error: Option<String>,
        #[serde(default)]
        data: Option<Data>,
    }
    #[derive(Deserialize)]
    struct Data {
        #[serde(rename = "resultType")]
        result_type: String,
        result: serde_json::Value,
    }
    fn sample(v: &serde_json::Value) -> Option<f64> {
        v.get(1)?.as_str()?.parse::<f64>().ok()
    }
    let a: Answer =
        serde_json::from_slice(body).map_err(|e| format!("not a Prometheus answer: {e}"))?;
    if a.status != "success" {
        return Err(format!(
            "Prometheus error: {}",
            a.error.unwrap_or_else(|| a.status.clone())
        ));
    }
    let Some(d) = a.data else {
        return Ok(None);
    };
    match d.result_type.as_str() {
        "scalar" => Ok(sample(&d.result)),
        "vector" => {
            let items = d.result.as_array().cloned().unwrap_or_default();
            if items.is_empty() {
                return Ok(None);
            }
            let mut sum = 0.0;
            for it in &items {
                match it.get("value").and_then(sample) {
                    Some(v) => sum += v,
                    None => return Err("a vector sample without a value".to_string()),
                }
            }
            Ok(Some(sum))
        }
        other => Err(format!(
            "the query returned a {other}; use an instant vector or a scalar"
        )),
    }
}

/// A Prometheus HTTP API client. Cheap to clone.
#[derive(Clone, Debug)]
pub struct PromClient {
    base: String,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl PromClient {
    /// A client for `base` (`http://host:port`, no trailing slash).
    pub fn new(base: &str) -> PromClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(QUERY_TIMEOUT));
        PromClient {
            base: base.trim_end_matches('/').to_string(),
            client: Client::builder(TokioExecutor::new()).build(connector),
        }
    }

    /// Runs one instant query; `Ok(None)` for an empty result.
    pub async fn query(&self, promql: &str) -> Result<Option<f64>, String> {
        let url = format!("{}/api/v1/query?query={}", self.base, encode(promql));
        let uri: hyper::Uri = url
            .parse()
            .map_err(|e| format!("bad Prometheus URL {url}: {e}"))?;
        let fut = async {
            let resp = self
                .client
                .get(uri)
                .await
                .map_err(|e| format!("Prometheus at {} unreachable: {e}", self.base))?;
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading Prometheus' answer: {e}"))?
                .to_bytes();
            if !status.is_success() && status.as_u16() != 400 && status.as_u16() != 422 {
                return Err(format!("Prometheus answered {status}"));
            }
            parse_answer(&body)
        };
        tokio::time::timeout(QUERY_TIMEOUT, fut)
            .await
            .map_err(|_| {
                format!(
                    "Prometheus at {} did not answer in {QUERY_TIMEOUT:?}",
                    self.base
                )
            })?
    }

    /// Queries one check for both arms and judges it.
    pub async fn check(&self, route: &str, check: &PrometheusCheck) -> KpiResult {
        let stable = self.query(&render(&check.query, route, "stable")).await;
        let canary = self.query(&render(&check.query, route, "canary")).await;
        let outcome = match (&stable, &canary) {
            (Err(e), _) | (_, Err(e)) => KpiOutcome::NoData {
                reason: format!("`{}`: {e}", check.name),
            },
            (Ok(s), Ok(c)) => match (s, c, check.bound) {
                (_, None, _) => KpiOutcome::NoData {
                    reason: format!("`{}`: empty result for the canary", check.name),
                },
                (None, Some(_), KpiBound::Ratio { .. }) => KpiOutcome::NoData {
                    reason: format!("`{}`: empty result for stable", check.name),
                },
                _ => evaluate(check, *s, *c),
            },
        };
        KpiResult {
            name: check.name.clone(),
            stable: stable.ok().flatten(),
            canary: canary.ok().flatten(),
            outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ratio(min: Option<f64>, max: Option<f64>) -> PrometheusCheck {
        PrometheusCheck {
            name: "ctr".into(),
            query: "q".into(),
            bound: KpiBound::Ratio { min, max },
        }
    }

    #[test]
    fn ratio_bounds() {
        let c = ratio(Some(0.95), None);
        assert_eq!(evaluate(&c, Some(0.10), Some(0.099)), KpiOutcome::Pass);
        assert!(matches!(
            evaluate(&c, Some(0.10), Some(0.05)),
            KpiOutcome::Fail { reason } if reason.contains("0.500 < min_ratio 0.95")
        ));
        assert!(matches!(
            evaluate(&c, None, Some(0.05)),
            KpiOutcome::NoData { .. }
        ));
        assert!(matches!(
            evaluate(&c, Some(0.0), Some(0.05)),
            KpiOutcome::NoData { .. }
        ));
        assert!(matches!(
            evaluate(&c, Some(0.1), Some(f64::NAN)),
            KpiOutcome::NoData { .. }
        ));
        let c = ratio(None, Some(1.2));
        assert!(matches!(
            evaluate(&c, Some(1.0), Some(1.5)),
            KpiOutcome::Fail { .. }
        ));
    }

    #[test]
    fn absolute_bounds_judge_the_canary_only() {
        let c = PrometheusCheck {
            name: "p99".into(),
            query: "q".into(),
            bound: KpiBound::Absolute {
                min: Some(1.0),
                max: Some(2.0),
            },
        };
        assert_eq!(evaluate(&c, None, Some(1.5)), KpiOutcome::Pass);
        assert!(
            matches!(evaluate(&c, None, Some(2.5)), KpiOutcome::Fail { reason } if reason.contains("> max 2"))
        );
        assert!(
            matches!(evaluate(&c, None, Some(0.5)), KpiOutcome::Fail { reason } if reason.contains("< min 1"))
        );
    }

    #[test]
    fn renders_and_parses() {
        assert_eq!(
            render("x{arm=\"{{arm}}\",route=\"{{route}}\"}", "r", "canary"),
            "x{arm=\"canary\",route=\"r\"}"
        );
        assert_eq!(encode("a b{c=\"d\"}"), "a%20b%7Bc%3D%22d%22%7D");
        let v = br#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{},"value":[1.5,"0.25"]}]}}"#;
        assert_eq!(parse_answer(v), Ok(Some(0.25)));
        let e = br#"{"status":"success","data":{"resultType":"vector","result":[]}}"#;
        assert_eq!(parse_answer(e), Ok(None));
        let s = br#"{"status":"success","data":{"resultType":"scalar","result":[1.5,"2"]}}"#;
        assert_eq!(parse_answer(s), Ok(Some(2.0)));
        let bad = br#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(parse_answer(bad).is_err_and(|e| e.contains("parse error")));
    }
}
