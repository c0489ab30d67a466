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

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, SqliteConnection, SqlitePool};

use super::lease_pool::LeasePool;
use super::{StoreError, StoreOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

pub struct SqliteStore {
    /// The only connection that writes (a lease pool of one): write
    /// transactions, single-statement writes, and the reads that must see
    /// the latest write.
    writer: LeasePool<sqlx::Sqlite>,
    /// Readers, which WAL lets run beside the writer: the console's, the
    /// sweeps' and the other occasional reads.
    reader: SqlitePool,
    /// HasAccess's reads (see [`LeasePool`]), beside the writer too.
    reads: LeasePool<sqlx::Sqlite>,
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
        // Open the file once directly: a pool would report a missing
        // directory as a bare "database unavailable".
        let mut opened = SqliteConnection::connect_with(&connect)
            .await
            .map_err(|e| open_error(connect.get_filename(), e))?;
        let migrated = MIGRATOR
            .run_direct(&mut opened)
            .await
            .map_err(StoreError::Migrate);
        let _ = opened.close().await;
        migrated?;
        let writer = LeasePool::new(
            connect.clone(),
            1,
            options.busy_timeout.max(std::time::Duration::from_secs(1)),
        );
        let connect = connect.read_only(true);
        let reads = LeasePool::new(
            connect.clone(),
            options.max_connections.max(1),
            options.busy_timeout.max(std::time::Duration::from_secs(1)),
        );
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .test_before_acquire(false)
            .connect_with(connect)
            .await?;
        Ok(SqliteStore {
            writer,
            reader,
            reads,
        })
    }
}

/// Why the file at `path` could not be opened, with the fix when it is
/// obvious: a missing directory, a directory or file this user cannot
/// write, a file that is not a SQLite database.
fn open_error(path: &Path, error: sqlx::Error) -> StoreError {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // The primary result code is the low byte of the extended one.
    let code = match &error {
        sqlx::Error::Database(db) => db
            .code()
            .and_then(|c| c.parse::<i32>().ok())
            .map(|c| c & 0xff),
        _ => None,
    };
    let hint = match code {
        // SQLITE_CANTOPEN
        Some(14) if !dir.is_dir() => Some(format!(
            "the directory {} does not exist: create it (mkdir -p {}) or fix TOLLGATE_DATABASE_URL",
            dir.display(),
            dir.display()
        )),
        Some(14) if path.exists() => Some(format!(
            "can this user read and write {}? check its owner and permissions",
            path.display()
        )),
        Some(14) => Some(format!(
            "can this user create files in {}? check its owner and permissions",
            dir.display()
        )),
        // SQLITE_READONLY, SQLITE_PERM
        Some(8 | 3) => Some(format!(
            "can this user write {} and its directory? check owner and permissions",
            path.display()
        )),
        // SQLITE_NOTADB
        Some(26) => Some("the file exists but is not a SQLite database".to_owned()),
        _ => None,
    };
    StoreError::Open {
        target: format!("SQLite file {}", path.display()),
        error,
        hint,
    }
}

/// `$1` product ids as a JSON array: the known feature maps among them
/// (lookup keys as JSON).
const PRODUCT_FEATURES: &str = "SELECT product_id, features FROM product_features WHERE features IS NOT NULL AND product_id IN (SELECT value FROM json_each($1))";

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use sqlx::Connection;

    use super::*;

    /// Migration 11 on a database that already has subscriptions: a row in
    /// a dunning run gets a recovery just before the run's start (so no
    /// older snapshot moves the start earlier), the others none.
    #[tokio::test]
    async fn recovered_at_is_backfilled_just_before_a_running_dunning_start() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let options = SqliteConnectOptions::from_str(&url)
            .unwrap()
            .create_if_missing(true);
        let mut conn = SqliteConnection::connect_with(&options).await.unwrap();
        let before = sqlx::migrate::Migrator {
            migrations: Cow::Owned(
                MIGRATOR
                    .iter()
                    .filter(|m| m.version < 20261129000011)
                    .cloned()
                    .collect(),
            ),
            ..sqlx::migrate::Migrator::DEFAULT
        };
        before.run_direct(&mut conn).await.unwrap();
        sqlx::raw_sql(
            "INSERT INTO subscriptions (id, customer_id, status, past_due_since, updated_at_ms) \
             VALUES ('sub_run', 'cus_1', 'past_due', 1000, 0), \
                    ('sub_fine', 'cus_1', 'active', NULL, 0)",
        )
        .execute(&mut conn)
        .await
        .unwrap();

        MIGRATOR.run_direct(&mut conn).await.unwrap();
        let rows: Vec<(String, Option<i64>)> =
            sqlx::query_as("SELECT id, recovered_at FROM subscriptions ORDER BY id")
                .fetch_all(&mut conn)
                .await
                .unwrap();
        assert_eq!(
            rows,
            [
                ("sub_fine".to_owned(), None),
                ("sub_run".to_owned(), Some(999))
            ]
        );
    }
}
