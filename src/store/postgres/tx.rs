//! PostgreSQL write transactions. Writers to the same subscription queue
//! on its row lock (`FOR UPDATE`); writers to different ones run side by
//! side.

use std::sync::LazyLock;

use async_trait::async_trait;
use sqlx::postgres::PgArguments;
use sqlx::Postgres;
use sqlx::Row;

use super::INVALIDATION_CHANNEL;
use crate::access_change::AccessChange;
use crate::outcome::Outcome;
use crate::store::lease_pool::LeasePool;
use crate::store::owned_tx::OwnedTx;
use crate::store::rows::{self, SubscriptionRow};
use crate::store::{NewAudit, NewEvent, NewReview, Recorded, StoreError, Tx};
use crate::subject::Affected;
use crate::subscription::SubscriptionRecord;

type Query<'q> = sqlx::query::Query<'q, Postgres, PgArguments>;

/// A write transaction on a connection of the pool, at READ COMMITTED.
pub(crate) struct PgTx {
    tx: OwnedTx<Postgres>,
}

impl PgTx {
    pub(crate) async fn begin(pool: &LeasePool<Postgres>) -> Result<Self, StoreError> {
        Ok(PgTx {
            tx: OwnedTx::begin(pool, "BEGIN").await?,
        })
    }
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

/// Binds `change` and its creation time in the order of
/// [`rows::NOTIFICATION_CHANGE_COLUMNS`].
fn bind_notification<'q>(
    query: Query<'q>,
    change: &'q AccessChange,
    created_at_ms: i64,
) -> Query<'q> {
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
        .bind(created_at_ms)
}

/// The PostgreSQL types of [`rows::SUBSCRIPTION_COLUMNS`], in its order:
/// the casts of the arrays a multi-row statement unnests.
const SUBSCRIPTION_TYPES: [&str; 17] = [
    "text", "text", "text", "int8", "int8", "int8", "bool", "int8", "int8", "text", "text", "text",
    "int8", "text", "int8", "int8", "int8",
];

/// The PostgreSQL types of [`rows::EVENT_COLUMNS`], in its order.
const EVENT_TYPES: [&str; 14] = [
    "text", "text", "int8", "bool", "text", "text", "text", "text", "text", "int8", "text", "text",
    "text", "int8",
];

/// `UNNEST($1::text[], $2::int8[], ...)` of one array per type.
fn unnest(types: &[&str]) -> String {
    unnest_from(types, 1)
}

/// [`unnest`] with its placeholders numbered from `$first`.
fn unnest_from(types: &[&str], first: usize) -> String {
    let arrays: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(i, t)| format!("${}::{t}[]", i + first))
        .collect();
    format!("UNNEST({})", arrays.join(", "))
}

/// `$1` ids, `$2` their customers, `$3` now: [`rows::LOCK_SUBSCRIPTION`]
/// for every pair, in id order so two writers lock shared rows alike.
static LOCK_SUBSCRIPTIONS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO subscriptions (id, customer_id, updated_at_ms) \
         SELECT k.id, k.customer_id, $3 FROM UNNEST($1::text[], $2::text[]) AS k (id, customer_id) \
         ORDER BY k.id \
         ON CONFLICT (id) DO {} RETURNING {}",
        rows::NO_OP_UPDATE,
        rows::SUBSCRIPTION_COLUMNS
    )
});

/// One array per column of [`rows::EVENT_COLUMNS`] (`$1..$14`), then one
/// per column of [`rows::SUBSCRIPTION_COLUMNS`] (`$15..$31`), `$32` now
/// and `$33` how many events there are: the subscriptions are stored only
/// if every event was inserted (a data-modifying `WITH` runs whether or not
/// it is read). Returns how many were.
///
/// The subscriptions are stored by an upsert on the key of rows known to
/// exist rather than by `UPDATE ... FROM` the arrays: the generic plan of
/// that join, made on a new database whose tables are empty, was a hash
/// join over a sequential scan of every subscription (see
/// [`linked_users`]); the conflict of an upsert is found on the primary key
/// whatever the statistics. A row never locked is not there, so the probe
/// leaves it out rather than insert it.
static RECORD_AND_SAVE: LazyLock<String> =
    LazyLock::new(|| record_and_save("SELECT n FROM inserted"));

/// [`RECORD_AND_SAVE`]'s placeholders, then channel, customers, users,
/// products and the longest payload: [`PUBLISH_WITH_USERS`] in the same
/// statement, one round trip fewer. Returns how many events
/// were inserted and the users linked to the customers. The users are
/// read as the statement found them, before its own writes, which only
/// link the users of the records given (among the users given); its
/// notification is undone with whatever undoes the events.
static RECORD_SAVE_AND_PUBLISH: LazyLock<String> = LazyLock::new(|| {
    let first = EVENT_TYPES.len() + SUBSCRIPTION_TYPES.len() + 3;
    let publish = publish(first, "n, ", "inserted CROSS JOIN ", None);
    record_and_save(&format!(", {publish}"))
});

/// [`crate::store::Store::record_and_save_if_unchanged`] in one
/// statement: `$1..$14` the event, `$15..$31` the subscription as read,
/// `$32..$48` as it is to be stored, `$49` now, `$50` whether to store it,
/// then [`publish`]'s values. The row is locked only while it is as read:
/// when a transaction changes it meanwhile, the lock waits for it, checks
/// the condition again on the newest version, and finds nothing. The
/// event is recorded only then, the subscription stored only when the
/// event was, and the notification sent only then too. No row when
/// nothing was written.
pub(super) static RECORD_AND_SAVE_IF_UNCHANGED: LazyLock<String> = LazyLock::new(|| {
    let events = EVENT_TYPES.len();
    let columns = SUBSCRIPTION_TYPES.len();
    let expected = events + 1;
    let new = expected + columns;
    let now = new + columns;
    let event_values: Vec<String> = (1..=events).map(|i| format!("${i}")).collect();
    format!(
        "WITH current AS (SELECT 1 FROM subscriptions WHERE {stored} FOR UPDATE), \
         recorded AS (INSERT INTO events ({event_columns}) SELECT {event_values} \
           WHERE EXISTS (SELECT 1 FROM current) ON CONFLICT DO NOTHING RETURNING 1), \
         saved AS (UPDATE subscriptions SET {assignments}, updated_at_ms = ${now} \
           WHERE id = ${expected} AND ${save} AND EXISTS (SELECT 1 FROM recorded) RETURNING 1), \
         inserted AS (SELECT count(*) AS n FROM recorded), {publish}",
        stored = rows::stored_as(expected),
        event_columns = rows::EVENT_COLUMNS,
        event_values = event_values.join(", "),
        assignments = rows::subscription_assignments(new),
        save = now + 1,
        publish = publish(now + 2, "", "inserted CROSS JOIN ", Some("inserted.n > 0")),
    )
});

/// Binds [`RECORD_AND_SAVE_IF_UNCHANGED`]'s values.
pub(super) fn bind_if_unchanged<'q>(
    event: &NewEvent<'q>,
    expected: &'q SubscriptionRow,
    record: Option<&'q SubscriptionRow>,
    affected: &'q Affected,
    now_ms: i64,
) -> Query<'q> {
    let query = bind_event(sqlx::query(&RECORD_AND_SAVE_IF_UNCHANGED), event);
    let query = bind_subscription(
        bind_subscription(query, expected),
        record.unwrap_or(expected),
    );
    bind_publication(query.bind(now_ms).bind(record.is_some()), affected)
}

/// The statement of [`RECORD_AND_SAVE`] with `tail` after its last
/// common table expression (`saved`).
fn record_and_save(tail: &str) -> String {
    let events = EVENT_TYPES.len();
    let subscriptions = SUBSCRIPTION_TYPES.len();
    let now = format!("${}", events + subscriptions + 1);
    let all = format!("${}", events + subscriptions + 2);
    let assignments: Vec<String> = rows::SUBSCRIPTION_COLUMNS
        .split(',')
        .map(str::trim)
        .skip(1)
        .map(|column| format!("{column} = excluded.{column}"))
        .collect();
    format!(
        "WITH recorded AS (INSERT INTO events ({events_columns}) SELECT * FROM {events_rows} \
         ON CONFLICT DO NOTHING RETURNING 1), inserted AS (SELECT count(*) AS n FROM recorded), \
         saved AS (INSERT INTO subscriptions ({columns}, updated_at_ms) \
         SELECT v.*, {now} FROM {subscription_rows} AS v ({columns}) \
         CROSS JOIN LATERAL (SELECT 1 FROM subscriptions WHERE id = v.id OFFSET 0) AS locked \
         WHERE (SELECT n FROM inserted) = {all} \
         ON CONFLICT (id) DO UPDATE SET {assignments}, updated_at_ms = excluded.updated_at_ms \
         RETURNING 1){tail}",
        events_columns = rows::EVENT_COLUMNS,
        events_rows = unnest(&EVENT_TYPES),
        columns = rows::SUBSCRIPTION_COLUMNS,
        subscription_rows = unnest_from(&SUBSCRIPTION_TYPES, events + 1),
        assignments = assignments.join(", "),
    )
}

/// `$1..$11` one array per column of [`rows::NOTIFICATION_CHANGE_COLUMNS`]
/// but the last, `$12` created at: [`rows::INSERT_NOTIFICATION`] for each
/// row, inserted in array order so their ids follow it.
static INSERT_NOTIFICATIONS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO notifications ({}, next_attempt_at_ms) \
         SELECT {columns}, $12, $12 FROM {} WITH ORDINALITY AS n ({columns}, i) ORDER BY n.i \
         RETURNING id, customer_id",
        rows::NOTIFICATION_CHANGE_COLUMNS,
        unnest(&NOTIFICATION_TYPES),
        columns = notification_columns_but_created(),
    )
});

/// The PostgreSQL types of [`rows::NOTIFICATION_CHANGE_COLUMNS`] but the
/// last (`created_at_ms`, one value for all rows).
const NOTIFICATION_TYPES: [&str; 11] = [
    "text", "text", "text", "text", "text", "text", "bool", "bool", "int8", "int8", "text",
];

/// [`rows::NOTIFICATION_CHANGE_COLUMNS`] but the last (`created_at_ms`),
/// as the names of the unnested arrays.
fn notification_columns_but_created() -> &'static str {
    rows::NOTIFICATION_CHANGE_COLUMNS
        .rsplit_once(',')
        .expect("BUG: notifications have several columns")
        .0
}

/// Statements that look up several customers do it one customer at a
/// time, `unnest($n::text[]) AS k (customer_id) CROSS JOIN LATERAL (...)`
/// with `customer_id = k.customer_id` inside, rather than `customer_id =
/// ANY($n)`. Tollgate's connections use generic plans, made once per
/// connection from the statistics of that moment: on a new database, with
/// its tables empty and never analyzed, `ANY` was planned as a sequential
/// scan and kept as one while the table grew (10,000 subscriptions:
/// 4 million rows read in 800 scans by one reconciler catch-up). A
/// per-customer lookup is planned on the index whatever the statistics.
///
/// Every user linked to each customer of the array placeholder
/// `customers` (such as `$1`), directly or through a subscription, each
/// user once.
fn linked_users(customers: &str) -> String {
    format!(
        "SELECT DISTINCT l.user_id FROM unnest({customers}::text[]) AS k (customer_id) \
         CROSS JOIN LATERAL (\
           SELECT user_id FROM customer_users WHERE customer_id = k.customer_id \
           UNION ALL SELECT user_id FROM subscriptions \
           WHERE customer_id = k.customer_id AND user_id IS NOT NULL) AS l"
    )
}

/// `$1` channel, `$2` customers, `$3` users, `$4` products, `$5` the
/// longest payload: the users linked to the customers (as
/// [`linked_users`] reads them), and a notification of all of them,
/// `*` when it would be longer. Users already given are not read back.
static PUBLISH_WITH_USERS: LazyLock<String> =
    LazyLock::new(|| format!("WITH {}", publish(1, "", "", None)));

/// [`PUBLISH_WITH_USERS`] but its `WITH`, with its placeholders numbered
/// from `$first`, and `select` and `from` (ending in a join) put first in
/// its last `SELECT` and its `FROM`: for a statement of more common table
/// expressions. With `written`, a condition saying the statement wrote
/// something, there is a row only when it holds, and a notification only
/// when it holds and something is touched.
fn publish(first: usize, select: &str, from: &str, written: Option<&str>) -> String {
    let [channel, customers, users, products, longest] =
        std::array::from_fn(|i| format!("${}", first + i));
    let (notify_if, row_if) = match written {
        None => ("true".to_owned(), String::new()),
        Some(written) => (
            format!(
                "{written} AND cardinality({customers}::text[]) + cardinality({users}::text[]) \
                 + cardinality({products}::text[]) > 0"
            ),
            format!("WHERE {written}"),
        ),
    };
    format!(
        "linked AS ({linked}), \
         payload AS (SELECT json_build_object('c', {customers}::text[], \
           'u', array(SELECT unnest({users}::text[]) UNION SELECT user_id FROM linked), \
           'p', {products}::text[])::text AS p) \
         SELECT {select}array(SELECT user_id FROM linked) FROM {from}payload \
           LEFT JOIN LATERAL (SELECT pg_notify({channel}, \
             CASE WHEN octet_length(payload.p) > {longest} THEN '*' ELSE payload.p END) \
             WHERE {notify_if}) AS sent ON true {row_if}",
        linked = linked_users(&customers),
    )
}

/// One column of `rows`, as the array a multi-row statement unnests.
fn column<'r, R, T>(rows: &'r [R], f: impl Fn(&'r R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

/// [`RECORD_AND_SAVE`]'s values (in `sql`, which may go on from there).
fn bind_record_and_save<'q>(
    sql: &'q str,
    events: &[NewEvent<'q>],
    rows: &'q [SubscriptionRow],
    now_ms: i64,
) -> Query<'q> {
    let query = bind_event_arrays(sqlx::query(sql), events);
    bind_subscription_arrays(query, rows)
        .bind(now_ms)
        .bind(events.len() as i64)
}

/// The values of [`publish`]: channel, `affected` and the longest payload.
fn bind_publication<'q>(query: Query<'q>, affected: &'q Affected) -> Query<'q> {
    query
        .bind(INVALIDATION_CHANNEL)
        .bind(&affected.customers)
        .bind(&affected.users)
        .bind(&affected.products)
        .bind(rows::MAX_PUBLICATION_BYTES as i32)
}

/// Binds `rows` column by column, one array each, in the order of
/// [`rows::SUBSCRIPTION_COLUMNS`].
fn bind_subscription_arrays<'q>(query: Query<'q>, rows: &'q [SubscriptionRow]) -> Query<'q> {
    query
        .bind(column(rows, |r| r.id.as_str()))
        .bind(column(rows, |r| r.customer_id.as_str()))
        .bind(column(rows, |r| r.status.as_deref()))
        .bind(column(rows, |r| r.current_period_end))
        .bind(column(rows, |r| r.paid_through))
        .bind(column(rows, |r| r.trial_end))
        .bind(column(rows, |r| r.cancel_at_period_end))
        .bind(column(rows, |r| r.past_due_since))
        .bind(column(rows, |r| r.cancel_at))
        .bind(column(rows, |r| r.pause_reason.as_deref()))
        .bind(column(rows, |r| r.items.as_str()))
        .bind(column(rows, |r| r.user_id.as_deref()))
        .bind(column(rows, |r| r.snapshot_created))
        .bind(column(rows, |r| r.snapshot_event_id.as_str()))
        .bind(column(rows, |r| r.verified_at))
        .bind(column(rows, |r| r.hold_review_id))
        .bind(column(rows, |r| r.recovered_at))
}

/// Binds `events` column by column, one array each, in the order of
/// [`rows::EVENT_COLUMNS`].
fn bind_event_arrays<'q>(query: Query<'q>, events: &[NewEvent<'q>]) -> Query<'q> {
    query
        .bind(column(events, |e| e.id))
        .bind(column(events, |e| e.event_type))
        .bind(column(events, |e| e.created))
        .bind(column(events, |e| e.livemode))
        .bind(column(events, |e| e.api_version))
        .bind(column(events, |e| e.payload))
        .bind(column(events, |e| e.payload_sha256))
        .bind(column(events, |e| e.content_sha256))
        .bind(column(events, |e| e.source))
        .bind(column(events, |e| e.received_at_ms))
        .bind(column(events, |e| e.change_key))
        .bind(column(events, |e| e.outcome.as_str()))
        .bind(column(events, |e| e.error))
        .bind(column(events, |e| e.processed_at_ms))
}

#[async_trait]
impl Tx for PgTx {
    #[tracing::instrument(level = "debug", skip_all)]
    async fn insert_event(&mut self, event: &NewEvent<'_>) -> Result<Recorded, StoreError> {
        let inserted = bind_event(sqlx::query(&rows::INSERT_EVENT), event)
            .fetch_optional(self.tx.conn())
            .await?;
        if inserted.is_some() {
            return Ok(Recorded::New);
        }
        let hashes: Option<(String, Option<String>)> = sqlx::query_as(rows::EVENT_HASHES)
            .bind(event.id)
            .fetch_optional(self.tx.conn())
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
            .fetch_optional(self.tx.conn())
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
            .execute(self.tx.conn())
            .await?;
        Ok(())
    }

    /// The upsert inserts a new subscription's placeholder (a concurrent
    /// insert of the same id waits for this one) or updates the row that
    /// exists, which locks it like `FOR UPDATE`: concurrent writers queue
    /// on it until this transaction ends.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn lock_subscription(
        &mut self,
        id: &str,
        customer_id: &str,
        now_ms: i64,
    ) -> Result<SubscriptionRecord, StoreError> {
        let row: SubscriptionRow = sqlx::query_as(&rows::LOCK_SUBSCRIPTION)
            .bind(id)
            .bind(customer_id)
            .bind(now_ms)
            .fetch_one(self.tx.conn())
            .await?;
        row.try_into()
    }

    /// Rows are locked in id order, as one statement; see
    /// [`PgTx::lock_subscription`](Tx::lock_subscription).
    #[tracing::instrument(level = "debug", skip_all)]
    async fn lock_subscriptions(
        &mut self,
        keys: &[(&str, &str)],
        now_ms: i64,
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let ids: Vec<&str> = keys.iter().map(|(id, _)| *id).collect();
        let customers: Vec<&str> = keys.iter().map(|(_, customer)| *customer).collect();
        let rows: Vec<SubscriptionRow> = sqlx::query_as(&LOCK_SUBSCRIPTIONS)
            .bind(ids)
            .bind(customers)
            .bind(now_ms)
            .fetch_all(self.tx.conn())
            .await?;
        rows::records(rows)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn record_and_save(
        &mut self,
        events: &[NewEvent<'_>],
        records: &[&SubscriptionRecord],
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let rows: Vec<SubscriptionRow> =
            records.iter().map(|r| SubscriptionRow::from(*r)).collect();
        let row = bind_record_and_save(&RECORD_AND_SAVE, events, &rows, now_ms)
            .fetch_one(self.tx.conn())
            .await?;
        let inserted: i64 = row.try_get(0)?;
        Ok(inserted as u64)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn record_save_and_publish(
        &mut self,
        events: &[NewEvent<'_>],
        records: &[&SubscriptionRecord],
        now_ms: i64,
        affected: &Affected,
    ) -> Result<(u64, Option<Vec<String>>), StoreError> {
        if affected.is_empty() {
            return Ok((self.record_and_save(events, records, now_ms).await?, None));
        }
        let rows: Vec<SubscriptionRow> =
            records.iter().map(|r| SubscriptionRow::from(*r)).collect();
        let query = bind_record_and_save(&RECORD_SAVE_AND_PUBLISH, events, &rows, now_ms);
        let row = bind_publication(query, affected)
            .fetch_one(self.tx.conn())
            .await?;
        let inserted: i64 = row.try_get(0)?;
        let users: Vec<String> = row.try_get(1)?;
        Ok((inserted as u64, Some(users)))
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn customer_records(
        &mut self,
        customer_id: &str,
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        let rows: Vec<SubscriptionRow> = sqlx::query_as(&rows::SUBSCRIPTIONS_OF_CUSTOMER)
            .bind(customer_id)
            .fetch_all(self.tx.conn())
            .await?;
        rows::records(rows)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn customers_records(
        &mut self,
        customers: &[&str],
    ) -> Result<Vec<SubscriptionRecord>, StoreError> {
        // One customer at a time: see linked_users.
        static SUBSCRIPTIONS_OF_CUSTOMERS: LazyLock<String> = LazyLock::new(|| {
            format!(
                "SELECT s.* FROM unnest($1::text[]) AS k (customer_id) CROSS JOIN LATERAL \
                 (SELECT {} FROM subscriptions WHERE customer_id = k.customer_id OFFSET 0) AS s",
                rows::SUBSCRIPTION_COLUMNS
            )
        });
        let rows: Vec<SubscriptionRow> = sqlx::query_as(&SUBSCRIPTIONS_OF_CUSTOMERS)
            .bind(customers)
            .fetch_all(self.tx.conn())
            .await?;
        rows::records(rows)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn set_hold(&mut self, subscription_id: &str, review_id: i64) -> Result<(), StoreError> {
        sqlx::query(rows::SET_HOLD)
            .bind(subscription_id)
            .bind(review_id)
            .execute(self.tx.conn())
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn release_holds(&mut self, review_id: i64) -> Result<Vec<String>, StoreError> {
        let customers: Vec<(String,)> = sqlx::query_as(rows::RELEASE_HOLDS)
            .bind(review_id)
            .fetch_all(self.tx.conn())
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
        bind_subscription(sqlx::query(&rows::SAVE_SUBSCRIPTION), &row)
            .bind(now_ms)
            .execute(self.tx.conn())
            .await?;
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
            .execute(self.tx.conn())
            .await?;
        Ok(())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn users_of_customer(&mut self, customer_id: &str) -> Result<Vec<String>, StoreError> {
        let users: Vec<(String,)> = sqlx::query_as(rows::USERS_OF_CUSTOMER)
            .bind(customer_id)
            .fetch_all(self.tx.conn())
            .await?;
        Ok(users.into_iter().map(|(u,)| u).collect())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn first_users_of_customers(
        &mut self,
        customers: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError> {
        // One customer at a time: see linked_users.
        const FIRST_USERS: &str = "SELECT k.customer_id, u.user_id \
             FROM unnest($1::text[]) AS k (customer_id) CROSS JOIN LATERAL (\
             SELECT min(user_id) AS user_id FROM (\
             SELECT user_id FROM customer_users WHERE customer_id = k.customer_id \
             UNION ALL SELECT user_id FROM subscriptions \
             WHERE customer_id = k.customer_id AND user_id IS NOT NULL) AS linked) AS u \
             WHERE u.user_id IS NOT NULL";
        Ok(sqlx::query_as(FIRST_USERS)
            .bind(customers)
            .fetch_all(self.tx.conn())
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
            .fetch_one(self.tx.conn())
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
            .execute(self.tx.conn())
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
            .execute(self.tx.conn())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn queue_notification(
        &mut self,
        change: &AccessChange,
        created_at_ms: i64,
    ) -> Result<i64, StoreError> {
        let row = bind_notification(
            sqlx::query(&rows::INSERT_NOTIFICATION),
            change,
            created_at_ms,
        )
        .fetch_one(self.tx.conn())
        .await?;
        Ok(row.try_get("id")?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn queue_notifications(
        &mut self,
        changes: &[AccessChange],
        created_at_ms: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        Ok(sqlx::query_as(&INSERT_NOTIFICATIONS)
            .bind(column(changes, |c| c.kind.as_str()))
            .bind(column(changes, |c| c.user_id.as_str()))
            .bind(column(changes, |c| c.customer_id.as_str()))
            .bind(column(changes, |c| c.subscription_id.as_str()))
            .bind(column(changes, |c| c.old_status.as_str()))
            .bind(column(changes, |c| c.new_status.as_str()))
            .bind(column(changes, |c| c.old_access))
            .bind(column(changes, |c| c.new_access))
            .bind(column(changes, |c| c.old_access_until))
            .bind(column(changes, |c| c.new_access_until))
            .bind(column(changes, |c| c.reason.as_str()))
            .bind(created_at_ms)
            .fetch_all(self.tx.conn())
            .await?)
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
            .execute(self.tx.conn())
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
            .execute(self.tx.conn())
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
            .bind(products)
            .fetch_all(self.tx.conn())
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
            .fetch_optional(self.tx.conn())
            .await?;
        Ok(stored.is_some())
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn set_state(&mut self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let query = match value {
            Some(value) => sqlx::query(rows::SET_STATE).bind(key).bind(value),
            None => sqlx::query(rows::DELETE_STATE).bind(key),
        };
        query.execute(self.tx.conn()).await?;
        Ok(())
    }

    /// `pg_notify` is delivered at commit, and only if the transaction
    /// commits.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn record_audit(&mut self, entry: &NewAudit<'_>) -> Result<i64, StoreError> {
        let (id,): (i64,) = sqlx::query_as(rows::INSERT_AUDIT)
            .bind(entry.at_ms)
            .bind(entry.actor)
            .bind(entry.action)
            .bind(entry.target)
            .bind(entry.note)
            .fetch_one(self.tx.conn())
            .await?;
        Ok(id)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn publish_changes(&mut self, affected: &Affected) -> Result<(), StoreError> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(INVALIDATION_CHANNEL)
            .bind(rows::publication(affected))
            .execute(self.tx.conn())
            .await?;
        Ok(())
    }

    /// One round trip where the default takes two: the users are read,
    /// the payload built as [`rows::publication`] builds it, and sent.
    #[tracing::instrument(level = "debug", skip_all)]
    async fn publish_with_users(&mut self, affected: &Affected) -> Result<Vec<String>, StoreError> {
        let row = bind_publication(sqlx::query(&PUBLISH_WITH_USERS), affected)
            .fetch_one(self.tx.conn())
            .await?;
        Ok(row.try_get(0)?)
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn savepoint(&mut self) -> Result<(), StoreError> {
        self.tx.savepoint().await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError> {
        self.tx.rollback_to_savepoint().await
    }

    #[tracing::instrument(level = "debug", skip_all)]
    async fn commit(self: Box<Self>) -> Result<(), StoreError> {
        self.tx.commit().await
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
            bound(bind_notification(sqlx::query(""), &change, 1)),
            column_count(rows::NOTIFICATION_CHANGE_COLUMNS)
        );
        // The multi-row statements: one array, and one type, per column.
        assert_eq!(
            bound(bind_subscription_arrays(
                sqlx::query(""),
                std::slice::from_ref(&row)
            )),
            column_count(rows::SUBSCRIPTION_COLUMNS)
        );
        assert_eq!(
            SUBSCRIPTION_TYPES.len(),
            column_count(rows::SUBSCRIPTION_COLUMNS)
        );
        assert_eq!(
            bound(bind_event_arrays(sqlx::query(""), &[event])),
            column_count(rows::EVENT_COLUMNS)
        );
        assert_eq!(EVENT_TYPES.len(), column_count(rows::EVENT_COLUMNS));
        assert_eq!(
            NOTIFICATION_TYPES.len(),
            column_count(notification_columns_but_created())
        );
        assert_eq!(
            NOTIFICATION_TYPES.len() + 1,
            column_count(rows::NOTIFICATION_CHANGE_COLUMNS)
        );
    }
}
