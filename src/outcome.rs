//! What Tollgate concluded: how an event was handled, and why a record was
//! put in front of a person. Domain enums with the text they are stored as.

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

/// Why a record was put in front of a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReviewReason {
    ImpossibleTransition,
    SameSecondTie,
    PayloadMismatch,
    UnknownShape,
    CustomerWithoutUser,
    DeadNotification,
    RevocationByReconciler,
    /// The database refused a value of a verified event.
    StoreRefused,
    /// A thin event's object could not be read from Stripe for good (no
    /// API key, no such object): replay it once that is fixed.
    ThinEventUnread,
}

impl ReviewReason {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewReason::ImpossibleTransition => "impossible_transition",
            ReviewReason::SameSecondTie => "same_second_tie",
            ReviewReason::PayloadMismatch => "payload_mismatch",
            ReviewReason::UnknownShape => "unknown_shape",
            ReviewReason::CustomerWithoutUser => "customer_without_user",
            ReviewReason::DeadNotification => "dead_notification",
            ReviewReason::RevocationByReconciler => "revocation_by_reconciler",
            ReviewReason::StoreRefused => "store_refused",
            ReviewReason::ThinEventUnread => "thin_event_unread",
        }
    }
}
