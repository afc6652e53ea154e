//! A small direct-mapped memo from byte strings to values, for one thread:
//! what a worker computed from a client's repeated credential (a session
//! cookie opened, a bearer token's verdict key) found again by comparing
//! the bytes, not by recomputing. Each user keeps its own table in a
//! `thread_local!`; an entry is found only under the owner and tag it was
//! put under, and only for the same bytes.
//!
//! The keys are secrets (credentials), and a client chooses what is
//! compared with them: the slot is chosen by a hash keyed by the owner's
//! random seed (a client cannot aim at the slot of another's credential),
//! and the bytes are compared in constant time (aws-lc's `CRYPTO_memcmp`).

use std::sync::atomic::{AtomicU64, Ordering};

/// Entries per table (a new key takes the place of the one in its slot).
pub const SLOTS: usize = 1024;

/// The key bytes a slot is chosen by: the end of the key, which for a
/// sealed cookie (its AEAD tag) or a signed token (its signature) differs
/// from one credential to the next.
const TAIL: usize = 16;

/// Whose entries these are: one per session service or bearer verifier, so
/// that one rebuilt on a reload (other secrets) never reads the entries of
/// the one before; with the secret seed of its slot hash.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    id: u64,
    seed: u64,
}

impl Owner {
    /// An owner no other shares, its slots chosen under `seed` (random).
    pub fn new(seed: u64) -> Owner {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Owner {
            id: NEXT.fetch_add(1, Ordering::Relaxed),
            seed,
        }
    }
}

struct Entry<V> {
    owner: u64,
    tag: u64,
    key: Box<[u8]>,
    value: V,
}

/// The table: empty until the first `put`.
pub struct Table<V> {
    slots: Vec<Option<Entry<V>>>,
    max_key: usize,
}

impl<V: Clone> Table<V> {
    /// A table remembering keys of at most `max_key` bytes (longer ones are
    /// never remembered: the table stays under `SLOTS * max_key` bytes).
    pub const fn new(max_key: usize) -> Self {
        Table {
            slots: Vec::new(),
            max_key,
        }
    }

    /// The value put under exactly `owner`, `tag` and these `key` bytes,
    /// unless another key took its slot since.
    pub fn get(&self, owner: Owner, tag: u64, key: &[u8]) -> Option<V> {
        let slot = self.slot_of(owner, key)?;
        let e = self.slots.get(slot)?.as_ref()?;
        (e.owner == owner.id
            && e.tag == tag
            && aws_lc_rs::constant_time::verify_slices_are_equal(&e.key, key).is_ok())
        .then(|| e.value.clone())
    }

    /// Remembers `value` for `owner`, `tag` and `key`.
    pub fn put(&mut self, owner: Owner, tag: u64, key: &[u8], value: V) {
        let Some(slot) = self.slot_of(owner, key) else {
            return;
        };
        if self.slots.is_empty() {
            self.slots.resize_with(SLOTS, || None);
        }
        if let Some(place) = self.slots.get_mut(slot) {
            *place = Some(Entry {
                owner: owner.id,
                tag,
                key: key.into(),
                value,
            });
        }
    }

    /// The slot of `key`, or none for a key too short or too long to remember.
    fn slot_of(&self, owner: Owner, key: &[u8]) -> Option<usize> {
        if key.len() < TAIL || key.len() > self.max_key {
            return None;
        }
        let tail = key.get(key.len() - TAIL..)?;
        let (a, b) = tail.split_at(8);
        let a = u64::from_le_bytes(a.try_into().ok()?);
        let b = u64::from_le_bytes(b.try_into().ok()?);
        // SipHash-1-3 of the tail under the owner's seed: which slot a
        // credential takes is not known to a client. One that presents many
        // valid credentials of its own can still push others' out of their
        // slots: they are then computed again, never mixed up (a hit needs
        // the same bytes).
        use std::hash::Hasher as _;
        let mut h = siphasher::sip::SipHasher13::new_with_keys(owner.seed, !owner.seed);
        h.write_u64(a);
        h.write_u64(b);
        Some((h.finish() >> 54) as usize % SLOTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"AQGd1vX8yW0c2mT3k4LzQp7sNf6Rj9Hh0Ee5Aa1Bb2Cc3Dd4";

    #[test]
    fn a_value_is_found_only_for_the_same_bytes_owner_and_tag() {
        let mut t = Table::new(512);
        let owner = Owner::new(42);
        assert_eq!(t.get(owner, 0, KEY), None);
        t.put(owner, 0, KEY, 7);
        assert_eq!(t.get(owner, 0, KEY), Some(7));
        // One byte changed is another key, even outside the tail the slot is chosen by.
        let mut other = KEY.to_vec();
        other[0] = b'B';
        assert_eq!(t.get(owner, 0, &other), None);
        assert_eq!(t.get(owner, 1, KEY), None, "another tag");
        assert_eq!(t.get(Owner::new(42), 0, KEY), None, "another owner");
    }

    #[test]
    fn keys_too_short_or_too_long_are_not_remembered() {
        let mut t = Table::new(64);
        let owner = Owner::new(42);
        t.put(owner, 0, b"short", 1);
        assert_eq!(t.get(owner, 0, b"short"), None);
        let long = vec![b'a'; 65];
        t.put(owner, 0, &long, 1);
        assert_eq!(t.get(owner, 0, &long), None);
    }

    #[test]
    fn a_key_in_the_same_slot_takes_the_place_of_the_one_before() {
        let mut t = Table::new(512);
        let owner = Owner::new(42);
        // Same tail, so the same slot; different heads.
        let first = [b"X", KEY].concat();
        let second = [b"Y", KEY].concat();
        t.put(owner, 0, &first, 1);
        t.put(owner, 0, &second, 2);
        assert_eq!(t.get(owner, 0, &first), None);
        assert_eq!(t.get(owner, 0, &second), Some(2));
    }

    #[test]
    fn the_slot_of_a_key_depends_on_the_owners_seed() {
        let t: Table<u8> = Table::new(512);
        let keys: Vec<Vec<u8>> = (0..64u8).map(|i| [KEY, &[i]].concat()).collect();
        let slots = |seed| {
            keys.iter()
                .map(|k| t.slot_of(Owner::new(seed), k))
                .collect::<Vec<_>>()
        };
        assert_eq!(slots(1), slots(1));
        assert_ne!(slots(1), slots(2));
    }
}
