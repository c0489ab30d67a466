//! The access decision: a pure function of (records, now, policy).
//!
//! Nothing here reads a clock or a store, so every edge can be tested as a
//! table. Each subscription is judged on its own; when several match, the most
//! favourable one decides: any grant beats any denial, a later `access_until`
//! beats an earlier one, and among denials the most recent snapshot speaks.

use std::time::Duration;

use crate::catalog::{Carrier, Catalog, Source};
use crate::subscription::{AccessFacts, PauseKind, Status};

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
    /// A revocation found only by the reconciler, held until an admin
    /// resolves its review.
    ReviewHold,
    /// Access, but not to the feature asked about.
    FeatureNotIncluded,
}

impl Reason {
    /// How many reasons there are: `reason as usize` is below it.
    pub const COUNT: usize = Reason::FeatureNotIncluded as usize + 1;

    pub fn grants(self) -> bool {
        matches!(
            self,
            Reason::Active
                | Reason::Trialing
                | Reason::PastDueGrace
                | Reason::StaleGrace
                | Reason::ReviewHold
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
            Reason::ReviewHold => "review_hold",
            Reason::FeatureNotIncluded => "feature_not_included",
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
    /// For a denial that may be wrong because a webhook went missing (period
    /// over with no renewal seen, past_due grace over, unpaid, incomplete):
    /// when local data says access ended. `None` for grants and for final
    /// denials (canceled, paused, ...).
    pub access_ended_at: Option<i64>,
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
            access_ended_at: None,
            detail: match product {
                Some(p) => format!("no subscription with an item for {p}"),
                None => "no subscription found".to_owned(),
            },
        }
    }
}

/// Shows unix seconds as `2026-11-27T10:00Z`, for detail sentences.
fn fmt_minute(unix: i64) -> crate::clock::Rfc3339Minute {
    crate::clock::Rfc3339Minute(unix)
}

pub(crate) fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

/// Shows unix seconds as `2026-11-27T10:00:00Z`; never panics, whatever
/// the value.
pub fn fmt_time(unix: i64) -> crate::clock::Rfc3339 {
    crate::clock::Rfc3339(unix)
}

/// Judges one record on its own.
pub fn judge(record: &impl AccessFacts, now: i64, policy: &Policy) -> Option<Decision> {
    let status = record.status()?;
    let period_end = record.period_end().unwrap_or(0);
    let id = record.id();
    let (reason, access_until, detail, ended) = match status {
        Status::Active if period_end > now => {
            let detail = if record.cancel_at_period_end() {
                format!(
                    "subscription {id} is active and cancels at period end {}",
                    fmt_time(period_end)
                )
            } else {
                format!("subscription {id} is active until {}", fmt_time(period_end))
            };
            (Reason::Active, period_end, detail, None)
        }
        Status::Active => (
            Reason::Expired,
            0,
            format!(
                "subscription {id} is active but its period ended {} with no renewal seen",
                fmt_time(period_end)
            ),
            Some(period_end),
        ),
        Status::Trialing => {
            let trial_end = record.trial_end().unwrap_or(period_end);
            if trial_end > now {
                let detail = format!(
                    "subscription {id} is trialing until {}",
                    fmt_time(trial_end)
                );
                (Reason::Trialing, trial_end, detail, None)
            } else {
                let detail = format!("subscription {id} trial ended {}", fmt_time(trial_end));
                (Reason::Expired, 0, detail, Some(trial_end))
            }
        }
        Status::PastDue => dunning(record, now, policy, "past_due", Reason::PastDue),
        Status::Paused if record.pause() == Some(PauseKind::FirstPaymentFailure) => dunning(
            record,
            now,
            policy,
            "paused after a failed payment",
            Reason::Paused,
        ),
        Status::Canceled => (
            Reason::Canceled,
            0,
            format!("subscription {id} is canceled"),
            None,
        ),
        Status::Unpaid => (
            Reason::Unpaid,
            0,
            format!(
                "subscription {id} unpaid since {}",
                fmt_time(record.snapshot_created())
            ),
            Some(record.snapshot_created()),
        ),
        Status::Incomplete => (
            Reason::Incomplete,
            0,
            format!("subscription {id} is incomplete: first payment not made"),
            Some(record.snapshot_created()),
        ),
        Status::IncompleteExpired => (
            Reason::Incomplete,
            0,
            format!("subscription {id} is incomplete_expired: first payment never made"),
            None,
        ),
        Status::Paused => (
            Reason::Paused,
            0,
            match record.pause() {
                Some(kind) if kind != PauseKind::Other => {
                    format!("subscription {id} is paused ({})", kind.as_str())
                }
                _ => format!("subscription {id} is paused"),
            },
            None,
        ),
    };
    let (reason, access_until, detail, ended) =
        cancel_at(record, now, (reason, access_until, detail, ended));
    if let (false, Some(review)) = (reason.grants(), record.hold_review_id()) {
        return Some(Decision {
            has_access: true,
            reason: Reason::ReviewHold,
            subscription_id: id.to_owned(),
            status: Some(status),
            current_period_end: period_end,
            access_until: 0,
            verified_at: record.verified_at(),
            detail: format!("{detail}; revocation held until review {review} is resolved"),
            access_ended_at: None,
        });
    }
    Some(Decision {
        has_access: reason.grants(),
        reason,
        subscription_id: id.to_owned(),
        status: Some(status),
        current_period_end: period_end,
        access_until,
        verified_at: record.verified_at(),
        detail,
        access_ended_at: ended,
    })
}

type Verdict = (Reason, i64, String, Option<i64>);

/// A subscription in dunning (`past_due`, or paused after its first failed
/// payment; `what` says which): granted for the payment-failure grace,
/// counted from when the run began, then denied with `lapsed`. The denial
/// may be stale (Stripe may have collected), so it is refreshable.
fn dunning(
    record: &impl AccessFacts,
    now: i64,
    policy: &Policy,
    what: &str,
    lapsed: Reason,
) -> Verdict {
    let id = record.id();
    let since = record.past_due_since().unwrap_or(record.snapshot_created());
    let grace_end = since.saturating_add(secs(policy.past_due_grace));
    if grace_end > now {
        let detail = format!(
            "subscription {id} {what} since {}; grace until {}",
            fmt_time(since),
            fmt_time(grace_end)
        );
        (Reason::PastDueGrace, grace_end, detail, None)
    } else {
        let detail = format!(
            "subscription {id} {what} since {}; grace ended {}",
            fmt_time(since),
            fmt_time(grace_end)
        );
        (lapsed, 0, detail, Some(grace_end))
    }
}

/// A scheduled cancellation (`cancel_at`) cuts a grant short: access lasts
/// until the earlier of it and what the status allows. Once it has passed,
/// a record that still grants is treated like a lapsed period: the
/// `deleted` event may be late, so the denial is refreshable.
fn cancel_at(record: &impl AccessFacts, now: i64, verdict: Verdict) -> Verdict {
    let (reason, until, detail, ended) = verdict;
    let Some(at) = record.cancel_at() else {
        return (reason, until, detail, ended);
    };
    if !reason.grants() || until <= at {
        return (reason, until, detail, ended);
    }
    let id = record.id();
    if at > now {
        let detail = format!("{detail}; cancels at {}", fmt_time(at));
        (reason, at, detail, ended)
    } else {
        let detail = format!(
            "subscription {id} was set to cancel at {} and no cancellation has been seen",
            fmt_time(at)
        );
        (Reason::Expired, 0, detail, Some(at))
    }
}

/// Decides access for one subject from all its records.
pub fn decide<R: AccessFacts>(
    records: &[R],
    now: i64,
    policy: &Policy,
    product: Option<&str>,
) -> Decision {
    decide_among(
        records.iter().filter(|r| matches_product(*r, product)),
        now,
        policy,
    )
    .unwrap_or_else(|| Decision::none(product))
}

/// The most favourable decision among `records`; `None` when none of them
/// has a status.
fn decide_among<'a, R: AccessFacts + 'a>(
    records: impl Iterator<Item = &'a R>,
    now: i64,
    policy: &Policy,
) -> Option<Decision> {
    records
        .filter_map(|r| judge(r, now, policy).map(|d| (d, r.snapshot_created())))
        .max_by_key(|(d, snapshot)| (d.has_access, d.access_until, *snapshot))
        .map(|(d, _)| d)
}

pub fn matches_product(record: &impl AccessFacts, product: Option<&str>) -> bool {
    product.is_none_or(|p| record.items().iter().any(|i| i.matches(p)))
}

/// Whether HasAccess should ask Stripe about `record` before denying: local
/// data denies access the subject may still have (a webhook may be
/// missing), and Tollgate has not heard from Stripe about it for
/// `stale_after`.
pub fn needs_refresh(
    record: &impl AccessFacts,
    now: i64,
    policy: &Policy,
    stale_after: Duration,
) -> bool {
    judge(record, now, policy).is_some_and(|d| !d.has_access && d.access_ended_at.is_some())
        && now.saturating_sub(record.verified_at()) >= secs(stale_after)
}

/// The decision when Stripe could not be asked (`why`, e.g. "Stripe
/// unreachable"): a refreshable denial is turned into `StaleGrace` until
/// `stale_grace` after local data says access ended; after that, the local
/// denial stands.
pub fn decide_with_stale_grace<R: AccessFacts>(
    records: &[R],
    now: i64,
    policy: &Policy,
    product: Option<&str>,
    stale_grace: Duration,
    why: &str,
) -> Decision {
    let local = decide(records, now, policy, product);
    let selected = records.iter().filter(|r| matches_product(*r, product));
    stale_grace_among(selected, local, now, policy, stale_grace, why)
}

/// Turns `local` (the decision among `records`) into `StaleGrace` when it
/// is a refreshable denial still within `stale_grace`.
fn stale_grace_among<'a, R: AccessFacts + 'a>(
    records: impl Iterator<Item = &'a R>,
    local: Decision,
    now: i64,
    policy: &Policy,
    stale_grace: Duration,
    why: &str,
) -> Decision {
    if local.has_access {
        return local;
    }
    let grace = secs(stale_grace);
    let best = records
        .filter_map(|r| judge(r, now, policy))
        .filter_map(|d| d.access_ended_at.map(|e| (e.saturating_add(grace), d)))
        .filter(|(until, _)| *until > now)
        .max_by_key(|(until, _)| *until);
    match best {
        Some((until, d)) => Decision {
            has_access: true,
            reason: Reason::StaleGrace,
            access_until: until,
            detail: format!(
                "{}; {why}; stale grace until {}",
                d.detail,
                fmt_minute(until)
            ),
            ..d
        },
        None => Decision {
            detail: format!("{}; {why}", local.detail),
            ..local
        },
    }
}

/// What a feature check asks: the feature's lookup key, and the catalog
/// that says which products carry it.
#[derive(Debug, Clone, Copy)]
pub struct FeatureQuery<'a> {
    pub feature: &'a str,
    pub catalog: &'a Catalog,
}

/// HasAccess for a feature: granted exactly when a subscription that
/// grants access (every grace and hold included) has an item whose product
/// carries the feature. A subject with access only through products
/// without it is denied with [`Reason::FeatureNotIncluded`].
pub fn decide_feature<R: AccessFacts>(
    records: &[R],
    now: i64,
    policy: &Policy,
    product: Option<&str>,
    query: FeatureQuery<'_>,
) -> Decision {
    let carriers = || carriers(records, product, query);
    let with = decide_among(carriers(), now, policy);
    feature_verdict(records, with, query, || {
        decide(records, now, policy, product)
    })
}

/// [`decide_feature`] when Stripe could not be asked: stale grace applies
/// to the carrying subscriptions exactly as [`decide_with_stale_grace`]
/// applies it to all.
pub fn decide_feature_with_stale_grace<R: AccessFacts>(
    records: &[R],
    now: i64,
    policy: &Policy,
    product: Option<&str>,
    query: FeatureQuery<'_>,
    stale_grace: Duration,
    why: &str,
) -> Decision {
    let carriers = || carriers(records, product, query);
    let with = decide_among(carriers(), now, policy)
        .map(|local| stale_grace_among(carriers(), local, now, policy, stale_grace, why));
    feature_verdict(records, with, query, || {
        decide_with_stale_grace(records, now, policy, product, stale_grace, why)
    })
}

/// The records `product` selects whose products carry the feature.
fn carriers<'a, R: AccessFacts>(
    records: &'a [R],
    product: Option<&'a str>,
    query: FeatureQuery<'a>,
) -> impl Iterator<Item = &'a R> + 'a {
    records
        .iter()
        .filter(move |r| matches_product(*r, product))
        .filter(move |r| query.catalog.carrier(*r, query.feature).is_some())
}

/// The answer for a feature from the decision among its carriers
/// (`with`), and, only when that does not grant, the decision among all.
fn feature_verdict<R: AccessFacts>(
    records: &[R],
    with: Option<Decision>,
    query: FeatureQuery<'_>,
    overall: impl FnOnce() -> Decision,
) -> Decision {
    let with = match with {
        Some(d) if d.has_access => return naming_the_feature(d, records, query),
        other => other,
    };
    let feature = query.feature;
    let overall = overall();
    if overall.has_access {
        return Decision {
            has_access: false,
            reason: Reason::FeatureNotIncluded,
            access_until: 0,
            access_ended_at: None,
            detail: format!(
                "{}; but no product of a subscription granting access carries feature {feature}",
                overall.detail
            ),
            ..overall
        };
    }
    match with {
        Some(d) => naming_the_feature(d, records, query),
        None => Decision {
            detail: format!(
                "no subscription carries feature {feature}; {}",
                overall.detail
            ),
            ..overall
        },
    }
}

/// `d` with a detail that names the feature and the product carrying it.
fn naming_the_feature<R: AccessFacts>(
    mut d: Decision,
    records: &[R],
    query: FeatureQuery<'_>,
) -> Decision {
    let carrier = records
        .iter()
        .find(|r| r.id() == d.subscription_id)
        .and_then(|r| query.catalog.carrier(r, query.feature));
    let source = match carrier {
        Some(Carrier {
            product,
            source: Source::ProductMap,
        }) => format!("from product {product}"),
        Some(Carrier {
            product,
            source: Source::Summary,
        }) => format!(
            "from the customer's active entitlement summary (product {product}'s feature map is unknown)"
        ),
        None => "from product ?".to_owned(),
    };
    d.detail = format!("feature {} {source}: {}", query.feature, d.detail);
    d
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::{Item, SubscriptionRecord};

    #[test]
    fn every_reason_indexes_below_the_count() {
        // Exhaustive: a new reason does not compile until it is listed.
        let listed = |r: Reason| match r {
            Reason::Active
            | Reason::Trialing
            | Reason::PastDueGrace
            | Reason::StaleGrace
            | Reason::NoSubscription
            | Reason::Expired
            | Reason::Canceled
            | Reason::PastDue
            | Reason::Unpaid
            | Reason::Incomplete
            | Reason::Paused
            | Reason::ReviewHold
            | Reason::FeatureNotIncluded => r as usize,
        };
        let all = [
            Reason::Active,
            Reason::Trialing,
            Reason::PastDueGrace,
            Reason::StaleGrace,
            Reason::NoSubscription,
            Reason::Expired,
            Reason::Canceled,
            Reason::PastDue,
            Reason::Unpaid,
            Reason::Incomplete,
            Reason::Paused,
            Reason::ReviewHold,
            Reason::FeatureNotIncluded,
        ];
        let mut seen: Vec<usize> = all.iter().map(|&r| listed(r)).collect();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), all.len());
        assert!(seen.iter().all(|&i| i < Reason::COUNT), "{seen:?}");
        assert_eq!(Reason::COUNT, all.len());
    }

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

    fn paused(kind: Option<PauseKind>, since: Option<i64>) -> SubscriptionRecord {
        SubscriptionRecord {
            pause: kind,
            past_due_since: since,
            ..rec("sub_pa", Status::Paused, NOW + DAY)
        }
    }

    fn cancels_at(status: Status, at: i64, period_end: i64) -> SubscriptionRecord {
        SubscriptionRecord {
            cancel_at: Some(at),
            ..rec("sub_ca", status, period_end)
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
    fn a_pause_after_a_first_failed_payment_gets_the_payment_failure_grace() {
        let policy = Policy::default();
        let grace = 7 * DAY;
        let first = Some(PauseKind::FirstPaymentFailure);
        // (record, expected reason, expected access_until, refreshable)
        let table: Vec<(SubscriptionRecord, Reason, i64, bool)> = vec![
            (
                paused(first, Some(NOW)),
                Reason::PastDueGrace,
                NOW + grace,
                false,
            ),
            (
                paused(first, Some(NOW - grace + 1)),
                Reason::PastDueGrace,
                NOW + 1,
                false,
            ),
            (paused(first, Some(NOW - grace)), Reason::Paused, 0, true),
            (
                paused(first, Some(NOW - grace - 1)),
                Reason::Paused,
                0,
                true,
            ),
            // Every other pause is final at once, whenever it began.
            (
                paused(Some(PauseKind::FinalPaymentFailure), Some(NOW)),
                Reason::Paused,
                0,
                false,
            ),
            (
                paused(Some(PauseKind::PauseRequested), None),
                Reason::Paused,
                0,
                false,
            ),
            (
                paused(Some(PauseKind::TrialEndWithoutPaymentMethod), None),
                Reason::Paused,
                0,
                false,
            ),
            (
                paused(Some(PauseKind::Other), None),
                Reason::Paused,
                0,
                false,
            ),
            (paused(None, None), Reason::Paused, 0, false),
        ];
        for (record, reason, until, refreshable) in table {
            let d = decide(std::slice::from_ref(&record), NOW, &policy, None);
            assert_eq!((d.reason, d.access_until), (reason, until), "{record:?}");
            assert_eq!(d.has_access, reason.grants());
            assert_eq!(d.access_ended_at.is_some(), refreshable, "{record:?}");
        }
        let d = decide(&[paused(first, Some(NOW))], NOW, &policy, None);
        assert!(
            d.detail.contains("paused after a failed payment"),
            "{}",
            d.detail
        );
    }

    fn with_product(mut r: SubscriptionRecord, product: &str) -> SubscriptionRecord {
        r.items = vec![Item {
            price_id: format!("price_{product}"),
            product_id: Some(product.to_owned()),
            lookup_key: None,
        }];
        r
    }

    fn catalog() -> Catalog {
        let mut c = Catalog::new();
        c.insert("prod_pro", std::sync::Arc::from(vec!["export".to_owned()]));
        c.insert("prod_basic", std::sync::Arc::from(Vec::<String>::new()));
        c
    }

    #[test]
    fn a_feature_is_decided_by_the_subscriptions_whose_products_carry_it() {
        let policy = Policy::default();
        let grace = 7 * DAY;
        let catalog = catalog();
        let q = FeatureQuery {
            feature: "export",
            catalog: &catalog,
        };
        let pro = |r: SubscriptionRecord| with_product(r, "prod_pro");
        let basic = |r: SubscriptionRecord| with_product(r, "prod_basic");
        // (records, expected reason, expected access_until)
        let table: Vec<(Vec<SubscriptionRecord>, Reason, i64)> = vec![
            (
                vec![pro(rec("a", Status::Active, NOW + 1))],
                Reason::Active,
                NOW + 1,
            ),
            (vec![pro(rec("a", Status::Active, NOW))], Reason::Expired, 0),
            // Payment-failure grace, to the second.
            (
                vec![pro(past_due(NOW - grace + 1))],
                Reason::PastDueGrace,
                NOW + 1,
            ),
            (vec![pro(past_due(NOW - grace))], Reason::PastDue, 0),
            // Access through a product without the feature.
            (
                vec![basic(rec("b", Status::Active, NOW + DAY))],
                Reason::FeatureNotIncluded,
                0,
            ),
            // ...even when the carrying subscription is over.
            (
                vec![
                    basic(rec("b", Status::Active, NOW + DAY)),
                    pro(rec("a", Status::Canceled, NOW - DAY)),
                ],
                Reason::FeatureNotIncluded,
                0,
            ),
            // The carrying one decides, whatever the others say.
            (
                vec![
                    basic(rec("b", Status::Active, NOW + 9 * DAY)),
                    pro(rec("a", Status::Active, NOW + DAY)),
                ],
                Reason::Active,
                NOW + DAY,
            ),
            // No access at all: the plain denial.
            (
                vec![basic(rec("b", Status::Canceled, NOW + DAY))],
                Reason::Canceled,
                0,
            ),
            (vec![], Reason::NoSubscription, 0),
            // A held revocation keeps the feature like it keeps access.
            (
                vec![SubscriptionRecord {
                    hold_review_id: Some(3),
                    ..pro(rec("a", Status::Canceled, NOW + DAY))
                }],
                Reason::ReviewHold,
                0,
            ),
            // An unknown product map carries nothing.
            (
                vec![with_product(
                    rec("u", Status::Active, NOW + DAY),
                    "prod_unknown",
                )],
                Reason::FeatureNotIncluded,
                0,
            ),
        ];
        for (records, reason, until) in table {
            let d = decide_feature(&records, NOW, &policy, None, q);
            assert_eq!((d.reason, d.access_until), (reason, until), "{records:?}");
            assert_eq!(d.has_access, reason.grants(), "{records:?}");
            assert!(
                d.detail.contains("export")
                    || reason == Reason::NoSubscription
                    || reason == Reason::Canceled,
                "{}",
                d.detail
            );
        }
    }

    #[test]
    fn a_summary_decides_a_feature_only_where_a_product_map_is_unknown() {
        let policy = Policy::default();
        let grace = 7 * DAY;
        let mut catalog = catalog();
        catalog.insert_summary("cus_1", std::sync::Arc::from(vec!["export".to_owned()]));
        let q = FeatureQuery {
            feature: "export",
            catalog: &catalog,
        };
        let unknown = |r: SubscriptionRecord| with_product(r, "prod_new");
        let basic = |r: SubscriptionRecord| with_product(r, "prod_basic");
        // (records, expected reason, expected access_until, carried by the summary)
        let table: Vec<(Vec<SubscriptionRecord>, Reason, i64, bool)> = vec![
            (
                vec![unknown(rec("n", Status::Active, NOW + 1))],
                Reason::Active,
                NOW + 1,
                true,
            ),
            // The summary carries the feature, Tollgate's policy still
            // decides the access: the same edges as a known map.
            (
                vec![unknown(rec("n", Status::Active, NOW))],
                Reason::Expired,
                0,
                true,
            ),
            (
                vec![unknown(past_due(NOW - grace + 1))],
                Reason::PastDueGrace,
                NOW + 1,
                true,
            ),
            (
                vec![unknown(past_due(NOW - grace))],
                Reason::PastDue,
                0,
                true,
            ),
            // A known map without the feature is not overruled.
            (
                vec![basic(rec("b", Status::Active, NOW + DAY))],
                Reason::FeatureNotIncluded,
                0,
                false,
            ),
        ];
        for (records, reason, until, by_summary) in table {
            let d = decide_feature(&records, NOW, &policy, None, q);
            assert_eq!((d.reason, d.access_until), (reason, until), "{records:?}");
            assert_eq!(
                d.detail.contains("active entitlement summary"),
                by_summary,
                "{}",
                d.detail
            );
        }
    }

    #[test]
    fn a_feature_gets_stale_grace_exactly_as_access_does() {
        let policy = Policy::default();
        let catalog = catalog();
        let q = FeatureQuery {
            feature: "export",
            catalog: &catalog,
        };
        let stale_grace = Duration::from_secs(DAY as u64);
        for ended in [NOW - DAY + 1, NOW - DAY, NOW - 2 * DAY] {
            let records = vec![with_product(rec("a", Status::Active, ended), "prod_pro")];
            let plain = decide_with_stale_grace(&records, NOW, &policy, None, stale_grace, "down");
            let feature = decide_feature_with_stale_grace(
                &records,
                NOW,
                &policy,
                None,
                q,
                stale_grace,
                "down",
            );
            assert_eq!(
                (feature.has_access, feature.reason, feature.access_until),
                (plain.has_access, plain.reason, plain.access_until),
                "period ended {ended}"
            );
        }
        let d = decide_feature_with_stale_grace(
            &[with_product(rec("a", Status::Active, NOW - 60), "prod_pro")],
            NOW,
            &policy,
            None,
            q,
            stale_grace,
            "down",
        );
        assert_eq!(d.reason, Reason::StaleGrace);
    }

    #[test]
    fn cancel_at_ends_access_at_the_earlier_of_it_and_the_period_end() {
        let policy = Policy::default();
        // (record, expected reason, expected access_until, refreshable)
        let table: Vec<(SubscriptionRecord, Reason, i64, bool)> = vec![
            (
                cancels_at(Status::Active, NOW + 1, NOW + DAY),
                Reason::Active,
                NOW + 1,
                false,
            ),
            // At and after cancel_at: lapsed, but the deleted event may be
            // late, so the denial is refreshable.
            (
                cancels_at(Status::Active, NOW, NOW + DAY),
                Reason::Expired,
                0,
                true,
            ),
            (
                cancels_at(Status::Active, NOW - DAY, NOW + DAY),
                Reason::Expired,
                0,
                true,
            ),
            // A cancel_at after the period end changes nothing.
            (
                cancels_at(Status::Active, NOW + 2 * DAY, NOW + DAY),
                Reason::Active,
                NOW + DAY,
                false,
            ),
            (
                SubscriptionRecord {
                    trial_end: Some(NOW + DAY),
                    ..cancels_at(Status::Trialing, NOW + 10, NOW + DAY)
                },
                Reason::Trialing,
                NOW + 10,
                false,
            ),
            (
                SubscriptionRecord {
                    past_due_since: Some(NOW),
                    ..cancels_at(Status::PastDue, NOW + 10, NOW + DAY)
                },
                Reason::PastDueGrace,
                NOW + 10,
                false,
            ),
            // Denials stay what they are.
            (
                cancels_at(Status::Canceled, NOW + 10, NOW + DAY),
                Reason::Canceled,
                0,
                false,
            ),
        ];
        for (record, reason, until, refreshable) in table {
            let d = decide(std::slice::from_ref(&record), NOW, &policy, None);
            assert_eq!((d.reason, d.access_until), (reason, until), "{record:?}");
            assert_eq!(d.access_ended_at.is_some(), refreshable, "{record:?}");
        }
        let d = decide(
            &[cancels_at(Status::Active, NOW + 1, NOW + DAY)],
            NOW,
            &policy,
            None,
        );
        assert!(d.detail.contains("cancels at"), "{}", d.detail);
        let stale = SubscriptionRecord {
            verified_at: NOW - DAY,
            ..cancels_at(Status::Active, NOW - 1, NOW + DAY)
        };
        assert!(needs_refresh(&stale, NOW, &policy, Duration::from_secs(60)));
    }

    #[test]
    fn a_held_revocation_keeps_access_until_resolved() {
        let mut r = rec("s", Status::Canceled, NOW + DAY);
        r.hold_review_id = Some(7);
        let d = decide(&[r], NOW, &Policy::default(), None);
        assert_eq!((d.has_access, d.reason), (true, Reason::ReviewHold));
        assert!(d.detail.contains("review 7"), "{}", d.detail);
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
            decide::<SubscriptionRecord>(&[], NOW, &Policy::default(), None).reason,
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
    fn refresh_is_needed_only_for_stale_refreshable_denials() {
        let policy = Policy::default();
        let stale_after = Duration::from_secs(900);
        let fresh = |mut r: SubscriptionRecord, verified: i64| {
            r.verified_at = verified;
            r
        };
        // (record, needs refresh)
        let table = vec![
            (fresh(rec("s", Status::Active, NOW - 1), NOW - 900), true),
            (fresh(rec("s", Status::Active, NOW - 1), NOW - 899), false),
            (fresh(rec("s", Status::Active, NOW + 1), NOW - 9000), false),
            (fresh(past_due(NOW - 8 * DAY), NOW - 900), true),
            (fresh(past_due(NOW), NOW - 9000), false),
            (fresh(rec("s", Status::Unpaid, NOW), NOW - 900), true),
            (fresh(rec("s", Status::Incomplete, NOW), NOW - 900), true),
            (
                fresh(rec("s", Status::Canceled, NOW + DAY), NOW - 9000),
                false,
            ),
            (
                fresh(rec("s", Status::Paused, NOW + DAY), NOW - 9000),
                false,
            ),
            (
                fresh(rec("s", Status::IncompleteExpired, NOW + DAY), NOW - 9000),
                false,
            ),
        ];
        for (record, expected) in table {
            assert_eq!(
                needs_refresh(&record, NOW, &policy, stale_after),
                expected,
                "{record:?}"
            );
        }
    }

    #[test]
    fn stale_grace_edges_table() {
        let policy = Policy::default();
        let grace = Duration::from_secs(DAY as u64);
        let pd_grace = 7 * DAY;
        // (record, expected reason, expected access_until)
        let table: Vec<(SubscriptionRecord, Reason, i64)> = vec![
            // period ended one second ago: grace for a day from the period end
            (
                rec("s", Status::Active, NOW - 1),
                Reason::StaleGrace,
                NOW - 1 + DAY,
            ),
            // exactly at the end of stale grace: denied
            (rec("s", Status::Active, NOW - DAY), Reason::Expired, 0),
            (
                rec("s", Status::Active, NOW - DAY + 1),
                Reason::StaleGrace,
                NOW + 1,
            ),
            // past_due grace over; stale grace counts from the end of it
            (past_due(NOW - pd_grace), Reason::StaleGrace, NOW + DAY),
            (past_due(NOW - pd_grace - DAY), Reason::PastDue, 0),
            (
                past_due(NOW - pd_grace - DAY + 1),
                Reason::StaleGrace,
                NOW + 1,
            ),
            // still in past_due grace: local answer stands
            (past_due(NOW - 1), Reason::PastDueGrace, NOW - 1 + pd_grace),
            // canceled is final
            (rec("s", Status::Canceled, NOW + DAY), Reason::Canceled, 0),
            (trialing(NOW - 10), Reason::StaleGrace, NOW - 10 + DAY),
        ];
        for (record, reason, until) in table {
            let d = decide_with_stale_grace(
                std::slice::from_ref(&record),
                NOW,
                &policy,
                None,
                grace,
                "Stripe unreachable",
            );
            assert_eq!((d.reason, d.access_until), (reason, until), "{record:?}");
            assert_eq!(d.has_access, reason.grants());
        }
    }

    #[test]
    fn stale_grace_detail_says_why_and_until_when() {
        let d = decide_with_stale_grace(
            &[past_due(NOW - 7 * DAY - 3600)],
            NOW,
            &Policy::default(),
            None,
            Duration::from_secs(DAY as u64),
            "Stripe unreachable",
        );
        assert!(d.detail.contains("past_due since"), "{}", d.detail);
        assert!(
            d.detail
                .contains("; Stripe unreachable; stale grace until "),
            "{}",
            d.detail
        );
        assert!(
            d.detail.ends_with(":00Z") || d.detail.ends_with('Z'),
            "{}",
            d.detail
        );
    }

    #[test]
    fn fmt_time_is_rfc3339() {
        assert_eq!(fmt_time(0).to_string(), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn timestamps_past_year_9999_decide_without_panicking() {
        // humantime refused these and `to_string()` panicked inside
        // HasAccess, the refresher and the reconciler.
        let policy = Policy::default();
        for end in [253_402_300_800, i64::MAX, i64::MIN] {
            let mut pd = past_due(end);
            pd.current_period_end = Some(end);
            for r in [rec("s", Status::Active, end), trialing(end), pd] {
                let d = decide(std::slice::from_ref(&r), NOW, &policy, None);
                assert!(d.detail.contains('Z'), "{}", d.detail);
                let long = Duration::from_secs(u64::MAX);
                let d = decide_with_stale_grace(&[r], NOW, &policy, None, long, "down");
                assert!(!d.detail.is_empty());
            }
        }
    }
}

/// Properties of the feature decision against the plain one, over random
/// subscription sets and catalogs.
#[cfg(test)]
pub(crate) mod feature_properties {
    use super::*;
    use crate::subscription::{Item, SubscriptionRecord};
    use proptest::prelude::*;
    use proptest::sample::select;

    const NOW: i64 = 1_800_000_000;
    pub(crate) const FEATURES: [&str; 3] = ["export", "sso", "audit"];
    pub(crate) const PRODUCTS: [&str; 3] = ["prod_a", "prod_b", "prod_c"];

    fn record() -> impl Strategy<Value = SubscriptionRecord> {
        (
            0..1000u32,
            select(Status::ALL.to_vec()),
            -3i64..4,
            proptest::collection::vec(select(PRODUCTS.to_vec()), 1..3),
            proptest::option::of(-10i64..10),
            any::<bool>(),
        )
            .prop_map(
                |(n, status, days, products, since, held)| SubscriptionRecord {
                    status: Some(status),
                    current_period_end: Some(NOW + days * 86_400),
                    trial_end: Some(NOW + days * 3_600),
                    past_due_since: since.map(|d| NOW + d * 86_400),
                    items: products
                        .into_iter()
                        .map(|p| Item {
                            price_id: format!("price_{p}"),
                            product_id: Some(p.to_owned()),
                            lookup_key: None,
                        })
                        .collect(),
                    snapshot_created: NOW - 100 - i64::from(n % 50),
                    verified_at: NOW - 100,
                    hold_review_id: held.then_some(1),
                    ..SubscriptionRecord::placeholder(&format!("sub_{n}"), "cus_1")
                },
            )
    }

    /// Maps for some products (others unknown), and sometimes the
    /// customer's active entitlement summary.
    pub(crate) fn catalog() -> impl Strategy<Value = Catalog> {
        let features = || proptest::collection::vec(select(FEATURES.to_vec()), 0..3);
        (
            proptest::collection::vec(proptest::option::of(features()), PRODUCTS.len()),
            proptest::option::of(features()),
        )
            .prop_map(|(maps, summary)| {
                let owned =
                    |f: Vec<&str>| -> Vec<String> { f.into_iter().map(str::to_owned).collect() };
                let mut c = Catalog::new();
                for (product, map) in PRODUCTS.iter().zip(maps) {
                    if let Some(features) = map {
                        c.insert(*product, std::sync::Arc::from(owned(features)));
                    }
                }
                if let Some(features) = summary {
                    c.insert_summary("cus_1", std::sync::Arc::from(owned(features)));
                }
                c
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, failure_persistence: None, ..ProptestConfig::default() })]

        /// A feature is never granted where access is not, is granted only
        /// through a subscription whose product carries it, and is "not
        /// included" exactly when access is granted and the feature isn't.
        #[test]
        fn a_feature_grant_is_an_access_grant_through_a_carrier(
            records in proptest::collection::vec(record(), 0..4).prop_map(|mut rs| {
                // One subject's subscriptions have distinct ids.
                for (i, r) in rs.iter_mut().enumerate() {
                    r.id = format!("sub_{i}");
                }
                rs
            }),
            catalog in catalog(),
            feature in select(FEATURES.to_vec()),
        ) {
            let policy = Policy::default();
            let plain = decide(&records, NOW, &policy, None);
            let query = FeatureQuery { feature, catalog: &catalog };
            let d = decide_feature(&records, NOW, &policy, None, query);
            if d.has_access {
                prop_assert!(plain.has_access);
                let deciding = records.iter().find(|r| r.id == d.subscription_id).unwrap();
                prop_assert!(catalog.carrier(deciding, feature).is_some());
                prop_assert!(d.access_until <= plain.access_until || plain.access_until == 0);
            }
            prop_assert_eq!(
                d.reason == Reason::FeatureNotIncluded,
                plain.has_access && !d.has_access
            );
            // With every product carrying the feature, it is plain access.
            let mut all = Catalog::new();
            for p in PRODUCTS {
                all.insert(p, std::sync::Arc::from(vec![feature.to_owned()]));
            }
            let everywhere = decide_feature(&records, NOW, &policy, None, FeatureQuery { feature, catalog: &all });
            prop_assert_eq!(
                (everywhere.has_access, everywhere.reason, everywhere.access_until),
                (plain.has_access, plain.reason, plain.access_until)
            );
        }
    }
}
