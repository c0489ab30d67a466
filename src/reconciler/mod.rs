//! The reconciler: re-reads Stripe on a schedule to fill the gaps missed
//! webhooks leave.
//!
//! A pass has two parts:
//! - **Catch-up.** Pages through `GET /v1/events` (types Tollgate handles,
//!   `created >= cursor`, at most 30 days back) and feeds every event through
//!   the same idempotent pipeline as webhooks: events already recorded are
//!   duplicates, missed ones are applied. Progress is saved after every
//!   page, so a restart resumes the pass without losing or re-applying
//!   anything.
//! - **Sweep.** Every `sweep_interval`, re-reads each subscription that can
//!   still change and corrects drift. The Stripe client's rate limit spreads
//!   it out.
//!
//! What a pass changes is announced as a notification (see
//! [`crate::ledger`]). Only one pass runs at a time in a process; across
//! replicas, the store decides who runs ([`Store::try_lead`]).

mod progress;

use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use serde::Serialize;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::event::{self, HANDLED_TYPES};
use crate::features::Features;
use crate::ledger::{IngestError, Ingested, Ledger, ReadOrigin, Source};
use crate::outcome::Outcome;
use crate::refresh::Refresher;
use crate::reviews::Reviews;
use crate::store::{Store, StoreError};
use crate::stripe::{NotConfigured, StripeClient};

pub use progress::{Listed, PassState, Progress};

const PAGE_SIZE: u32 = 100;

/// Pages of events written at once by a catch-up, so that the ledger's
/// writer finds the next pages' events queued while it commits one. Four
/// caught up faster than two on both backends (10,000 events, medians of
/// five: PostgreSQL 3,891 against 3,710 a second, SQLite 3,685 against
/// 3,187); at most 400 events' text is held.
const PAGES_IN_FLIGHT: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    #[error(transparent)]
    NotConfigured(#[from] NotConfigured),
    #[error("Stripe events listing failed: {0}")]
    Stripe(#[from] crate::stripe::StripeError),
    #[error("another replica holds the reconciler lock and runs the passes")]
    NotLeader,
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A listed thin event's object could not be read; the pass stops
    /// before its cursor moves past the event, and the next pass retries.
    #[error("reading a listed event's object failed: {0}")]
    Related(String),
}

impl From<IngestError> for ReconcileError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Store(e) => ReconcileError::Store(e),
            IngestError::StripeUnavailable(why) => ReconcileError::Related(why),
        }
    }
}

/// Lists the page of events after `after` (the first page for `None`).
async fn list_page(client: &StripeClient, since: i64, after: Option<String>) -> ListedPage {
    client
        .events_page(HANDLED_TYPES, since, after.as_deref(), PAGE_SIZE)
        .await
}

/// A page of listed events and whether more follow it.
type ListedPage = Result<(Vec<Box<RawValue>>, bool), crate::stripe::StripeError>;

/// What feeding one listed event to the ledger did.
enum Fed {
    /// Not an event envelope; skipped.
    Unreadable,
    Duplicate,
    Applied,
    /// Recorded, but stale, ignored or failed.
    Other,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PassReport {
    pub events_seen: i64,
    pub events_applied: i64,
    pub events_duplicate: i64,
    pub events_other: i64,
    pub pages: i64,
    pub swept: bool,
    pub subscriptions_swept: i64,
    pub access_corrections: i64,
    /// Product feature maps the sweep found changed in Stripe.
    pub product_maps_changed: i64,
    pub errors: i64,
    /// `created` of the newest event seen, for the lag metric.
    pub newest_event: Option<i64>,
}

impl PassReport {
    fn count(&mut self, fed: Fed) {
        self.events_seen += 1;
        match fed {
            Fed::Unreadable => self.errors += 1,
            Fed::Duplicate => self.events_duplicate += 1,
            Fed::Applied => self.events_applied += 1,
            Fed::Other => self.events_other += 1,
        }
    }
}

pub struct Reconciler {
    ledger: Arc<Ledger>,
    refresher: Arc<Refresher>,
    reviews: Arc<Reviews>,
    /// Product feature maps, re-read by the sweep.
    features: Arc<Features>,
    progress: Progress,
    /// Read directly for the sweep's list and for leadership.
    store: Arc<dyn Store>,
    /// Lists events; `None` without an API key (passes then refuse).
    stripe: Option<Arc<StripeClient>>,
    clock: Arc<dyn Clock>,
    sweep_interval: Duration,
    /// One pass at a time in this process; the admin call and the timer
    /// queue here.
    running: tokio::sync::Mutex<()>,
}

/// What the reconciler works with.
pub struct Parts {
    pub ledger: Arc<Ledger>,
    pub refresher: Arc<Refresher>,
    pub reviews: Arc<Reviews>,
    pub features: Arc<Features>,
    pub store: Arc<dyn Store>,
    /// Lists events; `None` without an API key.
    pub stripe: Option<Arc<StripeClient>>,
    pub clock: Arc<dyn Clock>,
}

impl Reconciler {
    pub fn new(parts: Parts, sweep_interval: Duration) -> Self {
        let Parts {
            ledger,
            refresher,
            reviews,
            features,
            store,
            stripe,
            clock,
        } = parts;
        Reconciler {
            ledger,
            refresher,
            reviews,
            features,
            progress: Progress::new(store.clone()),
            store,
            stripe,
            clock,
            sweep_interval,
            running: tokio::sync::Mutex::new(()),
        }
    }

    /// Runs one pass now; `force_sweep` sweeps even when not due.
    pub async fn run_once(&self, force_sweep: bool) -> Result<PassReport, ReconcileError> {
        let _pass = self.running.lock().await;
        if self.stripe.is_none() {
            return Err(NotConfigured.into());
        }
        if !self.store.try_lead().await? {
            return Err(ReconcileError::NotLeader);
        }
        let mut report = PassReport::default();
        self.catch_up(&mut report).await?;
        let last_sweep = self.progress.last_sweep().await?;
        let due = last_sweep.is_none_or(|at| {
            self.clock.now_secs() - at >= crate::policy::secs(self.sweep_interval)
        });
        if force_sweep || due {
            self.sweep(&mut report).await?;
        }
        let now = self.clock.now_secs();
        metrics::gauge!(crate::metrics::RECONCILER_LAST_RUN).set(now as f64);
        if let Some(newest) = report.newest_event {
            metrics::gauge!(crate::metrics::RECONCILER_LAG).set((now - newest).max(0) as f64);
        }
        tracing::info!(
            events_seen = report.events_seen,
            events_applied = report.events_applied,
            swept = report.subscriptions_swept,
            corrections = report.access_corrections,
            errors = report.errors,
            "reconcile pass done"
        );
        Ok(report)
    }

    async fn catch_up(&self, report: &mut PassReport) -> Result<(), ReconcileError> {
        let client = self.stripe.as_ref().ok_or(NotConfigured)?;
        let saved = self.progress.unfinished_pass().await?;
        if let Some(after) = saved.as_ref().and_then(|p| p.after.as_deref()) {
            tracing::info!(after, "resuming an interrupted reconcile pass");
        }
        let cursor = self.progress.cursor().await?;
        let mut pass = progress::start_pass(saved, cursor, self.clock.now_secs());

        // Pages are listed one after another (each starts after the last
        // event of the one before), and up to PAGES_IN_FLIGHT of them are
        // written at once, so the ledger's writer always has the next
        // page's events queued while it commits one. Their order does not
        // matter, since an older event never overwrites newer state; the
        // pass is saved page by page, in order, once each page is written
        // whole, so a restart resumes after a page that is.
        let since = pass.since;
        let mut listing = Some(list_page(client, since, pass.after.clone()).boxed());
        let mut writing = futures::stream::FuturesOrdered::new();
        loop {
            tokio::select! {
                listed = async { listing.as_mut().expect("BUG: guarded").await },
                    if listing.is_some() && writing.len() < PAGES_IN_FLIGHT =>
                {
                    listing = match &listed {
                        Ok((page, true)) => page
                            .last()
                            .and_then(|e| Listed::of(e).id)
                            .map(|id| list_page(client, since, Some(id)).boxed()),
                        _ => None,
                    };
                    writing.push_back(self.write_page(listed));
                }
                Some(written) = writing.next() => {
                    // A listing that failed fails the pass only now, after
                    // every page before it is saved.
                    let (page, has_more, fed) = written?;
                    report.pages += 1;
                    for result in fed {
                        report.count(result?);
                    }
                    if !pass.record_page(&page, has_more) {
                        break;
                    }
                    self.progress.save_pass(&pass).await?;
                }
                else => break,
            }
        }
        self.progress.finish_pass(pass.next_cursor()).await?;
        report.newest_event = pass.high_water;
        Ok(())
    }

    /// Feeds every event of a listed page to the ledger at once.
    async fn write_page(
        &self,
        listed: ListedPage,
    ) -> Result<(Vec<Listed>, bool, Vec<Result<Fed, ReconcileError>>), ReconcileError> {
        let (page, has_more) = listed?;
        let fed = futures::future::join_all(page.iter().map(|raw| self.feed(raw))).await;
        Ok((
            page.iter().map(|raw| Listed::of(raw)).collect(),
            has_more,
            fed,
        ))
    }

    async fn feed(&self, raw: &RawValue) -> Result<Fed, ReconcileError> {
        let raw = raw.get().as_bytes();
        let envelope = match event::parse_envelope(raw) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "stripe listed an event without an envelope; skipped");
                return Ok(Fed::Unreadable);
            }
        };
        let (id, event_type) = (envelope.id.clone(), envelope.event_type.clone());
        match self
            .ledger
            .ingest(envelope, raw, Source::Reconciler)
            .await?
        {
            Ingested::Duplicate => Ok(Fed::Duplicate),
            Ingested::Recorded { outcome, follow_up } => {
                self.refresher.follow_up(follow_up);
                if outcome == Outcome::Applied {
                    tracing::info!(event_id = %id, event_type = %event_type, "missed webhook applied");
                    Ok(Fed::Applied)
                } else {
                    Ok(Fed::Other)
                }
            }
        }
    }

    async fn sweep(&self, report: &mut PassReport) -> Result<(), ReconcileError> {
        report.swept = true;
        let store = &self.store;
        let mut rate_limit_pause = Duration::from_secs(1);
        for id in store.non_terminal_subscriptions().await? {
            report.subscriptions_swept += 1;
            match self
                .refresher
                .read_subscription(&id, ReadOrigin::Sweep)
                .await
            {
                Ok(applied) => {
                    if applied.access_changed {
                        report.access_corrections += 1;
                    }
                }
                Err(e) => {
                    report.errors += 1;
                    tracing::warn!(subscription_id = %id, error = %e, "sweep could not re-read subscription");
                    if e == crate::refresh::RefreshFailure::RateLimited {
                        // Stripe says we are over its limit: slow down.
                        tokio::time::sleep(rate_limit_pause).await;
                        rate_limit_pause = (rate_limit_pause * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
        // Features attached to or removed from a product without a
        // product.updated reaching us.
        report.product_maps_changed = self.features.sweep().await? as i64;
        // Customers no user is linked to cannot be answered by user id.
        for (customer, subscription) in store.unlinked_customers().await? {
            self.reviews
                .flag_unlinked_customer(&customer, &subscription)
                .await?;
        }
        self.progress.swept_at(self.clock.now_secs()).await?;
        Ok(())
    }

    /// Runs a pass every `interval` until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, interval: Duration, stop: CancellationToken) {
        tracing::info!(interval_secs = interval.as_secs(), "reconciler started");
        loop {
            match self.run_once(false).await {
                Ok(_) => {}
                Err(ReconcileError::NotLeader) => {
                    tracing::debug!("another replica runs the reconciler")
                }
                Err(e) => tracing::warn!(error = %e, "reconcile pass failed"),
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(interval) => {}
            }
        }
        tracing::info!("reconciler stopped");
    }
}
