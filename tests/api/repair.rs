//! Repair what webhooks miss: the reconciler applies missed events exactly
//! once, the sweep corrects drift within the rate limit, changes are queued
//! and pushed as signed notifications, and admins review what looks wrong.

use std::time::{Duration, Instant};

use tollgate::notify::PushOptions;
use tollgate::proto::{self, Reason};

use crate::fake_stripe::Behavior;
use crate::helpers::{now, spawn_app_on, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;
use crate::receiver::Receiver;
use crate::stripe::{checkout_completed, subscription_event, subscription_object, Shape, Sub};

const DAY: i64 = 86_400;

on_both_backends!(
    a_listing_that_fails_mid_pass_keeps_the_pages_before_it,
    the_reconciler_applies_missed_webhooks_exactly_once_across_pages,
    a_held_revocation_keeps_access_until_an_admin_resolves_it,
    a_sweep_corrects_drift_and_queues_a_notification,
    replaying_an_anomaly_rechecks_it_with_stripe,
    a_row_the_store_cannot_decode_answers_500_and_logs_the_cause,
);

/// Three subscriptions, each with 3 events in Stripe's list (120 more noise
/// events across other customers make it span pages).
fn stripe_history(app: &TestApp) -> Vec<serde_json::Value> {
    let t = now() - 3600;
    let mut events = Vec::new();
    for n in 0..3 {
        let sub = Sub::new(
            &format!("sub_rc_{n}"),
            &format!("cus_rc_{n}"),
            "active",
            now() + 20 * DAY,
        );
        events.push(checkout_completed(
            &format!("evt_rc_{n}_0"),
            t,
            &format!("user_rc_{n}"),
            &sub.customer,
            &sub.id,
        ));
        events.push(subscription_event(
            &format!("evt_rc_{n}_1"),
            "customer.subscription.created",
            t + 10,
            &sub,
            Shape::Basil,
        ));
        // The last one cancels subscription 2.
        let last = if n == 2 {
            sub.status("canceled")
        } else {
            sub.clone()
        };
        events.push(subscription_event(
            &format!("evt_rc_{n}_2"),
            "customer.subscription.updated",
            t + 20,
            &last,
            Shape::Basil,
        ));
    }
    for i in 0..240 {
        let sub = Sub::new(
            &format!("sub_noise_{i}"),
            &format!("cus_noise_{i}"),
            "active",
            now() + DAY,
        );
        events.push(subscription_event(
            &format!("evt_noise_{i}"),
            "customer.subscription.created",
            t + 30 + i,
            &sub,
            Shape::Acacia,
        ));
    }
    for e in &events {
        app.stripe.push_event(e.clone());
    }
    events
}

async fn the_reconciler_applies_missed_webhooks_exactly_once_across_pages(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let events = stripe_history(&app);
    // Webhooks delivered subscription 0's history and half of 2's; 1's never came.
    for e in [&events[0], &events[1], &events[2], &events[6], &events[7]] {
        app.deliver(e).await;
    }
    assert!(app.access_for_user("user_rc_2").await.has_access);
    assert!(!app.access_for_user("user_rc_1").await.has_access);

    let report = app.reconcile().await;
    assert_eq!(report.events_seen, events.len() as i64);
    assert_eq!(
        report.events_duplicate, 5,
        "webhook-delivered events are not applied twice"
    );
    // Everything missed is applied, but for subscription 1's creation:
    // Stripe lists it after its newer update, and pages are written
    // several at once, in no set order, so it is either stale (written
    // after the update) or applied and then overtaken by it.
    assert!(report.events_other <= 1, "{report:?}");
    assert_eq!(
        report.events_applied + report.events_other,
        events.len() as i64 - 5,
        "{report:?}"
    );
    assert!(report.pages >= 3, "{report:?}");
    for e in &events {
        assert_eq!(app.event_count(e["id"].as_str().unwrap()).await, 1);
    }
    assert!(
        app.access_for_user("user_rc_1").await.has_access,
        "a missed checkout and subscription"
    );
    let r = app.access_for_user("user_rc_2").await;
    assert_eq!(
        (r.has_access, r.status.as_str()),
        (false, "canceled"),
        "a missed cancellation"
    );
    assert!(app
        .store
        .list_reviews(true)
        .await
        .unwrap()
        .iter()
        .all(|r| r.reason != "payload_mismatch"));

    // The right notifications: 1 restored, 2 revoked, each noise customer restored.
    let notes = app.notifications().await;
    let of = |c: &str| {
        notes
            .iter()
            .filter(|n| n.customer_id == c)
            .map(|n| n.kind.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(of("cus_rc_0"), Vec::<String>::new());
    assert_eq!(of("cus_rc_1"), vec!["ACCESS_RESTORED"]);
    assert_eq!(of("cus_rc_2"), vec!["ACCESS_REVOKED"]);
    let revoked = notes.iter().find(|n| n.customer_id == "cus_rc_2").unwrap();
    assert_eq!(
        (
            revoked.user_id.as_str(),
            revoked.old_status.as_str(),
            revoked.new_status.as_str()
        ),
        ("user_rc_2", "active", "canceled")
    );
    assert_eq!(notes.len(), 2 + 240);
    let reviews = app.store.list_reviews(true).await.unwrap();
    assert!(
        reviews
            .iter()
            .any(|r| r.reason == "revocation_by_reconciler" && r.subject == "cus_rc_2"),
        "{reviews:?}"
    );

    // A second pass finds nothing new.
    let again = app.reconcile().await;
    assert_eq!(again.events_applied, 0, "{again:?}");
    assert_eq!(app.notifications().await.len(), notes.len());
}

async fn a_listing_that_fails_mid_pass_keeps_the_pages_before_it(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let events = stripe_history(&app);
    // The second page's listing fails (for good: a 400 is not retried),
    // while the first page is being written.
    app.stripe.set_behavior(Behavior::FailNth {
        path: "/v1/events",
        nth: 2,
        status: 400,
    });
    let failed = app
        .admin()
        .reconcile(tollgate::proto::ReconcileRequest {})
        .await;
    assert!(failed.is_err(), "{failed:?}");
    let listings = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.path == "/v1/events")
        .collect::<Vec<_>>();
    assert_eq!(listings.len(), 2, "no page is listed after the failure");
    let first_page: Vec<_> = events.iter().rev().take(100).collect();
    for e in &first_page {
        assert_eq!(app.event_count(e["id"].as_str().unwrap()).await, 1);
    }

    // The next pass lists from after the first page, which was saved.
    app.stripe.set_behavior(Behavior::Normal);
    app.stripe.reset_requests();
    let report = app.reconcile().await;
    let resumed = &app.stripe.requests()[0];
    let last = first_page.last().unwrap()["id"].as_str().unwrap();
    assert!(
        resumed.query.contains(&format!("starting_after={last}")),
        "{resumed:?}"
    );
    assert_eq!(report.events_seen, events.len() as i64 - 100);
    for e in &events {
        assert_eq!(app.event_count(e["id"].as_str().unwrap()).await, 1);
    }
    assert!(app.access_for_user("user_rc_1").await.has_access);
}

async fn a_held_revocation_keeps_access_until_an_admin_resolves_it(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.hold_revocations = true).await;
    let sub = Sub::new("sub_hold", "cus_hold", "active", now() + 20 * DAY);
    app.deliver(&subscription_event(
        "evt_hold_1",
        "customer.subscription.created",
        now() - 100,
        &sub,
        Shape::Basil,
    ))
    .await;
    let missed = subscription_event(
        "evt_hold_2",
        "customer.subscription.deleted",
        now() - 50,
        &sub.status("canceled"),
        Shape::Basil,
    );
    app.stripe.push_event(missed);
    app.reconcile().await;

    let r = app.access_for_customer("cus_hold").await;
    assert_eq!(
        (r.has_access, r.reason),
        (true, Reason::ReviewHold as i32),
        "{r:?}"
    );
    let hold = app
        .open_review("revocation_by_reconciler", "a review holds it")
        .await;
    let held = app.notifications().await;
    assert!(
        held.iter()
            .all(|n| n.kind != "ACCESS_REVOKED" && n.new_access),
        "nothing revoked yet: {held:?}"
    );

    let resolved = app
        .admin()
        .resolve_review(proto::ResolveReviewRequest {
            id: hold.id,
            note: "customer confirmed".into(),
            action: proto::ResolveAction::Accept as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(resolved.resolved_at_ms > 0 && resolved.resolution.contains("customer confirmed"));
    let r = app.access_for_customer("cus_hold").await;
    assert_eq!(
        (r.has_access, r.reason),
        (false, Reason::Canceled as i32),
        "{r:?}"
    );
    let notes = app.notifications().await;
    let last = notes.last().expect("the revocation is announced");
    assert_eq!(
        (last.kind.as_str(), last.new_access),
        ("ACCESS_REVOKED", false)
    );
}

async fn a_sweep_corrects_drift_and_queues_a_notification(backend: Backend) {
    let app = spawn_app_on(backend).await;
    app.deliver(&checkout_completed(
        "evt_sw_0",
        now() - 200,
        "user_sw",
        "cus_sw",
        "sub_sw",
    ))
    .await;
    let sub = Sub::new("sub_sw", "cus_sw", "past_due", now() + 20 * DAY);
    app.deliver(&subscription_event(
        "evt_sw_1",
        "customer.subscription.updated",
        now() - 10 * DAY,
        &sub,
        Shape::Basil,
    ))
    .await;
    assert!(!app.access_for_user("user_sw").await.has_access);
    // Stripe recovered the payment; no event about it is listed any more.
    app.stripe
        .put_subscription(subscription_object(&sub.status("active"), Shape::Basil));
    let report = app.reconcile().await;
    assert!(
        report.swept && report.subscriptions_swept == 1 && report.access_corrections == 1,
        "{report:?}"
    );
    assert!(
        app.access_for_user("user_sw").await.has_access,
        "the very next check sees the correction"
    );
    let notes = app.notifications().await;
    assert_eq!(notes.len(), 1);
    assert_eq!(
        (
            notes[0].kind.as_str(),
            notes[0].user_id.as_str(),
            notes[0].new_status.as_str()
        ),
        ("ACCESS_RESTORED", "user_sw", "active")
    );
}

#[tokio::test]
async fn a_sweep_never_exceeds_the_stripe_rate_limit() {
    let app = spawn_app_with(Backend::Sqlite, |c| c.stripe.max_rps = 5).await;
    for i in 0..50 {
        let sub = Sub::new(
            &format!("sub_rl_{i}"),
            &format!("cus_rl_{i}"),
            "active",
            now() + DAY,
        );
        app.deliver(&subscription_event(
            &format!("evt_rl_{i}"),
            "customer.subscription.created",
            now() - 5,
            &sub,
            Shape::Basil,
        ))
        .await;
        app.stripe
            .put_subscription(subscription_object(&sub, Shape::Basil));
    }
    let started = Instant::now();
    let report = app.reconcile().await;
    assert_eq!(report.subscriptions_swept, 50);
    assert_eq!(app.stripe.request_count("/v1/subscriptions/"), 50);
    let peak = app.stripe.max_requests_in_any_second();
    assert!(peak <= 5, "{peak} requests in one second");
    assert!(
        started.elapsed() >= Duration::from_secs(9),
        "51 requests at 5/s take about 10 s"
    );
}

#[tokio::test]
async fn pushed_notifications_are_signed_and_retried_until_delivered() {
    let receiver = Receiver::start(2).await;
    let url = receiver.url.clone();
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.push = Some(PushOptions {
            url,
            secret: "whsec_notify".into(),
            backoff: Duration::from_millis(100),
            max_attempts: 5,
        });
    })
    .await;
    queue_one_notification(&app).await;

    let deadline = Instant::now() + Duration::from_secs(10);
    while receiver.received().len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let got = receiver.received();
    assert_eq!(got.len(), 3, "failed twice, delivered on the third try");
    let last = &got[2];
    let secrets = tollgate::signature::Secrets::parse("whsec_notify").unwrap();
    tollgate::signature::verify(&secrets, last.signature.as_deref(), &last.body, now(), 300)
        .expect("Stripe's algorithm verifies it");
    let body: serde_json::Value = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(body["kind"], "ACCESS_RESTORED");
    assert_eq!(body["customer_id"], "cus_push");
    // Every attempt carried the same notification id; it is acked now.
    let ids: Vec<serde_json::Value> = got
        .iter()
        .map(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"].clone())
        .collect();
    assert!(ids.iter().all(|id| *id == ids[0]));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 3, "no delivery after success");
    assert!(app.notifications().await[0].acked_at_ms.is_some());
}

#[tokio::test]
async fn a_notification_that_never_gets_through_ends_dead_and_in_review() {
    let receiver = Receiver::start(usize::MAX).await;
    let url = receiver.url.clone();
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.push = Some(PushOptions {
            url,
            secret: "whsec_notify".into(),
            backoff: Duration::from_millis(50),
            max_attempts: 3,
        });
    })
    .await;
    queue_one_notification(&app).await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.notifications().await.first().is_some_and(|n| n.dead) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n = &app.notifications().await[0];
    assert!(n.dead && n.acked_at_ms.is_none(), "{n:?}");
    assert_eq!(receiver.received().len(), 3);
    // The review is written right after the row is marked dead.
    let flagged = || async {
        let reviews = app.store.list_reviews(true).await.unwrap();
        reviews.iter().any(|r| r.reason == "dead_notification")
    };
    while !flagged().await {
        assert!(
            Instant::now() < deadline,
            "the dead notification was never flagged"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A refresh that restores access queues one notification.
async fn queue_one_notification(app: &TestApp) {
    let sub = Sub::new("sub_push", "cus_push", "active", now() - 60);
    app.deliver(&subscription_event(
        "evt_push",
        "customer.subscription.updated",
        now() - 30 * DAY,
        &sub,
        Shape::Basil,
    ))
    .await;
    app.stripe.put_subscription(subscription_object(
        &Sub {
            period_end: now() + 30 * DAY,
            ..sub
        },
        Shape::Basil,
    ));
    assert!(app.access_for_customer("cus_push").await.has_access);
}

#[tokio::test]
async fn admin_calls_need_the_token() {
    let app = spawn_app_on(Backend::Sqlite).await;
    for token in [None, Some("wrong-token")] {
        let err = app
            .admin_with_token(token)
            .reconcile(proto::ReconcileRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{token:?}");
    }
    let disabled = spawn_app_with(Backend::Sqlite, |c| c.admin_token = None).await;
    let err = disabled
        .admin()
        .list_reviews(proto::ListReviewsRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable);
    assert!(err.message().contains("TOLLGATE_ADMIN_TOKEN"));
}

#[tokio::test]
async fn every_admin_call_works_with_the_token() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let mut admin = app.admin();
    // A failed event and a review to work with.
    let bad = crate::stripe::envelope(
        "evt_adm_bad",
        "customer.subscription.updated",
        now(),
        Shape::Basil,
        serde_json::json!({"object": "subscription", "id": "sub_adm", "customer": "cus_adm", "status": "active"}),
    );
    assert_eq!(app.deliver(&bad).await, "failed");
    // The object is re-read from Stripe at once; Stripe has none yet.
    let note = app.review_note("evt_adm_bad", "unknown_shape").await;
    assert!(note.contains("refresh failed"), "{note}");
    let sub = Sub::new("sub_adm", "cus_adm", "active", now() + DAY);
    app.stripe
        .put_subscription(subscription_object(&sub, Shape::Basil));

    let reviews = admin
        .list_reviews(proto::ListReviewsRequest {
            subject: "cus_adm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .reviews;
    assert_eq!(reviews.len(), 1);
    let event = admin
        .get_event(proto::GetEventRequest {
            id: "evt_adm_bad".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        (event.outcome.as_str(), event.source.as_str()),
        ("failed", "webhook")
    );
    assert!(event.error.contains("current_period_end"));
    let err = admin
        .get_event(proto::GetEventRequest {
            id: "evt_never".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);

    let replayed = admin
        .replay_event(proto::ReplayEventRequest {
            id: "evt_adm_bad".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        replayed.outcome, "failed",
        "the same code fails the same way"
    );
    assert!(replayed.processed_at_ms >= event.processed_at_ms);
    // The replay's failure re-reads the subscription too; Stripe has it
    // now, so that read links it (and queues a notification).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !app.access_for_customer("cus_adm").await.has_access {
        assert!(
            Instant::now() < deadline,
            "the replay's re-read never landed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let ok = subscription_event(
        "evt_adm_ok",
        "customer.subscription.created",
        now() - 5,
        &sub,
        Shape::Basil,
    );
    app.deliver(&ok).await;
    let err = admin
        .replay_event(proto::ReplayEventRequest {
            id: "evt_adm_ok".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);

    let refreshed = admin
        .refresh_subject(proto::RefreshSubjectRequest {
            customer_id: "cus_adm".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(refreshed.subscriptions_refreshed, 1);
    assert!(refreshed.access.unwrap().has_access);
    let err = admin
        .refresh_subject(proto::RefreshSubjectRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);

    let resolved = admin
        .resolve_review(proto::ResolveReviewRequest {
            id: reviews[0].id,
            note: "checked".into(),
            action: proto::ResolveAction::Refresh as i32,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(
        resolved.resolution.contains("stripe says active"),
        "{}",
        resolved.resolution
    );
    let err = admin
        .resolve_review(proto::ResolveReviewRequest {
            id: reviews[0].id,
            note: String::new(),
            action: proto::ResolveAction::Accept as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(
        err.code(),
        tonic::Code::FailedPrecondition,
        "already resolved"
    );

    let report = admin
        .reconcile(proto::ReconcileRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(report.swept);

    // Acknowledge what the re-reads above queued, then queue one more.
    let earlier = admin
        .list_notifications(proto::ListNotificationsRequest {
            cursor: 0,
            limit: 10,
            include_acked: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(earlier
        .notifications
        .iter()
        .all(|n| n.customer_id == "cus_adm"));
    admin
        .ack_notifications(proto::AckNotificationsRequest {
            ids: earlier.notifications.iter().map(|n| n.id).collect(),
        })
        .await
        .unwrap();
    queue_one_notification(&app).await;
    let listed = admin
        .list_notifications(proto::ListNotificationsRequest {
            cursor: 0,
            limit: 10,
            include_acked: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.notifications.len(), 1);
    let id = listed.notifications[0].id;
    assert_eq!(listed.next_cursor, id);
    let acked = admin
        .ack_notifications(proto::AckNotificationsRequest {
            ids: vec![id, id, 999],
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.acked, 1);
    let after = admin
        .list_notifications(proto::ListNotificationsRequest {
            cursor: 0,
            limit: 10,
            include_acked: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(after.notifications.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_round_trips_against_a_running_server() {
    let app = spawn_app_on(Backend::Sqlite).await;
    let bad = crate::stripe::envelope(
        "evt_cli",
        "customer.subscription.updated",
        now(),
        Shape::Basil,
        serde_json::json!({"object": "subscription", "id": "sub_cli", "customer": "cus_cli", "status": "active"}),
    );
    app.deliver(&bad).await;
    let addr = format!("http://{}", app.grpc_addr);
    let run = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["admin", "--addr", &addr])
            .args(args)
            .env("TOLLGATE_ADMIN_TOKEN", crate::helpers::ADMIN_TOKEN)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = tokio::task::block_in_place(|| run(&["reviews", "list"]));
    assert!(ok, "{err}");
    assert!(
        out.starts_with("ID") && out.contains("unknown_shape") && out.contains("cus_cli"),
        "{out}"
    );
    let (ok, out, _) = tokio::task::block_in_place(|| run(&["--json", "event", "get", "evt_cli"]));
    assert!(ok);
    let event: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(event["outcome"], "failed");
    assert!(event["received_at_ms"].is_i64(), "raw numbers in JSON");
    let (ok, out, _) = tokio::task::block_in_place(|| run(&["event", "get", "evt_cli"]));
    let received = tollgate::clock::rfc3339(event["received_at_ms"].as_i64().unwrap() / 1000);
    assert!(ok && out.contains(&received), "RFC 3339 in tables: {out}");
    let (ok, out, _) = tokio::task::block_in_place(|| run(&["reviews", "list", "--json"]));
    assert!(ok);
    let id = serde_json::from_str::<serde_json::Value>(&out).unwrap()[0]["id"]
        .as_i64()
        .unwrap();
    let (ok, out, err) = tokio::task::block_in_place(|| {
        run(&[
            "reviews",
            "resolve",
            &id.to_string(),
            "--action",
            "accept",
            "--note",
            "looked at it",
        ])
    });
    assert!(ok, "{err}");
    assert!(out.contains("accepted: looked at it"), "{out}");
    let (ok, out, _) = tokio::task::block_in_place(|| run(&["notifications", "list"]));
    assert!(ok && out.contains("next cursor: 0"), "{out}");
    // A wrong token is a clear error and a non-zero exit.
    let out = tokio::task::block_in_place(|| {
        std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["admin", "--addr", &addr, "--token", "nope", "reconcile"])
            .output()
            .unwrap()
    });
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Unauthenticated"));
}

/// A failed event replayed later goes through the same pipeline as a first
/// delivery, follow-ups included: an anomaly it finds is checked against
/// Stripe and the review keeps what Stripe said.
async fn replaying_an_anomaly_rechecks_it_with_stripe(backend: Backend) {
    let t = now();
    let clock = std::sync::Arc::new(tollgate::clock::ManualClock::at_secs(t));
    let app = crate::helpers::spawn_app_clocked(backend, clock.clone(), |c| {
        c.livemode = tollgate::livemode::Livemode::Any;
    })
    .await;
    let sub = Sub::new("sub_replay", "cus_replay", "active", t + 30 * DAY);
    let created = "customer.subscription.created";
    app.deliver(&subscription_event(
        "evt_rp_1",
        created,
        t - 60,
        &sub,
        Shape::Basil,
    ))
    .await;
    let canceled = sub.status("canceled");
    let deleted = "customer.subscription.deleted";
    app.deliver(&subscription_event(
        "evt_rp_2",
        deleted,
        t - 30,
        &canceled,
        Shape::Basil,
    ))
    .await;
    // A live event two days ahead of our clock fails...
    let mut early = subscription_event("evt_rp_3", created, t + 2 * DAY, &sub, Shape::Basil);
    early["livemode"] = serde_json::json!(true);
    assert_eq!(app.deliver(&early).await, "failed");
    // It is re-read from Stripe at once, which has nothing to say yet.
    let note = app.review_note("evt_rp_3", "unknown_shape").await;
    assert!(note.contains("refresh failed"), "{note}");
    app.stripe
        .put_subscription(subscription_object(&canceled, Shape::Basil));

    // ...and once the clock has caught up, its replay is an impossible
    // transition (canceled -> active): ignored, flagged, and re-checked.
    clock.advance_secs(3 * DAY);
    let replayed = app
        .admin()
        .replay_event(proto::ReplayEventRequest {
            id: "evt_rp_3".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.outcome, "ignored", "{replayed:?}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let outcome = loop {
        let reviews = app.store.list_reviews(true).await.unwrap();
        let review = reviews.iter().find(|r| {
            r.event_id.as_deref() == Some("evt_rp_3") && r.reason == "impossible_transition"
        });
        if let Some(outcome) = review.and_then(|r| r.refresh_outcome.clone()) {
            break outcome;
        }
        assert!(
            Instant::now() < deadline,
            "the replayed anomaly was never re-checked: {reviews:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(outcome.contains("stripe says canceled"), "{outcome}");
    assert_eq!(
        app.stripe.request_count("/v1/subscriptions/sub_replay"),
        2,
        "once after the first failure, once after the replay"
    );
}

/// A row Tollgate can't read back is a bug, not an outage: the webhook gets
/// a 500 (not a 503 Stripe would retry for days without end), nothing of it
/// is stored, and the log names the cause.
async fn a_row_the_store_cannot_decode_answers_500_and_logs_the_cause(backend: Backend) {
    use crate::helpers::{ServerProcess, TestDatabase, SECRET};
    let db = TestDatabase::create(backend).await;
    let stripe = crate::fake_stripe::FakeStripe::start().await;
    let server = ServerProcess::start(&db.url, &stripe.base_url(), &[]).await;
    let url = format!("http://{}/webhooks/stripe", server.http_addr);
    let http = reqwest::Client::new();
    let post = |body: serde_json::Value| {
        let raw = serde_json::to_vec(&body).unwrap();
        let header = tollgate::signature::header_for(SECRET, now(), &raw);
        http.post(&url)
            .header("Stripe-Signature", header)
            .body(raw)
            .send()
    };
    let sub = Sub::new("sub_corrupt", "cus_corrupt", "active", now() + DAY);
    let created = "customer.subscription.created";
    let first = subscription_event("evt_cr_1", created, now() - 60, &sub, Shape::Basil);
    assert_eq!(post(first).await.unwrap().status(), 200);

    // Someone edits the row by hand.
    let store = tollgate::store::connect(&tollgate::store::StoreOptions {
        url: db.url.clone(),
        busy_timeout: Duration::from_secs(5),
        max_connections: 1,
        writers: 1,
    })
    .await
    .unwrap();
    let sql = "UPDATE subscriptions SET status = 'bogus' WHERE id = 'sub_corrupt'";
    match backend {
        Backend::Sqlite => {
            use sqlx::{Connection, Executor};
            let mut c = sqlx::SqliteConnection::connect(&db.url).await.unwrap();
            c.execute(sql).await.unwrap();
        }
        Backend::Postgres => {
            use sqlx::{Connection, Executor};
            let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
            c.execute(sql).await.unwrap();
        }
    }
    let updated = "customer.subscription.updated";
    let second = subscription_event(
        "evt_cr_2",
        updated,
        now() - 30,
        &sub.status("past_due"),
        Shape::Basil,
    );
    let r = post(second).await.unwrap();
    assert_eq!(r.status(), 500);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "internal error; event not stored");
    assert!(
        store.get_event("evt_cr_2").await.unwrap().is_none(),
        "nothing half-done"
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let logs = server.logs.lock().unwrap().join("\n");
    assert!(
        logs.contains("Corrupt") && logs.contains("bogus"),
        "the cause is logged: {logs}"
    );
    assert_eq!(server.terminate().await, Some(0));
}
