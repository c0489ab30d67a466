//! The in-memory cache in front of the store for HasAccess.
//!
//! It holds each subject's subscription *records*, not decisions: the
//! decision is recomputed from the records and the clock at query time, so
//! time-based expiry is exact. Every commit invalidates the subjects it
//! touched before the webhook is acknowledged.
//!
//! A load that raced a commit must not put stale records back after the
//! commit's invalidation. Each subject hashes to one of a fixed set of
//! *epochs*; invalidation bumps the epoch, and a load inserts only if the
//! epoch it saw before reading the store is still current.
//!
//! Records are kept compact ([`crate::compact::CompactRecord`]) in a map of its own
//! ([`subjects`]), so a million cached subjects take a few hundred bytes
//! each, bookkeeping included.

mod subjects;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use moka::sync::Cache;

pub use crate::compact::Records;
use crate::store::StoreEvent;
use crate::subject::{Affected, Subject};
use subjects::SubjectMap;

const EPOCH_BUCKETS: usize = 4096;

pub struct SubjectCache {
    /// Off while invalidations from other replicas may be missed.
    enabled: std::sync::atomic::AtomicBool,
    records: SubjectMap,
    /// Invalidation counters, one per hash bucket of subjects.
    epochs: Box<[AtomicU64]>,
    /// Customers Stripe said have no subscriptions, so HasAccess does not
    /// ask again for `stale_after`.
    absent_customers: Cache<String, ()>,
    /// Known feature maps by product. Few (a product catalog), invalidated
    /// like subjects when a `product.updated` commits anywhere.
    products: Cache<String, Arc<[String]>>,
    /// Bumped by every product invalidation: a map read from Stripe before
    /// it is not cached (it may predate the change).
    product_epoch: AtomicU64,
    /// Active entitlement summaries by customer (`None`: none stored), for
    /// feature checks whose product maps are unknown. Invalidated with the
    /// customer, and ticketed by the customer's epoch.
    summaries: Cache<String, Option<Arc<[String]>>>,
}

/// Products whose feature maps are kept in memory; far more than any
/// catalog has.
const PRODUCT_CAPACITY: u64 = 100_000;

/// A snapshot of a subject's epoch, taken before reading the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    bucket: usize,
    epoch: u64,
}

/// What one cached subject costs in memory, as the allocator counts it:
/// its entry in the map (a lone record is inline there) and whatever its
/// key and records own on the heap (item lists shared with other records
/// are not counted: there is one per distinct plan, not per subject). The
/// map evicts by this weight, so the ceiling is in bytes however long a
/// caller's ids or a subscription's item list are.
pub fn weigh(subject: &Subject, records: &Records) -> u32 {
    let bytes = SubjectMap::entry_bytes(subject) + records.heap_bytes();
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

/// Summaries kept in memory: one per customer whose feature checks needed
/// one, small lists of lookup keys.
const SUMMARY_CAPACITY: u64 = 100_000;

/// Remembered "no subscriptions in Stripe" answers are few and small; this
/// many is plenty and bounds them whatever callers ask about.
const ABSENT_CAPACITY: u64 = 100_000;

impl SubjectCache {
    /// A cache that holds at most about `max_bytes` of records.
    pub fn new(max_bytes: u64, ttl: Duration, absent_ttl: Duration) -> Self {
        SubjectCache {
            enabled: std::sync::atomic::AtomicBool::new(true),
            records: SubjectMap::new(max_bytes, ttl),
            epochs: (0..EPOCH_BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            absent_customers: Cache::builder()
                .max_capacity(ABSENT_CAPACITY)
                .time_to_live(absent_ttl.max(Duration::from_millis(1)))
                .build(),
            products: Cache::builder()
                .max_capacity(PRODUCT_CAPACITY)
                .time_to_live(ttl)
                .build(),
            product_epoch: AtomicU64::new(0),
            summaries: Cache::builder()
                .max_capacity(SUMMARY_CAPACITY)
                .time_to_live(ttl)
                .build(),
        }
    }

    /// `customer`'s active entitlement summary as last read from the store
    /// (`Some(None)`: it has none); `None` when not cached.
    pub fn summary(&self, customer: &str) -> Option<Option<Arc<[String]>>> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        self.summaries.get(customer)
    }

    /// Keeps what the store said of `customer`'s summary, unless the
    /// customer was invalidated since `ticket` (taken with
    /// [`SubjectCache::ticket`] for `Subject::Customer`).
    pub fn insert_summary(&self, customer: &str, ticket: Ticket, summary: Option<Arc<[String]>>) {
        if self.enabled.load(Ordering::Acquire)
            && self.epochs[ticket.bucket].load(Ordering::Acquire) == ticket.epoch
        {
            self.summaries.insert(customer.to_owned(), summary);
        }
    }

    /// `product`'s feature map, when known here.
    pub fn product_features(&self, product: &str) -> Option<Arc<[String]>> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        self.products.get(product)
    }

    /// The product epoch to pass to [`SubjectCache::insert_product`],
    /// taken before the map is read.
    pub fn product_ticket(&self) -> u64 {
        self.product_epoch.load(Ordering::Acquire)
    }

    /// Keeps `product`'s map unless a product changed since `ticket`.
    pub fn insert_product(&self, product: &str, features: Arc<[String]>, ticket: u64) {
        if self.enabled.load(Ordering::Acquire)
            && self.product_epoch.load(Ordering::Acquire) == ticket
        {
            self.products.insert(product.to_owned(), features);
        }
    }

    /// The weighed size of everything cached now.
    pub fn weighted_bytes(&self) -> u64 {
        self.records.weighted_size()
    }

    fn bucket(subject: &Subject) -> usize {
        let mut h = DefaultHasher::new();
        subject.hash(&mut h);
        (h.finish() as usize) % EPOCH_BUCKETS
    }

    pub fn get(&self, subject: &Subject) -> Option<Records> {
        if !self.enabled.load(Ordering::Acquire) {
            return None;
        }
        self.records.get(subject)
    }

    /// Turns caching off (every read goes to the store) or back on.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Release);
    }

    /// Applies what the store says changed elsewhere (another replica's
    /// commit, or a listener that lost or regained its connection).
    pub fn apply(&self, event: &StoreEvent) {
        match event {
            StoreEvent::Changed(affected) => self.invalidate(affected),
            StoreEvent::Unknown => self.clear(),
            StoreEvent::Lost => {
                // Changes may be missed until the store listens again:
                // serve from the database meanwhile.
                self.set_enabled(false);
                self.clear();
            }
            StoreEvent::Listening => {
                // Anything committed while nobody listened may be cached.
                self.clear();
                self.set_enabled(true);
            }
        }
    }

    /// Call before reading the store for `subject`.
    pub fn ticket(&self, subject: &Subject) -> Ticket {
        let bucket = Self::bucket(subject);
        Ticket {
            bucket,
            epoch: self.epochs[bucket].load(Ordering::Acquire),
        }
    }

    /// Caches what was read, unless an invalidation happened since `ticket`.
    pub fn insert(&self, subject: Subject, ticket: Ticket, records: Records) {
        if self.enabled.load(Ordering::Acquire)
            && self.epochs[ticket.bucket].load(Ordering::Acquire) == ticket.epoch
        {
            let weight = weigh(&subject, &records);
            self.records.insert(&subject, records, weight);
        }
    }

    fn invalidate_subject(&self, subject: &Subject) {
        self.epochs[Self::bucket(subject)].fetch_add(1, Ordering::AcqRel);
        self.records.invalidate(subject);
    }

    /// Drops everything a commit touched, including remembered absences.
    pub fn invalidate(&self, affected: &Affected) {
        for c in &affected.customers {
            self.invalidate_subject(&Subject::Customer(c.clone()));
            self.absent_customers.invalidate(c);
            self.summaries.invalidate(c);
        }
        for u in &affected.users {
            self.invalidate_subject(&Subject::User(u.clone()));
        }
        if !affected.products.is_empty() {
            self.product_epoch.fetch_add(1, Ordering::AcqRel);
            for p in &affected.products {
                self.products.invalidate(p);
            }
        }
    }

    /// Forgets everything; used when invalidations may have been missed.
    pub fn clear(&self) {
        for e in self.epochs.iter() {
            e.fetch_add(1, Ordering::AcqRel);
        }
        self.records.clear();
        self.absent_customers.invalidate_all();
        self.summaries.invalidate_all();
        self.product_epoch.fetch_add(1, Ordering::AcqRel);
        self.products.invalidate_all();
    }

    pub fn is_known_absent(&self, customer: &str) -> bool {
        self.absent_customers.contains_key(customer)
    }

    pub fn remember_absent(&self, customer: &str) {
        self.absent_customers.insert(customer.to_owned(), ());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> SubjectCache {
        SubjectCache::new(1 << 20, Duration::from_secs(60), Duration::from_secs(60))
    }

    #[test]
    fn the_cache_holds_bytes_not_entries() {
        let c = SubjectCache::new(64 * 1024, Duration::from_secs(60), Duration::from_secs(60));
        let record = crate::subscription::SubscriptionRecord::placeholder("sub_1", "cus_1");
        let records = crate::compact::from_records(&vec![record; 4]);
        let one = u64::from(weigh(&Subject::User("u".into()), &records));
        assert!(one > 4 * std::mem::size_of::<crate::compact::CompactRecord>() as u64);
        for i in 0..1000 {
            let s = Subject::User(format!("user_{i}"));
            let t = c.ticket(&s);
            c.insert(s, t, records.clone());
        }
        let held = c.weighted_bytes();
        assert!(held <= 64 * 1024, "{held} bytes held");
        assert!(
            held >= 64 * 1024 - 2 * one,
            "{held} bytes held: the cache fills up to its ceiling"
        );
    }

    #[test]
    fn a_load_that_raced_an_invalidation_is_not_cached() {
        let c = cache();
        let s = Subject::Customer("cus_1".into());
        let ticket = c.ticket(&s);
        let mut affected = Affected::default();
        affected.add_customer("cus_1");
        c.invalidate(&affected);
        c.insert(s.clone(), ticket, crate::compact::from_records(&[]));
        assert!(c.get(&s).is_none());
        let ticket = c.ticket(&s);
        c.insert(s.clone(), ticket, crate::compact::from_records(&[]));
        assert!(c.get(&s).is_some());
    }

    #[test]
    fn store_events_invalidate_clear_or_switch_the_cache_off_and_on() {
        let c = cache();
        let s = Subject::User("u1".into());
        let other = Subject::User("u2".into());
        let fill = |c: &SubjectCache| {
            for subject in [&s, &other] {
                let t = c.ticket(subject);
                c.insert(subject.clone(), t, crate::compact::from_records(&[]));
            }
        };
        fill(&c);
        let mut affected = Affected::default();
        affected.add_user("u1");
        c.apply(&StoreEvent::Changed(affected));
        assert!(c.get(&s).is_none() && c.get(&other).is_some());
        c.apply(&StoreEvent::Unknown);
        assert!(c.get(&other).is_none());
        fill(&c);
        c.apply(&StoreEvent::Lost);
        fill(&c);
        assert!(c.get(&s).is_none(), "nothing is cached while lost");
        c.apply(&StoreEvent::Listening);
        fill(&c);
        assert!(c.get(&s).is_some());
    }

    #[test]
    fn a_disabled_cache_serves_nothing() {
        let c = cache();
        let s = Subject::User("u1".into());
        c.set_enabled(false);
        let t = c.ticket(&s);
        c.insert(s.clone(), t, crate::compact::from_records(&[]));
        assert!(c.get(&s).is_none());
    }

    #[test]
    fn invalidation_forgets_remembered_absence() {
        let c = cache();
        c.remember_absent("cus_1");
        assert!(c.is_known_absent("cus_1"));
        let mut affected = Affected::default();
        affected.add_customer("cus_1");
        c.invalidate(&affected);
        assert!(!c.is_known_absent("cus_1"));
    }
}
