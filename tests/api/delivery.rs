//! Exactly-once recording: redeliveries, sequential or concurrent, are
//! acknowledged and change nothing.

use crate::helpers::{now, spawn_app_on, Backend};
use crate::on_both_backends;
use crate::stripe::{subscription_event, Shape, Sub};

on_both_backends!(
    a_redelivery_is_acknowledged_without_effect,
    fifty_concurrent_identical_deliveries_have_exactly_one_effect,
    the_same_id_with_another_payload_is_flagged_and_not_applied,
    unhandled_event_types_are_recorded_as_ignored,
);

async fn a_redelivery_is_acknowledged_without_effect(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now();
    let sub = Sub::new("sub_dup", "cus_dup", "active", t + 86400);
    let created = subscription_event(
        "evt_dup_1",
        "customer.subscription.created",
        t - 60,
        &sub,
        Shape::Basil,
    );
    assert_eq!(app.deliver(&created).await, "applied");

    // A newer cancellation, then the old event delivered again: the
    // redelivery must not be re-applied over the newer state.
    let canceled = subscription_event(
        "evt_dup_2",
        "customer.subscription.deleted",
        t - 30,
        &sub.status("canceled"),
        Shape::Basil,
    );
    assert_eq!(app.deliver(&canceled).await, "applied");
    for _ in 0..3 {
        let r = app.post_webhook(&created).await;
        assert_eq!(r.status, 200);
        assert_eq!(
            r.body,
            serde_json::json!({"received": true, "duplicate": true})
        );
    }
    let access = app.access_for_customer("cus_dup").await;
    assert_eq!(access.status, "canceled");
    assert!(!access.has_access);
    let row = app.store.get_event("evt_dup_1").await.unwrap().unwrap();
    assert_eq!(row.outcome, "applied");
}

async fn fifty_concurrent_identical_deliveries_have_exactly_one_effect(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now();
    let sub = Sub::new("sub_conc", "cus_conc", "active", t + 86400);
    let event = subscription_event(
        "evt_conc",
        "customer.subscription.created",
        t,
        &sub,
        Shape::Acacia,
    );
    let results = futures::future::join_all((0..50).map(|_| app.post_webhook(&event))).await;
    let statuses: Vec<u16> = results.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let firsts = results
        .iter()
        .filter(|r| r.body["duplicate"] == false)
        .count();
    let dups = results
        .iter()
        .filter(|r| r.body["duplicate"] == true)
        .count();
    assert_eq!((firsts, dups), (1, 49));
    assert_eq!(app.event_count("evt_conc").await, 1);
    assert!(
        app.store.list_reviews(false).await.unwrap().is_empty(),
        "identical payloads are not a mismatch"
    );
    assert!(app.access_for_customer("cus_conc").await.has_access);
}

async fn the_same_id_with_another_payload_is_flagged_and_not_applied(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now();
    let sub = Sub::new("sub_mm", "cus_mm", "active", t + 86400);
    let first = subscription_event(
        "evt_mm",
        "customer.subscription.updated",
        t - 10,
        &sub,
        Shape::Basil,
    );
    assert_eq!(app.deliver(&first).await, "applied");
    let forged = subscription_event(
        "evt_mm",
        "customer.subscription.updated",
        t - 10,
        &sub.status("canceled"),
        Shape::Basil,
    );
    let r = app.post_webhook(&forged).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["duplicate"], true);
    assert!(
        app.access_for_customer("cus_mm").await.has_access,
        "the second payload is not applied"
    );
    let reviews = app.store.list_reviews(true).await.unwrap();
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert_eq!(reviews[0].reason, "payload_mismatch");
    assert_eq!(reviews[0].event_id.as_deref(), Some("evt_mm"));
    assert_eq!(reviews[0].subject, "cus_mm");
}

async fn unhandled_event_types_are_recorded_as_ignored(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let event = crate::stripe::envelope(
        "evt_plan",
        "plan.created",
        now(),
        Shape::Basil,
        serde_json::json!({"id": "plan_1", "object": "plan"}),
    );
    assert_eq!(app.deliver(&event).await, "ignored");
    let row = app.store.get_event("evt_plan").await.unwrap().unwrap();
    assert_eq!(
        (
            row.outcome.as_str(),
            row.event_type.as_str(),
            row.source.as_str()
        ),
        ("ignored", "plan.created", "webhook")
    );
    assert!(row.processed_at_ms.is_some());
    assert_eq!(row.payload_sha256.len(), 64);
}
