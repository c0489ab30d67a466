//! Live and test events: a deployment applies only the mode it serves
//! (`TOLLGATE_LIVEMODE`, by default the API key's), and records the other as
//! `ignored` with `livemode mismatch`.

use serde_json::Value;
use tollgate::livemode::Livemode;

use crate::helpers::{now, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;
use crate::stripe::{subscription_event, Shape, Sub};

on_both_backends!(
    live_events_are_ignored_under_a_test_key,
    test_events_are_ignored_under_a_live_key,
    any_applies_both_modes,
);

fn event(n: &str, livemode: bool) -> Value {
    let sub = Sub::new(
        &format!("sub_{n}"),
        &format!("cus_{n}"),
        "active",
        now() + 86_400,
    );
    let mut e = subscription_event(
        &format!("evt_{n}"),
        "customer.subscription.created",
        now() - 10,
        &sub,
        Shape::Basil,
    );
    e["livemode"] = Value::Bool(livemode);
    e
}

async fn mismatch_count(app: &TestApp) -> String {
    app.metrics_text()
        .await
        .lines()
        .filter(|l| l.starts_with("tollgate_livemode_mismatches_total"))
        .collect::<Vec<_>>()
        .join("\n")
}

async fn assert_ignored(app: &TestApp, n: &str, livemode: bool) {
    assert_eq!(app.deliver(&event(n, livemode)).await, "ignored");
    let stored = app
        .store
        .get_event(&format!("evt_{n}"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.error.as_deref(), Some("livemode mismatch"));
    assert!(
        !app.access_for_customer(&format!("cus_{n}"))
            .await
            .has_access
    );
}

async fn live_events_are_ignored_under_a_test_key(backend: Backend) {
    // The suite's key is sk_test_...: test mode unless told otherwise.
    let app = spawn_app_with(backend, |c| {
        c.livemode = Livemode::of_key(c.stripe.api_key.as_deref()).unwrap();
    })
    .await;
    assert_ignored(&app, "live_under_test", true).await;
    assert_eq!(
        app.deliver(&event("test_under_test", false)).await,
        "applied"
    );
    let counted = mismatch_count(&app).await;
    assert!(counted.contains("event_mode=\"live\""), "{counted}");
}

async fn test_events_are_ignored_under_a_live_key(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.stripe.api_key = Some("rk_live_tollgate".into());
        c.livemode = Livemode::of_key(c.stripe.api_key.as_deref()).unwrap();
    })
    .await;
    assert_ignored(&app, "test_under_live", false).await;
    assert_eq!(
        app.deliver(&event("live_under_live", true)).await,
        "applied"
    );
}

async fn any_applies_both_modes(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.livemode = Livemode::Any).await;
    assert_eq!(app.deliver(&event("any_live", true)).await, "applied");
    assert_eq!(app.deliver(&event("any_test", false)).await, "applied");
    assert!(app.access_for_customer("cus_any_live").await.has_access);
}
