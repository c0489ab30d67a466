//! Thin events (`v2.core.event`) on the webhook endpoint: the object they
//! point at is read from Stripe (one read), applied like an API read, and a
//! thin event and its snapshot twin count once.

use serde_json::Value;
use tollgate::proto;

use crate::fake_stripe::Behavior;
use crate::helpers::{now, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;
use crate::stripe::{
    checkout_completed, invoice_event, subscription_event, subscription_object, thin_event, Shape,
    Sub,
};

on_both_backends!(
    a_thin_subscription_update_is_applied_through_one_api_read,
    a_thin_event_arriving_after_its_snapshot_twin_is_a_duplicate_without_a_read,
    a_snapshot_event_arriving_after_its_thin_twin_is_a_duplicate,
    twins_delivered_concurrently_count_once,
    a_thin_event_of_a_type_tollgate_ignores_is_recorded_ignored_without_a_read,
    a_transient_read_failure_answers_503_and_the_retry_applies,
    a_thin_event_for_an_object_stripe_does_not_have_is_failed_and_flagged,
    a_thin_event_without_an_api_key_is_failed_then_applied_by_replay_once_a_key_is_set,
    thin_checkout_and_invoice_events_link_the_user_and_extend_the_period,
    many_thin_events_for_one_object_share_at_most_two_reads,
    a_thin_event_arriving_while_a_read_is_on_its_way_gets_a_newer_read,
);

const DAY: i64 = 86_400;
const UPDATED: &str = "customer.subscription.updated";

fn sub(n: &str, status: &'static str) -> Sub {
    Sub::new(
        &format!("sub_{n}"),
        &format!("cus_{n}"),
        status,
        now() + 30 * DAY,
    )
}

fn thin_update(id: &str, sub: &Sub, twin: Option<&str>) -> Value {
    thin_event(id, UPDATED, now() - 5, ("subscription", &sub.id), twin)
}

async fn app(backend: Backend) -> TestApp {
    spawn_app_with(backend, |_| {}).await
}

fn reads_of(app: &TestApp, sub: &Sub) -> usize {
    app.stripe
        .request_count(&format!("/v1/subscriptions/{}", sub.id))
}

async fn a_thin_subscription_update_is_applied_through_one_api_read(backend: Backend) {
    let app = app(backend).await;
    let s = sub("thin1", "active");
    app.stripe
        .put_subscription(subscription_object(&s, Shape::Basil));

    let event = thin_update("evt_thin1", &s, None);
    assert_eq!(app.deliver(&event).await, "applied");
    assert_eq!(reads_of(&app, &s), 1, "one API read");
    let access = app.access_for_customer(&s.customer).await;
    assert!(access.has_access, "{access:?}");
    assert_eq!(access.subscription_id, s.id);

    // A redelivery is a duplicate, answered without asking Stripe again.
    let again = app.post_webhook(&event).await;
    assert_eq!(
        (again.status, &again.body["duplicate"]),
        (200, &Value::Bool(true))
    );
    assert_eq!(reads_of(&app, &s), 1);
    let row = app.store.get_event("evt_thin1").await.unwrap().unwrap();
    assert_eq!(row.event_type, "v1.customer.subscription.updated");
    assert_eq!(row.outcome, "applied");
}

async fn a_thin_event_arriving_after_its_snapshot_twin_is_a_duplicate_without_a_read(
    backend: Backend,
) {
    let app = app(backend).await;
    let s = sub("twin1", "active");
    app.stripe
        .put_subscription(subscription_object(&s, Shape::Basil));
    let snapshot = subscription_event("evt_snap_twin1", UPDATED, now() - 5, &s, Shape::Basil);
    assert_eq!(app.deliver(&snapshot).await, "applied");

    let thin = thin_update("evt_thin_twin1", &s, Some("evt_snap_twin1"));
    let r = app.post_webhook(&thin).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["duplicate"], true, "{}", r.body);
    assert_eq!(reads_of(&app, &s), 0, "its twin already said it all");
    assert_eq!(app.event_count("evt_thin_twin1").await, 0);
}

async fn a_snapshot_event_arriving_after_its_thin_twin_is_a_duplicate(backend: Backend) {
    let app = app(backend).await;
    let s = sub("twin2", "active");
    app.stripe
        .put_subscription(subscription_object(&s, Shape::Basil));
    let thin = thin_update("evt_thin_twin2", &s, Some("evt_snap_twin2"));
    assert_eq!(app.deliver(&thin).await, "applied");

    // The snapshot says something else (it is older than the read): it must
    // have no effect at all.
    let past_due = s.status("past_due");
    let snapshot = subscription_event(
        "evt_snap_twin2",
        UPDATED,
        now() - 5,
        &past_due,
        Shape::Basil,
    );
    let r = app.post_webhook(&snapshot).await;
    assert_eq!(
        (r.status, &r.body["duplicate"]),
        (200, &Value::Bool(true)),
        "{}",
        r.body
    );
    assert_eq!(app.event_count("evt_snap_twin2").await, 0);
    let access = app.access_for_customer(&s.customer).await;
    assert_eq!(access.status, "active", "{access:?}");
}

async fn twins_delivered_concurrently_count_once(backend: Backend) {
    let app = app(backend).await;
    let mut posts = Vec::new();
    for round in 0..5 {
        let s = sub(&format!("race{round}"), "active");
        app.stripe
            .put_subscription(subscription_object(&s, Shape::Basil));
        let twin = format!("evt_snap_race{round}");
        let snapshot = subscription_event(&twin, UPDATED, now() - 5, &s, Shape::Basil);
        let thin = thin_update(&format!("evt_thin_race{round}"), &s, Some(&twin));
        posts.push((round, snapshot, thin));
    }
    for (round, snapshot, thin) in posts {
        let (a, b) = tokio::join!(app.post_webhook(&snapshot), app.post_webhook(&thin));
        assert_eq!((a.status, b.status), (200, 200), "{} {}", a.body, b.body);
        let firsts = [&a, &b]
            .iter()
            .filter(|r| r.body["duplicate"] == false)
            .count();
        assert_eq!(firsts, 1, "round {round}: {} / {}", a.body, b.body);
        let recorded = app.event_count(&format!("evt_snap_race{round}")).await
            + app.event_count(&format!("evt_thin_race{round}")).await;
        assert_eq!(recorded, 1, "round {round}");
    }
}

async fn a_thin_event_of_a_type_tollgate_ignores_is_recorded_ignored_without_a_read(
    backend: Backend,
) {
    let app = app(backend).await;
    let event = thin_event(
        "evt_thin_other",
        "charge.succeeded",
        now() - 5,
        ("charge", "ch_1"),
        None,
    );
    assert_eq!(app.deliver(&event).await, "ignored");
    let mut v2 = thin_event(
        "evt_thin_v2",
        "x",
        now() - 5,
        ("v2.core.account", "acct_1"),
        None,
    );
    v2["type"] = "v2.core.account.updated".into();
    assert_eq!(app.deliver(&v2).await, "ignored");
    assert!(
        app.stripe.requests().is_empty(),
        "{:?}",
        app.stripe.requests()
    );
}

async fn a_transient_read_failure_answers_503_and_the_retry_applies(backend: Backend) {
    let app = app(backend).await;
    let s = sub("flaky", "active");
    app.stripe
        .put_subscription(subscription_object(&s, Shape::Basil));
    app.stripe.set_behavior(Behavior::Fail500);
    let event = thin_update("evt_thin_flaky", &s, None);
    let r = app.post_webhook(&event).await;
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(app.event_count("evt_thin_flaky").await, 0, "nothing stored");

    app.stripe.set_behavior(Behavior::Normal);
    assert_eq!(
        app.deliver(&event).await,
        "applied",
        "the retry is a first delivery"
    );
    assert!(app.access_for_customer(&s.customer).await.has_access);
}

async fn a_thin_event_for_an_object_stripe_does_not_have_is_failed_and_flagged(backend: Backend) {
    let app = app(backend).await;
    let s = sub("gone", "active");
    let event = thin_update("evt_thin_gone", &s, None);
    assert_eq!(app.deliver(&event).await, "failed");
    let reviews = app.store.list_reviews(true).await.unwrap();
    let review = reviews
        .iter()
        .find(|r| r.event_id.as_deref() == Some("evt_thin_gone"))
        .expect("flagged");
    assert_eq!(review.reason, "thin_event_unread");
    assert!(
        review.details.contains("no such object"),
        "{}",
        review.details
    );
}

async fn a_thin_event_without_an_api_key_is_failed_then_applied_by_replay_once_a_key_is_set(
    backend: Backend,
) {
    let mut app = spawn_app_with(backend, |c| c.stripe.api_key = None).await;
    let s = sub("nokey", "active");
    app.stripe
        .put_subscription(subscription_object(&s, Shape::Basil));
    let event = thin_update("evt_thin_nokey", &s, None);
    assert_eq!(app.deliver(&event).await, "failed");
    let row = app
        .store
        .get_event("evt_thin_nokey")
        .await
        .unwrap()
        .unwrap();
    assert!(
        row.error
            .as_deref()
            .unwrap_or("")
            .contains("STRIPE_API_KEY"),
        "{row:?}"
    );
    let reviews = app.store.list_reviews(true).await.unwrap();
    assert!(
        reviews
            .iter()
            .any(|r| r.reason == "thin_event_unread"
                && r.event_id.as_deref() == Some("evt_thin_nokey")),
        "{reviews:?}"
    );
    assert!(!app.access_for_customer(&s.customer).await.has_access);
    assert!(app.stripe.requests().is_empty());

    let key = crate::helpers::STRIPE_KEY.to_owned();
    app.restart_with(|c| c.stripe.api_key = Some(key)).await;
    let replayed = app
        .admin()
        .replay_event(proto::ReplayEventRequest {
            id: "evt_thin_nokey".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(replayed.outcome, "applied", "{replayed:?}");
    assert_eq!(reads_of(&app, &s), 1);
    assert!(app.access_for_customer(&s.customer).await.has_access);
}

async fn thin_checkout_and_invoice_events_link_the_user_and_extend_the_period(backend: Backend) {
    let app = app(backend).await;
    let t = now();
    let s = Sub::new("sub_thinlife", "cus_thinlife", "active", t + DAY);
    app.stripe
        .put_subscription(subscription_object(&s, Shape::Basil));
    // What the thin events point at, as the API returns them.
    let checkout = checkout_completed("cs_x", t - 30, "user_thin", &s.customer, &s.id);
    let mut session = checkout["data"]["object"].clone();
    session["id"] = "cs_thinlife".into();
    app.stripe.put_object(session);
    let paid = invoice_event(
        "inv_thinlife",
        "invoice.paid",
        t - 10,
        &s.id,
        &s.customer,
        t + 31 * DAY,
        Shape::Basil,
    );
    let invoice = paid["data"]["object"].clone();
    let invoice_id = invoice["id"].as_str().unwrap().to_owned();
    app.stripe.put_object(invoice);

    let events = [
        thin_event(
            "evt_tl_1",
            "checkout.session.completed",
            t - 30,
            ("checkout.session", "cs_thinlife"),
            None,
        ),
        thin_event(
            "evt_tl_2",
            "customer.subscription.created",
            t - 20,
            ("subscription", &s.id),
            None,
        ),
        thin_event(
            "evt_tl_3",
            "invoice.paid",
            t - 10,
            ("invoice", &invoice_id),
            None,
        ),
    ];
    for event in &events {
        assert_eq!(app.deliver(event).await, "applied", "{}", event["type"]);
    }
    let access = app.access_for_user("user_thin").await;
    assert!(access.has_access, "{access:?}");
    assert_eq!(access.access_until, t + 31 * DAY, "the invoice's period");
}

async fn many_thin_events_for_one_object_share_at_most_two_reads(backend: Backend) {
    let app = app(backend).await;
    let s = sub("crowd", "active");
    app.stripe
        .put_subscription(subscription_object(&s, Shape::Basil));
    app.stripe
        .set_behavior(Behavior::Delay(std::time::Duration::from_millis(300)));
    let events: Vec<Value> = (0..20)
        .map(|i| thin_update(&format!("evt_thin_crowd{i}"), &s, None))
        .collect();
    let answers = futures::future::join_all(events.iter().map(|e| app.post_webhook(e))).await;
    // Events sharing one read carry the same snapshot: the first applies
    // it, the others find it already there.
    for r in &answers {
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(
            ["applied", "stale"].contains(&r.body["outcome"].as_str().unwrap()),
            "{}",
            r.body
        );
    }
    assert!(answers.iter().any(|r| r.body["outcome"] == "applied"));
    // One read in flight, and one more for everything that arrived after it
    // was sent.
    let reads = reads_of(&app, &s);
    assert!((1..=2).contains(&reads), "{reads} reads for 20 events");
}

async fn a_thin_event_arriving_while_a_read_is_on_its_way_gets_a_newer_read(backend: Backend) {
    let app = app(backend).await;
    let s = sub("inflight", "active");
    app.stripe
        .put_subscription(subscription_object(&s, Shape::Basil));
    app.stripe
        .set_behavior(Behavior::SlowAnswer(std::time::Duration::from_millis(500)));
    let first = thin_update("evt_thin_inflight1", &s, None);
    let second = thin_update("evt_thin_inflight2", &s, None);
    let (a, b) = tokio::join!(app.post_webhook(&first), async {
        // The first read is on its way when the subscription changes and
        // the second event arrives: joining that read would miss the change.
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        app.stripe
            .put_subscription(subscription_object(&s.status("past_due"), Shape::Basil));
        app.post_webhook(&second).await
    });
    assert_eq!((a.status, b.status), (200, 200), "{} {}", a.body, b.body);
    // A second read was sent for the second event (a third may follow: two
    // reads of one second that disagree are a tie, re-read to settle it).
    assert!(reads_of(&app, &s) >= 2, "{}", reads_of(&app, &s));
    let access = app.access_for_customer(&s.customer).await;
    assert_eq!(access.status, "past_due", "{access:?}");
}
