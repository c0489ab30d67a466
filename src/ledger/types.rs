//! What the ledger is told and what it answers: where an event came from,
//! why Stripe was read, and what recording or replaying it did.

use crate::outcome::Outcome;
use crate::store::StoreError;
use crate::subscription::Status;

/// Where an event came in from, kept in the ledger for support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Webhook,
    /// Listed from `GET /v1/events` by the reconciler: a webhook we missed.
    Reconciler,
}

impl Source {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
            Source::Reconciler => "reconciler",
        }
    }
}

/// Why Stripe's API was read, which decides what a change means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOrigin {
    /// HasAccess or an admin asked.
    Refresh,
    /// The reconciler's sweep found drift.
    Sweep,
}

/// What happened to one delivered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// The first delivery: recorded with this outcome. `follow_up` names
    /// subscriptions worth re-reading from Stripe (a failed payment, an
    /// anomaly put up for review).
    Recorded {
        outcome: Outcome,
        follow_up: Vec<FollowUp>,
    },
    /// The id was already recorded; nothing changed.
    Duplicate,
}

/// A subscription to re-read from Stripe after an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FollowUp {
    pub subscription_id: String,
    /// The review record that asked for it, to note the outcome on.
    pub review_id: Option<i64>,
}

/// What an API read did to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiApplied {
    pub outcome: Outcome,
    /// The status before, when the read changed it.
    pub previous: Option<Status>,
    pub status: Status,
    /// Whether the subject's access changed (and a notification was queued).
    pub access_changed: bool,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub outcome: Outcome,
    /// Subscriptions to re-read from Stripe, exactly as for a first
    /// delivery (an anomaly found again is checked again).
    pub follow_up: Vec<FollowUp>,
}

/// Why an event cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no event with that id")]
    NotFound,
    #[error("only failed events can be replayed; this one is {0}")]
    NotFailed(String),
    /// A thin event's object could not be read from Stripe now.
    #[error("stripe unavailable: {0}")]
    StripeUnavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why an event was not recorded; the sender should retry it.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A thin event's object could not be read from Stripe now (unreachable,
    /// rate limited, no answer in time). Nothing was stored, so a retry is
    /// not a duplicate.
    #[error("stripe unavailable: {0}")]
    StripeUnavailable(String),
}
