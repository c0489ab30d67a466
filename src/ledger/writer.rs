//! The one writer: every write the ledger makes from Stripe data (webhooks,
//! the reconciler's events, API reads) is queued here, and one task writes
//! them in batches (group commit).
//!
//! The task waits for a job, takes every job already waiting (at most
//! [`MAX_BATCH`]) and never waits for more: a lone webhook is a batch of
//! one, committed at once. Each job of a batch runs inside its own
//! savepoint: one whose writes fail is undone alone (and, when the database
//! refuses a value of the event for good, recorded as failed instead), and
//! a duplicate undoes its effect. The batch commits once, tells other
//! replicas and invalidates the cache once for everything it touched, and
//! only then is each job answered. When the transaction is lost (the
//! commit fails, the connection dies) every job of the batch is answered
//! with an error: none of them was stored.
//!
//! A thin event's object is read from Stripe before its job is queued
//! ([`Ledger::ingest`]), so a slow read never holds a batch.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Weak;

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

use super::{effects, ApiApplied, Fetched, Ingested, Ledger, ReadOrigin, Recording, Source};
use crate::event::Envelope;
use crate::store::{Store, StoreError, Tx};
use crate::subject::Affected;
use crate::subscription::SubscriptionSnapshot;

/// Most jobs in one transaction. PostgreSQL keeps the first 64
/// subtransactions (savepoints that wrote) of a transaction in shared
/// memory; past that, every other session's visibility checks read
/// `pg_subtrans` until it ends.
const MAX_BATCH: usize = 64;

/// Jobs that may wait; more make their senders wait too.
const QUEUE_CAPACITY: usize = 1024;

/// Where jobs are queued for the writer task.
pub(super) struct Queue {
    jobs: mpsc::Sender<Job>,
}

struct Job {
    work: Work,
    /// Sent once the batch has committed (or failed).
    reply: Reply,
}

type Reply = oneshot::Sender<Result<Answer, StoreError>>;

enum Work {
    Ingest {
        envelope: Envelope,
        raw: Vec<u8>,
        source: Source,
        fetched: Fetched,
    },
    ApiSnapshot {
        snap: SubscriptionSnapshot,
        read_at: i64,
        origin: ReadOrigin,
    },
}

enum Answer {
    Ingested(Ingested),
    Applied(ApiApplied),
}

/// Why a job was not written.
enum Failure {
    /// This job alone: its writes are undone and the batch goes on.
    Job(StoreError),
    /// The batch's transaction is lost: nothing of the batch is stored.
    Batch(StoreError),
}

/// Starts the writer task of `ledger`; it ends once the ledger is dropped
/// (its queue closes).
pub(super) fn start(ledger: Weak<Ledger>) -> Queue {
    let (jobs, queued) = mpsc::channel(QUEUE_CAPACITY);
    tokio::spawn(run(queued, MAX_BATCH, move |batch| {
        let ledger = ledger.upgrade();
        async move {
            if let Some(ledger) = ledger {
                ledger.write_batch(batch).await;
            }
        }
    }));
    Queue { jobs }
}

/// Hands `write` one batch at a time: waits for a job, then takes those
/// already queued, up to `max`, and never waits for more. A panic in
/// `write` drops its batch's replies (each caller gets an error) and the
/// loop goes on.
async fn run<J, F, Fut>(mut queued: mpsc::Receiver<J>, max: usize, mut write: F)
where
    F: FnMut(Vec<J>) -> Fut,
    Fut: Future<Output = ()>,
{
    while let Some(first) = queued.recv().await {
        let mut batch = vec![first];
        while batch.len() < max {
            match queued.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        metrics::gauge!(crate::metrics::LEDGER_QUEUED).decrement(batch.len() as f64);
        metrics::histogram!(crate::metrics::LEDGER_BATCH_SIZE).record(batch.len() as f64);
        if AssertUnwindSafe(write(batch)).catch_unwind().await.is_err() {
            tracing::error!("BUG: the ledger's writer panicked; its batch was not committed");
        }
    }
}

/// What a job's caller gets when the writer can't answer it.
fn writer_lost() -> StoreError {
    StoreError::Unavailable(sqlx::Error::WorkerCrashed)
}

/// What each job of a batch whose transaction was lost gets: transient, so
/// a webhook is answered 503 and retried.
fn batch_lost() -> StoreError {
    let why = std::io::Error::other("the transaction of its batch failed");
    StoreError::Unavailable(sqlx::Error::Io(why))
}

impl Queue {
    pub(super) async fn ingest(
        &self,
        envelope: &Envelope,
        raw: &[u8],
        source: Source,
        fetched: Fetched,
    ) -> Result<Ingested, StoreError> {
        let work = Work::Ingest {
            envelope: envelope.clone(),
            raw: raw.to_vec(),
            source,
            fetched,
        };
        match self.submit(work).await? {
            Answer::Ingested(ingested) => Ok(ingested),
            Answer::Applied(_) => unreachable!("BUG: an event answered as an API read"),
        }
    }

    pub(super) async fn apply_snapshot(
        &self,
        snap: &SubscriptionSnapshot,
        read_at: i64,
        origin: ReadOrigin,
    ) -> Result<ApiApplied, StoreError> {
        let work = Work::ApiSnapshot {
            snap: snap.clone(),
            read_at,
            origin,
        };
        match self.submit(work).await? {
            Answer::Applied(applied) => Ok(applied),
            Answer::Ingested(_) => unreachable!("BUG: an API read answered as an event"),
        }
    }

    async fn submit(&self, work: Work) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        metrics::gauge!(crate::metrics::LEDGER_QUEUED).increment(1.0);
        if self.jobs.send(Job { work, reply }).await.is_err() {
            metrics::gauge!(crate::metrics::LEDGER_QUEUED).decrement(1.0);
            return Err(writer_lost());
        }
        answer.await.map_err(|_| writer_lost())?
    }
}

/// The transaction a batch writes in, begun at its first write.
struct Batch<'s> {
    store: &'s dyn Store,
    tx: Option<Box<dyn Tx>>,
    /// Several jobs: each gets a savepoint. A job alone has the whole
    /// transaction, which saves a statement.
    nested: bool,
}

impl Batch<'_> {
    async fn tx(&mut self) -> Result<&mut dyn Tx, Failure> {
        if self.tx.is_none() {
            self.tx = Some(self.store.begin().await.map_err(Failure::Batch)?);
        }
        Ok(self.tx.as_deref_mut().expect("BUG: begun above"))
    }

    /// Before a job's writes: marks where [`Batch::undo`] returns to.
    async fn open(&mut self) -> Result<(), Failure> {
        if self.nested {
            let tx = self.tx().await?;
            tx.savepoint().await.map_err(Failure::Batch)?;
        }
        Ok(())
    }

    /// Undoes the current job's writes: back to its savepoint, or the whole
    /// transaction of a job alone (a later write begins another).
    async fn undo(&mut self) -> Result<(), Failure> {
        if self.nested {
            let tx = self.tx().await?;
            tx.rollback_to_savepoint().await.map_err(Failure::Batch)
        } else if let Some(tx) = self.tx.take() {
            tx.rollback().await.map_err(Failure::Batch)
        } else {
            Ok(())
        }
    }

    /// Keeps what a job wrote, or undoes it when it failed.
    async fn kept<T>(&mut self, written: Result<T, StoreError>) -> Result<T, Failure> {
        match written {
            Ok(kept) => Ok(kept),
            Err(e) => {
                self.undo().await?;
                Err(Failure::Job(e))
            }
        }
    }
}

impl Ledger {
    /// Writes `jobs` in one transaction, commits once, then answers each.
    async fn write_batch(&self, jobs: Vec<Job>) {
        let mut batch = Batch {
            store: self.store.as_ref(),
            tx: None,
            nested: jobs.len() > 1,
        };
        let mut touched = Affected::default();
        let mut done = Vec::with_capacity(jobs.len());
        let mut jobs = jobs.into_iter();
        while let Some(job) = jobs.next() {
            match self.write_job(&mut batch, &job.work).await {
                Ok((answer, affected)) => {
                    touched.merge(&affected);
                    done.push((job.reply, Ok(answer)));
                }
                Err(Failure::Job(e)) => done.push((job.reply, Err(e))),
                Err(Failure::Batch(e)) => {
                    done.push((job.reply, Err(batch_lost())));
                    done.extend(jobs.map(|job| (job.reply, Err(batch_lost()))));
                    return lost(done, &e);
                }
            }
        }
        let committed = match batch.tx {
            Some(tx) => self.changes.commit(tx, touched).await,
            None => Ok(()),
        };
        match committed {
            Ok(()) => {
                for (reply, answer) in done {
                    let _ = reply.send(answer);
                }
            }
            Err(e) => lost(done, &e),
        }
    }

    /// One job inside the batch's transaction: its answer and what it
    /// touched, or why it was not written.
    async fn write_job(
        &self,
        batch: &mut Batch<'_>,
        work: &Work,
    ) -> Result<(Answer, Affected), Failure> {
        batch.open().await?;
        let (envelope, raw, source, fetched) = match work {
            Work::Ingest {
                envelope,
                raw,
                source,
                fetched,
            } => (envelope, raw, *source, fetched),
            Work::ApiSnapshot {
                snap,
                read_at,
                origin,
            } => {
                let tx = batch.tx().await?;
                let written = self.write_api_snapshot(tx, snap, *read_at, *origin).await;
                let (applied, affected) = batch.kept(written).await?;
                return Ok((Answer::Applied(applied), affected));
            }
        };
        let tx = batch.tx().await?;
        let ingested = match self
            .record_and_apply(tx, envelope, raw, source, fetched)
            .await
        {
            Ok(Recording::New(applied)) => {
                let outcome = applied.effect.outcome;
                let follow_up = applied.follow_up;
                let recorded = Ingested::Recorded { outcome, follow_up };
                return Ok((Answer::Ingested(recorded), applied.affected));
            }
            Ok(Recording::Duplicate { mismatch }) => {
                batch.undo().await?;
                if mismatch {
                    let now = self.clock.now_ms();
                    let tx = batch.tx().await?;
                    let flagged = effects::flag_payload_mismatch(now, tx, envelope).await;
                    batch.kept(flagged).await?;
                }
                Ingested::Duplicate
            }
            Err(StoreError::Rejected(cause)) => {
                batch.undo().await?;
                let tx = batch.tx().await?;
                let refused = self.record_refused(tx, envelope, raw, source, &cause).await;
                batch.kept(refused).await?
            }
            Err(e) => {
                batch.undo().await?;
                return Err(Failure::Job(e));
            }
        };
        Ok((Answer::Ingested(ingested), Affected::default()))
    }
}

/// Answers every job of a batch whose transaction was lost: those that
/// failed alone with their own error, the rest with [`batch_lost`].
fn lost(done: Vec<(Reply, Result<Answer, StoreError>)>, cause: &StoreError) {
    metrics::counter!(crate::metrics::LEDGER_BATCHES_LOST).increment(1);
    tracing::error!(error = ?cause, jobs = done.len(), "a batch's transaction failed; none of its jobs is stored");
    for (reply, answer) in done {
        let _ = reply.send(answer.and_then(|_| Err(batch_lost())));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// A writer loop whose batches are recorded and answered at once.
    fn recording() -> (mpsc::Sender<oneshot::Sender<usize>>, Arc<Mutex<Vec<usize>>>) {
        let (jobs, queued) = mpsc::channel::<oneshot::Sender<usize>>(16);
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        tokio::spawn(run(queued, 4, move |batch: Vec<oneshot::Sender<usize>>| {
            seen.lock().unwrap().push(batch.len());
            let n = batch.len();
            async move {
                for reply in batch {
                    let _ = reply.send(n);
                }
            }
        }));
        (jobs, sizes)
    }

    #[tokio::test(start_paused = true)]
    async fn a_lone_job_is_written_at_once_without_waiting_for_company() {
        let (jobs, sizes) = recording();
        let started = tokio::time::Instant::now();
        let (reply, answer) = oneshot::channel();
        jobs.send(reply).await.unwrap();
        assert_eq!(answer.await.unwrap(), 1);
        // The clock is paused and moves only when every task waits on a
        // timer: a batch timer, however short, would have moved it.
        assert_eq!(tokio::time::Instant::now(), started);
        assert_eq!(*sizes.lock().unwrap(), [1]);
    }

    #[tokio::test(start_paused = true)]
    async fn jobs_queued_while_a_batch_is_written_go_together_up_to_the_bound() {
        let (jobs, queued) = mpsc::channel::<(usize, oneshot::Sender<()>)>(16);
        let (first_seen, seen) = oneshot::channel::<()>();
        let (release, gate) = oneshot::channel::<()>();
        let batches = Arc::new(Mutex::new(Vec::new()));
        let recorded = batches.clone();
        let mut gate = Some((first_seen, gate));
        tokio::spawn(run(
            queued,
            4,
            move |batch: Vec<(usize, oneshot::Sender<()>)>| {
                recorded
                    .lock()
                    .unwrap()
                    .push(batch.iter().map(|(n, _)| *n).collect::<Vec<_>>());
                let hold = gate.take();
                async move {
                    if let Some((first_seen, gate)) = hold {
                        let _ = first_seen.send(());
                        let _ = gate.await;
                    }
                    for (_, reply) in batch {
                        let _ = reply.send(());
                    }
                }
            },
        ));
        let mut answers = Vec::new();
        let (reply, answer) = oneshot::channel();
        jobs.send((0, reply)).await.unwrap();
        answers.push(answer);
        seen.await.unwrap();
        for n in 1..=6 {
            let (reply, answer) = oneshot::channel();
            jobs.send((n, reply)).await.unwrap();
            answers.push(answer);
        }
        release.send(()).unwrap();
        for answer in answers {
            answer.await.unwrap();
        }
        assert_eq!(
            *batches.lock().unwrap(),
            [vec![0], vec![1, 2, 3, 4], vec![5, 6]]
        );
    }
}
