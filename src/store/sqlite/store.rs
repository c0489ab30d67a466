//! SQLite reads and single-statement writes. Reads go to the read pool;
//! writes, and reads that must see the latest write (`get_state`,
//! notifications), go to the writer connection.

use std::sync::LazyLock;

use async_trait::async_trait;

use sqlx::Row;

use super::tx::{self, SqliteTx};
use super::SqliteStore;
use crate::store::rows::{self, KeyedSubscriptionRow, SubscriptionRow, NOTIFICATION_COLUMNS};
use crate::store::{AuditRow, Counts, EventRow, NotificationRow, ReviewFilter, ReviewRow};
use crate::store::{NewEvent, Store, StoreError, Tx};
use crate::subject::{Affected, Subject};
use crate::subscription::SubscriptionRecord;

/// `$1` a JSON array of user ids: [`rows::SUBSCRIPTIONS_OF_USER`] for
/// each, every row with the id it was read for. `CROSS JOIN` keeps the
/// ids the outer loop (SQLite does not reorder it), so each is an index
/// lookup rather than a scan probing the list.
static SUBSCRIPTIONS_OF_USERS: LazyLock<String> = LazyLock::new(|| {
    let columns = rows::qualified_subscription_columns("s");
    format!(
        "SELECT k.value AS subject_key, {columns} FROM json_each($1) AS k \
         CROSS JOIN subscriptions AS s WHERE s.user_id = k.value \
         UNION ALL SELECT k.value, {columns} FROM json_each($1) AS k \
         CROSS JOIN customer_users AS l CROSS JOIN subscriptions AS s \
         WHERE l.user_id = k.value AND s.customer_id = l.customer_id"
    )
});

/// `$1` a JSON array of customer ids: each one's subscriptions, with it.
static SUBSCRIPTIONS_OF_CUSTOMERS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT k.value AS subject_key, {} FROM json_each($1) AS k \
         CROSS JOIN subscriptions AS s WHERE s.customer_id = k.value",
        rows::qualified_subscription_columns("s")
    )
});

/// The rows of `sql` for `keys` (bound as one JSON array); none to read
/// for none.
async fn keyed_rows(
    reads: &crate::store::lease_pool::LeasePool<sqlx::Sqlite>,
    sql: &str,
    keys: &[String],
) -> Result<Vec<KeyedSubscriptionRow>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let keys = serde_json::json!(keys).to_string();
    reads.fetch_all(sql, |q| q.bind(keys.clone())).await
}

#[async_trait]
impl Store for SqliteStore {
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
        Ok(Box::new(SqliteTx::begin(&self.writer).await?))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn subscriptions_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let rows: Vec<SubscriptionRow> = self
            .reads
            .fetch_all(&rows::SUBSCRIPTIONS_OF_USER, |q| q.bind(user_id))
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
        let customers = serde_json::to_string(&affected.customers).expect("BUG: strings serialize");
        // On any error the lease is dropped, which closes the connection
        // and rolls back whatever of the string began.
        let mut lease = self.writer.lease(true).await?;
        let written = tx::bind_if_unchanged(event, &expected, record.as_ref(), customers, now_ms)
            .fetch_all(lease.conn())
            .await;
        let rows = lease.finish(written)?;
        let mut inserted = false;
        let mut users = Vec::new();
        for row in rows {
            let (kind, user): (String, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
            match (kind.as_str(), user) {
                ("inserted", _) => inserted = true,
                (_, Some(user)) => users.push(user),
                (_, None) => {}
            }
        }
        Ok(inserted.then_some(users))
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
            .fetch_all(&self.reader)
            .await?;
        Ok(ids.into_iter().map(|(id,)| id).collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn unlinked_customers(&self) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(rows::UNLINKED_CUSTOMERS)
            .fetch_all(&self.reader)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_event(&self, id: &str) -> Result<Option<EventRow>, StoreError> {
        Ok(sqlx::query_as(rows::GET_EVENT)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn knows_change(&self, id: &str, change_key: &str) -> Result<bool, StoreError> {
        let (known,): (bool,) = sqlx::query_as(rows::KNOWS_CHANGE)
            .bind(id)
            .bind(change_key)
            .fetch_one(&self.reader)
            .await?;
        Ok(known)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn known_products(&self) -> Result<Vec<String>, StoreError> {
        let rows: Vec<(String,)> = sqlx::query_as(rows::KNOWN_PRODUCTS)
            .fetch_all(&self.reader)
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
        let products = serde_json::to_string(products).expect("BUG: strings serialize");
        let rows = self
            .reads
            .fetch_all(super::PRODUCT_FEATURES, |q| q.bind(products.clone()))
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
        let customers = serde_json::to_string(customers).expect("BUG: strings serialize");
        let rows: Vec<(String, String)> = self
            .reads
            .fetch_all(
                "SELECT customer_id, features FROM entitlement_summaries WHERE customer_id IN (SELECT value FROM json_each($1))",
                |q| q.bind(customers.clone()),
            )
            .await?;
        rows::feature_maps(rows)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_review(&self, id: i64) -> Result<Option<ReviewRow>, StoreError> {
        Ok(sqlx::query_as(&rows::GET_REVIEW)
            .bind(id)
            .fetch_optional(&self.reader)
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
            .fetch_all(&self.reader)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_notifications(
        &self,
        after_id: i64,
        limit: i64,
        include_acked: bool,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        self.writer
            .fetch_all(&rows::LIST_NOTIFICATIONS, |q| {
                q.bind(after_id).bind(limit).bind(include_acked)
            })
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn ack_notification(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let mut lease = self.writer.lease(true).await?;
        let done = sqlx::query(rows::ACK_NOTIFICATION)
            .bind(id)
            .bind(now_ms)
            .execute(lease.conn())
            .await;
        let done = lease.finish(done)?;
        Ok(done.rows_affected() == 1)
    }

    /// One statement on the single writer: no other claim can interleave.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn claim_notifications(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        static CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "UPDATE notifications SET lease_until_ms = $2, attempts = attempts + 1 \
                 WHERE id IN (SELECT id FROM notifications WHERE acked_at_ms IS NULL \
                 AND dead = 0 AND next_attempt_at_ms <= $1 AND lease_until_ms <= $1 \
                 ORDER BY id LIMIT $3) RETURNING {NOTIFICATION_COLUMNS}"
            )
        });
        let until = now_ms.saturating_add(lease_ms);
        self.writer
            .fetch_all(&CLAIM, |q| q.bind(now_ms).bind(until).bind(limit))
            .await
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
        let mut lease = self.writer.lease(true).await?;
        let done = sqlx::query(rows::DELIVERY_FAILED)
            .bind(id)
            .bind(attempts)
            .bind(next_attempt_at_ms)
            .bind(error)
            .bind(dead)
            .execute(lease.conn())
            .await;
        lease.finish(done)?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn counts(&self) -> Result<Counts, StoreError> {
        let (queued_notifications, dead_notifications, open_reviews): (i64, i64, i64) =
            sqlx::query_as(rows::COUNTS)
                .bind(false)
                .bind(true)
                .fetch_one(&self.reader)
                .await?;
        Ok(Counts {
            queued_notifications,
            dead_notifications,
            open_reviews,
        })
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn get_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let value: Vec<(String,)> = self
            .writer
            .fetch_all(rows::GET_STATE, |q| q.bind(key))
            .await?;
        Ok(value.into_iter().next().map(|(v,)| v))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn list_audit(
        &self,
        target: Option<&str>,
        before_id: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let (target, before_id) = (target.unwrap_or(""), before_id.max(0));
        self.writer
            .fetch_all(&rows::LIST_AUDIT, |q| {
                q.bind(target).bind(before_id).bind(limit)
            })
            .await
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
            .fetch_all(&self.reader)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn event_payload(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row: Option<(String,)> = sqlx::query_as(rows::EVENT_PAYLOAD)
            .bind(id)
            .fetch_optional(&self.reader)
            .await?;
        Ok(row.map(|(payload,)| payload))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn open_reviews_by_reason(&self) -> Result<Vec<(String, i64)>, StoreError> {
        Ok(sqlx::query_as(rows::OPEN_REVIEWS_BY_REASON)
            .fetch_all(&self.reader)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn failed_events_since(&self, since_ms: i64) -> Result<i64, StoreError> {
        let (n,): (i64,) = sqlx::query_as(rows::FAILED_EVENTS_SINCE)
            .bind(since_ms)
            .fetch_one(&self.reader)
            .await?;
        Ok(n)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn notifications_about(
        &self,
        id: &str,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError> {
        self.writer
            .fetch_all(&rows::NOTIFICATIONS_ABOUT, |q| q.bind(id).bind(limit))
            .await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    // `try_lead` and `watch` keep the trait's defaults: one process owns a
    // SQLite file, so it always leads and has nobody to hear from.
}
