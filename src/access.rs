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
use crate::policy::{self, Decision, Policy};
use crate::refresh::Refresher;
use crate::store::{Store, StoreError};

/// Who is asking about access.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    User(String),
    Customer(String),
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("set exactly one of user_id or customer_id")]
    InvalidSubject,
    /// A field over [`MAX_ID_BYTES`] or with control characters.
    #[error("{0}")]
    InvalidArgument(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The longest user id, customer id or product key a caller may send.
/// Stripe's ids are far shorter; the bound keeps a cache key, a log line and
/// a Stripe look-up small whatever a caller sends.
pub const MAX_ID_BYTES: usize = 255;

/// Checks one caller-supplied id or key: at most [`MAX_ID_BYTES`] bytes and
/// no control characters (a NUL can't be stored or looked up anywhere).
pub fn check_field(name: &str, value: &str) -> Result<(), AccessError> {
    let why = if value.len() > MAX_ID_BYTES {
        Some((
            "field_too_long",
            format!("{name} is longer than {MAX_ID_BYTES} bytes"),
        ))
    } else if value.chars().any(char::is_control) {
        Some((
            "field_control_chars",
            format!("{name} contains control characters"),
        ))
    } else {
        None
    };
    match why {
        None => Ok(()),
        Some((kind, message)) => {
            metrics::counter!(crate::metrics::INPUTS_REFUSED, "kind" => kind).increment(1);
            Err(AccessError::InvalidArgument(message))
        }
    }
}

impl Subject {
    /// Builds a subject from a request where exactly one id must be set.
    pub fn from_parts(user_id: &str, customer_id: &str) -> Result<Subject, AccessError> {
        check_field("user_id", user_id)?;
        check_field("customer_id", customer_id)?;
        match (user_id.trim(), customer_id.trim()) {
            (u, "") if !u.is_empty() => Ok(Subject::User(u.to_owned())),
            ("", c) if !c.is_empty() => Ok(Subject::Customer(c.to_owned())),
            _ => Err(AccessError::InvalidSubject),
        }
    }

    /// Heap bytes this subject holds, for weighing cache entries.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Subject::User(s) | Subject::Customer(s) => s.capacity(),
        }
    }
}

/// When records count as stale, and how long grace lasts without Stripe.
#[derive(Debug, Clone, Copy)]
pub struct Staleness {
    pub stale_after: Duration,
    pub stale_grace: Duration,
}

pub struct Access {
    store: Arc<dyn Store>,
    cache: Arc<SubjectCache>,
    refresher: Arc<Refresher>,
    policy: Policy,
    staleness: Staleness,
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Access {
    pub fn new(
        store: Arc<dyn Store>,
        cache: Arc<SubjectCache>,
        refresher: Arc<Refresher>,
        policy: Policy,
        staleness: Staleness,
    ) -> Self {
        Access {
            store,
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
        let decision = policy::decide(&records, now_secs(), &self.policy, product);
        if decision.has_access {
            return Ok(decision);
        }
        if records.iter().all(|r| r.status.is_none()) {
            return self.discover(subject, product, decision).await;
        }

        let now = now_secs();
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
            None => policy::decide(&records, now_secs(), &self.policy, product),
            Some(why) => policy::decide_with_stale_grace(
                &records,
                now_secs(),
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
                Ok(policy::decide(&records, now_secs(), &self.policy, product))
            }
            Err(why) => Ok(Decision {
                detail: format!("{}; {why}", local.detail),
                ..local
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exactly_one_subject_id_is_required() {
        assert_eq!(
            Subject::from_parts("u", "").unwrap(),
            Subject::User("u".into())
        );
        assert_eq!(
            Subject::from_parts("", "cus").unwrap(),
            Subject::Customer("cus".into())
        );
        assert!(Subject::from_parts("", "").is_err());
        assert!(Subject::from_parts("u", "cus").is_err());
        assert!(Subject::from_parts("  ", "").is_err());
    }

    #[test]
    fn ids_are_bounded_and_free_of_control_characters() {
        let longest = "u".repeat(MAX_ID_BYTES);
        assert!(Subject::from_parts(&longest, "").is_ok());
        let table = [
            (
                "u".repeat(MAX_ID_BYTES + 1),
                "user_id is longer than 255 bytes",
            ),
            ("é".repeat(128), "user_id is longer than 255 bytes"),
            ("u\0ser".to_owned(), "user_id contains control characters"),
            ("u\nser".to_owned(), "user_id contains control characters"),
        ];
        for (user, message) in table {
            let err = Subject::from_parts(&user, "").unwrap_err();
            assert_eq!(err.to_string(), message);
        }
        assert!(check_field("product", &"p".repeat(256)).is_err());
    }
}
