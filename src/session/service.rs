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
use crate::session::{idle, SessionClaims};

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
}

impl Cached {
    fn new(principal: Option<Arc<Principal>>, last_used: i64) -> Arc<Self> {
        Arc::new(Cached {
            principal,
            last_used: AtomicI64::new(last_used),
            written: AtomicI64::new(last_used),
        })
    }
}

/// Session handling for one gateway.
pub struct Sessions {
    /// Seals and opens every gateway cookie.
    pub sealer: Sealer,
    store: Arc<dyn UserStore>,
    /// sid -> the session as this replica knows it.
    cache: moka::sync::Cache<String, Arc<Cached>>,
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
    /// `state` values already consumed on this replica, so a replayed callback
    /// (same login cookie, same state) is refused even before the provider sees the code.
    used_states: moka::sync::Cache<String, ()>,
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
                .build(),
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
                .time_to_live(Duration::from_secs(crate::source::flow::LOGIN_STATE_SECS))
                .build(),
        }
    }

    /// Marks a login `state` as consumed; `false` when it already was (a replay).
    pub fn consume_state(&self, state: &str) -> bool {
        let entry = self.used_states.entry(state.to_string()).or_insert(());
        entry.is_fresh()
    }

    /// The store behind the sessions.
    pub fn store(&self) -> &Arc<dyn UserStore> {
        &self.store
    }

    /// The session claims in the request's cookies, if exactly one valid,
    /// unexpired session cookie for this host is present. Any doubt is "no session".
    /// The flag says the cookie was sealed with an older secret and should be re-sealed.
    pub fn read<'a>(
        &self,
        cookie_headers: impl Iterator<Item = &'a str>,
        host: &str,
        now: u64,
    ) -> Option<(SessionClaims, bool)> {
        let Lookup::One(value) = cookie::find(cookie_headers, &self.cookie_name) else {
            return None;
        };
        let opened = self
            .sealer
            .open::<SessionClaims>(&self.cookie_name, Purpose::Session, value)
            .ok()?;
        let c = opened.value;
        (self.binding(host) == c.host && !cookie::is_expired(c.exp, now))
            .then_some((c, opened.stale_key))
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
    pub async fn principal(&self, claims: &SessionClaims, now: u64) -> Option<Arc<Principal>> {
        if let Some(hit) = self.cache.get(&claims.sid) {
            let principal = hit.principal.clone()?;
            let last_used = hit.last_used.load(Ordering::Acquire);
            // Idle as far as this replica knows: another replica may have
            // written a later use, so ask the store before refusing.
            if !idle::is_idle(now, last_used, self.idle_timeout) {
                self.used(&claims.sid, &hit, now);
                return Some(principal);
            }
        }
        let resolved = match self.store.session(&claims.sid).await {
            Ok(Some((record, user))) => {
                let live = usable(&record, &user, claims, now)
                    && !idle::is_idle(now, record.last_used_at, self.idle_timeout);
                let principal = live.then(|| Arc::new(principal_of(&record, &user)));
                Cached::new(principal, record.last_used_at)
            }
            Ok(None) => Cached::new(None, 0),
            Err(e) => {
                // Not cached: a store hiccup must not lock a person out for the whole TTL.
                tracing::warn!(error = %e, "session lookup failed");
                return None;
            }
        };
        self.cache.insert(claims.sid.clone(), resolved.clone());
        let principal = resolved.principal.clone()?;
        self.used(&claims.sid, &resolved, now);
        Some(principal)
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
    ) -> Result<NewSession, crate::source::flow::FlowError> {
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
        Ok(NewSession {
            id: crate::source::flow::random_token()?,
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

    /// Revokes a session in the store and in this replica's cache.
    pub async fn revoke(&self, sid: &str) {
        if let Err(e) = self.store.revoke_session(sid).await {
            tracing::warn!(error = %e, "session revocation failed");
        }
        self.cache.insert(sid.to_string(), Cached::new(None, 0));
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
        kind: "session",
        token_subject: None,
        claims: std::sync::Arc::new(crate::identity::claims::parse(record.claims.as_deref())),
    }
}
