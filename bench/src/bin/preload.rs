//! Fills a Tollgate database with `--users` active subscriptions, one per
//! user, fast: the store is opened once through `tollgate::store::connect`
//! (so migrations run exactly as `tollgate serve` runs them), then rows go in
//! as multi-row INSERTs in large transactions.
//!
//! Rows: `subscriptions` (`sub_{i}`, customer `cus_{i}`, active, period end
//! now+30d, snapshot from `evt_pre_{i}` at now-60, one item: price
//! `price_{k}` of product `prod_{k}` with lookup key `plan_{k}`, where
//! `k = i % --products`; items `[]` with `--products 0`), `customer_users`
//! (`cus_{i}` -> `user_{i}`) and `product_features` (`prod_{k}` carries
//! `bench_feature` and `feature_{k}`), so feature checks are answered from
//! the store without Stripe.

use std::str::FromStr;
use std::time::{Duration, Instant};

use clap::Parser;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};
use tollgate::store::StoreOptions;

#[derive(Parser)]
#[command(about = "Bulk-load N active subscriptions for N users into a Tollgate database")]
struct Args {
    /// sqlite://PATH or postgres://USER@HOST/DB
    #[arg(long)]
    database_url: String,
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Distinct products (and prices) the subscriptions' items cycle
    /// through; 0 gives every subscription an empty item list.
    #[arg(long, default_value_t = 10)]
    products: u64,
    /// Rows per INSERT statement.
    #[arg(long, default_value_t = 1000)]
    rows_per_statement: u64,
    /// Rows per transaction.
    #[arg(long, default_value_t = 100_000)]
    rows_per_transaction: u64,
    /// Parallel loaders (PostgreSQL only; SQLite has one writer).
    #[arg(long, default_value_t = 2)]
    jobs: u64,
    /// Tags added to the JSON result line.
    #[arg(long, default_value = "section=preload")]
    tags: String,
}

struct Batch {
    subs: String,
    links: String,
}

/// The SQL for users `from..to`. Every value is generated from integers, so
/// literal SQL is safe and skips bind overhead.
fn batch(from: u64, to: u64, now: i64, postgres: bool, products: u64) -> Batch {
    let period_end = now + 30 * 86400;
    let snapshot = now - 60;
    let updated_ms = now * 1000;
    let no = if postgres { "FALSE" } else { "0" };
    let mut subs = String::with_capacity(((to - from) * 140) as usize);
    subs.push_str(
        "INSERT INTO subscriptions (id, customer_id, status, current_period_end, paid_through, \
         trial_end, cancel_at_period_end, past_due_since, items, user_id, snapshot_created, \
         snapshot_event_id, verified_at, updated_at_ms) VALUES ",
    );
    let mut links = String::with_capacity(((to - from) * 40) as usize);
    links.push_str("INSERT INTO customer_users (customer_id, user_id, linked_at_ms) VALUES ");
    for i in from..to {
        let sep = if i == from { "" } else { "," };
        let items = item_json(i, products);
        subs.push_str(&format!(
            "{sep}('sub_{i}','cus_{i}','active',{period_end},NULL,NULL,{no},NULL,'{items}',NULL,\
             {snapshot},'evt_pre_{i}',{snapshot},{updated_ms})"
        ));
        links.push_str(&format!("{sep}('cus_{i}','user_{i}',{updated_ms})"));
    }
    Batch { subs, links }
}

/// User `i`'s subscription items, as the store keeps them (JSON).
fn item_json(i: u64, products: u64) -> String {
    if products == 0 {
        return "[]".to_owned();
    }
    let k = i % products;
    format!(r#"[{{"price_id":"price_{k}","product_id":"prod_{k}","lookup_key":"plan_{k}"}}]"#)
}

/// The feature map of every product the items name.
fn product_features(products: u64, now_ms: i64) -> Option<String> {
    let rows: Vec<String> = (0..products)
        .map(|k| format!(r#"('prod_{k}','["bench_feature","feature_{k}"]',{now_ms})"#))
        .collect();
    (!rows.is_empty()).then(|| {
        format!(
            "INSERT INTO product_features (product_id, features, read_at_ms) VALUES {}",
            rows.join(",")
        )
    })
}

async fn load_sqlite(args: &Args, now: i64) -> Result<(), Box<dyn std::error::Error>> {
    // Bulk load only: durability is restored (FULL) by the server's own
    // connections; a crash here just means re-running the preload.
    let mut conn = SqliteConnectOptions::from_str(&args.database_url)?
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Off)
        .pragma("cache_size", "-262144")
        .busy_timeout(Duration::from_secs(30))
        .connect()
        .await?;
    let mut from = 0;
    while from < args.users {
        let tx_end = (from + args.rows_per_transaction).min(args.users);
        let mut tx = conn.begin().await?;
        while from < tx_end {
            let to = (from + args.rows_per_statement).min(tx_end);
            let b = batch(from, to, now, false, args.products);
            sqlx::raw_sql(&b.subs).execute(&mut *tx).await?;
            sqlx::raw_sql(&b.links).execute(&mut *tx).await?;
            from = to;
        }
        tx.commit().await?;
    }
    if let Some(sql) = product_features(args.products, now * 1000) {
        sqlx::raw_sql(&sql).execute(&mut conn).await?;
    }
    sqlx::raw_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

async fn load_pg_range(
    url: String,
    (from, to): (u64, u64),
    per_stmt: u64,
    per_tx: u64,
    now: i64,
    products: u64,
) -> Result<(), sqlx::Error> {
    let mut conn = PgConnectOptions::from_str(&url)?
        .options([("synchronous_commit", "off")])
        .connect()
        .await?;
    let mut at = from;
    while at < to {
        let tx_end = (at + per_tx).min(to);
        let mut tx = conn.begin().await?;
        while at < tx_end {
            let end = (at + per_stmt).min(tx_end);
            let b = batch(at, end, now, true, products);
            sqlx::raw_sql(&b.subs).execute(&mut *tx).await?;
            sqlx::raw_sql(&b.links).execute(&mut *tx).await?;
            at = end;
        }
        tx.commit().await?;
    }
    conn.close().await
}

async fn load_pg(args: &Args, now: i64) -> Result<(), Box<dyn std::error::Error>> {
    let jobs = args.jobs.max(1);
    let chunk = args.users.div_ceil(jobs);
    let mut handles = Vec::new();
    for j in 0..jobs {
        let from = j * chunk;
        let to = ((j + 1) * chunk).min(args.users);
        if from >= to {
            continue;
        }
        handles.push(load_pg_range(
            args.database_url.clone(),
            (from, to),
            args.rows_per_statement,
            args.rows_per_transaction,
            now,
            args.products,
        ));
    }
    // Polled together on this task: the work is PostgreSQL's.
    futures::future::try_join_all(handles).await?;
    let mut conn = PgConnectOptions::from_str(&args.database_url)?
        .connect()
        .await?;
    if let Some(sql) = product_features(args.products, now * 1000) {
        sqlx::raw_sql(&sql).execute(&mut conn).await?;
    }
    // What autovacuum would do in the first minutes of the measurements
    // otherwise, on the same two vCPUs: statistics for the planner, hint
    // bits and the visibility map set (else the first read of each page
    // dirties it), and the load written out. One statement each: VACUUM
    // cannot run in the implicit transaction of a multi-statement string.
    for sql in [
        "VACUUM (ANALYZE) subscriptions",
        "VACUUM (ANALYZE) customer_users",
        "CHECKPOINT",
    ] {
        sqlx::raw_sql(sql).execute(&mut conn).await?;
    }
    conn.close().await?;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let postgres = args.database_url.starts_with("postgres");

    let started = Instant::now();
    let store = tollgate::store::connect(&StoreOptions {
        url: args.database_url.clone(),
        busy_timeout: Duration::from_secs(5),
        max_connections: 1,
        writers: 1,
    })
    .await?;
    drop(store);
    let migrate_secs = started.elapsed().as_secs_f64();

    let now = tollgate_bench::now_secs();
    let load_started = Instant::now();
    if postgres {
        load_pg(&args, now).await?;
    } else {
        load_sqlite(&args, now).await?;
    }
    let secs = load_started.elapsed().as_secs_f64();
    let rows = args.users * 2;
    tollgate_bench::emit(
        &args.tags,
        serde_json::json!({
            "backend": if postgres { "postgres" } else { "sqlite" },
            "users": args.users,
            "rows": rows,
            "migrate_seconds": (migrate_secs * 1000.0).round() / 1000.0,
            "seconds": (secs * 1000.0).round() / 1000.0,
            "rows_per_s": (rows as f64 / secs).round(),
        }),
    );
    Ok(())
}
