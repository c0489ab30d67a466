//! The manual-review workflow: what a follow-up read of Stripe found, and
//! resolving a review (which lifts any revocation it held).

use std::sync::Arc;

use crate::changes::Changes;
use crate::clock::Clock;
use crate::outcome::ReviewReason;
use crate::store::{NewAudit, NewReview, ReviewFilter, Store, StoreError};
use crate::subject::Affected;

pub struct Reviews {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    changes: Arc<Changes>,
}

impl Reviews {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, changes: Arc<Changes>) -> Self {
        Reviews {
            store,
            clock,
            changes,
        }
    }

    /// Adds what a follow-up refresh found to a review record.
    pub async fn note_outcome(&self, review_id: i64, outcome: &str) -> Result<(), StoreError> {
        let mut tx = self.store.begin().await?;
        tx.note_review_outcome(review_id, outcome).await?;
        tx.commit().await
    }

    /// Resolves a review and lifts any hold it placed; false if it was not
    /// open. A lifted hold that ends access is announced like any change.
    pub async fn resolve(&self, review_id: i64, resolution: &str) -> Result<bool, StoreError> {
        self.resolve_recorded(review_id, resolution, None).await
    }

    /// [`Reviews::resolve`], with the admin's audit entry written in the
    /// same transaction: both commit, or neither.
    pub async fn resolve_recorded(
        &self,
        review_id: i64,
        resolution: &str,
        audit: Option<&NewAudit<'_>>,
    ) -> Result<bool, StoreError> {
        let customer = self.store.get_review(review_id).await?.map(|r| r.subject);
        let mut tx = self.store.begin().await?;
        let before = match &customer {
            Some(c) => Some(self.changes.access(&mut *tx, c).await?),
            None => None,
        };
        if !tx
            .resolve_review(review_id, resolution, self.clock.now_ms())
            .await?
        {
            tx.rollback().await?;
            return Ok(false);
        }
        if let Some(entry) = audit {
            tx.record_audit(entry).await?;
        }
        let mut affected = Affected::default();
        for released in tx.release_holds(review_id).await? {
            affected.add_customer(&released);
        }
        if let (Some(customer), Some(before)) = (customer, before) {
            if !affected.is_empty() {
                self.changes
                    .announce(&mut *tx, &customer, &before, false)
                    .await?;
            }
        }
        self.changes.commit(tx, affected).await?;
        Ok(true)
    }

    /// Flags a customer no user is linked to, once while the review is open.
    pub async fn flag_unlinked_customer(
        &self,
        customer: &str,
        subscription_id: &str,
    ) -> Result<(), StoreError> {
        let open = self
            .store
            .find_reviews(&ReviewFilter {
                open: Some(true),
                subject: Some(customer.to_owned()),
                limit: 100,
                reason: None,
                before_id: None,
            })
            .await?;
        if open
            .iter()
            .any(|r| r.reason == ReviewReason::CustomerWithoutUser.as_str())
        {
            return Ok(());
        }
        let mut tx = self.store.begin().await?;
        tx.flag_review(&NewReview {
            subject: customer,
            subscription_id: Some(subscription_id),
            event_id: None,
            reason: ReviewReason::CustomerWithoutUser,
            details: "no product user is linked to this customer (no checkout client_reference_id or user id metadata seen)",
            created_at_ms: self.clock.now_ms(),
        })
        .await?;
        tx.commit().await
    }
}
