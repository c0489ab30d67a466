//! `classify` on Stripe-shaped events built from structured input.
//!
//! The input picks one of `HANDLED_TYPES` and starts from the real Stripe
//! object for it (the fixtures in `tests/fixtures/stripe/`, basil shape),
//! then applies up to 16 edits at keys Tollgate reads or that sit next to
//! them: set a value of any JSON type (huge and negative integers, floats,
//! expanded objects, arrays, odd strings) or remove the key. The event is
//! written as JSON, parsed back with `parse_envelope` and classified.
//! Subscription snapshots are then applied to a placeholder record, paid
//! invoices with `apply_payment`, and the resulting record is judged.
//!
//! Layout (what the seeds in `fuzz/seeds/classify/` encode): one byte picks
//! the type (`b % 14`), 8 bytes `created` (i64 LE), then per edit: a byte
//! whose low bit says whether another edit follows, a byte for the key, a
//! byte for the operation and the value's own bytes. An empty input is the
//! first type with its fixture unchanged.
#![no_main]

use std::sync::OnceLock;

use arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};
use tollgate::event::{classify, parse_envelope, DomainEvent, HANDLED_TYPES};
use tollgate::policy::{decide, Policy};
use tollgate::subscription::{
    apply_payment, apply_snapshot, Authority, Stamp, Status, SubscriptionRecord, Transition,
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Checkout,
    Subscription,
    Invoice,
    Customer,
    Product,
    Summary,
}

fn kind_of(event_type: &str) -> Kind {
    if event_type.starts_with("checkout.") {
        Kind::Checkout
    } else if event_type.starts_with("customer.subscription.") {
        Kind::Subscription
    } else if event_type.starts_with("invoice.") {
        Kind::Invoice
    } else if event_type.starts_with("product.") {
        Kind::Product
    } else if event_type.starts_with("entitlements.") {
        Kind::Summary
    } else {
        Kind::Customer
    }
}

fn template(kind: Kind) -> &'static Value {
    static T: OnceLock<[Value; 6]> = OnceLock::new();
    let all = T.get_or_init(|| {
        let parse = |s: &str| serde_json::from_str(s).expect("fixture is JSON");
        [
            parse(include_str!(
                "../../tests/fixtures/stripe/checkout_session.json"
            )),
            parse(include_str!(
                "../../tests/fixtures/stripe/subscription.json"
            )),
            parse(include_str!("../../tests/fixtures/stripe/invoice.json")),
            parse(include_str!("../../tests/fixtures/stripe/customer.json")),
            // No product fixture is vendored; Tollgate reads only its id.
            json!({"id": "prod_QXg1hqf4jFNsqG", "object": "product", "name": "Pro"}),
            parse(include_str!(
                "../../tests/fixtures/stripe/active_entitlement_summary.json"
            )),
        ]
    });
    &all[kind as usize]
}

#[derive(Clone, Copy)]
enum Seg {
    Key(&'static str),
    At(usize),
}
use Seg::{At, Key};

/// Keys Tollgate reads, per object kind, and their neighbours.
fn paths(kind: Kind) -> &'static [&'static [Seg]] {
    match kind {
        Kind::Checkout => &[
            &[Key("object")],
            &[Key("id")],
            &[Key("client_reference_id")],
            &[Key("metadata")],
            &[Key("metadata"), Key("user_id")],
            &[Key("customer")],
            &[Key("customer"), Key("id")],
            &[Key("subscription")],
            &[Key("subscription"), Key("id")],
        ],
        Kind::Subscription => &[
            &[Key("object")],
            &[Key("id")],
            &[Key("customer")],
            &[Key("customer"), Key("id")],
            &[Key("status")],
            &[Key("current_period_end")],
            &[Key("trial_end")],
            &[Key("cancel_at_period_end")],
            &[Key("metadata")],
            &[Key("metadata"), Key("user_id")],
            &[Key("items")],
            &[Key("items"), Key("data")],
            &[Key("items"), Key("data"), At(0)],
            &[Key("items"), Key("data"), At(0), Key("current_period_end")],
            &[Key("items"), Key("data"), At(0), Key("price")],
            &[Key("items"), Key("data"), At(0), Key("price"), Key("id")],
            &[
                Key("items"),
                Key("data"),
                At(0),
                Key("price"),
                Key("product"),
            ],
            &[
                Key("items"),
                Key("data"),
                At(0),
                Key("price"),
                Key("lookup_key"),
            ],
            &[Key("items"), Key("data"), At(0), Key("plan"), Key("id")],
            &[Key("items"), Key("data"), At(1), Key("current_period_end")],
            &[Key("items"), Key("data"), At(1), Key("price"), Key("id")],
        ],
        Kind::Invoice => &[
            &[Key("object")],
            &[Key("customer")],
            &[Key("customer"), Key("id")],
            &[Key("subscription")],
            &[Key("parent")],
            &[Key("parent"), Key("subscription_details")],
            &[
                Key("parent"),
                Key("subscription_details"),
                Key("subscription"),
            ],
            &[Key("lines")],
            &[Key("lines"), Key("data")],
            &[Key("lines"), Key("data"), At(0)],
            &[Key("lines"), Key("data"), At(0), Key("period"), Key("end")],
            &[Key("lines"), Key("data"), At(0), Key("subscription")],
            &[
                Key("lines"),
                Key("data"),
                At(0),
                Key("parent"),
                Key("subscription_item_details"),
                Key("subscription"),
            ],
            &[Key("lines"), Key("data"), At(1), Key("period"), Key("end")],
            &[Key("lines"), Key("data"), At(1), Key("subscription")],
        ],
        Kind::Product => &[&[Key("object")], &[Key("id")], &[Key("name")]],
        Kind::Summary => &[
            &[Key("object")],
            &[Key("customer")],
            &[Key("customer_account")],
            &[Key("entitlements")],
            &[Key("entitlements"), Key("has_more")],
            &[Key("entitlements"), Key("data")],
            &[Key("entitlements"), Key("data"), At(0)],
            &[Key("entitlements"), Key("data"), At(0), Key("lookup_key")],
            &[Key("entitlements"), Key("data"), At(0), Key("feature")],
            &[
                Key("entitlements"),
                Key("data"),
                At(0),
                Key("feature"),
                Key("lookup_key"),
            ],
            &[Key("entitlements"), Key("data"), At(1)],
        ],
        Kind::Customer => &[
            &[Key("object")],
            &[Key("id")],
            &[Key("metadata")],
            &[Key("metadata"), Key("user_id")],
        ],
    }
}

const WORDS: &[&str] = &[
    "",
    "subscription",
    "subscription_item",
    "invoice",
    "customer",
    "checkout.session",
    "sub_fuzz",
    "cus_fuzz",
    "u_fuzz",
    "price_fuzz",
    "prod_fuzz",
    "incomplete",
    "incomplete_expired",
    "trialing",
    "active",
    "past_due",
    "canceled",
    "unpaid",
    "paused",
    "ACTIVE",
    "active ",
    "\u{0}",
    "é",
];

const EXTREMES: &[i64] = &[
    i64::MIN,
    i64::MIN + 1,
    -86_400,
    -1,
    0,
    1,
    946_684_800,
    4_102_444_800,
    253_402_300_799,
    253_402_300_800,
    i64::MAX - 1,
    i64::MAX,
];

fn value(u: &mut Unstructured, depth: u8) -> Result<Value> {
    let top = if depth == 0 { 6 } else { 9 };
    Ok(match u.int_in_range(0..=top)? {
        0 => Value::Null,
        1 => Value::Bool(u.arbitrary()?),
        2 => json!(u.arbitrary::<i64>()?),
        3 => json!(*u.choose(EXTREMES)?),
        4 => {
            // Integers JSON can carry but i64 cannot.
            let big: u64 = u.arbitrary()?;
            json!(big | (1 << 63))
        }
        5 => {
            let f = f64::from_bits(u.arbitrary()?);
            if f.is_finite() {
                json!(f)
            } else {
                json!(1.5e300)
            }
        }
        6 => {
            if u.arbitrary()? {
                json!(*u.choose(WORDS)?)
            } else {
                let len = usize::from(u.arbitrary::<u8>()? % 32);
                json!(String::from_utf8_lossy(u.bytes(len.min(u.len()))?))
            }
        }
        7 => {
            let n = u.int_in_range(0..=3)?;
            Value::Array((0..n).map(|_| value(u, depth - 1)).collect::<Result<_>>()?)
        }
        8 => json!({ "id": value(u, depth - 1)? }),
        _ => {
            let mut map = Map::new();
            for _ in 0..u.int_in_range(0..=3)? {
                let key = *u.choose(&["id", "end", "subscription", "user_id", "data", "object"])?;
                map.insert(key.to_owned(), value(u, depth - 1)?);
            }
            Value::Object(map)
        }
    })
}

/// Sets `path` to `v`, making objects and array slots on the way as needed.
fn set(target: &mut Value, path: &[Seg], v: Value) {
    let Some((first, rest)) = path.split_first() else {
        *target = v;
        return;
    };
    let slot = match *first {
        Key(k) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            target
                .as_object_mut()
                .expect("just made an object")
                .entry(k)
                .or_insert(Value::Null)
        }
        At(i) => {
            if !target.is_array() {
                *target = Value::Array(Vec::new());
            }
            let items = target.as_array_mut().expect("just made an array");
            if items.len() <= i {
                items.resize(i + 1, json!({}));
            }
            &mut items[i]
        }
    };
    set(slot, rest, v);
}

fn remove(target: &mut Value, path: &[Seg]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut node = target;
    for seg in parent {
        let next = match *seg {
            Key(k) => node.get_mut(k),
            At(i) => node.get_mut(i),
        };
        match next {
            Some(n) => node = n,
            None => return,
        }
    }
    match *last {
        Key(k) => {
            if let Some(map) = node.as_object_mut() {
                map.remove(k);
            }
        }
        At(i) => {
            if let Some(items) = node.as_array_mut() {
                if i < items.len() {
                    items.remove(i);
                }
            }
        }
    }
}

/// `FUZZ_DEBUG=1` prints each built event (to check what a seed encodes).
fn debug() -> bool {
    static DEBUG: OnceLock<bool> = OnceLock::new();
    *DEBUG.get_or_init(|| std::env::var_os("FUZZ_DEBUG").is_some())
}

fn run(u: &mut Unstructured) -> Result<()> {
    let event_type = *u.choose(HANDLED_TYPES)?;
    let created: i64 = u.arbitrary()?;
    let kind = kind_of(event_type);
    let mut object = template(kind).clone();
    let paths = paths(kind);
    for _ in 0..16 {
        if !u.arbitrary::<bool>()? {
            break;
        }
        let path = *u.choose(paths)?;
        if u.ratio(1, 4)? {
            remove(&mut object, path);
        } else {
            let v = value(u, 2)?;
            set(&mut object, path, v);
        }
    }
    let api_version = *u.choose(&[None, Some("2025-02-24.acacia"), Some("2025-03-31.basil")])?;
    let event = json!({
        "id": "evt_fuzz",
        "object": "event",
        "api_version": api_version,
        "created": created,
        "livemode": false,
        "type": event_type,
        "data": { "object": object },
    });
    let body = serde_json::to_vec(&event).expect("a Value serializes");
    if debug() {
        eprintln!("{}", String::from_utf8_lossy(&body));
    }
    let envelope = parse_envelope(&body).expect("a well-formed envelope parses");
    assert_eq!(envelope.created, created);

    let Ok(domain) = classify(&envelope, "user_id") else {
        return Ok(());
    };
    // Dispatch follows the type, whatever the object holds.
    let consistent = match kind {
        Kind::Checkout => matches!(domain, DomainEvent::CheckoutCompleted(_)),
        Kind::Subscription => matches!(domain, DomainEvent::Subscription(_)),
        Kind::Customer => matches!(domain, DomainEvent::Customer(_)),
        Kind::Product => matches!(domain, DomainEvent::ProductChanged(_)),
        Kind::Summary => match &domain {
            DomainEvent::EntitlementSummary(s) => {
                assert!(!s.customer_id.is_empty());
                assert!(s.features.windows(2).all(|w| w[0] < w[1]), "{s:?}");
                assert!(s.features.iter().all(|f| !f.is_empty()), "{s:?}");
                true
            }
            _ => false,
        },
        Kind::Invoice if event_type == "invoice.payment_failed" => {
            matches!(domain, DomainEvent::InvoiceFailed(_))
        }
        Kind::Invoice => matches!(domain, DomainEvent::InvoicePaid(_) | DomainEvent::Unhandled),
    };
    assert!(consistent, "{event_type} classified as {domain:?}");

    let policy = Policy::default();
    match domain {
        DomainEvent::Subscription(snap) => {
            assert!(!snap.id.is_empty() && !snap.customer_id.is_empty());
            assert!(Status::ALL.contains(&snap.status));
            let placeholder = SubscriptionRecord::placeholder(&snap.id, &snap.customer_id);
            let stamp = Stamp {
                created: envelope.created,
                event_id: envelope.id.clone(),
            };
            let Transition::Apply {
                record,
                tie,
                corrected,
            } = apply_snapshot(Some(&placeholder), &snap, &stamp, Authority::Event)
            else {
                panic!("a snapshot always lands on a placeholder");
            };
            assert_eq!((tie, corrected), (None, None));
            assert_eq!(record.status, Some(snap.status));
            assert_eq!(record.current_period_end, Some(snap.current_period_end));
            assert_eq!(record.verified_at, created.max(0));
            assert_eq!(
                apply_snapshot(Some(&record), &snap, &stamp, Authority::Event),
                Transition::Stale
            );
            let d = decide(std::slice::from_ref(&*record), created, &policy, None);
            assert_eq!(d.has_access, d.reason.grants());
        }
        DomainEvent::InvoicePaid(paid) => {
            let record = apply_payment(
                None,
                &paid.subscription_id,
                &paid.customer_id,
                paid.period_end,
                created,
            );
            assert_eq!(record.paid_through, paid.period_end);
            assert_eq!(record.status, None);
            let d = decide(std::slice::from_ref(&record), created, &policy, None);
            assert!(!d.has_access, "an invoice alone grants nothing: {d:?}");
        }
        _ => {}
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
