//! Rows and SQL shared by both backends.
//!
//! Both backends speak the same SQL for everything here (`$N` placeholders
//! work in SQLite too); where they differ, the backend passes its own
//! statement to [`impl_sql_store!`], which writes the `Store` and `Tx`
//! implementations once for both.

use crate::store::StoreError;
use crate::subscription::{Item, Status, SubscriptionRecord};

/// A `subscriptions` row as stored.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct SubscriptionRow {
    pub id: String,
    pub customer_id: String,
    pub status: Option<String>,
    pub current_period_end: Option<i64>,
    pub paid_through: Option<i64>,
    pub trial_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub past_due_since: Option<i64>,
    pub items: String,
    pub user_id: Option<String>,
    pub snapshot_created: i64,
    pub snapshot_event_id: String,
    pub verified_at: i64,
}

impl TryFrom<SubscriptionRow> for SubscriptionRecord {
    type Error = StoreError;

    fn try_from(row: SubscriptionRow) -> Result<Self, StoreError> {
        let status = match row.status.as_deref() {
            None => None,
            Some(s) => Some(Status::parse(s).ok_or_else(|| {
                StoreError::Corrupt(format!("subscription {} has status {s:?}", row.id))
            })?),
        };
        let items: Vec<Item> = serde_json::from_str(&row.items)
            .map_err(|e| StoreError::Corrupt(format!("subscription {} items: {e}", row.id)))?;
        Ok(SubscriptionRecord {
            id: row.id,
            customer_id: row.customer_id,
            status,
            current_period_end: row.current_period_end,
            paid_through: row.paid_through,
            trial_end: row.trial_end,
            cancel_at_period_end: row.cancel_at_period_end,
            past_due_since: row.past_due_since,
            items,
            user_id: row.user_id,
            snapshot_created: row.snapshot_created,
            snapshot_event_id: row.snapshot_event_id,
            verified_at: row.verified_at,
        })
    }
}

pub(crate) fn records(rows: Vec<SubscriptionRow>) -> Result<Vec<SubscriptionRecord>, StoreError> {
    rows.into_iter().map(SubscriptionRecord::try_from).collect()
}

pub(crate) fn items_json(items: &[Item]) -> String {
    serde_json::to_string(items).expect("BUG: items always serialize")
}

pub(crate) const SUBSCRIPTION_COLUMNS: &str = "id, customer_id, status, current_period_end, \
     paid_through, trial_end, cancel_at_period_end, past_due_since, items, user_id, \
     snapshot_created, snapshot_event_id, verified_at";

pub(crate) const INSERT_EVENT: &str = "INSERT INTO events \
     (id, type, created, livemode, api_version, payload, payload_sha256, source, received_at_ms, outcome) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'processing') \
     ON CONFLICT (id) DO NOTHING RETURNING id";

pub(crate) const EVENT_HASH: &str = "SELECT payload_sha256 FROM events WHERE id = $1";

pub(crate) const FINISH_EVENT: &str =
    "UPDATE events SET outcome = $2, error = $3, processed_at_ms = $4 WHERE id = $1";

pub(crate) const INSERT_PLACEHOLDER: &str =
    "INSERT INTO subscriptions (id, customer_id, updated_at_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING";

pub(crate) const SAVE_SUBSCRIPTION: &str =
    "UPDATE subscriptions SET customer_id = $2, status = $3, \
     current_period_end = $4, paid_through = $5, trial_end = $6, cancel_at_period_end = $7, \
     past_due_since = $8, items = $9, user_id = $10, snapshot_created = $11, \
     snapshot_event_id = $12, verified_at = $13, updated_at_ms = $14 WHERE id = $1";

pub(crate) const LINK_CUSTOMER: &str =
    "INSERT INTO customer_users (customer_id, user_id, linked_at_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (customer_id, user_id) DO NOTHING";

pub(crate) const USERS_OF_CUSTOMER: &str =
    "SELECT user_id FROM customer_users WHERE customer_id = $1 \
     UNION SELECT user_id FROM subscriptions WHERE customer_id = $1 AND user_id IS NOT NULL";

pub(crate) const INSERT_REVIEW: &str = "INSERT INTO needs_manual_review \
     (subject, subscription_id, event_id, reason, details, created_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";

pub(crate) const NOTE_REVIEW_OUTCOME: &str =
    "UPDATE needs_manual_review SET refresh_outcome = $2 WHERE id = $1";

pub(crate) const EVENT_COLUMNS: &str = "id, type, created, livemode, api_version, payload_sha256, \
     source, received_at_ms, processed_at_ms, outcome, error";

pub(crate) const REVIEW_COLUMNS: &str = "id, subject, subscription_id, event_id, reason, details, \
     created_at_ms, resolved_at_ms, resolution, refresh_outcome";

/// Writes the `Store` and `Tx` implementations for one sqlx backend.
///
/// `$lock` is the statement that reads one subscription row and holds it
/// until commit (`FOR UPDATE` where the backend has row locks).
macro_rules! impl_sql_store {
    (store = $store:ty, tx = $tx:ident, db = $db:ty, lock = $lock:expr, backend = $name:literal) => {
        /// An open write transaction.
        pub struct $tx(sqlx::Transaction<'static, $db>);

        #[async_trait::async_trait]
        impl $crate::store::Tx for $tx {
            async fn insert_event(
                &mut self,
                e: &$crate::store::NewEvent<'_>,
            ) -> Result<$crate::store::Recorded, $crate::store::StoreError> {
                use $crate::store::rows::*;
                let inserted: Option<(String,)> = sqlx::query_as(INSERT_EVENT)
                    .bind(e.id)
                    .bind(e.event_type)
                    .bind(e.created)
                    .bind(e.livemode)
                    .bind(e.api_version)
                    .bind(e.payload)
                    .bind(e.payload_sha256)
                    .bind(e.source)
                    .bind(e.received_at_ms)
                    .fetch_optional(&mut *self.0)
                    .await?;
                if inserted.is_some() {
                    return Ok($crate::store::Recorded::New);
                }
                let (payload_sha256,): (String,) = sqlx::query_as(EVENT_HASH)
                    .bind(e.id)
                    .fetch_one(&mut *self.0)
                    .await?;
                Ok($crate::store::Recorded::Duplicate { payload_sha256 })
            }

            async fn finish_event(
                &mut self,
                id: &str,
                outcome: $crate::store::Outcome,
                error: Option<&str>,
                processed_at_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::rows::FINISH_EVENT)
                    .bind(id)
                    .bind(outcome.as_str())
                    .bind(error)
                    .bind(processed_at_ms)
                    .execute(&mut *self.0)
                    .await?;
                Ok(())
            }

            async fn lock_subscription(
                &mut self,
                id: &str,
                customer_id: &str,
            ) -> Result<$crate::subscription::SubscriptionRecord, $crate::store::StoreError> {
                use $crate::store::rows::*;
                sqlx::query(INSERT_PLACEHOLDER)
                    .bind(id)
                    .bind(customer_id)
                    .bind($crate::store::now_ms())
                    .execute(&mut *self.0)
                    .await?;
                let row: SubscriptionRow = sqlx::query_as($lock)
                    .bind(id)
                    .fetch_one(&mut *self.0)
                    .await?;
                row.try_into()
            }

            async fn save_subscription(
                &mut self,
                r: &$crate::subscription::SubscriptionRecord,
                now_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                use $crate::store::rows::*;
                sqlx::query(SAVE_SUBSCRIPTION)
                    .bind(&r.id)
                    .bind(&r.customer_id)
                    .bind(r.status.map(|s| s.as_str()))
                    .bind(r.current_period_end)
                    .bind(r.paid_through)
                    .bind(r.trial_end)
                    .bind(r.cancel_at_period_end)
                    .bind(r.past_due_since)
                    .bind(items_json(&r.items))
                    .bind(r.user_id.as_deref())
                    .bind(r.snapshot_created)
                    .bind(&r.snapshot_event_id)
                    .bind(r.verified_at)
                    .bind(now_ms)
                    .execute(&mut *self.0)
                    .await?;
                Ok(())
            }

            async fn link_customer(
                &mut self,
                customer_id: &str,
                user_id: &str,
                now_ms: i64,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::rows::LINK_CUSTOMER)
                    .bind(customer_id)
                    .bind(user_id)
                    .bind(now_ms)
                    .execute(&mut *self.0)
                    .await?;
                Ok(())
            }

            async fn users_of_customer(
                &mut self,
                customer_id: &str,
            ) -> Result<Vec<String>, $crate::store::StoreError> {
                let rows: Vec<(String,)> = sqlx::query_as($crate::store::rows::USERS_OF_CUSTOMER)
                    .bind(customer_id)
                    .fetch_all(&mut *self.0)
                    .await?;
                Ok(rows.into_iter().map(|(u,)| u).collect())
            }

            async fn flag_review(
                &mut self,
                r: &$crate::store::NewReview<'_>,
            ) -> Result<i64, $crate::store::StoreError> {
                let (id,): (i64,) = sqlx::query_as($crate::store::rows::INSERT_REVIEW)
                    .bind(r.subject)
                    .bind(r.subscription_id)
                    .bind(r.event_id)
                    .bind(r.reason.as_str())
                    .bind(r.details)
                    .bind(r.created_at_ms)
                    .fetch_one(&mut *self.0)
                    .await?;
                Ok(id)
            }

            async fn note_review_outcome(
                &mut self,
                review_id: i64,
                outcome: &str,
            ) -> Result<(), $crate::store::StoreError> {
                sqlx::query($crate::store::rows::NOTE_REVIEW_OUTCOME)
                    .bind(review_id)
                    .bind(outcome)
                    .execute(&mut *self.0)
                    .await?;
                Ok(())
            }

            async fn commit(self: Box<Self>) -> Result<(), $crate::store::StoreError> {
                self.0.commit().await?;
                Ok(())
            }
        }

        #[async_trait::async_trait]
        impl $crate::store::Store for $store {
            async fn begin(
                &self,
            ) -> Result<Box<dyn $crate::store::Tx>, $crate::store::StoreError> {
                Ok(Box::new($tx(self.writer().begin().await?)))
            }

            async fn subscriptions_for_user(
                &self,
                user_id: &str,
            ) -> Result<Vec<$crate::subscription::SubscriptionRecord>, $crate::store::StoreError>
            {
                use $crate::store::rows::*;
                let sql = format!(
                    "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE user_id = $1 \
                     UNION SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE customer_id IN \
                     (SELECT customer_id FROM customer_users WHERE user_id = $1)"
                );
                let rows: Vec<SubscriptionRow> = sqlx::query_as(&sql)
                    .bind(user_id)
                    .fetch_all(self.reader())
                    .await?;
                records(rows)
            }

            async fn subscriptions_for_customer(
                &self,
                customer_id: &str,
            ) -> Result<Vec<$crate::subscription::SubscriptionRecord>, $crate::store::StoreError>
            {
                use $crate::store::rows::*;
                let sql =
                    format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE customer_id = $1");
                let rows: Vec<SubscriptionRow> = sqlx::query_as(&sql)
                    .bind(customer_id)
                    .fetch_all(self.reader())
                    .await?;
                records(rows)
            }

            async fn get_event(
                &self,
                id: &str,
            ) -> Result<Option<$crate::store::EventRow>, $crate::store::StoreError> {
                let sql = format!(
                    "SELECT {} FROM events WHERE id = $1",
                    $crate::store::rows::EVENT_COLUMNS
                );
                Ok(sqlx::query_as(&sql)
                    .bind(id)
                    .fetch_optional(self.reader())
                    .await?)
            }

            async fn list_reviews(
                &self,
                open_only: bool,
            ) -> Result<Vec<$crate::store::ReviewRow>, $crate::store::StoreError> {
                let filter = if open_only { "WHERE resolved_at_ms IS NULL" } else { "" };
                let sql = format!(
                    "SELECT {} FROM needs_manual_review {filter} ORDER BY id DESC",
                    $crate::store::rows::REVIEW_COLUMNS
                );
                Ok(sqlx::query_as(&sql).fetch_all(self.reader()).await?)
            }

            async fn ping(&self) -> Result<(), $crate::store::StoreError> {
                sqlx::query("SELECT 1").execute(self.reader()).await?;
                Ok(())
            }

            fn backend(&self) -> &'static str {
                $name
            }
        }
    };
}

pub(crate) use impl_sql_store;
