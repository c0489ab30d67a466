//! The event ledger: records each verified event exactly once and applies its
//! effect in the same transaction.
//!
//! [`Ledger::ingest`] is the single pipeline every event goes through,
//! whatever brought it in. It reads top to bottom as what commits together:
//! begin, record the event (a duplicate stops here), apply its effect to the
//! subscription store, set the outcome, commit. If anything fails before the
//! commit, nothing is stored and the caller must not acknowledge the event.

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::cache::{Affected, SubjectCache};
use crate::event::{self, DomainEvent, Envelope};
use crate::store::{
    now_ms, NewEvent, NewReview, Outcome, Recorded, ReviewReason, Store, StoreError, Tx,
};
use crate::subscription::{self, Authority, Stamp, Status, SubscriptionSnapshot, Transition};

/// Where an event came in from, kept in the ledger for support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Webhook,
}

impl Source {
    fn as_str(self) -> &'static str {
        match self {
            Source::Webhook => "webhook",
        }
    }
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
    /// Invalidated after every commit, before the caller answers anyone.
    cache: Arc<SubjectCache>,
    /// The metadata key that carries the product's user id.
    user_key: String,
}

impl Ledger {
    pub fn new(store: Arc<dyn Store>, cache: Arc<SubjectCache>, user_key: String) -> Self {
        Ledger {
            store,
            cache,
            user_key,
        }
    }

    pub fn user_key(&self) -> &str {
        &self.user_key
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Collects every user linked to the touched customers, commits, then
    /// invalidates the cache for all of them.
    async fn commit(&self, mut tx: Box<dyn Tx>, mut affected: Affected) -> Result<(), StoreError> {
        for customer in affected.customers.clone() {
            for user in tx.users_of_customer(&customer).await? {
                affected.add_user(&user);
            }
        }
        tx.commit().await?;
        self.cache.invalidate(&affected);
        Ok(())
    }

    /// Records `envelope` (whose raw bytes are `raw`) once and applies it.
    pub async fn ingest(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        source: Source,
    ) -> Result<Ingested, StoreError> {
        let sha = hex::encode(Sha256::digest(raw));
        let payload = String::from_utf8_lossy(raw);
        let received_at_ms = now_ms();
        let new_event = NewEvent {
            id: &envelope.id,
            event_type: &envelope.event_type,
            created: envelope.created,
            livemode: envelope.livemode,
            api_version: envelope.api_version.as_deref(),
            payload: &payload,
            payload_sha256: &sha,
            source: source.as_str(),
            received_at_ms,
        };

        let mut tx = self.store.begin().await?;
        if let Recorded::Duplicate { payload_sha256 } = tx.insert_event(&new_event).await? {
            if payload_sha256 != sha {
                flag_payload_mismatch(&mut *tx, envelope, &payload_sha256, &sha).await?;
                tx.commit().await?;
            }
            return Ok(Ingested::Duplicate);
        }
        let mut affected = Affected::default();
        let mut follow_up = Vec::new();
        let effect = match event::classify(envelope, &self.user_key) {
            Ok(domain) => {
                apply_event(&mut *tx, envelope, domain, &mut affected, &mut follow_up).await?
            }
            Err(shape) => flag_unknown_shape(&mut *tx, envelope, &shape.0).await?,
        };
        tx.finish_event(
            &envelope.id,
            effect.outcome,
            effect.error.as_deref(),
            now_ms(),
        )
        .await?;
        self.commit(tx, affected).await?;
        Ok(Ingested::Recorded {
            outcome: effect.outcome,
            follow_up,
        })
    }

    /// Applies a subscription read from Stripe's API at `read_at` (unix
    /// seconds) through the same ordering rules as events. A read is the
    /// truth at that moment, so it also makes the record fresh.
    pub async fn apply_api_snapshot(
        &self,
        snap: &SubscriptionSnapshot,
        read_at: i64,
    ) -> Result<ApiApplied, StoreError> {
        let stamp = Stamp {
            created: read_at,
            event_id: String::new(),
        };
        let mut tx = self.store.begin().await?;
        let current = tx.lock_subscription(&snap.id, &snap.customer_id).await?;
        let previous = current.status;
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
                tx.save_subscription(&record, now_ms()).await?;
                affected.add_customer(&record.customer_id);
                if let Some(user) = &record.user_id {
                    affected.add_user(user);
                }
                Outcome::Applied
            }
            Transition::Stale | Transition::Impossible { .. } => Outcome::Stale,
        };
        self.commit(tx, affected).await?;
        Ok(ApiApplied {
            outcome,
            previous: previous.filter(|p| *p != snap.status),
            status: snap.status,
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
}

/// Applies one domain event inside `tx`. Dispatch on event kinds happens
/// here, once.
async fn apply_event(
    tx: &mut dyn Tx,
    envelope: &Envelope,
    domain: DomainEvent,
    affected: &mut Affected,
    follow_up: &mut Vec<FollowUp>,
) -> Result<Effect, StoreError> {
    let now = now_ms();
    match domain {
        DomainEvent::Subscription(snap) => {
            let stamp = Stamp {
                created: envelope.created,
                event_id: envelope.id.clone(),
            };
            let current = tx.lock_subscription(&snap.id, &snap.customer_id).await?;
            match subscription::apply_snapshot(Some(&current), &snap, &stamp, Authority::Event) {
                Transition::Apply { record, tie, .. } => {
                    tx.save_subscription(&record, now).await?;
                    affected.add_customer(&record.customer_id);
                    if let Some(user) = &record.user_id {
                        affected.add_user(user);
                    }
                    if let Some(previous) = tie {
                        let details = format!(
                            "two snapshots created in the same second: {previous} and {}; applied {} by the tie rule",
                            snap.status, snap.status
                        );
                        let review = (ReviewReason::SameSecondTie, details.as_str());
                        flag_and_recheck(tx, &snap, envelope, review, follow_up).await?;
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
                    flag_and_recheck(tx, &snap, envelope, review, follow_up).await?;
                    Ok(Effect::with(Outcome::Ignored, details))
                }
            }
        }
        DomainEvent::InvoicePaid(paid) => {
            let current = tx
                .lock_subscription(&paid.subscription_id, &paid.customer_id)
                .await?;
            let record = subscription::apply_payment(
                Some(&current),
                &paid.subscription_id,
                &paid.customer_id,
                paid.period_end,
                envelope.created,
            );
            tx.save_subscription(&record, now).await?;
            affected.add_customer(&record.customer_id);
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
    tx: &mut dyn Tx,
    subject: &str,
    subscription_id: Option<&str>,
    envelope: &Envelope,
    reason: ReviewReason,
    details: &str,
) -> Result<i64, StoreError> {
    tracing::warn!(event_id = %envelope.id, subject, reason = reason.as_str(), details, "flagged for manual review");
    tx.flag_review(&NewReview {
        subject,
        subscription_id,
        event_id: Some(&envelope.id),
        reason,
        details,
        created_at_ms: now_ms(),
    })
    .await
}

/// Flags an anomaly on a subscription for review, and asks for the
/// subscription to be re-read from Stripe once the event commits.
async fn flag_and_recheck(
    tx: &mut dyn Tx,
    snap: &SubscriptionSnapshot,
    envelope: &Envelope,
    (reason, details): (ReviewReason, &str),
    follow_up: &mut Vec<FollowUp>,
) -> Result<(), StoreError> {
    let review_id = flag(
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
    flag(
        tx,
        subject,
        None,
        envelope,
        ReviewReason::UnknownShape,
        &details,
    )
    .await?;
    Ok(Effect::with(Outcome::Failed, details))
}

async fn flag_payload_mismatch(
    tx: &mut dyn Tx,
    envelope: &Envelope,
    stored: &str,
    received: &str,
) -> Result<(), StoreError> {
    let subject = envelope
        .object
        .get("customer")
        .and_then(|c| c.as_str())
        .unwrap_or("unknown");
    let details = format!(
        "event redelivered with a different payload: stored sha256 {stored}, received {received}; not applied"
    );
    flag(
        tx,
        subject,
        None,
        envelope,
        ReviewReason::PayloadMismatch,
        &details,
    )
    .await
    .map(|_| ())
}
