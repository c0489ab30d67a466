//! The event ledger: records each verified event exactly once and applies its
//! effect in the same transaction.
//!
//! Every write Tollgate makes from Stripe data goes through here, and reads
//! top to bottom as what commits together: begin, record the event (a
//! duplicate stops here), apply its effect, set the outcome, queue what the
//! product must hear about, commit, then invalidate the cache. If anything
//! fails before the commit, nothing is stored and the caller must not
//! acknowledge the event.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::access_change;
use crate::cache::SubjectCache;
use crate::clock::Clock;
use crate::event::{self, DomainEvent, Envelope};
use crate::outcome::{Outcome, ReviewReason};
use crate::policy::{self, Decision, Policy};
use crate::store::{NewEvent, NewReview, Recorded, Store, StoreError, Tx};
use crate::subject::Affected;
use crate::subscription::{self, Authority, Stamp, Status, SubscriptionSnapshot, Transition};

/// Longest error or review text stored; it may quote a payload.
const MAX_TEXT_BYTES: usize = 2000;

/// Where an event came in from, kept in the ledger for support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Webhook,
    /// Listed from `GET /v1/events` by the reconciler: a webhook we missed.
    Reconciler,
}

impl Source {
    fn as_str(self) -> &'static str {
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

/// Why an event cannot be replayed.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no event with that id")]
    NotFound,
    #[error("only failed events can be replayed; this one is {0}")]
    NotFailed(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The effect of one event, before it is written.
struct Effect {
    outcome: Outcome,
    error: Option<String>,
}

impl Effect {
    fn applied() -> Self {
        Effect {
            outcome: Outcome::Applied,
            error: None,
        }
    }

    fn with(outcome: Outcome, error: impl Into<String>) -> Self {
        Effect {
            outcome,
            error: Some(error.into()),
        }
    }
}

pub struct Ledger {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    /// Invalidated after every commit, before the caller answers anyone.
    cache: Arc<SubjectCache>,
    /// The metadata key that carries the product's user id.
    user_key: String,
    /// Used to tell whether a change altered access (notifications).
    policy: Policy,
    /// Keep access on revocations found only by the reconciler until an
    /// admin resolves the review.
    hold_revocations: bool,
}

/// Hash of an event's content in canonical JSON (keys sorted), so the same
/// event compares equal whether Stripe delivered it or the API listed it.
pub fn content_hash(envelope: &Envelope) -> String {
    fn write(v: &serde_json::Value, h: &mut Sha256) {
        match v {
            serde_json::Value::Object(map) => {
                let mut keys: Vec<&String> = map.keys().collect();
                keys.sort();
                h.update(b"{");
                for k in keys {
                    h.update(
                        serde_json::to_string(k)
                            .expect("BUG: strings serialize")
                            .as_bytes(),
                    );
                    h.update(b":");
                    write(&map[k], h);
                    h.update(b",");
                }
                h.update(b"}");
            }
            serde_json::Value::Array(items) => {
                h.update(b"[");
                for item in items {
                    write(item, h);
                    h.update(b",");
                }
                h.update(b"]");
            }
            other => h.update(other.to_string().as_bytes()),
        }
    }
    let mut h = Sha256::new();
    h.update(envelope.event_type.as_bytes());
    h.update(b"\n");
    h.update(envelope.created.to_string().as_bytes());
    h.update(b"\n");
    write(&envelope.object, &mut h);
    hex::encode(h.finalize())
}

impl Ledger {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        cache: Arc<SubjectCache>,
        user_key: String,
        policy: Policy,
        hold_revocations: bool,
    ) -> Self {
        Ledger {
            store,
            clock,
            cache,
            user_key,
            policy,
            hold_revocations,
        }
    }

    pub fn user_key(&self) -> &str {
        &self.user_key
    }

    pub fn cache(&self) -> &Arc<SubjectCache> {
        &self.cache
    }

    /// Collects every user linked to the touched customers, commits, then
    /// invalidates the cache for all of them.
    async fn commit(&self, mut tx: Box<dyn Tx>, mut affected: Affected) -> Result<(), StoreError> {
        for customer in affected.customers.clone() {
            for user in tx.users_of_customer(&customer).await? {
                affected.add_user(&user);
            }
        }
        if !affected.is_empty() {
            tx.publish_changes(&affected).await?;
        }
        tx.commit().await?;
        self.cache.invalidate(&affected);
        Ok(())
    }

    /// The customer's access as stored in `tx`, right now.
    async fn customer_access(
        &self,
        tx: &mut dyn Tx,
        customer: &str,
    ) -> Result<Decision, StoreError> {
        let records = tx.customer_records(customer).await?;
        Ok(policy::decide(
            &records,
            self.clock.now_secs(),
            &self.policy,
            None,
        ))
    }

    /// After a change found by the reconciler or a refresh: flags (and,
    /// when configured, holds) a revocation found only by the reconciler,
    /// and queues a notification when access changed. Returns whether it did.
    async fn announce(
        &self,
        tx: &mut dyn Tx,
        customer: &str,
        before: &Decision,
        by_reconciler: bool,
    ) -> Result<bool, StoreError> {
        let mut after = self.customer_access(tx, customer).await?;
        if by_reconciler && before.has_access && !after.has_access {
            let details = format!(
                "the reconciler found access revoked without a webhook: {} -> {}",
                before.detail, after.detail
            );
            let review_id = tx
                .flag_review(&NewReview {
                    subject: customer,
                    subscription_id: Some(&before.subscription_id),
                    event_id: None,
                    reason: ReviewReason::RevocationByReconciler,
                    details: &details,
                    created_at_ms: self.clock.now_ms(),
                })
                .await?;
            tracing::warn!(
                customer,
                review_id,
                hold = self.hold_revocations,
                "revocation found only by the reconciler"
            );
            if self.hold_revocations {
                tx.set_hold(&before.subscription_id, review_id).await?;
                after = self.customer_access(tx, customer).await?;
            }
        }
        let Some(kind) = access_change::change(before, &after) else {
            return Ok(false);
        };
        let user = tx
            .users_of_customer(customer)
            .await?
            .into_iter()
            .next()
            .unwrap_or_default();
        let id = tx
            .queue_notification(
                &access_change::notification(kind, customer, &user, before, &after),
                self.clock.now_ms(),
            )
            .await?;
        tracing::info!(
            notification_id = id,
            customer,
            kind = kind.as_str(),
            "access change queued"
        );
        Ok(true)
    }

    /// Records `envelope` (whose raw bytes are `raw`) once and applies it.
    ///
    /// When the database refuses a value of the event for good (see
    /// [`StoreError::Rejected`]), nothing of the attempt is kept and the
    /// event is recorded as `failed` with a review instead, so the sender
    /// gets a 200 rather than a 503 it would retry for days.
    pub async fn ingest(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        source: Source,
    ) -> Result<Ingested, StoreError> {
        match self.record_and_apply(envelope, raw, source).await {
            Err(StoreError::Rejected(cause)) => {
                tracing::warn!(event_id = %envelope.id, error = %cause, "the database refused a value of this event; recording it as failed");
                self.record_refused(envelope, raw, source, &cause).await
            }
            other => other,
        }
    }

    /// Records an event the database refused to apply: the event row (its
    /// payload is JSON text, which every backend stores) as `failed`, and a
    /// review. If even that is refused, the error goes back to the caller.
    async fn record_refused(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        source: Source,
        cause: &sqlx::Error,
    ) -> Result<Ingested, StoreError> {
        let (sha, content) = (hex::encode(Sha256::digest(raw)), content_hash(envelope));
        let payload = String::from_utf8_lossy(raw);
        let new_event = new_event(
            envelope,
            &payload,
            &sha,
            &content,
            source,
            self.clock.now_ms(),
        );
        let mut tx = self.store.begin().await?;
        if let Recorded::Duplicate { .. } = tx.insert_event(&new_event).await? {
            tx.rollback().await?;
            return Ok(Ingested::Duplicate);
        }
        let error = format!("the database refused a value of this event: {cause}");
        let error = event::storable_text(&error, MAX_TEXT_BYTES);
        let customer = envelope.object.get("customer").and_then(|c| c.as_str());
        flag(
            self.clock.now_ms(),
            &mut *tx,
            customer.unwrap_or("unknown"),
            None,
            envelope,
            ReviewReason::StoreRefused,
            &error,
        )
        .await?;
        tx.finish_event(
            &envelope.id,
            Outcome::Failed,
            Some(&error),
            self.clock.now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(Ingested::Recorded {
            outcome: Outcome::Failed,
            follow_up: Vec::new(),
        })
    }

    async fn record_and_apply(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        source: Source,
    ) -> Result<Ingested, StoreError> {
        let sha = hex::encode(Sha256::digest(raw));
        let content = content_hash(envelope);
        let payload = String::from_utf8_lossy(raw);
        let new_event = new_event(
            envelope,
            &payload,
            &sha,
            &content,
            source,
            self.clock.now_ms(),
        );

        let mut tx = self.store.begin().await?;
        if let Recorded::Duplicate {
            payload_sha256,
            content_sha256,
        } = tx.insert_event(&new_event).await?
        {
            let same = match content_sha256 {
                Some(stored) => stored == content,
                None => payload_sha256 == sha,
            };
            if same {
                tx.rollback().await?;
            } else {
                flag_payload_mismatch(self.clock.now_ms(), &mut *tx, envelope).await?;
                tx.commit().await?;
            }
            return Ok(Ingested::Duplicate);
        }
        let mut affected = Affected::default();
        let mut follow_up = Vec::new();
        let checked = event::check_created(envelope, self.clock.now_secs())
            .and_then(|()| event::classify(envelope, &self.user_key));
        let effect = match checked {
            Ok(domain) => {
                // A change the reconciler finds is news to the product.
                let watched = customer_of(&domain).filter(|_| source == Source::Reconciler);
                let before = match watched {
                    Some(c) => Some(self.customer_access(&mut *tx, c).await?),
                    None => None,
                };
                let watched = watched.map(str::to_owned);
                let effect = apply_event(
                    self.clock.now_ms(),
                    &mut *tx,
                    envelope,
                    domain,
                    &mut affected,
                    &mut follow_up,
                )
                .await?;
                if let (Some(customer), Some(before)) = (watched, before) {
                    self.announce(&mut *tx, &customer, &before, true).await?;
                }
                effect
            }
            Err(shape) => {
                flag_unknown_shape(self.clock.now_ms(), &mut *tx, envelope, &shape.0).await?
            }
        };
        let error = effect
            .error
            .as_deref()
            .map(|e| event::storable_text(e, MAX_TEXT_BYTES));
        tx.finish_event(
            &envelope.id,
            effect.outcome,
            error.as_deref(),
            self.clock.now_ms(),
        )
        .await?;
        self.commit(tx, affected).await?;
        Ok(Ingested::Recorded {
            outcome: effect.outcome,
            follow_up,
        })
    }

    /// Re-runs a `failed` event through the pipeline, e.g. after a fix.
    pub async fn replay(&self, event_id: &str) -> Result<Outcome, ReplayError> {
        let mut tx = self.store.begin().await?;
        let Some((payload, outcome)) = tx.load_event(event_id).await? else {
            tx.rollback().await?;
            return Err(ReplayError::NotFound);
        };
        if outcome != Outcome::Failed.as_str() {
            tx.rollback().await?;
            return Err(ReplayError::NotFailed(outcome));
        }
        let mut affected = Affected::default();
        let mut follow_up = Vec::new();
        let effect = match event::parse_envelope(payload.as_bytes()) {
            Err(e) => Effect::with(Outcome::Failed, e.to_string()),
            Ok(envelope) => match event::check_created(&envelope, self.clock.now_secs())
                .and_then(|()| event::classify(&envelope, &self.user_key))
            {
                Ok(domain) => {
                    apply_event(
                        self.clock.now_ms(),
                        &mut *tx,
                        &envelope,
                        domain,
                        &mut affected,
                        &mut follow_up,
                    )
                    .await?
                }
                Err(shape) => Effect::with(Outcome::Failed, shape.0),
            },
        };
        let error = effect
            .error
            .as_deref()
            .map(|e| event::storable_text(e, MAX_TEXT_BYTES));
        tx.finish_event(
            event_id,
            effect.outcome,
            error.as_deref(),
            self.clock.now_ms(),
        )
        .await?;
        self.commit(tx, affected).await?;
        tracing::info!(
            event_id,
            outcome = effect.outcome.as_str(),
            "event replayed"
        );
        Ok(effect.outcome)
    }

    /// Applies a subscription read from Stripe's API at `read_at` (unix
    /// seconds) through the same ordering rules as events. A read is the
    /// truth at that moment, so it also makes the record fresh. A change of
    /// access is queued as a notification in the same transaction.
    pub async fn apply_api_snapshot(
        &self,
        snap: &SubscriptionSnapshot,
        read_at: i64,
        origin: ReadOrigin,
    ) -> Result<ApiApplied, StoreError> {
        let stamp = Stamp {
            created: read_at,
            event_id: String::new(),
        };
        let mut tx = self.store.begin().await?;
        let current = tx
            .lock_subscription(&snap.id, &snap.customer_id, self.clock.now_ms())
            .await?;
        let before = self.customer_access(&mut *tx, &snap.customer_id).await?;
        let mut affected = Affected::default();
        let outcome = match subscription::apply_snapshot(
            Some(&current),
            snap,
            &stamp,
            Authority::Api,
        ) {
            Transition::Apply {
                record, corrected, ..
            } => {
                if let Some(from) = corrected {
                    tracing::warn!(subscription_id = %snap.id, %from, to = %snap.status, "stripe api overrides a transition events could not make");
                }
                tx.save_subscription(&record, self.clock.now_ms()).await?;
                affected.add_record(&current);
                affected.add_record(&record);
                Outcome::Applied
            }
            Transition::Stale | Transition::Impossible { .. } => Outcome::Stale,
        };
        let access_changed = self
            .announce(
                &mut *tx,
                &snap.customer_id,
                &before,
                origin == ReadOrigin::Sweep,
            )
            .await?;
        self.commit(tx, affected).await?;
        Ok(ApiApplied {
            outcome,
            previous: current.status.filter(|p| *p != snap.status),
            status: snap.status,
            access_changed,
        })
    }

    /// Adds what a follow-up refresh found to a review record.
    pub async fn note_review_outcome(
        &self,
        review_id: i64,
        outcome: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        tx.note_review_outcome(review_id, outcome).await?;
        tx.commit().await
    }

    /// Resolves a review and lifts any hold it placed; false if it was not
    /// open. A lifted hold that ends access is announced like any change.
    pub async fn resolve_review(
        &self,
        review_id: i64,
        resolution: &str,
    ) -> Result<bool, StoreError> {
        let mut tx = self.store.begin().await?;
        let review = self.store.get_review(review_id).await?;
        let customer = review.map(|r| r.subject);
        let before = match &customer {
            Some(c) => Some(self.customer_access(&mut *tx, c).await?),
            None => None,
        };
        if !tx
            .resolve_review(review_id, resolution, self.clock.now_ms())
            .await?
        {
            tx.rollback().await?;
            return Ok(false);
        }
        let mut affected = Affected::default();
        for released in tx.release_holds(review_id).await? {
            affected.add_customer(&released);
        }
        if let (Some(customer), Some(before)) = (customer, before) {
            if !affected.is_empty() {
                self.announce(&mut *tx, &customer, &before, false).await?;
            }
        }
        self.commit(tx, affected).await?;
        Ok(true)
    }

    /// Durable state of background work.
    pub async fn save_state(&self, key: &str, value: Option<&str>) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        tx.set_state(key, value).await?;
        tx.commit().await
    }

    /// Flags a customer no user is linked to, once while the review is open.
    pub async fn flag_unlinked_customer(
        &self,
        customer: &str,
        subscription_id: &str,
    ) -> Result<(), StoreError> {
        let open = self
            .store
            .find_reviews(&crate::store::ReviewFilter {
                open: Some(true),
                subject: Some(customer.to_owned()),
                limit: 100,
            })
            .await?;
        if open
            .iter()
            .any(|r| r.reason == ReviewReason::CustomerWithoutUser.as_str())
        {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        tx.flag_review(&NewReview {
            subject: customer,
            subscription_id: Some(subscription_id),
            event_id: None,
            reason: ReviewReason::CustomerWithoutUser,
            details: "no product user is linked to this customer (no checkout client_reference_id or user id metadata seen)",
            created_at_ms: self.clock.now_ms(),
        })
        .await?;
        tx.commit().await
    }
}

/// The ledger row of a verified event.
fn new_event<'a>(
    envelope: &'a Envelope,
    payload: &'a str,
    payload_sha256: &'a str,
    content_sha256: &'a str,
    source: Source,
    received_at_ms: i64,
) -> NewEvent<'a> {
    NewEvent {
        id: &envelope.id,
        event_type: &envelope.event_type,
        created: envelope.created,
        livemode: envelope.livemode,
        api_version: envelope.api_version.as_deref(),
        payload,
        payload_sha256,
        content_sha256,
        source: source.as_str(),
        received_at_ms,
    }
}

/// The customer whose access an event may change.
fn customer_of(domain: &DomainEvent) -> Option<&str> {
    match domain {
        DomainEvent::Subscription(s) => Some(&s.customer_id),
        DomainEvent::InvoicePaid(p) => Some(&p.customer_id),
        DomainEvent::CheckoutCompleted(c) => c.customer_id.as_deref(),
        DomainEvent::Customer(c) => Some(&c.customer_id),
        DomainEvent::InvoiceFailed(_) | DomainEvent::Unhandled => None,
    }
}

/// Applies one domain event inside `tx`. Dispatch on event kinds happens
/// here, once.
async fn apply_event(
    now: i64,
    tx: &mut dyn Tx,
    envelope: &Envelope,
    domain: DomainEvent,
    affected: &mut Affected,
    follow_up: &mut Vec<FollowUp>,
) -> Result<Effect, StoreError> {
    match domain {
        DomainEvent::Subscription(snap) => {
            let stamp = Stamp {
                created: envelope.created,
                event_id: envelope.id.clone(),
            };
            let current = tx
                .lock_subscription(&snap.id, &snap.customer_id, now)
                .await?;
            match subscription::apply_snapshot(Some(&current), &snap, &stamp, Authority::Event) {
                Transition::Apply { record, tie, .. } => {
                    tx.save_subscription(&record, now).await?;
                    affected.add_record(&current);
                    affected.add_record(&record);
                    if let Some(previous) = tie {
                        let details = format!(
                            "two snapshots created in the same second: {previous} and {}; applied {} by the tie rule",
                            snap.status, snap.status
                        );
                        let review = (ReviewReason::SameSecondTie, details.as_str());
                        flag_and_recheck(now, tx, &snap, envelope, review, follow_up).await?;
                    }
                    Ok(Effect::applied())
                }
                Transition::Stale => Ok(Effect {
                    outcome: Outcome::Stale,
                    error: None,
                }),
                Transition::Impossible { from, to } => {
                    let details = format!("impossible transition {from} -> {to}; not applied");
                    let review = (ReviewReason::ImpossibleTransition, details.as_str());
                    flag_and_recheck(now, tx, &snap, envelope, review, follow_up).await?;
                    Ok(Effect::with(Outcome::Ignored, details))
                }
            }
        }
        DomainEvent::InvoicePaid(paid) => {
            let current = tx
                .lock_subscription(&paid.subscription_id, &paid.customer_id, now)
                .await?;
            let record = subscription::apply_payment(
                Some(&current),
                &paid.subscription_id,
                &paid.customer_id,
                paid.period_end,
                envelope.created,
            );
            tx.save_subscription(&record, now).await?;
            affected.add_record(&current);
            affected.add_record(&record);
            Ok(Effect::applied())
        }
        DomainEvent::InvoiceFailed(failed) => {
            // Never a status change by itself; the subscription is re-read
            // from Stripe instead.
            if let Some(id) = failed.subscription_id {
                follow_up.push(FollowUp {
                    subscription_id: id,
                    review_id: None,
                });
            }
            Ok(Effect::with(
                Outcome::Ignored,
                "payment failures never change status by themselves; the subscription is re-read from Stripe",
            ))
        }
        DomainEvent::CheckoutCompleted(checkout) => {
            match (checkout.user_id, checkout.customer_id) {
                (Some(user), Some(customer)) => {
                    tx.link_customer(&customer, &user, now).await?;
                    affected.add_customer(&customer);
                    affected.add_user(&user);
                    Ok(Effect::applied())
                }
                (None, _) => Ok(Effect::with(
                    Outcome::Ignored,
                    "checkout session has no client_reference_id or user id metadata",
                )),
                (Some(_), None) => Ok(Effect::with(
                    Outcome::Ignored,
                    "checkout session has no customer",
                )),
            }
        }
        DomainEvent::Customer(link) => match link.user_id {
            Some(user) => {
                tx.link_customer(&link.customer_id, &user, now).await?;
                affected.add_customer(&link.customer_id);
                affected.add_user(&user);
                Ok(Effect::applied())
            }
            None => Ok(Effect::with(
                Outcome::Ignored,
                "customer has no user id metadata",
            )),
        },
        DomainEvent::Unhandled => Ok(Effect {
            outcome: Outcome::Ignored,
            error: None,
        }),
    }
}

async fn flag(
    now: i64,
    tx: &mut dyn Tx,
    subject: &str,
    subscription_id: Option<&str>,
    envelope: &Envelope,
    reason: ReviewReason,
    details: &str,
) -> Result<i64, StoreError> {
    let subject = &event::storable_text(subject, event::MAX_ID_BYTES);
    let details = &event::storable_text(details, MAX_TEXT_BYTES);
    tracing::warn!(event_id = %envelope.id, subject = %subject, reason = reason.as_str(), details = %details, "flagged for manual review");
    tx.flag_review(&NewReview {
        subject,
        subscription_id,
        event_id: Some(&envelope.id),
        reason,
        details,
        created_at_ms: now,
    })
    .await
}

/// Flags an anomaly on a subscription for review, and asks for the
/// subscription to be re-read from Stripe once the event commits.
async fn flag_and_recheck(
    now: i64,
    tx: &mut dyn Tx,
    snap: &SubscriptionSnapshot,
    envelope: &Envelope,
    (reason, details): (ReviewReason, &str),
    follow_up: &mut Vec<FollowUp>,
) -> Result<(), StoreError> {
    let review_id = flag(
        now,
        tx,
        &snap.customer_id,
        Some(&snap.id),
        envelope,
        reason,
        details,
    )
    .await?;
    follow_up.push(FollowUp {
        subscription_id: snap.id.clone(),
        review_id: Some(review_id),
    });
    Ok(())
}

async fn flag_unknown_shape(
    now: i64,
    tx: &mut dyn Tx,
    envelope: &Envelope,
    error: &str,
) -> Result<Effect, StoreError> {
    let subject = envelope
        .object
        .get("customer")
        .and_then(|c| c.as_str())
        .unwrap_or("unknown");
    let details = format!("{} object not understood: {error}", envelope.event_type);
    // Name the subscription when the object is one, so REFRESH can re-read it.
    let subscription = Some(&envelope.object)
        .filter(|o| o.get("object").and_then(|k| k.as_str()) == Some("subscription"))
        .and_then(|o| o.get("id"))
        .and_then(|id| id.as_str())
        .filter(|id| event::plausible_id(id));
    flag(
        now,
        tx,
        subject,
        subscription,
        envelope,
        ReviewReason::UnknownShape,
        &details,
    )
    .await?;
    Ok(Effect::with(Outcome::Failed, details))
}

async fn flag_payload_mismatch(
    now: i64,
    tx: &mut dyn Tx,
    envelope: &Envelope,
) -> Result<(), StoreError> {
    let subject = envelope
        .object
        .get("customer")
        .and_then(|c| c.as_str())
        .unwrap_or("unknown");
    let details = "event id redelivered with different content; the second payload was not applied";
    flag(
        now,
        tx,
        subject,
        None,
        envelope,
        ReviewReason::PayloadMismatch,
        details,
    )
    .await
    .map(|_| ())
}
