//! On-demand refresh: re-read subscriptions from Stripe's API when local data
//! may be stale, once per subject no matter how many callers ask.
//!
//! Every refresh runs as its own task and is shared by all callers for the
//! same key (single flight), so 1,000 concurrent checks of one stale subject
//! make one Stripe request. Callers wait at most `timeout`; the task goes on
//! and still applies what Stripe says when it answers late. A failure is
//! remembered briefly so that an outage does not turn every check into a
//! Stripe call. A success is remembered as briefly, so callers that read the
//! records just before it committed reload them rather than ask again.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::clock::Clock;
use crate::event::parse_subscription;
use crate::ledger::{ApiApplied, FollowUp, Ledger, ReadOrigin};
use crate::reviews::Reviews;
use crate::stripe::{NotConfigured, StripeClient, StripeError};
use tokio_util::task::TaskTracker;

/// Why Stripe could not confirm local data. The text goes into HasAccess's
/// `detail` sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefreshFailure {
    #[error(transparent)]
    NotConfigured(#[from] NotConfigured),
    #[error("Stripe unreachable")]
    Unreachable,
    #[error("Stripe has no such object")]
    NotFound,
    #[error("Stripe refresh timed out")]
    TimedOut,
    #[error("Stripe rate limit reached")]
    RateLimited,
    #[error("Stripe answered with an unreadable subscription")]
    Unreadable,
    #[error("store unavailable")]
    Store,
    #[error("refresh failed unexpectedly")]
    Internal,
    #[error("not a Stripe customer id, so Stripe was not asked")]
    NotAStripeId,
    #[error("look-ups of unknown customers are over their share of the Stripe rate limit; Stripe was not asked")]
    OverBudget,
}

type SharedRefresh = Shared<BoxFuture<'static, Result<usize, RefreshFailure>>>;

/// Owns a single-flight key while its refresh runs; dropping it (however
/// the refresh ended) frees the key.
struct InflightKey {
    refresher: Arc<Refresher>,
    key: String,
}

impl Drop for InflightKey {
    fn drop(&mut self) {
        // A poisoned map only means another thread panicked mid-insert;
        // the map itself is still usable.
        let mut inflight = match self.refresher.inflight.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        inflight.remove(&self.key);
    }
}

/// A token bucket for Stripe look-ups of customers Tollgate has never seen.
///
/// Anyone who can call HasAccess can name a customer; without a budget of
/// their own, made-up ids would queue behind the Stripe rate limit and
/// starve the refreshes of real, known subscriptions. Look-ups past the
/// budget are not made (the answer says Stripe was not asked).
struct DiscoveryBudget {
    per_sec: f64,
    burst: f64,
    /// (tokens left, when they were counted).
    state: Mutex<(f64, std::time::Instant)>,
}

impl DiscoveryBudget {
    fn new(per_sec: f64) -> Self {
        let per_sec = per_sec.max(0.1);
        let burst = per_sec.max(2.0);
        DiscoveryBudget {
            per_sec,
            burst,
            state: Mutex::new((burst, std::time::Instant::now())),
        }
    }

    fn try_take(&self) -> bool {
        let mut state = match self.state.lock() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let now = std::time::Instant::now();
        let (tokens, at) = *state;
        let tokens = (tokens + now.duration_since(at).as_secs_f64() * self.per_sec).min(self.burst);
        if tokens >= 1.0 {
            *state = (tokens - 1.0, now);
            true
        } else {
            *state = (tokens, now);
            false
        }
    }
}

/// Whether `id` could be a Stripe id with `prefix` (`cus_...`): only those
/// are ever looked up.
pub fn looks_like_stripe_id(id: &str, prefix: &str) -> bool {
    id.len() <= crate::subject::MAX_ID_BYTES
        && id
            .strip_prefix(prefix)
            .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric()))
}

pub struct Refresher {
    client: Option<Arc<StripeClient>>,
    clock: Arc<dyn Clock>,
    /// Where a follow-up notes what Stripe said.
    reviews: Arc<Reviews>,
    /// Every refresh and follow-up task, so shutdown can wait for them.
    tasks: TaskTracker,
    /// Share of the Stripe rate for customers never seen before.
    discovery: DiscoveryBudget,
    ledger: Arc<Ledger>,
    /// How long callers wait for Stripe before falling back to grace.
    timeout: Duration,
    /// Refreshes under way, by key; the task removes its key when done.
    inflight: Mutex<HashMap<String, SharedRefresh>>,
    /// Recent results by key. A failure is remembered so an outage costs
    /// one call per key per TTL; a success, so that callers who read the
    /// records just before it committed reload them instead of asking again.
    recent: moka::sync::Cache<String, Result<usize, RefreshFailure>>,
}

impl Refresher {
    /// `discovery_per_sec`: Stripe look-ups per second allowed for
    /// customers Tollgate has no subscription of (a small share of the
    /// client's rate limit).
    pub fn new(
        client: Option<Arc<StripeClient>>,
        clock: Arc<dyn Clock>,
        ledger: Arc<Ledger>,
        reviews: Arc<Reviews>,
        timeout: Duration,
        memo_ttl: Duration,
        discovery_per_sec: f64,
    ) -> Self {
        Refresher {
            client,
            clock,
            reviews,
            tasks: TaskTracker::new(),
            discovery: DiscoveryBudget::new(discovery_per_sec),
            ledger,
            timeout,
            inflight: Mutex::new(HashMap::new()),
            recent: moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(memo_ttl.max(Duration::from_millis(1)))
                .build(),
        }
    }

    /// Re-reads one subscription from Stripe and applies it; waits at most
    /// the refresh timeout.
    pub async fn subscription(self: &Arc<Self>, id: &str) -> Result<(), RefreshFailure> {
        let this = self.clone();
        let owned = id.to_owned();
        self.bounded(format!("sub:{id}"), async move {
            this.read_subscription(&owned, ReadOrigin::Refresh)
                .await
                .map(|_| 1)
        })
        .await
        .map(|_| ())
    }

    /// Lists a customer's subscriptions from Stripe and applies them all;
    /// returns how many Stripe has. Waits at most the refresh timeout.
    ///
    /// Only ids shaped like a Stripe customer id are looked up, and new
    /// look-ups are limited to the discovery budget, so made-up ids cannot
    /// starve refreshes of known subscriptions.
    pub async fn customer(self: &Arc<Self>, customer: &str) -> Result<usize, RefreshFailure> {
        // `acct_…`: an Accounts v2 customer account, listed the same way.
        if !looks_like_stripe_id(customer, "cus_") && !looks_like_stripe_id(customer, "acct_") {
            return Err(RefreshFailure::NotAStripeId);
        }
        let this = self.clone();
        let owned = customer.to_owned();
        self.bounded_with(
            format!("cus:{customer}"),
            Some(&self.discovery),
            async move { this.read_customer(&owned).await },
        )
        .await
    }

    /// Re-reads subscriptions after events that asked for it, in the
    /// background, and notes what Stripe said on the review that asked.
    pub fn follow_up(self: &Arc<Self>, items: Vec<FollowUp>) {
        for item in items {
            let this = self.clone();
            self.tasks.spawn(async move {
                let outcome = this
                    .read_subscription(&item.subscription_id, ReadOrigin::Refresh)
                    .await;
                let Some(review_id) = item.review_id else {
                    return;
                };
                let note = match &outcome {
                    Ok(applied) => describe(applied),
                    Err(e) => format!("refresh failed: {e}"),
                };
                if let Err(e) = this.reviews.note_outcome(review_id, &note).await {
                    tracing::warn!(review_id, error = %e, "could not note refresh outcome on review");
                }
            });
        }
    }

    async fn bounded(
        self: &Arc<Self>,
        key: String,
        work: impl Future<Output = Result<usize, RefreshFailure>> + Send + 'static,
    ) -> Result<usize, RefreshFailure> {
        self.bounded_with(key, None, work).await
    }

    /// Like [`Refresher::bounded`]; a new flight (not one joined) must also
    /// take a token from `budget`.
    async fn bounded_with(
        self: &Arc<Self>,
        key: String,
        budget: Option<&DiscoveryBudget>,
        work: impl Future<Output = Result<usize, RefreshFailure>> + Send + 'static,
    ) -> Result<usize, RefreshFailure> {
        if self.client.is_none() {
            metrics::counter!(crate::metrics::REFRESHES, "outcome" => "not_configured")
                .increment(1);
            return Err(NotConfigured.into());
        }
        if let Some(result) = self.recent.get(&key) {
            metrics::counter!(crate::metrics::REFRESHES, "outcome" => "recent").increment(1);
            return result;
        }
        let Some(shared) = self.single_flight(key, budget, work) else {
            metrics::counter!(crate::metrics::REFRESHES, "outcome" => "over_budget").increment(1);
            return Err(RefreshFailure::OverBudget);
        };
        let result = match tokio::time::timeout(self.timeout, shared).await {
            Ok(result) => result,
            Err(_) => Err(RefreshFailure::TimedOut),
        };
        let outcome = match &result {
            Ok(_) => "ok",
            Err(RefreshFailure::NotConfigured(_)) => "not_configured",
            Err(RefreshFailure::TimedOut) => "timed_out",
            Err(_) => "failed",
        };
        metrics::counter!(crate::metrics::REFRESHES, "outcome" => outcome).increment(1);
        result
    }

    /// Joins the flight for `key`, or starts one; `None` when a new one
    /// was needed and `budget` had no token for it.
    fn single_flight(
        self: &Arc<Self>,
        key: String,
        budget: Option<&DiscoveryBudget>,
        work: impl Future<Output = Result<usize, RefreshFailure>> + Send + 'static,
    ) -> Option<SharedRefresh> {
        let mut inflight = self.inflight.lock().expect("BUG: refresh map poisoned");
        if let Some(existing) = inflight.get(&key) {
            return Some(existing.clone());
        }
        if budget.is_some_and(|b| !b.try_take()) {
            return None;
        }
        let guard = InflightKey {
            refresher: self.clone(),
            key: key.clone(),
        };
        let task = self.tasks.spawn(async move {
            // Removes the key however the work ends, a panic included, so
            // the next caller starts a new refresh instead of waiting on a
            // dead one forever.
            let guard = guard;
            let result = work.await;
            guard
                .refresher
                .recent
                .insert(guard.key.clone(), result.clone());
            result
        });
        let shared = async move {
            task.await.unwrap_or_else(|e| {
                let cause = if e.is_panic() {
                    crate::tasks::panic_message(e.into_panic().as_ref())
                } else {
                    "cancelled".to_owned()
                };
                tracing::error!(cause, "refresh task failed");
                Err(RefreshFailure::Internal)
            })
        }
        .boxed()
        .shared();
        inflight.insert(key, shared.clone());
        Some(shared)
    }

    fn client(&self) -> Result<&StripeClient, RefreshFailure> {
        self.client.as_deref().ok_or(NotConfigured.into())
    }

    /// Re-reads one subscription now, without single flight or timeout:
    /// for the reconciler's sweep and admin actions that must finish.
    pub async fn read_subscription(
        &self,
        id: &str,
        origin: ReadOrigin,
    ) -> Result<ApiApplied, RefreshFailure> {
        let value = self
            .client()?
            .subscription(id)
            .await
            .map_err(|e| stripe_failure(id, e))?;
        self.apply(&value, origin).await
    }

    /// Waits up to `timeout` for refresh and follow-up tasks still running:
    /// they may be about to commit what Stripe said.
    pub async fn drain(&self, timeout: Duration) {
        self.tasks.close();
        if tokio::time::timeout(timeout, self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                tasks = self.tasks.len(),
                "refresh tasks still running at the shutdown deadline"
            );
        }
    }

    /// Whether a Stripe client is configured.
    pub fn configured(&self) -> bool {
        self.client.is_some()
    }

    async fn read_customer(&self, customer: &str) -> Result<usize, RefreshFailure> {
        let list = self
            .client()?
            .customer_subscriptions(customer)
            .await
            .map_err(|e| stripe_failure(customer, e))?;
        for value in &list {
            self.apply(value, ReadOrigin::Refresh).await?;
        }
        tracing::info!(customer, found = list.len(), "customer looked up in stripe");
        Ok(list.len())
    }

    async fn apply(
        &self,
        value: &serde_json::Value,
        origin: ReadOrigin,
    ) -> Result<ApiApplied, RefreshFailure> {
        let snap = parse_subscription(value, self.ledger.user_key()).map_err(|e| {
            tracing::warn!(error = %e, "stripe returned a subscription tollgate cannot read");
            RefreshFailure::Unreadable
        })?;
        let applied = self
            .ledger
            .apply_api_snapshot(&snap, self.clock.now_secs(), origin)
            .await
            .map_err(|e| {
                tracing::error!(error = ?e, subscription_id = %snap.id, "could not store refreshed subscription");
                RefreshFailure::Store
            })?;
        tracing::info!(subscription_id = %snap.id, status = %applied.status, outcome = applied.outcome.as_str(), "refreshed from stripe");
        Ok(applied)
    }
}

fn stripe_failure(id: &str, e: StripeError) -> RefreshFailure {
    tracing::warn!(id, error = %e, "stripe refresh failed");
    match e {
        StripeError::Status { status: 429, .. } => RefreshFailure::RateLimited,
        StripeError::NotFound => RefreshFailure::NotFound,
        _ => RefreshFailure::Unreachable,
    }
}

/// What a re-read of Stripe found, as noted on a review.
pub fn describe(applied: &ApiApplied) -> String {
    match applied.previous {
        Some(previous) => format!("stripe says {}; applied (was {previous})", applied.status),
        None => format!(
            "stripe says {}; {}",
            applied.status,
            applied.outcome.as_str()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A refresher whose Stripe client is never called: the tests hand
    /// `bounded` their own work.
    async fn refresher(timeout: Duration) -> (crate::testing::Services, Arc<Refresher>) {
        let s = crate::testing::services().await;
        let client = StripeClient::new(&crate::stripe::StripeOptions {
            base_url: "http://127.0.0.1:1".into(),
            api_key: Some("sk_test_unused".into()),
            max_rps: 10,
            request_timeout: Duration::from_secs(1),
            max_retries: 0,
        });
        let r = Arc::new(Refresher::new(
            client.map(Arc::new),
            s.clock.clone(),
            s.ledger.clone(),
            s.reviews.clone(),
            timeout,
            Duration::from_millis(1),
            1.0,
        ));
        (s, r)
    }

    fn counted(
        runs: &Arc<AtomicUsize>,
        takes: Duration,
    ) -> impl Future<Output = Result<usize, RefreshFailure>> + Send + 'static {
        let runs = runs.clone();
        async move {
            tokio::time::sleep(takes).await;
            Ok(runs.fetch_add(1, Ordering::SeqCst) + 1)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hundred_concurrent_callers_share_one_refresh() {
        let (_s, r) = refresher(Duration::from_secs(2)).await;
        let runs = Arc::new(AtomicUsize::new(0));
        let calls =
            (0..100).map(|_| r.bounded("k".into(), counted(&runs, Duration::from_millis(50))));
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(|r| *r == Ok(1)), "{results:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(r.inflight.lock().unwrap().is_empty(), "the key is freed");
    }

    #[tokio::test]
    async fn a_caller_waits_at_most_the_timeout_and_the_refresh_goes_on() {
        let (_s, r) = refresher(Duration::from_millis(20)).await;
        let runs = Arc::new(AtomicUsize::new(0));
        let late = r
            .bounded("k".into(), counted(&runs, Duration::from_millis(200)))
            .await;
        assert_eq!(late, Err(RefreshFailure::TimedOut));
        r.drain(Duration::from_secs(2)).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            1,
            "it finished in the background"
        );
    }

    #[tokio::test]
    async fn a_refresh_that_panics_frees_its_key_for_the_next_caller() {
        let (_s, r) = refresher(Duration::from_secs(2)).await;
        let boom = async { panic!("unexpected shape") };
        assert_eq!(
            r.bounded("k".into(), boom).await,
            Err(RefreshFailure::Internal)
        );
        assert!(r.inflight.lock().unwrap().is_empty());
        r.recent.invalidate_all();
        let runs = Arc::new(AtomicUsize::new(0));
        let again = r.bounded("k".into(), counted(&runs, Duration::ZERO)).await;
        assert_eq!(again, Ok(1), "a new refresh ran");
    }

    #[test]
    fn only_stripe_shaped_ids_are_looked_up() {
        assert!(looks_like_stripe_id("cus_NffrFeUfNV2Hib", "cus_"));
        for junk in [
            "cus_",
            "user_1",
            "cus_a/b",
            "cus_a b",
            "CUS_abc",
            &format!("cus_{}", "a".repeat(300)),
        ] {
            assert!(!looks_like_stripe_id(junk, "cus_"), "{junk}");
        }
    }

    #[test]
    fn the_discovery_budget_allows_its_burst_then_its_rate() {
        let budget = DiscoveryBudget::new(2.0);
        assert!(budget.try_take() && budget.try_take());
        assert!(!budget.try_take(), "burst of two spent");
        std::thread::sleep(Duration::from_millis(600));
        assert!(budget.try_take(), "a token came back after half a second");
    }
}
