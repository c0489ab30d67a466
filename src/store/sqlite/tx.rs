//! SQLite write transactions. Every one runs on the single writer
//! connection, so they serialize whole: a transaction that has begun holds
//! the write lock until it ends.

use std::collections::HashMap;
use std::sync::LazyLock;

use async_trait::async_trait;
use sqlx::sqlite::SqliteArguments;
use sqlx::Row;
use sqlx::Sqlite;

use crate::access_change::AccessChange;
use crate::outcome::Outcome;
use crate::store::lease_pool::LeasePool;
use crate::store::owned_tx::OwnedTx;
use crate::store::rows::{self, SubscriptionRow};
use crate::store::{NewAudit, NewEvent, NewReview, Recorded, StoreError, Tx};
use crate::subject::Affected;
use crate::subscription::SubscriptionRecord;

type Query<'q> = sqlx::query::Query<'q, Sqlite, SqliteArguments<'q>>;

/// A write transaction on the writer connection.
pub(crate) struct SqliteTx {
    tx: OwnedTx<Sqlite>,
    /// Each subscription's indexed columns as this transaction last locked
    /// or saved them, so a save can leave them out when they are unchanged
    /// (see [`INDEXED_COLUMNS`]). Emptied by a rollback to a savepoint:
    /// what it undid is not known here.
    stored: HashMap<String, (String, Option<String>)>,
}

/// The columns of `subscriptions` that an index covers, besides the id.
/// SQLite rewrites an index's entry for every column an UPDATE names,
/// whether or not its value changes: two more pages in the WAL for every
/// subscription saved (a lone event's commit wrote 9 pages, now 7). So a
/// save names them only when one of them changed, or when it is not known
/// what is stored. (PostgreSQL compares the values instead: an update that
/// changes no indexed value is HOT when its page has room, and touches no
/// index; 97% of the bench's were.)
const INDEXED_COLUMNS: [&str; 2] = ["customer_id", "user_id"];

/// What `row`'s [`INDEXED_COLUMNS`] hold.
fn keys(row: &SubscriptionRow) -> (&str, Option<&str>) {
    (&row.customer_id, row.user_id.as_deref())
}

/// Which columns a save names: every one, [`INDEXED_COLUMNS`] only
/// `with_keys`.
fn named(with_keys: bool) -> impl Fn(&str) -> bool {
    move |column| with_keys || !INDEXED_COLUMNS.contains(&column)
}

/// [`rows::assignments_where`] of the columns [`named`] names.
fn assignments(with_keys: bool, value: impl Fn(usize, &str) -> String) -> String {
    rows::assignments_where(named(with_keys), value)
}

impl SqliteTx {
    /// IMMEDIATE takes the write lock at BEGIN, so a writer that is not
    /// really the only one fails loudly there instead of at COMMIT. The
    /// BEGIN goes with the first statement: in one string with it where
    /// that statement may come first (locking subscriptions, a savepoint),
    /// so a lone webhook's transaction takes one hand-off to the
    /// connection's thread fewer.
    pub(crate) async fn begin(writer: &LeasePool<Sqlite>) -> Result<Self, StoreError> {
        Ok(SqliteTx {
            tx: OwnedTx::begin_with_first_statement(writer, "BEGIN IMMEDIATE").await?,
            stored: HashMap::new(),
        })
    }

    /// Whether saving `row` must set its [`INDEXED_COLUMNS`].
    fn keys_change(&self, row: &SubscriptionRow) -> bool {
        let stored = self.stored.get(&row.id);
        stored.map(|(customer, user)| (customer.as_str(), user.as_deref())) != Some(keys(row))
    }

    /// `row` is what is stored now.
    fn note(&mut self, row: &SubscriptionRow) {
        let (customer, user) = keys(row);
        self.stored.insert(
            row.id.clone(),
            (customer.to_owned(), user.map(str::to_owned)),
        );
    }

    /// [`Tx::record_and_save`] of a lone event (a webhook that came alone,
    /// most of them at low load): both statements in one string, so they
    /// go to the connection's thread, and their answer comes back, once
    /// instead of twice. The save runs only when the insert inserted
    /// (`changes()` is the insert's count while the update runs); the
    /// insert's `RETURNING` says whether it did. Runs of several keep two
    /// statements, each prepared once per size.
    async fn record_and_save_one(
        &mut self,
        event: &NewEvent<'_>,
        record: &SubscriptionRecord,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        /// Without, then with, the indexed columns.
        static RECORD_AND_SAVE_ONE: LazyLock<[String; 2]> = LazyLock::new(|| {
            let events = rows::column_count(rows::EVENT_COLUMNS);
            let columns = rows::column_count(rows::SUBSCRIPTION_COLUMNS);
            [false, true].map(|with_keys| {
                format!(
                    "INSERT INTO events ({}) VALUES {} ON CONFLICT DO NOTHING RETURNING 1; \
                     WITH v ({}) AS (VALUES {}) {} AND changes() = 1",
                    rows::EVENT_COLUMNS,
                    value_rows(1, events, None),
                    rows::SUBSCRIPTION_COLUMNS,
                    value_rows(1, columns, None),
                    save_subscriptions_from("v", &format!("${}", events + columns + 1), with_keys),
                )
            })
        });
        let row = SubscriptionRow::from(record);
        let sql = &RECORD_AND_SAVE_ONE[usize::from(self.keys_change(&row))];
        let inserted = bind_subscription(bind_event(sqlx::query(sql), event), &row)
            .bind(now_ms)
            .fetch_all(self.tx.begun().await?)
            .await?;
        if inserted.len() == 1 {
            self.note(&row);
        }
        Ok(inserted.len() as u64)
    }
}

/// `$1` customer ids as one JSON list, which `json_each` reads back:
/// every user linked to them, directly or through a subscription.
static USERS_OF_CUSTOMERS: LazyLock<String> = LazyLock::new(|| users_of_customers("$1"));

/// [`USERS_OF_CUSTOMERS`] with the list bound as `list`.
fn users_of_customers(list: &str) -> String {
    format!(
        "SELECT user_id FROM customer_users \
         WHERE customer_id IN (SELECT value FROM json_each({list})) \
         UNION SELECT user_id FROM subscriptions \
         WHERE customer_id IN (SELECT value FROM json_each({list})) AND user_id IS NOT NULL"
    )
}

/// [`crate::store::Store::record_and_save_if_unchanged`] in one string,
/// one hand-off to the writer connection's thread: `$1..$14` the event,
/// `$15..$31` the subscription as read, `$32..$48` as it is to be stored,
/// `$49` now, `$50` whether to store it, `$51` the customers as a JSON
/// list. The event is recorded only while the row is as read, the
/// subscription stored only when the event was (`changes()`), the users
/// read, and all of it committed. Rows are `("inserted", NULL)` when the
/// event was recorded, then `("user", id)` for each user. Without, then
/// with, the [`INDEXED_COLUMNS`] in the save.
static RECORD_AND_SAVE_IF_UNCHANGED: LazyLock<[String; 2]> =
    LazyLock::new(|| [false, true].map(record_and_save_if_unchanged));

fn record_and_save_if_unchanged(with_keys: bool) -> String {
    let events = rows::column_count(rows::EVENT_COLUMNS);
    let columns = rows::column_count(rows::SUBSCRIPTION_COLUMNS);
    let expected = events + 1;
    let new = expected + columns;
    let now = new + columns;
    let event_values: Vec<String> = (1..=events).map(|i| format!("${i}")).collect();
    format!(
        "BEGIN IMMEDIATE; \
         INSERT INTO events ({event_columns}) SELECT {event_values} \
           WHERE EXISTS (SELECT 1 FROM subscriptions WHERE {stored}) \
           ON CONFLICT DO NOTHING RETURNING 'inserted', NULL; \
         UPDATE subscriptions SET {assignments}, updated_at_ms = ${now} \
           WHERE id = ${expected} AND ${save} AND changes() = 1; \
         SELECT 'user', user_id FROM ({users}); \
         COMMIT",
        event_columns = rows::EVENT_COLUMNS,
        event_values = event_values.join(", "),
        stored = rows::stored_as(expected),
        assignments = assignments(with_keys, |i, _| format!("${}", i + new)),
        save = now + 1,
        users = users_of_customers(&format!("${}", now + 2)),
    )
}

/// [`rows::SAVE_SUBSCRIPTION`] without, then with, the
/// [`INDEXED_COLUMNS`]; bound the same either way.
static SAVE_SUBSCRIPTION: LazyLock<[String; 2]> =
    LazyLock::new(|| [false, true].map(|with_keys| rows::save_subscription(named(with_keys))));

/// Binds [`RECORD_AND_SAVE_IF_UNCHANGED`]'s values.
pub(super) fn bind_if_unchanged<'q>(
    event: &NewEvent<'q>,
    expected: &'q SubscriptionRow,
    record: Option<&'q SubscriptionRow>,
    customers: String,
    now_ms: i64,
) -> Query<'q> {
    let keys_change = record.is_some_and(|r| keys(expected) != keys(r));
    let sql = &RECORD_AND_SAVE_IF_UNCHANGED[usize::from(keys_change)];
    let query = bind_event(sqlx::query(sql), event);
    let query = bind_subscription(
        bind_subscription(query, expected),
        record.unwrap_or(expected),
    );
    query.bind(now_ms).bind(record.is_some()).bind(customers)
}

/// Binds `row` in the order of [`rows::SUBSCRIPTION_COLUMNS`].
fn bind_subscription<'q>(query: Query<'q>, row: &'q SubscriptionRow) -> Query<'q> {
    query
        .bind(&row.id)
        .bind(&row.customer_id)
        .bind(row.status.as_deref())
        .bind(row.current_period_end)
        .bind(row.paid_through)
        .bind(row.trial_end)
        .bind(row.cancel_at_period_end)
        .bind(row.past_due_since)
        .bind(row.cancel_at)
        .bind(row.pause_reason.as_deref())
        .bind(&row.items)
        .bind(row.user_id.as_deref())
        .bind(row.snapshot_created)
        .bind(&row.snapshot_event_id)
        .bind(row.verified_at)
        .bind(row.hold_review_id)
        .bind(row.recovered_at)
}

/// Binds `event` in the order of [`rows::EVENT_COLUMNS`].
fn bind_event<'q>(query: Query<'q>, event: &NewEvent<'q>) -> Query<'q> {
    query
        .bind(event.id)
        .bind(event.event_type)
        .bind(event.created)
        .bind(event.livemode)
        .bind(event.api_version)
        .bind(event.payload)
        .bind(event.payload_sha256)
        .bind(event.content_sha256)
        .bind(event.source)
        .bind(event.received_at_ms)
        .bind(event.change_key)
        .bind(event.outcome.as_str())
        .bind(event.error)
        .bind(event.processed_at_ms)
}

/// Binds `change` in the order of [`rows::NOTIFICATION_CHANGE_COLUMNS`],
/// all but the last (its creation time, which the caller binds).
fn bind_notification<'q>(query: Query<'q>, change: &'q AccessChange) -> Query<'q> {
    query
        .bind(change.kind.as_str())
        .bind(&change.user_id)
        .bind(&change.customer_id)
        .bind(&change.subscription_id)
        .bind(&change.old_status)
        .bind(&change.new_status)
        .bind(change.old_access)
        .bind(change.new_access)
        .bind(change.old_access_until)
        .bind(change.new_access_until)
        .bind(&change.reason)
}

/// `rows` groups of `columns` placeholders, bound in order, each followed
/// by `shared` (a numbered placeholder all rows bind alike, after theirs)
/// when given: `(?, ?, $5), (?, ?, $5)`. SQLite has no arrays to unnest, so
/// a statement that writes several rows has one of these per row count;
/// each is prepared once per connection.
///
/// The row placeholders are anonymous (`?`), not numbered: sqlx asks
/// SQLite each parameter's name as it binds, and SQLite finds a name by
/// walking the list of every numbered one, so numbered placeholders make
/// binding quadratic (a profile of a 64-event bulk write showed that walk,
/// `sqlite3_bind_parameter_name`, as half of the connection thread's time).
/// sqlx binds anonymous ones in order and a numbered one by its number, so
/// `$n` after `n - 1` anonymous values binds the n-th.
fn value_rows(rows: usize, columns: usize, shared: Option<&str>) -> String {
    let mut row = vec!["?"; columns];
    row.extend(shared);
    let row = format!("({})", row.join(", "));
    vec![row; rows].join(", ")
}

/// `UPDATE subscriptions SET column = v.column, ..., updated_at_ms = $now
/// FROM from WHERE subscriptions.id = v.id`: stores several locked
/// subscriptions whole, from rows named `v` with the columns of
/// [`rows::SUBSCRIPTION_COLUMNS`] ([`INDEXED_COLUMNS`] only `with_keys`).
fn save_subscriptions_from(from: &str, now: &str, with_keys: bool) -> String {
    format!(
        "UPDATE subscriptions SET {}, updated_at_ms = {now} FROM {from} \
         WHERE subscriptions.id = v.id",
        assignments(with_keys, |_, column| format!("v.{column}"))
    )
}

#[async_trait]
impl Tx for SqliteTx {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn insert_event(&mut self, event: &NewEvent<'_>) -> Result<Recorded, StoreError> {
        let inserted = bind_event(sqlx::query(&rows::INSERT_EVENT), event)
            .fetch_optional(self.tx.begun().await?)
            .await?;
        if inserted.is_some() {
            return Ok(Recorded::New);
        }
        let hashes: Option<(String, Option<String>)> = sqlx::query_as(rows::EVENT_HASHES)
            .bind(event.id)
            .fetch_optional(self.tx.begun().await?)
            .await?;
        Ok(match hashes {
            Some((payload_sha256, content_sha256)) => Recorded::Duplicate {
                payload_sha256,
                content_sha256,
            },
            None => Recorded::Twin,
        })
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn load_event(&mut self, id: &str) -> Result<Option<(String, String)>, StoreError> {
        Ok(sqlx::query_as(rows::LOAD_EVENT)
            .bind(id)
            .fetch_optional(self.tx.begun().await?)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn finish_event(
        &mut self,
        id: &str,
        outcome: Outcome,
        error: Option<&str>,
        processed_at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(rows::FINISH_EVENT)
            .bind(id)
            .bind(outcome.as_str())
            .bind(error)
            .bind(processed_at_ms)
            .execute(self.tx.begun().await?)
            .await?;
        Ok(())
    }

    /// SQLite has no row locks; the single writer connection serializes
    /// every write transaction, which is stronger.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn lock_subscription(
        &mut self,
        id: &str,
        customer_id: &str,
        now_ms: i64,
    ) -> Result<SubscriptionRecord, StoreError> {
        let sql = self.tx.with_begin(&rows::LOCK_SUBSCRIPTION)?;
        let row = sqlx::query_as::<_, SubscriptionRow>(&sql)
            .bind(id)
            .bind(customer_id)
            .bind(now_ms)
            .fetch_one(self.tx.begun_or_beginning())
            .await;
        let row = self.tx.settle(row)?;
        self.note(&row);
        row.try_into()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn lock_subscriptions(
        &mut self,
        keys: &[(&str, &str)],
        now_ms: i64,
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let now = format!("${}", keys.len() * 2 + 1);
        let sql = format!(
            "INSERT INTO subscriptions (id, customer_id, updated_at_ms) VALUES {} \
             ON CONFLICT (id) DO {} RETURNING {}",
            value_rows(keys.len(), 2, Some(&now)),
            rows::NO_OP_UPDATE,
            rows::SUBSCRIPTION_COLUMNS
        );
        let sql = self.tx.with_begin(&sql)?;
        let query = keys
            .iter()
            .fold(sqlx::query_as(&sql), |q, (id, customer)| {
                q.bind(*id).bind(*customer)
            })
            .bind(now_ms);
        let rows: Result<Vec<SubscriptionRow>, _> =
            query.fetch_all(self.tx.begun_or_beginning()).await;
        let rows = self.tx.settle(rows)?;
        for row in &rows {
            self.note(row);
        }
        rows::records(rows)
    }

    /// The events in one statement, then the records in another when
    /// every event was new.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn record_and_save(
        &mut self,
        events: &[NewEvent<'_>],
        records: &[&SubscriptionRecord],
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        if let ([event], [record]) = (events, records) {
            return self.record_and_save_one(event, record, now_ms).await;
        }
        let sql = format!(
            "INSERT INTO events ({}) VALUES {} ON CONFLICT DO NOTHING",
            rows::EVENT_COLUMNS,
            value_rows(events.len(), rows::column_count(rows::EVENT_COLUMNS), None)
        );
        let inserted = events
            .iter()
            .fold(sqlx::query(&sql), bind_event)
            .execute(self.tx.begun().await?)
            .await?
            .rows_affected();
        if inserted < events.len() as u64 || records.is_empty() {
            return Ok(inserted);
        }
        let columns = rows::column_count(rows::SUBSCRIPTION_COLUMNS);
        let now = format!("${}", records.len() * columns + 1);
        let rows: Vec<SubscriptionRow> =
            records.iter().map(|r| SubscriptionRow::from(*r)).collect();
        let with_keys = rows.iter().any(|row| self.keys_change(row));
        let update = save_subscriptions_from("v", &now, with_keys);
        let sql = format!(
            "WITH v ({}) AS (VALUES {}) {update}",
            rows::SUBSCRIPTION_COLUMNS,
            value_rows(records.len(), columns, None),
        );
        rows.iter()
            .fold(sqlx::query(&sql), bind_subscription)
            .bind(now_ms)
            .execute(self.tx.begun().await?)
            .await?;
        for row in &rows {
            self.note(row);
        }
        Ok(inserted)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn customer_records(
        &mut self,
        customer_id: &str,
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let rows: Vec<SubscriptionRow> = sqlx::query_as(&rows::SUBSCRIPTIONS_OF_CUSTOMER)
            .bind(customer_id)
            .fetch_all(self.tx.begun().await?)
            .await?;
        rows::records(rows)
    }

    /// The customers go in as one JSON list, which `json_each` reads back.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn customers_records(
        &mut self,
        customers: &[&str],
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        static SUBSCRIPTIONS_OF_CUSTOMERS: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT {} FROM subscriptions \
                 WHERE customer_id IN (SELECT value FROM json_each($1))",
                rows::SUBSCRIPTION_COLUMNS
            )
        });
        let customers = serde_json::to_string(customers).expect("BUG: strings serialize");
        let rows: Vec<SubscriptionRow> = sqlx::query_as(&SUBSCRIPTIONS_OF_CUSTOMERS)
            .bind(customers)
            .fetch_all(self.tx.begun().await?)
            .await?;
        rows::records(rows)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn set_hold(&mut self, subscription_id: &str, review_id: i64) -> Result<(), StoreError> {
        sqlx::query(rows::SET_HOLD)
            .bind(subscription_id)
            .bind(review_id)
            .execute(self.tx.begun().await?)
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn release_holds(&mut self, review_id: i64) -> Result<Vec<String>, StoreError> {
        let customers: Vec<(String,)> = sqlx::query_as(rows::RELEASE_HOLDS)
            .bind(review_id)
            .fetch_all(self.tx.begun().await?)
            .await?;
        Ok(customers.into_iter().map(|(c,)| c).collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn save_subscription(
        &mut self,
        record: &SubscriptionRecord,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let row = SubscriptionRow::from(record);
        let sql = &SAVE_SUBSCRIPTION[usize::from(self.keys_change(&row))];
        bind_subscription(sqlx::query(sql), &row)
            .bind(now_ms)
            .execute(self.tx.begun().await?)
            .await?;
        self.note(&row);
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn link_customer(
        &mut self,
        customer_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(rows::LINK_CUSTOMER)
            .bind(customer_id)
            .bind(user_id)
            .bind(now_ms)
            .execute(self.tx.begun().await?)
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn users_of_customer(&mut self, customer_id: &str) -> Result<Vec<String>, StoreError> {
        let users: Vec<(String,)> = sqlx::query_as(rows::USERS_OF_CUSTOMER)
            .bind(customer_id)
            .fetch_all(self.tx.begun().await?)
            .await?;
        Ok(users.into_iter().map(|(u,)| u).collect())
    }

    /// The users only: one process owns the file, there is no one to
    /// tell ([`Tx::publish_changes`]).
    #[tracing::instrument(level = "debug", skip_all)]
    async fn publish_with_users(&mut self, affected: &Affected) -> Result<Vec<String>, StoreError> {
        if affected.customers.is_empty() {
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(&affected.customers).expect("BUG: strings serialize");
        let users: Vec<(String,)> = sqlx::query_as(&USERS_OF_CUSTOMERS)
            .bind(ids)
            .fetch_all(self.tx.begun().await?)
            .await?;
        Ok(users.into_iter().map(|(u,)| u).collect())
    }

    /// The customers go in as one JSON list, which `json_each` reads back.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn first_users_of_customers(
        &mut self,
        customers: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError> {
        const FIRST_USERS: &str =
            "WITH wanted AS (SELECT value AS customer_id FROM json_each($1)) \
             SELECT customer_id, min(user_id) FROM (\
             SELECT customer_id, user_id FROM customer_users \
             WHERE customer_id IN (SELECT customer_id FROM wanted) \
             UNION ALL SELECT customer_id, user_id FROM subscriptions \
             WHERE customer_id IN (SELECT customer_id FROM wanted) AND user_id IS NOT NULL) \
             GROUP BY customer_id";
        let customers = serde_json::to_string(customers).expect("BUG: strings serialize");
        Ok(sqlx::query_as(FIRST_USERS)
            .bind(customers)
            .fetch_all(self.tx.begun().await?)
            .await?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn flag_review(&mut self, review: &NewReview<'_>) -> Result<i64, StoreError> {
        let (id,): (i64,) = sqlx::query_as(rows::INSERT_REVIEW)
            .bind(review.subject)
            .bind(review.subscription_id)
            .bind(review.event_id)
            .bind(review.reason.as_str())
            .bind(review.details)
            .bind(review.created_at_ms)
            .fetch_one(self.tx.begun().await?)
            .await?;
        Ok(id)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn note_review_outcome(
        &mut self,
        review_id: i64,
        outcome: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(rows::NOTE_REVIEW_OUTCOME)
            .bind(review_id)
            .bind(outcome)
            .execute(self.tx.begun().await?)
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn resolve_review(
        &mut self,
        review_id: i64,
        resolution: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(rows::RESOLVE_REVIEW)
            .bind(review_id)
            .bind(now_ms)
            .bind(resolution)
            .execute(self.tx.begun().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn queue_notification(
        &mut self,
        change: &AccessChange,
        created_at_ms: i64,
    ) -> Result<i64, StoreError> {
        let row = bind_notification(sqlx::query(&rows::INSERT_NOTIFICATION), change)
            .bind(created_at_ms)
            .fetch_one(self.tx.begun().await?)
            .await?;
        Ok(row.try_get("id")?)
    }

    /// One row of values per change; ids are assigned in row order.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn queue_notifications(
        &mut self,
        changes: &[AccessChange],
        created_at_ms: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        // Every column but the last (created at), which all rows share
        // with the first attempt's time.
        let columns = rows::column_count(rows::NOTIFICATION_CHANGE_COLUMNS) - 1;
        let created = format!("${}", changes.len() * columns + 1);
        let sql = format!(
            "INSERT INTO notifications ({}, next_attempt_at_ms) VALUES {} \
             RETURNING id, customer_id",
            rows::NOTIFICATION_CHANGE_COLUMNS,
            value_rows(
                changes.len(),
                columns,
                Some(&format!("{created}, {created}"))
            ),
        );
        let rows = changes
            .iter()
            .fold(sqlx::query(&sql), bind_notification)
            .bind(created_at_ms)
            .fetch_all(self.tx.begun().await?)
            .await?;
        rows.iter()
            .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
            .collect()
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn save_product_features(
        &mut self,
        product: &str,
        features: &[String],
        read_at_ms: i64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(features).expect("BUG: strings serialize");
        sqlx::query(rows::SAVE_PRODUCT_FEATURES)
            .bind(product)
            .bind(json)
            .bind(read_at_ms)
            .execute(self.tx.begun().await?)
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn forget_product_features(
        &mut self,
        product: &str,
        changed_at_ms: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(rows::FORGET_PRODUCT_FEATURES)
            .bind(product)
            .bind(changed_at_ms)
            .execute(self.tx.begun().await?)
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn product_features(
        &mut self,
        products: &[String],
    ) -> Result<Vec<(String, Vec<String>)>, StoreError> {
        if products.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query_as(super::PRODUCT_FEATURES)
            .bind(serde_json::to_string(products).expect("BUG: strings serialize"))
            .fetch_all(self.tx.begun().await?)
            .await?;
        crate::store::rows::feature_maps(rows)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn save_entitlement_summary(
        &mut self,
        customer: &str,
        features: &[String],
        as_of_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        let json = serde_json::to_string(features).expect("BUG: strings serialize");
        let stored: Option<(String,)> = sqlx::query_as(rows::SAVE_ENTITLEMENT_SUMMARY)
            .bind(customer)
            .bind(json)
            .bind(as_of_ms)
            .bind(now_ms)
            .fetch_optional(self.tx.begun().await?)
            .await?;
        Ok(stored.is_some())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn set_state(&mut self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let query = match value {
            Some(value) => sqlx::query(rows::SET_STATE).bind(key).bind(value),
            None => sqlx::query(rows::DELETE_STATE).bind(key),
        };
        query.execute(self.tx.begun().await?).await?;
        Ok(())
    }

    /// One process owns a SQLite file: its cache is invalidated in-process,
    /// and there is nobody else to tell.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn record_audit(&mut self, entry: &NewAudit<'_>) -> Result<i64, StoreError> {
        let (id,): (i64,) = sqlx::query_as(rows::INSERT_AUDIT)
            .bind(entry.at_ms)
            .bind(entry.actor)
            .bind(entry.action)
            .bind(entry.target)
            .bind(entry.note)
            .fetch_one(self.tx.begun().await?)
            .await?;
        Ok(id)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn publish_changes(&mut self, _affected: &Affected) -> Result<(), StoreError> {
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn savepoint(&mut self) -> Result<(), StoreError> {
        self.tx.savepoint().await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        self.stored.clear();
        self.tx.rollback_to_savepoint().await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.commit().await
    }

    /// The users' statement and `COMMIT` in one string.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn publish_and_commit(
        self: Box<Self>,
        affected: &Affected,
    ) -> Result<Vec<String>, StoreError> {
        static USERS_AND_COMMIT: LazyLock<String> =
            LazyLock::new(|| format!("{}; COMMIT", *USERS_OF_CUSTOMERS));
        if affected.customers.is_empty() {
            self.tx.commit().await?;
            return Ok(Vec::new());
        }
        let ids = serde_json::to_string(&affected.customers).expect("BUG: strings serialize");
        let mut ending = self.tx.ending().await?;
        let users = sqlx::query_as::<_, (String,)>(&USERS_AND_COMMIT)
            .bind(ids)
            .fetch_all(ending.conn())
            .await;
        Ok(ending.ended(users)?.into_iter().map(|(u,)| u).collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn rollback(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.rollback().await
    }
}

#[cfg(test)]
mod tests {
    use sqlx::{Arguments, Execute};

    use super::*;
    use crate::store::rows::column_count;

    fn bound(mut query: Query<'_>) -> usize {
        query.take_arguments().unwrap().map_or(0, |a| a.len())
    }

    #[test]
    fn a_save_names_the_indexed_columns_only_when_asked_to() {
        let without = assignments(false, |_, column| format!("v.{column}"));
        let with = assignments(true, |_, column| format!("v.{column}"));
        for column in INDEXED_COLUMNS {
            assert!(!without.contains(column), "{without}");
            assert!(with.contains(&format!("{column} = v.{column}")), "{with}");
        }
        assert!(!with.contains("id = v.id,"), "the key is never set: {with}");
        // Every other column either way, each from its own place.
        let numbered = assignments(true, |i, _| format!("${}", i + 10));
        assert!(
            numbered.starts_with("customer_id = $11, status = $12"),
            "{numbered}"
        );
        assert_eq!(
            with.split(", ").count(),
            column_count(rows::SUBSCRIPTION_COLUMNS) - 1
        );
        assert_eq!(
            without.split(", ").count(),
            column_count(rows::SUBSCRIPTION_COLUMNS) - 1 - INDEXED_COLUMNS.len()
        );
    }

    #[test]
    fn the_save_with_its_indexed_columns_is_the_shared_statement() {
        assert_eq!(SAVE_SUBSCRIPTION[1], *rows::SAVE_SUBSCRIPTION);
        for column in INDEXED_COLUMNS {
            assert!(!SAVE_SUBSCRIPTION[0].contains(column));
        }
    }

    #[test]
    fn value_rows_leave_row_placeholders_anonymous_and_share_the_shared_one() {
        assert_eq!(value_rows(1, 2, None), "(?, ?)");
        assert_eq!(value_rows(2, 2, Some("$5")), "(?, ?, $5), (?, ?, $5)");
        assert_eq!(value_rows(3, 1, None), "(?), (?), (?)");
    }

    #[test]
    fn each_bind_function_binds_one_value_per_column() {
        let record = SubscriptionRecord::placeholder("sub_1", "cus_1");
        let row = SubscriptionRow::from(&record);
        assert_eq!(
            bound(bind_subscription(sqlx::query(""), &row)),
            column_count(rows::SUBSCRIPTION_COLUMNS)
        );
        let event = NewEvent {
            id: "evt_1",
            event_type: "customer.subscription.updated",
            created: 1,
            livemode: false,
            api_version: None,
            payload: "{}",
            payload_sha256: "",
            content_sha256: "",
            source: "webhook",
            received_at_ms: 1,
            change_key: "evt_1",
            outcome: Outcome::Applied,
            error: None,
            processed_at_ms: 1,
        };
        assert_eq!(
            bound(bind_event(sqlx::query(""), &event)),
            column_count(rows::EVENT_COLUMNS)
        );
        let change = AccessChange {
            kind: crate::access_change::Kind::Revoked,
            user_id: String::new(),
            customer_id: String::new(),
            subscription_id: String::new(),
            old_status: String::new(),
            new_status: String::new(),
            old_access: true,
            new_access: false,
            old_access_until: 0,
            new_access_until: 0,
            reason: String::new(),
        };
        assert_eq!(
            bound(bind_notification(sqlx::query(""), &change).bind(1)),
            column_count(rows::NOTIFICATION_CHANGE_COLUMNS)
        );
    }
}
