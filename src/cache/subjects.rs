//! The map behind [`super::SubjectCache`]'s records: subject to compact
//! records, bounded in bytes, the least recently used out first
//! (approximately: CLOCK), each entry dropped `ttl` after it was written.
//!
//! It replaced a moka cache, whose bookkeeping (an `Arc` of the key, an
//! entry info, a value entry, deque nodes and a bucket, each its own
//! allocation) cost about 400 bytes per entry, more than a subject's
//! records. Here an entry is one slot of a sharded `IndexMap`: the key
//! (inline when short), the records (a lone record inline), the write
//! time, the weight and a referenced bit. A subject with one subscription
//! and ids of Stripe's lengths costs one slot and no allocation.
//!
//! Lookups take a shard's read lock and set the entry's referenced bit.
//! Writes take its write lock; past the byte bound, the writer evicts
//! shard by shard (one lock at a time), like one clock hand going round
//! all of them: an entry referenced since the hand last passed is spared
//! once, an expired one goes first.

use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

use indexmap::{Equivalent, IndexMap};

use super::Records;
use crate::subject::Subject;

/// Shards: enough that two cores seldom meet on one lock.
const SHARDS: usize = 16;

/// The most bytes of a key kept inline: its tag and an id of up to 21
/// bytes (Stripe's customer ids have 18).
const INLINE_KEY: usize = 22;

/// A subject as the map keys it: a tag (`u` user, `c` customer), then the
/// id's bytes; inline when they fit.
#[derive(Debug, PartialEq, Eq)]
enum Key {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

/// A subject borrowed for a lookup; hashes exactly as its [`Key`] does.
#[derive(Debug, PartialEq, Eq, Hash)]
struct Probe<'a> {
    tag: u8,
    id: &'a [u8],
}

impl<'a> From<&'a Subject> for Probe<'a> {
    fn from(subject: &'a Subject) -> Self {
        match subject {
            Subject::User(id) => Probe {
                tag: b'u',
                id: id.as_bytes(),
            },
            Subject::Customer(id) => Probe {
                tag: b'c',
                id: id.as_bytes(),
            },
        }
    }
}

impl Key {
    fn new(subject: &Subject) -> Key {
        let p = Probe::from(subject);
        let n = 1 + p.id.len();
        match u8::try_from(n) {
            Ok(len) if n <= INLINE_KEY => {
                let mut bytes = [0; INLINE_KEY];
                bytes[0] = p.tag;
                bytes[1..n].copy_from_slice(p.id);
                Key::Inline { len, bytes }
            }
            _ => Key::Heap([&[p.tag], p.id].concat().into_boxed_slice()),
        }
    }

    fn probe(&self) -> Probe<'_> {
        let bytes = match self {
            Key::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Key::Heap(bytes) => bytes,
        };
        Probe {
            tag: bytes[0],
            id: &bytes[1..],
        }
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.probe().hash(state);
    }
}

impl Equivalent<Key> for Probe<'_> {
    fn equivalent(&self, key: &Key) -> bool {
        *self == key.probe()
    }
}

#[derive(Debug)]
struct Slot {
    records: Records,
    /// When it was written, in milliseconds after the map's `start`.
    written_ms: u64,
    weight: u32,
    /// Set by every hit since the clock hand last passed.
    referenced: AtomicBool,
}

#[derive(Debug, Default)]
struct Shard {
    slots: IndexMap<Key, Slot>,
    /// The clock hand: the next slot eviction looks at.
    hand: usize,
    /// The weights of `slots`, summed.
    bytes: u64,
}

impl Shard {
    /// Takes one slot out, sparing (once) those referenced since the hand
    /// last passed; returns its weight, or `None` when the shard is empty.
    fn evict_one(&mut self, expired: impl Fn(&Slot) -> bool) -> Option<u32> {
        // Two turns at most: the first clears every referenced bit.
        for _ in 0..=2 * self.slots.len() {
            if self.hand >= self.slots.len() {
                self.hand = 0;
            }
            let (_, slot) = self.slots.get_index_mut(self.hand)?;
            if !expired(slot) && std::mem::take(slot.referenced.get_mut()) {
                self.hand += 1;
                continue;
            }
            // The last slot moves into the hole: the hand steps over it,
            // so it (often the newest) waits a whole turn like the rest.
            let (_, slot) = self
                .slots
                .swap_remove_index(self.hand)
                .expect("BUG: the hand points at a slot");
            self.hand += 1;
            self.bytes -= u64::from(slot.weight);
            return Some(slot.weight);
        }
        None
    }
}

#[derive(Debug)]
pub(super) struct SubjectMap {
    shards: Box<[RwLock<Shard>]>,
    /// Picks a subject's shard.
    hasher: RandomState,
    max_bytes: u64,
    /// The weights of every shard, summed.
    bytes: AtomicU64,
    ttl_ms: u64,
    start: Instant,
    /// The shard eviction goes to next: round all of them, like one hand.
    next_victim: AtomicUsize,
}

impl SubjectMap {
    pub(super) fn new(max_bytes: u64, ttl: Duration) -> Self {
        SubjectMap {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
            max_bytes,
            bytes: AtomicU64::new(0),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
            start: Instant::now(),
            next_victim: AtomicUsize::new(0),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn expired(&self, slot: &Slot, now_ms: u64) -> bool {
        slot.written_ms.saturating_add(self.ttl_ms) <= now_ms
    }

    fn shard(&self, probe: &Probe<'_>) -> &RwLock<Shard> {
        let hash = self.hasher.hash_one(probe);
        &self.shards[(hash % SHARDS as u64) as usize]
    }

    pub(super) fn get(&self, subject: &Subject) -> Option<Records> {
        let probe = Probe::from(subject);
        let shard = self.shard(&probe).read().unwrap_or_else(|p| p.into_inner());
        let slot = shard.slots.get(&probe)?;
        if self.expired(slot, self.now_ms()) {
            return None;
        }
        if !slot.referenced.load(Ordering::Relaxed) {
            slot.referenced.store(true, Ordering::Relaxed);
        }
        Some(slot.records.clone())
    }

    /// Keeps `records` for `subject` (weighing `weight` bytes), then
    /// evicts until the map is within its bound again.
    pub(super) fn insert(&self, subject: &Subject, records: Records, weight: u32) {
        let probe = Probe::from(subject);
        let slot = Slot {
            records,
            written_ms: self.now_ms(),
            weight,
            // Unreferenced until read again: what is read once and never
            // again goes first.
            referenced: AtomicBool::new(false),
        };
        {
            let mut shard = self
                .shard(&probe)
                .write()
                .unwrap_or_else(|p| p.into_inner());
            let old = shard.slots.insert(Key::new(subject), slot);
            let (old, new) = (old.map_or(0, |s| u64::from(s.weight)), u64::from(weight));
            shard.bytes = shard.bytes - old + new;
            if new >= old {
                self.bytes.fetch_add(new - old, Ordering::AcqRel);
            } else {
                self.bytes.fetch_sub(old - new, Ordering::AcqRel);
            }
        }
        self.evict_while_over();
    }

    /// Evicts until within the bound. The hand goes round the shards, and
    /// on its first round skips those holding less than their share, so a
    /// shard of few entries does not lose them as fast as one of many.
    fn evict_while_over(&self) {
        let mut visited = 0;
        while self.bytes.load(Ordering::Acquire) > self.max_bytes && visited < 2 * SHARDS {
            visited += 1;
            let i = self.next_victim.fetch_add(1, Ordering::Relaxed) % SHARDS;
            let mut shard = self.shards[i].write().unwrap_or_else(|p| p.into_inner());
            let share = self.bytes.load(Ordering::Acquire) / SHARDS as u64;
            if shard.bytes < share && visited <= SHARDS {
                continue;
            }
            let now = self.now_ms();
            if let Some(weight) = shard.evict_one(|slot| self.expired(slot, now)) {
                self.bytes.fetch_sub(u64::from(weight), Ordering::AcqRel);
                visited = 0;
            }
        }
    }

    pub(super) fn invalidate(&self, subject: &Subject) {
        let probe = Probe::from(subject);
        let mut shard = self
            .shard(&probe)
            .write()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = shard.slots.swap_remove(&probe) {
            shard.bytes -= u64::from(slot.weight);
            self.bytes
                .fetch_sub(u64::from(slot.weight), Ordering::AcqRel);
        }
    }

    /// Drops everything, and the memory that held it.
    pub(super) fn clear(&self) {
        for shard in self.shards.iter() {
            let mut shard = shard.write().unwrap_or_else(|p| p.into_inner());
            self.bytes.fetch_sub(shard.bytes, Ordering::AcqRel);
            *shard = Shard::default();
        }
    }

    /// The weights of everything held (expired entries included until
    /// they are evicted or overwritten).
    pub(super) fn weighted_size(&self) -> u64 {
        self.bytes.load(Ordering::Acquire)
    }

    /// What an entry for `subject` takes besides what its records own on
    /// the heap: its slot (the records' first level included), its share
    /// of the hash index, and its key's allocation if not inline.
    pub(super) fn entry_bytes(subject: &Subject) -> usize {
        // `IndexMap` keeps (hash, key, value) in a vector that is resident
        // only where written, and a hash index of `usize`s and control
        // bytes between 7/16 and 7/8 full (on average about 2/3).
        let slot = size_of::<(usize, Key, Slot)>() + (size_of::<usize>() + 1) * 3 / 2;
        let key = 1 + match subject {
            Subject::User(id) | Subject::Customer(id) => id.len(),
        };
        slot + if key <= INLINE_KEY {
            0
        } else {
            crate::compact::allocation_bytes(key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(n: usize) -> Subject {
        Subject::User(format!("user_{n}"))
    }

    fn none() -> Records {
        crate::compact::from_records(&[])
    }

    #[test]
    fn short_keys_are_inline_and_long_ones_found_all_the_same() {
        assert_eq!(size_of::<Key>(), 24);
        let m = SubjectMap::new(1 << 20, Duration::from_secs(60));
        let long = "u".repeat(255);
        for id in [
            "",
            "cus_NffrFeUfNV2Hib",
            &"x".repeat(21),
            &"y".repeat(22),
            &long,
        ] {
            for s in [Subject::User(id.into()), Subject::Customer(id.into())] {
                m.insert(&s, none(), 10);
                assert!(m.get(&s).is_some(), "{s:?}");
            }
            let inline = id.len() < INLINE_KEY;
            let key = Key::new(&Subject::User(id.into()));
            assert_eq!(matches!(key, Key::Inline { .. }), inline, "{id}");
        }
        assert!(m.get(&Subject::User("x".repeat(20))).is_none());
    }

    #[test]
    fn keys_find_their_subjects_and_only_them() {
        let m = SubjectMap::new(1 << 20, Duration::from_secs(60));
        m.insert(&Subject::User("a".into()), none(), 10);
        assert!(m.get(&Subject::User("a".into())).is_some());
        assert!(m.get(&Subject::Customer("a".into())).is_none());
        assert!(m.get(&Subject::User("ua".into())).is_none());
        assert_eq!(m.weighted_size(), 10);
        m.insert(&Subject::User("a".into()), none(), 30);
        assert_eq!(m.weighted_size(), 30, "a rewrite replaces the weight");
        m.invalidate(&Subject::User("a".into()));
        assert!(m.get(&Subject::User("a".into())).is_none());
        assert_eq!(m.weighted_size(), 0);
    }

    #[test]
    fn the_bound_holds_and_a_hot_entry_stays() {
        let m = SubjectMap::new(100 * 100, Duration::from_secs(60));
        m.insert(&user(3), none(), 100);
        for n in 0..2000 {
            m.insert(&user(n), none(), 100);
            assert!(
                m.get(&user(3)).is_some(),
                "the hot entry stays ({n} written)"
            );
            assert!(m.weighted_size() <= 100 * 100);
        }
        assert_eq!(m.weighted_size(), 100 * 100, "the map fills to its bound");
        let held = (0..2000).filter(|n| m.get(&user(*n)).is_some()).count();
        assert_eq!(held, 100);
        // Most of what is held is recent: the cold entries went first.
        let recent = (1000..2000).filter(|n| m.get(&user(*n)).is_some()).count();
        assert!(recent >= 90, "{recent} of 100 held are from the last 1000");
    }

    #[test]
    fn entries_expire_ttl_after_they_were_written() {
        let m = SubjectMap::new(1 << 20, Duration::from_millis(50));
        m.insert(&user(1), none(), 10);
        assert!(m.get(&user(1)).is_some());
        std::thread::sleep(Duration::from_millis(80));
        assert!(m.get(&user(1)).is_none());
        m.insert(&user(1), none(), 10);
        assert!(m.get(&user(1)).is_some(), "a rewrite starts a new life");
    }

    #[test]
    fn clear_forgets_everything() {
        let m = SubjectMap::new(1 << 20, Duration::from_secs(60));
        for n in 0..100 {
            m.insert(&user(n), none(), 10);
        }
        m.clear();
        assert_eq!(m.weighted_size(), 0);
        assert!((0..100).all(|n| m.get(&user(n)).is_none()));
    }
}
