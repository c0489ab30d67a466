//! What the admin console shows and does, in domain terms: pages composed
//! from the store, HasAccess and the reconciler's progress, and each action
//! run through [`Admin`] with an entry in the audit log.
//!
//! Nothing here decides anything: a subject's answer is what
//! [`crate::access::Access::has_access`] says, and actions are
//! [`Admin`]'s. A resolution (and a released hold) commits together with
//! its audit entry; a refresh or a replay runs through the ledger's own
//! transactions, so its entry is written right after it succeeds.

use std::sync::Arc;

use crate::admin::{Admin, AdminError, Resolution};
use crate::policy::Decision;
use crate::store::{
    AuditRow, EventRow, NewAudit, NotificationRow, ReviewFilter, ReviewRow, StoreError,
};
use crate::subject::Subject;
use crate::subscription::SubscriptionRecord;

/// Rows on one page of a list.
pub const PAGE_SIZE: i64 = 50;

/// Most events shown on a subscription's timeline.
const TIMELINE_LIMIT: i64 = 200;

/// The overview: the same sizes `/metrics` reports, and the reconciler's
/// progress.
#[derive(Debug, Clone)]
pub struct Overview {
    /// Open reviews per reason, most first.
    pub open_reviews: Vec<(String, i64)>,
    pub failed_events_24h: i64,
    pub queued_notifications: i64,
    pub dead_notifications: i64,
    /// When this process last finished a reconcile pass (unix seconds).
    pub reconciler_last_run: Option<i64>,
    /// Seconds between that pass and the newest event it saw.
    pub reconciler_lag_secs: Option<i64>,
    /// When the last drift sweep finished (unix seconds), any replica.
    pub last_sweep: Option<i64>,
    pub now: i64,
}

/// Everything the review page shows.
#[derive(Debug)]
pub struct ReviewPage {
    pub review: ReviewRow,
    /// Who HasAccess is asked about.
    pub subject: Option<Subject>,
    /// HasAccess's answer now, or why it could not be given.
    pub access: Result<Decision, String>,
    /// The subscription's record, when the review names one Tollgate has.
    pub subscription: Option<SubscriptionRecord>,
    /// Whether this review holds a revocation of that subscription.
    pub holds_revocation: bool,
    /// Events naming the subscription, newest first.
    pub timeline: Vec<EventRow>,
    pub audit: Vec<AuditRow>,
}

/// Everything the event page shows.
#[derive(Debug)]
pub struct EventPage {
    pub event: EventRow,
    /// The payload as received, indented (Stripe's event bodies carry no
    /// secrets: the signing secret never travels in them).
    pub payload: String,
    pub audit: Vec<AuditRow>,
}

/// Everything the subject page shows.
#[derive(Debug)]
pub struct SubjectPage {
    pub subject: Subject,
    pub access: Result<Decision, String>,
    /// ListEntitlements's answer: each feature known for the subject's
    /// products, decided as HasAccess(feature) decides it.
    pub entitlements: Result<Vec<(String, Decision)>, String>,
    pub subscriptions: Vec<SubscriptionRecord>,
    pub notifications: Vec<NotificationRow>,
}

pub struct Oversight {
    admin: Arc<Admin>,
}

/// The audit target of a review.
pub fn review_target(id: i64) -> String {
    format!("review:{id}")
}

/// The audit target of an event.
pub fn event_target(id: &str) -> String {
    format!("event:{id}")
}

impl Oversight {
    pub fn new(admin: Arc<Admin>) -> Self {
        Oversight { admin }
    }

    pub async fn overview(&self) -> Result<Overview, AdminError> {
        let store = &self.admin.store;
        let now_ms = self.admin.clock.now_ms();
        let counts = store.counts().await?;
        let progress = crate::reconciler::Progress::new(store.clone());
        Ok(Overview {
            open_reviews: store.open_reviews_by_reason().await?,
            failed_events_24h: store.failed_events_since(now_ms - 86_400_000).await?,
            queued_notifications: counts.queued_notifications,
            dead_notifications: counts.dead_notifications,
            reconciler_last_run: gauge(crate::metrics::RECONCILER_LAST_RUN),
            reconciler_lag_secs: gauge(crate::metrics::RECONCILER_LAG),
            last_sweep: progress.last_sweep().await?,
            now: now_ms / 1000,
        })
    }

    /// A page of reviews, newest first.
    pub async fn reviews(
        &self,
        open: Option<bool>,
        reason: Option<&str>,
        before_id: Option<i64>,
    ) -> Result<Vec<ReviewRow>, AdminError> {
        Ok(self
            .admin
            .store
            .find_reviews(&ReviewFilter {
                open,
                subject: None,
                limit: PAGE_SIZE,
                reason: reason.map(str::to_owned),
                before_id,
            })
            .await?)
    }

    pub async fn review_page(&self, id: i64) -> Result<ReviewPage, AdminError> {
        let store = &self.admin.store;
        let review = store
            .get_review(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no review {id}")))?;
        let subject = subject_of(&review.subject);
        let records = match &subject {
            Some(Subject::Customer(c)) => store.subscriptions_for_customer(c).await?,
            Some(Subject::User(u)) => store.subscriptions_for_user(u).await?,
            None => Vec::new(),
        };
        let subscription = review
            .subscription_id
            .as_deref()
            .and_then(|s| records.into_iter().find(|r| r.id == s));
        let timeline = match review.subscription_id.as_deref() {
            Some(s) => store.events_for_subscription(s, TIMELINE_LIMIT).await?,
            None => Vec::new(),
        };
        let access = match &subject {
            Some(s) => self.access(s).await?,
            None => Err(format!("{:?} is not a user or customer id", review.subject)),
        };
        Ok(ReviewPage {
            holds_revocation: subscription
                .as_ref()
                .is_some_and(|s| s.hold_review_id == Some(id)),
            audit: store
                .list_audit(Some(&review_target(id)), 0, PAGE_SIZE)
                .await?,
            review,
            subject,
            access,
            subscription,
            timeline,
        })
    }

    pub async fn event_page(&self, id: &str) -> Result<EventPage, AdminError> {
        let event = self.admin.get_event(id).await?;
        let raw = self
            .admin
            .store
            .event_payload(&event.id)
            .await?
            .unwrap_or_default();
        let payload = serde_json::from_str::<serde_json::Value>(&raw)
            .ok()
            .and_then(|v| serde_json::to_string_pretty(&v).ok())
            .unwrap_or(raw);
        let audit = self
            .admin
            .store
            .list_audit(Some(&event_target(&event.id)), 0, PAGE_SIZE)
            .await?;
        Ok(EventPage {
            event,
            payload,
            audit,
        })
    }

    pub async fn subject_page(
        &self,
        user_id: &str,
        customer_id: &str,
    ) -> Result<SubjectPage, AdminError> {
        let subject = Subject::from_parts(user_id, customer_id)?;
        let store = &self.admin.store;
        let (subscriptions, id) = match &subject {
            Subject::User(u) => (store.subscriptions_for_user(u).await?, u),
            Subject::Customer(c) => (store.subscriptions_for_customer(c).await?, c),
        };
        let entitlements = match self.admin.access.entitlements(&subject).await {
            Ok(listed) => Ok(listed),
            Err(crate::access::AccessError::Store(e)) => return Err(e.into()),
            Err(e) => Err(e.to_string()),
        };
        Ok(SubjectPage {
            access: self.access(&subject).await?,
            entitlements,
            notifications: store.notifications_about(id, PAGE_SIZE).await?,
            subscriptions,
            subject,
        })
    }

    /// HasAccess's answer; a store failure is an error, anything else about
    /// the question is shown as the answer's absence.
    async fn access(&self, subject: &Subject) -> Result<Result<Decision, String>, AdminError> {
        match self
            .admin
            .access
            .has_access(subject, crate::access::Query::default())
            .await
        {
            Ok(d) => Ok(Ok(d)),
            Err(crate::access::AccessError::Store(e)) => Err(e.into()),
            Err(e) => Ok(Err(e.to_string())),
        }
    }

    // Actions.

    /// Resolves a review, keeping the state as it is.
    pub async fn resolve(&self, actor: &str, id: i64, note: &str) -> Result<ReviewRow, AdminError> {
        let target = review_target(id);
        let entry = self.entry(actor, "resolve", &target, note);
        self.admin
            .resolve_review_recorded(id, note, Resolution::Accept, Some(&entry))
            .await
    }

    /// Lets a revocation the review holds take effect, by resolving the
    /// review (which releases its holds).
    pub async fn release_hold(
        &self,
        actor: &str,
        id: i64,
        note: &str,
    ) -> Result<ReviewRow, AdminError> {
        if !self.review_page_holds(id).await? {
            return Err(AdminError::FailedPrecondition(format!(
                "review {id} holds no revocation"
            )));
        }
        let target = review_target(id);
        let note = format!("released the held revocation: {note}");
        let entry = self.entry(actor, "release_hold", &target, &note);
        self.admin
            .resolve_review_recorded(id, &note, Resolution::Accept, Some(&entry))
            .await
    }

    async fn review_page_holds(&self, id: i64) -> Result<bool, AdminError> {
        let store = &self.admin.store;
        let review = store
            .get_review(id)
            .await?
            .ok_or_else(|| AdminError::NotFound(format!("no review {id}")))?;
        let (Some(sub), Some(subject)) = (review.subscription_id, subject_of(&review.subject))
        else {
            return Ok(false);
        };
        let records = match subject {
            Subject::Customer(c) => store.subscriptions_for_customer(&c).await?,
            Subject::User(u) => store.subscriptions_for_user(&u).await?,
        };
        Ok(records
            .iter()
            .any(|r| r.id == sub && r.hold_review_id == Some(id)))
    }

    /// Re-reads the review's subscription from Stripe; returns what Stripe
    /// said (also noted on the review). Audited right after.
    pub async fn refresh(&self, actor: &str, id: i64) -> Result<String, AdminError> {
        let outcome = self.admin.refresh_review(id).await?;
        self.record_after(actor, "refresh", &review_target(id), &outcome)
            .await?;
        Ok(outcome)
    }

    /// Replays a failed event; from a review's page the entry goes on the
    /// review. Audited right after.
    pub async fn replay(
        &self,
        actor: &str,
        event_id: &str,
        review: Option<i64>,
    ) -> Result<EventRow, AdminError> {
        let event = self.admin.replay_event(event_id).await?;
        let target = review.map_or_else(|| event_target(&event.id), review_target);
        let note = match &event.error {
            Some(e) => format!("replayed {}: {} ({e})", event.id, event.outcome),
            None => format!("replayed {}: {}", event.id, event.outcome),
        };
        self.record_after(actor, "replay", &target, &note).await?;
        Ok(event)
    }

    fn entry<'a>(
        &self,
        actor: &'a str,
        action: &'a str,
        target: &'a str,
        note: &'a str,
    ) -> NewAudit<'a> {
        NewAudit {
            at_ms: self.admin.clock.now_ms(),
            actor,
            action,
            target,
            note,
        }
    }

    /// Writes the entry of an action that committed on its own.
    async fn record_after(
        &self,
        actor: &str,
        action: &str,
        target: &str,
        note: &str,
    ) -> Result<(), StoreError> {
        let entry = self.entry(actor, action, target, note);
        let written = async {
            let mut tx = self.admin.store.begin().await?;
            tx.record_audit(&entry).await?;
            tx.commit().await
        }
        .await;
        if let Err(e) = &written {
            tracing::error!(action, target, error = %e, "action done but its audit entry was not written");
        }
        written
    }
}

/// A review's subject as HasAccess takes it: Stripe customer ids (and
/// Accounts v2 `acct_` ids) are customers, anything else a user.
fn subject_of(subject: &str) -> Option<Subject> {
    let s = subject.trim();
    if s.starts_with("cus_") || s.starts_with("acct_") {
        Subject::from_parts("", s).ok()
    } else {
        Subject::from_parts(s, "").ok()
    }
}

/// The value of a gauge this process exports at `/metrics`.
fn gauge(name: &str) -> Option<i64> {
    crate::metrics::handle()
        .render()
        .lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .parse::<f64>()
                .ok()
        })
        .map(|v| v as i64)
}
