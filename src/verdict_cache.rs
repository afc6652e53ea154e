//! The verified-token cache: a bounded map from a token's hash to its
//! verdict, lean on purpose (about 60 bytes an entry instead of the few
//! hundred a general-purpose cache spends), because a gateway in front of CI
//! fleets holds 100 000 of them. Sharded so concurrent requests rarely meet
//! on a lock. A verdict is served only before its `until` and while the key
//! that verified it still vouches (JWT-28); when a shard is full, expired
//! verdicts go first, then an arbitrary eighth: an evicted verdict only costs
//! one more signature check. Capacity is approximate: each shard may hold an
//! eighth more than its share, so the whole holds at most capacity × 9/8.
//! Expired verdicts are also swept by time (see [`SWEEP_EVERY_SECS`]), so
//! while tokens keep arriving the map follows the live ones instead of
//! filling to its sweep size (sweeps run at inserts; a shard that only
//! serves hits keeps its dead verdicts, within the capacity bound).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::jwk::Key;
use crate::principal::Principal;

/// A keyed 128-bit hash of (app index, token) (`bearer::verdict_key`):
/// finding another token with the same key is about a 2^128 search.
pub type VerdictKey = [u8; 16];

/// Shards of the map; a power of two.
const SHARDS: usize = 64;

/// One cached verdict.
#[derive(Clone)]
pub struct Verdict {
    /// Who the token says.
    pub principal: Arc<Principal>,
    /// The key that verified it.
    pub key: Arc<Key>,
    /// Unix seconds after which it is not served (the token's `exp`, capped).
    pub until: u64,
}

impl Verdict {
    fn live(&self, now: u64) -> bool {
        now < self.until && self.key.usable(now)
    }
}

/// A bounded, sharded verdict map.
pub struct VerdictCache {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
}

/// Smallest shard size at which expired verdicts are swept.
const FIRST_SWEEP: usize = 64;

/// A shard holding a verdict past its `until` is swept at its next insert
/// once this long has passed since its last sweep. The size rule alone let
/// each of the 64 shards reach 64 verdicts before its first sweep: 4 096
/// verdicts (principals and their rendered headers, about 0.6 KiB each) when
/// 600 were live, the soak's slow rise over its first 400 s (README, Soak).
const SWEEP_EVERY_SECS: u64 = 10;

/// One shard: its verdicts, the size at which the next sweep of expired
/// ones runs, and when it may next be swept by time. Without sweeps, the
/// verdicts of tokens used once (a CI job's) would stay until the shard is
/// full, and memory would grow with every fresh token up to the capacity;
/// sweeping at twice the live size keeps the map near what is live, at an
/// amortised constant cost per insert, and sweeping by time (at most once
/// per [`SWEEP_EVERY_SECS`], only once something has expired) keeps a small
/// shard from holding dead verdicts until it reaches that size.
struct Shard {
    map: HashMap<VerdictKey, Verdict>,
    sweep_at: usize,
    /// The earliest `until` among the verdicts held (`u64::MAX`: none).
    earliest: u64,
    /// Unix seconds before which no sweep by time runs.
    quiet_until: u64,
}

impl Shard {
    /// An empty shard: first swept at [`FIRST_SWEEP`] verdicts or once one expires.
    fn new() -> Self {
        Shard {
            map: HashMap::new(),
            sweep_at: FIRST_SWEEP,
            earliest: u64::MAX,
            quiet_until: 0,
        }
    }

    /// Whether the next insert should first drop the dead verdicts.
    fn due(&self, now: u64) -> bool {
        self.map.len() >= self.sweep_at || (now >= self.earliest && now >= self.quiet_until)
    }

    /// Drops the dead verdicts and schedules the next sweeps.
    fn sweep(&mut self, now: u64) {
        self.map.retain(|_, v| v.live(now));
        self.sweep_at = (self.map.len() * 2).max(FIRST_SWEEP);
        self.earliest = self.map.values().map(|v| v.until).min().unwrap_or(u64::MAX);
        self.quiet_until = now.saturating_add(SWEEP_EVERY_SECS);
    }
}

impl VerdictCache {
    /// A cache of at most about `capacity` verdicts (0: it holds nothing).
    pub fn new(capacity: u64) -> Self {
        let capacity = usize::try_from(capacity).unwrap_or(usize::MAX);
        VerdictCache {
            shards: (0..SHARDS).map(|_| Mutex::new(Shard::new())).collect(),
            // An eighth of slack per shard, so uneven shards do not evict while the
            // whole is below capacity; the bound is thus capacity × 9/8.
            per_shard: capacity.saturating_mul(9).div_ceil(8 * SHARDS),
        }
    }

    fn shard(&self, key: &VerdictKey) -> Option<&Mutex<Shard>> {
        self.shards.get(usize::from(key[0]) % SHARDS)
    }

    /// Whether this cache keeps verdicts at all (`bearer_cache_entries` > 0).
    pub fn keeps_any(&self) -> bool {
        self.per_shard > 0
    }

    /// The principal of a live verdict for `key`; a dead one is dropped.
    pub fn get(&self, key: &VerdictKey, now: u64) -> Option<Arc<Principal>> {
        if !self.keeps_any() {
            return None;
        }
        // A poisoned shard only means a panic elsewhere mid-insert: treat it as a miss.
        let mut shard = self.shard(key)?.lock().ok()?;
        match shard.map.get(key) {
            Some(v) if v.live(now) => Some(v.principal.clone()),
            Some(_) => {
                shard.map.remove(key);
                None
            }
            None => None,
        }
    }

    /// Holds `verdict` for `key`, making room when the shard is full.
    pub fn insert(&self, key: VerdictKey, verdict: Verdict, now: u64) {
        // A token accepted within the clock leeway after its `exp` is already
        // dead here: holding it would only evict live verdicts for it.
        if !self.keeps_any() || verdict.until <= now {
            return;
        }
        let Some(Ok(mut shard)) = self.shard(&key).map(Mutex::lock) else {
            return;
        };
        if shard.due(now) {
            shard.sweep(now);
        }
        if shard.map.len() >= self.per_shard && !shard.map.contains_key(&key) {
            shard.sweep(now);
            let map = &mut shard.map;
            if map.len() >= self.per_shard {
                // Arbitrary victims: the map's iteration order is randomly seeded.
                let excess = map.len() + 1 - self.per_shard;
                let victims: Vec<VerdictKey> = map
                    .keys()
                    .take(excess.max(self.per_shard / 8))
                    .copied()
                    .collect();
                for v in &victims {
                    map.remove(v);
                }
            }
        }
        shard.earliest = shard.earliest.min(verdict.until);
        shard.map.insert(key, verdict);
    }

    /// Verdicts held (live or not yet swept).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .filter_map(|s| s.lock().ok().map(|m| m.map.len()))
            .sum()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key_set() -> crate::jwk::KeySet {
        let n = "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw";
        crate::jwk::parse(
            format!(r#"{{"keys":[{{"kty":"RSA","kid":"a","n":"{n}","e":"AQAB"}}]}}"#).as_bytes(),
        )
        .unwrap()
    }

    fn verdict(key: &Arc<Key>, until: u64) -> Verdict {
        Verdict {
            principal: Arc::new(Principal {
                user: "job".into(),
                user_id: None,
                email: None,
                email_verified: false,
                name: None,
                groups: Vec::new(),
                preferred_username: None,
                source: "ci".into(),
                kind: crate::principal::PrincipalKind::Bearer,
                token_subject: None,
                claims: crate::principal::no_claims(),
                rendered: Default::default(),
            }),
            key: key.clone(),
            until,
        }
    }

    fn k(i: u32) -> VerdictKey {
        let mut key = [0u8; 16];
        key[..4].copy_from_slice(&i.to_le_bytes());
        key
    }

    #[test]
    fn a_cache_of_zero_entries_keeps_nothing_and_any_other_size_keeps_verdicts() {
        assert!(!VerdictCache::new(0).keeps_any());
        for capacity in [1, 56, 100_000, u64::MAX] {
            assert!(VerdictCache::new(capacity).keeps_any(), "{capacity}");
        }
    }

    #[test]
    fn verdicts_are_served_until_their_time_and_bounded() {
        let set = key_set();
        let signer = set.keys[0].clone();
        let cache = VerdictCache::new(640);
        cache.insert(k(1), verdict(&signer, 100), 10);
        assert!(cache.get(&k(1), 99).is_some());
        assert!(cache.get(&k(1), 100).is_none(), "served past until");
        assert!(cache.is_empty(), "a dead verdict was kept");
        // A token accepted within the leeway after its exp is not held at all.
        cache.insert(k(2), verdict(&signer, 100), 130);
        assert!(cache.is_empty(), "a verdict already dead was held");
        for i in 0..10_000 {
            cache.insert(k(i), verdict(&signer, 1_000), 10);
        }
        assert!(cache.len() <= 64 * 12, "{} held", cache.len());
        assert!(cache.len() >= 500, "{} held", cache.len());
        assert!(VerdictCache::new(0).get(&k(1), 0).is_none());
    }

    #[test]
    fn verdicts_of_tokens_used_once_do_not_pile_up_after_they_expire() {
        let set = key_set();
        let signer = set.keys[0].clone();
        let cache = VerdictCache::new(100_000);
        // A fresh 60 s token every 100 ms for an hour: about 600 are live at a time.
        for i in 0..36_000u32 {
            let now = 1_000 + u64::from(i) / 10;
            cache.insert(k(i), verdict(&signer, now + 60), now);
        }
        assert!(cache.len() <= 4 * 600, "{} verdicts held", cache.len());
        assert!(cache.len() >= 600, "{} verdicts held", cache.len());
    }

    #[test]
    fn expired_verdicts_are_dropped_within_seconds_not_when_a_shard_fills() {
        let set = key_set();
        let signer = set.keys[0].clone();
        let cache = VerdictCache::new(100_000);
        // The soak's fresh tokens: ten a second, each living 60 s, so 600 are live.
        let mut most = 0;
        for i in 0..36_000u32 {
            let now = 1_000 + u64::from(i) / 10;
            cache.insert(k(i), verdict(&signer, now + 60), now);
            if i >= 600 && i % 100 == 0 {
                most = most.max(cache.len());
            }
        }
        // Dead verdicts held at any time: those of about the last sweep interval
        // (plus the wait for a shard's next insert), not 64 per shard.
        assert!(most <= 600 + 250, "{most} verdicts held for 600 live");
    }
}
