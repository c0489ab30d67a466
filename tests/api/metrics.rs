//! `/metrics` reports what the service did, by the right amounts. Runs a
//! real server process so its counters are its own.

use std::collections::BTreeMap;

use tollgate::proto::HasAccessRequest;
use tollgate::signature::header_for;

use crate::fake_stripe::FakeStripe;
use crate::helpers::{lock_table, now, Backend, ServerProcess, TestDatabase, SECRET};
use crate::stripe::{subscription_event, Shape, Sub};

/// Parses Prometheus text into (name, sorted labels) -> value.
fn parse(text: &str) -> BTreeMap<(String, String), f64> {
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let (name, labels) = match series.split_once('{') {
            Some((n, rest)) => {
                let mut labels: Vec<&str> = rest.trim_end_matches('}').split(',').collect();
                labels.sort();
                (n.to_owned(), labels.join(","))
            }
            None => (series.to_owned(), String::new()),
        };
        out.insert((name, labels), value.parse().unwrap());
    }
    out
}

fn get(m: &BTreeMap<(String, String), f64>, name: &str, labels: &str) -> f64 {
    m.get(&(name.to_owned(), labels.to_owned()))
        .copied()
        .unwrap_or(0.0)
}

/// A server process on a fresh database of `backend` and a fake Stripe (kept
/// alive by the caller), with the reconciler's timer out of the way.
async fn serve(backend: Backend) -> (TestDatabase, FakeStripe, ServerProcess) {
    let db = TestDatabase::create(backend).await;
    let stripe = FakeStripe::start().await;
    let env = [("TOLLGATE_RECONCILE_INTERVAL", "1h")];
    let server = ServerProcess::start(&db.url, &stripe.base_url(), &env).await;
    (db, stripe, server)
}

/// The server's `/metrics`, parsed.
async fn scrape(server: &ServerProcess) -> BTreeMap<(String, String), f64> {
    let url = format!("http://{}/metrics", server.http_addr);
    parse(&reqwest::get(url).await.unwrap().text().await.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_webhooks_checks_and_stripe_calls() {
    let (_db, _stripe, server) = serve(Backend::Sqlite).await;
    let http = reqwest::Client::new();
    // Let the start-up reconcile pass finish first, so it cannot race the counts.
    let started = std::time::Instant::now();
    while get(
        &scrape(&server).await,
        "tollgate_reconciler_last_run_timestamp_seconds",
        "",
    ) == 0.0
    {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the start-up pass never finished"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let url = format!("http://{}/webhooks/stripe", server.http_addr);
    let send = |body: Vec<u8>, header: String| {
        http.post(&url)
            .header("Stripe-Signature", header)
            .body(body)
            .send()
    };

    // One clock reading: the redelivery must be byte for byte the first
    // delivery (a second boundary between them made it a changed payload,
    // which opens a review).
    let t = now();
    for (i, id) in ["evt_m_1", "evt_m_2", "evt_m_1"].iter().enumerate() {
        let sub = Sub::new(&format!("sub_m_{}", i % 2), "cus_m", "active", t + 86_400);
        let body = serde_json::to_vec(&subscription_event(
            id,
            "customer.subscription.created",
            t - 10 + i as i64,
            &sub,
            Shape::Basil,
        ))
        .unwrap();
        let body = if i == 2 {
            serde_json::to_vec(&subscription_event(
                id,
                "customer.subscription.created",
                t - 10,
                &Sub::new("sub_m_0", "cus_m", "active", sub.period_end),
                Shape::Basil,
            ))
            .unwrap()
        } else {
            body
        };
        assert_eq!(
            send(body.clone(), header_for(SECRET, now(), &body))
                .await
                .unwrap()
                .status(),
            200
        );
    }
    // A type Tollgate does not act on, with a name the sender chose: the
    // label stays "other", so label values stay few whatever is sent.
    let odd = serde_json::to_vec(&serde_json::json!({
        "id": "evt_m_odd", "object": "event", "type": "made.up.type.12345",
        "created": now(), "data": {"object": {}}, "livemode": false
    }))
    .unwrap();
    assert_eq!(
        send(odd.clone(), header_for(SECRET, now(), &odd))
            .await
            .unwrap()
            .status(),
        200
    );
    let forged = b"{\"id\":\"evt_m_x\"}".to_vec();
    assert_eq!(
        send(forged.clone(), header_for("whsec_wrong", now(), &forged))
            .await
            .unwrap()
            .status(),
        400
    );

    let mut grpc = server.entitlements().await;
    for customer in ["cus_m", "cus_m", "cus_m", "cus_nobody"] {
        grpc.has_access(HasAccessRequest {
            customer_id: customer.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    }

    let text = reqwest::get(format!("http://{}/metrics", server.http_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let m = parse(&text);
    assert!(!text.contains("made.up.type"), "{text}");
    assert_eq!(
        get(
            &m,
            "tollgate_webhooks_received_total",
            "outcome=\"ignored\",type=\"other\""
        ),
        1.0,
        "{text}"
    );
    let created = "outcome=\"applied\",type=\"customer.subscription.created\"";
    assert_eq!(
        get(&m, "tollgate_webhooks_received_total", created),
        2.0,
        "{text}"
    );
    assert_eq!(
        get(
            &m,
            "tollgate_webhooks_received_total",
            "outcome=\"duplicate\",type=\"customer.subscription.created\""
        ),
        1.0
    );
    assert_eq!(
        get(
            &m,
            "tollgate_webhook_signature_failures_total",
            "cause=\"no_matching_signature\""
        ),
        1.0
    );
    assert_eq!(
        get(&m, "tollgate_has_access_total", "reason=\"active\""),
        3.0
    );
    assert_eq!(
        get(
            &m,
            "tollgate_has_access_total",
            "reason=\"no_subscription\""
        ),
        1.0
    );
    assert_eq!(
        get(&m, "tollgate_has_access_duration_seconds_count", ""),
        4.0
    );
    assert_eq!(get(&m, "tollgate_cache_misses_total", ""), 2.0);
    assert_eq!(get(&m, "tollgate_cache_hits_total", ""), 2.0);
    assert_eq!(
        get(
            &m,
            "tollgate_stripe_requests_total",
            "endpoint=\"/v1/subscriptions\",status=\"200\""
        ),
        1.0,
        "unknown customer looked up once"
    );
    assert_eq!(get(&m, "tollgate_refreshes_total", "outcome=\"ok\""), 1.0);
    assert_eq!(get(&m, "tollgate_reviews_open", ""), 0.0);
    assert!(m.contains_key(&("tollgate_notifications_queued".to_owned(), String::new())));
    assert_eq!(server.terminate().await, Some(0));
}

/// PostgreSQL, so that a test can hold every read of the subscriptions
/// table (an exclusive lock from another connection) until all the misses
/// are waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_one_subject_share_one_store_read() {
    use sqlx::Executor;
    let test = "concurrent_misses_of_one_subject_share_one_store_read";
    if !crate::helpers::backend_ready(Backend::Postgres, test).await {
        return;
    }
    let (db, _stripe, server) = serve(Backend::Postgres).await;
    let sub = Sub::new("sub_sf", "cus_sf", "active", now() + 86_400);
    server
        .deliver(&subscription_event(
            "evt_sf",
            "customer.subscription.created",
            now() - 10,
            &sub,
            Shape::Basil,
        ))
        .await;

    let mut blocker = lock_table(&db, "subscriptions").await;
    let client = server.entitlements().await;
    let asks: Vec<_> = (0..200)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .has_access(HasAccessRequest {
                        customer_id: "cus_sf".to_owned(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner()
            })
        })
        .collect();
    // Every ask has missed the cache and waits on the read (or on another's).
    wait_for_counter(&server, "tollgate_cache_misses_total", 200.0).await;
    blocker.execute("COMMIT").await.unwrap();
    for ask in asks {
        assert!(ask.await.unwrap().has_access);
    }
    let m = scrape(&server).await;
    assert_eq!(get(&m, "tollgate_cache_misses_total", ""), 200.0);
    assert_eq!(get(&m, "tollgate_subject_loads_total", ""), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_misses_of_different_subjects_share_store_reads() {
    use sqlx::Executor;
    let test = "concurrent_misses_of_different_subjects_share_store_reads";
    if !crate::helpers::backend_ready(Backend::Postgres, test).await {
        return;
    }
    let (db, _stripe, server) = serve(Backend::Postgres).await;
    const CUSTOMERS: usize = 30;
    for i in 0..CUSTOMERS {
        // Every third one canceled: each answer must be its own subject's.
        let status = if i % 3 == 0 { "canceled" } else { "active" };
        let sub = Sub::new(
            &format!("sub_b{i}"),
            &format!("cus_b{i}"),
            status,
            now() + 86_400,
        );
        server
            .deliver(&subscription_event(
                &format!("evt_b{i}"),
                "customer.subscription.updated",
                now() - 10,
                &sub,
                Shape::Basil,
            ))
            .await;
    }

    // The reads block on the lock; the misses behind them queue.
    let mut blocker = lock_table(&db, "subscriptions").await;
    let client = server.entitlements().await;
    let asks: Vec<_> = (0..CUSTOMERS)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let answer = client
                    .has_access(HasAccessRequest {
                        customer_id: format!("cus_b{i}"),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                (i, answer.has_access)
            })
        })
        .collect();
    wait_for_counter(&server, "tollgate_subject_loads_total", CUSTOMERS as f64).await;
    blocker.execute("COMMIT").await.unwrap();
    for ask in asks {
        let (i, granted) = ask.await.unwrap();
        assert_eq!(granted, i % 3 != 0, "cus_b{i} answered for itself");
    }
    let m = scrape(&server).await;
    assert_eq!(
        get(&m, "tollgate_subject_loads_total", ""),
        CUSTOMERS as f64
    );
    // One read went out before the lock was let go, with what had
    // arrived; everything that queued behind it went out as one.
    let reads = get(&m, "tollgate_subject_reads_total", "");
    assert!(
        (1.0..=2.0).contains(&reads),
        "{CUSTOMERS} misses took {reads} store reads"
    );
}

/// Waits (at most 20 s) until the server's counter `name` reaches `at_least`.
async fn wait_for_counter(server: &ServerProcess, name: &str, at_least: f64) {
    let started = std::time::Instant::now();
    while get(&scrape(server).await, name, "") < at_least {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "the asks never all arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
