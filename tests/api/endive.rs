//! Subscriptions as Stripe renders them from 2025-09-30.clover to
//! 2026-09-30.endive: pauses after a failed payment, `cancel_at` in
//! flexible billing, Accounts v2 (`customer_account`), and statuses
//! Tollgate does not know.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tollgate::clock::ManualClock;
use tollgate::proto::Reason;

use crate::helpers::{now, spawn_app_clocked, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;
use crate::stripe::{envelope, invoice_event, subscription_object, Shape, Sub};

on_both_backends!(
    a_pause_after_a_first_failed_payment_grants_the_grace_then_denies_at_its_exact_end,
    every_other_pause_denies_at_once,
    a_same_second_past_due_and_pause_end_paused_in_either_order,
    pause_collection_keeps_an_active_subscription_granting,
    cancel_at_before_the_period_end_ends_access_there,
    after_cancel_at_a_stale_record_is_refreshed_and_denied,
    an_accounts_v2_lifecycle_grants_by_user_and_by_account_id,
    an_unknown_account_is_looked_up_by_customer_account,
    an_unknown_status_is_failed_flagged_and_re_read_from_stripe,
    an_unknown_status_never_grants_even_when_stripe_repeats_it,
);

const DAY: i64 = 86_400;
const GRACE: i64 = 7 * DAY;
const UPDATED: &str = "customer.subscription.updated";

/// A subscription object with `status` and, when paused, why.
fn object(sub: &Sub, status: &str, pause: Option<&str>) -> Value {
    let mut obj = subscription_object(sub, Shape::Basil);
    obj["status"] = json!(status);
    obj["billing_mode"] = json!({ "type": "flexible" });
    if let Some(kind) = pause {
        obj["status_details"] = json!({ "paused": { "subscription": { "type": kind } } });
    }
    obj
}

fn event(id: &str, created: i64, obj: Value) -> Value {
    envelope(id, UPDATED, created, Shape::Basil, obj)
}

async fn clocked(backend: Backend, t: i64) -> (TestApp, Arc<ManualClock>) {
    clocked_with(backend, t, |_| {}).await
}

async fn clocked_with(
    backend: Backend,
    t: i64,
    configure: impl FnOnce(&mut tollgate::config::Config),
) -> (TestApp, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::at_secs(t));
    let app = spawn_app_clocked(backend, clock.clone(), configure).await;
    (app, clock)
}

async fn a_pause_after_a_first_failed_payment_grants_the_grace_then_denies_at_its_exact_end(
    backend: Backend,
) {
    let t = now();
    let (app, clock) = clocked(backend, t).await;
    let sub = Sub::new("sub_pff", "cus_pff", "active", t + 30 * DAY);
    app.deliver(&event("evt_pff_1", t - 100, object(&sub, "active", None)))
        .await;
    let paused = object(&sub, "paused", Some("first_payment_failure"));
    app.deliver(&event("evt_pff_2", t - 50, paused.clone()))
        .await;
    // Stripe says the same when asked.
    app.stripe.put_subscription(paused);

    let a = app.access_for_customer("cus_pff").await;
    assert_eq!(a.reason(), Reason::PastDueGrace, "{a:?}");
    assert_eq!(a.access_until, t - 50 + GRACE);
    assert!(
        a.detail.contains("paused after a failed payment"),
        "{}",
        a.detail
    );

    clock.set_secs(t - 50 + GRACE - 1);
    let a = app.access_for_customer("cus_pff").await;
    assert!(a.has_access, "a second before the end: {a:?}");
    clock.set_secs(t - 50 + GRACE);
    let a = app.access_for_customer("cus_pff").await;
    assert!(!a.has_access, "at the end: {a:?}");
    assert_eq!(a.reason(), Reason::Paused, "{a:?}");
}

async fn every_other_pause_denies_at_once(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let t = now();
    let kinds = [
        Some("final_payment_failure"),
        Some("pause_requested"),
        Some("trial_end_without_payment_method"),
        Some("something_stripe_adds_later"),
        None,
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        let sub = Sub::new(
            &format!("sub_pz{i}"),
            &format!("cus_pz{i}"),
            "active",
            t + 30 * DAY,
        );
        let obj = object(&sub, "paused", kind);
        assert_eq!(
            app.deliver(&event(&format!("evt_pz{i}"), t - 10, obj))
                .await,
            "applied"
        );
        let a = app.access_for_customer(&sub.customer).await;
        assert!(!a.has_access, "{kind:?}: {a:?}");
        assert_eq!(a.reason(), Reason::Paused, "{kind:?}: {a:?}");
    }
}

async fn a_same_second_past_due_and_pause_end_paused_in_either_order(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let t = now() - 60;
    for (n, pause_first) in [(0, true), (1, false)] {
        let sub = Sub::new(
            &format!("sub_tie{n}"),
            &format!("cus_tie{n}"),
            "active",
            t + 30 * DAY,
        );
        let past_due = event(&format!("evt_tie{n}_pd"), t, object(&sub, "past_due", None));
        let paused = event(
            &format!("evt_tie{n}_pa"),
            t,
            object(&sub, "paused", Some("first_payment_failure")),
        );
        let order = if pause_first {
            [paused, past_due]
        } else {
            [past_due, paused]
        };
        for e in &order {
            app.deliver(e).await;
        }
        let a = app.access_for_customer(&sub.customer).await;
        assert_eq!(a.status, "paused", "pause first: {pause_first}: {a:?}");
    }
}

async fn pause_collection_keeps_an_active_subscription_granting(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let t = now();
    let sub = Sub::new("sub_pc", "cus_pc", "active", t + 30 * DAY);
    let mut obj = object(&sub, "active", None);
    obj["pause_collection"] = json!({ "behavior": "keep_as_draft", "resumes_at": null });
    app.deliver(&event("evt_pc", t - 10, obj)).await;
    let a = app.access_for_customer("cus_pc").await;
    assert_eq!(a.reason(), Reason::Active, "{a:?}");
}

async fn cancel_at_before_the_period_end_ends_access_there(backend: Backend) {
    let t = now();
    // Nothing counts as stale here, so no answer waits on Stripe.
    let (app, clock) = clocked_with(backend, t, |c| {
        c.staleness.stale_after = Duration::from_secs(100 * DAY as u64)
    })
    .await;
    let sub = Sub::new("sub_ca", "cus_ca", "active", t + 30 * DAY);
    let mut obj = object(&sub, "active", None);
    obj["cancel_at"] = json!(t + 10 * DAY);
    obj["cancel_at_period_end"] = json!(false);
    app.deliver(&event("evt_ca", t - 10, obj)).await;

    let a = app.access_for_customer("cus_ca").await;
    assert_eq!(a.reason(), Reason::Active, "{a:?}");
    assert_eq!(a.access_until, t + 10 * DAY, "{a:?}");
    assert_eq!(a.current_period_end, t + 30 * DAY);
    assert!(a.detail.contains("cancels at"), "{}", a.detail);

    clock.set_secs(t + 10 * DAY - 1);
    assert!(app.access_for_customer("cus_ca").await.has_access);
    // At cancel_at, with no cancellation seen: denied.
    clock.set_secs(t + 10 * DAY);
    let a = app.access_for_customer("cus_ca").await;
    assert!(!a.has_access, "{a:?}");
    assert_eq!(a.reason(), Reason::Expired, "{a:?}");
    assert!(app.stripe.requests().is_empty());
}

async fn after_cancel_at_a_stale_record_is_refreshed_and_denied(backend: Backend) {
    let t = now();
    let (app, clock) = clocked(backend, t).await;
    let sub = Sub::new("sub_cas", "cus_cas", "active", t + 30 * DAY);
    let mut obj = object(&sub, "active", None);
    obj["cancel_at"] = json!(t + DAY);
    app.deliver(&event("evt_cas", t - 10, obj)).await;
    // The deleted event never came; Stripe has the subscription canceled.
    let mut canceled = object(&sub, "canceled", None);
    canceled["cancel_at"] = json!(t + DAY);
    app.stripe.put_subscription(canceled);

    clock.set_secs(t + DAY + 60);
    let a = app.access_for_customer("cus_cas").await;
    assert_eq!(a.reason(), Reason::Canceled, "refreshed from Stripe: {a:?}");
    assert_eq!(app.stripe.request_count("/v1/subscriptions"), 1);
}

/// Accounts v2: no Customer, an Account (`acct_…`) in `customer_account`.
fn v2(mut obj: Value, account: &str) -> Value {
    obj["customer"] = Value::Null;
    obj["customer_account"] = json!(account);
    obj
}

async fn an_accounts_v2_lifecycle_grants_by_user_and_by_account_id(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let t = now();
    let account = "acct_1SvB2kB7WZ01zgkW";
    let sub = Sub::new("sub_v2", account, "active", t + 30 * DAY);
    let checkout = json!({
        "id": "cs_v2", "object": "checkout.session", "client_reference_id": "user_v2",
        "customer": null, "customer_account": account, "subscription": "sub_v2",
        "mode": "subscription", "status": "complete", "metadata": {},
    });
    let created = v2(object(&sub, "active", None), account);
    let invoice = invoice_event(
        "evt_v2_3",
        "invoice.paid",
        t - 10,
        "sub_v2",
        account,
        t + 31 * DAY,
        Shape::Basil,
    );
    let mut invoice_obj = invoice["data"]["object"].clone();
    invoice_obj = v2(invoice_obj, account);
    let events = [
        envelope(
            "evt_v2_1",
            "checkout.session.completed",
            t - 30,
            Shape::Basil,
            checkout,
        ),
        envelope(
            "evt_v2_2",
            "customer.subscription.created",
            t - 20,
            Shape::Basil,
            created,
        ),
        envelope(
            "evt_v2_3",
            "invoice.paid",
            t - 10,
            Shape::Basil,
            invoice_obj,
        ),
    ];
    for e in &events {
        assert_eq!(app.deliver(e).await, "applied", "{}", e["type"]);
    }
    let by_user = app.access_for_user("user_v2").await;
    assert!(by_user.has_access, "{by_user:?}");
    assert_eq!(by_user.access_until, t + 31 * DAY);
    let by_account = app.access_for_customer(account).await;
    assert!(by_account.has_access, "{by_account:?}");
    assert_eq!(by_account.subscription_id, "sub_v2");
}

async fn an_unknown_account_is_looked_up_by_customer_account(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let t = now();
    let account = "acct_1Lookup";
    let sub = Sub::new("sub_v2l", account, "active", t + 30 * DAY);
    app.stripe
        .put_subscription(v2(object(&sub, "active", None), account));
    let a = app.access_for_customer(account).await;
    assert!(a.has_access, "{a:?}");
    let asked: Vec<String> = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/subscriptions")
        .map(|r| r.query)
        .collect();
    assert!(
        asked
            .iter()
            .any(|q| q.contains("customer_account=acct_1Lookup")),
        "{asked:?}"
    );
}

async fn an_unknown_status_is_failed_flagged_and_re_read_from_stripe(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let t = now();
    let sub = Sub::new("sub_unk", "cus_unk", "active", t + 30 * DAY);
    app.stripe.put_subscription(object(&sub, "active", None));
    let strange = object(&sub, "frozen", None);
    assert_eq!(
        app.deliver(&event("evt_unk", t - 10, strange)).await,
        "failed"
    );
    let note = app.review_note("evt_unk", "unknown_shape").await;
    assert!(note.contains("active"), "{note}");
    let a = app.access_for_customer("cus_unk").await;
    assert!(a.has_access, "what Stripe said on the re-read: {a:?}");
}

async fn an_unknown_status_never_grants_even_when_stripe_repeats_it(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let t = now();
    let sub = Sub::new("sub_unk2", "cus_unk2", "active", t + 30 * DAY);
    let strange = object(&sub, "frozen", None);
    app.stripe.put_subscription(strange.clone());
    assert_eq!(
        app.deliver(&event("evt_unk2", t - 10, strange)).await,
        "failed"
    );
    let note = app.review_note("evt_unk2", "unknown_shape").await;
    assert!(note.contains("refresh failed"), "{note}");
    let a = app.access_for_customer("cus_unk2").await;
    assert!(!a.has_access, "{a:?}");
    let row = app.store.get_event("evt_unk2").await.unwrap().unwrap();
    assert!(
        row.error
            .as_deref()
            .unwrap_or("")
            .contains("unknown subscription status `frozen`"),
        "{row:?}"
    );
}
