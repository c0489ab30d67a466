//! The store's behaviour, method by method, on both backends: what each
//! `Store` and `Tx` method returns, its edge cases (unknown ids, duplicates,
//! empty results, limits, filters), and what concurrent callers see (row
//! locks, duplicate races, notification claims). Every test opens a fresh
//! database through `tollgate::store::connect`, the way the service does.
//!
//! The tests are in `store_suite/`, one file per area; this file holds
//! what they share, and `every_store_and_tx_method_has_a_behaviour_test`,
//! which keeps the suite whole: a method added to either trait fails it
//! until it is listed in [`COVERED`] and called by a test in `store_suite/`.
//!
//! On SQLite one writer connection serves every transaction and some reads
//! (`get_state`, notifications): while a test holds a transaction open it
//! only uses reads that go to the read pool (subscriptions, events,
//! reviews, counts).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use tollgate::access_change::{AccessChange, Kind};
use tollgate::outcome::{Outcome, ReviewReason};
use tollgate::store::{
    self, Counts, NewEvent, NewReview, Recorded, ReviewFilter, Store, StoreError, StoreEvent,
    StoreOptions,
};
use tollgate::subject::{Affected, Subject};
use tollgate::subscription::{Item, PauseKind, Status, SubscriptionRecord};

use crate::helpers::{Backend, TestDatabase};
use crate::on_both_backends;

/// Every method of `Store` and `Tx`, each called by at least one test in
/// `store_suite/`.
const COVERED: &[&str] = &[
    // Store
    "begin",
    "record_and_save_if_unchanged",
    "subscriptions_for_user",
    "subscriptions_for_customer",
    "subscriptions_of_subjects",
    "non_terminal_subscriptions",
    "unlinked_customers",
    "get_event",
    "knows_change",
    "product_features",
    "known_products",
    "entitlement_summaries",
    "get_review",
    "find_reviews",
    "list_reviews",
    "list_notifications",
    "ack_notification",
    "claim_notifications",
    "delivery_failed",
    "counts",
    "get_state",
    "ping",
    "probe_write",
    "backend",
    "writers",
    "try_lead",
    "watch",
    "list_audit",
    "events_for_subscription",
    "event_payload",
    "open_reviews_by_reason",
    "failed_events_since",
    "notifications_about",
    // Tx
    "insert_event",
    "load_event",
    "finish_event",
    "lock_subscription",
    "lock_subscriptions",
    "record_and_save",
    "customer_records",
    "customers_records",
    "set_hold",
    "release_holds",
    "save_subscription",
    "link_customer",
    "users_of_customer",
    "first_users_of_customers",
    "flag_review",
    "note_review_outcome",
    "resolve_review",
    "queue_notification",
    "queue_notifications",
    "set_state",
    "save_product_features",
    "forget_product_features",
    "save_entitlement_summary",
    "record_audit",
    "publish_changes",
    "publish_with_users",
    "record_save_and_publish",
    "savepoint",
    "rollback_to_savepoint",
    "commit",
    "publish_and_commit",
    "rollback",
];

mod console;
mod events;
mod notifications;
mod products;
mod reads;
mod reviews;
mod state;
mod subscriptions;
mod transactions;

// Fixtures.

/// A fresh database and the store opened on it. The store is declared
/// first so it closes before the database is dropped.
struct Fresh {
    store: Arc<dyn Store>,
    db: TestDatabase,
}

fn options(url: &str) -> StoreOptions {
    StoreOptions {
        url: url.to_owned(),
        busy_timeout: Duration::from_secs(10),
        max_connections: 4,
        writers: 1,
    }
}

async fn fresh(backend: Backend) -> Fresh {
    let db = TestDatabase::create(backend).await;
    let store = store::connect(&options(&db.url))
        .await
        .expect("store opens");
    Fresh { store, db }
}

/// Another handle on the same database, as another replica has.
async fn another_handle(db: &TestDatabase) -> Arc<dyn Store> {
    store::connect(&options(&db.url))
        .await
        .expect("store opens")
}

/// How long a test waits to conclude that a caller is blocked.
const BLOCKED: Duration = Duration::from_millis(300);

/// A bound on waits that should end at once.
const SOON: Duration = Duration::from_secs(10);

struct Event {
    id: String,
    payload: String,
    sha: String,
    /// The change it reports: its own id, or for a thin event its twin's.
    change_key: String,
}

impl Event {
    fn new(id: &str, payload: &str) -> Event {
        Event {
            id: id.to_owned(),
            payload: payload.to_owned(),
            sha: format!("sha-of-{payload}"),
            change_key: id.to_owned(),
        }
    }

    /// A thin event whose snapshot twin is `twin`.
    fn thin(id: &str, twin: &str) -> Event {
        Event {
            change_key: twin.to_owned(),
            ..Event::new(id, "thin")
        }
    }

    fn as_new(&self) -> NewEvent<'_> {
        NewEvent {
            id: &self.id,
            event_type: "customer.subscription.updated",
            created: 1_700_000_000,
            livemode: true,
            api_version: None,
            payload: &self.payload,
            payload_sha256: &self.sha,
            content_sha256: &self.sha,
            source: "webhook",
            received_at_ms: 1_700_000_000_123,
            change_key: &self.change_key,
            outcome: Outcome::Applied,
            error: None,
            processed_at_ms: 1_700_000_000_124,
        }
    }
}

fn change(n: i64) -> AccessChange {
    AccessChange {
        kind: Kind::Revoked,
        user_id: format!("user_{n}"),
        customer_id: format!("cus_{n}"),
        subscription_id: format!("sub_{n}"),
        old_status: "active".to_owned(),
        new_status: "canceled".to_owned(),
        old_access: true,
        new_access: false,
        old_access_until: 100 + n,
        new_access_until: 0,
        reason: "canceled".to_owned(),
    }
}

fn review<'a>(subject: &'a str, subscription_id: Option<&'a str>, at: i64) -> NewReview<'a> {
    NewReview {
        subject,
        subscription_id,
        event_id: Some("evt_review"),
        reason: ReviewReason::ImpossibleTransition,
        details: "canceled -> active",
        created_at_ms: at,
    }
}

/// Locks, changes and saves one subscription in its own transaction.
async fn save(
    store: &dyn Store,
    id: &str,
    customer: &str,
    change: impl FnOnce(&mut SubscriptionRecord),
) {
    let mut tx = store.begin().await.unwrap();
    let mut record = tx.lock_subscription(id, customer, 1).await.unwrap();
    change(&mut record);
    tx.save_subscription(&record, 2).await.unwrap();
    tx.commit().await.unwrap();
}

fn status(s: Status) -> impl FnOnce(&mut SubscriptionRecord) {
    move |r| r.status = Some(s)
}

/// Queues one notification per `created_at_ms`; returns their ids.
async fn queue(store: &dyn Store, created_at_ms: &[i64]) -> Vec<i64> {
    let mut tx = store.begin().await.unwrap();
    let mut ids = Vec::new();
    for (n, at) in created_at_ms.iter().enumerate() {
        ids.push(tx.queue_notification(&change(n as i64), *at).await.unwrap());
    }
    tx.commit().await.unwrap();
    ids
}

async fn claim(store: &dyn Store, now_ms: i64, lease_ms: i64, limit: i64) -> Vec<(i64, i64)> {
    let rows = store
        .claim_notifications(now_ms, lease_ms, limit)
        .await
        .unwrap();
    rows.into_iter().map(|n| (n.id, n.attempts)).collect()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn ids(records: Vec<SubscriptionRecord>) -> Vec<String> {
    sorted(records.into_iter().map(|r| r.id).collect())
}

// The checklist.

/// The names of the methods declared in `trait NAME { ... }` of `source`.
fn trait_methods(source: &str, name: &str) -> Vec<String> {
    let start = source
        .find(&format!("pub trait {name}"))
        .unwrap_or_else(|| panic!("trait {name} not found"));
    let mut depth = 0;
    let mut methods = Vec::new();
    for line in source[start..].lines() {
        let code = line.split("//").next().unwrap();
        if depth == 1 {
            let words: Vec<&str> = code.split_whitespace().collect();
            if let Some(i) = words.iter().position(|w| *w == "fn") {
                let name = words[i + 1].split(['(', '<']).next().unwrap();
                methods.push(name.to_owned());
            }
        }
        for c in code.chars() {
            match c {
                '{' => depth += 1,
                '}' => depth -= 1,
                _ => {}
            }
        }
        if depth == 0 && code.contains('}') {
            break;
        }
    }
    assert!(!methods.is_empty(), "no methods found in trait {name}");
    methods
}

#[test]
fn every_store_and_tx_method_has_a_behaviour_test() {
    let source =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/mod.rs")).unwrap();
    let mut declared = trait_methods(&source, "Tx");
    declared.extend(trait_methods(&source, "Store"));

    let missing: Vec<&String> = declared
        .iter()
        .filter(|m| !COVERED.contains(&m.as_str()))
        .collect();
    let stale: Vec<&&str> = COVERED
        .iter()
        .filter(|c| !declared.iter().any(|m| m == *c))
        .collect();
    assert!(
        missing.is_empty(),
        "methods of Store or Tx without a behaviour test: add one in \
         tests/api/store_suite/, then list them in COVERED: {missing:?}"
    );
    assert!(
        stale.is_empty(),
        "COVERED lists methods the traits no longer have: {stale:?}"
    );

    // Listed is not enough: each must be called by a test.
    let mut suite = String::new();
    let tests = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/api/store_suite");
    for file in std::fs::read_dir(tests).unwrap() {
        suite += &std::fs::read_to_string(file.unwrap().path()).unwrap();
    }
    let uncalled: Vec<&&str> = COVERED
        .iter()
        .filter(|m| !suite.contains(&format!(".{m}(")))
        .collect();
    assert!(
        uncalled.is_empty(),
        "listed in COVERED but called by no test in tests/api/store_suite/: {uncalled:?}"
    );
}
