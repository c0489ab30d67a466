//! PostgreSQL: the shared store for several replicas.
//!
//! Row locks (`FOR UPDATE`) serialize writers per subscription, and the
//! unique key on the event id makes the loser of a duplicate race see a
//! duplicate rather than an error.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use std::str::FromStr;

use super::rows::{impl_sql_store, notification_columns, subscription_columns};
use super::{StoreError, StoreOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const LOCK_SUBSCRIPTION: &str = concat!(
    "SELECT ",
    subscription_columns!(),
    " FROM subscriptions WHERE id = $1 FOR UPDATE"
);

/// Leases due notifications for one push attempt each.
const CLAIM_NOTIFICATIONS: &str = concat!(
    "UPDATE notifications SET lease_until_ms = $2, attempts = attempts + 1 WHERE id IN \
     (SELECT id FROM notifications WHERE acked_at_ms IS NULL AND NOT dead \
      AND next_attempt_at_ms <= $1 AND lease_until_ms <= $1 ORDER BY id LIMIT $3 \
      FOR UPDATE SKIP LOCKED) RETURNING ",
    notification_columns!()
);

pub struct PgStore {
    pool: PgPool,
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
            .acquire_timeout(options.busy_timeout.max(std::time::Duration::from_secs(1)))
            .test_before_acquire(false)
            .connect_with(connect)
            .await?;
        MIGRATOR.run(&pool).await.map_err(StoreError::Migrate)?;
        Ok(PgStore { pool })
    }

    fn writer(&self) -> &PgPool {
        &self.pool
    }

    fn reader(&self) -> &PgPool {
        &self.pool
    }
}

impl_sql_store!(
    store = PgStore,
    tx = PgTx,
    db = Postgres,
    lock = LOCK_SUBSCRIPTION,
    claim = CLAIM_NOTIFICATIONS,
    backend = "postgres"
);
