//! The effect of one event inside its transaction: dispatch on the domain
//! event (once, here), the state machine's verdict, and the review records
//! an anomaly gets. Every function takes the open transaction and `now`.

use crate::event::{self, DomainEvent, Envelope};
use crate::outcome::{Outcome, ReviewReason};
use crate::store::{NewEvent, NewReview, StoreError, Tx};
use crate::subject::Affected;
use crate::subscription::{
    self, Authority, Stamp, SubscriptionRecord, SubscriptionSnapshot, Transition,
};

use super::{FollowUp, Source};

/// Longest error or review text stored; it may quote a payload.
pub(super) const MAX_TEXT_BYTES: usize = 2000;

/// The effect of one event, before it is written.
pub(super) struct Effect {
    pub(super) outcome: Outcome,
    pub(super) error: Option<String>,
}

impl Effect {
    pub(super) fn applied() -> Self {
        Effect {
            outcome: Outcome::Applied,
            error: None,
        }
    }

    pub(super) fn with(outcome: Outcome, error: impl Into<String>) -> Self {
        Effect {
            outcome,
            error: Some(error.into()),
        }
    }

    /// The error text as it can be stored.
    pub(super) fn storable_error(&self) -> Option<std::borrow::Cow<'_, str>> {
        self.error
            .as_deref()
            .map(|e| event::storable_text(e, MAX_TEXT_BYTES))
    }
}

/// The ledger row of a verified event (its text and hashes), handled
/// when it was received: (outcome, error).
pub(super) fn new_event<'a>(
    envelope: &'a Envelope,
    (payload, payload_sha256, content_sha256): (&'a str, &'a str, &'a str),
    source: Source,
    received_at_ms: i64,
    (outcome, error): (Outcome, Option<&'a str>),
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
        change_key: envelope.change_key(),
        outcome,
        error,
        processed_at_ms: received_at_ms,
    }
}

/// The customer whose access an event may change.
pub(super) fn customer_of(domain: &DomainEvent) -> Option<&str> {
    match domain {
        DomainEvent::Subscription(s) => Some(&s.customer_id),
        DomainEvent::InvoicePaid(p) => Some(&p.customer_id),
        DomainEvent::CheckoutCompleted(c) => c.customer_id.as_deref(),
        DomainEvent::Customer(c) => Some(&c.customer_id),
        DomainEvent::EntitlementSummary(s) => Some(&s.customer_id),
        DomainEvent::InvoiceFailed(_) | DomainEvent::ProductChanged(_) | DomainEvent::Unhandled => {
            None
        }
    }
}

/// Stores `record` in place of `current`, and notes every subject either
/// of them answered for: a subscription that moves to another user or
/// customer must drop the old subject's cached answer too.
pub(super) async fn save(
    tx: &mut dyn Tx,
    now: i64,
    current: &SubscriptionRecord,
    record: &SubscriptionRecord,
    affected: &mut Affected,
) -> Result<(), StoreError> {
    tx.save_subscription(record, now).await?;
    affected.add_record(current);
    affected.add_record(record);
    Ok(())
}

/// A snapshot too old to apply still counts for the user it links and for
/// where a dunning run began (see [`subscription::learn_from_stale`]).
pub(super) async fn learn_from_stale(
    tx: &mut dyn Tx,
    now: i64,
    current: &SubscriptionRecord,
    snap: &SubscriptionSnapshot,
    stamp: &Stamp,
    affected: &mut Affected,
) -> Result<(), StoreError> {
    match subscription::learn_from_stale(current, snap, stamp) {
        Some(linked) => save(tx, now, current, &linked, affected).await,
        None => Ok(()),
    }
}

/// An event that writes one subscription, as it writes it.
pub(super) enum Write<'a> {
    Snapshot(&'a SubscriptionSnapshot, Authority),
    Payment(&'a event::InvoicePaid),
}

/// What an event that writes one subscription does to it, decided from the
/// stored record alone: the path that writes event by event
/// ([`apply_event`]) and the one that writes a run of them at once
/// ([`super::writer`]) both act on it.
pub(super) enum Step {
    /// Stores `record` when there is one, and records the event with
    /// `outcome` (applied, or stale: an older snapshot that may still
    /// link a user).
    Write {
        record: Option<SubscriptionRecord>,
        outcome: Outcome,
    },
    /// Stores `record`, which won a same-second tie over `previous`: that
    /// deserves a review.
    Tie {
        record: SubscriptionRecord,
        previous: crate::subscription::Status,
    },
    /// Stripe can't make this move: nothing is stored, and it is flagged.
    Impossible {
        from: crate::subscription::Status,
        to: crate::subscription::Status,
    },
}

pub(super) fn step(current: &SubscriptionRecord, write: &Write<'_>, envelope: &Envelope) -> Step {
    match write {
        Write::Snapshot(snap, authority) => {
            let stamp = Stamp {
                created: envelope.created,
                event_id: envelope.id.clone(),
            };
            match subscription::apply_snapshot(Some(current), snap, &stamp, *authority) {
                // Stripe's API overrode what events could not do.
                Transition::Apply {
                    record, corrected, ..
                } if corrected.is_some() => Step::Write {
                    record: Some(*record),
                    outcome: Outcome::Applied,
                },
                Transition::Apply {
                    record,
                    tie: Some(previous),
                    ..
                } => Step::Tie {
                    record: *record,
                    previous,
                },
                Transition::Apply { record, .. } => Step::Write {
                    record: Some(*record),
                    outcome: Outcome::Applied,
                },
                Transition::Stale => Step::Write {
                    record: subscription::learn_from_stale(current, snap, &stamp),
                    outcome: Outcome::Stale,
                },
                Transition::Impossible { from, to } => Step::Impossible { from, to },
            }
        }
        Write::Payment(paid) => Step::Write {
            record: Some(subscription::apply_payment(
                Some(current),
                &paid.subscription_id,
                &paid.customer_id,
                paid.period_end,
                envelope.created,
            )),
            outcome: Outcome::Applied,
        },
    }
}

/// Applies one domain event inside `tx`. Dispatch on event kinds happens
/// here, once.
pub(super) async fn apply_event(
    now: i64,
    tx: &mut dyn Tx,
    envelope: &Envelope,
    (domain, authority): (DomainEvent, Authority),
    affected: &mut Affected,
    follow_up: &mut Vec<FollowUp>,
) -> Result<Effect, StoreError> {
    match domain {
        DomainEvent::Subscription(snap) => {
            let current = tx
                .lock_subscription(&snap.id, &snap.customer_id, now)
                .await?;
            let write = Write::Snapshot(&snap, authority);
            match step(&current, &write, envelope) {
                Step::Write { record, outcome } => {
                    if let Some(record) = record {
                        save(tx, now, &current, &record, affected).await?;
                    }
                    Ok(Effect {
                        outcome,
                        error: None,
                    })
                }
                Step::Tie { record, previous } => {
                    save(tx, now, &current, &record, affected).await?;
                    let details = format!(
                        "two snapshots created in the same second: {previous} and {}; applied {} by the tie rule",
                        snap.status, snap.status
                    );
                    let review = (ReviewReason::SameSecondTie, details.as_str());
                    flag_and_recheck(now, tx, &snap, envelope, review, follow_up).await?;
                    Ok(Effect::applied())
                }
                Step::Impossible { from, to } => {
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
            let Step::Write { record, outcome } = step(&current, &Write::Payment(&paid), envelope)
            else {
                unreachable!("BUG: a payment is always written")
            };
            if let Some(record) = record {
                save(tx, now, &current, &record, affected).await?;
            }
            Ok(Effect {
                outcome,
                error: None,
            })
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
                "payment failures never change status by themselves; the subscription is re-read from Stripe if STRIPE_API_KEY is set, else the next subscription event decides",
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
        DomainEvent::ProductChanged(product) => {
            // The map is read again on the next feature check; one read
            // begun before this event can't store an older map over it.
            // Stripe's `created` has whole seconds: the change may be
            // anywhere in that second, so a read begun in it may predate it.
            let changed_at_ms = envelope.created.saturating_mul(1000).saturating_add(999);
            tx.forget_product_features(&product, changed_at_ms).await?;
            affected.add_product(&product);
            Ok(Effect::applied())
        }
        DomainEvent::EntitlementSummary(summary) => {
            apply_summary(now, tx, &summary, affected).await
        }
        DomainEvent::Unhandled => Ok(Effect {
            outcome: Outcome::Ignored,
            error: None,
        }),
    }
}

/// Stores a customer's active entitlement summary unless a later one is
/// stored. When it names a feature that none of the known maps of the
/// customer's products carry, a feature was attached since they were read:
/// those maps are forgotten as of the summary, so the next check reads
/// them again. (A summary that names fewer features proves nothing: Stripe
/// leaves out what Tollgate's grace still grants.)
async fn apply_summary(
    now: i64,
    tx: &mut dyn Tx,
    summary: &event::EntitlementSummary,
    affected: &mut Affected,
) -> Result<Effect, StoreError> {
    let customer = &summary.customer_id;
    if !tx
        .save_entitlement_summary(customer, &summary.features, summary.as_of_ms, now)
        .await?
    {
        return Ok(Effect::with(
            Outcome::Stale,
            "a later entitlement summary of this customer is stored",
        ));
    }
    affected.add_customer(customer);
    let records = tx.customer_records(customer).await?;
    let products: Vec<String> = crate::catalog::products_of(&records)
        .into_iter()
        .map(str::to_owned)
        .collect();
    let maps = tx.product_features(&products).await?;
    let carried: std::collections::BTreeSet<&str> = maps
        .iter()
        .flat_map(|(_, features)| features.iter().map(String::as_str))
        .collect();
    if let Some(feature) = summary
        .features
        .iter()
        .find(|f| !carried.contains(f.as_str()))
    {
        for (product, _) in &maps {
            tx.forget_product_features(product, summary.as_of_ms)
                .await?;
            affected.add_product(product);
        }
        if !maps.is_empty() {
            tracing::info!(customer = %customer, feature = %feature, products = maps.len(), "entitlement summary names a feature no known product map carries; maps forgotten");
        }
    }
    if summary.truncated {
        return Ok(Effect::with(
            Outcome::Applied,
            "the summary's list had more pages than it carries and could not be re-listed from Stripe: stored as it came",
        ));
    }
    Ok(Effect::applied())
}

pub(super) async fn flag(
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

/// Flags an object Tollgate can't read (an unknown status, a missing
/// field). When it is a subscription, it is also re-read from Stripe once
/// the event commits: the API may render it in a shape Tollgate reads, and
/// the review keeps what it said.
pub(super) async fn flag_unknown_shape(
    now: i64,
    tx: &mut dyn Tx,
    envelope: &Envelope,
    error: &str,
    follow_up: &mut Vec<FollowUp>,
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
    let review_id = flag(
        now,
        tx,
        subject,
        subscription,
        envelope,
        ReviewReason::UnknownShape,
        &details,
    )
    .await?;
    if let Some(id) = subscription {
        follow_up.push(FollowUp {
            subscription_id: id.to_owned(),
            review_id: Some(review_id),
        });
    }
    Ok(Effect::with(Outcome::Failed, details))
}

pub(super) async fn flag_payload_mismatch(
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
