//! HasAccess in domain terms: the subject's records (from the cache, else the
//! store), the pure decision, and a refresh from Stripe when a denial rests
//! on stale data.
//!
//! A paying user is never locked out because a webhook went missing: when
//! local data would deny access the subject may still have and Tollgate has
//! not heard from Stripe about it for `stale_after`, Stripe is asked (at most
//! `refresh_timeout`). If Stripe cannot answer, access continues as
//! `STALE_GRACE` until `stale_grace` after local data says it ended.

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{Records, SubjectCache};
use crate::clock::Clock;
use crate::policy::{self, Decision, Policy};
use crate::refresh::Refresher;
use crate::store::{Store, StoreError};
use crate::subject::{Subject, SubjectError};

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
    policy: Policy,
    staleness: Staleness,
}

impl Access {
    pub fn new(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        cache: Arc<SubjectCache>,
        refresher: Arc<Refresher>,
        policy: Policy,
        staleness: Staleness,
    ) -> Self {
        Access {
            store,
            clock,
            cache,
            refresher,
            policy,
            staleness,
        }
    }

    /// The subject's records: from memory when cached, else from the store.
    async fn records(&self, subject: &Subject) -> Result<Records, StoreError> {
        if let Some(records) = self.cache.get(subject) {
            metrics::counter!(crate::metrics::CACHE_HITS).increment(1);
            return Ok(records);
        }
        metrics::counter!(crate::metrics::CACHE_MISSES).increment(1);
        let ticket = self.cache.ticket(subject);
        let loaded = Arc::new(match subject {
            Subject::User(id) => self.store.subscriptions_for_user(id).await?,
            Subject::Customer(id) => self.store.subscriptions_for_customer(id).await?,
        });
        self.cache.insert(subject.clone(), ticket, loaded.clone());
        Ok(loaded)
    }

    /// Decides access for `subject`, refreshing stale denials from Stripe.
    pub async fn has_access(
        &self,
        subject: &Subject,
        product: Option<&str>,
    ) -> Result<Decision, AccessError> {
        let started = std::time::Instant::now();
        let span = tracing::debug_span!("has_access", ?subject, reason = tracing::field::Empty);
        let decision =
            tracing::Instrument::instrument(self.decide(subject, product), span.clone()).await?;
        span.record("reason", decision.reason.as_str());
        metrics::histogram!(crate::metrics::HAS_ACCESS_SECONDS)
            .record(started.elapsed().as_secs_f64());
        metrics::counter!(crate::metrics::HAS_ACCESS, "reason" => decision.reason.as_str())
            .increment(1);
        Ok(decision)
    }

    async fn decide(
        &self,
        subject: &Subject,
        product: Option<&str>,
    ) -> Result<Decision, AccessError> {
        let records = self.records(subject).await?;
        let decision = policy::decide(&records, self.clock.now_secs(), &self.policy, product);
        if decision.has_access {
            return Ok(decision);
        }
        if records.iter().all(|r| r.status.is_none()) {
            return self.discover(subject, product, decision).await;
        }

        let now = self.clock.now_secs();
        let stale: Vec<&str> = records
            .iter()
            .filter(|r| policy::matches_product(r, product))
            .filter(|r| policy::needs_refresh(r, now, &self.policy, self.staleness.stale_after))
            .map(|r| r.id.as_str())
            .collect();
        if stale.is_empty() {
            return Ok(decision);
        }
        let results =
            futures::future::join_all(stale.iter().map(|id| self.refresher.subscription(id))).await;
        let failure = results.into_iter().find_map(Result::err);
        let records = self.records(subject).await?;
        Ok(match failure {
            None => policy::decide(&records, self.clock.now_secs(), &self.policy, product),
            Some(why) => policy::decide_with_stale_grace(
                &records,
                self.clock.now_secs(),
                &self.policy,
                product,
                self.staleness.stale_grace,
                &why.to_string(),
            ),
        })
    }

    /// A customer with no local subscriptions: a missed
    /// `checkout.session.completed` or `customer.subscription.created` would
    /// look like this, so Stripe is asked, and a "none" is remembered.
    async fn discover(
        &self,
        subject: &Subject,
        product: Option<&str>,
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
                Ok(policy::decide(
                    &records,
                    self.clock.now_secs(),
                    &self.policy,
                    product,
                ))
            }
            Err(why) => Ok(Decision {
                detail: format!("{}; {why}", local.detail),
                ..local
            }),
        }
    }
}
