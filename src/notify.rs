//! Notifications: access changes found by the reconciler or a refresh,
//! queued in an outbox in the same transaction as the change, then pulled
//! over gRPC or pushed over HTTP.
//!
//! Push uses Stripe's own signing scheme (`Tollgate-Signature:
//! t=...,v1=...`, HMAC-SHA256 of `"{t}.{body}"`), so receivers can reuse
//! Stripe's verification code. Each notification is delivered at least once;
//! receivers deduplicate on its `id`. Attempts are leased rows, so two
//! dispatchers (replicas) never send the same attempt.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::policy::Decision;
use crate::signature;
use crate::store::{
    now_ms, NewNotification, NewReview, NotificationRow, ReviewReason, Store, StoreError,
};

/// What kind of access change happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Denied before, granted now.
    Restored,
    /// Granted before, denied now.
    Revoked,
    /// Granted before and now, until a different time.
    Changed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Restored => "ACCESS_RESTORED",
            Kind::Revoked => "ACCESS_REVOKED",
            Kind::Changed => "ACCESS_CHANGED",
        }
    }
}

/// The change between two decisions taken at the same instant, if any.
pub fn change(before: &Decision, after: &Decision) -> Option<Kind> {
    match (before.has_access, after.has_access) {
        (false, true) => Some(Kind::Restored),
        (true, false) => Some(Kind::Revoked),
        (true, true) if before.access_until != after.access_until => Some(Kind::Changed),
        _ => None,
    }
}

/// The notification for a change of `customer_id`'s access.
pub fn notification(
    kind: Kind,
    customer_id: &str,
    user_id: &str,
    before: &Decision,
    after: &Decision,
) -> NewNotification {
    let status = |d: &Decision| d.status.map(|s| s.as_str().to_owned()).unwrap_or_default();
    NewNotification {
        kind: kind.as_str(),
        user_id: user_id.to_owned(),
        customer_id: customer_id.to_owned(),
        subscription_id: if after.subscription_id.is_empty() {
            before.subscription_id.clone()
        } else {
            after.subscription_id.clone()
        },
        old_status: status(before),
        new_status: status(after),
        old_access: before.has_access,
        new_access: after.has_access,
        old_access_until: before.access_until,
        new_access_until: after.access_until,
        reason: after.reason.as_str().to_owned(),
        created_at_ms: now_ms(),
    }
}

/// Push settings.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub url: String,
    pub secret: String,
    /// First retry delay; doubles per attempt, capped at 10 minutes.
    pub backoff: Duration,
    pub max_attempts: u32,
}

const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long one push attempt owns its row before another dispatcher may
/// retry it (only after a crash: a finished attempt releases it).
const LEASE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(200);

/// Delay before attempt `attempts + 1`, after `attempts` failures.
pub fn retry_delay(base: Duration, attempts: u32) -> Duration {
    let factor = 2u32.saturating_pow(attempts.saturating_sub(1));
    base.saturating_mul(factor).min(MAX_BACKOFF)
}

pub struct Dispatcher {
    store: Arc<dyn Store>,
    options: PushOptions,
    http: reqwest::Client,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, options: PushOptions) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("BUG: reqwest client builds with static settings");
        Dispatcher {
            store,
            options,
            http,
        }
    }

    /// Pushes due notifications until `stop` is cancelled.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        tracing::info!("notification dispatcher started");
        loop {
            let sent = match self.dispatch_due().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "notification dispatch failed; retrying");
                    0
                }
            };
            if sent == 0 {
                tokio::select! {
                    () = stop.cancelled() => break,
                    () = tokio::time::sleep(POLL) => {}
                }
            } else if stop.is_cancelled() {
                break;
            }
        }
        tracing::info!("notification dispatcher stopped");
    }

    /// One round: claims due notifications and attempts each once.
    pub async fn dispatch_due(&self) -> Result<usize, StoreError> {
        let lease = i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
        let due = self.store.claim_notifications(now_ms(), lease, 32).await?;
        let count = due.len();
        for n in due {
            self.attempt(n).await?;
        }
        Ok(count)
    }

    async fn attempt(&self, n: NotificationRow) -> Result<(), StoreError> {
        let body = serde_json::to_vec(&n).expect("BUG: notifications serialize");
        let header = signature::header_for(&self.options.secret, crate::access::now_secs(), &body);
        let result = self
            .http
            .post(&self.options.url)
            .header("content-type", "application/json")
            .header("Tollgate-Signature", header)
            .body(body)
            .send()
            .await;
        let error = match result {
            Ok(resp) if resp.status().is_success() => {
                self.store.ack_notification(n.id, now_ms()).await?;
                tracing::info!(
                    notification_id = n.id,
                    attempt = n.attempts,
                    "notification delivered"
                );
                return Ok(());
            }
            Ok(resp) => format!("receiver answered {}", resp.status().as_u16()),
            Err(e) if e.is_timeout() => "receiver timed out".to_owned(),
            Err(e) => format!("receiver unreachable: {}", e.without_url()),
        };
        let attempts = u32::try_from(n.attempts).unwrap_or(u32::MAX);
        let dead = attempts >= self.options.max_attempts;
        let delay = retry_delay(self.options.backoff, attempts);
        let next = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        tracing::warn!(notification_id = n.id, attempt = attempts, dead, error = %error, "notification push failed");
        self.store
            .delivery_failed(n.id, n.attempts, next, &error, dead)
            .await?;
        if dead {
            let details = format!(
                "notification {} ({}) undeliverable after {attempts} attempts: {error}",
                n.id, n.kind
            );
            let mut tx = self.store.begin().await?;
            tx.flag_review(&NewReview {
                subject: &n.customer_id,
                subscription_id: Some(&n.subscription_id),
                event_id: None,
                reason: ReviewReason::DeadNotification,
                details: &details,
                created_at_ms: now_ms(),
            })
            .await?;
            tx.commit().await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Reason;

    fn decision(has_access: bool, until: i64) -> Decision {
        Decision {
            has_access,
            reason: if has_access {
                Reason::Active
            } else {
                Reason::Canceled
            },
            subscription_id: "sub_1".into(),
            status: None,
            current_period_end: 0,
            access_until: until,
            verified_at: 0,
            detail: String::new(),
            access_ended_at: None,
        }
    }

    #[test]
    fn changes_table() {
        let table = [
            (decision(false, 0), decision(true, 10), Some(Kind::Restored)),
            (decision(true, 10), decision(false, 0), Some(Kind::Revoked)),
            (decision(true, 10), decision(true, 20), Some(Kind::Changed)),
            (decision(true, 10), decision(true, 10), None),
            (decision(false, 0), decision(false, 0), None),
        ];
        for (before, after, expected) in table {
            assert_eq!(change(&before, &after), expected);
        }
    }

    #[test]
    fn retry_delay_doubles_from_the_base_and_caps_at_ten_minutes() {
        let base = Duration::from_secs(1);
        assert_eq!(retry_delay(base, 1), Duration::from_secs(1));
        assert_eq!(retry_delay(base, 2), Duration::from_secs(2));
        assert_eq!(retry_delay(base, 5), Duration::from_secs(16));
        assert_eq!(retry_delay(base, 11), Duration::from_secs(600));
        assert_eq!(retry_delay(base, 40), Duration::from_secs(600));
    }
}
