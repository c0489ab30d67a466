//! What every write does around its commit: compare a customer's access
//! before and after, announce a change (and hold a revocation found only by
//! the reconciler, when configured), and after the commit drop every
//! touched subject from the cache, here and on other replicas.
//!
//! The ledger and the review workflow both write through this, so a change
//! of access is announced the same way whichever of them made it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::access_change::{self, AccessChange, Kind};
use crate::cache::SubjectCache;
use crate::clock::Clock;
use crate::outcome::ReviewReason;
use crate::policy::{self, Decision, Policy};
use crate::store::{NewReview, StoreError, Tx};
use crate::subject::Affected;
use crate::subscription::SubscriptionRecord;

/// A customer's access before a change, with the records it was decided
/// from ([`Changes::access_of`]).
pub struct Watched {
    pub customer: String,
    pub records: Vec<SubscriptionRecord>,
    pub before: Decision,
}

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
            .min()
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

    /// [`Changes::access`] of several customers (each once) in one read,
    /// with the records each was decided from, so that the caller can
    /// decide again once it knows how it changed them.
    pub async fn access_of(
        &self,
        tx: &mut dyn Tx,
        customers: &[&str],
    ) -> Result<Vec<Watched>, StoreError> {
        let at: HashMap<&str, usize> = customers.iter().enumerate().map(|(i, c)| (*c, i)).collect();
        let mut records: Vec<Vec<SubscriptionRecord>> = vec![Vec::new(); customers.len()];
        for record in tx.customers_records(customers).await? {
            if let Some(&i) = at.get(record.customer_id.as_str()) {
                records[i].push(record);
            }
        }
        let now = self.clock.now_secs();
        Ok(customers
            .iter()
            .zip(records)
            .map(|(customer, records)| Watched {
                customer: (*customer).to_owned(),
                before: policy::decide(&records, now, &self.policy, None),
                records,
            })
            .collect())
    }

    /// [`Changes::announce`] of changes the reconciler made to several
    /// customers (each once), where the caller knows each one's records
    /// after the change: each is decided in memory, and the notifications
    /// are queued with one read of their users and one insert. A
    /// revocation goes through [`Changes::announce`] alone, for its review.
    /// Returns how many notifications it queued.
    pub async fn announce_known(
        &self,
        tx: &mut dyn Tx,
        changed: &[(&Watched, Vec<SubscriptionRecord>)],
    ) -> Result<usize, StoreError> {
        let now = self.clock.now_secs();
        let mut queued = 0;
        let mut changes: Vec<(Kind, &Watched, Decision)> = Vec::new();
        for (watched, records) in changed {
            let after = policy::decide(records, now, &self.policy, None);
            if watched.before.has_access && !after.has_access {
                queued += usize::from(
                    self.announce(tx, &watched.customer, &watched.before, true)
                        .await?,
                );
            } else if let Some(kind) = access_change::change(&watched.before, &after) {
                changes.push((kind, watched, after));
            }
        }
        if changes.is_empty() {
            return Ok(queued);
        }
        let customers: Vec<&str> = changes
            .iter()
            .map(|(_, w, _)| w.customer.as_str())
            .collect();
        let users: HashMap<String, String> = tx
            .first_users_of_customers(&customers)
            .await?
            .into_iter()
            .collect();
        let notifications: Vec<AccessChange> = changes
            .iter()
            .map(|(kind, w, after)| {
                let user = users.get(&w.customer).map_or("", String::as_str);
                access_change::notification(*kind, &w.customer, user, &w.before, after)
            })
            .collect();
        for (id, customer) in tx
            .queue_notifications(&notifications, self.clock.now_ms())
            .await?
        {
            let kind = notifications
                .iter()
                .find(|n| n.customer_id == customer)
                .map_or("", |n| n.kind.as_str());
            tracing::info!(notification_id = id, customer, kind, "access change queued");
        }
        Ok(queued + notifications.len())
    }

    /// Adds every user linked to the touched customers, publishes the
    /// subjects to other replicas, commits, then invalidates them here:
    /// once per transaction, however many events it holds.
    pub async fn commit(&self, tx: Box<dyn Tx>, affected: Affected) -> Result<(), StoreError> {
        let users = tx.publish_and_commit(&affected).await?;
        self.written(affected, users);
        Ok(())
    }

    /// After a write that committed on its own and published `affected`
    /// (reading `users` for its customers): invalidates them here.
    pub fn written(&self, mut affected: Affected, users: Vec<String>) {
        for user in &users {
            affected.add_user(user);
        }
        self.cache.invalidate(&affected);
    }

    /// [`Changes::commit`] of a transaction that published `affected`
    /// already, `users` being the users it read for the customers.
    pub async fn commit_published(
        &self,
        tx: Box<dyn Tx>,
        affected: Affected,
        users: Vec<String>,
    ) -> Result<(), StoreError> {
        tx.commit().await?;
        self.written(affected, users);
        Ok(())
    }
}
