//! Simulated traffic split into segments: each segment is its own stream
//! (its share of the rate, its own canary error multiplier), generated with
//! the same tick model and summed into the overall counts, with the
//! per-segment counts attached as the proxy's recorder attaches them.

use rand::Rng;

use super::traffic::{gen_tick, Scenario, Traffic};
use crate::config::types::{RampPolicy, SegmentPolicy, StickySource};
use crate::ramp::segments::SegmentTick;
use crate::ramp::window::TickCounts;

/// One simulated segment.
#[derive(Clone, Debug, PartialEq)]
pub struct SimSegment {
    /// Its name (`other` for the rest).
    pub name: String,
    /// Its share of the route's requests (shares of a scenario sum to 1).
    pub share: f64,
    /// Canary error rate in the segment = stable's × this.
    pub error_multiplier: f64,
}

fn seg(name: &str, share: f64, error_multiplier: f64) -> SimSegment {
    SimSegment {
        name: name.to_string(),
        share,
        error_multiplier,
    }
}

/// `new` 10 %, `returning` 60 %, `app` 20 %, `other` 10 %; the canary's
/// errors are `new_multiplier` × stable's for `new`, like stable's elsewhere.
pub fn three_segments(new_multiplier: f64) -> Vec<SimSegment> {
    vec![
        seg("new", 0.1, new_multiplier),
        seg("returning", 0.6, 1.0),
        seg("app", 0.2, 1.0),
        seg("other", 0.1, 1.0),
    ]
}

/// Ten segments of 9 % each and `other` 10 %, healthy.
pub fn ten_segments() -> Vec<SimSegment> {
    (1..=10)
        .map(|i| seg(&format!("s{i}"), 0.09, 1.0))
        .chain(std::iter::once(seg("other", 0.1, 1.0)))
        .collect()
}

/// The per-segment scenarios: a 5× error regression confined to the 10 %
/// of traffic that is `new`, judged with and without segments, and healthy
/// canaries with 3 and 10 segments.
pub fn segment_scenarios() -> Vec<Scenario> {
    let h = Scenario::healthy;
    vec![
        Scenario {
            segments: three_segments(5.0),
            judge_segments: true,
            bad: true,
            ..h("errors ×5 in segment new (10 %), segments judged")
        },
        Scenario {
            segments: three_segments(5.0),
            judge_segments: false,
            bad: true,
            ..h("errors ×5 in segment new (10 %), overall only")
        },
        Scenario {
            segments: three_segments(1.0),
            judge_segments: true,
            ..h("healthy, 3 segments judged")
        },
        Scenario {
            segments: ten_segments(),
            judge_segments: true,
            ..h("healthy, 10 segments judged")
        },
    ]
}

/// The policy a scenario runs under: the route's own, with the scenario's
/// segments judged (or none, for `judge_segments = false`). Scenarios
/// without segments keep the route's policy as it is.
pub fn scenario_policy(policy: &RampPolicy, scen: &Scenario) -> RampPolicy {
    if scen.segments.is_empty() {
        return policy.clone();
    }
    let segments = scen.judge_segments.then(|| SegmentPolicy {
        source: StickySource::Header(http::HeaderName::from_static("x-user-segment")),
        values: scen
            .segments
            .iter()
            .map(|s| s.name.clone())
            .filter(|n| n != SegmentPolicy::OTHER)
            .collect(),
    });
    RampPolicy {
        segments,
        ..policy.clone()
    }
}

/// A scenario whose traffic is spread evenly over the route's own segments
/// (so a route with `segments` is simulated with segment counts: without
/// them its segment evidence would stay at 1 and only dilute the overall).
pub fn spread_over(policy: &RampPolicy, scen: &Scenario) -> Scenario {
    match &policy.segments {
        Some(p) if scen.segments.is_empty() => {
            let n = p.names().count() as f64;
            Scenario {
                segments: p
                    .names()
                    .map(|name| seg(name, 1.0 / n, scen.error_multiplier))
                    .collect(),
                judge_segments: true,
                ..scen.clone()
            }
        }
        _ => scen.clone(),
    }
}

/// One tick of a segmented scenario: every segment generated on its own
/// and summed.
pub fn gen_segmented_tick<R: Rng>(
    rng: &mut R,
    traffic: &Traffic,
    scen: &Scenario,
    t_s: f64,
    weight: f64,
) -> TickCounts {
    let mut total = TickCounts::default();
    for s in &scen.segments {
        let part = Traffic {
            rps: traffic.rps * s.share,
            ..traffic.clone()
        };
        let one = Scenario {
            error_multiplier: s.error_multiplier,
            segments: Vec::new(),
            ..scen.clone()
        };
        let mut t = gen_tick(rng, &part, &one, t_s, weight);
        t.segments = vec![SegmentTick {
            segment: s.name.clone(),
            stable: t.stable.clone(),
            canary: t.canary.clone(),
        }];
        total.merge(&t);
    }
    total
}
