//! SQLite: the embedded default. One file, WAL mode, `synchronous=FULL` so
//! that an acknowledged event survives power loss.
//!
//! All writes go through one connection: SQLite allows one writer at a time,
//! and letting several connections fight over the lock only adds busy-wait
//! tail latency. Reads use their own pool and never wait for the writer.

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::rows::{impl_sql_store, notification_columns, subscription_columns};
use super::{StoreError, StoreOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// SQLite has no row locks; the single writer connection serializes every
/// write transaction, which is stronger.
const LOCK_SUBSCRIPTION: &str = concat!(
    "SELECT ",
    subscription_columns!(),
    " FROM subscriptions WHERE id = $1"
);

/// Leases due notifications for one push attempt each.
const CLAIM_NOTIFICATIONS: &str = concat!(
    "UPDATE notifications SET lease_until_ms = $2, attempts = attempts + 1 WHERE id IN \
     (SELECT id FROM notifications WHERE acked_at_ms IS NULL AND dead = 0 \
      AND next_attempt_at_ms <= $1 AND lease_until_ms <= $1 ORDER BY id LIMIT $3) RETURNING ",
    notification_columns!()
);

pub struct SqliteStore {
    /// The only connection that writes.
    writer: SqlitePool,
    /// Readers, which WAL lets run beside the writer.
    reader: SqlitePool,
}

impl SqliteStore {
    pub async fn connect(options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = SqliteConnectOptions::from_str(&options.url)
            .map_err(|_| StoreError::UnsupportedUrl("invalid sqlite url".to_owned()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.busy_timeout.max(std::time::Duration::from_secs(1)))
            .connect_with(connect.clone())
            .await?;
        MIGRATOR.run(&writer).await.map_err(StoreError::Migrate)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .test_before_acquire(false)
            .connect_with(connect.read_only(true))
            .await?;
        Ok(SqliteStore { writer, reader })
    }

    fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    fn reader(&self) -> &SqlitePool {
        &self.reader
    }
}

impl_sql_store!(
    store = SqliteStore,
    tx = SqliteTx,
    db = Sqlite,
    // IMMEDIATE takes the write lock at BEGIN, so a writer that is not
    // really the only one fails loudly here instead of at COMMIT.
    begin = "BEGIN IMMEDIATE",
    lock = LOCK_SUBSCRIPTION,
    claim = CLAIM_NOTIFICATIONS,
    // One process owns a SQLite file: its cache is invalidated in-process.
    publish = None,
    backend = "sqlite",
    store_extra = {}
);
