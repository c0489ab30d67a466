//! The access decision: a pure function of (records, now, policy).
//!
//! Nothing here reads a clock or a store, so every edge can be tested as a
//! table. Each subscription is judged on its own; when several match, the most
//! favourable one decides: any grant beats any denial, a later `access_until`
//! beats an earlier one, and among denials the most recent snapshot speaks.

use std::time::Duration;

use crate::subscription::{Status, SubscriptionRecord};

/// Why access was granted or denied. Mirrors the gRPC `Reason` enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    Active,
    Trialing,
    PastDueGrace,
    StaleGrace,
    NoSubscription,
    Expired,
    Canceled,
    PastDue,
    Unpaid,
    Incomplete,
    Paused,
}

impl Reason {
    pub fn grants(self) -> bool {
        matches!(
            self,
            Reason::Active | Reason::Trialing | Reason::PastDueGrace | Reason::StaleGrace
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Active => "active",
            Reason::Trialing => "trialing",
            Reason::PastDueGrace => "past_due_grace",
            Reason::StaleGrace => "stale_grace",
            Reason::NoSubscription => "no_subscription",
            Reason::Expired => "expired",
            Reason::Canceled => "canceled",
            Reason::PastDue => "past_due",
            Reason::Unpaid => "unpaid",
            Reason::Incomplete => "incomplete",
            Reason::Paused => "paused",
        }
    }
}

/// The knobs of the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// How long a `past_due` subscription keeps access after it became
    /// past_due: Stripe is still retrying the payment.
    pub past_due_grace: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            past_due_grace: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The answer, before it is turned into a gRPC message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub has_access: bool,
    pub reason: Reason,
    pub subscription_id: String,
    pub status: Option<Status>,
    pub current_period_end: i64,
    /// When this answer stops being true if nothing changes; 0 for never.
    pub access_until: i64,
    pub verified_at: i64,
    pub detail: String,
}

impl Decision {
    fn none(product: Option<&str>) -> Self {
        Decision {
            has_access: false,
            reason: Reason::NoSubscription,
            subscription_id: String::new(),
            status: None,
            current_period_end: 0,
            access_until: 0,
            verified_at: 0,
            detail: match product {
                Some(p) => format!("no subscription with an item for {p}"),
                None => "no subscription found".to_owned(),
            },
        }
    }
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Formats unix seconds as `2026-11-27T10:00:00Z`.
pub fn fmt_time(unix: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_secs(u64::try_from(unix).unwrap_or(0));
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Judges one record on its own.
pub fn judge(record: &SubscriptionRecord, now: i64, policy: &Policy) -> Option<Decision> {
    let status = record.status?;
    let period_end = record.period_end().unwrap_or(0);
    let id = &record.id;
    let (reason, access_until, detail) = match status {
        Status::Active if period_end > now => {
            let detail = if record.cancel_at_period_end {
                format!(
                    "subscription {id} is active and cancels at period end {}",
                    fmt_time(period_end)
                )
            } else {
                format!("subscription {id} is active until {}", fmt_time(period_end))
            };
            (Reason::Active, period_end, detail)
        }
        Status::Active => (
            Reason::Expired,
            0,
            format!(
                "subscription {id} is active but its period ended {} with no renewal seen",
                fmt_time(period_end)
            ),
        ),
        Status::Trialing => {
            let trial_end = record.trial_end.unwrap_or(period_end);
            if trial_end > now {
                (
                    Reason::Trialing,
                    trial_end,
                    format!(
                        "subscription {id} is trialing until {}",
                        fmt_time(trial_end)
                    ),
                )
            } else {
                (
                    Reason::Expired,
                    0,
                    format!("subscription {id} trial ended {}", fmt_time(trial_end)),
                )
            }
        }
        Status::PastDue => {
            let since = record.past_due_since.unwrap_or(record.snapshot_created);
            let grace_end = since.saturating_add(secs(policy.past_due_grace));
            if grace_end > now {
                (
                    Reason::PastDueGrace,
                    grace_end,
                    format!(
                        "subscription {id} past_due since {}; grace until {}",
                        fmt_time(since),
                        fmt_time(grace_end)
                    ),
                )
            } else {
                (
                    Reason::PastDue,
                    0,
                    format!(
                        "subscription {id} past_due since {}; grace ended {}",
                        fmt_time(since),
                        fmt_time(grace_end)
                    ),
                )
            }
        }
        Status::Canceled => (
            Reason::Canceled,
            0,
            format!("subscription {id} is canceled"),
        ),
        Status::Unpaid => (Reason::Unpaid, 0, format!("subscription {id} is unpaid")),
        Status::Incomplete => (
            Reason::Incomplete,
            0,
            format!("subscription {id} is incomplete: first payment not made"),
        ),
        Status::IncompleteExpired => (
            Reason::Incomplete,
            0,
            format!("subscription {id} is incomplete_expired: first payment never made"),
        ),
        Status::Paused => (Reason::Paused, 0, format!("subscription {id} is paused")),
    };
    Some(Decision {
        has_access: reason.grants(),
        reason,
        subscription_id: id.clone(),
        status: Some(status),
        current_period_end: period_end,
        access_until,
        verified_at: record.verified_at,
        detail,
    })
}

/// Decides access for one subject from all its records.
pub fn decide(
    records: &[SubscriptionRecord],
    now: i64,
    policy: &Policy,
    product: Option<&str>,
) -> Decision {
    records
        .iter()
        .filter(|r| product.is_none_or(|p| r.items.iter().any(|i| i.matches(p))))
        .filter_map(|r| judge(r, now, policy).map(|d| (d, r.snapshot_created)))
        .max_by_key(|(d, snapshot)| (d.has_access, d.access_until, *snapshot))
        .map(|(d, _)| d)
        .unwrap_or_else(|| Decision::none(product))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::Item;

    const DAY: i64 = 86_400;
    const NOW: i64 = 1_800_000_000;

    fn rec(id: &str, status: Status, period_end: i64) -> SubscriptionRecord {
        SubscriptionRecord {
            status: Some(status),
            current_period_end: Some(period_end),
            snapshot_created: NOW - 10 * DAY,
            verified_at: NOW - 10 * DAY,
            ..SubscriptionRecord::placeholder(id, "cus_1")
        }
    }

    fn past_due(since: i64) -> SubscriptionRecord {
        SubscriptionRecord {
            past_due_since: Some(since),
            ..rec("sub_pd", Status::PastDue, NOW + DAY)
        }
    }

    fn trialing(trial_end: i64) -> SubscriptionRecord {
        SubscriptionRecord {
            trial_end: Some(trial_end),
            ..rec("sub_tr", Status::Trialing, trial_end)
        }
    }

    #[test]
    fn single_record_table() {
        let policy = Policy::default();
        let grace = 7 * DAY;
        // (record, expected reason, expected access_until)
        let table: Vec<(SubscriptionRecord, Reason, i64)> = vec![
            (rec("s", Status::Active, NOW + 1), Reason::Active, NOW + 1),
            (rec("s", Status::Active, NOW), Reason::Expired, 0),
            (rec("s", Status::Active, NOW - 1), Reason::Expired, 0),
            (trialing(NOW + 1), Reason::Trialing, NOW + 1),
            (trialing(NOW), Reason::Expired, 0),
            (past_due(NOW - grace + 1), Reason::PastDueGrace, NOW + 1),
            (past_due(NOW - grace), Reason::PastDue, 0),
            (past_due(NOW), Reason::PastDueGrace, NOW + grace),
            (rec("s", Status::Canceled, NOW + DAY), Reason::Canceled, 0),
            (rec("s", Status::Unpaid, NOW + DAY), Reason::Unpaid, 0),
            (
                rec("s", Status::Incomplete, NOW + DAY),
                Reason::Incomplete,
                0,
            ),
            (
                rec("s", Status::IncompleteExpired, NOW + DAY),
                Reason::Incomplete,
                0,
            ),
            (rec("s", Status::Paused, NOW + DAY), Reason::Paused, 0),
        ];
        for (record, reason, until) in table {
            let d = decide(std::slice::from_ref(&record), NOW, &policy, None);
            assert_eq!((d.reason, d.access_until), (reason, until), "{record:?}");
            assert_eq!(d.has_access, reason.grants());
            assert!(!d.detail.is_empty());
        }
    }

    #[test]
    fn a_paid_invoice_extends_an_active_period() {
        let mut r = rec("s", Status::Active, NOW - 1);
        r.paid_through = Some(NOW + DAY);
        let d = decide(&[r], NOW, &Policy::default(), None);
        assert_eq!((d.reason, d.access_until), (Reason::Active, NOW + DAY));
    }

    #[test]
    fn placeholder_records_grant_nothing() {
        let r = SubscriptionRecord {
            paid_through: Some(NOW + DAY),
            ..SubscriptionRecord::placeholder("s", "c")
        };
        assert_eq!(
            decide(&[r], NOW, &Policy::default(), None).reason,
            Reason::NoSubscription
        );
        assert_eq!(
            decide(&[], NOW, &Policy::default(), None).reason,
            Reason::NoSubscription
        );
    }

    #[test]
    fn the_most_favourable_subscription_decides() {
        let canceled = rec("sub_c", Status::Canceled, NOW + DAY);
        let short = rec("sub_short", Status::Active, NOW + DAY);
        let long = rec("sub_long", Status::Active, NOW + 30 * DAY);
        let d = decide(
            &[canceled.clone(), long, short],
            NOW,
            &Policy::default(),
            None,
        );
        assert_eq!(d.subscription_id, "sub_long");
        let d = decide(&[canceled, past_due(NOW)], NOW, &Policy::default(), None);
        assert_eq!(d.reason, Reason::PastDueGrace);
    }

    #[test]
    fn product_filter_counts_only_matching_items() {
        let mut pro = rec("sub_pro", Status::Active, NOW + DAY);
        pro.items = vec![Item {
            price_id: "price_pro".into(),
            product_id: Some("prod_pro".into()),
            lookup_key: Some("pro_monthly".into()),
        }];
        let records = [pro];
        for (product, reason) in [
            (Some("prod_pro"), Reason::Active),
            (Some("pro_monthly"), Reason::Active),
            (Some("prod_other"), Reason::NoSubscription),
            (None, Reason::Active),
        ] {
            assert_eq!(
                decide(&records, NOW, &Policy::default(), product).reason,
                reason,
                "{product:?}"
            );
        }
    }

    #[test]
    fn fmt_time_is_rfc3339() {
        assert_eq!(fmt_time(0), "1970-01-01T00:00:00Z");
    }
}
