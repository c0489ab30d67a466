//! What cached subjects cost in memory: fills a `SubjectCache` from a
//! preloaded database exactly as HasAccess does on a miss (ticket, store
//! read, insert), for `user_0` .. `user_{N-1}`, and prints the process's
//! resident memory before and after as one JSON line, with the cache's own
//! weighed estimate beside it so `weigh()` can be checked against RSS.
//!
//! ```sh
//! preload --database-url sqlite:///tmp/t.db --users 100000
//! cache-rss --database-url sqlite:///tmp/t.db --users 100000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use tollgate::cache::SubjectCache;
use tollgate::store::StoreOptions;
use tollgate::subject::Subject;

#[derive(Parser)]
#[command(about = "Resident memory per cached subject, filled as HasAccess fills it")]
struct Args {
    /// sqlite://PATH or postgres://USER@HOST/DB, preloaded by `preload`.
    #[arg(long)]
    database_url: String,
    /// Users to cache (`user_0` ..).
    #[arg(long, default_value_t = 100_000)]
    users: u64,
    /// Concurrent loading tasks (on a multi-threaded runtime, like the
    /// server's).
    #[arg(short = 'c', long, default_value_t = 4)]
    concurrency: u64,
    /// Tags added to the JSON result line.
    #[arg(long, default_value = "section=cache_rss")]
    tags: String,
}

/// A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`).
fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':').map(str::to_owned))
        })
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let store = tollgate::store::connect(&StoreOptions {
        url: args.database_url.clone(),
        busy_timeout: Duration::from_secs(5),
        max_connections: 8,
        writers: 1,
    })
    .await?;
    // No eviction, no expiry: every subject stays.
    let cache = Arc::new(SubjectCache::new(
        1 << 40,
        Duration::from_secs(3600),
        Duration::from_secs(3600),
    ));
    // Warm the store's connections and statement caches first, so the
    // figure is what the cached subjects add.
    for i in 0..args.concurrency.min(args.users) {
        store.subscriptions_for_user(&format!("user_{i}")).await?;
    }
    let before_kb = status_kb("VmRSS");
    let started = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let found = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency.max(1) {
        let (store, cache, next, found) =
            (store.clone(), cache.clone(), next.clone(), found.clone());
        let users = args.users;
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= users {
                    return Ok::<_, tollgate::store::StoreError>(());
                }
                let subject = Subject::User(format!("user_{i}"));
                let ticket = cache.ticket(&subject);
                let Subject::User(id) = &subject else {
                    unreachable!()
                };
                let records = store.subscriptions_for_user(id).await?;
                found.fetch_add(records.len() as u64, Ordering::Relaxed);
                cache.insert(subject, ticket, tollgate::compact::from_records(&records));
            }
        }));
    }
    for t in tasks {
        t.await??;
    }
    let fill_secs = started.elapsed().as_secs_f64();
    let weighed = cache.weighted_bytes();
    let after_kb = status_kb("VmRSS");
    let added = after_kb.saturating_sub(before_kb) * 1024;
    let n = args.users.max(1);
    tollgate_bench::emit(
        &args.tags,
        serde_json::json!({
            "users": args.users,
            "records": found.load(Ordering::Relaxed),
            "fill_seconds": (fill_secs * 1000.0).round() / 1000.0,
            "before_kb": before_kb,
            "vmrss_kb": after_kb,
            "vmhwm_kb": status_kb("VmHWM"),
            "rss_bytes_per_subject": added / n,
            "weighed_bytes_per_subject": weighed / n,
        }),
    );
    Ok(())
}
