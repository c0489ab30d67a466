//! What every write does around its commit: compare a customer's access
//! before and after, announce a change (and hold a revocation found only by
//! the reconciler, when configured), and after the commit drop every
//! touched subject from the cache, here and on other replicas.
//!
//! The ledger and the review workflow both write through this, so a change
//! of access is announced the same way whichever of them made it.

use std::sync::Arc;

use crate::access_change;
use crate::cache::SubjectCache;
use crate::clock::Clock;
use crate::outcome::ReviewReason;
use crate::policy::{self, Decision, Policy};
use crate::store::{NewReview, StoreError, Tx};
use crate::subject::Affected;

pub struct Changes {
    clock: Arc<dyn Clock>,
    /// Invalidated after every commit, before the caller answers anyone.
    cache: Arc<SubjectCache>,
    /// Tells whether a change altered access.
    policy: Policy,
    /// Keep access on revocations found only by the reconciler until an
    /// admin resolves the review.
    hold_revocations: bool,
}

impl Changes {
    pub fn new(
        clock: Arc<dyn Clock>,
        cache: Arc<SubjectCache>,
        policy: Policy,
        hold_revocations: bool,
    ) -> Self {
        Changes {
            clock,
            cache,
            policy,
            hold_revocations,
        }
    }

    /// The customer's access as stored in `tx`, right now.
    pub async fn access(&self, tx: &mut dyn Tx, customer: &str) -> Result<Decision, StoreError> {
        let records = tx.customer_records(customer).await?;
        Ok(policy::decide(
            &records,
            self.clock.now_secs(),
            &self.policy,
            None,
        ))
    }

    /// After a change: flags (and, when configured, holds) a revocation
    /// found only by the reconciler, and queues a notification when access
    /// changed since `before`. Returns whether it queued one.
    pub async fn announce(
        &self,
        tx: &mut dyn Tx,
        customer: &str,
        before: &Decision,
        by_reconciler: bool,
    ) -> Result<bool, StoreError> {
        let mut after = self.access(tx, customer).await?;
        if by_reconciler && before.has_access && !after.has_access {
            let details = format!(
                "the reconciler found access revoked without a webhook: {} -> {}",
                before.detail, after.detail
            );
            let review_id = tx
                .flag_review(&NewReview {
                    subject: customer,
                    subscription_id: Some(&before.subscription_id),
                    event_id: None,
                    reason: ReviewReason::RevocationByReconciler,
                    details: &details,
                    created_at_ms: self.clock.now_ms(),
                })
                .await?;
            tracing::warn!(
                customer,
                review_id,
                hold = self.hold_revocations,
                "revocation found only by the reconciler"
            );
            if self.hold_revocations {
                tx.set_hold(&before.subscription_id, review_id).await?;
                after = self.access(tx, customer).await?;
            }
        }
        let Some(kind) = access_change::change(before, &after) else {
            return Ok(false);
        };
        let user = tx
            .users_of_customer(customer)
            .await?
            .into_iter()
            .next()
            .unwrap_or_default();
        let change = access_change::notification(kind, customer, &user, before, &after);
        let id = tx.queue_notification(&change, self.clock.now_ms()).await?;
        tracing::info!(
            notification_id = id,
            customer,
            kind = kind.as_str(),
            "access change queued"
        );
        Ok(true)
    }

    /// Adds every user linked to the touched customers, publishes the
    /// subjects to other replicas, commits, then invalidates them here:
    /// once per transaction, however many events it holds.
    pub async fn commit(
        &self,
        mut tx: Box<dyn Tx>,
        mut affected: Affected,
    ) -> Result<(), StoreError> {
        if !affected.is_empty() {
            for user in tx.publish_with_users(&affected).await? {
                affected.add_user(&user);
            }
        }
        tx.commit().await?;
        self.cache.invalidate(&affected);
        Ok(())
    }
}
