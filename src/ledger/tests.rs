//! The ledger against a real SQLite store, with the clock standing still.

use serde_json::{json, Value};

// (`cfg(test)` is redundant here, the whole file is a test module; it
// tells the layering check that this import is test support.)
#[cfg(test)]
use crate::testing::{services, NOW};

use super::*;
use crate::subscription::Status;

const DAY: i64 = 86_400;

fn subscription_event(id: &str, created: i64, status: &str, livemode: bool) -> (Envelope, Vec<u8>) {
    let body = json!({
        "id": id, "object": "event", "type": "customer.subscription.updated",
        "created": created, "livemode": livemode,
        "data": {"object": {
            "object": "subscription", "id": "sub_1", "customer": "cus_1", "status": status,
            "metadata": {"user_id": "u1"},
            "items": {"data": [{"current_period_end": NOW + 30 * DAY, "price": {"id": "price_1"}}]}
        }}
    });
    let raw = serde_json::to_vec(&body).unwrap();
    (event::parse_envelope(&raw).unwrap(), raw)
}

async fn outcome(s: &crate::testing::Services, id: &str) -> Option<String> {
    s.store.get_event(id).await.unwrap().map(|e| e.outcome)
}

#[tokio::test]
async fn an_event_is_recorded_once_and_its_redelivery_is_a_duplicate() {
    let s = services().await;
    let (envelope, raw) = subscription_event("evt_1", NOW - 60, "active", false);
    let first = s
        .ledger
        .ingest(envelope.clone(), &raw, Source::Webhook)
        .await
        .unwrap();
    assert_eq!(
        first,
        Ingested::Recorded {
            outcome: Outcome::Applied,
            follow_up: vec![]
        }
    );
    let again = s
        .ledger
        .ingest(envelope, &raw, Source::Webhook)
        .await
        .unwrap();
    assert_eq!(again, Ingested::Duplicate);
    let records = s.store.subscriptions_for_user("u1").await.unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].verified_at, NOW - 60);
}

#[tokio::test]
async fn the_same_id_with_other_content_is_a_duplicate_and_is_flagged() {
    let s = services().await;
    let (envelope, raw) = subscription_event("evt_1", NOW - 60, "active", false);
    s.ledger
        .ingest(envelope, &raw, Source::Webhook)
        .await
        .unwrap();
    let (changed, raw) = subscription_event("evt_1", NOW - 60, "canceled", false);
    let again = s
        .ledger
        .ingest(changed, &raw, Source::Webhook)
        .await
        .unwrap();
    assert_eq!(again, Ingested::Duplicate);
    let reviews = s.store.list_reviews(true).await.unwrap();
    assert_eq!(reviews[0].reason, "payload_mismatch");
}

#[tokio::test]
async fn a_live_event_may_be_one_day_ahead_of_the_clock_and_not_a_second_more() {
    let s = services().await;
    let (edge, raw) = subscription_event("evt_edge", NOW + DAY, "active", true);
    s.ledger.ingest(edge, &raw, Source::Webhook).await.unwrap();
    assert_eq!(outcome(&s, "evt_edge").await.as_deref(), Some("applied"));
    let (past, raw) = subscription_event("evt_past", NOW + DAY + 1, "past_due", true);
    s.ledger.ingest(past, &raw, Source::Webhook).await.unwrap();
    assert_eq!(outcome(&s, "evt_past").await.as_deref(), Some("failed"));
    // Test mode is held to 2000..2100 only (test clocks live in the future).
    let (test_mode, raw) = subscription_event("evt_test", NOW + 300 * DAY, "canceled", false);
    s.ledger
        .ingest(test_mode, &raw, Source::Webhook)
        .await
        .unwrap();
    assert_eq!(outcome(&s, "evt_test").await.as_deref(), Some("applied"));
}

#[tokio::test]
async fn a_replay_runs_the_first_delivery_pipeline_follow_ups_included() {
    let s = services().await;
    let (active, raw) = subscription_event("evt_1", NOW - 60, "active", false);
    s.ledger
        .ingest(active, &raw, Source::Webhook)
        .await
        .unwrap();
    let (canceled, raw) = subscription_event("evt_2", NOW - 30, "canceled", false);
    s.ledger
        .ingest(canceled, &raw, Source::Webhook)
        .await
        .unwrap();
    let (early, raw) = subscription_event("evt_3", NOW + 2 * DAY, "active", true);
    s.ledger.ingest(early, &raw, Source::Webhook).await.unwrap();
    assert_eq!(outcome(&s, "evt_3").await.as_deref(), Some("failed"));

    s.clock.advance_secs(3 * DAY);
    let replayed = s.ledger.replay("evt_3").await.unwrap();
    assert_eq!(
        replayed.outcome,
        Outcome::Ignored,
        "canceled -> active is impossible"
    );
    assert_eq!(replayed.follow_up.len(), 1);
    assert_eq!(replayed.follow_up[0].subscription_id, "sub_1");
    assert!(replayed.follow_up[0].review_id.is_some());
    assert!(matches!(
        s.ledger.replay("evt_3").await,
        Err(ReplayError::NotFailed(_))
    ));
    assert!(matches!(
        s.ledger.replay("evt_none").await,
        Err(ReplayError::NotFound)
    ));
}

#[tokio::test]
async fn an_api_read_is_stamped_with_the_read_time_and_invalidates_the_cache() {
    let s = services().await;
    let (active, raw) = subscription_event("evt_1", NOW - 60, "active", false);
    s.ledger
        .ingest(active, &raw, Source::Webhook)
        .await
        .unwrap();
    let subject = crate::subject::Subject::User("u1".into());
    let ticket = s.cache.ticket(&subject);
    let records =
        crate::compact::from_records(&s.store.subscriptions_for_user("u1").await.unwrap());
    s.cache.insert(subject.clone(), ticket, records);
    assert!(s.cache.get(&subject).is_some());

    let (_, raw) = subscription_event("x", 0, "canceled", false);
    let object: Value = serde_json::from_slice::<Value>(&raw).unwrap()["data"]["object"].clone();
    let snap = event::parse_subscription(&object, "user_id").unwrap();
    let applied = s
        .ledger
        .apply_api_snapshot(&snap, NOW, ReadOrigin::Refresh)
        .await
        .unwrap();
    assert_eq!(applied.outcome, Outcome::Applied);
    assert_eq!(applied.previous, Some(Status::Active));
    assert!(applied.access_changed, "a notification was queued");
    assert!(
        s.cache.get(&subject).is_none(),
        "the cached answer was dropped"
    );
    let record = &s.store.subscriptions_for_user("u1").await.unwrap()[0];
    assert_eq!(
        (record.status, record.verified_at),
        (Some(Status::Canceled), NOW)
    );
}
