//! `[routes.ramp] segments` and `segment_values`, through `parse`: the
//! policy they build and every mistake reported at its place.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use grayproxy::config::types::{SegmentPolicy, StickySource};
use support::config::parsed::*;

fn ramp(lines: &str) -> String {
    file("", &format!("[routes.ramp]\n{lines}"))
}

#[test]
fn sources_and_values_build_the_policy() {
    assert_eq!(
        ok(&ramp("")).routes[0].ramp.as_ref().unwrap().segments,
        None
    );
    let cases = [
        (
            "segments = \"header:X-User-Segment\"\nsegment_values = [\"new\", \"returning\", \"app\"]",
            StickySource::Header(http::HeaderName::from_static("x-user-segment")),
            vec!["new", "returning", "app"],
        ),
        (
            "segments = \"cookie:seg\"\nsegment_values = [\"new\"]",
            StickySource::Cookie("seg".into()),
            vec!["new"],
        ),
        (
            "segments = \"query:seg\"\nsegment_values = [\"a b\", \"ünï\"]",
            StickySource::Query("seg".into()),
            vec!["a b", "ünï"],
        ),
    ];
    for (lines, source, values) in cases {
        let c = ok(&ramp(lines));
        let p = c.routes[0].ramp.as_ref().unwrap().segments.clone().unwrap();
        assert_eq!(
            p,
            SegmentPolicy {
                source,
                values: values.iter().map(|v| v.to_string()).collect()
            },
            "{lines}"
        );
        assert_eq!(p.names().last(), Some("other"));
    }
}

#[test]
fn every_mistake_is_reported_at_its_place() {
    // The route's table starts on line 6 of the generated file; [routes.ramp] is line 10.
    let seventeen: Vec<String> = (0..17).map(|i| format!("\"v{i}\"")).collect();
    let seventeen = format!("segment_values = [{}]", seventeen.join(", "));
    let cases: Vec<(String, &str)> = vec![
        (
            "segments = \"header:x-seg\"".into(),
            "11:12: segments = \"header:x-seg\" needs segment_values, the values judged on their own, e.g. segment_values = [\"new\", \"returning\"]",
        ),
        (
            "segment_values = [\"new\"]".into(),
            "11:18: segment_values needs segments, where a request's segment is read from, e.g. segments = \"header:x-user-segment\"",
        ),
        (
            "segments = \"ip:x\"\nsegment_values = [\"new\"]".into(),
            "11:12: segments \"ip:x\" must be \"header:NAME\", \"cookie:NAME\" or \"query:NAME\"",
        ),
        (
            "segments = \"header:bad header\"\nsegment_values = [\"new\"]".into(),
            "11:12: segments header \"bad header\" is not a valid header name; use letters, digits and '-' (e.g. \"x-user-id\")",
        ),
        (
            "segments = \"cookie:a;b\"\nsegment_values = [\"new\"]".into(),
            "11:12: segments cookie \"a;b\" is not a valid cookie name; use letters, digits and -_.",
        ),
        (
            "segments = \"query:x\"\nsegment_values = []".into(),
            "12:18: segment_values is empty; list the values judged on their own, e.g. [\"new\", \"returning\"]",
        ),
        (
            format!("segments = \"query:x\"\n{seventeen}"),
            "12:18: segment_values has 17 values; at most 16 are judged apart (the rest can share \"other\")",
        ),
        (
            "segments = \"query:x\"\nsegment_values = [\"new\", \"other\"]".into(),
            "12:26: segment value \"other\" is reserved for every value not listed; remove it",
        ),
        (
            "segments = \"query:x\"\nsegment_values = [\"new\", \"app\", \"new\"]".into(),
            "12:33: segment value \"new\" is listed twice",
        ),
        (
            "segments = \"query:x\"\nsegment_values = [\"\"]".into(),
            "12:19: an empty segment value can never match; remove it",
        ),
        (
            "segments = \"query:x\"\nsegment_values = [\"a\\nb\"]".into(),
            "12:19: segment value \"a\\nb\" has control characters",
        ),
        (
            "segments = 3\nsegment_values = [\"new\"]".into(),
            "11:12: ",
        ),
    ];
    for (lines, want) in cases {
        let e = load(&ramp(&lines)).unwrap_err();
        assert!(
            e.iter().any(|m| m.starts_with(want)),
            "{lines}\nwant {want}\ngot {e:#?}"
        );
    }
}

#[test]
fn all_errors_at_once() {
    let e = load(&ramp(
        "segments = \"ip:x\"\nsegment_values = [\"other\", \"\"]\nsteps = [5, 1]",
    ))
    .unwrap_err();
    assert!(e.len() >= 3, "{e:#?}");
}
