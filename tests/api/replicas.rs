//! Several replicas on one PostgreSQL database keep every guarantee: real
//! `tollgate serve` processes, webhooks on one, HasAccess on the other.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tollgate::proto::HasAccessRequest;
use tollgate::store::StoreOptions;

use crate::fake_stripe::FakeStripe;
use crate::helpers::{backend_ready, now, Backend, ServerProcess, TestDatabase};
use crate::receiver::Receiver;
use crate::stripe::{subscription_event, subscription_object, Shape, Sub};

async fn two_replicas(
    env: &[(&str, &str)],
) -> Option<(TestDatabase, FakeStripe, ServerProcess, ServerProcess)> {
    if !backend_ready(Backend::Postgres, "replicas").await {
        return None;
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    let stripe = FakeStripe::start().await;
    let a = ServerProcess::start(&db.url, &stripe.base_url(), env).await;
    let b = ServerProcess::start(&db.url, &stripe.base_url(), env).await;
    Some((db, stripe, a, b))
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_on_one_replica_is_seen_by_the_other_within_a_second() {
    let Some((_db, _stripe, a, b)) = two_replicas(&[]).await else {
        return;
    };
    let mut client_b = b.entitlements().await;
    let ask = HasAccessRequest {
        customer_id: "cus_rep".into(),
        ..Default::default()
    };
    let base = now() - 1000;
    let mut lags = Vec::new();
    for i in 0..200i64 {
        // B has the previous answer cached before each change.
        client_b.has_access(ask.clone()).await.unwrap();
        let period_end = now() + 86_400 + i;
        let sub = Sub::new("sub_rep", "cus_rep", "active", period_end);
        let event = subscription_event(
            &format!("evt_rep_{i}"),
            "customer.subscription.updated",
            base + i,
            &sub,
            Shape::Basil,
        );
        a.deliver(&event).await;
        let acked = Instant::now();
        loop {
            let r = client_b.has_access(ask.clone()).await.unwrap().into_inner();
            if r.current_period_end == period_end {
                break;
            }
            assert!(
                acked.elapsed() < Duration::from_secs(2),
                "change {i} not visible on B after 2 s"
            );
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        lags.push(acked.elapsed());
    }
    lags.sort();
    let (p50, p99) = (percentile(&lags, 0.5), percentile(&lags, 0.99));
    eprintln!(
        "replica propagation over {} changes: p50 {p50:?}, p99 {p99:?}, max {:?}",
        lags.len(),
        lags.last().unwrap()
    );
    assert!(p99 < Duration::from_secs(1), "p99 {p99:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_identical_deliveries_split_across_replicas_have_one_effect() {
    let Some((db, _stripe, a, b)) = two_replicas(&[]).await else {
        return;
    };
    let sub = Sub::new("sub_split", "cus_split", "active", now() + 86_400);
    let event = subscription_event(
        "evt_split",
        "customer.subscription.created",
        now(),
        &sub,
        Shape::Basil,
    );
    let posts = (0..50).map(|i| {
        let server = if i % 2 == 0 { &a } else { &b };
        server.deliver(&event)
    });
    let answers = futures::future::join_all(posts).await;
    let firsts = answers.iter().filter(|r| r["duplicate"] == false).count();
    assert_eq!(firsts, 1, "{answers:?}");
    let store = tollgate::store::connect(&StoreOptions {
        url: db.url.clone(),
        busy_timeout: Duration::from_secs(5),
        max_connections: 2,
        writers: 1,
    })
    .await
    .unwrap();
    assert_eq!(
        store.get_event("evt_split").await.unwrap().unwrap().outcome,
        "applied"
    );
    let reviews = store.list_reviews(false).await.unwrap();
    assert!(
        reviews.iter().all(|r| r.reason != "payload_mismatch"),
        "{reviews:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_reconciling_replica_hands_reconciliation_over() {
    if !backend_ready(Backend::Postgres, "replicas").await {
        return;
    }
    let db = TestDatabase::create(Backend::Postgres).await;
    // Each replica talks to its own fake Stripe, so we can tell who reconciles.
    let (stripe_a, stripe_b) = (FakeStripe::start().await, FakeStripe::start().await);
    let env = [("TOLLGATE_RECONCILE_INTERVAL", "1s")];
    let a = ServerProcess::start(&db.url, &stripe_a.base_url(), &env).await;
    let b = ServerProcess::start(&db.url, &stripe_b.base_url(), &env).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let (on_a, on_b) = (
        stripe_a.request_count("/v1/events"),
        stripe_b.request_count("/v1/events"),
    );
    assert!(
        (on_a == 0) != (on_b == 0),
        "exactly one replica reconciles: a {on_a}, b {on_b}"
    );
    let (leader, follower_stripe, _follower) = if on_a > 0 {
        (a, &stripe_b, b)
    } else {
        (b, &stripe_a, a)
    };

    leader.kill().await;
    let killed = Instant::now();
    while follower_stripe.request_count("/v1/events") == 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(3),
            "no takeover within one interval (1 s) plus slack"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("reconciler takeover after {:?}", killed.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_replicas_push_through_a_flaky_receiver_without_duplicate_attempts() {
    let receiver = Receiver::start_with(0, 3).await;
    let env = [
        ("TOLLGATE_NOTIFY_URL", receiver.url.as_str()),
        ("TOLLGATE_NOTIFY_SECRET", "whsec_notify"),
        ("TOLLGATE_NOTIFY_BACKOFF", "100ms"),
    ];
    let Some((db, stripe, a, b)) = two_replicas(&env).await else {
        return;
    };
    let count = 20;
    for i in 0..count {
        // Lapsed locally, renewed in Stripe: a check on B restores access.
        let sub = Sub::new(
            &format!("sub_fl_{i}"),
            &format!("cus_fl_{i}"),
            "active",
            now() - 60,
        );
        a.deliver(&subscription_event(
            &format!("evt_fl_{i}"),
            "customer.subscription.updated",
            now() - 30 * 86_400,
            &sub,
            Shape::Basil,
        ))
        .await;
        stripe.put_subscription(subscription_object(
            &Sub {
                period_end: now() + 86_400,
                ..sub
            },
            Shape::Basil,
        ));
    }
    let mut client_b = b.entitlements().await;
    for i in 0..count {
        let r = client_b
            .has_access(HasAccessRequest {
                customer_id: format!("cus_fl_{i}"),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(r.has_access);
    }
    let store = tollgate::store::connect(&StoreOptions {
        url: db.url.clone(),
        busy_timeout: Duration::from_secs(5),
        max_connections: 2,
        writers: 1,
    })
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let rows = loop {
        let rows = store.list_notifications(0, 1000, true).await.unwrap();
        if rows.len() == count && rows.iter().all(|n| n.acked_at_ms.is_some()) {
            break rows;
        }
        assert!(Instant::now() < deadline, "not all delivered: {rows:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut posts: HashMap<i64, (i64, i64)> = HashMap::new();
    for r in receiver.received() {
        let id = serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["id"]
            .as_i64()
            .unwrap();
        let entry = posts.entry(id).or_default();
        entry.0 += 1;
        entry.1 += i64::from(r.status == 200);
    }
    assert!(
        receiver.received().iter().any(|r| r.status != 200),
        "the receiver was flaky"
    );
    for n in &rows {
        let (attempts, ok) = posts.get(&n.id).copied().unwrap_or_default();
        assert_eq!(ok, 1, "notification {} delivered exactly once", n.id);
        assert_eq!(
            attempts, n.attempts,
            "one POST per attempt for notification {}",
            n.id
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_that_lost_its_listener_does_not_serve_stale_answers() {
    let Some((db, _stripe, a, b)) = two_replicas(&[]).await else {
        return;
    };
    let mut client_b = b.entitlements().await;
    let ask = HasAccessRequest {
        customer_id: "cus_lost".into(),
        ..Default::default()
    };
    let sub = Sub::new("sub_lost", "cus_lost", "active", now() + 86_400);
    a.deliver(&subscription_event(
        "evt_lost_1",
        "customer.subscription.created",
        now() - 100,
        &sub,
        Shape::Basil,
    ))
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        client_b
            .has_access(ask.clone())
            .await
            .unwrap()
            .into_inner()
            .has_access,
        "B caches the grant"
    );

    // Cut every LISTEN session (both replicas'). While B reconnects (with
    // backoff) it answers, then A changes state: B misses that invalidation
    // and must not answer from what it read meanwhile.
    use sqlx::{Connection, Executor};
    let mut admin = sqlx::PgConnection::connect(&db.url).await.unwrap();
    admin
        .execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND query ILIKE 'LISTEN%'")
        .await
        .unwrap();
    // B notices at once (its socket closes) and waits 250 ms to reconnect.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(
        client_b
            .has_access(ask.clone())
            .await
            .unwrap()
            .into_inner()
            .has_access
    );
    a.deliver(&subscription_event(
        "evt_lost_2",
        "customer.subscription.deleted",
        now() - 50,
        &sub.status("canceled"),
        Shape::Basil,
    ))
    .await;
    let r = client_b.has_access(ask.clone()).await.unwrap().into_inner();
    assert!(
        !r.has_access,
        "B served a cached grant while its listener was down: {r:?}"
    );

    // Once B listens again, changes still reach it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let renewed = Sub::new("sub_lost2", "cus_lost", "active", now() + 86_400);
    a.deliver(&subscription_event(
        "evt_lost_3",
        "customer.subscription.created",
        now() - 10,
        &renewed,
        Shape::Basil,
    ))
    .await;
    let deadline = Instant::now() + Duration::from_secs(1);
    while !client_b
        .has_access(ask.clone())
        .await
        .unwrap()
        .into_inner()
        .has_access
    {
        assert!(
            Instant::now() < deadline,
            "B never saw the new subscription"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
