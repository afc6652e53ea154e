//! Sessions at run time: read the sealed cookie, resolve it to a principal
//! through a per-replica cache (the store only on a miss), create and revoke;
//! with `idle_timeout`, end unused sessions and record uses in the background.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::identity::store::UserStore;
use crate::identity::{NewSession, SessionRecord, User};
use crate::principal::Principal;
use crate::session::cookie::{self, Lookup, Purpose, Sealer};
use crate::session::ended::{EndReason, SessionEnded};
use crate::session::tokens::SessionTokens;
use crate::session::{handoff, idle, SessionClaims};
use crate::source::{SourceError, Sources, TokenSet};

/// The store could not be asked about a session this replica has not
/// cached (or must re-check): the request is neither admitted nor treated as
/// signed out, but answered 503 until the store is back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the session store is unavailable")]
pub struct StoreUnavailable;

/// The time until which a one-time value is kept, and `now`, for the store.
fn once_window(now: u64) -> (i64, i64) {
    let until = now.saturating_add(crate::config::defaults::USED_ONCE_SECS);
    (
        i64::try_from(until).unwrap_or(i64::MAX),
        i64::try_from(now).unwrap_or(i64::MAX),
    )
}

/// Most sessions held in one replica's cache.
pub const CACHE_ENTRIES: u64 = 100_000;

/// One cached session: what the store said, plus the uses this replica saw.
struct Cached {
    /// The principal, or `None` for a session that is revoked, expired, idle
    /// or of a disabled user.
    principal: Option<Arc<Principal>>,
    /// The latest use known here (unix seconds): the store's when loaded, then
    /// this replica's own. Decides idle expiry on a cache hit, so the cache
    /// never keeps an unused session alive past its timeout.
    last_used: AtomicI64,
    /// The latest use written to (or read from) the store, so a use is
    /// written at most once per touch interval from this replica.
    written: AtomicI64,
    /// The source's tokens, opened, when the session keeps them: the hot
    /// path reads them here; only a refresh touches the store.
    tokens: std::sync::Mutex<Option<Arc<SessionTokens>>>,
    /// Held by the one request of this replica that refreshes the tokens.
    refreshing: tokio::sync::Mutex<()>,
    /// Why this replica ended the session early, so the requests that waited
    /// for its refresh, and the ones after, can say why on the sign-in page.
    ended: std::sync::OnceLock<SessionEnded>,
}

impl Cached {
    fn new(
        principal: Option<Arc<Principal>>,
        last_used: i64,
        tokens: Option<SessionTokens>,
    ) -> Arc<Self> {
        Arc::new(Cached {
            principal,
            last_used: AtomicI64::new(last_used),
            written: AtomicI64::new(last_used),
            tokens: std::sync::Mutex::new(tokens.map(Arc::new)),
            refreshing: tokio::sync::Mutex::new(()),
            ended: std::sync::OnceLock::new(),
        })
    }

    /// The entry of a session this replica ended early, for `why`.
    fn ended(why: SessionEnded) -> Arc<Self> {
        let entry = Cached::new(None, 0, None);
        let _ = entry.ended.set(why);
        entry
    }

    /// The session's source, when it is live here.
    fn source(&self) -> String {
        self.principal
            .as_ref()
            .map(|p| p.source.clone())
            .unwrap_or_default()
    }

    fn tokens(&self) -> Option<Arc<SessionTokens>> {
        self.tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_tokens(&self, tokens: SessionTokens) -> Arc<SessionTokens> {
        let tokens = Arc::new(tokens);
        *self
            .tokens
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tokens.clone());
        tokens
    }
}

/// The access token to pass upstream for a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccessToken {
    /// This token (valid, refreshed if it was due).
    Token(String),
    /// The session keeps no token (its source gave none, or it is from before
    /// tokens were kept), or none could be had in time: no header.
    Absent,
    /// The refresh failed or the token expired with nothing to refresh it:
    /// the session was ended; the request is treated as signed out. Says why
    /// when the session ended early (`None`: it was ended otherwise, e.g. by
    /// a sign-out while this request waited).
    Ended(Option<SessionEnded>),
}

/// How long a replica holds the refresh lease (longer than a token call takes).
const REFRESH_LEASE_SECS: i64 = 30;
/// How long a request waits for another replica's refresh before giving up.
const REFRESH_WAIT: Duration = Duration::from_secs(5);
/// How often a waiting request looks at the store for the refreshed tokens.
const REFRESH_POLL: Duration = Duration::from_millis(100);

/// Session handling for one gateway.
pub struct Sessions {
    /// Seals and opens every gateway cookie.
    pub sealer: Sealer,
    store: Arc<dyn UserStore>,
    /// sid -> the session as this replica knows it. Hashed with foldhash:
    /// a sid comes out of a sealed cookie, never chosen by a client.
    cache: moka::sync::Cache<String, Arc<Cached>, foldhash::fast::RandomState>,
    /// Session cookie name (with `__Host-` on https, `__Secure-` with a cookie domain).
    pub cookie_name: String,
    /// `session.cookie_domain`: hosts under it share one `Domain` cookie.
    cookie_domain: Option<String>,
    /// Login-state cookie name.
    pub login_cookie_name: String,
    /// Whether cookies are `Secure` (public URL is https).
    pub secure: bool,
    lifetime: Duration,
    /// `session.idle_timeout`: a session unused this long ends.
    idle_timeout: Option<Duration>,
    /// One-time values (login states, logout token ids) this replica has
    /// recorded in the store: their replays here are refused without it.
    used_states: moka::sync::Cache<String, ()>,
    /// Session cookies each worker already opened with these keys.
    opened: super::opened::Memo,
}

impl Sessions {
    /// Builds the session service.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        sealer: Sealer,
        store: Arc<dyn UserStore>,
        base_name: &str,
        cookie_domain: Option<String>,
        secure: bool,
        lifetime: Duration,
        idle_timeout: Option<Duration>,
        cache_ttl: Duration,
    ) -> Self {
        Sessions {
            sealer,
            store,
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .time_to_live(cache_ttl)
                .build_with_hasher(foldhash::fast::RandomState::default()),
            cookie_name: match cookie_domain {
                Some(_) => cookie::shared_cookie_name(base_name, secure),
                None => cookie::cookie_name(base_name, secure),
            },
            cookie_domain,
            // Login state stays host-only: it lives on the sign-in host alone.
            login_cookie_name: cookie::login_cookie_name(base_name, secure),
            secure,
            lifetime,
            idle_timeout,
            used_states: moka::sync::Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .time_to_live(Duration::from_secs(crate::config::defaults::USED_ONCE_SECS))
                .build(),
            opened: super::opened::Memo::new(),
        }
    }

    /// Marks `key` (a login state, under its own label) used on every
    /// replica: `Ok(false)` when it already was (a replay). This replica
    /// remembers the uses it recorded and answers their replays without the
    /// store; the store answers across replicas (keeping the value by its
    /// hash until it could no longer be presented). Remembered only once
    /// recorded, so a failed or abandoned write leaves the sender free to retry.
    pub async fn use_once(&self, key: &str, now: u64) -> Result<bool, StoreUnavailable> {
        self.spend(key, false, now, |hash, until, now| async move {
            self.store.use_once(&hash, until, now).await
        })
        .await
    }

    /// A back-channel logout for the token id `key` (labelled with its
    /// source): spends it and revokes the sessions of `sid`/`sub` in one
    /// store transaction. `Ok(None)` for a replay; a failure writes neither,
    /// so the provider's retry is heard.
    pub async fn logout_once(
        &self,
        key: &str,
        source: &str,
        sid: Option<&str>,
        sub: Option<&str>,
        now: u64,
    ) -> Result<Option<u64>, StoreUnavailable> {
        self.spend(key, None, now, |hash, until, now| async move {
            self.store
                .logout_once(&hash, until, now, source, sid, sub)
                .await
        })
        .await
    }

    /// Spends one-time value `key` through `write` (given its hash, the
    /// time until which it is kept, and `now`), or answers `replayed` for a
    /// use this replica recorded itself. Remembered only once written.
    async fn spend<T, F, Fut>(
        &self,
        key: &str,
        replayed: T,
        now: u64,
        write: F,
    ) -> Result<T, StoreUnavailable>
    where
        F: FnOnce(String, i64, i64) -> Fut,
        Fut: std::future::Future<Output = Result<T, crate::identity::store::StoreError>>,
    {
        if self.used_states.contains_key(key) {
            return Ok(replayed);
        }
        let (until, now) = once_window(now);
        match write(handoff::code_key(key), until, now).await {
            Ok(done) => {
                self.used_states.insert(key.to_string(), ());
                Ok(done)
            }
            Err(e) => {
                tracing::warn!(error = %e, "the store could not record a one-time value's use");
                Err(StoreUnavailable)
            }
        }
    }

    /// The store behind the sessions.
    pub fn store(&self) -> &Arc<dyn UserStore> {
        &self.store
    }

    /// The session claims in the request's cookies, if exactly one valid,
    /// unexpired session cookie for this host is present. Any doubt is "no session".
    /// The flag says the cookie was sealed with an older secret and should be re-sealed.
    /// `cookie_lines` gives the request's `Cookie` lines (as bytes) each
    /// time it is called: once to find a value this worker remembers, again
    /// to read them with every check when it does not. A pair that is not
    /// visible ASCII is skipped, the others on its line still read (SES-13).
    pub fn read<'a, I: Iterator<Item = &'a [u8]>>(
        &self,
        cookie_lines: impl Fn() -> I,
        host: &str,
        now: u64,
    ) -> Option<(Arc<SessionClaims>, bool)> {
        // A value this worker opened before was found well-formed then: its
        // bytes are not checked again.
        // Every line visible ASCII (every browser's, nearly always): the
        // remembered value may decide. Otherwise every line is read pair by
        // pair below (SES-13), so both ways see the same pairs.
        let remembered = cookie_lines()
            .all(cookie::visible)
            .then(|| cookie::sole_unchecked(cookie_lines(), &self.cookie_name))
            .flatten()
            .and_then(|value| self.opened.get(value));
        let (c, stale_key) = match remembered {
            Some(hit) => hit,
            None => {
                let texts = cookie_lines()
                    .flat_map(cookie::readable_parts)
                    .filter_map(|part| std::str::from_utf8(part).ok());
                let Lookup::One(value) = cookie::find(texts, &self.cookie_name) else {
                    return None;
                };
                // A malformed pair of the same name beside it comes this way.
                match self.opened.get(value.as_bytes()) {
                    Some(hit) => hit,
                    None => {
                        let opened = self
                            .sealer
                            .open::<SessionClaims>(&self.cookie_name, Purpose::Session, value)
                            .ok()?;
                        let claims = Arc::new(opened.value);
                        self.opened.put(value, &claims, opened.stale_key);
                        (claims, opened.stale_key)
                    }
                }
            }
        };
        (self.is_binding(host, &c.host) && !cookie::is_expired(c.exp, now))
            .then_some((c, stale_key))
    }

    /// Whether `bound` is [`Sessions::binding`] of `host` (without building it).
    fn is_binding(&self, host: &str, bound: &str) -> bool {
        match self.shared_domain(host) {
            Some(d) => bound.strip_prefix('.') == Some(d),
            None => bound == host,
        }
    }

    /// Whether `host` is under `session.cookie_domain` (shares the session cookie, no handoff).
    pub fn shares_cookie(&self, host: &str) -> bool {
        self.shared_domain(host).is_some()
    }

    /// The cookie domain, when `host` is under it.
    fn shared_domain(&self, host: &str) -> Option<&str> {
        self.cookie_domain
            .as_deref()
            .filter(|d| crate::config::host_under(host, d))
    }

    /// What a session cookie valid on `host` names as its host (SES-18):
    /// the host itself, or `.{cookie_domain}` for a cookie shared by every
    /// host under it.
    fn binding(&self, host: &str) -> String {
        match self.shared_domain(host) {
            Some(d) => format!(".{d}"),
            None => host.to_string(),
        }
    }

    /// `Set-Cookie` carrying the same session sealed with the current secret (SES-05).
    pub fn reseal(&self, claims: &SessionClaims, now: u64) -> Option<String> {
        let sealed = self
            .sealer
            .seal(&self.cookie_name, Purpose::Session, claims)
            .ok()?;
        let max_age = claims.exp.saturating_sub(now) as i64;
        let domain = claims.host.strip_prefix('.');
        Some(cookie::set_session_cookie(
            &self.cookie_name,
            &sealed,
            max_age,
            self.secure,
            domain,
        ))
    }

    /// The principal of a session: from the cache, else from the store once.
    /// With `idle_timeout`, a session unused that long is refused and each
    /// use is recorded in the background (no store write on this path).
    /// `Ok(None)`: no usable session; `Err`: the store had to be asked and
    /// could not answer.
    pub async fn principal(
        &self,
        claims: &SessionClaims,
        now: u64,
    ) -> Result<Option<Arc<Principal>>, StoreUnavailable> {
        if let Some(hit) = self.cache.get(&claims.sid) {
            let Some(principal) = hit.principal.clone() else {
                return Ok(None);
            };
            let last_used = hit.last_used.load(Ordering::Acquire);
            // Idle as far as this replica knows: another replica may have
            // written a later use, so ask the store before refusing.
            if !idle::is_idle(now, last_used, self.idle_timeout) {
                self.used(&claims.sid, &hit, now);
                return Ok(Some(principal));
            }
        }
        let resolved = match self.store.session(&claims.sid).await {
            Ok(Some((record, user))) => {
                let live = usable(&record, &user, claims, now)
                    && !idle::is_idle(now, record.last_used_at, self.idle_timeout);
                let principal = live.then(|| Arc::new(principal_of(&record, &user)));
                let tokens = record
                    .tokens
                    .as_deref()
                    .filter(|_| live)
                    .and_then(|t| SessionTokens::open(&self.sealer, &record.id, t));
                let entry = Cached::new(principal, record.last_used_at, tokens);
                if let Some(why) = self.ended_in(&record) {
                    // Another replica (or this one, before its cache let go) ended it early.
                    let _ = entry.ended.set(why);
                }
                entry
            }
            Ok(None) => Cached::new(None, 0, None),
            Err(e) => {
                // Not cached: a store hiccup must not lock a person out for
                // the whole TTL. Not "signed out" either: that would send a
                // browser to a sign-in that needs the store as well.
                tracing::warn!(error = %e, "session lookup failed");
                return Err(StoreUnavailable);
            }
        };
        self.cache.insert(claims.sid.clone(), resolved.clone());
        let Some(principal) = resolved.principal.clone() else {
            return Ok(None);
        };
        self.used(&claims.sid, &resolved, now);
        Ok(Some(principal))
    }

    /// Notes a use of a live session at `now`; with an idle timeout, writes
    /// it to the store in the background once per touch interval.
    fn used(&self, sid: &str, entry: &Cached, now: u64) {
        let Some(timeout) = self.idle_timeout else {
            return;
        };
        let now_secs = i64::try_from(now).unwrap_or(i64::MAX);
        entry.last_used.fetch_max(now_secs, Ordering::AcqRel);
        let interval = idle::touch_interval(timeout);
        let written = entry.written.load(Ordering::Acquire);
        if !idle::touch_due(now, written, interval) {
            return;
        }
        // One request per interval wins the exchange and writes; the others go on.
        if entry
            .written
            .compare_exchange(written, now_secs, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let store = self.store.clone();
        let sid = sid.to_string();
        let interval = i64::try_from(interval).unwrap_or(i64::MAX);
        runtime.spawn(async move {
            if let Err(e) = store.touch_session(&sid, now_secs, interval).await {
                // The next interval tries again; until then other replicas may
                // see an older last use (and end the session a little early).
                tracing::warn!(error = %e, "recording a session use failed");
            }
        });
    }

    /// A new session record for `source`, to be written with the sign-in.
    pub fn new_record(
        &self,
        source: &str,
        now: u64,
        id_token: Option<String>,
        oidc_sid: Option<String>,
        claims: &serde_json::Value,
        tokens: Option<&TokenSet>,
    ) -> Result<NewSession, crate::random::NoRandom> {
        let (claims, dropped) = crate::identity::claims::for_session(
            claims,
            crate::identity::claims::MAX_SESSION_CLAIMS,
        );
        if !dropped.is_empty() {
            // Names only: the values are personal data.
            tracing::warn!(
                auth.source = source,
                dropped = ?dropped,
                "the sign-in's claims exceed 16 KiB; the largest were left out of the session"
            );
        }
        let id = crate::random::token()?;
        let tokens = match tokens {
            Some(set) => match SessionTokens::issued(set, now).seal(&self.sealer, &id) {
                Ok(sealed) => Some(sealed),
                Err(e) => {
                    // The sign-in still works; the app just gets no token.
                    tracing::error!(error = %e, "sealing the session's tokens failed");
                    None
                }
            },
            None => None,
        };
        Ok(NewSession {
            id,
            tokens,
            source: source.to_string(),
            expires_at: (now + self.lifetime.as_secs()) as i64,
            oidc_sid,
            id_token,
            claims: Some(claims),
        })
    }

    /// The `Set-Cookie` value for a session just written to the store.
    pub fn cookie_for(
        &self,
        record: &NewSession,
        user: &User,
        host: &str,
        now: u64,
    ) -> Result<String, cookie::SessionError> {
        self.cookie_on(
            &record.id,
            &user.id,
            host,
            now + self.lifetime.as_secs(),
            now,
        )
    }

    /// The `Set-Cookie` value for session `sid` of user `uid` on `host`, until
    /// `exp`: a host-only cookie bound to `host`, or the shared `Domain`
    /// cookie where `host` is under `session.cookie_domain`. A handoff gives
    /// an app host its own cookie of an existing session this way.
    pub fn cookie_on(
        &self,
        sid: &str,
        uid: &str,
        host: &str,
        exp: u64,
        now: u64,
    ) -> Result<String, cookie::SessionError> {
        let claims = SessionClaims {
            sid: sid.to_string(),
            uid: uid.to_string(),
            host: self.binding(host),
            iat: now,
            exp,
        };
        let sealed = self
            .sealer
            .seal(&self.cookie_name, Purpose::Session, &claims)?;
        Ok(cookie::set_session_cookie(
            &self.cookie_name,
            &sealed,
            exp.saturating_sub(now) as i64,
            self.secure,
            self.shared_domain(host),
        ))
    }

    /// The access token of session `sid` (resolved by [`Sessions::principal`]
    /// just before) for an app with `pass_access_token`. From the cache while
    /// it is not due; a due token is refreshed by one request of one replica
    /// (a lease in the store); the others use the still-valid token or wait
    /// briefly for the refreshed one. A refused refresh, or an expired token
    /// with no refresh token, ends the session.
    pub async fn access_token(&self, sid: &str, sources: &Sources, now: u64) -> AccessToken {
        let Some(entry) = self.cache.get(sid) else {
            return AccessToken::Absent;
        };
        let Some(current) = entry.tokens() else {
            return AccessToken::Absent;
        };
        if !current.refresh_due(now) {
            return AccessToken::Token(current.access_token.clone());
        }
        if current.refresh_token.is_none() {
            if current.expired(now) {
                return self
                    .end(sid, &entry, entry.source(), EndReason::TokenExpired)
                    .await;
            }
            return AccessToken::Token(current.access_token.clone());
        }
        // One refreshing request per replica; the others use the still-valid
        // token, or wait for the refresh when it has expired.
        let _guard = match entry.refreshing.try_lock() {
            Ok(g) => g,
            Err(_) if !current.expired(now) => {
                return AccessToken::Token(current.access_token.clone())
            }
            Err(_) => entry.refreshing.lock().await,
        };
        if let Some(why) = entry.ended.get() {
            // The request this one waited for ended the session.
            return AccessToken::Ended(Some(why.clone()));
        }
        if let Some(t) = entry.tokens().filter(|t| !t.refresh_due(now)) {
            return AccessToken::Token(t.access_token.clone());
        }
        self.refresh_shared(sid, &entry, sources, now).await
    }

    /// The refresh across replicas: the store's tokens when another replica
    /// has refreshed them, else the lease and the refresh grant.
    async fn refresh_shared(
        &self,
        sid: &str,
        entry: &Cached,
        sources: &Sources,
        start: u64,
    ) -> AccessToken {
        let started = std::time::Instant::now();
        loop {
            let now = start + started.elapsed().as_secs();
            let now_secs = i64::try_from(now).unwrap_or(i64::MAX);
            let record = match self.store.session(sid).await {
                Ok(Some((record, user))) if record.is_live(now_secs) && !user.disabled => record,
                Ok(found) => {
                    // Ended while we waited: by another replica's refused refresh, a sign-out…
                    let why = found.and_then(|(record, _)| self.ended_in(&record));
                    let entry = match &why {
                        Some(w) => Cached::ended(w.clone()),
                        None => Cached::new(None, 0, None),
                    };
                    self.cache.insert(sid.to_string(), entry);
                    return AccessToken::Ended(why);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the session's tokens failed");
                    return still_valid(entry, now);
                }
            };
            let Some(stored) = record
                .tokens
                .as_deref()
                .and_then(|t| SessionTokens::open(&self.sealer, sid, t))
            else {
                return AccessToken::Absent;
            };
            if !stored.refresh_due(now) {
                // Another replica refreshed it.
                return AccessToken::Token(entry.set_tokens(stored).access_token.clone());
            }
            let claimed = self
                .store
                .claim_token_refresh(sid, now_secs, now_secs + REFRESH_LEASE_SECS)
                .await;
            match claimed {
                Ok(true) => {
                    return self
                        .refresh_claimed(sid, entry, &record.source, sources, now)
                        .await
                }
                Ok(false) if !stored.expired(now) => {
                    return AccessToken::Token(stored.access_token.clone())
                }
                Ok(false) if started.elapsed() < REFRESH_WAIT => {
                    tokio::time::sleep(REFRESH_POLL).await;
                }
                Ok(false) => {
                    tracing::warn!("another replica's token refresh did not finish in time");
                    return AccessToken::Absent;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "claiming the token refresh failed");
                    return still_valid(entry, now);
                }
            }
        }
    }

    /// With the lease just won: reads the tokens again, because another
    /// replica may have finished its refresh between our read and our claim
    /// (its rotated refresh token would make ours a reuse, which a provider
    /// with reuse detection answers by revoking the whole grant).
    async fn refresh_claimed(
        &self,
        sid: &str,
        entry: &Cached,
        source: &str,
        sources: &Sources,
        now: u64,
    ) -> AccessToken {
        let stored = match self.store.session(sid).await {
            Ok(Some((record, _))) => record
                .tokens
                .as_deref()
                .and_then(|t| SessionTokens::open(&self.sealer, sid, t)),
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "reading the session's tokens failed");
                self.free_lease(sid).await;
                return still_valid(entry, now);
            }
        };
        let Some(stored) = stored else {
            self.free_lease(sid).await;
            return AccessToken::Absent;
        };
        if !stored.refresh_due(now) {
            self.free_lease(sid).await;
            return AccessToken::Token(entry.set_tokens(stored).access_token.clone());
        }
        self.refresh(sid, entry, source, stored, sources, now).await
    }

    /// Frees the refresh lease without new tokens.
    async fn free_lease(&self, sid: &str) {
        if let Err(e) = self.store.finish_token_refresh(sid, None).await {
            tracing::warn!(error = %e, "freeing the token refresh lease failed");
        }
    }

    /// The refresh grant, with the lease held: stores the new tokens (a
    /// rotated refresh token with them) in one update, or ends the session.
    async fn refresh(
        &self,
        sid: &str,
        entry: &Cached,
        source: &str,
        stored: SessionTokens,
        sources: &Sources,
        now: u64,
    ) -> AccessToken {
        let (Some(rt), Some(refresh_token)) =
            (sources.get(source), stored.refresh_token.as_deref())
        else {
            return self
                .end(sid, entry, source.to_string(), EndReason::SourceRemoved)
                .await;
        };
        let signed_in = entry.principal.as_ref().map(|p| &*p.claims);
        match sources.refresh(&rt, refresh_token, signed_in, now).await {
            Ok(set) => {
                let next = stored.refreshed(&set, now);
                let sealed = match next.seal(&self.sealer, sid) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "sealing the refreshed tokens failed");
                        return self
                            .end(sid, entry, source.to_string(), EndReason::TokensNotKept)
                            .await;
                    }
                };
                if let Err(e) = self.store.finish_token_refresh(sid, Some(&sealed)).await {
                    // The provider may have rotated the refresh token we could
                    // not store: the old one is spent, so the session cannot go on.
                    tracing::warn!(error = %e, "storing the refreshed tokens failed");
                    return self
                        .end(sid, entry, source.to_string(), EndReason::TokensNotKept)
                        .await;
                }
                tracing::debug!(auth.source = source, "access token refreshed");
                AccessToken::Token(entry.set_tokens(next).access_token.clone())
            }
            Err(e @ (SourceError::IdToken(_) | SourceError::NotTheSession(_))) => {
                // OIDC-32: an ID token of another subject, issuer or client,
                // or one that does not verify, ends the session.
                tracing::warn!(auth.source = source, error = %e, "the provider renewed the tokens with an ID token that is not the session's");
                self.end(sid, entry, source.to_string(), EndReason::RefreshInvalid)
                    .await
            }
            Err(SourceError::TokenRefused(why)) => {
                tracing::info!(auth.source = source, reason = %why, "the provider refused the refresh token");
                self.end(sid, entry, source.to_string(), EndReason::RefreshRefused)
                    .await
            }
            Err(e) => {
                // Unreachable or garbled. DESIGN: "a refresh that fails ends
                // the session (the next request signs in again)", also while
                // the old token would still last a while.
                tracing::warn!(auth.source = source, error = %e, "refreshing the access token failed");
                self.end(
                    sid,
                    entry,
                    source.to_string(),
                    EndReason::ProviderUnreachable,
                )
                .await
            }
        }
    }

    /// Ends a session whose tokens cannot go on (logged with the reason);
    /// this replica remembers why, so the sign-in page can say it.
    async fn end(
        &self,
        sid: &str,
        entry: &Cached,
        source: String,
        reason: EndReason,
    ) -> AccessToken {
        tracing::info!(
            auth.source = source.as_str(),
            reason = reason.code(),
            "session ended: its access token cannot be renewed"
        );
        let why = SessionEnded { reason, source };
        match self.store.revoke_session(sid).await {
            // After the revocation, so no replica ever finds the session live
            // without its tokens: the reason replaces them (an ended session
            // needs none), and every replica can say why.
            Ok(()) => match why.seal(&self.sealer, sid) {
                Ok(sealed) => {
                    if let Err(e) = self.store.finish_token_refresh(sid, Some(&sealed)).await {
                        tracing::warn!(error = %e, "keeping why the session ended failed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "sealing why the session ended failed"),
            },
            // Not revoked in the store: its tokens stay, so another replica
            // never serves it live without them (it refreshes or ends it itself).
            Err(e) => tracing::warn!(error = %e, "session revocation failed"),
        }
        // The requests waiting on this entry's refresh read it from here.
        let _ = entry.ended.set(why.clone());
        self.cache
            .insert(sid.to_string(), Cached::ended(why.clone()));
        AccessToken::Ended(Some(why))
    }

    /// Why a revoked session record was ended early, when it was.
    fn ended_in(&self, record: &SessionRecord) -> Option<SessionEnded> {
        if !record.revoked {
            return None;
        }
        record
            .tokens
            .as_deref()
            .and_then(|t| SessionEnded::open(&self.sealer, &record.id, t))
    }

    /// Why session `sid` was ended early, when this replica knows (it ended
    /// it, or read the reason from the store).
    pub fn ended(&self, sid: &str) -> Option<SessionEnded> {
        self.cache.get(sid).and_then(|e| e.ended.get().cloned())
    }

    /// Revokes a session in the store, then in this replica's cache. `Err`:
    /// the store could not be written, so the session is still live on
    /// every replica (a sign-out must then not claim to have ended it).
    pub async fn revoke(&self, sid: &str) -> Result<(), StoreUnavailable> {
        if let Err(e) = self.store.revoke_session(sid).await {
            tracing::warn!(error = %e, "session revocation failed");
            return Err(StoreUnavailable);
        }
        self.cache
            .insert(sid.to_string(), Cached::new(None, 0, None));
        Ok(())
    }

    /// Forgets every cached session of this replica (after a back-channel
    /// logout, whose provider `sid` does not name our cache keys).
    pub fn forget_all(&self) {
        self.cache.invalidate_all();
    }

    /// The session record itself (for sign-out: its source and ID token).
    pub async fn record(&self, sid: &str) -> Option<SessionRecord> {
        self.store.session(sid).await.ok().flatten().map(|(r, _)| r)
    }

    /// `Set-Cookie` that removes the session cookie on `host` (with the
    /// `Domain` it was set with, where it is shared).
    pub fn clear(&self, host: &str) -> String {
        cookie::set_session_cookie(
            &self.cookie_name,
            "",
            0,
            self.secure,
            self.shared_domain(host),
        )
    }
}

/// The cached token while it has not expired (the store could not be asked).
fn still_valid(entry: &Cached, now: u64) -> AccessToken {
    match entry.tokens() {
        Some(t) if !t.expired(now) => AccessToken::Token(t.access_token.clone()),
        _ => AccessToken::Absent,
    }
}

/// Whether a stored session still grants access.
fn usable(record: &SessionRecord, user: &User, claims: &SessionClaims, now: u64) -> bool {
    !record.revoked
        && !user.disabled
        && record.expires_at > now as i64
        && record.user_id == claims.uid
        && user.id == claims.uid
}

/// The principal of a signed-in person.
pub fn principal_of(record: &SessionRecord, user: &User) -> Principal {
    Principal {
        user: user.username.clone(),
        user_id: Some(user.id.clone()),
        email: user.email.clone(),
        email_verified: user.email.is_some() && user.email_verified,
        name: user.name.clone(),
        groups: user.groups.clone(),
        preferred_username: Some(user.username.clone()),
        source: record.source.clone(),
        kind: crate::principal::PrincipalKind::Session,
        token_subject: None,
        claims: std::sync::Arc::new(crate::identity::claims::parse(record.claims.as_deref())),
        rendered: Default::default(),
    }
}
