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

mod postgres;
mod rows;
mod sqlite;

use std::time::Duration;

use async_trait::async_trait;

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

use crate::subscription::SubscriptionRecord;

/// What went wrong in the store. Every variant means the write did not
/// happen: callers answer 503 and let the sender retry.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Locked, full, read-only, unreachable or otherwise failing database.
    #[error("database unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// Stored data that Tollgate cannot read back: a bug or a manual edit.
    #[error("corrupt row: {0}")]
    Corrupt(String),
    #[error("unsupported database url: {0}")]
    UnsupportedUrl(String),
    #[error("migration failed")]
    Migrate(#[source] sqlx::migrate::MigrateError),
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Unavailable(e)
    }
}

/// How an event was handled, as stored in the ledger.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    Stale,
    Ignored,
    Failed,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Stale => "stale",
            Outcome::Ignored => "ignored",
            Outcome::Failed => "failed",
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
    /// `webhook`, `reconciler` or `replay`: where the event came in.
    pub source: &'a str,
    pub received_at_ms: i64,
}

/// The result of trying to record an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recorded {
    New,
    /// The id was already recorded; this is the hash of what was stored.
    Duplicate {
        payload_sha256: String,
    },
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

/// Why a record was put in front of a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewReason {
    ImpossibleTransition,
    SameSecondTie,
    PayloadMismatch,
    UnknownShape,
}

impl ReviewReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewReason::ImpossibleTransition => "impossible_transition",
            ReviewReason::SameSecondTie => "same_second_tie",
            ReviewReason::PayloadMismatch => "payload_mismatch",
            ReviewReason::UnknownShape => "unknown_shape",
        }
    }
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

/// One open write transaction. Dropping it without [`Tx::commit`] rolls back.
#[async_trait]
pub trait Tx: Send {
    /// Records an event once; a second call with the same id reports a
    /// duplicate, also when it races another transaction.
    async fn insert_event(&mut self, event: &NewEvent<'_>) -> Result<Recorded, StoreError>;
    /// Sets an event's outcome once its effect is written.
    async fn finish_event(
        &mut self,
        id: &str,
        outcome: Outcome,
        error: Option<&str>,
        processed_at_ms: i64,
    ) -> Result<(), StoreError>;
    /// Loads a subscription and locks it until commit, creating an empty
    /// placeholder first so that concurrent writers queue on the same row.
    async fn lock_subscription(
        &mut self,
        id: &str,
        customer_id: &str,
    ) -> Result<SubscriptionRecord, StoreError>;
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
    /// Adds a review record; returns its id.
    async fn flag_review(&mut self, review: &NewReview<'_>) -> Result<i64, StoreError>;
    /// Records what a follow-up refresh found, keeping the review open.
    async fn note_review_outcome(
        &mut self,
        review_id: i64,
        outcome: &str,
    ) -> Result<(), StoreError>;
    async fn commit(self: Box<Self>) -> Result<(), StoreError>;
}

/// The subscription store.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn begin(&self) -> Result<Box<dyn Tx>, StoreError>;
    /// Subscriptions of a user: linked through the customer or metadata.
    async fn subscriptions_for_user(
        &self,
        user_id: &str,
    ) -> Result<Vec<SubscriptionRecord>, StoreError>;
    async fn subscriptions_for_customer(
        &self,
        customer_id: &str,
    ) -> Result<Vec<SubscriptionRecord>, StoreError>;
    async fn get_event(&self, id: &str) -> Result<Option<EventRow>, StoreError>;
    /// Review records, newest first; `open_only` leaves out resolved ones.
    async fn list_reviews(&self, open_only: bool) -> Result<Vec<ReviewRow>, StoreError>;
    /// Checks that the database answers.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Which backend this is, for logs.
    fn backend(&self) -> &'static str;
}

/// Connection settings shared by both backends.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub url: String,
    /// How long a write waits for a lock before giving up with 503.
    pub busy_timeout: Duration,
    pub max_connections: u32,
}

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

/// Milliseconds since the epoch, for bookkeeping columns.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
