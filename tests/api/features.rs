//! Feature checks (`HasAccess(feature=…)`, `ListEntitlements`) from Stripe
//! Entitlements product features, and the HTTP/JSON API that answers the
//! same over `GET /v1/access` and `GET /v1/entitlements`.

use std::sync::Arc;

use serde_json::{json, Value};
use tollgate::clock::ManualClock;
use tollgate::proto::{self, HasAccessRequest, Reason};

use crate::fake_stripe::Behavior;
use crate::helpers::{now, spawn_app_clocked, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;
use crate::stripe::{envelope, subscription_event, Shape, Sub};

on_both_backends!(
    a_feature_of_the_subscribed_product_is_granted_and_one_it_lacks_is_not_included,
    product_and_feature_combine,
    a_feature_follows_the_payment_failure_grace_to_its_exact_end,
    a_feature_keeps_stale_grace_when_stripe_is_down,
    a_held_revocation_keeps_a_feature_until_an_admin_resolves_it,
    a_product_map_is_read_once_for_a_thousand_concurrent_checks,
    a_feature_added_to_a_product_shows_after_product_updated,
    a_feature_removed_from_a_product_is_noticed_by_the_sweep,
    list_entitlements_agrees_with_has_access_for_every_feature,
    the_http_api_answers_as_grpc_does,
);

const DAY: i64 = 86_400;
const TOKEN: &str = "api-test-token";

/// A customer `n` subscribed to `product` (status, period end).
async fn subscribe(app: &TestApp, n: &str, product: &str, status: &'static str, end: i64) -> Sub {
    let sub = Sub {
        product: product.to_owned(),
        ..Sub::new(&format!("sub_{n}"), &format!("cus_{n}"), status, end)
    };
    let created = now() - 100;
    app.deliver(&subscription_event(
        &format!("evt_{n}"),
        "customer.subscription.created",
        created,
        &sub,
        Shape::Basil,
    ))
    .await;
    sub
}

fn ask(customer: &str, product: &str, feature: &str) -> HasAccessRequest {
    HasAccessRequest {
        customer_id: customer.to_owned(),
        product: product.to_owned(),
        feature: feature.to_owned(),
        ..Default::default()
    }
}

async fn a_feature_of_the_subscribed_product_is_granted_and_one_it_lacks_is_not_included(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.stripe
        .set_product_features("prod_pro", &["export", "sso"]);
    let sub = subscribe(&app, "f1", "prod_pro", "active", now() + 30 * DAY).await;

    let export = app.feature_for_customer(&sub.customer, "export").await;
    assert!(export.has_access, "{export:?}");
    assert_eq!(export.reason(), Reason::Active);
    assert_eq!(export.subscription_id, sub.id);
    assert_eq!(export.access_until, sub.period_end);
    assert!(
        export.detail.contains("feature export") && export.detail.contains("prod_pro"),
        "{}",
        export.detail
    );

    let audit = app.feature_for_customer(&sub.customer, "audit_log").await;
    assert!(!audit.has_access, "{audit:?}");
    assert_eq!(audit.reason(), Reason::FeatureNotIncluded, "{audit:?}");
    assert_eq!(audit.subscription_id, sub.id);

    // No subscription at all: not "not included", just no subscription.
    let nobody = app.feature_for_customer("cus_nobody", "export").await;
    assert_eq!(nobody.reason(), Reason::NoSubscription, "{nobody:?}");
}

async fn product_and_feature_combine(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.stripe.set_product_features("prod_basic", &["reports"]);
    app.stripe.set_product_features("prod_addon", &["export"]);
    let basic = subscribe(&app, "f2a", "prod_basic", "active", now() + 30 * DAY).await;
    // The same customer also has the add-on, on a subscription of its own.
    let both = Sub {
        product: "prod_addon".to_owned(),
        ..Sub::new("sub_f2c", &basic.customer, "active", now() + 10 * DAY)
    };
    app.deliver(&subscription_event(
        "evt_f2c",
        "customer.subscription.created",
        now() - 50,
        &both,
        Shape::Basil,
    ))
    .await;
    let answer = |product: &'static str, feature: &'static str| {
        let app = &app;
        let customer = basic.customer.clone();
        async move { app.ask(ask(&customer, product, feature)).await.unwrap() }
    };
    let a = answer("prod_addon", "export").await;
    assert!(a.has_access && a.subscription_id == "sub_f2c", "{a:?}");
    let a = answer("prod_basic", "export").await;
    assert_eq!(a.reason(), Reason::FeatureNotIncluded, "{a:?}");
    let a = answer("prod_basic", "reports").await;
    assert!(a.has_access && a.subscription_id == basic.id, "{a:?}");
}

async fn a_feature_follows_the_payment_failure_grace_to_its_exact_end(backend: Backend) {
    let t = now();
    let clock = Arc::new(ManualClock::at_secs(t));
    let app = spawn_app_clocked(backend, clock.clone(), |_| {}).await;
    app.stripe.set_product_features("prod_pro", &["export"]);
    let sub = Sub {
        product: "prod_pro".to_owned(),
        ..Sub::new("sub_fg", "cus_fg", "active", t + 30 * DAY)
    };
    let updated = "customer.subscription.updated";
    app.deliver(&subscription_event(
        "evt_fg1",
        updated,
        t - 100,
        &sub,
        Shape::Basil,
    ))
    .await;
    app.deliver(&subscription_event(
        "evt_fg2",
        updated,
        t - 50,
        &sub.status("past_due"),
        Shape::Basil,
    ))
    .await;
    // Stripe agrees, so a refresh at the end changes nothing.
    app.stripe
        .put_subscription(crate::stripe::subscription_object(
            &sub.status("past_due"),
            Shape::Basil,
        ));
    let grace_end = t - 50 + 7 * DAY;
    let a = app.feature_for_customer("cus_fg", "export").await;
    assert_eq!(
        (a.reason(), a.access_until),
        (Reason::PastDueGrace, grace_end)
    );
    clock.set_secs(grace_end - 1);
    assert!(
        app.feature_for_customer("cus_fg", "export")
            .await
            .has_access
    );
    clock.set_secs(grace_end);
    let a = app.feature_for_customer("cus_fg", "export").await;
    assert!(!a.has_access, "{a:?}");
    assert_eq!(a.reason(), Reason::PastDue, "{a:?}");
}

async fn a_feature_keeps_stale_grace_when_stripe_is_down(backend: Backend) {
    let t = now();
    let clock = Arc::new(ManualClock::at_secs(t));
    let app = spawn_app_clocked(backend, clock.clone(), |_| {}).await;
    app.stripe.set_product_features("prod_pro", &["export"]);
    let sub = Sub {
        product: "prod_pro".to_owned(),
        ..Sub::new("sub_fs", "cus_fs", "active", t + DAY)
    };
    app.deliver(&subscription_event(
        "evt_fs",
        "customer.subscription.created",
        t - 100,
        &sub,
        Shape::Basil,
    ))
    .await;
    // Learn the map while Stripe is up, then lose Stripe.
    assert!(
        app.feature_for_customer("cus_fs", "export")
            .await
            .has_access
    );
    app.stripe.set_behavior(Behavior::Fail500);
    // The period ended with no renewal seen: the renewal webhook may be
    // missing, so the feature stays under stale grace.
    clock.set_secs(t + DAY + 60);
    let a = app.feature_for_customer("cus_fs", "export").await;
    assert_eq!(a.reason(), Reason::StaleGrace, "{a:?}");
    assert!(a.has_access);
    // And it ends where HasAccess's stale grace ends.
    let plain = app.access_for_customer("cus_fs").await;
    assert_eq!(a.access_until, plain.access_until);
}

async fn a_product_map_is_read_once_for_a_thousand_concurrent_checks(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.stripe.set_product_features("prod_pro", &["export"]);
    app.stripe
        .set_behavior(Behavior::Delay(std::time::Duration::from_millis(200)));
    let sub = subscribe(&app, "f1k", "prod_pro", "active", now() + 30 * DAY).await;
    let checks = (0..1000).map(|_| app.feature_for_customer(&sub.customer, "export"));
    let answers = futures::future::join_all(checks).await;
    assert!(answers.iter().all(|a| a.has_access));
    assert_eq!(
        app.stripe.request_count("/v1/products/prod_pro/features"),
        1
    );
    // Known now: later checks don't ask again. (That the stored map
    // outlives a restart is checked in
    // a_feature_added_to_a_product_shows_after_product_updated.)
    assert!(
        app.feature_for_customer(&sub.customer, "export")
            .await
            .has_access
    );
    assert_eq!(
        app.stripe.request_count("/v1/products/prod_pro/features"),
        1
    );
}

async fn a_feature_added_to_a_product_shows_after_product_updated(backend: Backend) {
    let mut app = spawn_app_with(backend, |_| {}).await;
    app.stripe.set_product_features("prod_pro", &["export"]);
    let sub = subscribe(&app, "fu", "prod_pro", "active", now() + 30 * DAY).await;
    let sso = app.feature_for_customer(&sub.customer, "sso").await;
    assert_eq!(sso.reason(), Reason::FeatureNotIncluded);

    app.stripe
        .set_product_features("prod_pro", &["export", "sso"]);
    // Until Stripe says the product changed, the stored map stands.
    app.restart().await;
    assert!(
        !app.feature_for_customer(&sub.customer, "sso")
            .await
            .has_access
    );
    let product = json!({ "id": "prod_pro", "object": "product", "name": "Pro" });
    // Stripe dates the event when the product changed: after the map was
    // read (in the same second, here).
    let updated = envelope(
        "evt_prod_up",
        "product.updated",
        now(),
        Shape::Basil,
        product,
    );
    assert_eq!(app.deliver(&updated).await, "applied");
    let sso = app.feature_for_customer(&sub.customer, "sso").await;
    assert!(sso.has_access, "{sso:?}");
    assert_eq!(
        app.stripe.request_count("/v1/products/prod_pro/features"),
        2
    );
}

async fn list_entitlements_agrees_with_has_access_for_every_feature(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.stripe
        .set_product_features("prod_pro", &["export", "sso"]);
    app.stripe
        .set_product_features("prod_old", &["legacy", "export"]);
    let pro = subscribe(&app, "fl", "prod_pro", "active", now() + 30 * DAY).await;
    let old = Sub {
        product: "prod_old".to_owned(),
        ..Sub::new("sub_fl_old", &pro.customer, "canceled", now() - DAY)
    };
    app.deliver(&subscription_event(
        "evt_fl_old",
        "customer.subscription.deleted",
        now() - 60,
        &old,
        Shape::Basil,
    ))
    .await;
    let listed = app
        .grpc
        .clone()
        .list_entitlements(proto::ListEntitlementsRequest {
            customer_id: pro.customer.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .entitlements;
    let features: Vec<&str> = listed.iter().map(|e| e.feature.as_str()).collect();
    assert_eq!(features, ["export", "legacy", "sso"]);
    for e in &listed {
        let single = app.feature_for_customer(&pro.customer, &e.feature).await;
        assert_eq!(
            (
                e.has_access,
                e.reason,
                e.access_until,
                &e.subscription_id,
                &e.detail
            ),
            (
                single.has_access,
                single.reason,
                single.access_until,
                &single.subscription_id,
                &single.detail
            ),
            "{}",
            e.feature
        );
    }
    let legacy = listed.iter().find(|e| e.feature == "legacy").unwrap();
    assert_eq!(legacy.reason(), Reason::FeatureNotIncluded, "{legacy:?}");
}

async fn the_http_api_answers_as_grpc_does(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.api_token = Some(TOKEN.to_owned())).await;
    app.stripe.set_product_features("prod_pro", &["export"]);
    let sub = subscribe(&app, "fh", "prod_pro", "active", now() + 30 * DAY).await;
    let http = reqwest::Client::new();
    let base = format!("http://{}", app.http_addr);
    let get = |path: String, token: Option<&'static str>| {
        let mut req = http.get(format!("{base}{path}"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }
    };

    let (status, body) = get(
        format!("/v1/access?customer_id={}&feature=export", sub.customer),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let grpc = app.feature_for_customer(&sub.customer, "export").await;
    assert_eq!(
        body,
        json!({
            "has_access": grpc.has_access,
            "reason": "REASON_ACTIVE",
            "subscription_id": grpc.subscription_id,
            "status": grpc.status,
            "current_period_end": grpc.current_period_end,
            "access_until": grpc.access_until,
            "verified_at": grpc.verified_at,
            "detail": grpc.detail,
        })
    );
    let (status, body) = get(
        format!("/v1/entitlements?customer_id={}", sub.customer),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["entitlements"][0]["feature"], "export");
    assert_eq!(body["entitlements"][0]["reason"], "REASON_ACTIVE");

    // Refusals.
    let path = format!("/v1/access?customer_id={}", sub.customer);
    assert_eq!(get(path.clone(), None).await.0, 401);
    assert_eq!(get(path.clone(), Some("wrong-token")).await.0, 401);
    let (status, body) = get("/v1/access".to_owned(), Some(TOKEN)).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("user_id or customer_id"),
        "{body}"
    );
    let (status, _) = get("/v1/access?user_id=u&customer_id=c".to_owned(), Some(TOKEN)).await;
    assert_eq!(status, 400);
    let long = "x".repeat(300);
    let (status, _) = get(format!("/v1/access?user_id={long}"), Some(TOKEN)).await;
    assert_eq!(status, 400);

    // gRPC needs the token too, once one is configured.
    let mut grpc = app.grpc.clone();
    let err = grpc
        .has_access(ask(&sub.customer, "", ""))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated);
    let mut wrong = tonic::Request::new(ask(&sub.customer, "", ""));
    wrong
        .metadata_mut()
        .insert("authorization", "Bearer wrong".parse().unwrap());
    assert_eq!(
        grpc.has_access(wrong).await.unwrap_err().code(),
        tonic::Code::Unauthenticated
    );

    // Without a token the API isn't served at all.
    let open = spawn_app_with(backend, |_| {}).await;
    let resp = reqwest::get(format!(
        "http://{}/v1/access?customer_id=cus_x",
        open.http_addr
    ))
    .await
    .unwrap();
    assert_eq!(resp.status().as_u16(), 404);
}

async fn a_feature_removed_from_a_product_is_noticed_by_the_sweep(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.stripe
        .set_product_features("prod_pro", &["export", "sso"]);
    let sub = subscribe(&app, "fw", "prod_pro", "active", now() + 30 * DAY).await;
    assert!(
        app.feature_for_customer(&sub.customer, "sso")
            .await
            .has_access
    );

    // Removed in Stripe, and no product.updated reached us.
    app.stripe.set_product_features("prod_pro", &["export"]);
    assert!(
        app.feature_for_customer(&sub.customer, "sso")
            .await
            .has_access
    );
    let report = app.reconcile().await;
    assert_eq!(report.product_maps_changed, 1, "{report:?}");
    let sso = app.feature_for_customer(&sub.customer, "sso").await;
    assert_eq!(sso.reason(), Reason::FeatureNotIncluded, "{sso:?}");
    assert!(
        app.feature_for_customer(&sub.customer, "export")
            .await
            .has_access
    );
    // Unchanged maps are left alone.
    assert_eq!(app.reconcile().await.product_maps_changed, 0);
}

async fn a_held_revocation_keeps_a_feature_until_an_admin_resolves_it(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.hold_revocations = true).await;
    app.stripe.set_product_features("prod_pro", &["export"]);
    let sub = subscribe(&app, "fhold", "prod_pro", "active", now() + 20 * DAY).await;
    // The reconciler finds the cancellation a webhook never brought.
    app.stripe.push_event(subscription_event(
        "evt_fhold_2",
        "customer.subscription.deleted",
        now() - 50,
        &sub.status("canceled"),
        Shape::Basil,
    ));
    app.reconcile().await;

    let held = app.feature_for_customer(&sub.customer, "export").await;
    assert_eq!(
        (held.has_access, held.reason()),
        (true, Reason::ReviewHold),
        "{held:?}"
    );
    assert!(
        held.detail.contains("feature export from product prod_pro"),
        "{}",
        held.detail
    );
    let other = app.feature_for_customer(&sub.customer, "sso").await;
    assert_eq!(other.reason(), Reason::FeatureNotIncluded, "{other:?}");

    let review = app
        .open_review("revocation_by_reconciler", "a review holds it")
        .await;
    app.admin()
        .resolve_review(proto::ResolveReviewRequest {
            id: review.id,
            note: "confirmed".into(),
            action: proto::ResolveAction::Accept as i32,
        })
        .await
        .unwrap();
    let ended = app.feature_for_customer(&sub.customer, "export").await;
    assert_eq!(
        (ended.has_access, ended.reason()),
        (false, Reason::Canceled),
        "{ended:?}"
    );
}
