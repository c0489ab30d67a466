//! The event ledger: records each verified event exactly once and applies its
//! effect in the same transaction.
//!
//! Every write Tollgate makes from Stripe data goes through here, and reads
//! top to bottom as what commits together: apply the event's effect, queue
//! what the product must hear about, record the event with its outcome (a
//! duplicate undoes what it wrote and stops here), commit, then invalidate
//! the cache. If anything fails before the commit, nothing is stored and
//! the caller must not acknowledge the event.
//!
//! Writer tasks write ([`writer`]): deliveries and API reads are queued to
//! the one their customer's writes go to, and it applies everything
//! waiting in one transaction, each event inside its own savepoint, and
//! commits once. SQLite has one writer; PostgreSQL several, side by side.
//!
//! A thin event carries no object: the one it points at is read from
//! Stripe first ([`RelatedReader`]), outside the transaction, and applied
//! like any API read. A read that may succeed later fails the delivery
//! (nothing stored, Stripe retries); one that can't is recorded as failed.

mod effects;
#[cfg(test)]
mod tests;
mod types;
mod writer;

use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::changes::Changes;
use crate::clock::Clock;
use crate::event::{self, content_hash, DomainEvent, Envelope};
use crate::livemode::Livemode;
use crate::outcome::{Outcome, ReviewReason};
use crate::related::{Read, ReadFailure, RelatedReader};
use crate::store::{Recorded, Store, StoreError, Tx};
use crate::subject::Affected;
use crate::subscription::{self, Authority, Stamp, SubscriptionSnapshot, Transition};

use effects::{Effect, MAX_TEXT_BYTES};

pub use types::{
    ApiApplied, FollowUp, IngestError, Ingested, ReadOrigin, ReplayError, Replayed, Source,
};

pub struct Ledger {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    changes: Arc<Changes>,
    /// The metadata key that carries the product's user id.
    user_key: String,
    /// Events of the other mode are recorded `ignored`, never applied.
    livemode: Livemode,
    /// Reads what thin events point at.
    related: Arc<RelatedReader>,
    /// The queues of the tasks that write (see [`writer`]).
    writer: writer::Queue,
}

/// What reading from Stripe before an event's transaction gave.
enum Fetched {
    /// Nothing needed reading (or, for a summary cut short, nothing could
    /// be: it is stored as it came).
    Nothing,
    /// A thin event's object.
    Read(Read),
    /// Can't be read until something changes; recorded as failed.
    Unreadable(String),
    /// The whole list of a summary event whose embedded list was cut short,
    /// and when the listing began (unix ms).
    Relisted {
        features: Vec<String>,
        read_at_ms: i64,
    },
}

/// What must be read from Stripe before an event's transaction.
enum PreRead {
    Nothing,
    /// A thin event's object.
    Thin,
    /// The active entitlements of this customer: the event's summary has
    /// more than it carries.
    Relist(String),
}

/// A delivered event's text and hashes, as its ledger row keeps them:
/// made by the task that received the event, before it is queued, so that
/// the ledger's writer, which every event waits on, does not hash.
struct Received {
    payload: String,
    payload_sha256: String,
    /// Equal for the same event whether it came by webhook or from the
    /// events API (see [`event::content_hash`]).
    content_sha256: String,
}

impl Received {
    fn of(envelope: &Envelope, raw: &[u8]) -> Self {
        Received {
            payload: String::from_utf8_lossy(raw).into_owned(),
            payload_sha256: hex::encode(Sha256::digest(raw)),
            content_sha256: content_hash(envelope),
        }
    }

    /// The event's row, handled as `handled` says (outcome, error).
    fn row<'r>(
        &'r self,
        envelope: &'r Envelope,
        source: Source,
        now: i64,
        handled: (Outcome, Option<&'r str>),
    ) -> crate::store::NewEvent<'r> {
        effects::new_event(
            envelope,
            (&self.payload, &self.payload_sha256, &self.content_sha256),
            source,
            now,
            handled,
        )
    }
}

/// What the shared pipeline did to one recorded event inside its
/// transaction.
struct Applied {
    effect: Effect,
    affected: Affected,
    follow_up: Vec<FollowUp>,
}

/// What recording an event whose effect is written found.
enum Recording {
    /// Recorded: keep its writes.
    New(Applied),
    /// Recorded before (or its twin was): undo its writes. `mismatch`
    /// when the stored payload differs from this one.
    Duplicate { mismatch: bool },
}

impl Ledger {
    /// The ledger, and its writer tasks (as many as `store` writes side by
    /// side), which end once the ledger is dropped.
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        changes: Arc<Changes>,
        user_key: String,
        livemode: Livemode,
        related: Arc<RelatedReader>,
    ) -> Arc<Self> {
        let writers = store.writers();
        Arc::new_cyclic(|ledger| Ledger {
            store,
            clock,
            changes,
            user_key,
            livemode,
            related,
            writer: writer::start(ledger.clone(), writers),
        })
    }

    pub fn user_key(&self) -> &str {
        &self.user_key
    }

    /// Records `envelope` (whose raw bytes are `raw`) once and applies it,
    /// answering once the batch it was written in has committed.
    ///
    /// When the database refuses a value of the event for good (see
    /// [`StoreError::Rejected`]), nothing of the attempt is kept and the
    /// event is recorded as `failed` with a review instead, so the sender
    /// gets a 200 rather than a 503 it would retry for days.
    ///
    /// A thin event already recorded (or whose twin is) answers
    /// `Duplicate` before its object is read, so a redelivery never waits
    /// on Stripe.
    pub async fn ingest(
        &self,
        envelope: Envelope,
        raw: &[u8],
        source: Source,
    ) -> Result<Ingested, IngestError> {
        // Decided once: the clock must not move an event across the line
        // between "read first" and "record as is" halfway through.
        let pre_read = self.pre_read(&envelope);
        if !matches!(pre_read, PreRead::Nothing)
            && self
                .store
                .knows_change(&envelope.id, envelope.change_key())
                .await?
        {
            return Ok(Ingested::Duplicate);
        }
        let fetched = self.read_first(&envelope, pre_read).await?;
        Ok(self.writer.ingest(envelope, raw, source, fetched).await?)
    }

    /// What of `envelope` must be read from Stripe first: a thin event's
    /// object (for a type with one), or the whole list of a summary cut
    /// short. Only for events of the mode Tollgate serves, dated sanely
    /// (anything else is recorded without a read).
    fn pre_read(&self, envelope: &Envelope) -> PreRead {
        if !self.livemode.accepts(envelope.livemode)
            || event::check_created(envelope, self.clock.now_secs()).is_err()
        {
            return PreRead::Nothing;
        }
        if envelope.thin.is_some() && event::object_type_for(envelope.v1_type()).is_some() {
            return PreRead::Thin;
        }
        match event::summary_to_relist(envelope) {
            Some(customer) => PreRead::Relist(customer),
            None => PreRead::Nothing,
        }
    }

    async fn read_first(
        &self,
        envelope: &Envelope,
        pre_read: PreRead,
    ) -> Result<Fetched, IngestError> {
        match pre_read {
            PreRead::Nothing => Ok(Fetched::Nothing),
            PreRead::Thin => self.fetch(envelope).await,
            PreRead::Relist(customer) => self.relist(envelope, &customer).await,
        }
    }

    /// Lists a customer's active entitlements for a summary event that
    /// carries only their first page. When that can't succeed (no API key,
    /// an unknown customer) the summary is stored as it came: what it
    /// lists is active, the rest unknown.
    async fn relist(&self, envelope: &Envelope, customer: &str) -> Result<Fetched, IngestError> {
        match self.related.active_entitlements(customer).await {
            Ok((features, read_at_ms)) => Ok(Fetched::Relisted {
                features,
                read_at_ms,
            }),
            Err(ReadFailure::Transient(why)) => Err(IngestError::StripeUnavailable(why)),
            Err(ReadFailure::Permanent(why)) => {
                tracing::warn!(event_id = %envelope.id, customer, error = %why, "entitlement summary cut short and not re-listed; stored as it came");
                Ok(Fetched::Nothing)
            }
        }
    }

    /// Reads the object of a thin event (see [`Ledger::pre_read`]),
    /// outside any transaction. A failure that may pass is an error:
    /// nothing is recorded and the sender retries.
    async fn fetch(&self, envelope: &Envelope) -> Result<Fetched, IngestError> {
        let Some(thin) = envelope.thin.as_ref() else {
            return Ok(Fetched::Nothing);
        };
        let expected = event::object_type_for(envelope.v1_type());
        let related = match &thin.related {
            None => {
                return Ok(Fetched::Unreadable(
                    "thin event has no related_object".to_owned(),
                ))
            }
            Some(r) if Some(r.object_type.as_str()) != expected => {
                return Ok(Fetched::Unreadable(format!(
                    "thin event {} points at a {}, expected a {}",
                    envelope.event_type,
                    r.object_type,
                    expected.unwrap_or("?")
                )))
            }
            Some(r) => r,
        };
        match self.related.read(related).await {
            Ok(read) => Ok(Fetched::Read(read)),
            Err(ReadFailure::Permanent(why)) => Ok(Fetched::Unreadable(why)),
            Err(ReadFailure::Transient(why)) => Err(IngestError::StripeUnavailable(why)),
        }
    }

    /// Applies `envelope` inside `tx`, then records it with its outcome:
    /// one row written once. The insert is what finds a duplicate, so the
    /// caller undoes the effect of one (see [`writer`]).
    async fn record_and_apply(
        &self,
        tx: &mut dyn Tx,
        envelope: &Envelope,
        received: &Received,
        source: Source,
        fetched: &Fetched,
    ) -> Result<Recording, StoreError> {
        let now = self.clock.now_ms();
        let applied = self.apply_recorded(tx, envelope, source, fetched).await?;
        let error = applied.effect.storable_error();
        let handled = (applied.effect.outcome, error.as_deref());
        let new_event = received.row(envelope, source, now, handled);
        let mismatch = match tx.insert_event(&new_event).await? {
            Recorded::New => return Ok(Recording::New(applied)),
            Recorded::Twin => {
                tracing::info!(event_id = %envelope.id, change = envelope.change_key(), "the same change was recorded from its twin event");
                false
            }
            Recorded::Duplicate {
                payload_sha256,
                content_sha256,
            } => match content_sha256 {
                Some(stored) => stored != received.content_sha256,
                None => payload_sha256 != received.payload_sha256,
            },
        };
        Ok(Recording::Duplicate { mismatch })
    }

    /// The pipeline every recorded event goes through, first delivery or
    /// replay: check its date, read its object, apply it (announcing what a
    /// reconciler-found event changed), or flag what can't be read.
    async fn apply_recorded(
        &self,
        tx: &mut dyn Tx,
        envelope: &Envelope,
        source: Source,
        fetched: &Fetched,
    ) -> Result<Applied, StoreError> {
        let now = self.clock.now_ms();
        let mut affected = Affected::default();
        let mut follow_up = Vec::new();
        if !self.livemode.accepts(envelope.livemode) {
            let mode = if envelope.livemode { "live" } else { "test" };
            metrics::counter!(crate::metrics::LIVEMODE_MISMATCHES, "event_mode" => mode)
                .increment(1);
            tracing::warn!(event_id = %envelope.id, event_mode = mode, serving = self.livemode.as_str(), "livemode mismatch; not applied");
            return Ok(Applied {
                effect: Effect::with(Outcome::Ignored, "livemode mismatch"),
                affected,
                follow_up,
            });
        }
        // A thin event is applied as what Stripe said when it was read.
        let read_envelope;
        let (envelope, authority) = match fetched {
            Fetched::Nothing | Fetched::Relisted { .. } => (envelope, Authority::Event),
            Fetched::Unreadable(why) => {
                let details = format!("{} not applied: {why}", envelope.event_type);
                let subject = thin_subject(envelope);
                let reason = ReviewReason::ThinEventUnread;
                effects::flag(now, tx, &subject, None, envelope, reason, &details).await?;
                return Ok(Applied {
                    effect: Effect::with(Outcome::Failed, details),
                    affected,
                    follow_up,
                });
            }
            Fetched::Read(read) => {
                read_envelope = Envelope {
                    event_type: envelope.v1_type().to_owned(),
                    created: read.read_at,
                    object: (*read.object).clone(),
                    thin: None,
                    ..envelope.clone()
                };
                (&read_envelope, Authority::Api)
            }
        };
        let checked = event::check_created(envelope, self.clock.now_secs())
            .and_then(|()| event::classify(envelope, &self.user_key));
        let effect = match checked {
            Ok(domain) => {
                let domain = with_relisted(domain, fetched);
                // A change the reconciler finds is news to the product.
                let watched = effects::customer_of(&domain)
                    .filter(|_| source == Source::Reconciler)
                    .map(str::to_owned);
                let before = match &watched {
                    Some(c) => Some(self.changes.access(tx, c).await?),
                    None => None,
                };
                let effect = effects::apply_event(
                    now,
                    tx,
                    envelope,
                    (domain, authority),
                    &mut affected,
                    &mut follow_up,
                )
                .await?;
                if let (Some(customer), Some(before)) = (watched, before) {
                    self.changes.announce(tx, &customer, &before, true).await?;
                }
                effect
            }
            Err(shape) => {
                effects::flag_unknown_shape(now, tx, envelope, &shape.0, &mut follow_up).await?
            }
        };
        Ok(Applied {
            effect,
            affected,
            follow_up,
        })
    }

    /// Records an event the database refused to apply, in `tx` once what
    /// the attempt wrote is undone: the event row (its payload is JSON
    /// text, which every backend stores) as `failed`, and a review. If even
    /// that is refused, the error goes back to the caller.
    async fn record_refused(
        &self,
        tx: &mut dyn Tx,
        envelope: &Envelope,
        received: &Received,
        source: Source,
        cause: &sqlx::Error,
    ) -> Result<Ingested, StoreError> {
        tracing::warn!(event_id = %envelope.id, error = %cause, "the database refused a value of this event; recording it as failed");
        let now = self.clock.now_ms();
        let error = format!("the database refused a value of this event: {cause}");
        let error = event::storable_text(&error, MAX_TEXT_BYTES);
        let handled = (Outcome::Failed, Some(error.as_ref()));
        let new_event = received.row(envelope, source, now, handled);
        if !matches!(tx.insert_event(&new_event).await?, Recorded::New) {
            return Ok(Ingested::Duplicate);
        }
        let customer = envelope.object.get("customer").and_then(|c| c.as_str());
        let subject = customer.unwrap_or("unknown");
        let reason = ReviewReason::StoreRefused;
        effects::flag(now, tx, subject, None, envelope, reason, &error).await?;
        Ok(Ingested::Recorded {
            outcome: Outcome::Failed,
            follow_up: Vec::new(),
        })
    }

    /// Re-runs a `failed` event through the same pipeline as a first
    /// delivery, e.g. after a fix or once an API key is configured.
    ///
    /// A thin event's object is read from Stripe again first, outside the
    /// transaction; if Stripe can't be reached, nothing changes.
    pub async fn replay(&self, event_id: &str) -> Result<Replayed, ReplayError> {
        let fetched = match self.store.get_event(event_id).await? {
            None => return Err(ReplayError::NotFound),
            Some(row) if row.outcome != Outcome::Failed.as_str() => {
                return Err(ReplayError::NotFailed(row.outcome))
            }
            Some(_) => self.fetch_for_replay(event_id).await?,
        };
        let mut tx = self.store.begin().await?;
        let Some((payload, outcome)) = tx.load_event(event_id).await? else {
            tx.rollback().await?;
            return Err(ReplayError::NotFound);
        };
        if outcome != Outcome::Failed.as_str() {
            tx.rollback().await?;
            return Err(ReplayError::NotFailed(outcome));
        }
        let applied = match event::parse_envelope(payload.as_bytes()) {
            Err(e) => Applied {
                effect: Effect::with(Outcome::Failed, e.to_string()),
                affected: Affected::default(),
                follow_up: Vec::new(),
            },
            Ok(envelope) => {
                let source = Source::Webhook;
                self.apply_recorded(&mut *tx, &envelope, source, &fetched)
                    .await?
            }
        };
        let error = applied.effect.storable_error();
        let now = self.clock.now_ms();
        tx.finish_event(event_id, applied.effect.outcome, error.as_deref(), now)
            .await?;
        self.changes.commit(tx, applied.affected).await?;
        let outcome = applied.effect.outcome;
        tracing::info!(event_id, outcome = outcome.as_str(), "event replayed");
        Ok(Replayed {
            outcome,
            follow_up: applied.follow_up,
        })
    }

    /// Reads a stored thin event's object for a replay.
    async fn fetch_for_replay(&self, event_id: &str) -> Result<Fetched, ReplayError> {
        let mut tx = self.store.begin().await?;
        let loaded = tx.load_event(event_id).await?;
        tx.rollback().await?;
        let Some((payload, _)) = loaded else {
            return Err(ReplayError::NotFound);
        };
        let Ok(envelope) = event::parse_envelope(payload.as_bytes()) else {
            return Ok(Fetched::Nothing);
        };
        let pre_read = self.pre_read(&envelope);
        self.read_first(&envelope, pre_read)
            .await
            .map_err(|e| match e {
                IngestError::Store(e) => ReplayError::Store(e),
                IngestError::StripeUnavailable(why) => ReplayError::StripeUnavailable(why),
            })
    }

    /// Applies a subscription read from Stripe's API at `read_at` (unix
    /// seconds) through the same ordering rules as events. A read is the
    /// truth at that moment, so it also makes the record fresh. A change of
    /// access is queued as a notification in the same transaction, written
    /// by the customer's writer like every event.
    pub async fn apply_api_snapshot(
        &self,
        snap: &SubscriptionSnapshot,
        read_at: i64,
        origin: ReadOrigin,
    ) -> Result<ApiApplied, StoreError> {
        self.writer.apply_snapshot(snap, read_at, origin).await
    }

    /// [`Ledger::apply_api_snapshot`] inside `tx`; returns what it touched.
    async fn write_api_snapshot(
        &self,
        tx: &mut dyn Tx,
        snap: &SubscriptionSnapshot,
        read_at: i64,
        origin: ReadOrigin,
    ) -> Result<(ApiApplied, Affected), StoreError> {
        let now = self.clock.now_ms();
        let stamp = Stamp {
            created: read_at,
            event_id: String::new(),
        };
        let current = tx
            .lock_subscription(&snap.id, &snap.customer_id, now)
            .await?;
        let before = self.changes.access(&mut *tx, &snap.customer_id).await?;
        let mut affected = Affected::default();
        let transition = subscription::apply_snapshot(Some(&current), snap, &stamp, Authority::Api);
        let outcome = match transition {
            Transition::Apply {
                record, corrected, ..
            } => {
                if let Some(from) = corrected {
                    tracing::warn!(subscription_id = %snap.id, %from, to = %snap.status, "stripe api overrides a transition events could not make");
                }
                effects::save(&mut *tx, now, &current, &record, &mut affected).await?;
                Outcome::Applied
            }
            Transition::Stale => {
                effects::learn_from_stale(&mut *tx, now, &current, snap, &stamp, &mut affected)
                    .await?;
                Outcome::Stale
            }
            Transition::Impossible { .. } => Outcome::Stale,
        };
        let by_reconciler = origin == ReadOrigin::Sweep;
        let access_changed = self
            .changes
            .announce(&mut *tx, &snap.customer_id, &before, by_reconciler)
            .await?;
        let applied = ApiApplied {
            outcome,
            previous: current.status.filter(|p| *p != snap.status),
            status: snap.status,
            access_changed,
        };
        Ok((applied, affected))
    }
}

/// `domain` with the whole list in place of a summary's first page, when
/// it was re-listed. The listing began after the event was created, so it
/// is at least as new.
fn with_relisted(domain: DomainEvent, fetched: &Fetched) -> DomainEvent {
    match (domain, fetched) {
        (
            DomainEvent::EntitlementSummary(summary),
            Fetched::Relisted {
                features,
                read_at_ms,
            },
        ) => DomainEvent::EntitlementSummary(event::EntitlementSummary {
            features: features.clone(),
            truncated: false,
            as_of_ms: summary.as_of_ms.max(*read_at_ms),
            ..summary
        }),
        (domain, _) => domain,
    }
}

/// Whom a thin event's review is about: the object it points at, since the
/// customer is not known before the object is read.
fn thin_subject(envelope: &Envelope) -> String {
    envelope
        .thin
        .as_ref()
        .and_then(|t| t.related.as_ref())
        .map_or_else(|| "unknown".to_owned(), |r| r.id.clone())
}
