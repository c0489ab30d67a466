//! Every way a delivery can fail verification is refused with a 400 that
//! names the check, and nothing is stored.

use serde_json::json;
use tollgate::signature::{header_for, sign, Secrets};

use crate::helpers::{now, spawn_app, spawn_app_with, Backend, TestApp};
use crate::stripe::{subscription_event, Shape, Sub};

fn event(id: &str) -> Vec<u8> {
    let sub = Sub::new("sub_sig", "cus_sig", "active", now() + 86400);
    serde_json::to_vec(&subscription_event(
        id,
        "customer.subscription.created",
        now(),
        &sub,
        Shape::Basil,
    ))
    .unwrap()
}

async fn assert_refused(
    app: &TestApp,
    id: &str,
    body: Vec<u8>,
    header: Option<&str>,
    status: u16,
    message: &str,
) {
    let r = app.post_raw(body, header).await;
    assert_eq!(r.status, status, "header {header:?}: {}", r.body);
    let error = r.body["error"].as_str().unwrap_or_default();
    assert!(error.contains(message), "expected `{message}` in `{error}`");
    assert_eq!(
        app.event_count(id).await,
        0,
        "nothing may be stored for a refused delivery"
    );
    let access = app.access_for_customer("cus_sig").await;
    assert!(!access.has_access, "a refused event must have no effect");
}

#[tokio::test]
async fn each_signature_failure_is_refused_with_its_cause() {
    let app = spawn_app().await;
    let body = event("evt_sig");
    let t = now();
    let good = sign(&app.secret, t, &body);
    let table: Vec<(Option<String>, &str)> = vec![
        (None, "missing Stripe-Signature"),
        (Some("nonsense".into()), "malformed"),
        (Some(format!("v1={good}")), "malformed"),
        (Some(format!("t={t}")), "no v1 signature"),
        (Some(format!("t={t},v0={good}")), "no v1 signature"),
        (
            Some(format!("t={t},v1={}", "0".repeat(64))),
            "no signature matches",
        ),
        (
            Some(format!("t={t},v1={}", sign("whsec_wrong", t, &body))),
            "no signature matches",
        ),
        (
            Some(header_for(&app.secret, t - 301, &body)),
            "timestamp outside the tolerance",
        ),
        (
            Some(header_for(&app.secret, t + 400, &body)),
            "timestamp outside the tolerance",
        ),
    ];
    for (header, message) in table {
        assert_refused(
            &app,
            "evt_sig",
            body.clone(),
            header.as_deref(),
            400,
            message,
        )
        .await;
    }
    // A signature over other bytes does not cover this body.
    let other = header_for(&app.secret, t, b"{}");
    assert_refused(
        &app,
        "evt_sig",
        body.clone(),
        Some(&other),
        400,
        "no signature matches",
    )
    .await;

    // The same body, correctly signed, is accepted: the table above failed
    // only for the reasons it names.
    let header = header_for(&app.secret, now(), &body);
    let r = app.post_raw(body, Some(&header)).await;
    assert_eq!(r.status, 200, "{}", r.body);
}

#[tokio::test]
async fn any_configured_secret_verifies_during_rotation() {
    let app = spawn_app_with(Backend::Sqlite, |c| {
        c.secrets = Secrets::parse("whsec_new,whsec_old").unwrap();
    })
    .await;
    let t = now();
    for (i, secret) in ["whsec_old", "whsec_new"].iter().enumerate() {
        let id = format!("evt_rot_{i}");
        let body = event(&id);
        let r = app
            .post_raw(body.clone(), Some(&header_for(secret, t, &body)))
            .await;
        assert_eq!(r.status, 200, "signed with {secret}: {}", r.body);
    }
    // Stripe sends both signatures while a secret rolls; one match is enough.
    let body = event("evt_rot_both");
    let header = format!(
        "t={t},v1={},v1={}",
        sign("whsec_unknown", t, &body),
        sign("whsec_old", t, &body)
    );
    assert_eq!(app.post_raw(body, Some(&header)).await.status, 200);
    let body = event("evt_rot_none");
    let r = app
        .post_raw(body.clone(), Some(&header_for("whsec_retired", t, &body)))
        .await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn stripe_signature_test_vector_is_accepted_only_within_tolerance() {
    let body = include_bytes!("../fixtures/stripe/event_test_signature.json").to_vec();
    let header = "t=1533204620,v1=2220f87ef101a04665f11cdf770523143f875572008577fa0f20882ddb9cc3c7";
    let age = u64::try_from(now() - 1_533_204_620).unwrap();

    let strict = spawn_app_with(Backend::Sqlite, |c| {
        c.secrets = Secrets::parse("webhook_secret").unwrap()
    })
    .await;
    assert_refused(
        &strict,
        "evt_123",
        body.clone(),
        Some(header),
        400,
        "timestamp outside the tolerance",
    )
    .await;

    let lenient = spawn_app_with(Backend::Sqlite, |c| {
        c.secrets = Secrets::parse("webhook_secret").unwrap();
        c.signature_tolerance_secs = age + 100;
    })
    .await;
    let r = lenient.post_raw(body.clone(), Some(header)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.body["outcome"], "ignored",
        "a customer without user metadata links nothing"
    );
    assert_eq!(lenient.event_count("evt_123").await, 1);

    // One changed byte breaks it.
    let mut tampered = body;
    tampered[10] ^= 1;
    let r = lenient.post_raw(tampered, Some(header)).await;
    assert_eq!(r.status, 400);
}

#[tokio::test]
async fn a_verified_body_that_is_not_an_event_is_refused() {
    let app = spawn_app().await;
    let table: Vec<(Vec<u8>, &str)> = vec![
        (b"this is not json".to_vec(), "not valid JSON"),
        (
            serde_json::to_vec(&json!({"type": "x", "created": 1})).unwrap(),
            "no string `id`",
        ),
        (
            serde_json::to_vec(&json!({"id": "evt_nt", "created": 1})).unwrap(),
            "no string `type`",
        ),
        (
            serde_json::to_vec(&json!({"id": "evt_nt", "type": "x"})).unwrap(),
            "no integer `created`",
        ),
    ];
    for (body, message) in table {
        let header = header_for(&app.secret, now(), &body);
        assert_refused(&app, "evt_nt", body, Some(&header), 400, message).await;
    }
}

#[tokio::test]
async fn a_body_over_one_mebibyte_gets_413() {
    let app = spawn_app().await;
    let mut value = json!({"id": "evt_big", "type": "customer.updated", "created": now()});
    value["padding"] = json!("x".repeat(1024 * 1024));
    let body = serde_json::to_vec(&value).unwrap();
    let header = header_for(&app.secret, now(), &body);
    let r = app.post_raw(body, Some(&header)).await;
    assert_eq!(r.status, 413, "{}", r.body);
    assert_eq!(app.event_count("evt_big").await, 0);
}
