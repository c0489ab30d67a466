//! HasAccess in domain terms: find a subject's subscriptions and decide.
//!
//! The decision itself is [`crate::policy::decide`], a pure function; this
//! module only supplies its inputs (the records and the clock).

use std::sync::Arc;

use crate::policy::{self, Decision, Policy};
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
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Subject {
    /// Builds a subject from a request where exactly one id must be set.
    pub fn from_parts(user_id: &str, customer_id: &str) -> Result<Subject, AccessError> {
        match (user_id.trim(), customer_id.trim()) {
            (u, "") if !u.is_empty() => Ok(Subject::User(u.to_owned())),
            ("", c) if !c.is_empty() => Ok(Subject::Customer(c.to_owned())),
            _ => Err(AccessError::InvalidSubject),
        }
    }
}

pub struct Access {
    store: Arc<dyn Store>,
    policy: Policy,
}

/// Unix seconds now.
pub fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

impl Access {
    pub fn new(store: Arc<dyn Store>, policy: Policy) -> Self {
        Access { store, policy }
    }

    pub async fn has_access(
        &self,
        subject: &Subject,
        product: Option<&str>,
    ) -> Result<Decision, AccessError> {
        let records = match subject {
            Subject::User(id) => self.store.subscriptions_for_user(id).await?,
            Subject::Customer(id) => self.store.subscriptions_for_customer(id).await?,
        };
        Ok(policy::decide(&records, now_secs(), &self.policy, product))
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
}
