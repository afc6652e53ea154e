//! One shared principal per distinct bearer identity, held only while a
//! cached verdict holds it.
//!
//! Many tokens of one machine (a CI job that mints one per call) verify to
//! the same identity; sharing one `Arc<Principal>` between their verdicts
//! keeps 100 000 cached tokens small. The pool holds each principal weakly:
//! once the verdict cache drops the last verdict pointing at it, the
//! principal's memory goes with it and its entry is dead. Dead entries are
//! swept when the map reaches twice its size after the last sweep, so the
//! map follows the live verdicts. (A strong cache of 10 000 identities did
//! not: the soak's machines, each seen once, filled it at about 1.2 KiB
//! each for 17 minutes, long after their tokens had expired.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use crate::principal::Principal;

/// What a principal is shared under: a digest of all of it.
pub type PrincipalKey = [u8; 32];

/// Smallest map size at which dead entries are swept.
const FIRST_SWEEP: usize = 64;

/// Principals shared by key, held weakly, at most `capacity` entries.
pub struct SharedPrincipals {
    pool: Mutex<Pool>,
    capacity: usize,
}

/// The entries, the size at which the next sweep runs, and the identities
/// left unshared since the pool was last found full of live entries.
struct Pool {
    map: HashMap<PrincipalKey, Weak<Principal>>,
    sweep_at: usize,
    unshared: usize,
}

impl Pool {
    /// Drops the dead entries; the next sweep runs at twice what is left,
    /// never beyond `capacity` (a pool that cannot grow must still sweep),
    /// and not at all while the pool stays full of live entries (then
    /// [`SharedPrincipals::share`] schedules one after enough misses).
    fn sweep(&mut self, capacity: usize) {
        self.map.retain(|_, held| held.strong_count() > 0);
        self.unshared = 0;
        self.sweep_at = if self.map.len() >= capacity {
            usize::MAX
        } else {
            (self.map.len() * 2).clamp(FIRST_SWEEP.min(capacity), capacity)
        };
    }
}

impl SharedPrincipals {
    /// A pool of at most `capacity` entries (0: nothing is shared).
    pub fn new(capacity: usize) -> Self {
        SharedPrincipals {
            pool: Mutex::new(Pool {
                map: HashMap::new(),
                sweep_at: FIRST_SWEEP.min(capacity),
                unshared: 0,
            }),
            capacity,
        }
    }

    /// The principal shared under `key` while something still holds it;
    /// else `principal`, now shared under `key` (unless the pool is full of
    /// live entries: then it is returned unshared, which is only less compact).
    pub fn share(&self, key: PrincipalKey, principal: Principal) -> Arc<Principal> {
        // The lock is never held while anything can panic; a poisoned pool
        // is still a valid pool.
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(live) = pool.map.get(&key).and_then(Weak::upgrade) {
            return live;
        }
        let shared = Arc::new(principal);
        if pool.map.len() >= pool.sweep_at {
            pool.sweep(self.capacity);
        }
        if pool.map.len() < self.capacity || pool.map.contains_key(&key) {
            pool.map.insert(key, Arc::downgrade(&shared));
        } else {
            // Full of live entries at the last sweep: sweep again once an
            // eighth of the capacity has gone unshared, so the cost of a
            // sweep is spread over that many misses (each a signature check).
            pool.unshared += 1;
            if pool.unshared >= (self.capacity / 8).max(1) {
                pool.sweep_at = 0;
            }
        }
        shared
    }

    /// Entries held, live or dead and not yet swept.
    pub fn len(&self) -> usize {
        self.pool
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .map
            .len()
    }

    /// Whether no entry is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::principal::PrincipalKind;

    fn machine(n: u32) -> (PrincipalKey, Principal) {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&n.to_be_bytes());
        let principal = Principal {
            user: format!("machine-{n}"),
            user_id: None,
            email: None,
            email_verified: false,
            name: None,
            groups: Vec::new(),
            preferred_username: None,
            source: "ci".into(),
            kind: PrincipalKind::Bearer,
            token_subject: None,
            claims: Arc::new(serde_json::Value::Null),
            rendered: Default::default(),
        };
        (key, principal)
    }

    #[test]
    fn tokens_of_one_machine_share_one_principal_while_a_verdict_holds_it() {
        let pool = SharedPrincipals::new(100);
        let (key, p) = machine(1);
        let first = pool.share(key, p.clone());
        let second = pool.share(key, p);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(pool.len(), 1);
    }

    #[test]
    fn identities_seen_once_do_not_pile_up_after_their_verdicts_are_gone() {
        let pool = SharedPrincipals::new(10_000);
        let held = pool.share(machine(0).0, machine(0).1);
        // Fresh machines, each token's verdict dropped at once (expired and swept).
        for n in 1..=50_000 {
            let (key, p) = machine(n);
            drop(pool.share(key, p));
        }
        assert!(
            pool.len() <= 2 * FIRST_SWEEP,
            "{} entries held for identities nothing holds any more",
            pool.len()
        );
        // The one still held survived every sweep and is still the one shared.
        let again = pool.share(machine(0).0, machine(0).1);
        assert!(Arc::ptr_eq(&held, &again));
    }

    #[test]
    fn a_full_pool_of_live_principals_still_answers_with_the_right_principal() {
        let pool = SharedPrincipals::new(3);
        let held: Vec<_> = (1..=3)
            .map(|n| pool.share(machine(n).0, machine(n).1))
            .collect();
        let fourth = pool.share(machine(4).0, machine(4).1);
        assert_eq!(fourth.user, "machine-4");
        assert_eq!(pool.len(), 3);
        // The live ones are still shared.
        let again = pool.share(machine(2).0, machine(2).1);
        assert!(Arc::ptr_eq(&held[1], &again));
    }

    #[test]
    fn a_pool_once_full_of_live_principals_shares_again_after_they_are_gone() {
        let pool = SharedPrincipals::new(100);
        // More than half the capacity live at a sweep, then the pool full.
        let held: Vec<_> = (1..=100)
            .map(|n| pool.share(machine(n).0, machine(n).1))
            .collect();
        assert_eq!(pool.len(), 100);
        // Every verdict expires; fresh identities keep coming, each seen once.
        drop(held);
        for n in 1_000..1_300 {
            drop(pool.share(machine(n).0, machine(n).1));
        }
        // A machine seen now is shared again by its tokens' verdicts.
        let first = pool.share(machine(5_000).0, machine(5_000).1);
        let second = pool.share(machine(5_000).0, machine(5_000).1);
        assert!(Arc::ptr_eq(&first, &second), "the pool stopped sharing");
        assert!(pool.len() <= 100);
    }

    #[test]
    fn a_pool_full_of_live_principals_keeps_answering_and_sharing_what_it_holds() {
        let pool = SharedPrincipals::new(16);
        let held: Vec<_> = (1..=16)
            .map(|n| pool.share(machine(n).0, machine(n).1))
            .collect();
        for n in 100..200 {
            let p = pool.share(machine(n).0, machine(n).1);
            assert_eq!(p.user, format!("machine-{n}"));
        }
        assert_eq!(pool.len(), 16);
        for (n, h) in (1..=16).zip(&held) {
            assert!(Arc::ptr_eq(h, &pool.share(machine(n).0, machine(n).1)));
        }
    }

    #[test]
    fn a_principal_dropped_by_every_verdict_is_made_anew_not_revived() {
        let pool = SharedPrincipals::new(10);
        let (key, p) = machine(7);
        let first = pool.share(key, p.clone());
        let weak = Arc::downgrade(&first);
        drop(first);
        assert!(weak.upgrade().is_none());
        let second = pool.share(key, p);
        assert_eq!(second.user, "machine-7");
        assert_eq!(pool.len(), 1);
    }
}
