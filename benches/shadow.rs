//! Criterion bench for shadow traffic's JSON/RBO comparison of a typical
//! 20-item response: two recommendation answers (2.7 KB of JSON each) parsed,
//! diffed field by field, their ranked lists compared (RBO and overlap@10),
//! and the result aggregated into the route's report. Two pairs: a canary
//! whose list moved by two places (every item, and so 64+ fields, differ:
//! the worst case the walk allows) and one that agrees except for the
//! ignored per-request fields.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};

use grayproxy::shadow::compare::{
    compare, compare_bodies, compare_with_noise, Answer, CompareSpec,
};
use grayproxy::shadow::ShadowStats;

/// A 20-item answer; `shift` reorders the list and changes some scores.
fn answer(shift: usize, request_id: u64) -> Vec<u8> {
    let items: Vec<_> = (0..20)
        .map(|i| {
            let id = (i + shift) % 24;
            let category = ["books", "music", "garden", "toys"][id % 4];
            serde_json::json!({
                "id": format!("sku-{id:05}"),
                "score": 1.0 - (i as f64) * 0.031 + (shift as f64) * 0.001,
                "title": format!("Recommended product number {id}"),
                "category": category,
                "price": 9.99 + id as f64,
                "in_stock": id % 3 != 0,
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "request_id": request_id,
        "model": "reco-v2",
        "generated_at": "2026-12-03T09:00:00Z",
        "items": items,
    }))
    .unwrap()
}

fn bench_compare(c: &mut Criterion) {
    let stable = answer(0, 1);
    let canary = answer(2, 2);
    let spec = CompareSpec {
        items: Some("items".to_string()),
        item_id: Some("id".to_string()),
        k: 10,
        ignore: vec!["request_id".to_string(), "generated_at".to_string()],
    };
    let side = |body: &'static [u8]| Answer {
        status: Some(200),
        failed: false,
        latency: Duration::from_millis(12),
        body: Some(body),
    };
    let stable: &'static [u8] = Box::leak(stable.into_boxed_slice());
    let canary: &'static [u8] = Box::leak(canary.into_boxed_slice());
    println!("answer size: {} bytes", stable.len());
    c.bench_function("shadow_compare_20_items", |b| {
        b.iter(|| black_box(compare(&side(stable), &side(canary), black_box(&spec))))
    });
    // The common case: same list, only the ignored per-request fields differ.
    let alike: &'static [u8] = Box::leak(answer(0, 3).into_boxed_slice());
    c.bench_function("shadow_compare_20_items_alike", |b| {
        b.iter(|| black_box(compare(&side(stable), &side(alike), black_box(&spec))))
    });
    // A pair with a noise copy (stable asked twice): stable's body parsed
    // once for both comparisons, against two separate comparisons.
    let noise: &'static [u8] = Box::leak(answer(0, 4).into_boxed_slice());
    c.bench_function("shadow_compare_with_noise_20_items", |b| {
        b.iter(|| {
            black_box(compare_with_noise(
                &side(stable),
                &side(canary),
                Some(noise),
                black_box(&spec),
            ))
        })
    });
    c.bench_function("shadow_compare_then_noise_separately_20_items", |b| {
        b.iter(|| {
            black_box(compare(&side(stable), &side(canary), black_box(&spec)));
            black_box(compare_bodies(stable, noise, black_box(&spec)));
        })
    });
    let mut stats = ShadowStats::default();
    c.bench_function("shadow_compare_and_record_20_items", |b| {
        b.iter(|| {
            let pair = compare(&side(stable), &side(canary), &spec);
            stats.record_pair(black_box(&pair));
        })
    });
}

criterion_group!(benches, bench_compare);
criterion_main!(benches);
