//! Admin operations in domain terms: manual review, event forensics,
//! on-demand repair and the notification queue. The gRPC `Admin` service
//! (see [`crate::grpc`]) only converts messages and calls these.

use std::sync::Arc;

use crate::access::{Access, AccessError};
use crate::clock::Clock;
use crate::ledger::{Ledger, ReadOrigin, ReplayError};
use crate::policy::Decision;
use crate::reconciler::{PassReport, ReconcileError, Reconciler};
use crate::refresh::Refresher;
use crate::reviews::Reviews;
use crate::store::{
    AuditRow, EventRow, NewAudit, NotificationRow, ReviewFilter, ReviewRow, Store, StoreError,
};
use crate::stripe::NotConfigured;
use crate::subject::{Subject, SubjectError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<ReplayError> for AdminError {
    fn from(e: ReplayError) -> Self {
        match e {
            ReplayError::NotFound => AdminError::NotFound(e.to_string()),
            ReplayError::NotFailed(_) => AdminError::FailedPrecondition(e.to_string()),
            ReplayError::StripeUnavailable(_) => AdminError::Unavailable(e.to_string()),
            ReplayError::Store(s) => AdminError::Store(s),
        }
    }
}

impl From<ReconcileError> for AdminError {
    fn from(e: ReconcileError) -> Self {
        match e {
            ReconcileError::Store(s) => AdminError::Store(s),
            other => AdminError::Unavailable(other.to_string()),
        }
    }
}

impl From<SubjectError> for AdminError {
    fn from(e: SubjectError) -> Self {
        AdminError::InvalidArgument(e.to_string())
    }
}

impl From<AccessError> for AdminError {
    fn from(e: AccessError) -> Self {
        match e {
            AccessError::Subject(e) => e.into(),
            AccessError::Store(s) => AdminError::Store(s),
        }
    }
}

/// How to resolve a review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    /// Keep the state as it is.
    Accept,
    /// Re-read the subscription from Stripe, then resolve.
    Refresh,
}

pub struct Admin {
    pub ledger: Arc<Ledger>,
    pub reviews: Arc<Reviews>,
    /// Read directly for lists and look-ups.
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub refresher: Arc<Refresher>,
    pub reconciler: Arc<Reconciler>,
    pub access: Arc<Access>,
}

fn clamp_limit(limit: i32) -> i64 {
    if limit <= 0 {
        100
    } else {
        i64::from(limit.min(1000))
    }
}

impl Admin {
    pub async fn list_reviews(
        &self,
        open: Option<bool>,
        subject: &str,
        limit: i32,
    ) -> Result<Vec<ReviewRow>, AdminError> {
        let filter = ReviewFilter {
            open,
            subject: Some(subject.trim().to_owned()).filter(|s| !s.is_empty()),
            limit: clamp_limit(limit),
            reason: None,
            before_id: None,
        };
        Ok(self.store.find_reviews(&filter).await?)
    }

    pub async fn resolve_review(
        &self,
        id: i64,
        note: &str,
        action: Resolution,
    ) -> Result<ReviewRow, AdminError> {
        self.resolve_review_recorded(id, note, action, None).await
    }

    /// [`Admin::resolve_review`], with an audit entry committed together
    /// with the resolution.
    pub async fn resolve_review_recorded(
        &self,
        id: i64,
        note: &str,
        action: Resolution,
        audit: Option<&NewAudit<'_>>,
    ) -> Result<ReviewRow, AdminError> {
        let store = &self.store;
        let review = store
            .get_review(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no review {id}")))?;
        if review.resolved_at_ms.is_some() {
            return Err(AdminError::FailedPrecondition(format!(
                "review {id} is already resolved"
            )));
        }
        let resolution = match action {
            Resolution::Accept => format!("accepted: {note}"),
            Resolution::Refresh => {
                let sub = review.subscription_id.as_deref().ok_or_else(|| {
                    AdminError::FailedPrecondition(format!(
                        "review {id} names no subscription to refresh"
                    ))
                })?;
                let applied = self
                    .refresher
                    .read_subscription(sub, ReadOrigin::Refresh)
                    .await
                    .map_err(|e| AdminError::Unavailable(format!("refresh failed: {e}")))?;
                format!("refreshed (stripe says {}): {note}", applied.status)
            }
        };
        if !self
            .reviews
            .resolve_recorded(id, resolution.trim_end_matches([':', ' ']), audit)
            .await?
        {
            return Err(AdminError::FailedPrecondition(format!(
                "review {id} is already resolved"
            )));
        }
        tracing::info!(review_id = id, ?action, "review resolved");
        store
            .get_review(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no review {id}")))
    }

    /// Re-reads a review's subscription from Stripe and notes what Stripe
    /// said on the review, which stays open; returns the note.
    pub async fn refresh_review(&self, id: i64) -> Result<String, AdminError> {
        let review = self
            .store
            .get_review(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no review {id}")))?;
        let sub = review.subscription_id.as_deref().ok_or_else(|| {
            AdminError::FailedPrecondition(format!("review {id} names no subscription to refresh"))
        })?;
        let note = match self
            .refresher
            .read_subscription(sub, ReadOrigin::Refresh)
            .await
        {
            Ok(applied) => crate::refresh::describe(&applied),
            Err(e) => format!("refresh failed: {e}"),
        };
        self.reviews.note_outcome(id, &note).await?;
        tracing::info!(review_id = id, "review refreshed by admin");
        Ok(note)
    }

    pub async fn get_event(&self, id: &str) -> Result<EventRow, AdminError> {
        self.store
            .get_event(id.trim())
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no event {id} was received")))
    }

    pub async fn replay_event(&self, id: &str) -> Result<EventRow, AdminError> {
        let replayed = self.ledger.replay(id.trim()).await?;
        tracing::info!(
            event_id = id,
            outcome = replayed.outcome.as_str(),
            "replayed by admin"
        );
        // Exactly as after a first delivery: an anomaly found again is
        // checked against Stripe again.
        self.refresher.follow_up(replayed.follow_up);
        self.get_event(id).await
    }

    /// Re-reads every subscription of the subject from Stripe, then answers
    /// HasAccess with the fresh data.
    pub async fn refresh_subject(
        &self,
        user_id: &str,
        customer_id: &str,
    ) -> Result<(usize, Decision), AdminError> {
        let subject = Subject::from_parts(user_id, customer_id)?;
        if !self.refresher.configured() {
            return Err(AdminError::Unavailable(NotConfigured.to_string()));
        }
        let store = &self.store;
        let records = match &subject {
            Subject::User(u) => store.subscriptions_for_user(u).await?,
            Subject::Customer(c) => store.subscriptions_for_customer(c).await?,
        };
        let mut refreshed = 0;
        if let (Subject::Customer(c), true) = (&subject, records.is_empty()) {
            refreshed = self
                .refresher
                .customer(c)
                .await
                .map_err(|e| AdminError::Unavailable(format!("refresh failed: {e}")))?;
        }
        for record in &records {
            self.refresher
                .read_subscription(&record.id, ReadOrigin::Refresh)
                .await
                .map_err(|e| {
                    AdminError::Unavailable(format!("refresh of {} failed: {e}", record.id))
                })?;
            refreshed += 1;
        }
        let decision = self
            .access
            .has_access(&subject, crate::access::Query::default())
            .await?;
        Ok((refreshed, decision))
    }

    pub async fn reconcile(&self) -> Result<PassReport, AdminError> {
        Ok(self.reconciler.run_once(true).await?)
    }

    pub async fn list_notifications(
        &self,
        cursor: i64,
        limit: i32,
        include_acked: bool,
    ) -> Result<Vec<NotificationRow>, AdminError> {
        Ok(self
            .store
            .list_notifications(cursor.max(0), clamp_limit(limit), include_acked)
            .await?)
    }

    /// What was done through the admin console, newest first.
    pub async fn list_audit(
        &self,
        target: &str,
        before_id: i64,
        limit: i32,
    ) -> Result<Vec<AuditRow>, AdminError> {
        let target = Some(target.trim()).filter(|t| !t.is_empty());
        Ok(self
            .store
            .list_audit(target, before_id.max(0), clamp_limit(limit))
            .await?)
    }

    pub async fn ack_notifications(&self, ids: &[i64]) -> Result<usize, AdminError> {
        if ids.len() > 1000 {
            return Err(AdminError::InvalidArgument(
                "ack at most 1000 ids at once".into(),
            ));
        }
        let mut acked = 0;
        for id in ids {
            if self
                .store
                .ack_notification(*id, self.clock.now_ms())
                .await?
            {
                acked += 1;
            }
        }
        Ok(acked)
    }
}
