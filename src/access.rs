//! HasAccess in domain terms: the subject's records (from the cache, else the
//! store), the pure decision, and a refresh from Stripe when a denial rests
//! on stale data.
//!
//! A paying user is never locked out because a webhook went missing: when
//! local data would deny access the subject may still have and Tollgate has
//! not heard from Stripe about it for `stale_after`, Stripe is asked (at most
//! `refresh_timeout`). If Stripe cannot answer, access continues as
//! `STALE_GRACE` until `stale_grace` after local data says it ended.

mod batch;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt, Shared};

use crate::cache::{Records, SubjectCache, Ticket};
use crate::catalog::Catalog;
use crate::clock::Clock;
use crate::compact::{self, CompactRecord};
use crate::features::Features;
use crate::policy::{self, Decision, FeatureQuery, Policy, Reason};
use crate::refresh::Refresher;
use crate::store::{Store, StoreError};
use crate::subject::{Subject, SubjectError};
use crate::subscription::AccessFacts;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error(transparent)]
    Subject(#[from] SubjectError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// When records count as stale, and how long grace lasts without Stripe.
#[derive(Debug, Clone, Copy)]
pub struct Staleness {
    pub stale_after: Duration,
    pub stale_grace: Duration,
}

pub struct Access {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    cache: Arc<SubjectCache>,
    refresher: Arc<Refresher>,
    features: Arc<Features>,
    policy: Policy,
    staleness: Staleness,
    /// Store reads under way, by subject.
    loads: Arc<Mutex<HashMap<Subject, Load>>>,
    /// Where those reads go: concurrent misses of different subjects share
    /// one store read.
    reads: Arc<batch::ReadBatcher>,
    next_load: AtomicU64,
    meters: Meters,
}

/// HasAccess's metrics, looked up in the recorder once: building a key
/// and finding it on every answer was about 2% of a hot HasAccess's
/// instructions (callgrind).
struct Meters {
    hits: metrics::Counter,
    misses: metrics::Counter,
    seconds: metrics::Histogram,
    /// Answers by reason, each registered at its first answer (a reason
    /// never given shows no series, as before).
    answers: [OnceLock<metrics::Counter>; Reason::COUNT],
}

impl Meters {
    fn new() -> Self {
        Meters {
            hits: metrics::counter!(crate::metrics::CACHE_HITS),
            misses: metrics::counter!(crate::metrics::CACHE_MISSES),
            seconds: metrics::histogram!(crate::metrics::HAS_ACCESS_SECONDS),
            answers: std::array::from_fn(|_| OnceLock::new()),
        }
    }

    fn answered(&self, reason: Reason) {
        self.answers[reason as usize]
            .get_or_init(
                || metrics::counter!(crate::metrics::HAS_ACCESS, "reason" => reason.as_str()),
            )
            .increment(1);
    }
}

/// One store read of a subject's records, shared by the misses that arrive
/// while it runs, as long as no change to the subject has committed since
/// it began (a joiner must see every write acknowledged before it asked).
/// `None` when the read failed: each waiter then reads alone, for its own
/// error.
#[derive(Clone)]
struct Load {
    ticket: Ticket,
    id: u64,
    records: Shared<BoxFuture<'static, Option<Records>>>,
}

/// What a check asks beyond the subject.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<'a> {
    /// A product id or price lookup key the subscription must have.
    pub product: Option<&'a str>,
    /// An Entitlements feature lookup key one of its products must carry.
    pub feature: Option<&'a str>,
}

impl Access {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        cache: Arc<SubjectCache>,
        refresher: Arc<Refresher>,
        features: Arc<Features>,
        policy: Policy,
        staleness: Staleness,
    ) -> Self {
        Access {
            reads: Arc::new(batch::ReadBatcher::new(store.clone())),
            store,
            clock,
            cache,
            refresher,
            features,
            policy,
            staleness,
            loads: Arc::new(Mutex::new(HashMap::new())),
            next_load: AtomicU64::new(0),
            meters: Meters::new(),
        }
    }

    /// The subject's records: from memory when cached, else from the store.
    async fn records(&self, subject: &Subject) -> Result<Records, StoreError> {
        if let Some(records) = self.cache.get(subject) {
            self.meters.hits.increment(1);
            return Ok(records);
        }
        self.meters.misses.increment(1);
        if let Some(records) = self.shared_load(subject).records.await {
            return Ok(records);
        }
        load(self.store.as_ref(), subject).await
    }

    /// Joins the read of `subject` under way, or starts one. The read runs
    /// as its own task: it ends (and caches what it read) even when every
    /// caller waiting for it has gone.
    fn shared_load(&self, subject: &Subject) -> Load {
        let ticket = self.cache.ticket(subject);
        let mut loads = self.loads.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(running) = loads.get(subject).filter(|l| l.ticket == ticket) {
            return running.clone();
        }
        let id = self.next_load.fetch_add(1, Ordering::Relaxed);
        let (reads, cache, loads_map) =
            (self.reads.clone(), self.cache.clone(), self.loads.clone());
        let key = subject.clone();
        let task = tokio::spawn(async move {
            metrics::counter!(crate::metrics::SUBJECT_LOADS).increment(1);
            let result = reads.read(key.clone()).await.map(|records| {
                let records = compact::from_records(&records);
                cache.insert(key.clone(), ticket, records.clone());
                records
            });
            let mut loads = loads_map.lock().unwrap_or_else(|p| p.into_inner());
            if loads.get(&key).is_some_and(|l| l.id == id) {
                loads.remove(&key);
            }
            result
        });
        let records = async move { task.await.ok().flatten() }.boxed().shared();
        let started = Load {
            ticket,
            id,
            records,
        };
        loads.insert(subject.clone(), started.clone());
        started
    }

    /// Decides access for `subject`, refreshing stale denials from Stripe.
    pub async fn has_access(
        &self,
        subject: &Subject,
        query: Query<'_>,
    ) -> Result<Decision, AccessError> {
        let started = std::time::Instant::now();
        let span = tracing::debug_span!("has_access", ?subject, reason = tracing::field::Empty);
        let decision =
            tracing::Instrument::instrument(self.decide(subject, query), span.clone()).await?;
        span.record("reason", decision.reason.as_str());
        self.meters.seconds.record(started.elapsed().as_secs_f64());
        self.meters.answered(decision.reason);
        Ok(decision)
    }

    /// Every feature known for the subject's subscriptions' products, each
    /// decided exactly as [`Access::has_access`] decides it, sorted by
    /// feature.
    pub async fn entitlements(
        &self,
        subject: &Subject,
    ) -> Result<Vec<(String, Decision)>, AccessError> {
        let records = self.records(subject).await?;
        let catalog = self.catalog(&records, true).await?;
        let features: std::collections::BTreeSet<String> = records
            .iter()
            .flat_map(|r| catalog.features_for(r))
            .map(str::to_owned)
            .collect();
        let mut out = Vec::with_capacity(features.len());
        for feature in features {
            let query = Query {
                product: None,
                feature: Some(&feature),
            };
            // The records and maps in hand decide every grant, exactly as
            // `decide` would first; only a denial goes on to `decide`'s
            // refresh and stale-grace path.
            let local = self.judge(&records, query, &catalog, None);
            let decision = if local.has_access {
                local
            } else {
                self.decide(subject, query).await?
            };
            out.push((feature, decision));
        }
        Ok(out)
    }

    /// The feature maps a check of `records` needs (none without a feature).
    async fn catalog(&self, records: &Records, wanted: bool) -> Result<Catalog, StoreError> {
        if !wanted {
            return Ok(Catalog::new());
        }
        self.features.clone().catalog(records).await
    }

    /// The pure decision for `query`, under stale grace when Stripe could
    /// not be asked (`why`).
    fn judge(
        &self,
        records: &[CompactRecord],
        query: Query<'_>,
        catalog: &Catalog,
        why: Option<&str>,
    ) -> Decision {
        let now = self.clock.now_secs();
        let grace = self.staleness.stale_grace;
        let (p, product) = (&self.policy, query.product);
        match (query.feature, why) {
            (None, None) => policy::decide(records, now, p, product),
            (None, Some(why)) => {
                policy::decide_with_stale_grace(records, now, p, product, grace, why)
            }
            (Some(feature), why) => {
                let fq = FeatureQuery { feature, catalog };
                match why {
                    None => policy::decide_feature(records, now, p, product, fq),
                    Some(why) => policy::decide_feature_with_stale_grace(
                        records, now, p, product, fq, grace, why,
                    ),
                }
            }
        }
    }

    /// The decision from the records in hand; a denial goes on to
    /// [`Access::recheck`]. What only a feature check or a denial needs is
    /// boxed: inline, its futures would make every check's future several
    /// kilobytes, copied as it is built and moved (7% of the hot path's
    /// CPU went to `memmove`, measured).
    async fn decide(&self, subject: &Subject, query: Query<'_>) -> Result<Decision, AccessError> {
        let records = self.records(subject).await?;
        let catalog = match query.feature {
            Some(_) => Box::pin(self.catalog(&records, true)).await?,
            None => Catalog::new(),
        };
        let decision = self.judge(&records, query, &catalog, None);
        if decision.has_access {
            return Ok(decision);
        }
        Box::pin(self.recheck(subject, query, records, decision)).await
    }

    /// A local denial: Stripe is asked when the records may be stale (or
    /// there are none), and the decision made again.
    async fn recheck(
        &self,
        subject: &Subject,
        query: Query<'_>,
        records: Records,
        decision: Decision,
    ) -> Result<Decision, AccessError> {
        let wants_features = query.feature.is_some();
        if records.iter().all(|r| r.status().is_none()) {
            return self.discover(subject, query, decision).await;
        }

        let now = self.clock.now_secs();
        let stale: Vec<&str> = records
            .iter()
            .filter(|r| policy::matches_product(*r, query.product))
            .filter(|r| policy::needs_refresh(*r, now, &self.policy, self.staleness.stale_after))
            .map(|r| r.id())
            .collect();
        if stale.is_empty() {
            return Ok(decision);
        }
        let results =
            futures::future::join_all(stale.iter().map(|id| self.refresher.subscription(id))).await;
        let failure = results
            .into_iter()
            .find_map(Result::err)
            .map(|e| e.to_string());
        let records = self.records(subject).await?;
        let catalog = self.catalog(&records, wants_features).await?;
        Ok(self.judge(&records, query, &catalog, failure.as_deref()))
    }

    /// A customer with no local subscriptions: a missed
    /// `checkout.session.completed` or `customer.subscription.created` would
    /// look like this, so Stripe is asked, and a "none" is remembered.
    async fn discover(
        &self,
        subject: &Subject,
        query: Query<'_>,
        local: Decision,
    ) -> Result<Decision, AccessError> {
        let Subject::Customer(customer) = subject else {
            return Ok(local);
        };
        if self.cache.is_known_absent(customer) {
            return Ok(local);
        }
        match self.refresher.customer(customer).await {
            Ok(0) => {
                self.cache.remember_absent(customer);
                Ok(local)
            }
            Ok(_) => {
                let records = self.records(subject).await?;
                let catalog = self.catalog(&records, query.feature.is_some()).await?;
                Ok(self.judge(&records, query, &catalog, None))
            }
            Err(why) => Ok(Decision {
                detail: format!("{}; {why}", local.detail),
                ..local
            }),
        }
    }
}

/// Reads `subject`'s records from the store, compacted for the cache.
async fn load(store: &dyn Store, subject: &Subject) -> Result<Records, StoreError> {
    metrics::counter!(crate::metrics::SUBJECT_LOADS).increment(1);
    let records = match subject {
        Subject::User(id) => store.subscriptions_for_user(id).await?,
        Subject::Customer(id) => store.subscriptions_for_customer(id).await?,
    };
    Ok(compact::from_records(&records))
}
