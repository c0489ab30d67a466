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

use crate::clock::Clock;
use crate::outcome::ReviewReason;
use crate::signature;
use crate::store::{NewReview, NotificationRow, Store, StoreError};

/// What a receiver gets: the JSON body of a push, version 1 (documented in
/// the README). Built from the stored row, so the table can change without
/// changing this contract.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Payload<'a> {
    /// Deduplicate on this: delivery is at least once.
    pub id: i64,
    /// `ACCESS_RESTORED`, `ACCESS_REVOKED` or `ACCESS_CHANGED`.
    pub kind: &'a str,
    pub user_id: &'a str,
    pub customer_id: &'a str,
    pub subscription_id: &'a str,
    pub old_status: &'a str,
    pub new_status: &'a str,
    pub old_access: bool,
    pub new_access: bool,
    pub old_access_until: i64,
    pub new_access_until: i64,
    pub reason: &'a str,
    pub created_at_ms: i64,
}

impl<'a> From<&'a NotificationRow> for Payload<'a> {
    fn from(n: &'a NotificationRow) -> Self {
        Payload {
            id: n.id,
            kind: &n.kind,
            user_id: &n.user_id,
            customer_id: &n.customer_id,
            subscription_id: &n.subscription_id,
            old_status: &n.old_status,
            new_status: &n.new_status,
            old_access: n.old_access,
            new_access: n.new_access,
            old_access_until: n.old_access_until,
            new_access_until: n.new_access_until,
            reason: &n.reason,
            created_at_ms: n.created_at_ms,
        }
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
    clock: Arc<dyn Clock>,
    options: PushOptions,
    http: reqwest::Client,
}

impl Dispatcher {
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, options: PushOptions) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("BUG: reqwest client builds with static settings");
        Dispatcher {
            store,
            clock,
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
        let now = self.clock.now_ms();
        let due = self.store.claim_notifications(now, lease, 32).await?;
        let count = due.len();
        for n in due {
            self.attempt(n).await?;
        }
        Ok(count)
    }

    async fn attempt(&self, n: NotificationRow) -> Result<(), StoreError> {
        let body = serde_json::to_vec(&Payload::from(&n)).expect("BUG: payloads serialize");
        let header = signature::header_for(&self.options.secret, self.clock.now_secs(), &body);
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
                self.store
                    .ack_notification(n.id, self.clock.now_ms())
                    .await?;
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
        let next = self.clock.now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
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
                created_at_ms: self.clock.now_ms(),
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
