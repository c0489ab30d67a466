//! What both backends share because it is identical for both: the stored
//! row types and their conversions, the column lists, and the statements
//! both accept unchanged (`$N` placeholders work in SQLite too).
//!
//! Each statement here names its binds in its doc comment; the backends
//! bind them in `sqlite/` and `postgres/`. Statements only one backend runs,
//! or that differ between them (row locks, claims, `pg_notify`), live in
//! the function that binds them.
//!
//! A new `subscriptions` column is added to the migrations, to
//! [`SubscriptionRow`] and [`SUBSCRIPTION_COLUMNS`] (same place in both),
//! to the two conversions below, and to each backend's `bind_subscription`;
//! the statements follow from the column list, and unit tests in each
//! backend check that its bind function binds one value per column.

use std::collections::HashMap;
use std::sync::LazyLock;

use crate::store::{StoreError, StoreEvent};
use crate::subject::{Affected, Subject};
use crate::subscription::{Item, PauseKind, Status, SubscriptionRecord};

/// A `subscriptions` row as stored: read with `FromRow`, written by each
/// backend's `bind_subscription`, in the order of [`SUBSCRIPTION_COLUMNS`].
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub(crate) struct SubscriptionRow {
    pub id: String,
    pub customer_id: String,
    pub status: Option<String>,
    pub current_period_end: Option<i64>,
    pub paid_through: Option<i64>,
    pub trial_end: Option<i64>,
    pub cancel_at_period_end: bool,
    pub past_due_since: Option<i64>,
    pub cancel_at: Option<i64>,
    /// [`PauseKind::as_str`], set only while paused.
    pub pause_reason: Option<String>,
    /// JSON list of [`Item`]s.
    pub items: String,
    pub user_id: Option<String>,
    pub snapshot_created: i64,
    pub snapshot_event_id: String,
    pub verified_at: i64,
    pub hold_review_id: Option<i64>,
    pub recovered_at: Option<i64>,
}

/// The columns of [`SubscriptionRow`], in its order. `id` comes first: the
/// key that `SAVE_SUBSCRIPTION` binds as `$1`.
pub(crate) const SUBSCRIPTION_COLUMNS: &str = "id, customer_id, status, current_period_end, \
     paid_through, trial_end, cancel_at_period_end, past_due_since, cancel_at, pause_reason, \
     items, user_id, snapshot_created, snapshot_event_id, verified_at, hold_review_id, \
     recovered_at";

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
            cancel_at: row.cancel_at,
            pause: row.pause_reason.as_deref().map(PauseKind::parse),
            past_due_since: row.past_due_since,
            recovered_at: row.recovered_at,
            items,
            user_id: row.user_id,
            snapshot_created: row.snapshot_created,
            snapshot_event_id: row.snapshot_event_id,
            verified_at: row.verified_at,
            hold_review_id: row.hold_review_id,
        })
    }
}

impl From<&SubscriptionRecord> for SubscriptionRow {
    fn from(r: &SubscriptionRecord) -> Self {
        SubscriptionRow {
            id: r.id.clone(),
            customer_id: r.customer_id.clone(),
            status: r.status.map(|s| s.as_str().to_owned()),
            current_period_end: r.current_period_end,
            paid_through: r.paid_through,
            trial_end: r.trial_end,
            cancel_at_period_end: r.cancel_at_period_end,
            past_due_since: r.past_due_since,
            cancel_at: r.cancel_at,
            pause_reason: r.pause.map(|p| p.as_str().to_owned()),
            items: serde_json::to_string(&r.items).expect("BUG: items always serialize"),
            user_id: r.user_id.clone(),
            snapshot_created: r.snapshot_created,
            snapshot_event_id: r.snapshot_event_id.clone(),
            verified_at: r.verified_at,
            hold_review_id: r.hold_review_id,
            recovered_at: r.recovered_at,
        }
    }
}

pub(crate) fn records(rows: Vec<SubscriptionRow>) -> Result<Vec<SubscriptionRecord>, StoreError> {
    rows.into_iter().map(SubscriptionRecord::try_from).collect()
}

/// The columns of a [`NewEvent`](crate::store::NewEvent), in the order each backend's `bind_event`
/// binds them.
pub(crate) const EVENT_COLUMNS: &str = "id, type, created, livemode, api_version, payload, \
     payload_sha256, content_sha256, source, received_at_ms, change_key, outcome, error, \
     processed_at_ms";

/// The columns of an [`AccessChange`](crate::access_change::AccessChange) and its `created_at_ms`, in the order
/// each backend's `bind_notification` binds them.
pub(crate) const NOTIFICATION_CHANGE_COLUMNS: &str = "kind, user_id, customer_id, \
     subscription_id, old_status, new_status, old_access, new_access, old_access_until, \
     new_access_until, reason, created_at_ms";

/// The columns of [`crate::store::NotificationRow`], in its order.
pub(crate) const NOTIFICATION_COLUMNS: &str = "id, kind, user_id, customer_id, \
     subscription_id, old_status, new_status, old_access, new_access, old_access_until, \
     new_access_until, reason, created_at_ms, acked_at_ms, attempts, dead, last_error";

/// The columns of [`crate::store::ReviewRow`], in its order.
const REVIEW_COLUMNS: &str = "id, subject, subscription_id, event_id, reason, details, \
     created_at_ms, resolved_at_ms, resolution, refresh_outcome";

/// `$1, $2, ..., $n`.
fn placeholders(n: usize) -> String {
    (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// How many columns a column list names.
pub(crate) fn column_count(columns: &str) -> usize {
    columns.split(',').count()
}

// Subscriptions.

/// `$1` user id: subscriptions whose metadata names the user, and those of
/// customers linked to the user; one found both ways comes twice (read it
/// with [`user_records`]). SQLite's; PostgreSQL has its own (see its
/// store).
///
/// `UNION ALL` and a join, not `UNION` and `IN (SELECT ...)`: SQLite
/// builds a temporary B-tree for each of those (to remove duplicates, and
/// to hold the subquery's customers), on every read. Under callgrind they
/// were two thirds of a cold read's instructions in `sqlite3_step`.
pub(crate) static SUBSCRIPTIONS_OF_USER: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE user_id = $1 \
         UNION ALL SELECT {} FROM customer_users AS l \
         JOIN subscriptions AS s ON s.customer_id = l.customer_id WHERE l.user_id = $1",
        qualified_subscription_columns("s")
    )
});

/// [`SUBSCRIPTION_COLUMNS`], each as `table.column`.
pub(crate) fn qualified_subscription_columns(table: &str) -> String {
    SUBSCRIPTION_COLUMNS
        .split(',')
        .map(|column| format!("{table}.{}", column.trim()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The records of the rows of a user's subscriptions read both ways
/// ([`SUBSCRIPTIONS_OF_USER`]): each subscription once, in id order.
pub(crate) fn user_records(
    mut rows: Vec<SubscriptionRow>,
) -> Result<Vec<SubscriptionRecord>, StoreError> {
    rows.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    rows.dedup_by(|a, b| a.id == b.id);
    records(rows)
}

/// A subscription row read for one of several subjects at once
/// ([`crate::store::Store::subscriptions_of_subjects`]), with the user or
/// customer id it was read for.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct KeyedSubscriptionRow {
    pub subject_key: String,
    #[sqlx(flatten)]
    pub row: SubscriptionRow,
}

/// The distinct user ids and customer ids among `subjects`, to bind.
pub(crate) fn subject_keys(subjects: &[Subject]) -> (Vec<String>, Vec<String>) {
    let (mut users, mut customers) = (Vec::new(), Vec::new());
    for subject in subjects {
        match subject {
            Subject::User(id) => users.push(id.clone()),
            Subject::Customer(id) => customers.push(id.clone()),
        }
    }
    for keys in [&mut users, &mut customers] {
        keys.sort_unstable();
        keys.dedup();
    }
    (users, customers)
}

/// Each subject's records, in `subjects`' order, from the rows read for
/// its users (`users`) and its customers (`customers`): each user's as
/// [`user_records`] gives them.
pub(crate) fn subjects_records(
    subjects: &[Subject],
    users: Vec<KeyedSubscriptionRow>,
    customers: Vec<KeyedSubscriptionRow>,
) -> Result<Vec<Vec<SubscriptionRecord>>, StoreError> {
    fn by_key(rows: Vec<KeyedSubscriptionRow>) -> HashMap<String, Vec<SubscriptionRow>> {
        let mut map: HashMap<String, Vec<SubscriptionRow>> = HashMap::new();
        for keyed in rows {
            map.entry(keyed.subject_key).or_default().push(keyed.row);
        }
        map
    }
    let (users, customers) = (by_key(users), by_key(customers));
    subjects
        .iter()
        .map(|subject| match subject {
            Subject::User(id) => user_records(users.get(id).cloned().unwrap_or_default()),
            Subject::Customer(id) => records(customers.get(id).cloned().unwrap_or_default()),
        })
        .collect()
}

/// `$1` customer id.
pub(crate) static SUBSCRIPTIONS_OF_CUSTOMER: LazyLock<String> = LazyLock::new(|| {
    format!("SELECT {SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE customer_id = $1")
});

/// No binds.
pub(crate) const NON_TERMINAL_SUBSCRIPTIONS: &str = "SELECT id FROM subscriptions \
     WHERE status IS NULL OR status NOT IN ('canceled', 'incomplete_expired') ORDER BY id";

/// No binds.
pub(crate) const UNLINKED_CUSTOMERS: &str = "SELECT s.customer_id, MIN(s.id) \
     FROM subscriptions s \
     WHERE (s.status IS NULL OR s.status NOT IN ('canceled', 'incomplete_expired')) \
     AND s.user_id IS NULL \
     AND NOT EXISTS (SELECT 1 FROM customer_users c WHERE c.customer_id = s.customer_id) \
     GROUP BY s.customer_id ORDER BY s.customer_id";

/// `$1` id, `$2` customer id, `$3` now: the subscription's row, an empty
/// placeholder when it is new, locked until commit. The no-op update is
/// what makes an upsert return (and, on PostgreSQL, lock) a row that
/// exists, also one a concurrent transaction has just inserted. It sets a
/// column no index holds: setting `id`, SQLite rewrote the row's entry in
/// the primary key's index, one more page in every commit's WAL.
pub(crate) static LOCK_SUBSCRIPTION: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO subscriptions (id, customer_id, updated_at_ms) VALUES ($1, $2, $3) \
         ON CONFLICT (id) DO {NO_OP_UPDATE} RETURNING {SUBSCRIPTION_COLUMNS}"
    )
});

/// The update of [`LOCK_SUBSCRIPTION`] and its multi-row forms.
pub(crate) const NO_OP_UPDATE: &str = "UPDATE SET updated_at_ms = subscriptions.updated_at_ms";

/// [`SUBSCRIPTION_COLUMNS`] as `$1..` (`$1`, the id, is the key), then
/// `updated_at_ms`.
pub(crate) static SAVE_SUBSCRIPTION: LazyLock<String> =
    LazyLock::new(|| save_subscription(|_| true));

/// [`SAVE_SUBSCRIPTION`] setting only the columns `keep` keeps; bound the
/// same way (SQLite leaves the numbers a statement does not name unused).
pub(crate) fn save_subscription(keep: impl Fn(&str) -> bool) -> String {
    format!(
        "UPDATE subscriptions SET {}, updated_at_ms = ${} WHERE id = $1",
        assignments_where(keep, |i, _| format!("${}", i + 1)),
        column_count(SUBSCRIPTION_COLUMNS) + 1
    )
}

/// `customer_id = $n, ...`: every column of [`SUBSCRIPTION_COLUMNS`] but
/// the id, set from the row bound from `$first` (its id there).
pub(crate) fn subscription_assignments(first: usize) -> String {
    assignments_where(|_| true, |i, _| format!("${}", i + first))
}

/// `column = value(i, column)` for each column of [`SUBSCRIPTION_COLUMNS`]
/// but the id that `keep` keeps (`i` its place in the list, the id's 0).
pub(crate) fn assignments_where(
    keep: impl Fn(&str) -> bool,
    value: impl Fn(usize, &str) -> String,
) -> String {
    let assignments: Vec<String> = SUBSCRIPTION_COLUMNS
        .split(',')
        .map(str::trim)
        .enumerate()
        .skip(1)
        .filter(|(_, column)| keep(column))
        .map(|(i, column)| format!("{column} = {}", value(i, column)))
        .collect();
    assignments.join(", ")
}

/// True of a subscription stored as the row bound from `$first` (every
/// column of [`SUBSCRIPTION_COLUMNS`], NULLs equal): the optimistic check
/// of [`super::Store::record_and_save_if_unchanged`].
pub(crate) fn stored_as(first: usize) -> String {
    let values: Vec<String> = (first..first + column_count(SUBSCRIPTION_COLUMNS))
        .map(|i| format!("${i}"))
        .collect();
    format!(
        "id = ${first} AND ({SUBSCRIPTION_COLUMNS}) IS NOT DISTINCT FROM ({})",
        values.join(", ")
    )
}

/// `$1` subscription id, `$2` review id.
pub(crate) const SET_HOLD: &str = "UPDATE subscriptions SET hold_review_id = $2 WHERE id = $1";

/// `$1` review id; returns the customer of each released subscription.
pub(crate) const RELEASE_HOLDS: &str = "UPDATE subscriptions SET hold_review_id = NULL \
     WHERE hold_review_id = $1 RETURNING customer_id";

// Customers and users.

/// `$1` customer id, `$2` user id, `$3` now.
pub(crate) const LINK_CUSTOMER: &str =
    "INSERT INTO customer_users (customer_id, user_id, linked_at_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (customer_id, user_id) DO NOTHING";

/// `$1` customer id.
pub(crate) const USERS_OF_CUSTOMER: &str =
    "SELECT user_id FROM customer_users WHERE customer_id = $1 \
     UNION SELECT user_id FROM subscriptions WHERE customer_id = $1 AND user_id IS NOT NULL";

// Events.

/// [`EVENT_COLUMNS`] as `$1..$14`, the outcome included. Returns the id
/// only when this call inserted the row.
pub(crate) static INSERT_EVENT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "INSERT INTO events ({EVENT_COLUMNS}) VALUES ({}) \
         ON CONFLICT DO NOTHING RETURNING id",
        placeholders(column_count(EVENT_COLUMNS))
    )
});

/// `$1` id: the hashes a duplicate is compared against. No row when the
/// insert met a twin's `change_key` instead.
pub(crate) const EVENT_HASHES: &str =
    "SELECT payload_sha256, content_sha256 FROM events WHERE id = $1";

/// `$1` id, `$2` change key.
pub(crate) const KNOWS_CHANGE: &str =
    "SELECT EXISTS (SELECT 1 FROM events WHERE id = $1 OR change_key = $2)";

/// `$1` product, `$2` features (JSON list), `$3` when the read began (unix
/// ms). Only a read begun later than what is stored replaces it.
pub(crate) const SAVE_PRODUCT_FEATURES: &str =
    "INSERT INTO product_features (product_id, features, read_at_ms) VALUES ($1, $2, $3) \
     ON CONFLICT (product_id) DO UPDATE SET features = EXCLUDED.features, read_at_ms = EXCLUDED.read_at_ms \
     WHERE product_features.read_at_ms < EXCLUDED.read_at_ms";

/// `$1` product, `$2` as of when it changed (unix ms). A map read up to
/// then is forgotten, and no read begun by then can be stored.
pub(crate) const FORGET_PRODUCT_FEATURES: &str =
    "INSERT INTO product_features (product_id, features, read_at_ms) VALUES ($1, NULL, $2) \
     ON CONFLICT (product_id) DO UPDATE SET features = NULL, read_at_ms = EXCLUDED.read_at_ms \
     WHERE product_features.read_at_ms <= EXCLUDED.read_at_ms";

/// `$1` customer, `$2` JSON feature lookup keys, `$3` as of (unix ms),
/// `$4` now. Returns the customer when stored: an older summary than the
/// one stored is not.
pub(crate) const SAVE_ENTITLEMENT_SUMMARY: &str =
    "INSERT INTO entitlement_summaries (customer_id, features, as_of_ms, updated_at_ms) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (customer_id) DO UPDATE SET features = EXCLUDED.features, as_of_ms = EXCLUDED.as_of_ms, updated_at_ms = EXCLUDED.updated_at_ms \
     WHERE entitlement_summaries.as_of_ms <= EXCLUDED.as_of_ms \
     RETURNING customer_id";

/// Products with a known map, in id order.
pub(crate) const KNOWN_PRODUCTS: &str =
    "SELECT product_id FROM product_features WHERE features IS NOT NULL ORDER BY product_id";

/// Reads `(product or customer, JSON features)` rows back into feature
/// lists.
pub(crate) fn feature_maps(
    rows: Vec<(String, String)>,
) -> Result<Vec<(String, Vec<String>)>, StoreError> {
    rows.into_iter()
        .map(|(product, json)| {
            let features: Vec<String> = serde_json::from_str(&json)
                .map_err(|e| StoreError::Corrupt(format!("{product} features: {e}")))?;
            Ok((product, features))
        })
        .collect()
}

/// `$1` id.
pub(crate) const LOAD_EVENT: &str = "SELECT payload, outcome FROM events WHERE id = $1";

/// `$1` id, `$2` outcome, `$3` error, `$4` processed at.
pub(crate) const FINISH_EVENT: &str =
    "UPDATE events SET outcome = $2, error = $3, processed_at_ms = $4 WHERE id = $1";

/// `$1` id; the columns of [`crate::store::EventRow`].
pub(crate) const GET_EVENT: &str = "SELECT id, type, created, livemode, api_version, \
     payload_sha256, source, received_at_ms, processed_at_ms, outcome, error \
     FROM events WHERE id = $1";

// Reviews.

/// `$1` subject, `$2` subscription id, `$3` event id, `$4` reason,
/// `$5` details, `$6` created at; returns the new id.
pub(crate) const INSERT_REVIEW: &str = "INSERT INTO needs_manual_review \
     (subject, subscription_id, event_id, reason, details, created_at_ms) \
     VALUES ($1, $2, $3, $4, $5, $6) RETURNING id";

/// `$1` review id, `$2` outcome.
pub(crate) const NOTE_REVIEW_OUTCOME: &str =
    "UPDATE needs_manual_review SET refresh_outcome = $2 WHERE id = $1";

/// `$1` review id, `$2` now, `$3` resolution; only an open review.
pub(crate) const RESOLVE_REVIEW: &str = "UPDATE needs_manual_review SET resolved_at_ms = $2, \
     resolution = $3 WHERE id = $1 AND resolved_at_ms IS NULL";

/// `$1` review id.
pub(crate) static GET_REVIEW: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {REVIEW_COLUMNS} FROM needs_manual_review WHERE id = $1"));

/// `$1` [`review_state`], `$2` subject or `''` for any, `$3` limit, `$4`
/// reason or `''` for any, `$5` before this id or 0; newest first.
pub(crate) static FIND_REVIEWS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {REVIEW_COLUMNS} FROM needs_manual_review \
         WHERE ($1 = 0 OR ($1 = 1 AND resolved_at_ms IS NULL) \
         OR ($1 = 2 AND resolved_at_ms IS NOT NULL)) \
         AND ($2 = '' OR subject = $2 OR subscription_id = $2) \
         AND ($4 = '' OR reason = $4) AND ($5 = 0 OR id < $5) ORDER BY id DESC LIMIT $3"
    )
});

/// The `$1` of [`FIND_REVIEWS`]: 0 all, 1 open only, 2 resolved only.
pub(crate) fn review_state(open: Option<bool>) -> i64 {
    match open {
        None => 0,
        Some(true) => 1,
        Some(false) => 2,
    }
}

// Notifications.

/// [`NOTIFICATION_CHANGE_COLUMNS`] as `$1..$12`; the first attempt is due
/// at creation. Returns the new id.
pub(crate) static INSERT_NOTIFICATION: LazyLock<String> = LazyLock::new(|| {
    let n = column_count(NOTIFICATION_CHANGE_COLUMNS);
    format!(
        "INSERT INTO notifications ({NOTIFICATION_CHANGE_COLUMNS}, next_attempt_at_ms) \
         VALUES ({}, ${n}) RETURNING id",
        placeholders(n)
    )
});

/// `$1` after id, `$2` limit, `$3` include acknowledged; oldest first.
pub(crate) static LIST_NOTIFICATIONS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications WHERE id > $1 \
         AND ($3 OR acked_at_ms IS NULL) ORDER BY id LIMIT $2"
    )
});

/// `$1` id, `$2` now; only an unacknowledged notification.
pub(crate) const ACK_NOTIFICATION: &str =
    "UPDATE notifications SET acked_at_ms = $2 WHERE id = $1 AND acked_at_ms IS NULL";

/// `$1` id, `$2` attempts, `$3` next attempt at, `$4` error, `$5` dead;
/// ends the lease.
pub(crate) const DELIVERY_FAILED: &str = "UPDATE notifications SET attempts = $2, \
     next_attempt_at_ms = $3, last_error = $4, dead = $5, lease_until_ms = 0 WHERE id = $1";

/// `$1` false, `$2` true (a boolean literal is spelled differently in each
/// backend): queued, dead, open reviews.
pub(crate) const COUNTS: &str = "SELECT \
     (SELECT COUNT(*) FROM notifications WHERE acked_at_ms IS NULL AND dead = $1), \
     (SELECT COUNT(*) FROM notifications WHERE dead = $2), \
     (SELECT COUNT(*) FROM needs_manual_review WHERE resolved_at_ms IS NULL)";

// Service state.

/// `$1` key.
pub(crate) const GET_STATE: &str = "SELECT value FROM service_state WHERE key = $1";

/// `$1` key, `$2` value.
pub(crate) const SET_STATE: &str = "INSERT INTO service_state (key, value) VALUES ($1, $2) \
     ON CONFLICT (key) DO UPDATE SET value = excluded.value";

/// `$1` key.
pub(crate) const DELETE_STATE: &str = "DELETE FROM service_state WHERE key = $1";

// Publication between replicas.

/// The `pg_notify` payload other replicas receive for `affected`: JSON of
/// the ids, or `*` (forget everything) when it would not fit a
/// notification (8000 bytes).
pub(crate) fn publication(affected: &Affected) -> String {
    let json =
        serde_json::json!({ "c": affected.customers, "u": affected.users, "p": affected.products })
            .to_string();
    if json.len() > MAX_PUBLICATION_BYTES {
        "*".to_owned()
    } else {
        json
    }
}

/// The longest [`publication`] sent as it is, under PostgreSQL's 8000.
pub(crate) const MAX_PUBLICATION_BYTES: usize = 7000;

/// Reads a payload made by [`publication`].
pub(crate) fn published(payload: &str) -> StoreEvent {
    let value = serde_json::from_str::<serde_json::Value>(payload).ok();
    let ids = |k: &str| -> Option<Vec<String>> {
        value
            .as_ref()?
            .get(k)?
            .as_array()?
            .iter()
            .map(|x| x.as_str().map(str::to_owned))
            .collect()
    };
    // `p` is newer than `c` and `u`: a replica that doesn't send it changed
    // no product.
    match (ids("c"), ids("u"), ids("p")) {
        (Some(customers), Some(users), products) => StoreEvent::Changed(Affected {
            customers,
            users,
            products: products.unwrap_or_default(),
        }),
        _ => StoreEvent::Unknown,
    }
}

// The admin console's reads and its audit log.

/// The columns of [`crate::store::AuditRow`], in its order.
const AUDIT_COLUMNS: &str = "id, at_ms, actor, action, target, note";

/// `$1` at, `$2` actor, `$3` action, `$4` target, `$5` note; returns the id.
pub(crate) const INSERT_AUDIT: &str = "INSERT INTO admin_audit \
     (at_ms, actor, action, target, note) VALUES ($1, $2, $3, $4, $5) RETURNING id";

/// `$1` target or `''` for any, `$2` before this id or 0 for the newest,
/// `$3` limit; newest first.
pub(crate) static LIST_AUDIT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {AUDIT_COLUMNS} FROM admin_audit WHERE ($1 = '' OR target = $1) \
         AND ($2 = 0 OR id < $2) ORDER BY id DESC LIMIT $3"
    )
});

/// `$1` a LIKE pattern made by [`payload_mentions`], `$2` limit; the
/// columns of [`crate::store::EventRow`], newest first. A scan of the
/// payloads: events carry no subscription column, and this is read by a
/// person, one page at a time.
pub(crate) const EVENTS_MENTIONING: &str = "SELECT id, type, created, livemode, api_version, \
     payload_sha256, source, received_at_ms, processed_at_ms, outcome, error \
     FROM events WHERE payload LIKE $1 ESCAPE '\\' \
     ORDER BY created DESC, received_at_ms DESC LIMIT $2";

/// The LIKE pattern of a payload that names `id` as a JSON string.
pub(crate) fn payload_mentions(id: &str) -> String {
    let mut pattern = String::from("%\"");
    for c in id.chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push_str("\"%");
    pattern
}

/// `$1` id.
pub(crate) const EVENT_PAYLOAD: &str = "SELECT payload FROM events WHERE id = $1";

/// No binds: open reviews per reason, most first.
pub(crate) const OPEN_REVIEWS_BY_REASON: &str = "SELECT reason, COUNT(*) \
     FROM needs_manual_review WHERE resolved_at_ms IS NULL \
     GROUP BY reason ORDER BY COUNT(*) DESC, reason";

/// `$1` received since (ms).
pub(crate) const FAILED_EVENTS_SINCE: &str =
    "SELECT COUNT(*) FROM events WHERE outcome = 'failed' AND received_at_ms >= $1";

/// `$1` a user or customer id, `$2` limit: unacknowledged notifications
/// about it, oldest first.
pub(crate) static NOTIFICATIONS_ABOUT: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {NOTIFICATION_COLUMNS} FROM notifications \
         WHERE acked_at_ms IS NULL AND (user_id = $1 OR customer_id = $1) ORDER BY id LIMIT $2"
    )
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_subscription_assigns_every_column_after_the_key() {
        assert_eq!(
            SAVE_SUBSCRIPTION.as_str(),
            "UPDATE subscriptions SET customer_id = $2, status = $3, current_period_end = $4, \
             paid_through = $5, trial_end = $6, cancel_at_period_end = $7, \
             past_due_since = $8, cancel_at = $9, pause_reason = $10, items = $11, \
             user_id = $12, snapshot_created = $13, snapshot_event_id = $14, \
             verified_at = $15, hold_review_id = $16, recovered_at = $17, updated_at_ms = $18 \
             WHERE id = $1"
        );
    }

    #[test]
    fn inserts_have_one_placeholder_per_column() {
        assert!(
            INSERT_EVENT.contains("($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)")
        );
        assert!(INSERT_NOTIFICATION
            .contains("VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)"));
    }

    #[test]
    fn a_record_survives_the_row_both_ways() {
        let mut record = SubscriptionRecord::placeholder("sub_1", "cus_1");
        record.status = Some(Status::PastDue);
        record.items = vec![Item {
            price_id: "price_1".to_owned(),
            product_id: Some("prod_1".to_owned()),
            lookup_key: None,
        }];
        record.hold_review_id = Some(7);
        let row = SubscriptionRow::from(&record);
        assert_eq!(row.status.as_deref(), Some("past_due"));
        assert_eq!(SubscriptionRecord::try_from(row).unwrap(), record);
    }

    #[test]
    fn a_payload_pattern_matches_the_id_literally() {
        assert_eq!(payload_mentions("sub_1"), "%\"sub\\_1\"%");
        assert_eq!(payload_mentions("a%b\\"), "%\"a\\%b\\\\\"%");
    }

    #[test]
    fn a_publication_reads_back_as_what_changed() {
        let affected = Affected {
            customers: vec!["cus_1".to_owned()],
            users: vec!["user_1".to_owned()],
            products: vec!["prod_1".to_owned()],
        };
        assert_eq!(
            published(&publication(&affected)),
            StoreEvent::Changed(affected)
        );
        let many = Affected {
            customers: (0..1000).map(|i| format!("cus_{i}")).collect(),
            ..Affected::default()
        };
        assert_eq!(publication(&many), "*");
        assert_eq!(published("*"), StoreEvent::Unknown);
    }
}
