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

use crate::event::{self, DomainEvent, Envelope};
use crate::store::{
    now_ms, NewEvent, NewReview, Outcome, Recorded, ReviewReason, Store, StoreError, Tx,
};
use crate::subscription::{self, Stamp, Transition};

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

/// Customers and users whose answers may have changed with a commit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Affected {
    pub customers: Vec<String>,
    pub users: Vec<String>,
}

impl Affected {
    fn add_customer(&mut self, id: &str) {
        if !self.customers.iter().any(|c| c == id) {
            self.customers.push(id.to_owned());
        }
    }

    fn add_user(&mut self, id: &str) {
        if !self.users.iter().any(|u| u == id) {
            self.users.push(id.to_owned());
        }
    }
}

/// What happened to one delivered event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    /// The first delivery: recorded with this outcome.
    Recorded {
        outcome: Outcome,
        affected: Affected,
    },
    /// The id was already recorded; nothing changed.
    Duplicate,
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
    /// The metadata key that carries the product's user id.
    user_key: String,
}

impl Ledger {
    pub fn new(store: Arc<dyn Store>, user_key: String) -> Self {
        Ledger { store, user_key }
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
        let effect = match event::classify(envelope, &self.user_key) {
            Ok(domain) => apply_event(&mut *tx, envelope, domain, &mut affected).await?,
            Err(shape) => flag_unknown_shape(&mut *tx, envelope, &shape.0).await?,
        };
        for customer in affected.customers.clone() {
            for user in tx.users_of_customer(&customer).await? {
                affected.add_user(&user);
            }
        }
        tx.finish_event(
            &envelope.id,
            effect.outcome,
            effect.error.as_deref(),
            now_ms(),
        )
        .await?;
        tx.commit().await?;
        Ok(Ingested::Recorded {
            outcome: effect.outcome,
            affected,
        })
    }
}

/// Applies one domain event inside `tx`. Dispatch on event kinds happens
/// here, once.
async fn apply_event(
    tx: &mut dyn Tx,
    envelope: &Envelope,
    domain: DomainEvent,
    affected: &mut Affected,
) -> Result<Effect, StoreError> {
    let now = now_ms();
    match domain {
        DomainEvent::Subscription(snap) => {
            let stamp = Stamp {
                created: envelope.created,
                event_id: envelope.id.clone(),
            };
            let current = tx.lock_subscription(&snap.id, &snap.customer_id).await?;
            match subscription::apply_snapshot(Some(&current), &snap, &stamp) {
                Transition::Apply { record, tie } => {
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
                        flag(
                            tx,
                            &snap.customer_id,
                            Some(&snap.id),
                            envelope,
                            ReviewReason::SameSecondTie,
                            &details,
                        )
                        .await?;
                    }
                    Ok(Effect::applied())
                }
                Transition::Stale => Ok(Effect {
                    outcome: Outcome::Stale,
                    error: None,
                }),
                Transition::Impossible { from, to } => {
                    let details = format!("impossible transition {from} -> {to}; not applied");
                    flag(
                        tx,
                        &snap.customer_id,
                        Some(&snap.id),
                        envelope,
                        ReviewReason::ImpossibleTransition,
                        &details,
                    )
                    .await?;
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
        DomainEvent::InvoiceFailed(_) => Ok(Effect::with(
            Outcome::Ignored,
            "payment failures never change status by themselves",
        )),
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
) -> Result<(), StoreError> {
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
}
