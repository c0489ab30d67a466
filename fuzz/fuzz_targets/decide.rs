//! The access decision: `judge`, `decide`, `decide_with_stale_grace` and
//! `needs_refresh` over any records, any `now` and any durations.
//!
//! Layout (what the seeds in `fuzz/seeds/decide/` encode): a byte for the
//! kind of `now` and its bytes, three durations (past_due grace, stale
//! grace, stale after), a product byte, a record count byte (`b % 7`), then
//! per record its status byte (`b % 9`, 8 = no status yet) and its fields.
//! Times are chosen relative to `now` or anywhere in `i64`; missing bytes
//! read as zero.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tollgate::clock::{SANE_MAX, SANE_MIN};
use tollgate::policy::{
    decide, decide_with_stale_grace, judge, matches_product, needs_refresh, Policy, Reason,
};
use tollgate::subscription::{Item, PauseKind, Status, SubscriptionRecord};

fn now(u: &mut Unstructured) -> Result<i64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => u.int_in_range(SANE_MIN..=SANE_MAX)?,
        1 => u.arbitrary()?,
        2 => i64::MIN,
        _ => i64::MAX,
    })
}

/// A time near `now` (so edges like `period_end == now` are found), or
/// anywhere at all.
fn time(u: &mut Unstructured, now: i64) -> Result<i64> {
    Ok(match u.int_in_range(0..=5u8)? {
        0 => now.saturating_add(i64::from(u.arbitrary::<i32>()?)),
        1 => now,
        2 => u.arbitrary()?,
        3 => i64::MIN,
        4 => i64::MAX,
        _ => 0,
    })
}

fn opt_time(u: &mut Unstructured, now: i64) -> Result<Option<i64>> {
    Ok(if u.arbitrary()? {
        Some(time(u, now)?)
    } else {
        None
    })
}

fn duration(u: &mut Unstructured) -> Result<Duration> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => Duration::from_secs(u64::from(u.arbitrary::<u32>()?)),
        1 => Duration::new(u.arbitrary()?, u.int_in_range(0..=999_999_999)?),
        2 => Duration::MAX,
        _ => Duration::ZERO,
    })
}

fn record(u: &mut Unstructured, i: usize, now: i64) -> Result<SubscriptionRecord> {
    let status = match u.int_in_range(0..=8u8)? {
        8 => None,
        s => Some(Status::ALL[usize::from(s)]),
    };
    let mut items = Vec::new();
    for _ in 0..u.int_in_range(0..=2u8)? {
        items.push(Item {
            price_id: (*u.choose(&["price_a", "price_b", ""])?).to_owned(),
            product_id: u
                .choose(&[None, Some("prod_a"), Some("prod_b")])?
                .map(str::to_owned),
            lookup_key: u.choose(&[None, Some("pro")])?.map(str::to_owned),
        });
    }
    Ok(SubscriptionRecord {
        status,
        current_period_end: opt_time(u, now)?,
        paid_through: opt_time(u, now)?,
        trial_end: opt_time(u, now)?,
        cancel_at_period_end: u.arbitrary()?,
        cancel_at: opt_time(u, now)?,
        pause: *u.choose(&[
            None,
            Some(PauseKind::FirstPaymentFailure),
            Some(PauseKind::FinalPaymentFailure),
            Some(PauseKind::Other),
        ])?,
        past_due_since: opt_time(u, now)?,
        items,
        snapshot_created: time(u, now)?,
        verified_at: time(u, now)?,
        hold_review_id: if u.arbitrary()? {
            Some(u.arbitrary()?)
        } else {
            None
        },
        ..SubscriptionRecord::placeholder(&format!("sub_{i}"), "cus_1")
    })
}

/// `FUZZ_DEBUG=1` prints each input (to check what a seed encodes).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some())
}

fn run(u: &mut Unstructured) -> Result<()> {
    let now = now(u)?;
    let policy = Policy {
        past_due_grace: duration(u)?,
    };
    let stale_grace = duration(u)?;
    let stale_after = duration(u)?;
    let product = *u.choose(&[None, Some("prod_a"), Some("pro")])?;
    let mut records = Vec::new();
    for i in 0..u.int_in_range(0..=6u8)? {
        records.push(record(u, usize::from(i), now)?);
    }

    if debug() {
        eprintln!("now={now} {policy:?} stale_grace={stale_grace:?} stale_after={stale_after:?} product={product:?}");
        for r in &records {
            eprintln!("  {r:?}");
        }
    }

    // Each record on its own.
    let mut judged = Vec::new();
    for r in &records {
        let Some(d) = judge(r, now, &policy) else {
            assert!(r.status.is_none(), "only placeholders are not judged");
            continue;
        };
        assert_eq!(d.has_access, d.reason.grants(), "{d:?}");
        assert!(!d.detail.is_empty());
        assert_eq!(d.status, r.status);
        assert_eq!(d.subscription_id, r.id);
        match d.reason {
            // A grant in its own right lasts until a time still to come.
            Reason::Active | Reason::Trialing | Reason::PastDueGrace => {
                assert!(d.access_until > now, "{d:?} at {now}");
                assert_eq!(d.access_ended_at, None, "{d:?}");
            }
            // A held revocation lasts until the review is resolved: no end.
            Reason::ReviewHold => {
                assert!(r.hold_review_id.is_some());
                assert_eq!((d.access_until, d.access_ended_at), (0, None), "{d:?}");
            }
            Reason::StaleGrace | Reason::NoSubscription => panic!("judge said {d:?}"),
            // Denials never end.
            _ => assert_eq!(d.access_until, 0, "{d:?}"),
        }
        // A refresh is only ever asked for a denial, never for a grant, and
        // asking sooner than `stale_after` asks at least as often.
        let refresh = needs_refresh(r, now, &policy, stale_after);
        if refresh {
            assert!(!d.has_access && d.access_ended_at.is_some(), "{d:?}");
            assert!(needs_refresh(r, now, &policy, stale_after / 2));
            assert!(needs_refresh(r, now, &policy, Duration::ZERO));
        }
        if matches_product(r, product) {
            judged.push(d);
        }
    }
    for r in records.iter().filter(|r| r.status.is_none()) {
        assert!(!needs_refresh(r, now, &policy, stale_after));
    }

    // All of a subject's records: any grant beats any denial, and among
    // grants the latest `access_until` wins.
    let d = decide(&records, now, &policy, product);
    assert_eq!(d.has_access, d.reason.grants(), "{d:?}");
    assert_eq!(d.has_access, judged.iter().any(|j| j.has_access));
    if judged.is_empty() {
        assert_eq!(d.reason, Reason::NoSubscription);
        assert_eq!((d.access_until, d.status), (0, None));
    } else {
        assert!(judged.contains(&d), "{d:?} is none of the records' own");
    }
    if d.has_access {
        let latest = judged
            .iter()
            .filter(|j| j.has_access)
            .map(|j| j.access_until)
            .max();
        assert_eq!(Some(d.access_until), latest);
    }

    // Stripe unreachable: a local grant stands; a refreshable denial may
    // become a stale grace that ends later than now; otherwise the local
    // denial stands.
    let s = decide_with_stale_grace(&records, now, &policy, product, stale_grace, "fuzz");
    assert_eq!(s.has_access, s.reason.grants(), "{s:?}");
    if d.has_access {
        assert_eq!(s, d);
    } else if s.has_access {
        assert_eq!(s.reason, Reason::StaleGrace, "{s:?}");
        assert!(s.access_until > now, "{s:?} at {now}");
        let ended = s.access_ended_at.expect("a stale grace counts from an end");
        assert!(judged
            .iter()
            .any(|j| !j.has_access && j.access_ended_at == Some(ended)));
        assert!(s.detail.ends_with('Z'), "{}", s.detail);
    } else {
        assert_eq!(
            (s.reason, s.access_until, &s.subscription_id),
            (d.reason, d.access_until, &d.subscription_id)
        );
        assert!(s.detail.ends_with("; fuzz"), "{}", s.detail);
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
