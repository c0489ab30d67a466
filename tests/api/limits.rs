//! Bounded inputs: whatever a caller sends, it gets a clear refusal and
//! costs Tollgate a bounded amount of memory.

use tollgate::livemode::Livemode;
use tollgate::proto::Reason;
use tollgate::store::StoreError;
use tonic::Code;

use crate::helpers::{backend_ready, now, spawn_app, spawn_app_on, Backend, TestApp};
use crate::on_both_backends;
use crate::stripe::{subscription_event, subscription_object, Shape, Sub};

on_both_backends!(
    values_no_database_can_store_are_refused_alike_on_both_backends,
    a_live_event_from_the_future_cannot_freeze_a_subscription,
    a_stripe_read_dated_past_year_9999_neither_panics_nor_stops_the_reconciler,
);

const DAY: i64 = 86_400;
const CREATED: &str = "customer.subscription.created";

/// A HasAccessRequest whose `user_id` (field 1) carries raw bytes, so a
/// test can send what a conforming client never would.
#[derive(Clone, PartialEq, prost::Message)]
struct RawHasAccess {
    #[prost(bytes = "vec", tag = "1")]
    user_id: Vec<u8>,
}

async fn raw_has_access(app: &TestApp, user_id: Vec<u8>) -> Result<(), tonic::Status> {
    let channel = tonic::transport::Channel::from_shared(format!("http://{}", app.grpc_addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec =
        tonic_prost::ProstCodec::<RawHasAccess, tollgate::proto::HasAccessResponse>::default();
    let path =
        tonic::codegen::http::uri::PathAndQuery::from_static("/tollgate.v1.Entitlements/HasAccess");
    grpc.unary(tonic::Request::new(RawHasAccess { user_id }), path, codec)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn oversized_ids_and_products_are_invalid_arguments() {
    let app = spawn_app().await;
    let huge = "u".repeat(60_000);
    let table = [
        (
            huge.as_str(),
            "",
            "",
            Code::InvalidArgument,
            "user_id is longer than 255 bytes",
        ),
        (
            "",
            &huge[..256],
            "",
            Code::InvalidArgument,
            "customer_id is longer than 255 bytes",
        ),
        (
            "u1",
            "",
            &huge[..256],
            Code::InvalidArgument,
            "product is longer than 255 bytes",
        ),
        (
            "u\0x",
            "",
            "",
            Code::InvalidArgument,
            "user_id contains control characters",
        ),
    ];
    for (user, customer, product, code, message) in table {
        let err = app.has_access(user, customer, product).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (code, message));
    }
    // 255 bytes is still an id.
    let answer = app.has_access(&huge[..255], "", "").await.unwrap();
    assert!(!answer.has_access);
    let metrics = app.metrics_text().await;
    for kind in ["field_too_long", "field_control_chars"] {
        let counter = format!("tollgate_inputs_refused_total{{kind=\"{kind}\"}}");
        assert!(metrics.contains(&counter), "{counter} in {metrics}");
    }
}

#[tokio::test]
async fn a_message_over_64_kib_is_refused_before_it_is_decoded() {
    let app = spawn_app().await;
    let err = raw_has_access(&app, vec![b'u'; 65 * 1024])
        .await
        .unwrap_err();
    // tonic's code for a message over the limit.
    assert_eq!(err.code(), Code::OutOfRange, "{err:?}");
    assert!(err.message().contains("too large"), "{}", err.message());
}

#[tokio::test]
async fn invalid_utf8_in_a_string_field_is_an_invalid_argument() {
    let app = spawn_app().await;
    let err = raw_has_access(&app, vec![b'u', 0xff, 0xfe])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(
        err.message().contains("not a valid message"),
        "{}",
        err.message()
    );
    // A valid request on a fresh call still works.
    assert!(raw_has_access(&app, b"user_ok".to_vec()).await.is_ok());
    let metrics = app.metrics_text().await;
    assert!(
        metrics.contains("tollgate_inputs_refused_total{kind=\"grpc_undecodable\"}"),
        "{metrics}"
    );
}

/// Values no database can store, and dates no real subscription has, are
/// refused the same way on both backends: 400 when there is not even an
/// event to record, else `failed` with a review and a 200, never a 503
/// that Stripe would retry for three days.
async fn values_no_database_can_store_are_refused_alike_on_both_backends(backend: Backend) {
    let app = spawn_app_on(backend).await;
    let t = now();
    let long_id = format!("evt_{}", "x".repeat(9 * 1024));
    let sub = Sub::new("sub_ok", "cus_ok", "active", t + 30 * DAY);
    let r = app
        .post_webhook(&subscription_event(
            &long_id,
            CREATED,
            t,
            &sub,
            Shape::Basil,
        ))
        .await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body["error"].as_str().unwrap().contains("plausible"),
        "{}",
        r.body
    );

    let nul_id = Sub::new("sub_\u{0}x", "cus_nul", "active", t + 30 * DAY);
    let nul_user = Sub {
        user_id: Some("user\u{0}".into()),
        ..Sub::new("sub_nul_user", "cus_nul_user", "active", t + 30 * DAY)
    };
    let year_10000 = Sub::new("sub_y10k", "cus_y10k", "active", 253_402_300_800);
    let cases = [
        ("evt_nul_id", &nul_id, "subscription id"),
        ("evt_nul_user", &nul_user, "user id"),
        ("evt_y10k", &year_10000, "outside 2000-01-01..2100-01-01"),
    ];
    for (id, sub, why) in cases {
        let event = subscription_event(id, CREATED, t, sub, Shape::Basil);
        assert_eq!(app.deliver(&event).await, "failed", "{id}");
        let stored = app.store.get_event(id).await.unwrap().unwrap();
        assert!(
            stored.error.as_deref().unwrap_or("").contains(why),
            "{stored:?}"
        );
        let reviews = app.store.list_reviews(true).await.unwrap();
        assert!(
            reviews.iter().any(|r| r.event_id.as_deref() == Some(id)),
            "{id} flagged: {reviews:?}"
        );
    }
    // Nothing of those was applied: the customers have no access.
    for customer in ["cus_nul", "cus_nul_user", "cus_y10k"] {
        assert!(!app.access_for_customer(customer).await.has_access);
    }
}

/// A live event dated far in the future would freeze its subscription:
/// every later real event would be `stale` behind it.
async fn a_live_event_from_the_future_cannot_freeze_a_subscription(backend: Backend) {
    let app = crate::helpers::spawn_app_with(backend, |c| c.livemode = Livemode::Live).await;
    let t = now();
    let sub = Sub::new("sub_frozen", "cus_frozen", "active", t + 30 * DAY);
    let mut future = subscription_event("evt_future", CREATED, i64::MAX, &sub, Shape::Basil);
    future["livemode"] = serde_json::json!(true);
    assert_eq!(app.deliver(&future).await, "failed");
    let mut tomorrow = subscription_event("evt_2days", CREATED, t + 2 * DAY, &sub, Shape::Basil);
    tomorrow["livemode"] = serde_json::json!(true);
    assert_eq!(app.deliver(&tomorrow).await, "failed");

    let mut created = subscription_event("evt_real_1", CREATED, t - 60, &sub, Shape::Basil);
    created["livemode"] = serde_json::json!(true);
    assert_eq!(app.deliver(&created).await, "applied");
    let mut canceled = subscription_event(
        "evt_real_2",
        "customer.subscription.deleted",
        t - 30,
        &sub.status("canceled"),
        Shape::Basil,
    );
    canceled["livemode"] = serde_json::json!(true);
    assert_eq!(app.deliver(&canceled).await, "applied");
    assert_eq!(
        app.access_for_customer("cus_frozen").await.status,
        "canceled"
    );
}

/// Stripe's API answering with a date past year 9999 used to panic inside
/// the refresh task (leaving its single-flight key forever) and the
/// reconciler (which then never ran again).
async fn a_stripe_read_dated_past_year_9999_neither_panics_nor_stops_the_reconciler(
    backend: Backend,
) {
    let app = spawn_app_on(backend).await;
    let t = now();
    let lapsed = Sub::new("sub_far", "cus_far", "active", t - 60);
    let event = subscription_event(
        "evt_far",
        "customer.subscription.updated",
        t - 30 * DAY,
        &lapsed,
        Shape::Basil,
    );
    app.deliver(&event).await;
    let far = Sub {
        period_end: 253_402_300_800,
        ..lapsed
    };
    app.stripe
        .put_subscription(subscription_object(&far, Shape::Basil));

    // Twice: the second check must not wait on a refresh that died.
    for _ in 0..2 {
        let answer = app.access_for_customer("cus_far").await;
        assert_eq!(answer.reason(), Reason::StaleGrace, "{answer:?}");
        assert!(answer.detail.contains("unreadable"), "{}", answer.detail);
    }
    for _ in 0..2 {
        let pass = app.reconcile().await;
        assert!(pass.swept && pass.errors >= 1, "{pass:?}");
    }
}

#[tokio::test]
async fn postgres_refusing_a_value_is_a_permanent_error_not_an_outage() {
    if !backend_ready(Backend::Postgres, "postgres refusing a value").await {
        return;
    }
    let db = crate::helpers::TestDatabase::create(Backend::Postgres).await;
    let store = tollgate::store::connect(&tollgate::store::StoreOptions {
        url: db.url.clone(),
        busy_timeout: std::time::Duration::from_secs(5),
        max_connections: 2,
        writers: 1,
    })
    .await
    .unwrap();
    let mut tx = store.begin().await.unwrap();
    let err = tx.link_customer("cus_\u{0}", "user", 1).await.unwrap_err();
    assert!(matches!(err, StoreError::Rejected(_)), "{err:?}");
    assert!(!err.is_transient());
    drop(tx);
    // The store works on: the refused transaction left nothing behind.
    let mut tx = store.begin().await.unwrap();
    tx.link_customer("cus_ok", "user", 1).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(store.subscriptions_for_user("user").await.unwrap().len(), 0);
}
