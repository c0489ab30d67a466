//! The real binary: crashes mid-reconcile lose and repeat nothing, and
//! SIGTERM drains and exits 0.

use std::time::{Duration, Instant};

use tollgate::store::StoreOptions;

use crate::fake_stripe::{Behavior, FakeStripe};
use crate::helpers::{now, Backend, ServerProcess, TestDatabase};
use crate::on_both_backends;
use crate::stripe::{subscription_event, Shape, Sub};

on_both_backends!(a_crash_mid_reconcile_loses_and_repeats_nothing);

async fn a_crash_mid_reconcile_loses_and_repeats_nothing(backend: Backend) {
    let db = TestDatabase::create(backend).await;
    let stripe = FakeStripe::start().await;
    let total = 450;
    let ids: Vec<String> = (0..total).map(|i| format!("evt_crash_{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        let sub = Sub::new(
            &format!("sub_crash_{i}"),
            &format!("cus_crash_{i}"),
            "active",
            now() + 86_400,
        );
        stripe.push_event(subscription_event(
            id,
            "customer.subscription.created",
            now() - 3000 + i as i64,
            &sub,
            Shape::Basil,
        ));
    }
    stripe.set_behavior(Behavior::Delay(Duration::from_millis(400)));
    let env = [
        ("TOLLGATE_RECONCILE_INTERVAL", "1h"),
        ("TOLLGATE_STRIPE_MAX_RPS", "100"),
    ];

    // The pass starts with the process; kill it while page 4 is in flight.
    // The next page is listed while one is written, so page 3 is being
    // written then, and pages 1 and 2 are saved.
    let server = ServerProcess::start(&db.url, &stripe.base_url(), &env).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while stripe.request_count("/v1/events") < 4 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    server.kill().await;

    let store = tollgate::store::connect(&StoreOptions {
        url: db.url.clone(),
        busy_timeout: Duration::from_secs(5),
        max_connections: 2,
        writers: 1,
    })
    .await
    .unwrap();
    let saved = store
        .get_state("reconciler.events_pass")
        .await
        .unwrap()
        .expect("progress was saved per page");
    assert!(saved.contains("evt_crash_"), "{saved}");
    let mut before = 0;
    for id in &ids {
        before += usize::from(store.get_event(id).await.unwrap().is_some());
    }
    assert!(
        (200..total).contains(&before),
        "{before} events recorded before the crash"
    );

    // Restart: the pass resumes after the last saved page.
    stripe.reset_requests();
    stripe.set_behavior(Behavior::Normal);
    let server = ServerProcess::start(&db.url, &stripe.base_url(), &env).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while store
        .get_state("reconciler.events_pass")
        .await
        .unwrap()
        .is_some()
        || store
            .get_state("reconciler.events_cursor")
            .await
            .unwrap()
            .is_none()
    {
        assert!(Instant::now() < deadline, "the resumed pass never finished");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = stripe
        .requests()
        .into_iter()
        .find(|r| r.path == "/v1/events")
        .unwrap();
    assert!(
        first.query.contains("starting_after="),
        "resumed, not restarted: {}",
        first.query
    );

    for id in &ids {
        let row = store
            .get_event(id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("{id} was lost"));
        assert_eq!(
            (row.outcome.as_str(), row.source.as_str()),
            ("applied", "reconciler"),
            "{id}"
        );
    }
    let mut client = server.entitlements().await;
    let r = client
        .has_access(tollgate::proto::HasAccessRequest {
            customer_id: "cus_crash_0".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!(r.has_access);
    assert_eq!(server.terminate().await, Some(0));
}

#[tokio::test]
async fn sigterm_drains_and_exits_zero() {
    let db = TestDatabase::create(Backend::Sqlite).await;
    let stripe = FakeStripe::start().await;
    let server = ServerProcess::start(&db.url, &stripe.base_url(), &[]).await;
    let url = format!("http://{}/healthz", server.http_addr);
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    assert_eq!(server.terminate().await, Some(0));
    assert!(reqwest::get(&url).await.is_err(), "no longer listening");
}

#[tokio::test]
async fn serve_without_a_webhook_secret_exits_with_a_one_line_hint() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .arg("serve")
        .env_remove("STRIPE_WEBHOOK_SECRET")
        .env("TOLLGATE_DATABASE_URL", "sqlite::memory:")
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(
        err.contains("STRIPE_WEBHOOK_SECRET") && err.contains("export"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs() {
    use crate::helpers::{ADMIN_TOKEN, SECRET, STRIPE_KEY};
    let db = TestDatabase::create(Backend::Sqlite).await;
    let stripe = FakeStripe::start().await;
    let env = [
        ("RUST_LOG", "debug"),
        ("TOLLGATE_NOTIFY_URL", "http://127.0.0.1:9/hook"),
        ("TOLLGATE_NOTIFY_SECRET", "whsec_notify_secret_value"),
    ];
    let server = ServerProcess::start(&db.url, &stripe.base_url(), &env).await;
    // A verified webhook, a forged one, a refresh through Stripe and an admin call.
    let sub = Sub::new("sub_log", "cus_log", "active", now() - 60);
    let body = serde_json::to_vec(&subscription_event(
        "evt_log",
        "customer.subscription.updated",
        now() - 90 * 86_400,
        &sub,
        Shape::Basil,
    ))
    .unwrap();
    let url = format!("http://{}/webhooks/stripe", server.http_addr);
    let http = reqwest::Client::new();
    let header = tollgate::signature::header_for(SECRET, now(), &body);
    assert_eq!(
        http.post(&url)
            .header("Stripe-Signature", header)
            .body(body.clone())
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.post(&url)
            .header("Stripe-Signature", "t=1,v1=00")
            .body(body)
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    let mut grpc = server.entitlements().await;
    grpc.has_access(tollgate::proto::HasAccessRequest {
        customer_id: "cus_log".into(),
        ..Default::default()
    })
    .await
    .unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "admin",
            "--addr",
            &format!("http://{}", server.grpc_addr),
            "reconcile",
        ])
        .env("TOLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = server.logs.lock().unwrap().join("\n");
    assert!(logs.contains("evt_log"), "debug logs were captured");
    for secret in [SECRET, STRIPE_KEY, ADMIN_TOKEN, "whsec_notify_secret_value"] {
        assert!(!logs.contains(secret), "{secret} appeared in the logs");
    }
    assert_eq!(server.terminate().await, Some(0));
}

#[tokio::test]
async fn the_sqlite_file_is_created_in_wal_mode() {
    let app = crate::helpers::spawn_app().await;
    use sqlx::{Connection, Row};
    let mut conn = sqlx::SqliteConnection::connect(&app.db.url).await.unwrap();
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .get(0);
    assert_eq!(mode, "wal");
}
