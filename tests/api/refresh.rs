//! Never lock out a paying user: stale denials are re-checked with Stripe
//! (once, however many callers), Stripe outages give bounded grace, and the
//! cache never serves an answer older than a committed webhook.

use std::time::{Duration, Instant};

use tollgate::proto::Reason;

use crate::fake_stripe::Behavior;
use crate::helpers::{now, spawn_app_on, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;
use crate::stripe::{subscription_event, subscription_object, Shape, Sub};

const DAY: i64 = 86_400;

on_both_backends!(
    a_missed_renewal_is_found_with_one_stripe_call_for_a_thousand_checks,
    a_stripe_outage_gives_stale_grace_then_denies,
    a_confirmed_cancellation_denies_without_asking_stripe_again,
    an_unknown_customer_is_found_through_the_api,
    a_webhook_is_visible_to_the_very_next_check,
    an_anomaly_is_checked_against_stripe_and_the_review_keeps_the_outcome,
);

/// A subscription whose period ended a minute ago, last heard of 30 days
/// ago: the renewal webhook never came.
async fn deliver_lapsed(app: &TestApp, n: &str) -> Sub {
    let sub = Sub::new(
        &format!("sub_{n}"),
        &format!("cus_{n}"),
        "active",
        now() - 60,
    );
    let event = subscription_event(
        &format!("evt_{n}"),
        "customer.subscription.updated",
        now() - 30 * DAY,
        &sub,
        Shape::Basil,
    );
    app.deliver(&event).await;
    sub
}

async fn a_missed_renewal_is_found_with_one_stripe_call_for_a_thousand_checks(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let sub = deliver_lapsed(&app, "renew").await;
    let renewed = Sub {
        period_end: now() + 30 * DAY,
        ..sub.clone()
    };
    app.stripe
        .put_subscription(subscription_object(&renewed, Shape::Basil));
    app.stripe
        .set_behavior(Behavior::Delay(Duration::from_millis(200)));

    let checks = (0..1000).map(|_| app.has_access("", "cus_renew", ""));
    let answers = futures::future::join_all(checks).await;
    for a in &answers {
        let a = a.as_ref().expect("has_access");
        assert!(a.has_access, "{a:?}");
        assert_eq!(a.reason, Reason::Active as i32);
        assert_eq!(a.access_until, renewed.period_end);
        assert!(
            a.verified_at >= now() - 5,
            "verified_at is the time of the API read"
        );
    }
    assert_eq!(app.stripe.request_count("/v1/subscriptions/sub_renew"), 1);
    let req = &app.stripe.requests()[0];
    assert_eq!(
        req.authorization.as_deref(),
        Some("Bearer sk_test_tollgate")
    );
    assert!(req.stripe_version.is_some());
}

async fn a_stripe_outage_gives_stale_grace_then_denies(backend: Backend) {
    let app = spawn_app_with(backend, |c| {
        c.staleness.stale_after = Duration::from_secs(1);
        c.staleness.stale_grace = Duration::from_secs(3);
        c.refresh_timeout = Duration::from_millis(500);
    })
    .await;
    app.stripe.set_behavior(Behavior::Fail500);
    let sub = Sub::new("sub_down", "cus_down", "active", now() - 1);
    app.deliver(&subscription_event(
        "evt_down",
        "customer.subscription.updated",
        now() - DAY,
        &sub,
        Shape::Basil,
    ))
    .await;

    let r = app.access_for_customer("cus_down").await;
    assert_eq!(
        (r.has_access, r.reason),
        (true, Reason::StaleGrace as i32),
        "{r:?}"
    );
    assert_eq!(r.access_until, sub.period_end + 3);
    assert!(r.detail.contains("stale grace until"), "{}", r.detail);
    assert!(r.detail.contains("Stripe"), "{}", r.detail);
    assert!(app.stripe.request_count("/v1/subscriptions/sub_down") >= 1);

    tokio::time::sleep(
        Duration::from_secs_f64((r.access_until - now() + 1) as f64).max(Duration::ZERO),
    )
    .await;
    let r = app.access_for_customer("cus_down").await;
    assert_eq!(
        (r.has_access, r.reason),
        (false, Reason::Expired as i32),
        "{r:?}"
    );
}

async fn a_confirmed_cancellation_denies_without_asking_stripe_again(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let sub = deliver_lapsed(&app, "gone").await;
    app.stripe
        .put_subscription(subscription_object(&sub.status("canceled"), Shape::Basil));
    let r = app.access_for_customer("cus_gone").await;
    assert_eq!(
        (r.has_access, r.reason),
        (false, Reason::Canceled as i32),
        "{r:?}"
    );
    for _ in 0..5 {
        let r = app.access_for_customer("cus_gone").await;
        assert_eq!(r.reason, Reason::Canceled as i32);
    }
    assert_eq!(
        app.stripe.request_count("/v1/subscriptions"),
        1,
        "fresh for STALE_AFTER"
    );

    // Same for a confirmed lapse (Stripe says active, period over).
    let lapsed = deliver_lapsed(&app, "lapsed").await;
    app.stripe
        .put_subscription(subscription_object(&lapsed, Shape::Basil));
    for _ in 0..3 {
        assert_eq!(
            app.access_for_customer("cus_lapsed").await.reason,
            Reason::Expired as i32
        );
    }
    assert_eq!(app.stripe.request_count("/v1/subscriptions/sub_lapsed"), 1);
}

#[tokio::test]
async fn a_refresh_timeout_bounds_has_access_latency() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.refresh_timeout = Duration::from_millis(300)
    })
    .await;
    let sub = deliver_lapsed(&app, "slow").await;
    app.stripe.put_subscription(subscription_object(
        &Sub {
            period_end: now() + DAY,
            ..sub
        },
        Shape::Basil,
    ));
    app.stripe
        .set_behavior(Behavior::Delay(Duration::from_secs(5)));
    let started = Instant::now();
    let r = app.access_for_customer("cus_slow").await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(300 + 600), "took {took:?}");
    assert_eq!(
        (r.has_access, r.reason),
        (true, Reason::StaleGrace as i32),
        "{r:?}"
    );
    assert!(r.detail.contains("timed out"), "{}", r.detail);
}

#[tokio::test]
async fn without_an_api_key_stale_records_get_grace() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.stripe.api_key = None).await;
    deliver_lapsed(&app, "nokey").await;
    let r = app.access_for_customer("cus_nokey").await;
    assert_eq!(r.reason, Reason::StaleGrace as i32, "{r:?}");
    assert!(r.detail.contains("not configured"), "{}", r.detail);
    assert!(app.stripe.requests().is_empty());
}

async fn an_unknown_customer_is_found_through_the_api(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let sub = Sub {
        user_id: Some("user_found".into()),
        ..Sub::new("sub_found", "cus_found", "active", now() + DAY)
    };
    app.stripe
        .put_subscription(subscription_object(&sub, Shape::Basil));
    let r = app.access_for_customer("cus_found").await;
    assert_eq!(
        (r.has_access, r.subscription_id.as_str()),
        (true, "sub_found"),
        "{r:?}"
    );
    assert!(
        app.access_for_user("user_found").await.has_access,
        "metadata links the user"
    );
    let listed = app.stripe.requests();
    assert_eq!(listed.len(), 1);
    assert!(
        listed[0].query.contains("customer=cus_found") && listed[0].query.contains("status=all"),
        "{}",
        listed[0].query
    );

    // A customer Stripe does not know is remembered as such.
    for _ in 0..3 {
        assert_eq!(
            app.access_for_customer("cus_nobody").await.reason,
            Reason::NoSubscription as i32
        );
    }
    assert_eq!(app.stripe.request_count("/v1/subscriptions"), 2);
    // ...until a webhook about it arrives.
    let late = Sub::new("sub_nobody", "cus_nobody", "active", now() + DAY);
    app.deliver(&subscription_event(
        "evt_nobody",
        "customer.subscription.created",
        now(),
        &late,
        Shape::Basil,
    ))
    .await;
    assert!(app.access_for_customer("cus_nobody").await.has_access);
}

async fn a_webhook_is_visible_to_the_very_next_check(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let checkout =
        crate::stripe::checkout_completed("evt_ci_0", now() - 100, "user_ci", "cus_ci", "sub_ci");
    app.deliver(&checkout).await;
    let sub = Sub::new("sub_ci", "cus_ci", "active", now() + DAY);
    let statuses = [
        "active", "past_due", "active", "unpaid", "active", "canceled",
    ];
    for (i, status) in statuses.iter().enumerate() {
        let event = subscription_event(
            &format!("evt_ci_{}", i + 1),
            "customer.subscription.updated",
            now() - 50 + i as i64,
            &sub.status(status),
            Shape::Basil,
        );
        app.deliver(&event).await;
        // No sleep: the 200 means the cache no longer holds the old answer.
        assert_eq!(app.access_for_user("user_ci").await.status, *status);
        assert_eq!(app.access_for_customer("cus_ci").await.status, *status);
    }
}

async fn an_anomaly_is_checked_against_stripe_and_the_review_keeps_the_outcome(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let sub = Sub::new("sub_anom", "cus_anom", "canceled", now() + DAY);
    app.deliver(&subscription_event(
        "evt_anom_1",
        "customer.subscription.deleted",
        now() - 20,
        &sub,
        Shape::Basil,
    ))
    .await;
    app.stripe
        .put_subscription(subscription_object(&sub, Shape::Basil));
    let revived = subscription_event(
        "evt_anom_2",
        "customer.subscription.updated",
        now() - 10,
        &sub.status("active"),
        Shape::Basil,
    );
    assert_eq!(app.deliver(&revived).await, "ignored");

    let mut noted = None;
    for _ in 0..50 {
        let reviews = app.store.list_reviews(true).await.unwrap();
        if let Some(outcome) = reviews.first().and_then(|r| r.refresh_outcome.clone()) {
            noted = Some(outcome);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let noted = noted.expect("the follow-up refresh notes its outcome on the review");
    assert!(noted.contains("stripe says canceled"), "{noted}");
    assert_eq!(app.stripe.request_count("/v1/subscriptions/sub_anom"), 1);
    assert_eq!(
        app.store.list_reviews(true).await.unwrap().len(),
        1,
        "the review stays open"
    );
}

#[tokio::test]
async fn a_failed_payment_triggers_a_refresh() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let sub = Sub::new("sub_pf", "cus_pf", "active", now() + DAY);
    app.deliver(&subscription_event(
        "evt_pf_1",
        "customer.subscription.updated",
        now() - 20,
        &sub,
        Shape::Basil,
    ))
    .await;
    app.stripe
        .put_subscription(subscription_object(&sub.status("past_due"), Shape::Basil));
    let failed = crate::stripe::invoice_event(
        "evt_pf_2",
        "invoice.payment_failed",
        now() - 5,
        "sub_pf",
        "cus_pf",
        now() + DAY,
        Shape::Basil,
    );
    assert_eq!(app.deliver(&failed).await, "ignored");
    for _ in 0..50 {
        if app.access_for_customer("cus_pf").await.status == "past_due" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the refresh after a failed payment never applied Stripe's past_due");
}

/// Anyone who can call HasAccess can name customers; made-up ids must not
/// queue Stripe look-ups ahead of a real user's refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_customer_ids_cannot_starve_a_real_refresh() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.stripe.max_rps = 5).await;
    let sub = deliver_lapsed(&app, "fair").await;
    let renewed = Sub {
        period_end: now() + 30 * DAY,
        ..sub
    };
    app.stripe
        .put_subscription(subscription_object(&renewed, Shape::Basil));

    // 200 unknown customers at once: half shaped like Stripe ids, half not.
    let app = &app;
    let junk = (0..200).map(|i| {
        let id = if i % 2 == 0 {
            format!("cus_junk{i}")
        } else {
            format!("user-{i}")
        };
        async move { app.has_access("", &id, "").await }
    });
    let answers = futures::future::join_all(junk).await;
    for a in answers {
        assert!(!a.expect("answered").has_access);
    }
    let lookups = app
        .stripe
        .requests()
        .iter()
        .filter(|r| r.path == "/v1/subscriptions")
        .count();
    assert!(lookups <= 3, "{lookups} look-ups of unknown customers");

    // The real, known subscription is refreshed within the refresh timeout.
    let answer = app.access_for_customer("cus_fair").await;
    assert_eq!(answer.reason(), Reason::Active, "{answer:?}");
    let over_budget = app.access_for_customer("cus_junk0").await;
    assert!(
        over_budget.detail.contains("Stripe was not asked")
            || over_budget.detail == "no subscription found",
        "{}",
        over_budget.detail
    );
}
