//! Session cookies this thread has already opened. A signed-in client sends
//! the same sealed cookie with every request; opening it (base64,
//! AES-256-GCM, JSON) was about 7 000 of the 23 000 instructions a session
//! hit added to a request (README, "Performance"). A cookie is remembered
//! only once it opened, and found only by the same bytes (`crate::memo`): a
//! hit gives exactly what opening it again would, and the caller checks
//! host and expiry as before. Revocation is not decided here (the session
//! cache is asked by `sid`).

use std::cell::RefCell;
use std::sync::Arc;

use super::SessionClaims;
use crate::memo::{self, Table};

/// Longer sealed values are opened each time (a session cookie is about
/// 200 bytes): the table stays under a few hundred KiB per thread.
const MAX_SEALED: usize = 512;

thread_local! {
    static OPENED: RefCell<Table<(Arc<SessionClaims>, bool)>> = const { RefCell::new(Table::new(MAX_SEALED)) };
}

/// One session service's view of the per-thread table.
#[derive(Debug)]
pub struct Memo {
    owner: memo::Owner,
}

impl Default for Memo {
    fn default() -> Self {
        Memo::new()
    }
}

impl Memo {
    /// A view no other [`Memo`] shares.
    pub fn new() -> Self {
        Memo {
            // Without randomness the slots are merely predictable.
            owner: memo::Owner::new(crate::random::u64().unwrap_or_default()),
        }
    }

    /// The claims and stale-key flag `sealed` opened to, if this thread
    /// opened exactly these bytes for this view before. Shared, not
    /// copied: a hit allocates nothing.
    pub fn get(&self, sealed: &[u8]) -> Option<(Arc<SessionClaims>, bool)> {
        OPENED
            .try_with(|t| t.try_borrow().ok()?.get(self.owner, 0, sealed))
            .ok()
            .flatten()
    }

    /// Remembers that `sealed` opened to `claims`.
    pub fn put(&self, sealed: &str, claims: &Arc<SessionClaims>, stale_key: bool) {
        let _ = OPENED.try_with(|t| {
            if let Ok(mut t) = t.try_borrow_mut() {
                t.put(
                    self.owner,
                    0,
                    sealed.as_bytes(),
                    (Arc::clone(claims), stale_key),
                );
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sid: &str) -> Arc<SessionClaims> {
        Arc::new(SessionClaims {
            sid: sid.into(),
            uid: "u1".into(),
            host: "app.example".into(),
            iat: 1,
            exp: 2,
        })
    }

    const SEALED: &str = "AQGd1vX8yW0c2mT3k4LzQp7sNf6Rj9Hh0Ee5Aa1Bb2Cc3Dd4";

    #[test]
    fn a_cookie_opened_before_is_remembered_byte_for_byte() {
        let memo = Memo::new();
        assert_eq!(memo.get(SEALED.as_bytes()), None);
        memo.put(SEALED, &claims("s1"), true);
        assert_eq!(memo.get(SEALED.as_bytes()), Some((claims("s1"), true)));
        let other = SEALED.replacen('A', "B", 1);
        assert_eq!(memo.get(other.as_bytes()), None);
    }

    #[test]
    fn another_session_service_never_reads_the_entries_of_one_before_it() {
        let old = Memo::new();
        old.put(SEALED, &claims("s1"), false);
        let reloaded = Memo::new();
        assert_eq!(reloaded.get(SEALED.as_bytes()), None);
        assert_eq!(old.get(SEALED.as_bytes()), Some((claims("s1"), false)));
    }

    #[test]
    fn a_sealed_value_longer_than_a_session_cookie_is_not_remembered() {
        let memo = Memo::new();
        let long = "a".repeat(MAX_SEALED + 1);
        memo.put(&long, &claims("s1"), false);
        assert_eq!(memo.get(long.as_bytes()), None);
    }
}
