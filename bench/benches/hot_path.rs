//! Micro-benchmarks of the per-request CPU work:
//! - `signature::verify` on a 3 KB body,
//! - `event::parse_envelope` + `event::classify` on a realistic
//!   `customer.subscription.updated`,
//! - `policy::decide` over 3 records, and `policy::decide_feature` over the
//!   same records (a feature check on a cached subject).
//!
//! Run with `cargo bench -p tollgate-bench --bench hot_path`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use tollgate::catalog::Catalog;
use tollgate::policy::{decide, decide_feature, FeatureQuery, Policy};
use tollgate::signature::{header_for, verify, Secrets};
use tollgate::subscription::{Item, Status, SubscriptionRecord};
use tollgate_bench::stripe::{subscription_updated, Shape, Sub};

const SECRET: &str = "whsec_bench_0123456789abcdef";

fn body_of_size(size: usize) -> Vec<u8> {
    let mut body =
        br#"{"id":"evt_bench","type":"customer.subscription.updated","created":1,"pad":""#.to_vec();
    while body.len() < size - 2 {
        body.push(b'x');
    }
    body.extend_from_slice(b"\"}");
    body
}

/// Built from `placeholder` so new fields in the record keep their defaults.
fn record(i: i64, status: Status, period_end: i64) -> SubscriptionRecord {
    let mut r = SubscriptionRecord::placeholder(&format!("sub_{i}"), "cus_1");
    r.status = Some(status);
    r.current_period_end = Some(period_end);
    r.items = vec![Item {
        price_id: "price_basic".to_owned(),
        product_id: Some("prod_basic".to_owned()),
        lookup_key: None,
    }];
    r.snapshot_created = 1_700_000_000 + i;
    r.snapshot_event_id = format!("evt_{i}");
    r.verified_at = 1_700_000_000 + i;
    r
}

fn benches(c: &mut Criterion) {
    let now = tollgate_bench::now_secs();

    let body = body_of_size(3 * 1024);
    let secrets = Secrets::parse(SECRET).unwrap();
    let header = header_for(SECRET, now, &body);
    c.bench_function("signature::verify 3KB", |b| {
        b.iter(|| {
            verify(
                black_box(&secrets),
                Some(black_box(header.as_str())),
                black_box(&body),
                now,
                300,
            )
            .unwrap()
        })
    });

    let sub = Sub {
        id: "sub_1PgcBench".to_owned(),
        customer: "cus_QXgBench".to_owned(),
        status: "active",
        period_end: now + 30 * 86400,
        user_id: Some("user_42".to_owned()),
        product: "prod_basic".to_owned(),
    };
    let event = serde_json::to_vec(&subscription_updated(
        "evt_1PgcBench",
        now - 5,
        &sub,
        Shape::Basil,
    ))
    .unwrap();
    c.bench_function(
        &format!(
            "parse_envelope+classify subscription.updated {}B",
            event.len()
        ),
        |b| {
            b.iter(|| {
                let env = tollgate::event::parse_envelope(black_box(&event)).unwrap();
                tollgate::event::classify(&env, "user_id").unwrap()
            })
        },
    );

    let records = vec![
        record(1, Status::Canceled, now - 86400),
        record(2, Status::PastDue, now + 86400),
        record(3, Status::Active, now + 30 * 86400),
    ];
    let policy = Policy::default();
    c.bench_function("policy::decide 3 records", |b| {
        b.iter(|| decide(black_box(&records), now, &policy, None))
    });

    // The same records, asked for a feature their product carries: the
    // extra work of a feature check on a cached subject.
    let mut catalog = Catalog::new();
    catalog.insert(
        "prod_basic",
        std::sync::Arc::from(vec!["export".to_owned(), "sso".to_owned()]),
    );
    let query = FeatureQuery {
        feature: "sso",
        catalog: &catalog,
    };
    c.bench_function("policy::decide_feature 3 records", |b| {
        b.iter(|| decide_feature(black_box(&records), now, &policy, None, query))
    });
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
