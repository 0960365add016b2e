//! Per-replica counts and the leader's sum over the fleet.
//!
//! Each replica publishes ONE key holding, for every ramped route, the
//! cumulative counts it served at its current weight (a new `generation`
//! starts whenever it applies another weight). Cumulative, not per tick: the
//! leader takes the difference from what it consumed last time, so a publish
//! that lands between two leader ticks is never lost and never counted twice,
//! whatever the two clocks do. Counts are tagged with the weight they were
//! served at, and the leader only takes counts served at the route's current
//! weight: a tick never mixes two weights, even while replicas switch.
//!
//! The shadow phase's paired evidence travels the same way: each replica
//! classifies its own mirrored pairs (with the ramp's slow threshold, which
//! it has from the replicated state) into the counts the paired judge works
//! on, and the leader judges their sum.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::ramp::judge::paired::PairedEvidence;
use crate::ramp::segments::SegmentTick;
use crate::ramp::{ArmTick, JudgeHistogram, TickCounts};

/// What one replica served on one route since it applied its current weight.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Served {
    /// Canary weight (basis points) the counts were served at.
    pub weight_bp: u16,
    /// Bumped each time the replica starts counting afresh.
    pub generation: u64,
    /// Cumulative counts in this generation.
    pub counts: TickCounts,
    /// Cumulative paired evidence of its mirrored requests in this
    /// generation (absent from a replica without shadow traffic).
    #[serde(default, skip_serializing_if = "is_empty_evidence")]
    pub pairs: PairedEvidence,
}

fn is_empty_evidence(e: &PairedEvidence) -> bool {
    e.pairs == 0
}

/// The value of a replica's counts key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CountsReport {
    /// Route name → counts.
    pub routes: BTreeMap<String, Served>,
}

/// A replica's side: adds its drained ticks up per route and weight.
#[derive(Debug, Default)]
pub struct Accumulator {
    report: CountsReport,
    next_generation: u64,
}

impl Accumulator {
    /// An empty accumulator; generations start at `first_generation` (a
    /// restarted replica passes something new, e.g. its start time, so the
    /// leader never confuses its fresh counts with the previous process's).
    pub fn new(first_generation: u64) -> Accumulator {
        Accumulator {
            report: CountsReport::default(),
            next_generation: first_generation,
        }
    }

    /// Adds one drained tick of `route`, served at `weight_bp`. Counts at a
    /// weight other than the current one start a new generation.
    pub fn add(&mut self, route: &str, weight_bp: u16, tick: &TickCounts) {
        merge(&mut self.served(route, weight_bp).counts, tick);
    }

    /// Adds paired evidence of `route`'s mirrored requests, gathered at
    /// `weight_bp` (same generations as [`Accumulator::add`]).
    pub fn add_pairs(&mut self, route: &str, weight_bp: u16, pairs: &PairedEvidence) {
        self.served(route, weight_bp).pairs.add(pairs);
    }

    /// The route's counts at `weight_bp`, a new generation when the weight changed.
    fn served(&mut self, route: &str, weight_bp: u16) -> &mut Served {
        let fresh = self
            .report
            .routes
            .get(route)
            .map_or(true, |s| s.weight_bp != weight_bp);
        if fresh {
            let generation = self.next_generation;
            self.next_generation += 1;
            self.report.routes.insert(
                route.to_owned(),
                Served {
                    weight_bp,
                    generation,
                    ..Served::default()
                },
            );
        }
        self.report.routes.entry(route.to_owned()).or_default()
    }

    /// Forgets routes that are no longer ramped.
    pub fn retain(&mut self, keep: impl Fn(&str) -> bool) {
        self.report.routes.retain(|r, _| keep(r));
    }

    /// What to publish.
    pub fn report(&self) -> &CountsReport {
        &self.report
    }
}

fn merge(into: &mut TickCounts, add: &TickCounts) {
    into.merge(add);
}

/// The leader's side: what it has consumed of each replica's counts.
#[derive(Debug, Default)]
pub struct Consumer {
    /// (replica, route) → the generation and cumulative counts consumed.
    seen: HashMap<(String, String), Served>,
    /// Routes whose first read is done (that read only sets the cursors).
    primed: std::collections::HashSet<String>,
}

/// The fleet's new counts for one route.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Taken {
    /// Summed over every replica that served at the route's weight.
    pub counts: TickCounts,
    /// The paired evidence of mirrored requests, summed the same way.
    pub pairs: PairedEvidence,
    /// Replicas that contributed (served at the right weight).
    pub replicas: usize,
    /// Replicas whose counts were at another weight (still switching).
    pub other_weight: usize,
}

impl Consumer {
    /// A consumer for a fresh leadership term. Its first read of a route
    /// consumes nothing: a previous leader may already have judged those
    /// counts, and counting them twice would be worse than missing one tick.
    pub fn new() -> Consumer {
        Consumer::default()
    }

    /// The new counts of `route` at `weight_bp`, summed over `reports`
    /// (replica id, report), and the cursors moved past them.
    pub fn take(
        &mut self,
        route: &str,
        weight_bp: u16,
        reports: &[(String, CountsReport)],
    ) -> Taken {
        let priming = self.primed.insert(route.to_owned());
        let mut out = Taken::default();
        for (replica, report) in reports {
            let Some(served) = report.routes.get(route) else {
                continue;
            };
            let key = (replica.clone(), route.to_owned());
            let before = self
                .seen
                .insert(key, served.clone())
                .filter(|b| b.generation == served.generation);
            if priming {
                continue;
            }
            if served.weight_bp != weight_bp {
                out.other_weight += 1;
                continue;
            }
            let (counts, pairs) = match &before {
                Some(b) => (
                    diff(&served.counts, &b.counts),
                    served.pairs.since(&b.pairs),
                ),
                None => (served.counts.clone(), served.pairs.clone()),
            };
            merge(&mut out.counts, &counts);
            out.pairs.add(&pairs);
            out.replicas += 1;
        }
        out
    }
}

/// `now - before`, field by field (saturating: counts only grow within a generation).
fn diff(now: &TickCounts, before: &TickCounts) -> TickCounts {
    TickCounts {
        stable: diff_arm(&now.stable, &before.stable),
        canary: diff_arm(&now.canary, &before.canary),
        stable_halves: [
            diff_arm(&now.stable_halves[0], &before.stable_halves[0]),
            diff_arm(&now.stable_halves[1], &before.stable_halves[1]),
        ],
        segments: now
            .segments
            .iter()
            .map(|s| {
                let empty = SegmentTick::default();
                let b = before
                    .segments
                    .iter()
                    .find(|b| b.segment == s.segment)
                    .unwrap_or(&empty);
                SegmentTick {
                    segment: s.segment.clone(),
                    stable: diff_arm(&s.stable, &b.stable),
                    canary: diff_arm(&s.canary, &b.canary),
                }
            })
            .collect(),
    }
}

fn diff_arm(now: &ArmTick, before: &ArmTick) -> ArmTick {
    let mut latency = JudgeHistogram::new();
    for (i, (n, b)) in now
        .latency
        .counts()
        .iter()
        .zip(before.latency.counts())
        .enumerate()
    {
        if n > b {
            latency.add_to_bucket(i, n - b);
        }
    }
    ArmTick {
        requests: now.requests.saturating_sub(before.requests),
        errors: now.errors.saturating_sub(before.errors),
        latency,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arm(requests: u64, errors: u64, bucket: usize) -> ArmTick {
        let mut latency = JudgeHistogram::new();
        latency.add_to_bucket(bucket, requests);
        ArmTick {
            requests,
            errors,
            latency,
        }
    }

    fn tick(stable: u64, canary: u64, canary_errors: u64) -> TickCounts {
        TickCounts::from_halves(
            arm(canary, canary_errors, 10),
            [arm(stable / 2, 0, 10), arm(stable - stable / 2, 0, 10)],
        )
    }

    fn reports(accs: &[(&str, &Accumulator)]) -> Vec<(String, CountsReport)> {
        accs.iter()
            .map(|(r, a)| (r.to_string(), a.report().clone()))
            .collect()
    }

    #[test]
    fn sums_new_counts_over_replicas_once() {
        let (mut a, mut b) = (Accumulator::new(0), Accumulator::new(100));
        a.add("reco", 500, &tick(90, 10, 1));
        b.add("reco", 500, &tick(80, 20, 0));
        let mut leader = Consumer::new();
        assert_eq!(
            leader
                .take("reco", 500, &reports(&[("a", &a), ("b", &b)]))
                .replicas,
            0,
            "first read primes"
        );
        a.add("reco", 500, &tick(100, 10, 2));
        b.add("reco", 500, &tick(60, 40, 4));
        let t = leader.take("reco", 500, &reports(&[("a", &a), ("b", &b)]));
        assert_eq!(
            (
                t.replicas,
                t.counts.stable.requests,
                t.counts.canary.requests,
                t.counts.canary.errors
            ),
            (2, 160, 50, 6)
        );
        assert_eq!(
            t.counts.canary.latency.counts()[10],
            50,
            "histograms are differenced too"
        );
        assert_eq!(
            t.counts.stable_halves[0].requests + t.counts.stable_halves[1].requests,
            160
        );
        // Nothing new: nothing taken, however often the leader reads.
        let t = leader.take("reco", 500, &reports(&[("a", &a), ("b", &b)]));
        assert!(t.counts.is_empty());
        // Only b publishes again.
        b.add("reco", 500, &tick(10, 0, 0));
        let t = leader.take("reco", 500, &reports(&[("a", &a), ("b", &b)]));
        assert_eq!((t.replicas, t.counts.stable.requests), (2, 10));
    }

    #[test]
    fn segments_are_summed_and_differenced_by_name() {
        let seg = |name: &str, canary: u64, errors: u64| SegmentTick {
            segment: name.to_string(),
            stable: arm(canary, 0, 10),
            canary: arm(canary, errors, 10),
        };
        let with = |segments: Vec<SegmentTick>| TickCounts {
            segments,
            ..tick(10, 10, 0)
        };
        let (mut a, mut b) = (Accumulator::new(0), Accumulator::new(100));
        let mut leader = Consumer::new();
        a.add("reco", 500, &with(vec![seg("new", 1, 0)]));
        leader.take("reco", 500, &reports(&[("a", &a), ("b", &b)]));
        a.add(
            "reco",
            500,
            &with(vec![seg("new", 2, 1), seg("other", 5, 0)]),
        );
        b.add(
            "reco",
            500,
            &with(vec![seg("other", 3, 0), seg("new", 4, 2)]),
        );
        let t = leader.take("reco", 500, &reports(&[("a", &a), ("b", &b)]));
        let got: Vec<(&str, u64, u64)> = t
            .counts
            .segments
            .iter()
            .map(|s| (s.segment.as_str(), s.canary.requests, s.canary.errors))
            .collect();
        assert_eq!(got, [("new", 6, 3), ("other", 8, 0)]);
    }

    #[test]
    fn never_mixes_weights() {
        let (mut a, mut b) = (Accumulator::new(0), Accumulator::new(100));
        let mut leader = Consumer::new();
        a.add("reco", 500, &tick(10, 10, 0));
        b.add("reco", 500, &tick(10, 10, 0));
        leader.take("reco", 500, &reports(&[("a", &a), ("b", &b)]));
        // The leader moved to 10 %: a switched, b has not yet.
        a.add("reco", 500, &tick(7, 7, 7)); // drained at the switch, old weight
        a.add("reco", 1000, &tick(30, 30, 0));
        b.add("reco", 500, &tick(50, 5, 5));
        let t = leader.take("reco", 1000, &reports(&[("a", &a), ("b", &b)]));
        assert_eq!((t.replicas, t.other_weight), (1, 1));
        assert_eq!(
            (t.counts.canary.requests, t.counts.canary.errors),
            (30, 0),
            "all of a's new generation, none of b's"
        );
        b.add("reco", 1000, &tick(20, 20, 0));
        let t = leader.take("reco", 1000, &reports(&[("a", &a), ("b", &b)]));
        assert_eq!((t.replicas, t.counts.canary.requests), (2, 20));
    }

    #[test]
    fn restarted_replica_and_routes() {
        let mut a = Accumulator::new(0);
        let mut leader = Consumer::new();
        a.add("reco", 500, &tick(10, 10, 0));
        leader.take("reco", 500, &reports(&[("a", &a)]));
        // The same replica id restarts: a new generation, counted from zero.
        let mut a2 = Accumulator::new(1_000);
        a2.add("reco", 500, &tick(4, 4, 0));
        let t = leader.take("reco", 500, &reports(&[("a", &a2)]));
        assert_eq!(t.counts.canary.requests, 4);
        // A route without counts anywhere, and retain.
        assert_eq!(
            leader.take("other", 500, &reports(&[("a", &a2)])),
            Taken::default()
        );
        a2.retain(|r| r != "reco");
        assert!(a2.report().routes.is_empty());
    }

    fn evidence(canary_only_failures: u64, pairs: u64, rbo: f64) -> PairedEvidence {
        let mut e = PairedEvidence {
            pairs,
            rbo_sum: rbo * pairs as f64,
            rbo_pairs: pairs,
            ..PairedEvidence::default()
        };
        e.failed.canary_only = canary_only_failures;
        e
    }

    #[test]
    fn sums_the_shadow_pairs_over_replicas_once() {
        let (mut a, mut b) = (Accumulator::new(0), Accumulator::new(100));
        a.add_pairs("reco", 0, &evidence(1, 10, 0.5));
        b.add_pairs("reco", 0, &evidence(0, 5, 1.0));
        let mut leader = Consumer::new();
        let t = leader.take("reco", 0, &reports(&[("a", &a), ("b", &b)]));
        assert_eq!(t.pairs.pairs, 0, "first read primes");
        a.add_pairs("reco", 0, &evidence(3, 20, 0.5));
        b.add_pairs("reco", 0, &evidence(2, 30, 1.0));
        a.add("reco", 0, &tick(50, 0, 0));
        let t = leader.take("reco", 0, &reports(&[("a", &a), ("b", &b)]));
        assert_eq!(t.replicas, 2);
        assert_eq!((t.pairs.pairs, t.pairs.failed.canary_only), (50, 5));
        assert_eq!(t.pairs.rbo_pairs, 50);
        assert!((t.pairs.rbo_sum - 40.0).abs() < 1e-9, "{}", t.pairs.rbo_sum);
        assert_eq!(t.counts.stable.requests, 50, "ticks still summed");
        // Nothing new, nothing taken; then one replica alone.
        let t = leader.take("reco", 0, &reports(&[("a", &a), ("b", &b)]));
        assert_eq!(t.pairs.pairs, 0);
        b.add_pairs("reco", 0, &evidence(1, 4, 0.25));
        let t = leader.take("reco", 0, &reports(&[("a", &a), ("b", &b)]));
        assert_eq!((t.pairs.pairs, t.pairs.failed.canary_only), (4, 1));
        // Pairs gathered at another weight are not this weight's.
        a.add_pairs("reco", 100, &evidence(9, 9, 0.0));
        let t = leader.take("reco", 0, &reports(&[("a", &a), ("b", &b)]));
        assert_eq!((t.pairs.pairs, t.other_weight), (0, 1));
    }

    #[test]
    fn a_report_without_pairs_still_reads() {
        // Without pairs the key is left out, as a replica of an earlier
        // version wrote it, and it reads back as no evidence.
        let mut a = Accumulator::new(7);
        a.add("reco", 0, &tick(1, 0, 0));
        let json = serde_json::to_string(a.report()).unwrap_or_default();
        assert!(!json.contains("pairs"), "{json}");
        let back: CountsReport = serde_json::from_str(&json).unwrap_or_default();
        assert_eq!(back.routes["reco"].pairs, PairedEvidence::default());
        assert_eq!(back.routes["reco"].counts.stable.requests, 1);
    }

    #[test]
    fn report_round_trips_as_json() {
        let mut a = Accumulator::new(7);
        a.add("reco", 2500, &tick(10, 3, 1));
        a.add_pairs("reco", 2500, &evidence(2, 8, 0.75));
        let text = serde_json::to_vec(a.report()).unwrap_or_default();
        let back: CountsReport = serde_json::from_slice(&text).unwrap_or_default();
        assert_eq!(&back, a.report());
    }
}
