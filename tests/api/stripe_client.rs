//! The Stripe API client against a Stripe-compatible server: retries as the
//! SDKs do, and never exceeds its rate limit.

use std::time::Duration;

use tollgate::stripe::{StripeClient, StripeError, StripeOptions};

use crate::fake_stripe::{Behavior, FakeStripe};
use crate::helpers::now;
use crate::stripe::{subscription_object, Shape, Sub};

async fn client(max_rps: u32) -> (FakeStripe, StripeClient) {
    let fake = FakeStripe::start().await;
    fake.put_subscription(subscription_object(
        &Sub::new("sub_c", "cus_c", "active", now() + 86400),
        Shape::Basil,
    ));
    let client = StripeClient::new(&StripeOptions {
        base_url: fake.base_url(),
        api_key: Some("sk_test_client".into()),
        max_rps,
        request_timeout: Duration::from_secs(5),
        max_retries: 2,
    })
    .expect("a key makes a client");
    (fake, client)
}

#[tokio::test]
async fn server_errors_and_conflicts_are_retried_until_they_succeed() {
    for status in [500, 503, 409] {
        let (fake, client) = client(100).await;
        fake.set_behavior(Behavior::FailTimes { n: 2, status });
        let sub = client
            .subscription("sub_c")
            .await
            .expect("third try succeeds");
        assert_eq!(sub["id"], "sub_c");
        assert_eq!(
            fake.request_count("/v1/subscriptions/sub_c"),
            3,
            "status {status}"
        );
    }
}

#[tokio::test]
async fn a_rate_limit_is_retried_only_when_stripe_says_so() {
    let (fake, client) = client(100).await;
    fake.set_behavior(Behavior::RateLimited { should_retry: None });
    let err = client.subscription("sub_c").await.unwrap_err();
    assert!(
        matches!(err, StripeError::Status { status: 429, .. }),
        "{err}"
    );
    assert_eq!(fake.requests().len(), 1);

    fake.reset_requests();
    fake.set_behavior(Behavior::RateLimited {
        should_retry: Some(true),
    });
    assert!(client.subscription("sub_c").await.is_err());
    assert_eq!(fake.requests().len(), 3, "one try and two retries");
}

#[tokio::test]
async fn client_errors_are_not_retried() {
    let (fake, client) = client(100).await;
    assert!(matches!(
        client.subscription("sub_missing").await,
        Err(StripeError::NotFound)
    ));
    fake.set_behavior(Behavior::FailTimes { n: 1, status: 401 });
    assert!(matches!(
        client.subscription("sub_c").await,
        Err(StripeError::Status { status: 401, .. })
    ));
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn requests_carry_the_key_and_a_pinned_version() {
    let (fake, client) = client(100).await;
    client.customer_subscriptions("cus_c").await.unwrap();
    let req = &fake.requests()[0];
    assert_eq!(req.authorization.as_deref(), Some("Bearer sk_test_client"));
    assert_eq!(
        req.stripe_version.as_deref(),
        Some(tollgate::stripe::STRIPE_VERSION)
    );
    assert!(req.query.contains("status=all"), "{}", req.query);
}

#[tokio::test]
async fn the_client_never_exceeds_its_rate_limit() {
    let (fake, client) = client(5).await;
    let client = std::sync::Arc::new(client);
    let calls = (0..12).map(|_| {
        let c = client.clone();
        async move { c.subscription("sub_c").await }
    });
    for r in futures::future::join_all(calls).await {
        r.unwrap();
    }
    assert_eq!(fake.requests().len(), 12);
    assert!(
        fake.max_requests_in_any_second() <= 5,
        "{}",
        fake.max_requests_in_any_second()
    );
}

#[tokio::test]
async fn an_unreachable_stripe_is_a_transport_error() {
    let client = StripeClient::new(&StripeOptions {
        base_url: "http://127.0.0.1:9".into(),
        api_key: Some("sk_test_x".into()),
        max_rps: 100,
        request_timeout: Duration::from_millis(300),
        max_retries: 0,
    })
    .unwrap();
    assert!(matches!(
        client.subscription("sub_x").await,
        Err(StripeError::Transport(_))
    ));
}
