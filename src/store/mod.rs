//! The store: one trait, two implementations (SQLite and PostgreSQL).
//!
//! Writes go through a [`Tx`]: the caller begins a transaction, calls small
//! verb-named methods, and commits, so what commits together is visible where
//! it happens (see [`crate::ledger`]). Reads that need no transaction are
//! methods on [`Store`].
//!
//! Both backends use runtime queries with `FromRow` rows (no database is
//! needed to build) and embed their own migrations (`migrations/sqlite`,
//! `migrations/postgres`).
//!
//! Each backend is written out plainly: `sqlite.rs` and `postgres.rs` open
//! it, `sqlite/store.rs` and `postgres/store.rs` implement [`Store`],
//! `sqlite/tx.rs` and `postgres/tx.rs` implement [`Tx`]. They share only
//! what is identical for both: the transaction they wrap (`owned_tx.rs`),
//! and the row types, conversions, column lists and statements both accept
//! unchanged (`rows.rs`). `tests/api/store_suite/` runs one behaviour suite
//! against both.

mod lease_pool;
mod owned_tx;
mod postgres;
mod rows;
mod sqlite;

use std::time::Duration;

use async_trait::async_trait;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::access_change::AccessChange;
use crate::outcome::{Outcome, ReviewReason};
use crate::subject::{Affected, Subject};
use crate::subscription::SubscriptionRecord;

/// What went wrong in the store. Every variant means the write did not
/// happen. What the caller does depends on the variant:
/// [`Unavailable`](StoreError::Unavailable) is transient (503, retry),
/// [`Rejected`](StoreError::Rejected) is permanent for this input (record it
/// as failed, never 503 forever), and [`Corrupt`](StoreError::Corrupt) and
/// [`Bug`](StoreError::Bug) are Tollgate's fault (500, logged).
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Locked, full, read-only, unreachable or otherwise failing database;
    /// also a transaction PostgreSQL failed to break a deadlock (SQLSTATE
    /// 40P01) or a serialization failure (40001), which ledger writers
    /// meeting on a row can cause: a retry can succeed.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// The database refused a value it will never accept (a NUL byte on
    /// PostgreSQL, an index entry over its size limit, a constraint): the
    /// same input fails the same way on every retry.
    #[error("database refused a value")]
    Rejected(#[source] sqlx::Error),
    /// A query or row that does not fit the code (a decode error, a missing
    /// row or column): a bug, not a reason for the sender to retry.
    #[error("store bug")]
    Bug(#[source] sqlx::Error),
    /// Stored data that Tollgate cannot read back: a bug or a manual edit.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("unsupported database url: {0}")]
    UnsupportedUrl(String),
    /// The database could not be opened at start. Says what was tried (a
    /// path, or host:port, database and user: never a password), the
    /// driver's error and, where one is obvious, the fix: one line.
    #[error("{target}: {error}{}", hint.as_ref().map(|h| format!(" ({h})")).unwrap_or_default())]
    Open {
        target: String,
        error: sqlx::Error,
        hint: Option<String>,
    },
    /// The first connection did not complete in time.
    #[error("{target}: no answer within {}s ({hint})", waited.as_secs())]
    OpenTimeout {
        target: String,
        waited: Duration,
        hint: String,
    },
    #[error("migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

impl StoreError {
    /// Whether retrying the same operation later can succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

/// Whether a database error is about the value rather than the database:
/// PostgreSQL SQLSTATE classes 22 (data exception, e.g. a NUL byte), 23
/// (integrity constraint) and 54 (program limit, e.g. an index row too
/// large); SQLite's TOOBIG, CONSTRAINT, MISMATCH and RANGE.
fn refuses_the_value(db: &dyn sqlx::error::DatabaseError) -> bool {
    use sqlx::error::ErrorKind;
    if !matches!(db.kind(), ErrorKind::Other) {
        // Unique, foreign key, not-null and check violations.
        return true;
    }
    let Some(code) = db.code() else {
        return false;
    };
    if db
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .is_some()
    {
        return matches!(code.get(..2), Some("22" | "23" | "54"));
    }
    // SQLite: the primary result code is the low byte of an extended one.
    code.parse::<i32>()
        .is_ok_and(|c| matches!(c & 0xff, 18 | 19 | 20 | 25))
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        use sqlx::Error as E;
        match &e {
            E::Database(db) if refuses_the_value(db.as_ref()) => StoreError::Rejected(e),
            E::RowNotFound
            | E::ColumnNotFound(_)
            | E::ColumnIndexOutOfBounds { .. }
            | E::ColumnDecode { .. }
            | E::Decode(_)
            | E::Encode(_)
            | E::TypeNotFound { .. } => StoreError::Bug(e),
            _ => StoreError::Unavailable(e),
        }
    }
}

/// A verified event about to be recorded.
#[derive(Debug, Clone)]
pub struct NewEvent<'a> {
    pub id: &'a str,
    pub event_type: &'a str,
    pub created: i64,
    pub livemode: bool,
    pub api_version: Option<&'a str>,
    pub payload: &'a str,
    pub payload_sha256: &'a str,
    /// Hash of the event's canonical content, equal for the same event
    /// whether it came by webhook or from the events API.
    pub content_sha256: &'a str,
    /// `webhook`, `reconciler` or `replay`: where the event came in.
    pub source: &'a str,
    pub received_at_ms: i64,
    /// The change this event reports (see [`crate::event::Envelope::change_key`]):
    /// unique, so a thin event and its snapshot twin are recorded once.
    pub change_key: &'a str,
    /// How it was handled: an event is recorded once its effect is
    /// written, in the same transaction, so its row is written once.
    pub outcome: Outcome,
    pub error: Option<&'a str>,
    pub processed_at_ms: i64,
}

/// The result of trying to record an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    New,
    /// The id was already recorded; these are the hashes of what was stored.
    Duplicate {
        payload_sha256: String,
        content_sha256: Option<String>,
    },
    /// Another event reporting the same change (a thin event's snapshot
    /// twin, or the reverse) was recorded first.
    Twin,
}

/// A stored event, as the admin side sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct EventRow {
    pub id: String,
    #[sqlx(rename = "type")]
    pub event_type: String,
    pub created: i64,
    pub livemode: bool,
    pub api_version: Option<String>,
    pub payload_sha256: String,
    pub source: String,
    pub received_at_ms: i64,
    pub processed_at_ms: Option<i64>,
    pub outcome: String,
    pub error: Option<String>,
}

/// A new `needs_manual_review` record.
#[derive(Debug, Clone)]
pub struct NewReview<'a> {
    /// The customer (or user) the record concerns.
    pub subject: &'a str,
    pub subscription_id: Option<&'a str>,
    pub event_id: Option<&'a str>,
    pub reason: ReviewReason,
    pub details: &'a str,
    pub created_at_ms: i64,
}

/// A stored review record.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ReviewRow {
    pub id: i64,
    pub subject: String,
    pub subscription_id: Option<String>,
    pub event_id: Option<String>,
    pub reason: String,
    pub details: String,
    pub created_at_ms: i64,
    pub resolved_at_ms: Option<i64>,
    pub resolution: Option<String>,
    /// What a follow-up read of Stripe found, if one ran.
    pub refresh_outcome: Option<String>,
}

/// Which review records to list.
#[derive(Debug, Clone)]
pub struct ReviewFilter {
    /// `Some(true)` open only, `Some(false)` resolved only, `None` both.
    pub open: Option<bool>,
    /// A customer, user or subscription id.
    pub subject: Option<String>,
    pub limit: i64,
    /// One [`ReviewReason`] (as stored), or any.
    pub reason: Option<String>,
    /// Only reviews older than this id (the next page), or from the newest.
    pub before_id: Option<i64>,
}

/// A queued notification, as stored. What is pushed is
/// [`crate::notify::Payload`], built from it: renaming a column must not
/// change the public contract.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct NotificationRow {
    pub id: i64,
    pub kind: String,
    pub user_id: String,
    pub customer_id: String,
    pub subscription_id: String,
    pub old_status: String,
    pub new_status: String,
    pub old_access: bool,
    pub new_access: bool,
    pub old_access_until: i64,
    pub new_access_until: i64,
    pub reason: String,
    pub created_at_ms: i64,
    pub acked_at_ms: Option<i64>,
    /// Push attempts started so far (the current one included once claimed).
    pub attempts: i64,
    pub dead: bool,
    pub last_error: Option<String>,
}

/// One action taken through the admin console, about to be recorded.
#[derive(Debug, Clone)]
pub struct NewAudit<'a> {
    pub at_ms: i64,
    /// Who: a short label of the console session (never a secret).
    pub actor: &'a str,
    /// What: `resolve`, `release_hold`, `refresh`, `replay`.
    pub action: &'a str,
    /// On what: `review:ID` or `event:ID`.
    pub target: &'a str,
    pub note: &'a str,
}

/// A recorded console action.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub note: String,
}

/// Sizes an operator watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    pub queued_notifications: i64,
    pub dead_notifications: i64,
    pub open_reviews: i64,
}

/// One open write transaction. Dropping it without [`Tx::commit`] rolls back.
#[async_trait]
pub trait Tx: Send {
    /// Records an event once; a second call with the same id reports a
    /// duplicate, also when it races another transaction. The caller
    /// undoes what it wrote for a duplicate (see [`Tx::savepoint`]).
    async fn insert_event(&mut self, event: &NewEvent<'_>) -> Result<Recorded, StoreError>;
    /// A stored event's raw payload and outcome, for replay.
    async fn load_event(&mut self, id: &str) -> Result<Option<(String, String)>, StoreError>;
    /// Sets a recorded event's outcome again (a replay).
    async fn finish_event(
        &mut self,
        id: &str,
        outcome: Outcome,
        error: Option<&str>,
        processed_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Loads a subscription and locks it until commit, creating an empty
    /// placeholder when it is new, in one statement, so that concurrent
    /// writers queue on the same row.
    async fn lock_subscription(
        &mut self,
        id: &str,
        customer_id: &str,
        now_ms: i64,
    ) -> Result<SubscriptionRecord, StoreError>;
    /// [`Tx::lock_subscription`] for several subscriptions in one
    /// statement: `keys` are `(id, customer id)`, each id once. Their rows,
    /// in no particular order.
    async fn lock_subscriptions(
        &mut self,
        keys: &[(&str, &str)],
        now_ms: i64,
    ) -> Result<Vec<SubscriptionRecord>, StoreError>;
    /// Records several events with their outcomes (distinct ids and change
    /// keys) and, only when every one of them was new, stores several
    /// locked subscriptions whole ([`Tx::save_subscription`] for each id
    /// once; one never locked is stored nowhere). Says how many events it
    /// inserted: fewer than given when one of them (or its twin) is already
    /// recorded, also by a transaction that raced this one. The caller then
    /// undoes them all ([`Tx::rollback_to_savepoint`], or [`Tx::rollback`]
    /// when they were all the transaction held) and records them one at a
    /// time with [`Tx::insert_event`], which tells which. PostgreSQL
    /// does it in one statement, SQLite in two (sent as one string for a
    /// lone event and its subscription).
    async fn record_and_save(
        &mut self,
        events: &[NewEvent<'_>],
        records: &[&SubscriptionRecord],
        now_ms: i64,
    ) -> Result<u64, StoreError>;
    /// [`Tx::record_and_save`], and `affected` published as
    /// [`Tx::publish_with_users`] publishes it, for a transaction that
    /// writes nothing more: how many events were inserted, and the users
    /// read, or `None` when the publishing is left to the commit
    /// ([`Tx::publish_and_commit`]). PostgreSQL does it all in one
    /// statement (undone, notification too, with the events when they
    /// are undone); the others leave it to the commit.
    async fn record_save_and_publish(
        &mut self,
        events: &[NewEvent<'_>],
        records: &[&SubscriptionRecord],
        now_ms: i64,
        _affected: &Affected,
    ) -> Result<(u64, Option<Vec<String>>), StoreError> {
        Ok((self.record_and_save(events, records, now_ms).await?, None))
    }
    /// Every subscription of a customer, read inside the transaction.
    async fn customer_records(
        &mut self,
        customer_id: &str,
    ) -> Result<Vec<SubscriptionRecord>, StoreError>;
    /// Every subscription of each of `customers` (each once), read inside
    /// the transaction in one statement, in no particular order.
    async fn customers_records(
        &mut self,
        customers: &[&str],
    ) -> Result<Vec<SubscriptionRecord>, StoreError>;
    /// Keeps a subscription's access until review `review_id` is resolved.
    async fn set_hold(&mut self, subscription_id: &str, review_id: i64) -> Result<(), StoreError>;
    /// Lifts the holds of a review; returns the customers whose access changed.
    async fn release_holds(&mut self, review_id: i64) -> Result<Vec<String>, StoreError>;
    /// Stores a record previously returned by `lock_subscription`.
    async fn save_subscription(
        &mut self,
        record: &SubscriptionRecord,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Links a product user to a Stripe customer (idempotent).
    async fn link_customer(
        &mut self,
        customer_id: &str,
        user_id: &str,
        now_ms: i64,
    ) -> Result<(), StoreError>;
    /// Every user linked to a customer, directly or through a subscription.
    async fn users_of_customer(&mut self, customer_id: &str) -> Result<Vec<String>, StoreError>;
    /// The least user id linked to each of `customers` (directly or
    /// through a subscription), as `(customer, user)`, in one statement; a
    /// customer no user is linked to is left out. The least of
    /// [`Tx::users_of_customer`], so a notification names the same user
    /// whichever way it was queued.
    async fn first_users_of_customers(
        &mut self,
        customers: &[&str],
    ) -> Result<Vec<(String, String)>, StoreError>;
    /// Adds a review record; returns its id.
    async fn flag_review(&mut self, review: &NewReview<'_>) -> Result<i64, StoreError>;
    /// Records what a follow-up refresh found, keeping the review open.
    async fn note_review_outcome(
        &mut self,
        review_id: i64,
        outcome: &str,
    ) -> Result<(), StoreError>;
    /// Resolves an open review; false if it was not open.
    async fn resolve_review(
        &mut self,
        review_id: i64,
        resolution: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Queues an access-change notification; returns its id.
    async fn queue_notification(
        &mut self,
        change: &AccessChange,
        created_at_ms: i64,
    ) -> Result<i64, StoreError>;
    /// [`Tx::queue_notification`] for several changes, queued in their
    /// order in one statement; returns each new id with its customer.
    async fn queue_notifications(
        &mut self,
        changes: &[AccessChange],
        created_at_ms: i64,
    ) -> Result<Vec<(i64, String)>, StoreError>;
    /// Stores `product`'s whole feature map from a read begun at
    /// `read_at_ms`, unless a later read or forget is stored.
    async fn save_product_features(
        &mut self,
        product: &str,
        features: &[String],
        read_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Forgets `product`'s feature map as of `changed_at_ms`, so the next
    /// feature check reads it again; a read begun by then can no longer be
    /// stored.
    async fn forget_product_features(
        &mut self,
        product: &str,
        changed_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// The known feature maps of `products`, read inside the transaction.
    async fn product_features(
        &mut self,
        products: &[String],
    ) -> Result<Vec<(String, Vec<String>)>, StoreError>;
    /// Stores `customer`'s active entitlement summary as of `as_of_ms`;
    /// false (and nothing written) when a summary as of later is stored.
    async fn save_entitlement_summary(
        &mut self,
        customer: &str,
        features: &[String],
        as_of_ms: i64,
        now_ms: i64,
    ) -> Result<bool, StoreError>;
    async fn set_state(&mut self, key: &str, value: Option<&str>) -> Result<(), StoreError>;
    /// Records one admin console action in the audit log; returns its id.
    async fn record_audit(&mut self, entry: &NewAudit<'_>) -> Result<i64, StoreError>;
    /// Tells other replicas, at commit, which subjects changed (a no-op
    /// where one process owns the store).
    async fn publish_changes(&mut self, affected: &Affected) -> Result<(), StoreError>;
    /// Every user linked to `affected`'s customers ([`Tx::users_of_customer`]
    /// of each, in one statement, without repeats), and `affected`
    /// published with them ([`Tx::publish_changes`]): what a commit tells
    /// other replicas.
    async fn publish_with_users(&mut self, affected: &Affected) -> Result<Vec<String>, StoreError>;
    /// Marks the point [`Tx::rollback_to_savepoint`] returns to: the start
    /// of one event's writes in a transaction that holds several. Marks
    /// nest; each is kept until the transaction ends.
    async fn savepoint(&mut self) -> Result<(), StoreError>;
    /// Undoes everything written since the latest [`Tx::savepoint`] and
    /// keeps the transaction open (that mark too). An error means the
    /// whole transaction is lost.
    async fn rollback_to_savepoint(&mut self) -> Result<(), StoreError>;
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
    /// [`Tx::publish_with_users`] (when something changed), then
    /// [`Tx::commit`]: the users read. SQLite reads them and commits in
    /// one string, one hand-off to its connection's thread instead of two.
    async fn publish_and_commit(
        mut self: Box<Self>,
        affected: &Affected,
    ) -> Result<Vec<String>, StoreError> {
        let users = if affected.is_empty() {
            Vec::new()
        } else {
            self.publish_with_users(affected).await?
        };
        self.commit().await?;
        Ok(users)
    }
    /// Ends the transaction without writing anything. Dropping a `Tx`
    /// also rolls back, but closes its connection to be sure; this keeps
    /// the connection.
    async fn rollback(self: Box<Self>) -> Result<(), StoreError>;
}

/// The subscription store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError>;
    /// Records `event` and stores `record` (when the event changed the
    /// subscription) in one statement that commits on its own, only while
    /// the subscription is stored as `expected` (every column) and the
    /// event is new, and publishes `affected` with it as
    /// [`Tx::publish_with_users`] does: the users read. `None` when it
    /// wrote nothing (the row changed since it was read, or the event is
    /// recorded); the caller then writes the event the usual way, in a
    /// transaction. A lone webhook's write without a transaction held
    /// open across round trips.
    async fn record_and_save_if_unchanged(
        &self,
        event: &NewEvent<'_>,
        expected: &SubscriptionRecord,
        record: Option<&SubscriptionRecord>,
        affected: &Affected,
        now_ms: i64,
    ) -> Result<Option<Vec<String>>, StoreError>;
    /// Subscriptions of a user: linked through the customer or metadata.
    async fn subscriptions_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<SubscriptionRecord>, StoreError>;
    async fn subscriptions_for_customer(
        &self,
        customer_id: &str,
    ) -> Result<Vec<SubscriptionRecord>, StoreError>;
    /// Each subject's subscriptions (as `subscriptions_for_user` or
    /// `subscriptions_for_customer` give them), in `subjects`' order, read
    /// together: HasAccess's concurrent cache misses share one round trip
    /// instead of paying one each. Both backends read them in one
    /// statement per kind of subject; this default reads them one by one.
    async fn subscriptions_of_subjects(
        &self,
        subjects: &[Subject],
    ) -> Result<Vec<Vec<SubscriptionRecord>>, StoreError> {
        let mut all = Vec::with_capacity(subjects.len());
        for subject in subjects {
            all.push(match subject {
                Subject::User(id) => self.subscriptions_for_user(id).await?,
                Subject::Customer(id) => self.subscriptions_for_customer(id).await?,
            });
        }
        Ok(all)
    }
    /// Ids of subscriptions that can still change, for the sweep.
    async fn non_terminal_subscriptions(&self) -> Result<Vec<String>, StoreError>;
    /// (customer, one of its subscriptions) for live subscriptions whose
    /// customer no product user is linked to.
    async fn unlinked_customers(&self) -> Result<Vec<(String, String)>, StoreError>;
    async fn get_event(&self, id: &str) -> Result<Option<EventRow>, StoreError>;
    /// Whether an event with this id, or one reporting the same change
    /// (`change_key`), is recorded: a cheap check before a thin event is
    /// read from Stripe. The insert still decides.
    async fn knows_change(&self, id: &str, change_key: &str) -> Result<bool, StoreError>;
    /// Products whose feature maps are stored (known), for the sweep.
    async fn known_products(&self) -> Result<Vec<String>, StoreError>;
    /// The known feature maps of `products` (product id, feature lookup
    /// keys); products never read are left out.
    async fn product_features(
        &self,
        products: &[String],
    ) -> Result<Vec<(String, Vec<String>)>, StoreError>;
    /// The stored active entitlement summaries of `customers` (customer,
    /// feature lookup keys); customers without one are left out.
    async fn entitlement_summaries(
        &self,
        customers: &[String],
    ) -> Result<Vec<(String, Vec<String>)>, StoreError>;
    async fn get_review(&self, id: i64) -> Result<Option<ReviewRow>, StoreError>;
    /// Review records, newest first.
    async fn find_reviews(&self, filter: &ReviewFilter) -> Result<Vec<ReviewRow>, StoreError>;
    /// Review records, newest first; `open_only` leaves out resolved ones.
    async fn list_reviews(&self, open_only: bool) -> Result<Vec<ReviewRow>, StoreError> {
        self.find_reviews(&ReviewFilter {
            open: open_only.then_some(true),
            subject: None,
            limit: 1000,
            reason: None,
            before_id: None,
        })
        .await
    }
    /// Notifications after `after_id`, oldest first.
    async fn list_notifications(
        &self,
        after_id: i64,
        limit: i64,
        include_acked: bool,
    ) -> Result<Vec<NotificationRow>, StoreError>;
    /// Acknowledges one notification; false if unknown or already acked.
    async fn ack_notification(&self, id: i64, now_ms: i64) -> Result<bool, StoreError>;
    /// Leases up to `limit` due notifications for one push attempt each; a
    /// leased row is invisible to other dispatchers until the lease ends.
    async fn claim_notifications(
        &self,
        now_ms: i64,
        lease_ms: i64,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError>;
    /// Records a failed push attempt and when to try again.
    async fn delivery_failed(
        &self,
        id: i64,
        attempts: i64,
        next_attempt_at_ms: i64,
        error: &str,
        dead: bool,
    ) -> Result<(), StoreError>;
    async fn counts(&self) -> Result<Counts, StoreError>;
    async fn get_state(&self, key: &str) -> Result<Option<String>, StoreError>;
    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Checks that a write can be made and committed right now, through
    /// the same path webhooks take; a reader that answers proves nothing
    /// about a full disk or a broken writer.
    async fn probe_write(&self, now_ms: i64) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        tx.set_state("readyz.last_write_probe_ms", Some(&now_ms.to_string()))
            .await?;
        tx.commit().await
    }
    /// Audit entries, newest first: of one target or all, before an id
    /// (0 for the newest).
    async fn list_audit(
        &self,
        target: Option<&str>,
        before_id: i64,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError>;
    /// Events whose payload names `subscription_id`, newest first: the
    /// subscription's timeline, thin events included.
    async fn events_for_subscription(
        &self,
        subscription_id: &str,
        limit: i64,
    ) -> Result<Vec<EventRow>, StoreError>;
    /// A stored event's raw payload.
    async fn event_payload(&self, id: &str) -> Result<Option<String>, StoreError>;
    /// Open reviews per reason, most first.
    async fn open_reviews_by_reason(&self) -> Result<Vec<(String, i64)>, StoreError>;
    /// Events received since `since_ms` whose outcome is `failed`.
    async fn failed_events_since(&self, since_ms: i64) -> Result<i64, StoreError>;
    /// Unacknowledged notifications naming this user or customer id,
    /// oldest first.
    async fn notifications_about(
        &self,
        id: &str,
        limit: i64,
    ) -> Result<Vec<NotificationRow>, StoreError>;
    /// Which backend this is, for logs.
    fn backend(&self) -> &'static str;
    /// How many ledger writers may write side by side, each in its own
    /// transaction: PostgreSQL's row locks let several (as configured,
    /// see [`StoreOptions::writers`]); SQLite's one write lock, one.
    fn writers(&self) -> usize {
        1
    }
    /// Whether this replica may run the reconciler now. Where one process
    /// owns the store it always may; with several replicas one holds a
    /// lock, and another takes over when its holder dies.
    async fn try_lead(&self) -> Result<bool, StoreError> {
        Ok(true)
    }
    /// Sends what changes elsewhere (other replicas' commits) to `events`
    /// until `stop`; where one process owns the store there is nothing to
    /// hear and this returns at once.
    async fn watch(
        &self,
        _events: tokio::sync::mpsc::Sender<StoreEvent>,
        _stop: tokio_util::sync::CancellationToken,
    ) {
    }
}

/// What a store hears about changes made outside this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreEvent {
    /// Another replica committed changes to these subjects.
    Changed(Affected),
    /// Something changed that can't be named: forget everything.
    Unknown,
    /// The listener is lost: changes made elsewhere may be missed from now.
    Lost,
    /// Listening (again); what changed while nobody listened is unknown.
    Listening,
}

/// Connection settings shared by both backends.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub url: String,
    /// How long a write waits for a lock before giving up with 503.
    pub busy_timeout: Duration,
    /// Connections for everything but the ledger's writers: SQLite's read
    /// pool, or PostgreSQL's pool less the writers' share.
    pub max_connections: u32,
    /// Ledger writers asked for (see [`Store::writers`]): PostgreSQL runs
    /// that many, each on a connection of the pool sized for it; SQLite,
    /// one write lock, always runs one.
    pub writers: u32,
}

/// Connections one PostgreSQL ledger writer may hold at once: the batch it
/// writes, and the batches before it whose commit is still under way.
pub const CONNECTIONS_PER_WRITER: u32 = 3;

/// Opens the store named by `options.url` and applies its migrations.
pub async fn connect(options: &StoreOptions) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    let url = options.url.as_str();
    if url.starts_with("sqlite:") {
        Ok(std::sync::Arc::new(SqliteStore::connect(options).await?))
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        Ok(std::sync::Arc::new(PgStore::connect(options).await?))
    } else {
        Err(StoreError::UnsupportedUrl(
            "expected sqlite://... or postgres://...".to_owned(),
        ))
    }
}
