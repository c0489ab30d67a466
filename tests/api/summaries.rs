//! Feature checks from each customer's active entitlement summary
//! (`entitlements.active_entitlement_summary.updated`): the fallback when a
//! product's feature map is unknown (never read, Stripe unreachable, no
//! API key), ordered by event `created`, and re-listed through `GET
//! /v1/entitlements/active_entitlements` when the event's list is cut
//! short.

use serde_json::{json, Value};
use tollgate::proto::{self, Reason};

use crate::fake_stripe::{active_entitlement, Behavior};
use crate::helpers::{now, spawn_app_with, Backend, TestApp};
use crate::on_both_backends;
use crate::stripe::{envelope, subscription_event, Shape, Sub};

on_both_backends!(
    an_unknown_product_map_falls_back_to_the_customers_summary,
    a_summary_cut_short_is_relisted_and_not_acknowledged_while_stripe_is_down,
    an_older_summary_never_replaces_a_newer_one,
    a_summary_naming_a_feature_no_known_map_carries_has_the_maps_read_again,
    without_an_api_key_features_come_from_summaries_alone,
);

const DAY: i64 = 86_400;
const LIST: &str = "/v1/entitlements/active_entitlements";

/// A summary event for `customer` embedding `keys`, with `has_more`.
fn summary_event(id: &str, customer: &str, created: i64, keys: &[&str], has_more: bool) -> Value {
    let data: Vec<Value> = keys.iter().map(|k| active_entitlement(k)).collect();
    envelope(
        id,
        "entitlements.active_entitlement_summary.updated",
        created,
        Shape::Basil,
        json!({
            "object": "entitlements.active_entitlement_summary",
            "customer": customer,
            "entitlements": {
                "object": "list",
                "data": data,
                "has_more": has_more,
                "url": format!("/v1/customer/{customer}/entitlements"),
            },
            "livemode": false,
        }),
    )
}

/// Customer `cus_{n}` with an active subscription to `product`.
async fn subscribe(app: &TestApp, n: &str, product: &str) -> Sub {
    let sub = Sub {
        product: product.to_owned(),
        ..Sub::new(
            &format!("sub_{n}"),
            &format!("cus_{n}"),
            "active",
            now() + 30 * DAY,
        )
    };
    app.deliver(&subscription_event(
        &format!("evt_{n}"),
        "customer.subscription.created",
        now() - 100,
        &sub,
        Shape::Basil,
    ))
    .await;
    sub
}

async fn list(app: &TestApp, customer: &str) -> Vec<proto::Entitlement> {
    app.grpc
        .clone()
        .list_entitlements(proto::ListEntitlementsRequest {
            customer_id: customer.to_owned(),
            ..Default::default()
        })
        .await
        .expect("list_entitlements")
        .into_inner()
        .entitlements
}

async fn an_unknown_product_map_falls_back_to_the_customers_summary(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let sub = subscribe(&app, "sm1", "prod_new").await;
    let summary = summary_event("evt_sum1", &sub.customer, now() - 10, &["export"], false);
    assert_eq!(app.deliver(&summary).await, "applied");

    // Stripe is down: prod_new's map can't be read, the summary decides,
    // and Tollgate's policy still decides the access itself.
    app.stripe.set_behavior(Behavior::Fail500);
    let export = app.feature_for_customer(&sub.customer, "export").await;
    assert!(export.has_access, "{export:?}");
    assert_eq!(export.reason(), Reason::Active);
    assert_eq!(
        (export.subscription_id.as_str(), export.access_until),
        (sub.id.as_str(), sub.period_end)
    );
    assert!(
        export.detail.contains("active entitlement summary") && export.detail.contains("prod_new"),
        "{}",
        export.detail
    );
    let sso = app.feature_for_customer(&sub.customer, "sso").await;
    assert_eq!(sso.reason(), Reason::FeatureNotIncluded, "{sso:?}");
    let listed = list(&app, &sub.customer).await;
    let features: Vec<&str> = listed.iter().map(|e| e.feature.as_str()).collect();
    assert_eq!(features, ["export"]);
    assert_eq!(listed[0].detail, export.detail);

    // Once the map can be read, it decides: here it carries sso, not export.
    app.stripe.set_product_features("prod_new", &["sso"]);
    app.stripe.set_behavior(Behavior::Normal);
    let sso = app.feature_for_customer(&sub.customer, "sso").await;
    assert!(sso.has_access, "{sso:?}");
    assert!(
        sso.detail.contains("from product prod_new"),
        "{}",
        sso.detail
    );
    let export = app.feature_for_customer(&sub.customer, "export").await;
    assert_eq!(export.reason(), Reason::FeatureNotIncluded, "{export:?}");
}

async fn a_summary_cut_short_is_relisted_and_not_acknowledged_while_stripe_is_down(
    backend: Backend,
) {
    let app = spawn_app_with(backend, |_| {}).await;
    let sub = subscribe(&app, "sm2", "prod_new").await;
    app.stripe
        .set_active_entitlements(&sub.customer, &["audit", "export", "sso"]);
    let summary = summary_event("evt_sum2", &sub.customer, now() - 10, &["export"], true);

    // The list can't be completed now: Stripe must send it again.
    app.stripe.set_behavior(Behavior::Fail500);
    let refused = app.post_webhook(&summary).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert!(
        app.feature_for_customer(&sub.customer, "export")
            .await
            .reason()
            == Reason::FeatureNotIncluded
    );

    app.stripe.set_behavior(Behavior::Normal);
    app.stripe.reset_requests();
    assert_eq!(app.deliver(&summary).await, "applied");
    let listed_for: Vec<String> = app
        .stripe
        .requests()
        .into_iter()
        .filter(|r| r.path == LIST)
        .map(|r| r.query)
        .collect();
    assert_eq!(listed_for.len(), 1, "{listed_for:?}");
    assert!(
        listed_for[0].contains(&format!("customer={}", sub.customer)),
        "{listed_for:?}"
    );

    app.stripe.set_behavior(Behavior::Fail500);
    for feature in ["audit", "export", "sso"] {
        let a = app.feature_for_customer(&sub.customer, feature).await;
        assert!(a.has_access, "{feature}: {a:?}");
    }
    // A redelivery is a duplicate before any listing.
    app.stripe.reset_requests();
    let again = app.post_webhook(&summary).await;
    assert_eq!(
        (again.status, &again.body["duplicate"]),
        (200, &json!(true))
    );
    assert_eq!(app.stripe.request_count(LIST), 0);
}

async fn an_older_summary_never_replaces_a_newer_one(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    let sub = subscribe(&app, "sm3", "prod_new").await;
    let t = now() - 50;
    let newer = summary_event("evt_sum3b", &sub.customer, t, &["export", "sso"], false);
    let older = summary_event("evt_sum3a", &sub.customer, t - 10, &["export"], false);
    assert_eq!(app.deliver(&newer).await, "applied");
    assert_eq!(app.deliver(&older).await, "stale");
    app.stripe.set_behavior(Behavior::Fail500);
    let sso = app.feature_for_customer(&sub.customer, "sso").await;
    assert!(sso.has_access, "{sso:?}");

    // A later one does replace it, and the cached answer goes with it.
    let later = summary_event("evt_sum3c", &sub.customer, t + 10, &["export"], false);
    assert_eq!(app.deliver(&later).await, "applied");
    let sso = app.feature_for_customer(&sub.customer, "sso").await;
    assert_eq!(sso.reason(), Reason::FeatureNotIncluded, "{sso:?}");
}

async fn a_summary_naming_a_feature_no_known_map_carries_has_the_maps_read_again(backend: Backend) {
    let app = spawn_app_with(backend, |_| {}).await;
    app.stripe.set_product_features("prod_pro", &["export"]);
    let sub = subscribe(&app, "sm4", "prod_pro").await;
    let sso = app.feature_for_customer(&sub.customer, "sso").await;
    assert_eq!(sso.reason(), Reason::FeatureNotIncluded);
    let features = "/v1/products/prod_pro/features";
    assert_eq!(app.stripe.request_count(features), 1);

    // A summary that agrees with the maps changes nothing.
    let agrees = summary_event("evt_sum4a", &sub.customer, now() - 5, &["export"], false);
    assert_eq!(app.deliver(&agrees).await, "applied");
    app.feature_for_customer(&sub.customer, "sso").await;
    assert_eq!(app.stripe.request_count(features), 1);

    // sso was attached to prod_pro without a product.updated reaching us.
    app.stripe
        .set_product_features("prod_pro", &["export", "sso"]);
    let names_sso = summary_event("evt_sum4b", &sub.customer, now(), &["export", "sso"], false);
    assert_eq!(app.deliver(&names_sso).await, "applied");
    let sso = app.feature_for_customer(&sub.customer, "sso").await;
    assert!(sso.has_access, "{sso:?}");
    assert!(
        sso.detail.contains("from product prod_pro"),
        "{}",
        sso.detail
    );
    assert_eq!(app.stripe.request_count(features), 2);
}

async fn without_an_api_key_features_come_from_summaries_alone(backend: Backend) {
    let app = spawn_app_with(backend, |c| c.stripe.api_key = None).await;
    app.stripe
        .set_product_features("prod_pro", &["export", "sso"]);
    let sub = subscribe(&app, "sm5", "prod_pro").await;
    let export = app.feature_for_customer(&sub.customer, "export").await;
    assert_eq!(export.reason(), Reason::FeatureNotIncluded, "{export:?}");

    // Cut short and impossible to re-list: kept as it came, and said so.
    let summary = summary_event("evt_sum5", &sub.customer, now() - 10, &["export"], true);
    let r = app.post_webhook(&summary).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.body["outcome"], "applied");
    let export = app.feature_for_customer(&sub.customer, "export").await;
    assert!(export.has_access, "{export:?}");
    assert!(
        export.detail.contains("active entitlement summary"),
        "{}",
        export.detail
    );
    let sso = app.feature_for_customer(&sub.customer, "sso").await;
    assert_eq!(sso.reason(), Reason::FeatureNotIncluded, "{sso:?}");
    assert_eq!(
        app.stripe.requests().len(),
        0,
        "no key: Stripe is never asked"
    );
}
