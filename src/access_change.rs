//! Access changes: whether two decisions taken at the same instant differ in
//! a way the product must hear about, and what it is told. Pure.

use crate::policy::Decision;

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

/// A change of one customer's access, as the product is told about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessChange {
    pub kind: Kind,
    pub user_id: String,
    pub customer_id: String,
    pub subscription_id: String,
    pub old_status: String,
    pub new_status: String,
    pub old_access: bool,
    pub new_access: bool,
    pub old_access_until: i64,
    pub new_access_until: i64,
    /// The new decision's reason (`active`, `canceled`, ...).
    pub reason: String,
}

/// The change of `customer_id`'s access between two decisions.
pub fn notification(
    kind: Kind,
    customer_id: &str,
    user_id: &str,
    before: &Decision,
    after: &Decision,
) -> AccessChange {
    let status = |d: &Decision| d.status.map(|s| s.as_str().to_owned()).unwrap_or_default();
    AccessChange {
        kind,
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
}
