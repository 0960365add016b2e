//! `[routes.ramp] segments` and `segment_values`: the per-segment
//! guardrails. Both keys or neither; the values are bounded because each
//! becomes a metric label value and judge state.

use super::Checker;
use crate::config::raw::RawRamp;
use crate::config::types::SegmentPolicy;

/// Longest segment value, in bytes (a label value, a JSON key in `/status`).
const MAX_VALUE_BYTES: usize = 64;

/// The segment policy, or `None` (no segments, or wrong: reported into `c`).
pub(super) fn segments(c: &mut Checker<'_>, r: &RawRamp) -> Option<SegmentPolicy> {
    let (source, values) = match (&r.segments, &r.segment_values) {
        (None, None) => return None,
        (Some(s), None) => {
            let msg = format!(
                "segments = {:?} needs segment_values, the values judged on their own, e.g. segment_values = [\"new\", \"returning\"]",
                s.value
            );
            c.error(s.at, msg);
            return None;
        }
        (None, Some(v)) => {
            c.error(
                v.at,
                "segment_values needs segments, where a request's segment is read from, e.g. segments = \"header:x-user-segment\"",
            );
            return None;
        }
        (Some(s), Some(v)) => (s, v),
    };
    let source = super::route::source(c, source, "segments");
    if values.value.is_empty() {
        c.error(
            values.at,
            "segment_values is empty; list the values judged on their own, e.g. [\"new\", \"returning\"]",
        );
        return None;
    }
    if values.value.len() > SegmentPolicy::MAX_VALUES {
        let msg = format!(
            "segment_values has {} values; at most {} are judged apart (the rest can share \"other\")",
            values.value.len(),
            SegmentPolicy::MAX_VALUES
        );
        c.error(values.at, msg);
        return None;
    }
    let mut out: Vec<String> = Vec::with_capacity(values.value.len());
    let mut ok = true;
    for v in &values.value {
        let problem = if v.value.is_empty() {
            Some("an empty segment value can never match; remove it".to_string())
        } else if v.value.len() > MAX_VALUE_BYTES {
            Some(format!(
                "segment value {:?} is longer than {MAX_VALUE_BYTES} bytes",
                v.value
            ))
        } else if v.value.chars().any(char::is_control) {
            Some(format!(
                "segment value {:?} has control characters",
                v.value
            ))
        } else if v.value == SegmentPolicy::OTHER {
            Some(format!(
                "segment value \"{}\" is reserved for every value not listed; remove it",
                SegmentPolicy::OTHER
            ))
        } else if out.contains(&v.value) {
            Some(format!("segment value {:?} is listed twice", v.value))
        } else {
            None
        };
        match problem {
            Some(msg) => {
                c.error(v.at, msg);
                ok = false;
            }
            None => out.push(v.value.clone()),
        }
    }
    let source = source?;
    ok.then_some(SegmentPolicy {
        source,
        values: out,
    })
}
