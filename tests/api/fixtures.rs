//! Stripe's own fixture objects (tests/fixtures/stripe, MIT, see NOTICE.md)
//! parse, and flow through the webhook endpoint.

use serde_json::Value;
use tollgate::event::{classify, parse_envelope, parse_subscription, DomainEvent};
use tollgate::subscription::{PauseKind, Status};

use crate::helpers::{now, spawn_app};
use crate::stripe::{envelope, Shape};

fn fixture(name: &str) -> Value {
    let path = format!(
        "{}/tests/fixtures/stripe/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&path).expect("fixture exists"))
        .expect("fixture is JSON")
}

#[test]
fn stripe_subscription_fixture_parses_in_the_basil_shape() {
    let sub = fixture("subscription.json");
    let snap = parse_subscription(&sub, "user_id").unwrap();
    assert_eq!(snap.id, "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw");
    assert_eq!(snap.customer_id, "cus_QXg1o8vcGmoR32");
    assert_eq!(snap.status.as_str(), "active");
    assert_eq!(snap.current_period_end, 976287773, "taken from the item");
    assert!(snap.cancel_at_period_end);
    assert_eq!(
        snap.items[0].product_id.as_deref(),
        Some("prod_QXg1hqf4jFNsqG")
    );
}

#[test]
fn stripe_event_fixture_envelope_parses() {
    let raw = serde_json::to_vec(&fixture("event.json")).unwrap();
    let env = parse_envelope(&raw).unwrap();
    assert_eq!(
        (env.id.as_str(), env.event_type.as_str(), env.created),
        ("evt_1Pgc76B7WZ01zgkWwyRHS12y", "plan.created", 1234567890)
    );
    assert_eq!(env.api_version, None);
    assert_eq!(classify(&env, "user_id").unwrap(), DomainEvent::Unhandled);
}

#[test]
fn stripe_invoice_checkout_and_customer_fixtures_classify() {
    let wrap = |ty: &str, obj: Value| {
        parse_envelope(&serde_json::to_vec(&envelope("evt_f", ty, 1, Shape::Basil, obj)).unwrap())
            .unwrap()
    };

    let invoice = wrap("invoice.paid", fixture("invoice.json"));
    let DomainEvent::InvoicePaid(paid) = classify(&invoice, "user_id").unwrap() else {
        panic!("invoice.paid")
    };
    assert_eq!(
        paid.subscription_id, "subscription",
        "from parent.subscription_details"
    );
    assert_eq!(paid.customer_id, "cus_QXg1o8vcGmoR32");

    let failed = wrap("invoice.payment_failed", fixture("invoice.json"));
    assert!(matches!(
        classify(&failed, "user_id").unwrap(),
        DomainEvent::InvoiceFailed(_)
    ));

    let mut session = fixture("checkout_session.json");
    session["client_reference_id"] = Value::from("user_42");
    let checkout = wrap("checkout.session.completed", session);
    let DomainEvent::CheckoutCompleted(c) = classify(&checkout, "user_id").unwrap() else {
        panic!("checkout")
    };
    assert_eq!(c.user_id.as_deref(), Some("user_42"));

    let customer = wrap("customer.updated", fixture("customer.json"));
    let DomainEvent::Customer(link) = classify(&customer, "user_id").unwrap() else {
        panic!("customer")
    };
    assert_eq!(
        (link.customer_id.as_str(), link.user_id),
        ("cus_QXg1o8vcGmoR32", None)
    );
}

#[tokio::test]
async fn stripe_fixture_objects_are_accepted_as_webhooks() {
    let app = spawn_app().await;
    let t = now();
    let mut sub = fixture("subscription.json");
    sub["items"]["data"][0]["current_period_end"] = Value::from(t + 3600);
    // The fixture's dates are from 2009; its cancel_at would end access
    // then (see the cancel_at tests), so it moves with the period.
    sub["cancel_at"] = Value::from(t + 3600);
    sub["metadata"] = serde_json::json!({"user_id": "user_fixture"});
    assert_eq!(
        app.deliver(&envelope(
            "evt_fx_1",
            "customer.subscription.updated",
            t - 1,
            Shape::Basil,
            sub
        ))
        .await,
        "applied"
    );
    assert_eq!(
        app.deliver(&envelope(
            "evt_fx_2",
            "invoice.paid",
            t - 1,
            Shape::Basil,
            fixture("invoice.json")
        ))
        .await,
        "applied"
    );
    assert_eq!(
        app.deliver(&envelope(
            "evt_fx_3",
            "customer.created",
            t - 1,
            Shape::Basil,
            fixture("customer.json")
        ))
        .await,
        "ignored"
    );
    let r = app.access_for_user("user_fixture").await;
    assert!(r.has_access, "{r:?}");
    assert_eq!(r.access_until, t + 3600);
}

#[test]
fn a_thin_event_fixture_parses_with_its_related_object_and_twin() {
    let raw = serde_json::to_vec(&fixture("thin_event.json")).unwrap();
    let env = parse_envelope(&raw).unwrap();
    assert_eq!(env.event_type, "v1.customer.subscription.updated");
    assert_eq!(env.v1_type(), "customer.subscription.updated");
    assert_eq!(env.created, 1_790_856_000, "2026-10-01T12:00:00.000Z");
    assert!(env.is_handled());
    let thin = env.thin.as_ref().expect("a thin event");
    let related = thin.related.as_ref().expect("related_object");
    assert_eq!(
        (related.object_type.as_str(), related.id.as_str()),
        ("subscription", "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw")
    );
    assert_eq!(env.change_key(), "evt_1Pgc76B7WZ01zgkWwyRHS12y");
    assert_eq!(env.object, Value::Null, "a thin event carries no object");
}

#[test]
fn an_endive_subscription_paused_after_a_failed_payment_parses() {
    let snap = parse_subscription(&fixture("subscription_endive_paused.json"), "user_id").unwrap();
    assert_eq!(snap.status, Status::Paused);
    assert_eq!(snap.pause, Some(PauseKind::FirstPaymentFailure));
    assert_eq!(snap.cancel_at, None);
}

#[test]
fn an_accounts_v2_subscription_is_keyed_by_its_customer_account() {
    let snap = parse_subscription(&fixture("subscription_accounts_v2.json"), "user_id").unwrap();
    assert_eq!(snap.customer_id, "acct_1SvB2kB7WZ01zgkW");
    assert_eq!(snap.cancel_at, Some(976_200_000));
    assert!(!snap.cancel_at_period_end);
    assert_eq!(snap.pause, None, "only a paused subscription has a pause");
}

#[test]
fn every_older_subscription_fixture_still_parses() {
    // The basil-era fixture keeps parsing after the endive fields were added.
    let snap = parse_subscription(&fixture("subscription.json"), "user_id").unwrap();
    assert_eq!(snap.cancel_at, Some(1_234_567_890));
    assert_eq!(snap.customer_id, "cus_QXg1o8vcGmoR32");
}
