//! Who access is asked about, and which of them a change touched.
//!
//! Domain types with no I/O: a [`Subject`] is the key of every HasAccess
//! answer (and of the cache); [`Affected`] collects the subjects a commit
//! changed, so their cached answers can be dropped.

use crate::subscription::SubscriptionRecord;

/// Why a request's ids do not name one subject.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("set exactly one of user_id or customer_id")]
    NotExactlyOne,
    /// A field over [`MAX_ID_BYTES`] or with control characters.
    #[error("{0}")]
    Invalid(String),
}

/// Who is asking about access.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Subject {
    User(String),
    Customer(String),
}

/// The longest user id, customer id or product key a caller may send.
/// Stripe's ids are far shorter; the bound keeps a cache key, a log line and
/// a Stripe look-up small whatever a caller sends.
pub const MAX_ID_BYTES: usize = 255;

/// Checks one caller-supplied id or key: at most [`MAX_ID_BYTES`] bytes and
/// no control characters (a NUL can't be stored or looked up anywhere).
pub fn check_field(name: &str, value: &str) -> Result<(), SubjectError> {
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
            Err(SubjectError::Invalid(message))
        }
    }
}

impl Subject {
    /// Builds a subject from a request where exactly one id must be set.
    pub fn from_parts(user_id: &str, customer_id: &str) -> Result<Subject, SubjectError> {
        check_field("user_id", user_id)?;
        check_field("customer_id", customer_id)?;
        match (user_id.trim(), customer_id.trim()) {
            (u, "") if !u.is_empty() => Ok(Subject::User(u.to_owned())),
            ("", c) if !c.is_empty() => Ok(Subject::Customer(c.to_owned())),
            _ => Err(SubjectError::NotExactlyOne),
        }
    }

    /// Heap bytes this subject holds, for weighing cache entries.
    pub fn heap_bytes(&self) -> usize {
        match self {
            Subject::User(s) | Subject::Customer(s) => s.capacity(),
        }
    }
}

/// What a commit touched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Affected {
    pub customers: Vec<String>,
    pub users: Vec<String>,
    /// Products whose feature maps changed.
    pub products: Vec<String>,
}

impl Affected {
    pub fn add_customer(&mut self, id: &str) {
        if !self.customers.iter().any(|c| c == id) {
            self.customers.push(id.to_owned());
        }
    }

    pub fn add_user(&mut self, id: &str) {
        if !self.users.iter().any(|u| u == id) {
            self.users.push(id.to_owned());
        }
    }

    /// Every subject a record answers for: its customer and its user.
    /// Called with the record before and after a change, so a subscription
    /// that moves to another user (or customer) invalidates both sides.
    pub fn add_record(&mut self, record: &SubscriptionRecord) {
        self.add_customer(&record.customer_id);
        if let Some(user) = &record.user_id {
            self.add_user(user);
        }
    }

    pub fn add_product(&mut self, id: &str) {
        if !self.products.iter().any(|p| p == id) {
            self.products.push(id.to_owned());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.customers.is_empty() && self.users.is_empty() && self.products.is_empty()
    }

    /// Adds everything `other` touched.
    pub fn merge(&mut self, other: &Affected) {
        other.customers.iter().for_each(|c| self.add_customer(c));
        other.users.iter().for_each(|u| self.add_user(u));
        other.products.iter().for_each(|p| self.add_product(p));
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

    #[test]
    fn a_record_touches_its_customer_and_its_user() {
        let mut affected = Affected::default();
        let mut record = SubscriptionRecord::placeholder("sub_1", "cus_1");
        record.user_id = Some("u1".into());
        affected.add_record(&record);
        affected.add_record(&record);
        assert_eq!(affected.customers, ["cus_1"]);
        assert_eq!(affected.users, ["u1"]);
    }
}
