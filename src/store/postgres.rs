//! PostgreSQL: the shared store for several replicas.
//!
//! Every guarantee holds across replicas sharing one database:
//! - row locks (`FOR UPDATE`) serialize writers per subscription, so the
//!   ordering watermark is compared and updated in one transaction;
//! - the unique key on the event id makes the loser of a duplicate race see
//!   a duplicate rather than an error;
//! - every commit that changes subjects sends `pg_notify` on
//!   [`INVALIDATION_CHANNEL`] (delivered only if it commits), and every
//!   replica evicts them; a replica whose listener connection drops stops
//!   caching until it listens again;
//! - one replica holds a session advisory lock and runs the reconciler;
//!   when it dies its session ends and another takes over at its next tick;
//! - notification pushes claim rows with `FOR UPDATE SKIP LOCKED` and a
//!   lease, so two replicas never send the same attempt.
//!
//! [`Store`](super::Store) is implemented in `postgres/store.rs`,
//! [`Tx`](super::Tx) in `postgres/tx.rs`.

mod store;
mod tx;

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgConnection, PgPool};

use super::{StoreError, StoreOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// The channel commits publish changed subjects on.
pub const INVALIDATION_CHANNEL: &str = "tollgate_invalidate";

/// Advisory lock key of the reconciler: "tollgate" as a big-endian integer.
const RECONCILER_LOCK: i64 = 8_390_043_843_661_231_205;

pub struct PgStore {
    pool: PgPool,
    connect: PgConnectOptions,
    /// The session that holds the reconciler lock, while this replica leads.
    leader: tokio::sync::Mutex<Option<PgConnection>>,
}

impl PgStore {
    pub async fn connect(options: &StoreOptions) -> Result<Self, StoreError> {
        let connect = PgConnectOptions::from_str(&options.url)
            .map_err(|_| StoreError::UnsupportedUrl("invalid postgres url".to_owned()))?
            .application_name("tollgate")
            // A write that waits on a lock longer than this fails, so the
            // webhook answers 503 instead of holding Stripe's request open.
            .options([(
                "lock_timeout",
                format!("{}ms", options.busy_timeout.as_millis()),
            )]);
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(2))
            .acquire_timeout(options.busy_timeout.max(Duration::from_secs(1)))
            .test_before_acquire(false)
            .connect_with(connect.clone())
            .await?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(PgStore {
            pool,
            connect,
            leader: tokio::sync::Mutex::new(None),
        })
    }
}
