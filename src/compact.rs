//! Subscription records as the HasAccess cache holds them: exactly what the
//! access decision reads ([`AccessFacts`]), in a fraction of the memory.
//!
//! With a million subjects cached, their records are most of the process.
//! A [`SubscriptionRecord`] carries what the state machine and the store
//! need besides (user, the watermark's event id), spends 16 bytes
//! on each optional time, and owns its items' price, product and lookup-key
//! strings, the same few strings in every record of the same plan. A
//! [`CompactRecord`] keeps the decision's inputs value for value (a bit mask
//! says which optional times are set), drops the rest, keeps its id inline
//! and points at its item list, shared process-wide with every record that
//! has an equal one ([`intern_items`]). A subject's [`Records`] keep a lone
//! record (the common case) inline too, so a cached subject with one
//! subscription owns no heap allocation of its own.

use std::collections::HashSet;
use std::ops::Deref;
use std::sync::{Arc, LazyLock, Mutex};

use crate::subscription::{AccessFacts, Item, PauseKind, Status, SubscriptionRecord};

/// What the decision reads of one subscription, compactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactRecord {
    id: Id,
    /// For the customer's active entitlement summary (feature checks of
    /// products whose maps are unknown).
    customer_id: Id,
    /// Interned: equal lists are one allocation.
    items: Arc<[Item]>,
    current_period_end: i64,
    paid_through: i64,
    trial_end: i64,
    cancel_at: i64,
    past_due_since: i64,
    hold_review_id: i64,
    snapshot_created: i64,
    verified_at: i64,
    /// Which optional times above are set: the `HAS_*` bits.
    present: u8,
    status: Option<Status>,
    pause: Option<PauseKind>,
    cancel_at_period_end: bool,
}

const HAS_CURRENT_PERIOD_END: u8 = 1;
const HAS_PAID_THROUGH: u8 = 1 << 1;
const HAS_TRIAL_END: u8 = 1 << 2;
const HAS_CANCEL_AT: u8 = 1 << 3;
const HAS_PAST_DUE_SINCE: u8 = 1 << 4;
const HAS_HOLD_REVIEW_ID: u8 = 1 << 5;

impl From<&SubscriptionRecord> for CompactRecord {
    fn from(r: &SubscriptionRecord) -> Self {
        let mut present = 0;
        let mut keep = |bit: u8, value: Option<i64>| match value {
            Some(v) => {
                present |= bit;
                v
            }
            None => 0,
        };
        let current_period_end = keep(HAS_CURRENT_PERIOD_END, r.current_period_end);
        let paid_through = keep(HAS_PAID_THROUGH, r.paid_through);
        let trial_end = keep(HAS_TRIAL_END, r.trial_end);
        let cancel_at = keep(HAS_CANCEL_AT, r.cancel_at);
        let past_due_since = keep(HAS_PAST_DUE_SINCE, r.past_due_since);
        let hold_review_id = keep(HAS_HOLD_REVIEW_ID, r.hold_review_id);
        CompactRecord {
            id: Id::new(&r.id),
            customer_id: Id::new(&r.customer_id),
            items: intern_items(&r.items),
            current_period_end,
            paid_through,
            trial_end,
            cancel_at,
            past_due_since,
            hold_review_id,
            snapshot_created: r.snapshot_created,
            verified_at: r.verified_at,
            present,
            status: r.status,
            pause: r.pause,
            cancel_at_period_end: r.cancel_at_period_end,
        }
    }
}

/// The longest id kept inline; Stripe's subscription ids have 28 bytes.
const INLINE_ID: usize = 30;

/// A subscription id, inline when it fits.
#[derive(Clone, PartialEq, Eq)]
enum Id {
    Inline { len: u8, bytes: [u8; INLINE_ID] },
    Heap(Box<str>),
}

impl Id {
    fn new(id: &str) -> Id {
        match u8::try_from(id.len()) {
            Ok(len) if id.len() <= INLINE_ID => {
                let mut bytes = [0; INLINE_ID];
                bytes[..id.len()].copy_from_slice(id.as_bytes());
                Id::Inline { len, bytes }
            }
            _ => Id::Heap(id.into()),
        }
    }

    fn as_str(&self) -> &str {
        match self {
            Id::Inline { len, bytes } => std::str::from_utf8(&bytes[..usize::from(*len)])
                .expect("BUG: an inline id holds the bytes of a str"),
            Id::Heap(id) => id,
        }
    }

    fn heap_bytes(&self) -> usize {
        match self {
            Id::Inline { .. } => 0,
            Id::Heap(id) => allocation_bytes(id.len()),
        }
    }
}

impl std::fmt::Debug for Id {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.as_str().fmt(f)
    }
}

/// One subject's records as the cache keeps them: a lone record inline,
/// several behind one `Arc`. Either way a slice of [`CompactRecord`]s, and
/// cheap to clone out of the cache (no allocation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Records {
    One(CompactRecord),
    Many(Arc<[CompactRecord]>),
}

impl Deref for Records {
    type Target = [CompactRecord];

    fn deref(&self) -> &[CompactRecord] {
        match self {
            Records::One(record) => std::slice::from_ref(record),
            Records::Many(records) => records,
        }
    }
}

impl Records {
    /// Heap bytes these records own alone, as the allocator counts them.
    pub fn heap_bytes(&self) -> usize {
        let own = match self {
            Records::One(_) => 0,
            // An `Arc`'s allocation starts with its two counts.
            Records::Many(records) => {
                allocation_bytes(2 * size_of::<usize>() + size_of_val(&**records))
            }
        };
        own + self.iter().map(CompactRecord::heap_bytes).sum::<usize>()
    }
}

/// One subject's records, compacted.
pub fn from_records(records: &[SubscriptionRecord]) -> Records {
    match records {
        [one] => Records::One(one.into()),
        many => Records::Many(many.iter().map(CompactRecord::from).collect()),
    }
}

impl CompactRecord {
    fn optional(&self, bit: u8, value: i64) -> Option<i64> {
        (self.present & bit != 0).then_some(value)
    }

    /// Heap bytes this record owns alone, as the allocator counts them:
    /// its id when too long to be inline, and its item list unless other
    /// records share it.
    pub fn heap_bytes(&self) -> usize {
        // The interner holds one reference and this record another; the
        // empty list is one for the whole process.
        let items = if !self.items.is_empty() && Arc::strong_count(&self.items) <= 2 {
            allocation_bytes(2 * size_of::<usize>() + size_of_val(&*self.items))
                + self
                    .items
                    .iter()
                    .map(|i| {
                        allocation_bytes(i.price_id.len())
                            + i.product_id
                                .as_deref()
                                .map_or(0, |s| allocation_bytes(s.len()))
                            + i.lookup_key
                                .as_deref()
                                .map_or(0, |s| allocation_bytes(s.len()))
                    })
                    .sum::<usize>()
        } else {
            0
        };
        self.id.heap_bytes() + self.customer_id.heap_bytes() + items
    }
}

/// What an allocation of `n` bytes takes from glibc's malloc on 64-bit
/// Linux: a 16-byte-aligned chunk with an 8-byte header, 32 bytes at
/// least; nothing for `n == 0` (Rust does not allocate).
pub fn allocation_bytes(n: usize) -> usize {
    if n == 0 {
        0
    } else {
        ((n + 8 + 15) & !15).max(32)
    }
}

impl AccessFacts for CompactRecord {
    fn id(&self) -> &str {
        self.id.as_str()
    }
    fn customer_id(&self) -> &str {
        self.customer_id.as_str()
    }
    fn status(&self) -> Option<Status> {
        self.status
    }
    fn current_period_end(&self) -> Option<i64> {
        self.optional(HAS_CURRENT_PERIOD_END, self.current_period_end)
    }
    fn paid_through(&self) -> Option<i64> {
        self.optional(HAS_PAID_THROUGH, self.paid_through)
    }
    fn trial_end(&self) -> Option<i64> {
        self.optional(HAS_TRIAL_END, self.trial_end)
    }
    fn cancel_at_period_end(&self) -> bool {
        self.cancel_at_period_end
    }
    fn cancel_at(&self) -> Option<i64> {
        self.optional(HAS_CANCEL_AT, self.cancel_at)
    }
    fn pause(&self) -> Option<PauseKind> {
        self.pause
    }
    fn past_due_since(&self) -> Option<i64> {
        self.optional(HAS_PAST_DUE_SINCE, self.past_due_since)
    }
    fn snapshot_created(&self) -> i64 {
        self.snapshot_created
    }
    fn verified_at(&self) -> i64 {
        self.verified_at
    }
    fn hold_review_id(&self) -> Option<i64> {
        self.optional(HAS_HOLD_REVIEW_ID, self.hold_review_id)
    }
    fn items(&self) -> &[Item] {
        &self.items
    }
}

/// Every distinct item list that cached records point at, once.
struct Interner {
    lists: HashSet<Arc<[Item]>>,
    /// How many lists were left after the last sweep; the next sweep comes
    /// when there are twice as many.
    swept_to: usize,
}

/// Below this many lists the interner is not swept.
const SWEEP_FLOOR: usize = 1024;

/// One interner for the process: every cache, every subject.
static ITEMS: LazyLock<Mutex<Interner>> = LazyLock::new(|| {
    Mutex::new(Interner {
        lists: HashSet::new(),
        swept_to: 0,
    })
});

/// The shared list equal to `items`. Lists no record points at any more
/// are dropped whenever the interner has doubled since its last sweep, so
/// it holds at most about twice the distinct lists in use.
pub fn intern_items(items: &[Item]) -> Arc<[Item]> {
    let mut interner = ITEMS.lock().expect("BUG: item interner poisoned");
    if let Some(shared) = interner.lists.get(items) {
        return shared.clone();
    }
    if interner.lists.len() >= (2 * interner.swept_to).max(SWEEP_FLOOR) {
        interner.lists.retain(|list| Arc::strong_count(list) > 1);
        interner.swept_to = interner.lists.len();
    }
    let shared: Arc<[Item]> = Arc::from(items);
    interner.lists.insert(shared.clone());
    shared
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(n: u32) -> Item {
        Item {
            price_id: format!("price_{n}"),
            product_id: Some(format!("prod_{n}")),
            lookup_key: n.is_multiple_of(2).then(|| format!("plan_{n}")),
        }
    }

    #[test]
    fn equal_item_lists_are_one_allocation() {
        let a = SubscriptionRecord {
            items: vec![item(7_001), item(7_002)],
            ..SubscriptionRecord::placeholder("sub_a", "cus_a")
        };
        let b = SubscriptionRecord {
            id: "sub_b".into(),
            ..a.clone()
        };
        let (ca, cb) = (CompactRecord::from(&a), CompactRecord::from(&b));
        assert!(Arc::ptr_eq(&ca.items, &cb.items));
        assert_eq!(ca.items(), &a.items[..]);
        // Shared lists are not this record's own bytes, nor is an inline id.
        assert_eq!(ca.heap_bytes(), 0);
    }

    #[test]
    fn ids_are_inline_up_to_thirty_bytes_and_exact_either_way() {
        let stripe = "sub_1MowQVLkdIwHu7ixeRlqHVzs";
        for id in [
            "",
            "s",
            stripe,
            &"x".repeat(30),
            &"é".repeat(15),
            &"y".repeat(31),
        ] {
            let c = CompactRecord::from(&SubscriptionRecord::placeholder(id, "cus_1"));
            assert_eq!((c.id(), c.customer_id()), (id, "cus_1"));
            let inline = id.len() <= INLINE_ID;
            assert_eq!(c.heap_bytes() == 0, inline, "{id}");
        }
        // A lone record is inline too: a one-subscription subject owns
        // nothing on the heap.
        let one = from_records(&[SubscriptionRecord::placeholder(stripe, "cus_1")]);
        assert!(matches!(one, Records::One(_)));
        assert_eq!((one.len(), one.heap_bytes()), (1, 0));
        let two = from_records(&[
            SubscriptionRecord::placeholder("sub_1", "cus_1"),
            SubscriptionRecord::placeholder("sub_2", "cus_1"),
        ]);
        assert_eq!(
            two.iter().map(|r| r.id()).collect::<Vec<_>>(),
            ["sub_1", "sub_2"]
        );
        assert_eq!(
            two.heap_bytes(),
            allocation_bytes(16 + 2 * size_of::<CompactRecord>())
        );
        assert!(from_records(&[]).is_empty());
    }

    #[test]
    fn every_optional_time_survives_including_zero_and_the_extremes() {
        for value in [None, Some(0), Some(-1), Some(i64::MIN), Some(i64::MAX)] {
            let r = SubscriptionRecord {
                current_period_end: value,
                paid_through: value,
                trial_end: value,
                cancel_at: value,
                past_due_since: value,
                hold_review_id: value,
                ..SubscriptionRecord::placeholder("sub_1", "cus_1")
            };
            let c = CompactRecord::from(&r);
            assert_eq!(
                (
                    c.current_period_end(),
                    c.paid_through(),
                    c.trial_end(),
                    c.cancel_at(),
                    c.past_due_since(),
                    c.hold_review_id()
                ),
                (value, value, value, value, value, value)
            );
        }
    }

    #[test]
    fn unused_lists_are_swept_once_the_interner_doubles() {
        // Lists nobody keeps: each is dropped right after interning.
        for n in 0..(3 * SWEEP_FLOOR as u32) {
            intern_items(&[item(1_000_000 + n)]);
        }
        let held = ITEMS.lock().unwrap().lists.len();
        assert!(held <= 2 * SWEEP_FLOOR + 64, "{held} lists held");
    }

    #[test]
    fn allocation_sizes_follow_glibc() {
        assert_eq!(allocation_bytes(0), 0);
        assert_eq!(allocation_bytes(1), 32);
        assert_eq!(allocation_bytes(24), 32);
        assert_eq!(allocation_bytes(25), 48);
        assert_eq!(allocation_bytes(120), 128);
    }
}

/// The decision from compact records is the decision from full ones, for
/// every policy entry point, over random records, products and catalogs.
#[cfg(test)]
mod same_decision {
    use super::*;
    use crate::policy::feature_properties::{catalog, FEATURES, PRODUCTS};
    use crate::policy::{self, FeatureQuery, Policy};
    use proptest::prelude::*;
    use proptest::sample::select;
    use std::time::Duration;

    const NOW: i64 = 1_800_000_000;

    /// A time near `NOW` (edges are where decisions flip), or none.
    fn time() -> impl Strategy<Value = Option<i64>> {
        proptest::option::of(prop_oneof![
            (-3i64..4).prop_map(|d| NOW + d * 86_400),
            (-2i64..3).prop_map(|s| NOW + s),
            Just(0i64),
        ])
    }

    fn item() -> impl Strategy<Value = Item> {
        (
            select(PRODUCTS.to_vec()),
            any::<bool>(),
            proptest::option::of(select(vec!["pro", "basic"])),
        )
            .prop_map(|(product, with_product, lookup_key)| Item {
                price_id: format!("price_{product}"),
                product_id: with_product.then(|| product.to_owned()),
                lookup_key: lookup_key.map(str::to_owned),
            })
    }

    fn pause() -> impl Strategy<Value = Option<PauseKind>> {
        proptest::option::of(select(vec![
            PauseKind::FirstPaymentFailure,
            PauseKind::FinalPaymentFailure,
            PauseKind::PauseRequested,
            PauseKind::TrialEndWithoutPaymentMethod,
            PauseKind::Other,
        ]))
    }

    fn record() -> impl Strategy<Value = SubscriptionRecord> {
        (
            (
                proptest::option::of(select(Status::ALL.to_vec())),
                time(),
                time(),
                time(),
                time(),
                time(),
            ),
            (
                any::<bool>(),
                pause(),
                proptest::option::of(1i64..3),
                proptest::collection::vec(item(), 0..3),
                -5i64..1,
                -40i64..1,
                select(vec!["cus_1", "cus_2"]),
            ),
        )
            .prop_map(
                |(
                    (status, current_period_end, paid_through, trial_end, cancel_at, since),
                    (
                        cancel_at_period_end,
                        pause,
                        hold,
                        items,
                        created_days,
                        verified_min,
                        customer,
                    ),
                )| SubscriptionRecord {
                    status,
                    current_period_end,
                    paid_through,
                    trial_end,
                    cancel_at,
                    past_due_since: since,
                    cancel_at_period_end,
                    pause,
                    hold_review_id: hold,
                    items,
                    snapshot_created: NOW + created_days * 86_400,
                    verified_at: NOW + verified_min * 60,
                    user_id: Some("u1".to_owned()),
                    snapshot_event_id: "evt_1".to_owned(),
                    ..SubscriptionRecord::placeholder("sub", customer)
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn compact_records_decide_exactly_as_full_ones(
            records in proptest::collection::vec(record(), 0..4).prop_map(|mut rs| {
                for (i, r) in rs.iter_mut().enumerate() {
                    r.id = format!("sub_{i}");
                }
                rs
            }),
            product in proptest::option::of(select(vec!["prod_a", "prod_b", "pro", "price_prod_c"])),
            catalog in catalog(),
            feature in select(FEATURES.to_vec()),
            grace_days in 0u64..3,
        ) {
            let compact = from_records(&records);
            prop_assert_eq!(compact.len(), records.len());
            let policy = Policy::default();
            let grace = Duration::from_secs(grace_days * 86_400);
            let query = FeatureQuery { feature, catalog: &catalog };
            prop_assert_eq!(
                policy::decide(&compact, NOW, &policy, product),
                policy::decide(&records, NOW, &policy, product)
            );
            prop_assert_eq!(
                policy::decide_with_stale_grace(&compact, NOW, &policy, product, grace, "down"),
                policy::decide_with_stale_grace(&records, NOW, &policy, product, grace, "down")
            );
            prop_assert_eq!(
                policy::decide_feature(&compact, NOW, &policy, product, query),
                policy::decide_feature(&records, NOW, &policy, product, query)
            );
            prop_assert_eq!(
                policy::decide_feature_with_stale_grace(&compact, NOW, &policy, product, query, grace, "down"),
                policy::decide_feature_with_stale_grace(&records, NOW, &policy, product, query, grace, "down")
            );
            for (c, r) in compact.iter().zip(&records) {
                prop_assert_eq!(
                    policy::needs_refresh(c, NOW, &policy, Duration::from_secs(600)),
                    policy::needs_refresh(r, NOW, &policy, Duration::from_secs(600))
                );
                prop_assert_eq!(policy::judge(c, NOW, &policy), policy::judge(r, NOW, &policy));
                prop_assert_eq!(catalog.features_for(c), catalog.features_for(r));
            }
            prop_assert_eq!(
                crate::catalog::products_of(&compact),
                crate::catalog::products_of(&records)
            );
            prop_assert_eq!(
                crate::catalog::needing_summaries(&compact, &catalog),
                crate::catalog::needing_summaries(&records, &catalog)
            );
        }
    }
}
