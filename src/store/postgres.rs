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

use std::str::FromStr;
use std::sync::LazyLock;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{Connection, PgConnection, PgPool, Postgres};
use tokio_util::sync::CancellationToken;

use tokio::sync::mpsc;

use super::rows::{self, impl_sql_store, NOTIFICATION_COLUMNS, SUBSCRIPTION_COLUMNS};
use super::{StoreError, StoreEvent, StoreOptions};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

static LOCK_SUBSCRIPTION: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = $1 FOR UPDATE")
});

/// Leases due notifications for one push attempt each.
static CLAIM_NOTIFICATIONS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE notifications SET lease_until_ms = $2, attempts = attempts + 1 WHERE id IN \
         (SELECT id FROM notifications WHERE acked_at_ms IS NULL AND NOT dead \
          AND next_attempt_at_ms <= $1 AND lease_until_ms <= $1 ORDER BY id LIMIT $3 \
          FOR UPDATE SKIP LOCKED) RETURNING {NOTIFICATION_COLUMNS}"
    )
});

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

    async fn try_lead_now(&self) -> Result<bool, StoreError> {
        let mut leader = self.leader.lock().await;
        if let Some(conn) = leader.as_mut() {
            // Still leading while the session that holds the lock lives.
            if conn.ping().await.is_ok() {
                return Ok(true);
            }
            tracing::warn!("lost the reconciler lock session");
            *leader = None;
        }
        let mut conn = PgConnection::connect_with(&self.connect).await?;
        let (locked,): (bool,) = sqlx::query_as("SELECT pg_try_advisory_lock($1)")
            .bind(RECONCILER_LOCK)
            .fetch_one(&mut conn)
            .await?;
        if locked {
            tracing::info!("this replica now runs the reconciler");
            *leader = Some(conn);
        }
        Ok(locked)
    }

    async fn listen(
        &self,
        events: &mpsc::Sender<StoreEvent>,
        stop: &CancellationToken,
    ) -> Result<(), sqlx::Error> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(INVALIDATION_CHANNEL).await?;
        if events.send(StoreEvent::Listening).await.is_err() {
            return Ok(());
        }
        tracing::info!(
            channel = INVALIDATION_CHANNEL,
            "listening for invalidations from other replicas"
        );
        loop {
            let next = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                next = listener.try_recv() => next?,
            };
            let event = match next {
                Some(n) => rows::published(n.payload()),
                None => return Err(sqlx::Error::PoolClosed),
            };
            if events.send(event).await.is_err() {
                return Ok(());
            }
        }
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
    begin = "BEGIN",
    lock = &LOCK_SUBSCRIPTION,
    claim = &CLAIM_NOTIFICATIONS,
    publish = Some("SELECT pg_notify('tollgate_invalidate', $1)"),
    backend = "postgres",
    store_extra = {
        async fn try_lead(&self) -> Result<bool, StoreError> {
            self.try_lead_now().await
        }

        async fn watch(&self, events: mpsc::Sender<StoreEvent>, stop: CancellationToken) {
            let mut backoff = Duration::from_millis(250);
            while !stop.is_cancelled() {
                match self.listen(&events, &stop).await {
                    Ok(()) => return,
                    Err(e) => {
                        if events.send(StoreEvent::Lost).await.is_err() {
                            return;
                        }
                        tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "invalidation listener lost; cache off until it reconnects");
                    }
                }
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
);
