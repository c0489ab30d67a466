//! The subscription model and its state machine.
//!
//! A [`SubscriptionRecord`] is what Tollgate believes about one Stripe
//! subscription. It changes only through [`apply_snapshot`], a pure function
//! that takes the stored record and a new Stripe snapshot (from an event or an
//! API read) and says whether the snapshot applies.
//!
//! # Ordering
//! Every record keeps the *watermark* of the snapshot it was built from. A
//! snapshot applies only when its key is greater than the watermark's:
//!
//! `(created, status rank, period end, event id)`
//!
//! compared left to right. `created` is Stripe's own second-resolution clock.
//! For snapshots created in the same second the status rank decides (later in
//! a subscription's life wins: `incomplete < trialing < active < past_due <
//! paused < unpaid < canceled < incomplete_expired`; Stripe pauses a
//! subscription after a failed payment, so a pause outranks the `past_due`
//! of the same second), then the later period
//! end, then the event id as text. Because it is a total order, the final
//! state is the same whatever order the events arrive in. A same-second tie
//! that changes the status is applied and also reported, so it can be flagged
//! for review and checked against Stripe.
//!
//! # Transitions
//! Stripe cannot move a subscription out of `canceled` or
//! `incomplete_expired`, back into `incomplete`, or into `incomplete_expired`
//! from anything but `incomplete`. These hold even when webhooks in between
//! went missing, so a newer snapshot that breaks them is not applied and is
//! reported as impossible. Every other move is accepted, because the events in
//! between may simply not have arrived.

use serde::{Deserialize, Serialize};

/// The eight statuses Stripe gives a subscription.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Incomplete,
    IncompleteExpired,
    Trialing,
    Active,
    PastDue,
    Canceled,
    Unpaid,
    Paused,
}

impl Status {
    pub const ALL: [Status; 8] = [
        Status::Incomplete,
        Status::IncompleteExpired,
        Status::Trialing,
        Status::Active,
        Status::PastDue,
        Status::Canceled,
        Status::Unpaid,
        Status::Paused,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Incomplete => "incomplete",
            Status::IncompleteExpired => "incomplete_expired",
            Status::Trialing => "trialing",
            Status::Active => "active",
            Status::PastDue => "past_due",
            Status::Canceled => "canceled",
            Status::Unpaid => "unpaid",
            Status::Paused => "paused",
        }
    }

    pub fn parse(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }

    /// Terminal statuses never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Canceled | Status::IncompleteExpired)
    }

    /// Position in a subscription's life, used only to break same-second ties.
    pub fn rank(self) -> u8 {
        match self {
            Status::Incomplete => 0,
            Status::Trialing => 1,
            Status::Active => 2,
            Status::PastDue => 3,
            Status::Paused => 4,
            Status::Unpaid => 5,
            Status::Canceled => 6,
            Status::IncompleteExpired => 7,
        }
    }

    /// Whether Stripe can ever move a subscription from `self` to `to`, even
    /// with events in between that we never saw.
    pub fn can_become(self, to: Status) -> bool {
        if self == to {
            return true;
        }
        if self.is_terminal() {
            return false;
        }
        match to {
            Status::Incomplete => false,
            Status::IncompleteExpired => self == Status::Incomplete,
            _ => true,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a `paused` subscription is paused
/// (`status_details.paused.subscription.type`, from 2026-09-30.endive).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PauseKind {
    /// The first renewal payment failed: the invoice stays collectible and
    /// paying it resumes the subscription, so this is dunning.
    FirstPaymentFailure,
    /// Payment retries are exhausted.
    FinalPaymentFailure,
    PauseRequested,
    TrialEndWithoutPaymentMethod,
    /// No type given, or one Tollgate does not know: denied like a pause
    /// on request.
    Other,
}

impl PauseKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PauseKind::FirstPaymentFailure => "first_payment_failure",
            PauseKind::FinalPaymentFailure => "final_payment_failure",
            PauseKind::PauseRequested => "pause_requested",
            PauseKind::TrialEndWithoutPaymentMethod => "trial_end_without_payment_method",
            PauseKind::Other => "other",
        }
    }

    /// Reads Stripe's text; anything unknown is [`PauseKind::Other`].
    pub fn parse(s: &str) -> PauseKind {
        [
            PauseKind::FirstPaymentFailure,
            PauseKind::FinalPaymentFailure,
            PauseKind::PauseRequested,
            PauseKind::TrialEndWithoutPaymentMethod,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .unwrap_or(PauseKind::Other)
    }
}

/// Whether a subscription in `status` (paused for `pause`) is in dunning:
/// a renewal payment failed and Stripe is still trying to collect it.
pub fn in_dunning(status: Status, pause: Option<PauseKind>) -> bool {
    match status {
        Status::PastDue => true,
        Status::Paused => pause == Some(PauseKind::FirstPaymentFailure),
        _ => false,
    }
}

/// One subscription item's price, as far as access is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub struct Item {
    pub price_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lookup_key: Option<String>,
}

impl Item {
    /// Whether this item grants `product`: a product id or a price lookup key.
    pub fn matches(&self, product: &str) -> bool {
        self.product_id.as_deref() == Some(product)
            || self.lookup_key.as_deref() == Some(product)
            || self.price_id == product
    }
}

/// What one Stripe snapshot says about a subscription, in either API shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSnapshot {
    pub id: String,
    pub customer_id: String,
    pub status: Status,
    /// The latest period end: top-level before 2025-03-31.basil, the latest
    /// item's since.
    pub current_period_end: i64,
    pub trial_end: Option<i64>,
    pub cancel_at_period_end: bool,
    /// When a scheduled cancellation takes effect. In flexible billing
    /// mode the portal sets this with `cancel_at_period_end` false.
    pub cancel_at: Option<i64>,
    /// Why it is paused; `None` unless the status is `paused`.
    pub pause: Option<PauseKind>,
    pub items: Vec<Item>,
    /// The product's user id from the subscription's metadata, if any.
    pub user_id: Option<String>,
}

/// Where a snapshot came from, for ordering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    /// Stripe's `created` of the event, or the time of an API read.
    pub created: i64,
    /// The event id; empty for an API read.
    pub event_id: String,
}

/// What Tollgate believes about one subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionRecord {
    pub id: String,
    pub customer_id: String,
    /// `None` until a subscription snapshot arrives: an invoice can create
    /// the record first, and it must not grant anything on its own.
    pub status: Option<Status>,
    pub current_period_end: Option<i64>,
    /// The latest line period end of a paid invoice. Kept apart from the
    /// snapshot's period end so a renewal seen only through `invoice.paid`
    /// survives an older subscription snapshot applied after it.
    pub paid_through: Option<i64>,
    pub trial_end: Option<i64>,
    pub cancel_at_period_end: bool,
    /// When a scheduled cancellation takes effect; access ends at the
    /// earlier of this and the period end.
    pub cancel_at: Option<i64>,
    /// Why it is paused; `None` unless the status is `paused`.
    pub pause: Option<PauseKind>,
    /// When the subscription was first seen in dunning (`past_due`, or
    /// paused after a first failed payment) in its current run: where the
    /// payment-failure grace starts.
    pub past_due_since: Option<i64>,
    /// When it was last seen out of dunning: the `created` of the newest
    /// such snapshot, applied or too old to apply. It bounds the current
    /// run, whatever order its snapshots arrive in (see
    /// [`learn_from_stale`]).
    pub recovered_at: Option<i64>,
    pub items: Vec<Item>,
    pub user_id: Option<String>,
    /// The watermark: the stamp of the snapshot this record was built from.
    pub snapshot_created: i64,
    pub snapshot_event_id: String,
    /// Newest Stripe snapshot time behind the record (event `created` or API
    /// read time); never the time a webhook happened to arrive.
    pub verified_at: i64,
    /// Set while a revocation found only by the reconciler waits for an
    /// admin (`TOLLGATE_HOLD_REVOCATIONS`): the review holding it.
    pub hold_review_id: Option<i64>,
}

impl SubscriptionRecord {
    /// An empty record for a subscription known only by id.
    pub fn placeholder(id: &str, customer_id: &str) -> Self {
        SubscriptionRecord {
            id: id.to_owned(),
            customer_id: customer_id.to_owned(),
            status: None,
            current_period_end: None,
            paid_through: None,
            trial_end: None,
            cancel_at_period_end: false,
            cancel_at: None,
            pause: None,
            past_due_since: None,
            recovered_at: None,
            items: Vec::new(),
            user_id: None,
            snapshot_created: 0,
            snapshot_event_id: String::new(),
            verified_at: 0,
            hold_review_id: None,
        }
    }

    /// The end of the paid period, counting renewals seen only on invoices.
    pub fn period_end(&self) -> Option<i64> {
        AccessFacts::period_end(self)
    }

    fn order_key(&self) -> Option<(i64, u8, i64, &str)> {
        let status = self.status?;
        Some((
            self.snapshot_created,
            status.rank(),
            self.current_period_end.unwrap_or(0),
            self.snapshot_event_id.as_str(),
        ))
    }
}

/// What the access decision reads of one subscription, and nothing more.
/// The full [`SubscriptionRecord`] has it, and so does the cache's compact
/// form ([`crate::compact::CompactRecord`]); the policy is written against
/// this, so both are decided by the same code from the same values.
pub trait AccessFacts {
    fn id(&self) -> &str;
    /// Whose active entitlement summary may speak for the record's
    /// products whose feature maps are unknown.
    fn customer_id(&self) -> &str;
    fn status(&self) -> Option<Status>;
    fn current_period_end(&self) -> Option<i64>;
    fn paid_through(&self) -> Option<i64>;
    fn trial_end(&self) -> Option<i64>;
    fn cancel_at_period_end(&self) -> bool;
    fn cancel_at(&self) -> Option<i64>;
    fn pause(&self) -> Option<PauseKind>;
    fn past_due_since(&self) -> Option<i64>;
    fn snapshot_created(&self) -> i64;
    fn verified_at(&self) -> i64;
    fn hold_review_id(&self) -> Option<i64>;
    fn items(&self) -> &[Item];

    /// The end of the paid period, counting renewals seen only on invoices.
    fn period_end(&self) -> Option<i64> {
        match (self.current_period_end(), self.paid_through()) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

impl AccessFacts for SubscriptionRecord {
    fn id(&self) -> &str {
        &self.id
    }
    fn customer_id(&self) -> &str {
        &self.customer_id
    }
    fn status(&self) -> Option<Status> {
        self.status
    }
    fn current_period_end(&self) -> Option<i64> {
        self.current_period_end
    }
    fn paid_through(&self) -> Option<i64> {
        self.paid_through
    }
    fn trial_end(&self) -> Option<i64> {
        self.trial_end
    }
    fn cancel_at_period_end(&self) -> bool {
        self.cancel_at_period_end
    }
    fn cancel_at(&self) -> Option<i64> {
        self.cancel_at
    }
    fn pause(&self) -> Option<PauseKind> {
        self.pause
    }
    fn past_due_since(&self) -> Option<i64> {
        self.past_due_since
    }
    fn snapshot_created(&self) -> i64 {
        self.snapshot_created
    }
    fn verified_at(&self) -> i64 {
        self.verified_at
    }
    fn hold_review_id(&self) -> Option<i64> {
        self.hold_review_id
    }
    fn items(&self) -> &[Item] {
        &self.items
    }
}

/// The result of offering a snapshot to a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// The snapshot is newer; store this record. `tie` is set when it won a
    /// same-second tie against a different status, and `corrected` when an
    /// API read overrode a transition Stripe cannot make (the local record
    /// was wrong); both deserve a review.
    Apply {
        record: Box<SubscriptionRecord>,
        tie: Option<Status>,
        corrected: Option<Status>,
    },
    /// The stored record is newer (or the same snapshot); nothing changes.
    Stale,
    /// Stripe cannot make this move; nothing changes, and it needs review.
    Impossible { from: Status, to: Status },
}

/// Who vouches for a snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// A webhook or listed event: an old snapshot that may be wrong or
    /// forged. Impossible transitions are refused.
    Event,
    /// A read of the object from Stripe's API: the truth at read time, so
    /// it applies even over a transition that looks impossible.
    Api,
}

/// Offers `snap`, stamped `stamp`, to the stored record `current`.
pub fn apply_snapshot(
    current: Option<&SubscriptionRecord>,
    snap: &SubscriptionSnapshot,
    stamp: &Stamp,
    authority: Authority,
) -> Transition {
    let incoming = (
        stamp.created,
        snap.status.rank(),
        snap.current_period_end,
        stamp.event_id.as_str(),
    );
    let mut tie = None;
    let mut corrected = None;
    if let Some(key) = current.and_then(SubscriptionRecord::order_key) {
        if incoming <= key {
            return Transition::Stale;
        }
        let from = current
            .and_then(|c| c.status)
            .expect("BUG: an order key implies a status");
        if !from.can_become(snap.status) {
            match authority {
                Authority::Event => {
                    return Transition::Impossible {
                        from,
                        to: snap.status,
                    }
                }
                Authority::Api => corrected = Some(from),
            }
        }
        if incoming.0 == key.0 && from != snap.status {
            tie = Some(from);
        }
    }

    let base = current
        .cloned()
        .unwrap_or_else(|| SubscriptionRecord::placeholder(&snap.id, &snap.customer_id));
    // One dunning run may go past_due -> paused (first failure) and back;
    // its grace counts from where the run began.
    let was_dunning = base.status.is_some_and(|s| in_dunning(s, base.pause));
    let dunning = in_dunning(snap.status, snap.pause);
    let past_due_since = match (dunning, was_dunning) {
        (true, true) => base.past_due_since.or(Some(stamp.created)),
        (true, false) => Some(stamp.created),
        (false, _) => None,
    };
    // A record out of dunning was built from a snapshot out of dunning: a
    // recovery too (rows stored before `recovered_at` existed have none).
    let known_recovery = match base.status {
        Some(_) if !was_dunning => base.recovered_at.max(Some(base.snapshot_created)),
        _ => base.recovered_at,
    };
    let recovered_at = match dunning {
        true => known_recovery,
        false => known_recovery.max(Some(stamp.created)),
    };
    let record = SubscriptionRecord {
        id: snap.id.clone(),
        customer_id: snap.customer_id.clone(),
        status: Some(snap.status),
        current_period_end: Some(snap.current_period_end),
        paid_through: base.paid_through,
        trial_end: snap.trial_end,
        cancel_at_period_end: snap.cancel_at_period_end,
        cancel_at: snap.cancel_at,
        pause: snap.pause.filter(|_| snap.status == Status::Paused),
        past_due_since,
        recovered_at,
        items: snap.items.clone(),
        // A link, once made, survives snapshots that lack the metadata.
        user_id: snap.user_id.clone().or(base.user_id),
        snapshot_created: stamp.created,
        snapshot_event_id: stamp.event_id.clone(),
        verified_at: base.verified_at.max(stamp.created),
        hold_review_id: base.hold_review_id,
    };
    Transition::Apply {
        record: Box::new(record),
        tie,
        corrected,
    }
}

/// Records that a paid invoice covers `subscription_id` up to `period_end`.
/// Invoices never change status; they only extend the known paid period.
pub fn apply_payment(
    current: Option<&SubscriptionRecord>,
    subscription_id: &str,
    customer_id: &str,
    period_end: Option<i64>,
    created: i64,
) -> SubscriptionRecord {
    let mut record = current
        .cloned()
        .unwrap_or_else(|| SubscriptionRecord::placeholder(subscription_id, customer_id));
    if let Some(end) = period_end {
        record.paid_through = Some(record.paid_through.map_or(end, |p| p.max(end)));
    }
    // An invoice is a snapshot of payment, not of status: it makes the
    // record fresher only where it proves the period was paid.
    if period_end.is_some() {
        record.verified_at = record.verified_at.max(created);
    }
    record
}

/// What a snapshot too old to apply still tells; `None` when nothing new.
///
/// - **The product user it links to**, when the stored record has none.
///   Without this, a link carried only by an older snapshot was lost
///   whenever a newer one without metadata arrived first.
/// - **Where the current dunning run began.** With the newest snapshot
///   applied first, every older one is stale, so the run's start can only
///   come from here:
///   - an older snapshot in dunning, newer than the last recovery seen
///     ([`SubscriptionRecord::recovered_at`]), shows the run began at it or
///     earlier;
///   - an older one out of dunning, at or after the run's recorded start,
///     shows the run began after it. Where exactly (a snapshot between the
///     two, not seen yet, or the newest) is unknown: the newest is taken,
///     and a snapshot between them that arrives later moves it back. So
///     the start converges to the in-order one or stays later: the grace
///     may last longer than in order, never less.
pub fn learn_from_stale(
    current: &SubscriptionRecord,
    snap: &SubscriptionSnapshot,
    stamp: &Stamp,
) -> Option<SubscriptionRecord> {
    if current.id != snap.id {
        return None;
    }
    let link = snap.user_id.as_ref().filter(|_| current.user_id.is_none());
    let mut past_due_since = current.past_due_since;
    let mut recovered_at = current.recovered_at;
    let created = stamp.created;
    let in_a_run = current.status.is_some_and(|s| in_dunning(s, current.pause));
    // Within one second the order of snapshots is not in their times:
    // ties fall on the side of the later start.
    if in_dunning(snap.status, snap.pause) {
        let after_recovery = current.recovered_at.is_none_or(|r| created > r);
        let earlier = current.past_due_since.is_none_or(|since| created < since);
        if in_a_run && after_recovery && earlier {
            past_due_since = Some(created);
        }
    } else if current.recovered_at.is_none_or(|r| created >= r) {
        recovered_at = Some(created);
        if in_a_run && current.past_due_since.is_some_and(|since| since <= created) {
            past_due_since = Some(current.snapshot_created.max(created));
        }
    }
    // Cloned only when something was learned: most stale snapshots tell
    // nothing new.
    let learned = link.is_some()
        || past_due_since != current.past_due_since
        || recovered_at != current.recovered_at;
    learned.then(|| SubscriptionRecord {
        user_id: link.cloned().or_else(|| current.user_id.clone()),
        past_due_since,
        recovered_at,
        ..current.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snap(status: Status, period_end: i64) -> SubscriptionSnapshot {
        SubscriptionSnapshot {
            id: "sub_1".into(),
            customer_id: "cus_1".into(),
            status,
            current_period_end: period_end,
            trial_end: None,
            cancel_at_period_end: false,
            cancel_at: None,
            pause: None,
            items: vec![],
            user_id: None,
        }
    }

    fn stamp(created: i64, id: &str) -> Stamp {
        Stamp {
            created,
            event_id: id.into(),
        }
    }

    fn applied(t: Transition) -> SubscriptionRecord {
        match t {
            Transition::Apply { record, .. } => *record,
            other => panic!("expected Apply, got {other:?}"),
        }
    }

    #[test]
    fn transitions_table() {
        use Status::*;
        // (from, to, possible)
        let table = [
            (Incomplete, Active, true),
            (Incomplete, IncompleteExpired, true),
            (Incomplete, Canceled, true),
            (Trialing, Active, true),
            (Trialing, Paused, true),
            (Paused, Active, true),
            (Active, PastDue, true),
            (PastDue, Active, true),
            (PastDue, Unpaid, true),
            (PastDue, Canceled, true),
            (Unpaid, Active, true),
            (Active, Canceled, true),
            (Canceled, Canceled, true),
            (Canceled, Active, false),
            (Canceled, Trialing, false),
            (IncompleteExpired, Active, false),
            (IncompleteExpired, Incomplete, false),
            (Active, Incomplete, false),
            (Active, IncompleteExpired, false),
            (Trialing, IncompleteExpired, false),
        ];
        for (from, to, possible) in table {
            assert_eq!(from.can_become(to), possible, "{from} -> {to}");
        }
    }

    #[test]
    fn first_snapshot_applies() {
        let rec = applied(apply_snapshot(
            None,
            &snap(Status::Active, 200),
            &stamp(100, "evt_a"),
            Authority::Event,
        ));
        assert_eq!(rec.status, Some(Status::Active));
        assert_eq!(rec.verified_at, 100);
        assert_eq!(rec.snapshot_created, 100);
    }

    #[test]
    fn older_snapshot_is_stale() {
        let rec = applied(apply_snapshot(
            None,
            &snap(Status::Active, 200),
            &stamp(100, "evt_b"),
            Authority::Event,
        ));
        let t = apply_snapshot(
            Some(&rec),
            &snap(Status::PastDue, 200),
            &stamp(99, "evt_a"),
            Authority::Event,
        );
        assert_eq!(t, Transition::Stale);
        // The same snapshot again is stale too.
        let t = apply_snapshot(
            Some(&rec),
            &snap(Status::Active, 200),
            &stamp(100, "evt_b"),
            Authority::Event,
        );
        assert_eq!(t, Transition::Stale);
    }

    #[test]
    fn impossible_transition_is_refused() {
        let rec = applied(apply_snapshot(
            None,
            &snap(Status::Canceled, 200),
            &stamp(100, "e1"),
            Authority::Event,
        ));
        let t = apply_snapshot(
            Some(&rec),
            &snap(Status::Active, 300),
            &stamp(101, "e2"),
            Authority::Event,
        );
        assert_eq!(
            t,
            Transition::Impossible {
                from: Status::Canceled,
                to: Status::Active
            }
        );
    }

    #[test]
    fn an_api_read_overrides_an_impossible_transition_and_says_so() {
        let rec = applied(apply_snapshot(
            None,
            &snap(Status::Canceled, 200),
            &stamp(100, "e1"),
            Authority::Event,
        ));
        let t = apply_snapshot(
            Some(&rec),
            &snap(Status::Active, 300),
            &stamp(150, ""),
            Authority::Api,
        );
        let Transition::Apply {
            record, corrected, ..
        } = t
        else {
            panic!("the API is the truth")
        };
        assert_eq!(
            (record.status, corrected),
            (Some(Status::Active), Some(Status::Canceled))
        );
        assert_eq!(record.verified_at, 150);
    }

    #[test]
    fn same_second_ties_are_decided_by_rank_in_any_order() {
        let a = (snap(Status::Active, 200), stamp(100, "evt_z"));
        let b = (snap(Status::PastDue, 200), stamp(100, "evt_a"));
        // a then b
        let r1 = applied(apply_snapshot(None, &a.0, &a.1, Authority::Event));
        let t = apply_snapshot(Some(&r1), &b.0, &b.1, Authority::Event);
        let Transition::Apply {
            record: r1, tie, ..
        } = t
        else {
            panic!("past_due outranks active in the same second")
        };
        assert_eq!(tie, Some(Status::Active));
        // b then a
        let r2 = applied(apply_snapshot(None, &b.0, &b.1, Authority::Event));
        assert_eq!(
            apply_snapshot(Some(&r2), &a.0, &a.1, Authority::Event),
            Transition::Stale
        );
        assert_eq!(r1.status, r2.status);
        assert_eq!(r1.snapshot_event_id, r2.snapshot_event_id);
    }

    fn paused(kind: PauseKind) -> SubscriptionSnapshot {
        SubscriptionSnapshot {
            pause: Some(kind),
            ..snap(Status::Paused, 200)
        }
    }

    #[test]
    fn a_pause_after_a_failed_payment_outranks_past_due_of_the_same_second() {
        let pd = (snap(Status::PastDue, 200), stamp(100, "evt_z"));
        let pa = (paused(PauseKind::FirstPaymentFailure), stamp(100, "evt_a"));
        for (first, second) in [(&pd, &pa), (&pa, &pd)] {
            let r = applied(apply_snapshot(None, &first.0, &first.1, Authority::Event));
            let r = match apply_snapshot(Some(&r), &second.0, &second.1, Authority::Event) {
                Transition::Apply { record, .. } => *record,
                Transition::Stale => r,
                other => panic!("{other:?}"),
            };
            assert_eq!(r.status, Some(Status::Paused));
            assert_eq!(r.pause, Some(PauseKind::FirstPaymentFailure));
        }
    }

    #[test]
    fn a_dunning_run_keeps_its_start_from_past_due_into_a_first_failure_pause() {
        let r = applied(apply_snapshot(
            None,
            &snap(Status::Active, 200),
            &stamp(100, "e1"),
            Authority::Event,
        ));
        // Paused straight after the failure: the grace starts at the pause.
        let p = applied(apply_snapshot(
            Some(&r),
            &paused(PauseKind::FirstPaymentFailure),
            &stamp(110, "e2"),
            Authority::Event,
        ));
        assert_eq!(p.past_due_since, Some(110));
        // past_due first, then paused: one run, counted from its start.
        let pd = applied(apply_snapshot(
            Some(&r),
            &snap(Status::PastDue, 200),
            &stamp(105, "e2"),
            Authority::Event,
        ));
        let p = applied(apply_snapshot(
            Some(&pd),
            &paused(PauseKind::FirstPaymentFailure),
            &stamp(110, "e3"),
            Authority::Event,
        ));
        assert_eq!(p.past_due_since, Some(105));
        // Retries exhausted: no longer dunning, and the pause says why.
        let f = applied(apply_snapshot(
            Some(&p),
            &paused(PauseKind::FinalPaymentFailure),
            &stamp(120, "e4"),
            Authority::Event,
        ));
        assert_eq!(
            (f.past_due_since, f.pause),
            (None, Some(PauseKind::FinalPaymentFailure))
        );
        // Resumed: the pause reason goes with the pause.
        let a = applied(apply_snapshot(
            Some(&f),
            &snap(Status::Active, 300),
            &stamp(130, "e5"),
            Authority::Event,
        ));
        assert_eq!((a.past_due_since, a.pause), (None, None));
    }

    #[test]
    fn pause_kinds_read_back_from_their_text() {
        for kind in [
            PauseKind::FirstPaymentFailure,
            PauseKind::FinalPaymentFailure,
            PauseKind::PauseRequested,
            PauseKind::TrialEndWithoutPaymentMethod,
        ] {
            assert_eq!(PauseKind::parse(kind.as_str()), kind);
        }
        assert_eq!(PauseKind::parse("something_new"), PauseKind::Other);
    }

    #[test]
    fn past_due_since_is_kept_across_past_due_updates_and_cleared_after() {
        let r = applied(apply_snapshot(
            None,
            &snap(Status::Active, 200),
            &stamp(100, "e1"),
            Authority::Event,
        ));
        let r = applied(apply_snapshot(
            Some(&r),
            &snap(Status::PastDue, 200),
            &stamp(110, "e2"),
            Authority::Event,
        ));
        assert_eq!(r.past_due_since, Some(110));
        let r = applied(apply_snapshot(
            Some(&r),
            &snap(Status::PastDue, 200),
            &stamp(120, "e3"),
            Authority::Event,
        ));
        assert_eq!(r.past_due_since, Some(110));
        let r = applied(apply_snapshot(
            Some(&r),
            &snap(Status::Active, 300),
            &stamp(130, "e4"),
            Authority::Event,
        ));
        assert_eq!(r.past_due_since, None);
    }

    #[test]
    fn payments_extend_the_period_and_survive_older_snapshots() {
        let r = apply_payment(None, "sub_1", "cus_1", Some(500), 150);
        assert_eq!(r.status, None);
        assert_eq!(r.period_end(), Some(500));
        let r = applied(apply_snapshot(
            Some(&r),
            &snap(Status::Active, 200),
            &stamp(100, "e1"),
            Authority::Event,
        ));
        assert_eq!(r.period_end(), Some(500));
        assert_eq!(r.verified_at, 150);
        // A payment for an earlier period never shortens it.
        let r = apply_payment(Some(&r), "sub_1", "cus_1", Some(300), 160);
        assert_eq!(r.paid_through, Some(500));
    }

    #[test]
    fn metadata_link_survives_snapshots_without_it() {
        let mut s = snap(Status::Active, 200);
        s.user_id = Some("u1".into());
        let r = applied(apply_snapshot(
            None,
            &s,
            &stamp(100, "e1"),
            Authority::Event,
        ));
        let r = applied(apply_snapshot(
            Some(&r),
            &snap(Status::Active, 300),
            &stamp(101, "e2"),
            Authority::Event,
        ));
        assert_eq!(r.user_id.as_deref(), Some("u1"));
    }
}

/// Properties of the state machine, checked over generated histories.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;
    use proptest::sample::{select, Index};

    /// Failures are written out as unit tests by hand (see `counterexamples`),
    /// not to a `proptest-regressions` directory.
    fn config(cases: u32) -> ProptestConfig {
        ProptestConfig {
            cases,
            failure_persistence: None,
            ..ProptestConfig::default()
        }
    }

    /// One event of a history: what Stripe said, and when.
    type Event = (SubscriptionSnapshot, Stamp);

    /// The documented ordering key, `(created, status rank, period end, id)`.
    fn key(e: &Event) -> (i64, u8, i64, String) {
        (
            e.1.created,
            e.0.status.rank(),
            e.0.current_period_end,
            e.1.event_id.clone(),
        )
    }

    fn status() -> impl Strategy<Value = Status> {
        select(Status::ALL.to_vec())
    }

    fn items() -> impl Strategy<Value = Vec<Item>> {
        let item = (
            select(vec!["price_a", "price_b"]),
            proptest::option::of(select(vec!["prod_a", "prod_b"])),
            proptest::option::of(select(vec!["pro", "team"])),
        )
            .prop_map(|(price, product, lookup)| Item {
                price_id: price.to_owned(),
                product_id: product.map(str::to_owned),
                lookup_key: lookup.map(str::to_owned),
            });
        proptest::collection::vec(item, 0..3)
    }

    /// Seconds between two consecutive events: mostly none at all, so that
    /// same-second ties are common.
    fn gap() -> impl Strategy<Value = i64> {
        prop_oneof![
            4 => Just(0i64),
            2 => 1..3i64,
            1 => 3..400_000i64,
        ]
    }

    /// Period ends from a few values (ties on period end) or anywhere.
    fn period_end() -> impl Strategy<Value = i64> {
        prop_oneof![
            3 => (0..4i64).prop_map(|d| 1_700_000_000 + d * 2_592_000),
            1 => 1_600_000_000..1_900_000_000i64,
        ]
    }

    /// Everything in one step of a history but its status and time.
    #[derive(Debug, Clone)]
    struct Step {
        next: Index,
        gap: i64,
        period_end: i64,
        trial_end: Option<i64>,
        cancel_at_period_end: bool,
        items: Vec<Item>,
        user_id: Option<&'static str>,
        id_salt: u8,
    }

    fn step() -> impl Strategy<Value = Step> {
        (
            any::<Index>(),
            gap(),
            period_end(),
            proptest::option::of(period_end()),
            any::<bool>(),
            items(),
            proptest::option::of(select(vec!["u1", "u2"])),
            any::<u8>(),
        )
            .prop_map(
                |(
                    next,
                    gap,
                    period_end,
                    trial_end,
                    cancel_at_period_end,
                    items,
                    user_id,
                    id_salt,
                )| {
                    Step {
                        next,
                        gap,
                        period_end,
                        trial_end,
                        cancel_at_period_end,
                        items,
                        user_id,
                        id_salt,
                    }
                },
            )
    }

    /// A history Stripe could produce for one subscription: each status can
    /// follow the one before it, `created` never goes back, event ids are
    /// unique (their order is random).
    fn history() -> impl Strategy<Value = Vec<Event>> {
        (
            status(),
            1_600_000_000..1_900_000_000i64,
            proptest::collection::vec(step(), 1..9),
        )
            .prop_map(|(first, start, steps)| {
                let mut status = first;
                let mut created = start;
                let mut events = Vec::with_capacity(steps.len());
                for (i, s) in steps.into_iter().enumerate() {
                    if i > 0 {
                        let next: Vec<Status> = Status::ALL
                            .into_iter()
                            .filter(|&to| status.can_become(to))
                            .collect();
                        status = *s.next.get(&next);
                        created += s.gap;
                    }
                    let snap = SubscriptionSnapshot {
                        id: "sub_1".into(),
                        customer_id: "cus_1".into(),
                        status,
                        current_period_end: s.period_end,
                        trial_end: s.trial_end,
                        cancel_at_period_end: s.cancel_at_period_end,
                        cancel_at: None,
                        pause: (status == Status::Paused).then_some(PauseKind::FirstPaymentFailure),
                        items: s.items,
                        user_id: s.user_id.map(str::to_owned),
                    };
                    let stamp = Stamp {
                        created,
                        event_id: format!("evt_{:02x}{i}", s.id_salt),
                    };
                    events.push((snap, stamp));
                }
                events
            })
    }

    /// Some of a history's events, each delivered zero to three times.
    fn deliveries() -> impl Strategy<Value = Vec<Event>> {
        history()
            .prop_flat_map(|h| {
                let n = h.len();
                (Just(h), proptest::collection::vec(0..4usize, n))
            })
            .prop_map(|(h, copies)| {
                h.into_iter()
                    .zip(copies)
                    .flat_map(|(e, n)| std::iter::repeat_n(e, n))
                    .collect()
            })
    }

    /// Applies events one after another as the ledger does (starting from
    /// the placeholder it locks), returning the record and every outcome.
    fn deliver(events: &[Event]) -> (SubscriptionRecord, Vec<Transition>) {
        let mut record = SubscriptionRecord::placeholder("sub_1", "cus_1");
        let mut outcomes = Vec::new();
        for (snap, stamp) in events {
            let t = apply_snapshot(Some(&record), snap, stamp, Authority::Event);
            match &t {
                Transition::Apply { record: r, .. } => record = (**r).clone(),
                Transition::Stale => {
                    record = learn_from_stale(&record, snap, stamp).unwrap_or(record)
                }
                Transition::Impossible { .. } => {}
            }
            outcomes.push(t);
        }
        (record, outcomes)
    }

    /// The multiset in order of the ordering key, and in an arbitrary order.
    fn sorted_and_shuffled() -> impl Strategy<Value = (Vec<Event>, Vec<Event>)> {
        deliveries().prop_flat_map(|events| {
            let mut sorted = events.clone();
            sorted.sort_by_key(key);
            (Just(sorted), Just(events).prop_shuffle())
        })
    }

    /// Any time at all: a few values near each other (ties), or any `i64`
    /// (extremes included).
    fn any_time() -> impl Strategy<Value = i64> {
        prop_oneof![
            3 => 99..102i64,
            1 => Just(0i64),
            1 => Just(i64::MIN),
            1 => Just(i64::MAX),
            2 => any::<i64>(),
        ]
    }

    fn any_event_id() -> impl Strategy<Value = String> {
        select(vec!["", "evt_a", "evt_b", "evt_ab"]).prop_map(str::to_owned)
    }

    /// Any snapshot and stamp, unconstrained by any history.
    fn any_event() -> impl Strategy<Value = Event> {
        (
            status(),
            any_time(),
            proptest::option::of(any_time()),
            any::<bool>(),
            items(),
            proptest::option::of(select(vec!["u1", "u2"])),
            any_time(),
            any_event_id(),
        )
            .prop_map(
                |(status, period_end, trial_end, cancel, items, user, created, event_id)| {
                    let snap = SubscriptionSnapshot {
                        id: "sub_1".into(),
                        customer_id: "cus_1".into(),
                        status,
                        current_period_end: period_end,
                        trial_end,
                        cancel_at_period_end: cancel,
                        cancel_at: None,
                        pause: (status == Status::Paused).then_some(PauseKind::PauseRequested),
                        items,
                        user_id: user.map(str::to_owned),
                    };
                    (snap, Stamp { created, event_id })
                },
            )
    }

    /// Any stored record, placeholders (no status) included.
    fn any_record() -> impl Strategy<Value = SubscriptionRecord> {
        (
            proptest::option::of(status()),
            proptest::option::of(any_time()),
            proptest::option::of(any_time()),
            proptest::option::of(any_time()),
            any::<bool>(),
            proptest::option::of(any_time()),
            items(),
            proptest::option::of(select(vec!["u1", "u2"])),
            (any_time(), any_event_id()),
            any_time(),
            proptest::option::of(any::<i64>()),
            proptest::option::of(any_time()),
        )
            .prop_map(
                |(
                    status,
                    current_period_end,
                    paid_through,
                    trial_end,
                    cancel_at_period_end,
                    past_due_since,
                    items,
                    user,
                    (snapshot_created, snapshot_event_id),
                    verified_at,
                    hold_review_id,
                    recovered_at,
                )| SubscriptionRecord {
                    id: "sub_1".into(),
                    customer_id: "cus_1".into(),
                    status,
                    current_period_end,
                    paid_through,
                    trial_end,
                    cancel_at_period_end,
                    cancel_at: None,
                    pause: None,
                    past_due_since,
                    recovered_at,
                    items,
                    user_id: user.map(str::to_owned),
                    snapshot_created,
                    snapshot_event_id,
                    verified_at,
                    hold_review_id,
                },
            )
    }

    /// The record stored after `event` lands on `base` (its status cleared,
    /// so it always lands; its other fields are carried as they would be).
    fn landed(base: &SubscriptionRecord, event: &Event) -> SubscriptionRecord {
        let base = SubscriptionRecord {
            status: None,
            ..base.clone()
        };
        match apply_snapshot(Some(&base), &event.0, &event.1, Authority::Event) {
            Transition::Apply { record, .. } => *record,
            other => panic!("a snapshot on a placeholder must apply, got {other:?}"),
        }
    }

    /// Whether `event` is newer than what `record` was built from, as
    /// `apply_snapshot` sees it. An API read is used so that the answer is
    /// about order only, never about which transitions are possible.
    fn newer(event: &Event, record: &SubscriptionRecord) -> bool {
        match apply_snapshot(Some(record), &event.0, &event.1, Authority::Api) {
            Transition::Apply { .. } => true,
            Transition::Stale => false,
            Transition::Impossible { .. } => panic!("an API read is never impossible"),
        }
    }

    proptest! {
        #![proptest_config(config(2048))]

        /// The whole record, every field, is the same whatever the order.
        ///
        /// Does not hold for `past_due_since` and `user_id`, the two fields
        /// `apply_snapshot` carries over from the stored record: when the
        /// newest snapshot arrives first every older one is `Stale`, and
        /// what [`learn_from_stale`] takes from it is not always enough.
        /// A recovery that arrives after the run it ended can leave the
        /// run's start later than in order (exactness would need every
        /// snapshot of the run kept); the next properties say what does
        /// hold.
        #[test]
        #[ignore = "past_due_since may start later than in order (see learn_from_stale); the bound is tested below"]
        fn any_arrival_order_converges_to_the_in_order_record(
            (sorted, shuffled) in sorted_and_shuffled()
        ) {
            let (in_order, _) = deliver(&sorted);
            let (any_order, _) = deliver(&shuffled);
            prop_assert_eq!(any_order, in_order);
        }

        /// Every field but the two above converges: status, periods, trial,
        /// items, the watermark, `verified_at` and `recovered_at`.
        /// `past_due_since` and `user_id` are left out here, and only here,
        /// for the reason the ignored property above gives.
        #[test]
        fn any_arrival_order_converges_on_all_but_past_due_since_and_user_id(
            (sorted, shuffled) in sorted_and_shuffled()
        ) {
            let mask = |r: SubscriptionRecord| SubscriptionRecord {
                past_due_since: None,
                user_id: None,
                ..r
            };
            let (in_order, _) = deliver(&sorted);
            let (any_order, _) = deliver(&shuffled);
            prop_assert_eq!(mask(any_order), mask(in_order));
        }

        /// What holds of `past_due_since` in any order: it is set exactly
        /// when the record is in dunning, at a snapshot no newer than the
        /// record's, and never earlier than in order. A grace never ends
        /// sooner because webhooks came out of order.
        #[test]
        fn any_arrival_order_never_starts_the_grace_earlier_than_in_order(
            (sorted, shuffled) in sorted_and_shuffled()
        ) {
            let (in_order, _) = deliver(&sorted);
            let (any_order, _) = deliver(&shuffled);
            prop_assert_eq!(
                any_order.past_due_since.is_some(),
                in_order.past_due_since.is_some()
            );
            if let (Some(any), Some(ordered)) = (any_order.past_due_since, in_order.past_due_since) {
                prop_assert!(any >= ordered, "started at {} instead of {}", any, ordered);
                prop_assert!(any <= any_order.snapshot_created);
            }
        }

        /// Whatever the stored record and the snapshot, a webhook never
        /// makes a move Stripe cannot make; an API read always lands when
        /// newer, and says when it corrected one.
        #[test]
        fn no_impossible_transition_is_ever_applied_on_an_events_word(
            current in proptest::option::of(any_record()),
            (snap, stamp) in any_event(),
        ) {
            let from = current.as_ref().and_then(|c| c.status);
            match apply_snapshot(current.as_ref(), &snap, &stamp, Authority::Event) {
                Transition::Apply { record, corrected, .. } => {
                    if let Some(from) = from {
                        prop_assert!(from.can_become(snap.status), "{} -> {} applied", from, snap.status);
                    }
                    prop_assert_eq!(corrected, None);
                    prop_assert_eq!(record.status, Some(snap.status));
                }
                Transition::Impossible { from: f, to } => {
                    prop_assert_eq!(Some(f), from);
                    prop_assert_eq!(to, snap.status);
                    prop_assert!(!f.can_become(to));
                }
                Transition::Stale => prop_assert!(from.is_some()),
            }
            match apply_snapshot(current.as_ref(), &snap, &stamp, Authority::Api) {
                Transition::Apply { corrected, .. } => {
                    let expected = from.filter(|f| !f.can_become(snap.status));
                    prop_assert_eq!(corrected, expected);
                }
                Transition::Impossible { .. } => prop_assert!(false, "an API read is never impossible"),
                Transition::Stale => prop_assert!(from.is_some()),
            }
        }

        /// Read through `apply_snapshot`, "newer than" is a strict total
        /// order: never both ways, transitive, and two snapshots neither of
        /// which is newer are interchangeable and share the documented key.
        /// The same snapshot offered again is stale.
        #[test]
        fn the_ordering_key_is_a_strict_total_order_and_a_repeat_is_stale(
            triples in proptest::collection::vec((any_record(), any_event()), 3),
        ) {
            let events: Vec<&Event> = triples.iter().map(|(_, e)| e).collect();
            let records: Vec<SubscriptionRecord> =
                triples.iter().map(|(base, e)| landed(base, e)).collect();
            let gt = |a: usize, b: usize| newer(events[a], &records[b]);
            for a in 0..3 {
                // Irreflexive: a snapshot is not newer than itself, so a
                // repeat is stale, whoever vouches for it.
                prop_assert!(!gt(a, a));
                for authority in [Authority::Event, Authority::Api] {
                    let again = apply_snapshot(Some(&records[a]), &events[a].0, &events[a].1, authority);
                    prop_assert_eq!(again, Transition::Stale);
                }
                for b in 0..3 {
                    // Antisymmetric.
                    prop_assert!(!(gt(a, b) && gt(b, a)), "{} and {} are each newer", a, b);
                    // Total: incomparable means equal in every comparison,
                    // and equal in the key the module documents.
                    if !gt(a, b) && !gt(b, a) {
                        prop_assert_eq!(key(events[a]), key(events[b]));
                        for c in 0..3 {
                            prop_assert_eq!(gt(a, c), gt(b, c));
                            prop_assert_eq!(gt(c, a), gt(c, b));
                        }
                    }
                    for c in 0..3 {
                        // Transitive.
                        if gt(a, b) && gt(b, c) {
                            prop_assert!(gt(a, c), "{} > {} > {} but not {} > {}", a, b, c, a, c);
                        }
                    }
                }
            }
        }

        /// A history Stripe could produce never looks impossible, in any
        /// order: only a duplicate or an older snapshot is refused.
        #[test]
        fn a_history_stripe_could_produce_is_never_called_impossible(
            (sorted, shuffled) in sorted_and_shuffled()
        ) {
            for events in [&sorted, &shuffled] {
                let (_, outcomes) = deliver(events);
                for (t, e) in outcomes.iter().zip(events.iter()) {
                    prop_assert!(
                        !matches!(t, Transition::Impossible { .. }),
                        "{:?} refused for {:?}", t, e
                    );
                }
            }
        }
    }
}

/// Minimal cases where the stored record depended on the order events
/// arrive in, found by
/// `properties::any_arrival_order_converges_to_the_in_order_record`, and
/// the case it still finds. Fixed by [`learn_from_stale`] with
/// [`SubscriptionRecord::recovered_at`], except the last, which stays on
/// the side of a longer grace.
#[cfg(test)]
mod counterexamples {
    use super::*;

    fn event(status: Status, created: i64, id: &str) -> (SubscriptionSnapshot, Stamp) {
        let snap = SubscriptionSnapshot {
            id: "sub_1".into(),
            customer_id: "cus_1".into(),
            status,
            current_period_end: 1_000_000,
            trial_end: None,
            cancel_at_period_end: false,
            cancel_at: None,
            pause: None,
            items: vec![],
            user_id: None,
        };
        let stamp = Stamp {
            created,
            event_id: id.into(),
        };
        (snap, stamp)
    }

    fn deliver(events: &[&(SubscriptionSnapshot, Stamp)]) -> SubscriptionRecord {
        let mut record = SubscriptionRecord::placeholder("sub_1", "cus_1");
        for (snap, stamp) in events {
            match apply_snapshot(Some(&record), snap, stamp, Authority::Event) {
                Transition::Apply { record: r, .. } => record = *r,
                Transition::Stale => {
                    record = learn_from_stale(&record, snap, stamp).unwrap_or(record)
                }
                Transition::Impossible { .. } => {}
            }
        }
        record
    }

    /// Two past_due snapshots delivered newest first: the older one is
    /// stale, so the run seems to start at the later one and the grace
    /// period ends later than in order (by the gap between the two).
    #[test]
    fn past_due_since_newest_first_lengthens_the_grace() {
        let a = event(Status::PastDue, 100, "evt_a");
        let b = event(Status::PastDue, 110, "evt_b");
        assert_eq!(deliver(&[&a, &b]).past_due_since, Some(100));
        assert_eq!(deliver(&[&b, &a]).past_due_since, Some(100), "got 110");
    }

    /// past_due, paid (active), past_due again: if the active snapshot comes
    /// last (late retry, or never), the two past_due runs merge and the
    /// grace counts from the first one: access can end at once, a whole
    /// period early.
    #[test]
    fn past_due_since_late_recovery_shortens_the_grace() {
        let a = event(Status::PastDue, 100, "evt_a");
        let paid = event(Status::Active, 110, "evt_b");
        let c = event(Status::PastDue, 120, "evt_c");
        assert_eq!(deliver(&[&a, &paid, &c]).past_due_since, Some(120));
        assert_eq!(
            deliver(&[&a, &c, &paid]).past_due_since,
            Some(120),
            "got 100"
        );
    }

    /// A recovery that arrives after the run it ended, with a snapshot of
    /// the run between them arriving before it: the run's start is taken
    /// as the newest snapshot's, later than in order (a longer grace), as
    /// [`learn_from_stale`] says.
    #[test]
    fn past_due_since_after_a_late_recovery_errs_on_the_later_side() {
        let a = event(Status::PastDue, 100, "evt_a");
        let paid = event(Status::Active, 110, "evt_b");
        let x = event(Status::PastDue, 115, "evt_x");
        let c = event(Status::PastDue, 120, "evt_c");
        assert_eq!(deliver(&[&a, &paid, &x, &c]).past_due_since, Some(115));
        assert_eq!(deliver(&[&a, &c, &paid, &x]).past_due_since, Some(115));
        assert_eq!(deliver(&[&a, &c, &x, &paid]).past_due_since, Some(120));
    }

    /// A row stored before `recovered_at` existed, out of dunning: its own
    /// snapshot counts as the last recovery, so a late snapshot of an
    /// earlier run does not move the new run's start back before it.
    #[test]
    fn a_row_stored_without_recovered_at_still_bounds_the_next_run() {
        let active = event(Status::Active, 200, "evt_active");
        let legacy = match apply_snapshot(None, &active.0, &active.1, Authority::Event) {
            Transition::Apply { record, .. } => SubscriptionRecord {
                recovered_at: None,
                ..*record
            },
            other => panic!("{other:?}"),
        };
        let new_run = event(Status::PastDue, 300, "evt_new_run");
        let Transition::Apply { record, .. } =
            apply_snapshot(Some(&legacy), &new_run.0, &new_run.1, Authority::Event)
        else {
            panic!("the newer snapshot applies");
        };
        assert_eq!(record.recovered_at, Some(200));
        let old_run = event(Status::PastDue, 150, "evt_old_run");
        assert_eq!(learn_from_stale(&record, &old_run.0, &old_run.1), None);
    }

    /// The metadata link made by an older snapshot survives a newer one
    /// without it only if the older one arrives first.
    /// Fixed by [`learn_from_stale`], which the ledger applies to stale
    /// snapshots.
    #[test]
    fn user_id_of_a_stale_snapshot_is_kept() {
        let mut linked = event(Status::Active, 100, "evt_a");
        linked.0.user_id = Some("u1".into());
        let unlinked = event(Status::Active, 110, "evt_b");
        assert_eq!(
            deliver(&[&linked, &unlinked]).user_id.as_deref(),
            Some("u1")
        );
        assert_eq!(
            deliver(&[&unlinked, &linked]).user_id.as_deref(),
            Some("u1"),
            "got None"
        );
    }
}
