//! The writers: every write the ledger makes from Stripe data (webhooks,
//! the reconciler's events, API reads) is queued here, and writer tasks
//! write them in batches (group commit).
//!
//! Each writer waits for a job, takes every job already waiting for it (at
//! most [`MAX_BATCH`]) and never waits for more: a lone webhook is a batch
//! of one, committed at once. Each job of a batch runs inside its own
//! savepoint (none for one that begins before anything is written:
//! undoing it is rolling the transaction back): one whose writes fail is
//! undone alone (and, when the database
//! refuses a value of the event for good, recorded as failed instead), and
//! a duplicate undoes its effect. The batch commits once, tells other
//! replicas and invalidates the cache once for everything it touched, and
//! only then is each job answered. A run of plain events (snapshots and
//! paid invoices, most webhooks) is written first with a few statements
//! for the whole run, inside one savepoint, and handed back to
//! be written one at a time when that can't give the same result
//! ([`bulk`]). When the transaction is lost (the
//! commit fails, the connection dies) every job of the batch is answered
//! with an error: none of them was stored.
//!
//! A batch of one plain webhook on a subscription already stored (most
//! webhooks at low load) is first tried without a transaction: decided on
//! the stored record, then written by one statement that commits on its
//! own only if the row is still as decided on ([`bulk`]'s
//! `write_unlocked`, [`Store::record_and_save_if_unchanged`]); whatever it
//! does not write goes the transaction's way.
//!
//! On PostgreSQL a writer writes its next batch while the last ones commit
//! ([`Committing`]), and several writers may run side by side
//! (`--ledger-writers`, one by default: one writer's batches are the
//! largest); SQLite has one write lock and one writer ([`Store::writers`]). A job goes to the writer its key
//! picks ([`route`]), and the key is the customer whose rows it writes
//! ([`key_of`]): the rows an event locks are its own (event id, change
//! key) and its customer's (subscriptions, user links, entitlement
//! summary); the rest it inserts anew (reviews, notifications). So all
//! writes to one customer's rows go through one writer, in the order they
//! came, and two writers don't wait on each other's rows. The same event always has
//! the same key (it is read from the event's content), so its redeliveries
//! meet at one writer and the second is a duplicate.
//!
//! A few writes do touch rows of another key: an entitlement summary
//! forgets the feature maps of its customer's products, which other
//! customers' summaries and `product.updated` (keyed by the product)
//! forget too; and a thin event Stripe can't be read for is keyed by the
//! object it points at rather than its customer. Two writers may then wait
//! on each other's rows (as writers of two replicas sharing the database
//! always could). PostgreSQL detects that deadlock and fails one
//! statement (SQLSTATE 40P01; a serialization failure, 40001, is handled the
//! same way): the error is transient ([`StoreError::Unavailable`]), so that
//! job's savepoint is undone, its webhook is answered 503 and Stripe
//! retries it, while the rest of its batch commits. Waits are bounded by
//! `lock_timeout` (TOLLGATE_DB_BUSY_TIMEOUT) all the same.
//!
//! A thin event's object is read from Stripe before its job is queued
//! ([`Ledger::ingest`]), so a slow read never holds a batch.

use std::collections::HashSet;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};

use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};

mod bulk;
mod known;

use super::{
    effects, ApiApplied, Fetched, Ingested, Ledger, ReadOrigin, Received, Recording, Source,
};
use crate::event::{self, Envelope};
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

/// Where jobs are queued for the writer tasks: one queue each.
pub(super) struct Queue {
    writers: Vec<mpsc::Sender<Job>>,
    /// What lone webhooks last wrote, for the next one's decision.
    known: known::Known,
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
        received: Received,
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

/// Most batches of one writer committing at once on PostgreSQL, besides
/// the one it is writing.
const COMMITS_IN_FLIGHT: usize = crate::store::CONNECTIONS_PER_WRITER as usize - 1;

/// The batches of one writer whose commit is under way. On PostgreSQL a
/// writer goes on to its next batch while the last one commits (a commit
/// is mostly a wait for the WAL flush), on another connection: at most
/// [`COMMITS_IN_FLIGHT`] at once, and never with a batch that shares a
/// routing key (a customer) with one still committing, which it waits for
/// instead. So one customer's writes still come one after the other, each
/// seeing the last committed, as the module docs say; writes that reach
/// rows of another key wait on their row locks as between writers. On
/// SQLite a batch commits before the next begins.
#[derive(Default)]
struct Committing {
    /// Each batch's routing keys, and the task committing it.
    batches: Vec<(HashSet<String>, tokio::task::JoinHandle<()>)>,
}

impl Committing {
    /// Waits until a batch with `keys` may be written beside the commits
    /// under way.
    async fn make_room(&mut self, keys: &HashSet<String>) {
        loop {
            self.batches.retain(|(_, commit)| !commit.is_finished());
            let shared = self
                .batches
                .iter()
                .position(|(committing, _)| !committing.is_disjoint(keys));
            let wait_for = match shared {
                Some(n) => n,
                None if self.batches.len() >= COMMITS_IN_FLIGHT => 0,
                None => return,
            };
            let (_, commit) = self.batches.remove(wait_for);
            // Its task ends normally: a panic inside is caught and logged.
            let _ = commit.await;
        }
    }
}

/// Starts `count` writer tasks of `ledger` (at least one); they end once
/// the ledger is dropped (their queues close).
pub(super) fn start(ledger: Weak<Ledger>, count: usize) -> Queue {
    let writers = (0..count.max(1))
        .map(|n| {
            let (jobs, queued) = mpsc::channel(QUEUE_CAPACITY);
            let ledger = ledger.clone();
            let label = n.to_string();
            // Only this writer's batches use it, one at a time.
            let committing = Arc::new(tokio::sync::Mutex::new(Committing::default()));
            tokio::spawn(run(queued, MAX_BATCH, label.clone(), move |batch| {
                let ledger = ledger.upgrade();
                let label = label.clone();
                let committing = committing.clone();
                async move {
                    if let Some(ledger) = ledger {
                        let mut committing = committing.lock().await;
                        ledger.write_batch(batch, &label, &mut committing).await;
                    }
                }
            }));
            jobs
        })
        .collect();
    Queue {
        writers,
        known: known::Known::default(),
    }
}

/// Which of `writers` writes the jobs of `key`: the same one for equal
/// keys, for the life of the process.
fn route(key: &str, writers: usize) -> usize {
    if writers <= 1 {
        return 0;
    }
    // `DefaultHasher::new` has fixed keys: every instance hashes alike.
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    (hasher.finish() % writers as u64) as usize
}

/// What routes `work` to its writer: the customer whose rows it writes
/// (of the object a thin event's read returned, for one), else the id of
/// the object it is about (a product), else the event's own id.
fn key_of(work: &Work) -> &str {
    match work {
        Work::ApiSnapshot { snap, .. } => &snap.customer_id,
        Work::Ingest {
            envelope, fetched, ..
        } => {
            let object = match fetched {
                Fetched::Read(read) => read.object.as_ref(),
                _ => &envelope.object,
            };
            let pointed_at = envelope.thin.as_ref().and_then(|t| t.related.as_ref());
            event::owner_of(object)
                .or_else(|| object.get("id").and_then(|id| id.as_str()))
                .filter(|key| !key.is_empty())
                .or(pointed_at.map(|r| r.id.as_str()))
                .unwrap_or(&envelope.id)
        }
    }
}

/// Hands `write` one batch at a time: waits for a job, then takes those
/// already queued, up to `max`, and never waits for more. A panic in
/// `write` drops its batch's replies (each caller gets an error) and the
/// loop goes on. `writer` labels its metrics.
async fn run<J, F, Fut>(mut queued: mpsc::Receiver<J>, max: usize, writer: String, mut write: F)
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
        metrics::gauge!(crate::metrics::LEDGER_QUEUED, "writer" => writer.clone())
            .decrement(batch.len() as f64);
        metrics::histogram!(crate::metrics::LEDGER_BATCH_SIZE, "writer" => writer.clone())
            .record(batch.len() as f64);
        if AssertUnwindSafe(write(batch)).catch_unwind().await.is_err() {
            tracing::error!(
                writer,
                "BUG: a ledger writer panicked; its batch was not committed"
            );
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
        envelope: Envelope,
        raw: &[u8],
        source: Source,
        fetched: Fetched,
    ) -> Result<Ingested, StoreError> {
        let work = Work::Ingest {
            received: Received::of(&envelope, raw),
            envelope,
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
        let n = route(key_of(&work), self.writers.len());
        let queued = metrics::gauge!(crate::metrics::LEDGER_QUEUED, "writer" => n.to_string());
        queued.increment(1.0);
        if self.writers[n].send(Job { work, reply }).await.is_err() {
            queued.decrement(1.0);
            return Err(writer_lost());
        }
        answer.await.map_err(|_| writer_lost())?
    }
}

/// The transaction a batch writes in, begun at its first write.
struct Batch<'s> {
    store: &'s dyn Store,
    tx: Option<Box<dyn Tx>>,
    /// The current job (or run) began with nothing else written: it took
    /// no savepoint, and undoing it is rolling the transaction back. Only
    /// a job that follows kept writes pays a SAVEPOINT's round trip.
    alone: bool,
}

impl Batch<'_> {
    async fn tx(&mut self) -> Result<&mut dyn Tx, Failure> {
        if self.tx.is_none() {
            self.tx = Some(self.store.begin().await.map_err(Failure::Batch)?);
        }
        Ok(self.tx.as_deref_mut().expect("BUG: begun above"))
    }

    /// Before a job's writes: marks where [`Batch::undo`] returns to (a
    /// savepoint when the transaction holds other jobs' writes).
    async fn open(&mut self) -> Result<(), Failure> {
        self.alone = self.tx.is_none();
        if !self.alone {
            let tx = self.tx().await?;
            tx.savepoint().await.map_err(Failure::Batch)?;
        }
        Ok(())
    }

    /// Undoes the current job's writes: back to its savepoint, or the whole
    /// transaction when it held nothing else (a later write begins another).
    async fn undo(&mut self) -> Result<(), Failure> {
        if self.alone {
            return match self.tx.take() {
                Some(tx) => tx.rollback().await.map_err(Failure::Batch),
                None => Ok(()),
            };
        }
        let tx = self.tx().await?;
        tx.rollback_to_savepoint().await.map_err(Failure::Batch)
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
    /// Runs of plain events go the bulk path ([`bulk`]) first, the rest
    /// (and a run it hands back) one at a time. `writer` labels its
    /// metrics.
    async fn write_batch(&self, jobs: Vec<Job>, writer: &str, committing: &mut Committing) {
        let pipelined = self.store.backend() == "postgres";
        let keys: HashSet<String> = jobs
            .iter()
            .map(|job| key_of(&job.work).to_owned())
            .collect();
        if pipelined {
            committing.make_room(&keys).await;
        }
        let mut batch = Batch {
            store: self.store.as_ref(),
            tx: None,
            alone: true,
        };
        let (works, replies): (Vec<Work>, Vec<Reply>) =
            jobs.into_iter().map(|job| (job.work, job.reply)).unzip();
        let plain = self.plain_jobs(&works.iter().collect::<Vec<_>>());
        if let ([work], [Some(lone)]) = (&works[..], &plain[..]) {
            if let Some(written) = self.write_unlocked(work, lone).await {
                return answer(replies.into_iter().zip([Ok(written)]).collect());
            }
        }
        // Written in the transaction below, they change from what a lone
        // webhook last wrote.
        self.writer.known.forget(&keys);
        let mut touched = Affected::default();
        // The users read when a run of the whole batch published what it
        // touched with its own statement ([`Tx::record_save_and_publish`]):
        // the commit then publishes nothing more.
        let mut published = None;
        let mut answers: Vec<Result<Answer, StoreError>> = Vec::with_capacity(works.len());
        let mut lost_at = None;
        let mut next = 0;
        while next < works.len() {
            let run: Vec<(&Work, &bulk::Plain)> = works[next..]
                .iter()
                .zip(&plain[next..])
                .map_while(|(work, plain)| Some((work, plain.as_ref()?)))
                .collect();
            if !run.is_empty() {
                let whole_batch = run.len() == works.len();
                match self.write_plain(&mut batch, &run, whole_batch).await {
                    Ok(Some((written, users))) => {
                        published = users;
                        for (answer, affected) in written {
                            touched.merge(&affected);
                            answers.push(Ok(answer));
                        }
                        next += run.len();
                        continue;
                    }
                    Ok(None) => {}
                    Err(Failure::Job(e)) | Err(Failure::Batch(e)) => {
                        lost_at = Some(e);
                        break;
                    }
                }
            }
            // One at a time: a job that is not plain, or a run handed back.
            for work in &works[next..next + run.len().max(1)] {
                match self.write_job(&mut batch, work).await {
                    Ok((answer, affected)) => {
                        touched.merge(&affected);
                        answers.push(Ok(answer));
                    }
                    Err(Failure::Job(e)) => answers.push(Err(e)),
                    Err(Failure::Batch(e)) => {
                        lost_at = Some(e);
                        break;
                    }
                }
            }
            if lost_at.is_some() {
                break;
            }
            next += run.len().max(1);
        }
        // Jobs never reached (the transaction was lost first) fail with it.
        answers.resize_with(replies.len(), || Err(batch_lost()));
        let done: Vec<(Reply, Result<Answer, StoreError>)> =
            replies.into_iter().zip(answers).collect();
        let tx = match (lost_at, batch.tx) {
            (Some(e), _) => return lost(done, &e, writer),
            (None, None) => return answer(done),
            (None, Some(tx)) => tx,
        };
        let changes = self.changes.clone();
        let writer = writer.to_owned();
        let commit = async move {
            let committed = match published {
                Some(users) => changes.commit_published(tx, touched, users).await,
                None => changes.commit(tx, touched).await,
            };
            match committed {
                Ok(()) => answer(done),
                Err(e) => lost(done, &e, &writer),
            }
        };
        if pipelined {
            // Its replies go with a panic (the callers are told), as in
            // [`run`], which no longer sees this part.
            let commit = AssertUnwindSafe(commit).catch_unwind().map(move |done| {
                if done.is_err() {
                    tracing::error!(
                        "BUG: a ledger writer's commit panicked; its batch was not answered"
                    );
                }
            });
            committing.batches.push((keys, tokio::spawn(commit)));
        } else {
            commit.await;
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
        let (envelope, received, source, fetched) = match work {
            Work::Ingest {
                envelope,
                received,
                source,
                fetched,
            } => (envelope, received, *source, fetched),
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
            .record_and_apply(tx, envelope, received, source, fetched)
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
                let refused = self
                    .record_refused(tx, envelope, received, source, &cause)
                    .await;
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

/// Answers every job of a committed batch.
fn answer(done: Vec<(Reply, Result<Answer, StoreError>)>) {
    for (reply, answer) in done {
        let _ = reply.send(answer);
    }
}

/// Answers every job of a batch whose transaction was lost: those that
/// failed alone with their own error, the rest with [`batch_lost`].
fn lost(done: Vec<(Reply, Result<Answer, StoreError>)>, cause: &StoreError, writer: &str) {
    metrics::counter!(crate::metrics::LEDGER_BATCHES_LOST, "writer" => writer.to_owned())
        .increment(1);
    tracing::error!(error = ?cause, jobs = done.len(), writer, "a batch's transaction failed; none of its jobs is stored");
    for (reply, answer) in done {
        let _ = reply.send(answer.and_then(|_| Err(batch_lost())));
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[test]
    fn equal_keys_always_go_to_the_same_writer_and_keys_spread_over_all() {
        let keys: Vec<String> = (0..2000).map(|n| format!("cus_{n}")).collect();
        for writers in 1..=8 {
            let mut used = vec![0usize; writers];
            for key in &keys {
                let n = route(key, writers);
                assert!(n < writers);
                // An equal key, not the same string: what a redelivery or
                // another event of the customer carries.
                assert_eq!(route(&key.clone(), writers), n, "{key}");
                assert_eq!(route(key, writers), n, "{key} again");
                used[n] += 1;
            }
            assert!(
                used.iter().all(|&u| u > 2000 / writers / 2),
                "{writers} writers: {used:?}"
            );
        }
    }

    fn ingest(event_type: &str, object: serde_json::Value) -> Work {
        let envelope = Envelope {
            id: "evt_1".into(),
            event_type: event_type.into(),
            created: 1_800_000_000,
            livemode: false,
            api_version: None,
            object,
            thin: None,
        };
        Work::Ingest {
            received: Received::of(&envelope, b""),
            envelope,
            source: Source::Webhook,
            fetched: Fetched::Nothing,
        }
    }

    fn thin(related: &str, fetched: Fetched) -> Work {
        let Work::Ingest { mut envelope, .. } =
            ingest("v1.customer.subscription.updated", serde_json::Value::Null)
        else {
            unreachable!()
        };
        envelope.thin = Some(event::Thin {
            related: Some(event::Related {
                id: related.into(),
                object_type: "subscription".into(),
            }),
            snapshot_event: None,
        });
        Work::Ingest {
            received: Received::of(&envelope, b""),
            envelope,
            source: Source::Webhook,
            fetched,
        }
    }

    #[test]
    fn a_customers_events_and_api_reads_share_its_key() {
        use serde_json::json;
        let subscription = json!({
            "id": "sub_1", "object": "subscription", "customer": "cus_1", "status": "active",
            "current_period_end": 1_900_000_000, "items": {"data": []},
        });
        let snap = event::parse_subscription(&subscription, "user_id").unwrap();
        let read = crate::related::Read {
            object: Arc::new(subscription.clone()),
            read_at: 1_800_000_000,
        };
        let invoice = json!({"id": "in_1", "object": "invoice", "customer": {"id": "cus_1"}});
        let cases = [
            ingest("customer.subscription.updated", subscription),
            ingest("invoice.paid", invoice),
            ingest(
                "customer.updated",
                json!({"id": "cus_1", "object": "customer"}),
            ),
            ingest(
                "checkout.session.completed",
                json!({"id": "cs_1", "object": "checkout.session", "customer": "cus_1"}),
            ),
            thin("sub_1", Fetched::Read(read)),
            Work::ApiSnapshot {
                snap,
                read_at: 1_800_000_000,
                origin: ReadOrigin::Refresh,
            },
        ];
        for work in &cases {
            assert_eq!(key_of(work), "cus_1");
        }
        let product = ingest(
            "product.updated",
            json!({"id": "prod_1", "object": "product"}),
        );
        assert_eq!(key_of(&product), "prod_1");
        let unreadable = thin("sub_1", Fetched::Unreadable("no key".into()));
        assert_eq!(key_of(&unreadable), "sub_1");
        assert_eq!(key_of(&ingest("ping", serde_json::Value::Null)), "evt_1");
    }

    /// A writer loop whose batches are recorded and answered at once.
    fn recording() -> (mpsc::Sender<oneshot::Sender<usize>>, Arc<Mutex<Vec<usize>>>) {
        let (jobs, queued) = mpsc::channel::<oneshot::Sender<usize>>(16);
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let seen = sizes.clone();
        tokio::spawn(run(
            queued,
            4,
            "0".to_owned(),
            move |batch: Vec<oneshot::Sender<usize>>| {
                seen.lock().unwrap().push(batch.len());
                let n = batch.len();
                async move {
                    for reply in batch {
                        let _ = reply.send(n);
                    }
                }
            },
        ));
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
            "0".to_owned(),
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
