//! Webhook ingest load, and the raw-insert ceiling it is compared with.
//!
//! Default mode: builds `--events` distinct, realistic Stripe events (~60%
//! `customer.subscription.updated`, ~30% `invoice.paid`, ~10%
//! `invoice.payment_succeeded`) over `--events / 5` preloaded subscriptions,
//! signs them with `tollgate::signature::header_for`, and POSTs them with
//! `--concurrency` workers to `--url`. A signature older than 240 s is
//! redone right before sending, so long runs stay inside the 300 s
//! tolerance. With `--redeliver F`, a fraction F of the sends are
//! redeliveries, as Stripe makes them: an event this sender already had
//! acknowledged, same id and body, signed afresh; the server should answer
//! 200 `duplicate`. Prints events/s, p50/p99 and the outcomes as one JSON
//! line.
//!
//! `--raw-inserts DATABASE_URL`: inserts the same events, one row and one
//! transaction each, into an `events`-like table (`bench_raw_events`) with
//! the same concurrency and durability as the server (SQLite: WAL,
//! synchronous=FULL, one writer connection; PostgreSQL: server defaults):
//! the single-row insert ceiling for ingest.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use sha2::{Digest, Sha256};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use tollgate_bench::stripe::{generate, Generated};
use tollgate_bench::{emit, new_histogram, now_ms, now_secs, record, summary, Pacer, Rng};

#[derive(Parser)]
#[command(about = "Webhook ingest load generator and raw-insert ceiling")]
struct Args {
    /// Webhook URL, e.g. http://127.0.0.1:8080/webhooks/stripe
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/stripe")]
    url: String,
    /// The server's STRIPE_WEBHOOK_SECRET.
    #[arg(long, env = "STRIPE_WEBHOOK_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// Events to send (all distinct).
    #[arg(long, default_value_t = 10_000)]
    events: usize,
    /// Concurrent senders (HTTP/1.1 connections) or inserters.
    #[arg(short = 'c', long, default_value_t = 8)]
    concurrency: usize,
    /// Global rate limit in events/s (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Fraction (0..1) of sends that redeliver an event already
    /// acknowledged (same id and body, fresh signature). Redeliveries do
    /// not count against `--events`.
    #[arg(long, default_value_t = 0.0)]
    redeliver: f64,
    /// Preloaded users/subscriptions (`sub_{i}` wraps at this).
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// First preloaded subscription index to touch.
    #[arg(long, default_value_t = 0)]
    sub_offset: u64,
    /// Subscriptions the events are spread over (default: events / 5).
    #[arg(long)]
    subs: Option<usize>,
    /// Event id prefix; must differ between runs against one database.
    #[arg(long)]
    prefix: Option<String>,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Insert the events into `bench_raw_events` in this database instead
    /// of sending them.
    #[arg(long)]
    raw_inserts: Option<String>,
    /// Stop handing out events after this long (0 = send them all); the
    /// rate is computed over what was sent.
    #[arg(long, default_value = "0", value_parser = tollgate_bench::parse_duration)]
    max_duration: Duration,
    /// Raw mode, PostgreSQL: pool size (default: the concurrency).
    #[arg(long)]
    pool: Option<u32>,
    /// Tags added to the JSON result line.
    #[arg(long, default_value = "section=ingest")]
    tags: String,
}

fn deadline(start: Instant, max: Duration) -> Option<Instant> {
    (!max.is_zero()).then(|| start + max)
}

struct Signed {
    body: Bytes,
    header: String,
    signed_at: i64,
}

#[derive(Default)]
struct Counts {
    applied: AtomicU64,
    stale: AtomicU64,
    ignored: AtomicU64,
    failed: AtomicU64,
    duplicate: AtomicU64,
    non_200: AtomicU64,
    errors: AtomicU64,
    redelivered: AtomicU64,
}

fn load(c: &AtomicU64) -> u64 {
    c.load(Ordering::Relaxed)
}

async fn send(
    args: &Args,
    events: Vec<Generated>,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let secret = args
        .secret
        .clone()
        .ok_or("--secret or STRIPE_WEBHOOK_SECRET is required")?;
    let now = now_secs();
    let signed: Arc<Vec<Signed>> = Arc::new(
        events
            .into_iter()
            .map(|e| Signed {
                header: tollgate::signature::header_for(&secret, now, &e.body),
                body: Bytes::from(e.body),
                signed_at: now,
            })
            .collect(),
    );
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(args.concurrency.max(1))
        .timeout(Duration::from_secs(30))
        .build()?;
    let next = Arc::new(AtomicU64::new(0));
    let counts = Arc::new(Counts::default());
    let pacer = (args.rate > 0.0).then(|| Arc::new(Pacer::new(args.rate)));
    let secret = Arc::new(secret);
    let start = Instant::now();
    let stop_at = deadline(start, args.max_duration);
    let redeliver = args.redeliver.clamp(0.0, 1.0);
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency.max(1) {
        let mut rng = Rng::new(args.seed.wrapping_mul(1_000_003) + worker as u64);
        let (client, signed, next, counts, pacer, secret, url) = (
            client.clone(),
            signed.clone(),
            next.clone(),
            counts.clone(),
            pacer.clone(),
            secret.clone(),
            args.url.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut h = new_histogram();
            // Events this sender had acknowledged: the redelivery pool. Each
            // sender redelivers only its own, so one event is never in
            // flight twice at once.
            let mut acknowledged: Vec<usize> = Vec::new();
            loop {
                let again = !acknowledged.is_empty() && rng.unit() < redeliver;
                let i = if again {
                    acknowledged[rng.below(acknowledged.len() as u64) as usize]
                } else {
                    next.fetch_add(1, Ordering::Relaxed) as usize
                };
                let Some(ev) = signed.get(i) else { break };
                if let Some(p) = &pacer {
                    p.wait().await;
                }
                if stop_at.is_some_and(|t| Instant::now() >= t) {
                    break;
                }
                if again {
                    counts.redelivered.fetch_add(1, Ordering::Relaxed);
                }
                let now = now_secs();
                let header = if again || now - ev.signed_at > 240 {
                    tollgate::signature::header_for(&secret, now, &ev.body)
                } else {
                    ev.header.clone()
                };
                let sent = Instant::now();
                let result = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("stripe-signature", header)
                    .body(ev.body.clone())
                    .send()
                    .await;
                let response = match result {
                    Ok(r) => r,
                    Err(_) => {
                        counts.errors.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                let status = response.status();
                let body = response.bytes().await.unwrap_or_default();
                let took = sent.elapsed();
                if !status.is_success() {
                    counts.non_200.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                record(&mut h, took);
                if !again {
                    acknowledged.push(i);
                }
                let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                let counter = if v["duplicate"] == true {
                    &counts.duplicate
                } else {
                    match v["outcome"].as_str() {
                        Some("applied") => &counts.applied,
                        Some("stale") => &counts.stale,
                        Some("ignored") => &counts.ignored,
                        _ => &counts.failed,
                    }
                };
                counter.fetch_add(1, Ordering::Relaxed);
            }
            h
        }));
    }
    let mut h = new_histogram();
    for t in tasks {
        h.add(t.await?)?;
    }
    let secs = start.elapsed().as_secs_f64();
    let mut out = summary(&h, secs);
    out["outcomes"] = serde_json::json!({
        "applied": load(&counts.applied),
        "stale": load(&counts.stale),
        "ignored": load(&counts.ignored),
        "failed": load(&counts.failed),
        "duplicate": load(&counts.duplicate),
    });
    out["non_200"] = load(&counts.non_200).into();
    out["errors"] = load(&counts.errors).into();
    out["redelivered"] = load(&counts.redelivered).into();
    Ok(out)
}

const RAW_TABLE_SQLITE: &str = "CREATE TABLE IF NOT EXISTS bench_raw_events (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, created INTEGER NOT NULL,
    livemode INTEGER NOT NULL, api_version TEXT, payload TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL, source TEXT NOT NULL, received_at_ms INTEGER NOT NULL,
    processed_at_ms INTEGER, outcome TEXT NOT NULL, error TEXT);
    CREATE INDEX IF NOT EXISTS bench_raw_events_created ON bench_raw_events (created);
    CREATE INDEX IF NOT EXISTS bench_raw_events_outcome ON bench_raw_events (outcome);";

const RAW_TABLE_PG: &str = "CREATE TABLE IF NOT EXISTS bench_raw_events (
    id TEXT PRIMARY KEY, type TEXT NOT NULL, created BIGINT NOT NULL,
    livemode BOOLEAN NOT NULL, api_version TEXT, payload TEXT NOT NULL,
    payload_sha256 TEXT NOT NULL, source TEXT NOT NULL, received_at_ms BIGINT NOT NULL,
    processed_at_ms BIGINT, outcome TEXT NOT NULL, error TEXT);
    CREATE INDEX IF NOT EXISTS bench_raw_events_created ON bench_raw_events (created);
    CREATE INDEX IF NOT EXISTS bench_raw_events_outcome ON bench_raw_events (outcome);";

const RAW_INSERT: &str = "INSERT INTO bench_raw_events \
    (id, type, created, livemode, api_version, payload, payload_sha256, source, received_at_ms, outcome) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, 'webhook', $8, 'applied')";

struct RawRow {
    id: String,
    event_type: &'static str,
    created: i64,
    payload: String,
}

/// One transaction per row: BEGIN, INSERT, COMMIT, from `concurrency`
/// workers. A macro because the two pools are different types.
macro_rules! insert_all {
    ($pool:expr, $rows:expr, $concurrency:expr, $pacer:expr, $max:expr) => {{
        let rows = Arc::new($rows);
        let next = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let start = Instant::now();
        let stop_at = deadline(start, $max);
        let mut tasks = Vec::new();
        for _ in 0..$concurrency.max(1) {
            let (pool, rows, next, errors, pacer) = (
                $pool.clone(),
                rows.clone(),
                next.clone(),
                errors.clone(),
                $pacer.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut h = new_histogram();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                    let Some(r) = rows.get(i) else { break };
                    if let Some(p) = &pacer {
                        p.wait().await;
                    }
                    if stop_at.is_some_and(|t| Instant::now() >= t) {
                        break;
                    }
                    let sent = Instant::now();
                    let sha = hex::encode(Sha256::digest(r.payload.as_bytes()));
                    let result: Result<(), sqlx::Error> = async {
                        let mut tx = pool.begin().await?;
                        sqlx::query(RAW_INSERT)
                            .bind(r.id.as_str())
                            .bind(r.event_type)
                            .bind(r.created)
                            .bind(false)
                            .bind("2025-03-31.basil")
                            .bind(r.payload.as_str())
                            .bind(sha)
                            .bind(now_ms())
                            .execute(&mut *tx)
                            .await?;
                        tx.commit().await
                    }
                    .await;
                    match result {
                        Ok(()) => record(&mut h, sent.elapsed()),
                        Err(e) => {
                            if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                                eprintln!("raw insert failed: {e}");
                            }
                        }
                    }
                }
                h
            }));
        }
        let mut h = new_histogram();
        for t in tasks {
            h.add(t.await?)?;
        }
        (
            h,
            errors.load(Ordering::Relaxed),
            start.elapsed().as_secs_f64(),
        )
    }};
}

async fn raw_inserts(
    args: &Args,
    url: &str,
    events: Vec<Generated>,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    let rows: Vec<RawRow> = events
        .into_iter()
        .map(|e| RawRow {
            id: e.id,
            event_type: e.event_type,
            created: e.created,
            payload: String::from_utf8(e.body).expect("json is utf-8"),
        })
        .collect();
    let pacer = (args.rate > 0.0).then(|| Arc::new(Pacer::new(args.rate)));
    let (h, errors, secs, backend) = if url.starts_with("sqlite:") {
        let connect = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5));
        // One writer connection, as in the server.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(connect)
            .await?;
        sqlx::raw_sql(RAW_TABLE_SQLITE).execute(&pool).await?;
        let (h, e, s) = insert_all!(pool, rows, args.concurrency, pacer, args.max_duration);
        (h, e, s, "sqlite")
    } else {
        let pool = PgPoolOptions::new()
            .max_connections(args.pool.unwrap_or(args.concurrency.max(1) as u32))
            .test_before_acquire(false)
            .connect_with(PgConnectOptions::from_str(url)?)
            .await?;
        sqlx::raw_sql(RAW_TABLE_PG).execute(&pool).await?;
        let (h, e, s) = insert_all!(pool, rows, args.concurrency, pacer, args.max_duration);
        (h, e, s, "postgres")
    };
    let mut out = summary(&h, secs);
    out["errors"] = errors.into();
    out["raw_backend"] = backend.into();
    Ok(out)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let prefix = args
        .prefix
        .clone()
        .unwrap_or_else(|| format!("{:x}", tollgate_bench::now_ns()));
    let subs = args.subs.unwrap_or(args.events / 5).max(1);
    let events = generate(
        args.events,
        subs,
        args.sub_offset,
        args.users,
        &prefix,
        now_secs(),
        args.seed,
    );
    let avg_body = events.iter().map(|e| e.body.len()).sum::<usize>() / events.len().max(1);
    let mut out = match &args.raw_inserts {
        Some(url) => raw_inserts(&args, url, events).await?,
        None => send(&args, events).await?,
    };
    out["events"] = args.events.into();
    out["subs"] = subs.into();
    out["concurrency"] = args.concurrency.into();
    out["target_rate"] = args.rate.into();
    out["redeliver"] = args.redeliver.into();
    out["avg_body_bytes"] = avg_body.into();
    emit(&args.tags, out);
    Ok(())
}
