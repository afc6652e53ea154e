//! Session cookies this thread has already opened. A signed-in client sends
//! the same sealed cookie with every request; opening it (base64,
//! AES-256-GCM, JSON) was about 7 000 of the 22 000 instructions a session
//! hit adds to a request (README, "Performance"). A cookie is remembered
//! only once it opened, and only byte for byte: a hit gives exactly what
//! opening it again would, and the caller checks host and expiry as before.
//! Revocation is not decided here (the session cache is asked by `sid`).

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use super::SessionClaims;

/// Cookies remembered per thread (a direct-mapped table: a new cookie takes
/// the place of the one before it in its slot).
const SLOTS: usize = 1024;

/// Longer sealed values are opened each time (a session cookie is about
/// 200 bytes): the table stays under a few hundred KiB per thread.
const MAX_SEALED: usize = 512;

/// The sealed bytes a slot is chosen by: the end of the value, which is the
/// AEAD tag, different for every sealing.
const TAIL: usize = 16;

struct Entry {
    /// The [`Memo`] that opened it: another set of keys (a reload) never
    /// reads another's entries.
    owner: u64,
    sealed: Box<str>,
    claims: SessionClaims,
    stale_key: bool,
}

thread_local! {
    static TABLE: RefCell<Vec<Option<Entry>>> = const { RefCell::new(Vec::new()) };
}

/// One session service's view of the per-thread table.
#[derive(Debug)]
pub struct Memo {
    owner: u64,
}

impl Default for Memo {
    fn default() -> Self {
        Memo::new()
    }
}

impl Memo {
    /// A view no other [`Memo`] shares.
    pub fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Memo {
            owner: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The claims and stale-key flag `sealed` opened to, if this thread
    /// opened exactly these bytes for this view before.
    pub fn get(&self, sealed: &str) -> Option<(SessionClaims, bool)> {
        let slot = slot_of(sealed)?;
        TABLE
            .try_with(|t| {
                let table = t.try_borrow().ok()?;
                let e = table.get(slot)?.as_ref()?;
                (e.owner == self.owner && *e.sealed == *sealed)
                    .then(|| (e.claims.clone(), e.stale_key))
            })
            .ok()
            .flatten()
    }

    /// Remembers that `sealed` opened to `claims`.
    pub fn put(&self, sealed: &str, claims: &SessionClaims, stale_key: bool) {
        let Some(slot) = slot_of(sealed) else {
            return;
        };
        let _ = TABLE.try_with(|t| {
            let Ok(mut table) = t.try_borrow_mut() else {
                return;
            };
            if table.is_empty() {
                table.resize_with(SLOTS, || None);
            }
            if let Some(place) = table.get_mut(slot) {
                *place = Some(Entry {
                    owner: self.owner,
                    sealed: sealed.into(),
                    claims: claims.clone(),
                    stale_key,
                });
            }
        });
    }
}

/// The slot of `sealed`, or none for a value too short or too long to remember.
fn slot_of(sealed: &str) -> Option<usize> {
    let bytes = sealed.as_bytes();
    if bytes.len() < TAIL || bytes.len() > MAX_SEALED {
        return None;
    }
    let tail = bytes.get(bytes.len() - TAIL..)?;
    let (a, b) = tail.split_at(8);
    let a = u64::from_le_bytes(a.try_into().ok()?);
    let b = u64::from_le_bytes(b.try_into().ok()?);
    // A multiplicative mix: the tag is already unpredictable to a client
    // that did not seal it; a client choosing its own cookies can only
    // crowd its own slot.
    let mixed = (a ^ b.rotate_left(29)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    Some((mixed >> 54) as usize % SLOTS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sid: &str) -> SessionClaims {
        SessionClaims {
            sid: sid.into(),
            uid: "u1".into(),
            host: "app.example".into(),
            iat: 1,
            exp: 2,
        }
    }

    const SEALED: &str = "AQGd1vX8yW0c2mT3k4LzQp7sNf6Rj9Hh0Ee5Aa1Bb2Cc3Dd4";

    #[test]
    fn a_cookie_opened_before_is_remembered_byte_for_byte() {
        let memo = Memo::new();
        assert_eq!(memo.get(SEALED), None);
        memo.put(SEALED, &claims("s1"), true);
        assert_eq!(memo.get(SEALED), Some((claims("s1"), true)));
        // One byte changed is another cookie, even in the part the slot is not chosen by.
        let other = SEALED.replacen('A', "B", 1);
        assert_eq!(memo.get(&other), None);
    }

    #[test]
    fn another_session_service_never_reads_the_entries_of_one_before_it() {
        let old = Memo::new();
        old.put(SEALED, &claims("s1"), false);
        let reloaded = Memo::new();
        assert_eq!(reloaded.get(SEALED), None);
        assert_eq!(old.get(SEALED), Some((claims("s1"), false)));
    }

    #[test]
    fn values_too_short_or_too_long_are_not_remembered() {
        let memo = Memo::new();
        memo.put("short", &claims("s1"), false);
        assert_eq!(memo.get("short"), None);
        let long = "a".repeat(MAX_SEALED + 1);
        memo.put(&long, &claims("s1"), false);
        assert_eq!(memo.get(&long), None);
    }

    #[test]
    fn a_cookie_in_the_same_slot_takes_the_place_of_the_one_before() {
        let memo = Memo::new();
        // Same tail, so the same slot; different heads.
        let first = format!("X{SEALED}");
        let second = format!("Y{SEALED}");
        memo.put(&first, &claims("s1"), false);
        memo.put(&second, &claims("s2"), false);
        assert_eq!(memo.get(&first), None);
        assert_eq!(memo.get(&second), Some((claims("s2"), false)));
    }
}
