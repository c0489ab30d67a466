//! PostgreSQL reads, single-statement writes, leadership and the listener.
//! HasAccess's reads go through the read pool ([`crate::store::lease_pool`]);
//! everything else shares one sqlx pool.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection, Row};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::tx::{self, PgTx};
use super::{PgStore, INVALIDATION_CHANNEL, RECONCILER_LOCK};
use crate::store::rows::{self, KeyedSubscriptionRow, SubscriptionRow, NOTIFICATION_COLUMNS};
use crate::store::{AuditRow, Counts, EventRow, NotificationRow, ReviewFilter, ReviewRow};
use crate::store::{NewEvent, Store, StoreError, StoreEvent, Tx};
use crate::subject::{Affected, Subject};
use crate::subscription::SubscriptionRecord;

/// `$1` user id: as SQLite's [`rows::SUBSCRIPTIONS_OF_USER`], with each
/// linked customer's subscriptions looked up in a `LATERAL` subquery: a
/// join is planned as a hash join over a sequential scan of
/// `subscriptions` when the plan is made on a new, empty database (plans
/// are generic, and kept), and stays so until an autoanalyze.
static SUBSCRIPTIONS_OF_USER: LazyLock<String> = LazyLock::new(|| {
    let columns = rows::SUBSCRIPTION_COLUMNS;
    format!(
        "SELECT {columns} FROM subscriptions WHERE user_id = $1 \
         UNION ALL SELECT {} FROM customer_users AS l CROSS JOIN LATERAL \
         (SELECT {columns} FROM subscriptions WHERE customer_id = l.customer_id OFFSET 0) AS s \
         WHERE l.user_id = $1",
        rows::qualified_subscription_columns("s")
    )
});

/// `$1` user ids: [`SUBSCRIPTIONS_OF_USER`] for each, every row with the
/// id it was read for. Each id is looked up in `LATERAL` subqueries, for
/// the same reason as there: a join's generic plan could scan.
static SUBSCRIPTIONS_OF_USERS: LazyLock<String> = LazyLock::new(|| {
    let columns = rows::SUBSCRIPTION_COLUMNS;
    let qualified = rows::qualified_subscription_columns("s");
    format!(
        "SELECT k.id AS subject_key, {qualified} FROM unnest($1::text[]) AS k(id) \
         CROSS JOIN LATERAL \
         (SELECT {columns} FROM subscriptions WHERE user_id = k.id OFFSET 0) AS s \
         UNION ALL SELECT k.id, {qualified} FROM unnest($1::text[]) AS k(id) \
         CROSS JOIN LATERAL \
         (SELECT customer_id FROM customer_users WHERE user_id = k.id OFFSET 0) AS l \
         CROSS JOIN LATERAL \
         (SELECT {columns} FROM subscriptions WHERE customer_id = l.customer_id OFFSET 0) AS s"
    )
});

/// `$1` customer ids: each one's subscriptions, with it.
static SUBSCRIPTIONS_OF_CUSTOMERS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT k.id AS subject_key, {} FROM unnest($1::text[]) AS k(id) CROSS JOIN LATERAL \
         (SELECT {} FROM subscriptions WHERE customer_id = k.id OFFSET 0) AS s",
        rows::qualified_subscription_columns("s"),
        rows::SUBSCRIPTION_COLUMNS
    )
});

/// The rows of `sql` for `keys` (bound as one array); none to read for
/// none.
async fn keyed_rows(
    reads: &crate::store::lease_pool::LeasePool<sqlx::Postgres>,
    sql: &str,
    keys: &[String],
) -> Result<Vec<KeyedSubscriptionRow>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    reads.fetch_all(sql, |q| q.bind(keys)).await
}

#[async_trait]
impl Store for PgStore {
    #[tracing::instrument(level = "debug", skip_all, fields(subjects = subjects.len()))]
    async fn subscriptions_of_subjects(
        &self,
        subjects: &[Subject],
    ) -> Result<Vec<Vec<SubscriptionRecord>>, StoreError> {
        let (users, customers) = rows::subject_keys(subjects);
        let users = keyed_rows(&self.reads, &SUBSCRIPTIONS_OF_USERS, &users).await?;
        let customers = keyed_rows(&self.reads, &SUBSCRIPTIONS_OF_CUSTOMERS, &customers).await?;
        rows::subjects_records(subjects, users, customers)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError> {
        Ok(Box::new(PgTx::begin(&self.transactions).await?))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn subscriptions_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let rows: Vec<SubscriptionRow> = self
            .reads
            .fetch_all(&SUBSCRIPTIONS_OF_USER, |q| q.bind(user_id))
            .await?;
        rows::user_records(rows)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn record_and_save_if_unchanged(
        &self,
        event: &NewEvent<'_>,
        expected: &SubscriptionRecord,
        record: Option<&SubscriptionRecord>,
        affected: &Affected,
        now_ms: i64,
    ) -> Result<Option<Vec<String>>, StoreError> {
        let expected = SubscriptionRow::from(expected);
        let record = record.map(SubscriptionRow::from);
        let mut lease = self.transactions.lease(true).await?;
        let written = tx::bind_if_unchanged(event, &expected, record.as_ref(), affected, now_ms)
            .fetch_optional(lease.conn())
            .await;
        match lease.finish(written)? {
            Some(row) => Ok(Some(row.try_get(0)?)),
            None => Ok(None),
        }
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn subscriptions_for_customer(
        &self,
        customer_id: &str,
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let rows: Vec<SubscriptionRow> = self
            .reads
            .fetch_all(&rows::SUBSCRIPTIONS_OF_CUSTOMER, |q| q.bind(customer_id))
            .await?;
        rows::records(rows)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn non_terminal_subscriptions(&self) -> Result<Vec<String>, StoreError> {
        let ids: Vec<(String,)> = sqlx::query_as(rows::NON_TERMINAL_SUBSCRIPTIONS)
            .fetch_all(&self.pool)
            .await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn unlinked_customers(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(rows::UNLINKED_CUSTOMERS)
            .fetch_all(&self.pool)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_event(&self, id: &str) -> Result<Option<EventRow>, StoreError> {
        Ok(sqlx::query_as(rows::GET_EVENT)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn knows_change(&self, id: &str, change_key: &str) -> Result<bool, StoreError> {
        let (known,): (bool,) = sqlx::query_as(rows::KNOWS_CHANGE)
            .bind(id)
            .bind(change_key)
            .fetch_one(&self.pool)
            .await?;
        Ok(known)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn known_products(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(rows::KNOWN_PRODUCTS)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.into_iter().map(|(p,)| p).collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn product_features(
        &self,
        products: &[String],
    ) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        let rows = self
            .reads
            .fetch_all(super::PRODUCT_FEATURES, |q| q.bind(products))
            .await?;
        rows::feature_maps(rows)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn entitlement_summaries(
        &self,
        customers: &[String],
    ) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        if customers.is_empty() {
            return Ok(Vec::new());
        }
        let rows: Vec<(String, String)> = self
            .reads
            .fetch_all(
                // One customer at a time, planned on the key whatever the
                // statistics: see `tx::linked_users`.
                "SELECT e.customer_id, e.features FROM unnest($1::text[]) AS k (customer_id) \
                 CROSS JOIN LATERAL (SELECT customer_id, features FROM entitlement_summaries \
                 WHERE customer_id = k.customer_id OFFSET 0) AS e",
                |q| q.bind(customers),
            )
            .await?;
        rows::feature_maps(rows)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_review(&self, id: i64) -> Result<Option<ReviewRow>, StoreError> {
        Ok(sqlx::query_as(&rows::GET_REVIEW)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn find_reviews(&self, filter: &ReviewFilter) -> Result<Vec<ReviewRow>, StoreError> {
        Ok(sqlx::query_as(&rows::FIND_REVIEWS)
            .bind(rows::review_state(filter.open))
            .bind(filter.subject.as_deref().unwrap_or(""))
            .bind(filter.limit)
            .bind(filter.reason.as_deref().unwrap_or(""))
            .bind(filter.before_id.unwrap_or(0))
            .fetch_all(&self.pool)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_notifications(
        &self,
        after_id: i64,
        limit: i64,
        include_acked: bool,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        Ok(sqlx::query_as(&rows::LIST_NOTIFICATIONS)
            .bind(after_id)
            .bind(limit)
            .bind(include_acked)
            .fetch_all(&self.pool)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn ack_notification(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(rows::ACK_NOTIFICATION)
            .bind(id)
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// `SKIP LOCKED` passes over rows another replica is claiming right
    /// now; a row claimed and committed has a lease in the future, which
    /// the re-checked `WHERE` leaves out.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn claim_notifications(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        static CLAIM: LazyLock<String> = LazyLock::new(|| {
            format!(
                "UPDATE notifications SET lease_until_ms = $2, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM notifications WHERE acked_at_ms IS NULL \
                 AND NOT dead AND next_attempt_at_ms <= $1 AND lease_until_ms <= $1 \
                 ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED) RETURNING {NOTIFICATION_COLUMNS}"
            )
        });
        Ok(sqlx::query_as(&CLAIM)
            .bind(now_ms)
            .bind(now_ms.saturating_add(lease_ms))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn delivery_failed(
        &self,
        id: i64,
        attempts: i64,
        next_attempt_at_ms: i64,
        error: &str,
        dead: bool,
    ) -> Result<(), StoreError> {
        sqlx::query(rows::DELIVERY_FAILED)
            .bind(id)
            .bind(attempts)
            .bind(next_attempt_at_ms)
            .bind(error)
            .bind(dead)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn counts(&self) -> Result<Counts, StoreError> {
        let (queued_notifications, dead_notifications, open_reviews): (i64, i64, i64) =
            sqlx::query_as(rows::COUNTS)
                .bind(false)
                .bind(true)
                .fetch_one(&self.pool)
                .await?;
        Ok(Counts {
            queued_notifications,
            dead_notifications,
            open_reviews,
        })
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let value: Option<(String,)> = sqlx::query_as(rows::GET_STATE)
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(value.map(|(v,)| v))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_audit(
        &self,
        target: Option<&str>,
        before_id: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        Ok(sqlx::query_as(&rows::LIST_AUDIT)
            .bind(target.unwrap_or(""))
            .bind(before_id.max(0))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn events_for_subscription(
        &self,
        subscription_id: &str,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError> {
        Ok(sqlx::query_as(rows::EVENTS_MENTIONING)
            .bind(rows::payload_mentions(subscription_id))
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn event_payload(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as(rows::EVENT_PAYLOAD)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|(payload,)| payload))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn open_reviews_by_reason(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(rows::OPEN_REVIEWS_BY_REASON)
            .fetch_all(&self.pool)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn failed_events_since(&self, since_ms: i64) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(rows::FAILED_EVENTS_SINCE)
            .bind(since_ms)
            .fetch_one(&self.pool)
            .await?;
        Ok(n)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn notifications_about(
        &self,
        id: &str,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        Ok(sqlx::query_as(&rows::NOTIFICATIONS_ABOUT)
            .bind(id)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn writers(&self) -> usize {
        self.writers
    }

    /// Leads while a session of this replica holds the reconciler's
    /// advisory lock; the lock goes with the session when the replica dies.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn try_lead(&self) -> Result<bool, StoreError> {
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

    /// Listens on [`INVALIDATION_CHANNEL`], and listens again (backing off
    /// up to 5 s) whenever the listener is lost, until `stop`.
    #[tracing::instrument(level = "debug", skip_all)]
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

impl PgStore {
    /// One listener connection's life: `Listening`, then what it hears,
    /// until `stop` (`Ok`) or until the connection fails (`Err`).
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
}
