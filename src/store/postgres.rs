//! PostgreSQL: the shared store for several replicas.
//!
//! Row locks (`FOR UPDATE`) serialize writers per subscription, and the
//! unique key on the event id makes the loser of a duplicate race see a
//! duplicate rather than an error.

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use std::str::FromStr;

use super::rows::impl_sql_store;
use super::{StoreError, StoreOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

const LOCK_SUBSCRIPTION: &str =
    "SELECT id, customer_id, status, current_period_end, paid_through, \
     trial_end, cancel_at_period_end, past_due_since, items, user_id, snapshot_created, \
     snapshot_event_id, verified_at FROM subscriptions WHERE id = $1 FOR UPDATE";

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
    backend = "postgres"
);

#[cfg(test)]
#[test]
fn lock_statement_reads_every_column() {
    use super::rows::SUBSCRIPTION_COLUMNS;
    assert!(LOCK_SUBSCRIPTION.contains(SUBSCRIPTION_COLUMNS));
}
