//! What looks wrong is recorded for a person to review, and not applied.

use serde_json::json;

use crate::helpers::{now, spawn_app_on, Backend};
use crate::on_both_backends;
use crate::stripe::{envelope, subscription_event, Shape, Sub};

on_both_backends!(
    an_impossible_transition_is_flagged_and_not_applied,
    a_malformed_object_with_a_valid_signature_is_recorded_as_failed_and_flagged,
    a_same_second_tie_is_decided_by_rule_and_flagged,
);

async fn an_impossible_transition_is_flagged_and_not_applied(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now();
    let sub = Sub::new("sub_imp", "cus_imp", "canceled", t + 86400);
    app.deliver(&subscription_event(
        "evt_imp_1",
        "customer.subscription.deleted",
        t - 20,
        &sub,
        Shape::Basil,
    ))
    .await;
    let revived = subscription_event(
        "evt_imp_2",
        "customer.subscription.updated",
        t - 10,
        &sub.status("active"),
        Shape::Basil,
    );
    assert_eq!(app.deliver(&revived).await, "ignored");

    let r = app.access_for_customer("cus_imp").await;
    assert_eq!((r.has_access, r.status.as_str()), (false, "canceled"));
    let reviews = app.store.list_reviews(true).await.unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].reason, "impossible_transition");
    assert_eq!(reviews[0].subscription_id.as_deref(), Some("sub_imp"));
    assert!(
        reviews[0].details.contains("canceled -> active"),
        "{}",
        reviews[0].details
    );
    let row = app.store.get_event("evt_imp_2").await.unwrap().unwrap();
    assert!(row.error.unwrap().contains("impossible transition"));
}

async fn a_malformed_object_with_a_valid_signature_is_recorded_as_failed_and_flagged(
    backend: Backend,
) {
    let app = spawn_app_on(backend).await;
    // A subscription with no period end anywhere: neither API shape.
    let object = json!({"id": "sub_bad", "object": "subscription", "customer": "cus_bad", "status": "active",
                        "items": {"data": [{"id": "si_1", "price": {"id": "price_1"}}]}});
    let event = envelope(
        "evt_bad",
        "customer.subscription.updated",
        now(),
        Shape::Basil,
        object,
    );
    assert_eq!(app.deliver(&event).await, "failed");
    let row = app.store.get_event("evt_bad").await.unwrap().unwrap();
    assert!(row.error.unwrap().contains("current_period_end"));
    let r = app.access_for_customer("cus_bad").await;
    assert!(!r.has_access);
    assert_eq!(
        r.subscription_id, "",
        "no record with null fields was written"
    );
    let reviews = app.store.list_reviews(true).await.unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(
        (reviews[0].reason.as_str(), reviews[0].subject.as_str()),
        ("unknown_shape", "cus_bad")
    );

    // A redelivery of the same failed event is still just a duplicate.
    assert_eq!(app.post_webhook(&event).await.body["duplicate"], true);
    assert_eq!(app.store.list_reviews(true).await.unwrap().len(), 1);
}

async fn a_same_second_tie_is_decided_by_rule_and_flagged(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now() - 30;
    let sub = Sub::new("sub_tie", "cus_tie", "active", now() + 86400);
    app.deliver(&subscription_event(
        "evt_tie_a",
        "customer.subscription.updated",
        t,
        &sub,
        Shape::Basil,
    ))
    .await;
    let pd = subscription_event(
        "evt_tie_b",
        "customer.subscription.updated",
        t,
        &sub.status("past_due"),
        Shape::Basil,
    );
    assert_eq!(app.deliver(&pd).await, "applied");
    assert_eq!(app.access_for_customer("cus_tie").await.status, "past_due");
    let reviews = app.store.list_reviews(true).await.unwrap();
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0].reason, "same_second_tie");
}
