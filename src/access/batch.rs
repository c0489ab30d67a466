//! Cache misses read together: one store read for every subject waiting
//! when the read starts, the way the ledger's writer commits every write
//! waiting for it.
//!
//! A miss is queued; a dispatcher takes everything queued (up to
//! [`MAX_BATCH`]) as soon as one of [`IN_FLIGHT`] reads is free, and reads
//! it with one [`Store::subscriptions_of_subjects`]. A miss alone is read
//! at once (no timer); under load the misses that queue behind the reads
//! in flight share the next one, so each pays a fraction of a round trip
//! (on PostgreSQL, of a statement's execution too) instead of a whole one.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Semaphore};
use tracing::Instrument;

use crate::store::Store;
use crate::subject::Subject;
use crate::subscription::SubscriptionRecord;

/// Subjects read by one statement at most.
pub(super) const MAX_BATCH: usize = 64;

/// Reads under way at once. Few, so that misses queue and share reads:
/// with many, each miss would find a read free and go alone. One read at
/// a time measured best on both backends (1M users, 2 vCPUs, every read
/// cold, 2 rounds each): SQLite 15,480 / 15,361 req/s against 14,839 /
/// 14,593 with two and 14,349 / 13,690 with four; PostgreSQL 14,888 /
/// 15,001 against 14,113 / 14,247 and 12,866 / 12,965. The larger
/// batches cost less per subject than the overlap saved.
pub(super) const IN_FLIGHT: usize = 1;

struct Job {
    subject: Subject,
    /// Dropped without an answer when the read failed.
    reply: oneshot::Sender<Vec<SubscriptionRecord>>,
}

/// The queue of misses to read; reads run on their own tasks.
pub(super) struct ReadBatcher {
    /// Unbounded, yet bounded by what feeds it: one entry per subject
    /// being loaded, and each load has a request waiting on it, which the
    /// ports' connection and stream limits bound.
    queue: mpsc::UnboundedSender<Job>,
}

impl ReadBatcher {
    /// Starts the dispatcher; it ends when the batcher is dropped.
    pub(super) fn new(store: Arc<dyn Store>) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        tokio::spawn(dispatch(store, jobs).instrument(tracing::info_span!("subject_read_batches")));
        ReadBatcher { queue }
    }

    /// `subject`'s records, read with whatever else is waiting. `None`
    /// when the read failed (or the dispatcher is gone): the caller reads
    /// alone, for its own error.
    pub(super) async fn read(&self, subject: Subject) -> Option<Vec<SubscriptionRecord>> {
        let (reply, answer) = oneshot::channel();
        self.queue.send(Job { subject, reply }).ok()?;
        answer.await.ok()
    }
}

async fn dispatch(store: Arc<dyn Store>, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let free = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // A read slot first, then the queue: misses that arrive while
        // every slot is busy wait in the queue and go out together.
        let Ok(slot) = free.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = jobs.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let store = store.clone();
        // Its own task: a panic in the store drops the replies (each
        // caller then reads alone) and the slot, not the dispatcher.
        tokio::spawn(async move {
            read(store.as_ref(), batch).await;
            drop(slot);
        });
    }
}

async fn read(store: &dyn Store, batch: Vec<Job>) {
    metrics::counter!(crate::metrics::SUBJECT_READS).increment(1);
    let subjects: Vec<Subject> = batch.iter().map(|job| job.subject.clone()).collect();
    match store.subscriptions_of_subjects(&subjects).await {
        Ok(all) if all.len() == batch.len() => {
            for (job, records) in batch.into_iter().zip(all) {
                let _ = job.reply.send(records);
            }
        }
        Ok(all) => tracing::error!(
            asked = batch.len(),
            answered = all.len(),
            "a batched subject read answered for a different number of subjects"
        ),
        Err(e) => {
            tracing::debug!(error = %e, subjects = batch.len(), "batched subject read failed")
        }
    }
}
