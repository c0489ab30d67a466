//! The bulk path: a run of plain events in one batch written with one
//! statement per kind of row instead of several per event.
//!
//! A plain event writes one subscription, decided from the stored record
//! alone: a subscription snapshot or a paid invoice, with nothing to read
//! from Stripe first, of the mode Tollgate serves, sanely dated, and the
//! first of its id and change key in the batch. Most webhooks are, and
//! most events the reconciler finds; one of those is plain only when no
//! other job of the batch writes its customer, since its customer's access
//! is compared before and after it alone (and a change announced, as one
//! at a time does). For a run of them (a lone one too), inside one
//! savepoint (the whole transaction, for a batch of one): every
//! subscription they write is locked in one statement, each event's step
//! is decided in memory in the order they came (so two events of one
//! subscription chain as they would one at a time), and the events are
//! recorded with their outcomes and the changed records stored in one more
//! (two on SQLite). A run that is its whole batch (a lone webhook) also
//! publishes what it touched with that statement on PostgreSQL, one round
//! trip fewer at the commit.
//!
//! Whatever the bulk path can't write as the path that writes one event at
//! a time would, it leaves to that path: it undoes the run (back to its
//! savepoint, or the whole transaction when the run came first) and hands
//! it back. That is when a statement fails (one
//! event's value may be refused, and only that event must fail), when an
//! event is already recorded (a duplicate's effect must not be kept, and
//! its payload is compared), and when a step needs a review (a same-second
//! tie, an impossible transition). The outcome is the same either way.

use std::collections::{HashMap, HashSet};

use super::{Answer, Batch, Failure, Work};
use crate::changes::Watched;
use crate::event::{self, DomainEvent, InvoicePaid};
use crate::ledger::effects::{self, Step, Write};
use crate::ledger::{Fetched, Ingested, Ledger, Received, Source};
use crate::outcome::Outcome;
use crate::store::{NewEvent, StoreError};
use crate::subject::Affected;
use crate::subscription::{Authority, SubscriptionRecord, SubscriptionSnapshot};

/// An event the bulk path can write, as classified.
pub(super) enum Plain {
    Snapshot(SubscriptionSnapshot),
    Payment(InvoicePaid),
}

impl Plain {
    /// The subscription it writes, and its customer.
    fn key(&self) -> (&str, &str) {
        match self {
            Plain::Snapshot(snap) => (&snap.id, &snap.customer_id),
            Plain::Payment(paid) => (&paid.subscription_id, &paid.customer_id),
        }
    }

    fn write(&self) -> Write<'_> {
        match self {
            Plain::Snapshot(snap) => Write::Snapshot(snap, Authority::Event),
            Plain::Payment(paid) => Write::Payment(paid),
        }
    }
}

/// A written run: each job's answer and what it touched, and the users
/// read when the run published what it touched.
pub(super) type Written = (Vec<(Answer, Affected)>, Option<Vec<String>>);

/// Why a run went back to the path that writes one event at a time; the
/// label of [`crate::metrics::LEDGER_BULK_UNDONE`].
#[derive(Clone, Copy)]
enum Undone {
    /// A statement failed.
    Error,
    /// An event (or its twin) was recorded already.
    Recorded,
    /// A step needs a review.
    Review,
}

impl Undone {
    fn as_str(self) -> &'static str {
        match self {
            Undone::Error => "error",
            Undone::Recorded => "recorded",
            Undone::Review => "review",
        }
    }
}

impl Ledger {
    /// Which of `works` (one batch, in order) the bulk path may write.
    pub(super) fn plain_jobs(&self, works: &[&Work]) -> Vec<Option<Plain>> {
        let mut writers_of: HashMap<&str, usize> = HashMap::new();
        for work in works {
            *writers_of.entry(super::key_of(work)).or_default() += 1;
        }
        // Apart: an event's change key is its own id unless it is thin.
        let mut seen_ids: HashSet<&str> = HashSet::new();
        let mut seen_changes: HashSet<&str> = HashSet::new();
        works
            .iter()
            .map(|work| {
                let Work::Ingest {
                    envelope,
                    source,
                    fetched,
                    ..
                } = work
                else {
                    return None;
                };
                // A repeat of an id or change key met earlier in the batch
                // is a duplicate: the one-at-a-time path finds it.
                let first = seen_ids.insert(&envelope.id);
                let first = seen_changes.insert(envelope.change_key()) && first;
                let alone = writers_of.get(super::key_of(work)) == Some(&1);
                let plain = first
                    && (*source == Source::Webhook || alone)
                    && matches!(fetched, Fetched::Nothing)
                    && envelope.thin.is_none()
                    && self.livemode.accepts(envelope.livemode)
                    && event::check_created(envelope, self.clock.now_secs()).is_ok();
                if !plain {
                    return None;
                }
                match event::classify(envelope, &self.user_key) {
                    Ok(DomainEvent::Subscription(snap)) => Some(Plain::Snapshot(snap)),
                    Ok(DomainEvent::InvoicePaid(paid)) => Some(Plain::Payment(paid)),
                    _ => None,
                }
            })
            .collect()
    }

    /// A lone plain webhook written without a transaction: the stored
    /// record read (or, when a lone webhook of its customer was the last
    /// to write it, taken as that one left it: [`super::known`]), the
    /// step decided on it, and the event written only
    /// while the record is still as read
    /// ([`crate::store::Store::record_and_save_if_unchanged`]): two
    /// statements instead of a transaction's four. Its answer and what it
    /// touched (invalidated here already), or `None` when it wrote
    /// nothing (a new subscription, a step that needs a review, a record
    /// changed meanwhile, a duplicate, an error): the batch then writes it
    /// as usual, which tells which.
    pub(super) async fn write_unlocked(&self, work: &Work, plain: &Plain) -> Option<Answer> {
        let Work::Ingest {
            envelope,
            received,
            source: source @ Source::Webhook,
            ..
        } = work
        else {
            return None;
        };
        let written = self.try_unlocked(envelope, received, *source, plain).await;
        let result = if written.is_some() {
            "written"
        } else {
            "passed"
        };
        metrics::counter!(crate::metrics::LEDGER_UNLOCKED_WRITES, "result" => result).increment(1);
        written
    }

    async fn try_unlocked(
        &self,
        envelope: &event::Envelope,
        received: &Received,
        source: Source,
        plain: &Plain,
    ) -> Option<Answer> {
        let (id, customer) = plain.key();
        let known = &self.writer.known;
        let mut records = match known.get(customer) {
            Some(records) => records,
            None => match self.store.subscriptions_for_customer(customer).await {
                Ok(records) => records,
                Err(e) => {
                    tracing::info!(error = %e, "an unlocked read failed; the event is written as usual");
                    return None;
                }
            },
        };
        let at = records.iter().position(|r| r.id == id)?;
        let current = &records[at];
        let (outcome, record) = match effects::step(current, &plain.write(), envelope) {
            Step::Write { record, outcome } => (outcome, record),
            Step::Tie { .. } | Step::Impossible { .. } => return None,
        };
        let mut affected = Affected::default();
        if let Some(record) = &record {
            affected.add_record(current);
            affected.add_record(record);
        }
        let now = self.clock.now_ms();
        let row = received.row(envelope, source, now, (outcome, None));
        let written = self
            .store
            .record_and_save_if_unchanged(&row, current, record.as_ref(), &affected, now)
            .await;
        match written {
            Ok(Some(users)) => {
                if let Some(record) = record {
                    records[at] = record;
                }
                known.remember(customer, records);
                self.changes.written(affected, users);
                Some(Answer::Ingested(Ingested::Recorded {
                    outcome,
                    follow_up: Vec::new(),
                }))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::info!(error = %e, "an unlocked write failed; the event is written as usual");
                None
            }
        }
    }

    /// Writes `run` (plain jobs, at least one; `whole_batch` when nothing
    /// else is in `batch`) inside a savepoint of `batch`: each job's answer
    /// and what it touched, in order, and the users read when the run
    /// published what it touched. `None` when the run was undone, for the
    /// path that writes one at a time.
    pub(super) async fn write_plain(
        &self,
        batch: &mut Batch<'_>,
        run: &[(&Work, &Plain)],
        whole_batch: bool,
    ) -> Result<Option<Written>, Failure> {
        batch.open().await?;
        match self.try_plain(batch, run, whole_batch).await? {
            Ok(written) => {
                metrics::counter!(crate::metrics::LEDGER_BULK_WRITES).increment(run.len() as u64);
                Ok(Some(written))
            }
            Err(why) => {
                batch.undo().await?;
                metrics::counter!(crate::metrics::LEDGER_BULK_UNDONE, "reason" => why.as_str())
                    .increment(run.len() as u64);
                Ok(None)
            }
        }
    }

    /// The run's statements, and the users read when the run published
    /// what it touched; `Err(why)` when it must be undone.
    async fn try_plain(
        &self,
        batch: &mut Batch<'_>,
        run: &[(&Work, &Plain)],
        whole_batch: bool,
    ) -> Result<Result<Written, Undone>, Failure> {
        let now = self.clock.now_ms();
        let tx = batch.tx().await?;

        // A change the reconciler finds is news to the product: its
        // customer's access before (each such customer is written by no
        // other job of the batch), to compare once the run is written.
        let mut watching: Vec<&str> = Vec::new();
        for (work, plain) in run {
            let customer = plain.key().1;
            if source_of(work) == Source::Reconciler && !watching.contains(&customer) {
                watching.push(customer);
            }
        }
        let watched = if watching.is_empty() {
            Vec::new()
        } else {
            match self.changes.access_of(&mut *tx, &watching).await {
                Ok(watched) => watched,
                Err(e) => return Ok(Err(failed("read access", e))),
            }
        };

        let mut keys: Vec<(&str, &str)> = Vec::with_capacity(run.len());
        let mut locking = HashSet::with_capacity(run.len());
        for (_, plain) in run {
            let key = plain.key();
            if locking.insert(key.0) {
                keys.push(key);
            }
        }
        let mut records: HashMap<String, SubscriptionRecord> =
            match tx.lock_subscriptions(&keys, now).await {
                Ok(locked) => locked.into_iter().map(|r| (r.id.clone(), r)).collect(),
                Err(e) => return Ok(Err(failed("lock", e))),
            };

        // Each step in the order the events came, on the record as the
        // steps before it left it.
        let mut changed: Vec<&str> = Vec::new();
        let mut decided: Vec<(Outcome, Affected)> = Vec::with_capacity(run.len());
        for (work, plain) in run {
            let envelope = envelope_of(work);
            let write = plain.write();
            let id = plain.key().0;
            let Some(current) = records.get(id) else {
                let why = StoreError::Corrupt(format!("subscription {id} was not locked"));
                return Ok(Err(failed("lock", why)));
            };
            match effects::step(current, &write, envelope) {
                Step::Write { record, outcome } => {
                    let mut affected = Affected::default();
                    if let Some(record) = record {
                        affected.add_record(current);
                        affected.add_record(&record);
                        if !changed.contains(&id) {
                            changed.push(id);
                        }
                        records.insert(id.to_owned(), record);
                    }
                    decided.push((outcome, affected));
                }
                Step::Tie { .. } | Step::Impossible { .. } => return Ok(Err(Undone::Review)),
            }
        }

        let rows: Vec<NewEvent<'_>> = run
            .iter()
            .zip(&decided)
            .map(|((work, _), (outcome, _))| match work {
                Work::Ingest {
                    envelope,
                    received,
                    source,
                    ..
                } => received.row(envelope, *source, now, (*outcome, None)),
                Work::ApiSnapshot { .. } => unreachable!("BUG: an API read in a plain run"),
            })
            .collect();
        let saving: Vec<&SubscriptionRecord> = changed.iter().map(|id| &records[*id]).collect();
        // A run that is the whole batch (a lone webhook, most of them at
        // low load) publishes what it touched with its own statement where
        // the store can, rather than with one more at the commit.
        let written = if whole_batch {
            let mut touched = Affected::default();
            decided.iter().for_each(|(_, a)| touched.merge(a));
            tx.record_save_and_publish(&rows, &saving, now, &touched)
                .await
        } else {
            tx.record_and_save(&rows, &saving, now)
                .await
                .map(|n| (n, None))
        };
        let published = match written {
            Ok((n, published)) if n == rows.len() as u64 => published,
            Ok(_) => return Ok(Err(Undone::Recorded)),
            Err(e) => return Ok(Err(failed("record and save", e))),
        };
        if !watched.is_empty() {
            // Each watched customer's records as the run left them: those
            // read before, with the run's locked rows (placeholders too)
            // in their place, as a read now would find them.
            let mut after: Vec<(&Watched, Vec<SubscriptionRecord>)> =
                watched.iter().map(|w| (w, w.records.clone())).collect();
            for (id, _) in &keys {
                let record = &records[*id];
                let Some((_, list)) = after
                    .iter_mut()
                    .find(|(w, _)| w.customer == record.customer_id)
                else {
                    continue;
                };
                match list.iter_mut().find(|r| r.id == record.id) {
                    Some(stored) => *stored = record.clone(),
                    None => list.push(record.clone()),
                }
            }
            if let Err(e) = self.changes.announce_known(&mut *tx, &after).await {
                return Ok(Err(failed("announce", e)));
            }
        }
        let answers = decided
            .into_iter()
            .map(|(outcome, affected)| {
                let recorded = Ingested::Recorded {
                    outcome,
                    follow_up: Vec::new(),
                };
                (Answer::Ingested(recorded), affected)
            })
            .collect();
        Ok(Ok((answers, published)))
    }
}

fn source_of(work: &Work) -> Source {
    match work {
        Work::Ingest { source, .. } => *source,
        Work::ApiSnapshot { .. } => unreachable!("BUG: an API read in a plain run"),
    }
}

fn envelope_of(work: &Work) -> &event::Envelope {
    match work {
        Work::Ingest { envelope, .. } => envelope,
        Work::ApiSnapshot { .. } => unreachable!("BUG: an API read in a plain run"),
    }
}

/// A statement of the run failed: logged, and the run is undone.
fn failed(statement: &'static str, e: StoreError) -> Undone {
    tracing::info!(statement, error = %e, "a bulk write failed; its events are written one at a time");
    Undone::Error
}
