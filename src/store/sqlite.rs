//! SQLite: the embedded default. One file, WAL mode, `synchronous=FULL` so
//! that an acknowledged event survives power loss.
//!
//! All writes go through one connection: SQLite allows one writer at a time,
//! and letting several connections fight over the lock only adds busy-wait
//! tail latency. Reads use their own pool and never wait for the writer.
//!
//! [`Store`](super::Store) is implemented in `sqlite/store.rs`,
//! [`Tx`](super::Tx) in `sqlite/tx.rs`.

mod store;
mod tx;

use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::SqlitePool;

use super::{StoreError, StoreOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

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
}
