//! How fast the reconciler applies events it finds in Stripe: the catch-up
//! rate after an outage.
//!
//! Serves `GET /v1/events` (100 a page, newest first, `created[gte]`,
//! `starting_after`) from memory with no rate limit, starts `tollgate
//! serve` (`--tollgate`) against it and the database `--database-url`,
//! lets its start-up pass finish, then adds `--events` distinct
//! `customer.subscription.updated` events over `--subs` subscriptions and
//! runs one `Admin.Reconcile` pass. The catch-up is timed from its first
//! `GET /v1/events` to the sweep's first `GET /v1/subscriptions/{id}`
//! (answered 404 here), which starts as soon as the last event is applied.
//! Prints events/s and the pass report as one JSON line.

use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use serde_json::{json, Value};
use tollgate::proto::admin_client::AdminClient;
use tollgate::proto::ReconcileRequest;
use tollgate_bench::stripe::{subscription_updated, Shape, Sub};
use tollgate_bench::{emit, now_secs};

#[derive(Parser)]
#[command(about = "Reconciler catch-up rate against an unlimited fake Stripe")]
struct Args {
    /// The tollgate binary to start.
    #[arg(long)]
    tollgate: String,
    /// TOLLGATE_DATABASE_URL for it (a fresh database).
    #[arg(long)]
    database_url: String,
    /// Events to catch up on (all distinct).
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Subscriptions they are spread over (the newest event of each
    /// applies; older ones are stale).
    #[arg(long, default_value_t = 10_000)]
    subs: usize,
    /// Tags for the JSON line, e.g. "backend=sqlite".
    #[arg(long, default_value = "")]
    tags: String,
}

/// One listed event: its id and `created`, and its JSON text, serialized
/// once up front so that the fake spends as little of the machine's two
/// vCPUs per page as a real Stripe would spend of ours (none).
struct Listed {
    id: String,
    created: i64,
    text: String,
}

/// The fake's state: the events it lists (newest first), and when the
/// measured pass first listed events and first read a subscription.
#[derive(Default)]
struct Fake {
    events: Vec<Listed>,
    measuring: bool,
    first_list: Option<Instant>,
    first_read: Option<Instant>,
}

type Shared = Arc<Mutex<Fake>>;

async fn read_subscription(State(fake): State<Shared>) -> (axum::http::StatusCode, Json<Value>) {
    let mut fake = fake.lock().unwrap();
    if fake.measuring && fake.first_read.is_none() {
        fake.first_read = Some(Instant::now());
    }
    let error = json!({"error": {"type": "invalid_request_error", "code": "resource_missing", "message": "No such subscription"}});
    (axum::http::StatusCode::NOT_FOUND, Json(error))
}

async fn list_events(
    State(fake): State<Shared>,
    Query(query): Query<Vec<(String, String)>>,
) -> ([(axum::http::header::HeaderName, &'static str); 1], String) {
    let get = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    let limit: usize = get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
    let gte: i64 = get("created[gte]")
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let mut fake = fake.lock().unwrap();
    if fake.measuring && fake.first_list.is_none() {
        fake.first_list = Some(Instant::now());
    }
    let events = &fake.events;
    let start = match get("starting_after") {
        Some(after) => events
            .iter()
            .position(|e| e.id == after)
            .map_or(events.len(), |i| i + 1),
        None => 0,
    };
    let mut matching = events[start..].iter().filter(|e| e.created >= gte);
    let data: Vec<&str> = matching
        .by_ref()
        .take(limit)
        .map(|e| e.text.as_str())
        .collect();
    let has_more = matching.next().is_some();
    let body = format!(
        r#"{{"object":"list","url":"/v1/events","has_more":{has_more},"data":[{}]}}"#,
        data.join(",")
    );
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let shared: Shared = Arc::new(Mutex::new(Fake::default()));
    let fake = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let fake_addr = fake.local_addr()?;
    let app = Router::new()
        .route("/v1/events", get(list_events))
        .route("/v1/subscriptions/{id}", get(read_subscription))
        .with_state(shared.clone());
    tokio::spawn(async move { axum::serve(fake, app).await });

    let (http, grpc) = (free_addr(), free_addr());
    let token = "reconcile-load-admin-token";
    let mut server = tokio::process::Command::new(&args.tollgate)
        .arg("serve")
        .env_clear()
        .env("TOLLGATE_DATABASE_URL", &args.database_url)
        .env("TOLLGATE_HTTP_ADDR", http.to_string())
        .env("TOLLGATE_GRPC_ADDR", grpc.to_string())
        .env("TOLLGATE_ADMIN_HTTP_ADDR", free_addr().to_string())
        .env("STRIPE_WEBHOOK_SECRET", "whsec_reconcile_load")
        .env("STRIPE_API_KEY", "sk_test_reconcile_load")
        .env("STRIPE_API_BASE", format!("http://{fake_addr}"))
        .env("TOLLGATE_STRIPE_MAX_RPS", "100000")
        .env("TOLLGATE_RECONCILE_INTERVAL", "24h")
        .env("TOLLGATE_ADMIN_TOKEN", token)
        .env("TOLLGATE_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;

    let started = Instant::now();
    let channel = loop {
        match tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))?
            .connect()
            .await
        {
            Ok(c) => break c,
            Err(_) if started.elapsed() < Duration::from_secs(30) => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    let mut admin = AdminClient::with_interceptor(channel, move |mut req: tonic::Request<()>| {
        req.metadata_mut().insert("authorization", bearer.clone());
        Ok(req)
    });
    // Waits for the start-up pass (and its sweep of an empty store).
    admin.reconcile(ReconcileRequest {}).await?;

    let now = now_secs();
    let subs = args.subs.max(1);
    let mut listed: Vec<Value> = (0..args.events)
        .map(|i| {
            let (k, round) = (i % subs, (i / subs) as i64);
            let sub = Sub {
                id: format!("sub_rl_{k}"),
                customer: format!("cus_rl_{k}"),
                status: "active",
                period_end: now + 30 * 86_400 + round,
                user_id: Some(format!("user_rl_{k}")),
                product: "prod_rl".to_owned(),
            };
            let shape = if i % 2 == 0 {
                Shape::Basil
            } else {
                Shape::Acacia
            };
            subscription_updated(&format!("evt_rl_{i}"), now - 600 + round, &sub, shape)
        })
        .collect();
    listed.sort_by_key(|e| std::cmp::Reverse(e["created"].as_i64()));
    let listed = listed
        .into_iter()
        .map(|e| Listed {
            id: e["id"].as_str().expect("an event id").to_owned(),
            created: e["created"].as_i64().expect("an event's created"),
            text: e.to_string(),
        })
        .collect();
    {
        let mut fake = shared.lock().unwrap();
        fake.events = listed;
        fake.measuring = true;
    }
    let report = admin.reconcile(ReconcileRequest {}).await?.into_inner();
    let (first_list, first_read) = {
        let fake = shared.lock().unwrap();
        (fake.first_list, fake.first_read)
    };
    let secs = match (first_list, first_read) {
        (Some(a), Some(b)) => b.duration_since(a).as_secs_f64(),
        _ => return Err("the pass listed no events or swept nothing".into()),
    };
    emit(
        &args.tags,
        json!({
            "figure": "reconcile",
            "events": args.events,
            "subs": subs,
            "seconds": secs,
            "events_per_sec": report.events_applied as f64 / secs,
            "events_seen": report.events_seen,
            "events_applied": report.events_applied,
            "events_other": report.events_other,
            "pages": report.pages,
            "errors": report.errors,
        }),
    );
    server.start_kill()?;
    Ok(())
}
