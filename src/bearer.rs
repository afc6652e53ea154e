//! Machine tokens: `Authorization: Bearer <JWT>` verified against the JWKS
//! of the app's `jwt_sources`, the source chosen by `iss` (never by trying
//! every source); verified tokens cached until their `exp`.

use std::sync::Arc;

use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::config::App;
use crate::jwk::Key;
use crate::jws::{self, numeric_date, JwsError};
use crate::principal::{no_claims, Principal, PrincipalKind};
use crate::shared_principals::SharedPrincipals;
use crate::source::claims::lookup;
use crate::source::idtoken::{self, LEEWAY_SECS};
use crate::source::Sources;
use crate::verdict_cache::{Verdict, VerdictCache, VerdictKey};

/// Largest token accepted, checked before any parsing (docs/security.md).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Why a bearer token is refused; the text goes to the log (the client gets
/// one description for every reason, JWT-29) and never contains the token
/// or its claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// Over 8 KiB.
    #[error("the token is too large")]
    TooLarge,
    /// Not a signed JWT we can read: format, header, extensions, claims.
    #[error("the token is malformed or unsigned")]
    Malformed,
    /// `iss` is missing or not the issuer of any source this app trusts.
    #[error("the token's issuer is not trusted by this application")]
    UntrustedIssuer,
    /// The algorithm is not allowed for this source's machine tokens.
    #[error("the token's algorithm is not allowed")]
    Algorithm,
    /// No key of the issuer fits, even after a refetch.
    #[error("the token was not signed by a key of its issuer")]
    UnknownKey,
    /// No `kid`, and several keys of the issuer fit its algorithm (OIDC-17 for machine tokens).
    #[error("the token names no key and its issuer has several that fit")]
    AmbiguousKey,
    /// The signature does not verify.
    #[error("the token's signature is invalid")]
    Signature,
    /// `exp` missing or passed.
    #[error("the token has expired or has no expiry")]
    Expired,
    /// `nbf` in the future.
    #[error("the token is not valid yet")]
    NotYetValid,
    /// `iat` in the future or older than `jwt_max_age`.
    #[error("the token's issue time is out of range")]
    IssuedAt,
    /// `aud` has none of the app's `jwt_audiences`.
    #[error("the token is not for this application")]
    Audience,
    /// A back-channel logout token: it ends sessions, it never authenticates.
    #[error("a logout token is not an access token")]
    LogoutToken,
    /// The issuer's keys cannot be fetched and none are held.
    #[error("the issuer's keys are unavailable")]
    KeysUnavailable,
}

impl From<JwsError> for BearerError {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::TooLarge => BearerError::TooLarge,
            JwsError::Algorithm(_) => BearerError::Algorithm,
            JwsError::UnknownKey => BearerError::UnknownKey,
            JwsError::AmbiguousKey => BearerError::AmbiguousKey,
            JwsError::Signature => BearerError::Signature,
            JwsError::Format | JwsError::Header | JwsError::Unsupported | JwsError::Claims => {
                BearerError::Malformed
            }
        }
    }
}

/// The verdict-cache size, read when the metrics are gathered.
#[derive(Clone)]
struct CacheSize {
    cache: Arc<VerdictCache>,
    gauge: prometheus::IntGauge,
}

impl prometheus::core::Collector for CacheSize {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        self.gauge.desc()
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        self.gauge
            .set(i64::try_from(self.cache.len()).unwrap_or(i64::MAX));
        self.gauge.collect()
    }
}

/// Longest a verdict is kept, whatever `exp` says.
const MAX_VERDICT_SECS: u64 = 24 * 3600;

/// Bearer verification for the gateway.
pub struct Bearer {
    sources: Arc<Sources>,
    cache: Arc<VerdictCache>,
    /// Per source slug: the algorithms its machine tokens may use, resolved once.
    algorithms: std::collections::HashMap<String, Vec<Algorithm>>,
    /// The `bearer_cache_entries` gauge.
    held: Option<prometheus::IntGauge>,
    /// One shared principal per distinct identity: many tokens of one
    /// machine (a CI job's, say) then cost one verdict entry each, not one
    /// principal each. Keyed by the SHA-256 of the principal's JSON; held
    /// only while a verdict holds it.
    principals: SharedPrincipals,
    /// The secret key of the verdict cache's token hash, drawn at start
    /// (none only if the system had no randomness: then SHA-256).
    hash_key: Option<[u8; 16]>,
    /// This verifier's entries in each worker's [`KEYS`].
    owner: crate::memo::Owner,
}

/// Longer tokens have their verdict key computed each time.
const MAX_REMEMBERED_TOKEN: usize = 2048;

thread_local! {
    /// The verdict keys of the tokens this worker saw verified or found in
    /// the cache: a repeated token is compared byte for byte instead of
    /// hashed (SipHash of a 900-byte token was 2 700 of a bearer hit's
    /// 49 000 instructions; README, "Performance").
    static KEYS: std::cell::RefCell<crate::memo::Table<VerdictKey>> =
        const { std::cell::RefCell::new(crate::memo::Table::new(MAX_REMEMBERED_TOKEN)) };
}

/// Most distinct machine identities shared between verdicts at once.
const PRINCIPAL_ENTRIES: usize = 10_000;

impl Bearer {
    /// Verification over these sources' key sets.
    pub fn new(sources: Arc<Sources>, config: &[crate::config::Source], entries: u64) -> Self {
        Bearer {
            sources,
            cache: Arc::new(VerdictCache::new(entries)),
            principals: SharedPrincipals::new(PRINCIPAL_ENTRIES),
            hash_key: {
                let mut k = [0u8; 16];
                crate::random::fill(&mut k).ok().map(|()| k)
            },
            // Without randomness the memo's slots are merely predictable.
            owner: crate::memo::Owner::new(crate::random::u64().unwrap_or_default()),
            held: prometheus::IntGauge::new(
                "bearer_cache_entries",
                "Verified bearer tokens held in this replica's cache",
            )
            // Constant, valid options: this cannot fail; without it the count is not exported.
            .ok(),
            algorithms: config
                .iter()
                .map(|s| (s.slug.clone(), allowed_algorithms(&s.jwt_algorithms)))
                .collect(),
        }
    }

    /// The cache-size gauge, for the metrics registry.
    pub fn collector(&self) -> Option<Box<dyn prometheus::core::Collector>> {
        self.held.clone().map(|gauge| {
            Box::new(CacheSize {
                cache: self.cache.clone(),
                gauge,
            }) as Box<dyn prometheus::core::Collector>
        })
    }

    /// The principal of `token` for app number `app_index`; a repeated token
    /// costs one hash and one lookup.
    pub async fn verify(
        &self,
        app_index: usize,
        app: &App,
        token: &str,
        now: u64,
    ) -> Result<Arc<Principal>, BearerError> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(BearerError::TooLarge);
        }
        let tag = app_index as u64;
        let remembered = KEYS
            .try_with(|t| t.try_borrow().ok()?.get(self.owner, tag, token.as_bytes()))
            .ok()
            .flatten();
        let key =
            remembered.unwrap_or_else(|| verdict_key(self.hash_key.as_ref(), app_index, token));
        let remember = |key: VerdictKey| {
            if remembered.is_none() {
                let _ = KEYS.try_with(|t| {
                    if let Ok(mut t) = t.try_borrow_mut() {
                        t.put(self.owner, tag, token.as_bytes(), key);
                    }
                });
            }
        };
        // A verdict whose key the issuer dropped, or whose set went stale, is not served.
        if let Some(principal) = self.cache.get(&key, now) {
            remember(key);
            return Ok(principal);
        }
        let (principal, until, signer) = self.verify_uncached(app, token, now).await?;
        remember(key);
        self.cache.insert(
            key,
            Verdict {
                principal: principal.clone(),
                key: signer,
                until: until.min(now.saturating_add(MAX_VERDICT_SECS)),
            },
            now,
        );
        Ok(principal)
    }

    async fn verify_uncached(
        &self,
        app: &App,
        token: &str,
        now: u64,
    ) -> Result<(Arc<Principal>, u64, Arc<Key>), BearerError> {
        let jws = jws::parse(token, MAX_TOKEN_BYTES)?;
        // The source is chosen by `iss` among the app's jwt_sources only (JWT-20, JWT-22).
        let iss = jws
            .claims
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(BearerError::UntrustedIssuer)?;
        let (rt, endpoints) = app
            .jwt_sources
            .iter()
            .filter_map(|slug| self.sources.get(slug))
            .filter_map(|rt| rt.endpoints().map(|e| (rt, e)))
            .find(|(_, e)| e.issuer.as_deref() == Some(iss))
            .ok_or(BearerError::UntrustedIssuer)?;
        let src = &rt.config;
        let allowed = self
            .algorithms
            .get(&src.slug)
            .map(Vec::as_slice)
            .unwrap_or_default();
        if !allowed.contains(&jws.alg) {
            return Err(BearerError::Algorithm);
        }
        let keys = self
            .sources
            .jwks
            .keys_for(&src.slug, endpoints.jwks.as_ref(), jws.kid.as_deref())
            .await
            .map_err(|_| BearerError::KeysUnavailable)?;
        let signer = match jws.verify(&keys.set, allowed) {
            // Keys fetched for this token already are the provider's latest.
            Err(JwsError::UnknownKey) if !keys.fetched => {
                let keys = self
                    .sources
                    .jwks
                    .refetch(&src.slug, endpoints.jwks.as_ref(), Some(&keys.set))
                    .await
                    .map_err(|_| BearerError::UnknownKey)?;
                jws.verify(&keys, allowed)
            }
            other => other,
        }?;
        let claims = jws.into_claims();
        let until = check_times(&claims, now, src.jwt_max_age.map(|d| d.as_secs()))?;
        if claims
            .get("events")
            .and_then(|e| e.get(idtoken::BACKCHANNEL_LOGOUT_EVENT))
            .is_some()
        {
            return Err(BearerError::LogoutToken);
        }
        if !audience_allowed(&claims, &app.jwt_audiences) {
            return Err(BearerError::Audience);
        }
        let mut principal = principal_of(src, claims).ok_or(BearerError::Malformed)?;
        if !needs_claims(app) {
            // Nothing of this app reads them: one principal per machine
            // identity is then shared by all its tokens' verdicts.
            principal.claims = no_claims();
        }
        Ok((self.shared(principal), until, signer))
    }

    /// The shared copy of `p` (or `p` itself, now shared; without a verdict
    /// cache, `p` unshared). The claims are part of the key: two tokens of
    /// one machine with other claims (another `ref`, say) are two
    /// identities to policies and `claim_headers`.
    fn shared(&self, p: Principal) -> Arc<Principal> {
        // Without a verdict cache no principal outlives its request: there
        // is nothing to share, and the key (two serialisations and a
        // SHA-256) was 1.6 % of a bearer miss's time (README, "Performance").
        if !self.cache.keeps_any() {
            return Arc::new(p);
        }
        let (Ok(json), Ok(claims)) = (serde_json::to_vec(&p), serde_json::to_vec(&*p.claims))
        else {
            return Arc::new(p);
        };
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(&(json.len() as u64).to_be_bytes());
        ctx.update(&json);
        ctx.update(&claims);
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        self.principals.share(key, p)
    }
}

/// The verdict cache's key of `token` for app number `app_index`. The app is
/// part of it: a token good for one app's audiences is not for another's.
/// Keyed by the whole token, a re-encoded signature is verified anew (JWT-07).
///
/// SipHash-2-4 with a 128-bit output under a secret drawn at start: a keyed
/// pseudo-random function, so finding a token with the key of a cached one
/// takes about 2^128 / (tokens cached) tries, each a request, and no key is
/// ever shown. About a tenth of SHA-256's cost: a bearer hit with a
/// 900-byte token spent 21 000 of its 100 000 instructions in SHA-256
/// (README, "Performance").
fn verdict_key(secret: Option<&[u8; 16]>, app_index: usize, token: &str) -> VerdictKey {
    let app = (app_index as u64).to_be_bytes();
    match secret {
        Some(secret) => {
            use siphasher::sip128::Hasher128 as _;
            use std::hash::Hasher as _;
            let mut h = siphasher::sip128::SipHasher24::new_with_key(secret);
            h.write(&app);
            h.write(token.as_bytes());
            h.finish128().as_bytes()
        }
        None => {
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            ctx.update(&app);
            ctx.update(token.as_bytes());
            let mut k: VerdictKey = [0u8; 16];
            k.copy_from_slice(ctx.finish().as_ref().get(..16).unwrap_or_default());
            k
        }
    }
}

/// Whether app `app` reads a token's claims beyond the identity fields: an
/// access rule with an expression (`claims.*`) or `claim_headers`. Only then
/// does a verdict keep the token's claims (each token's own copy, as `jti`,
/// `iat` and `exp` differ); otherwise the claims are dropped and the tokens
/// of one machine share one principal, which keeps 100 000 cached tokens
/// small. The identity assertion reads only the identity fields and
/// `token_subject`, never the claims.
pub fn needs_claims(app: &App) -> bool {
    !app.claim_headers.is_empty() || app.policies.iter().any(|p| p.expression.is_some())
}

/// `token`'s claims read before any check (`None`: not a JWS), for
/// [`audience_allowed`] to spare a signature check for an app that would
/// refuse the token anyway (`/_auth/userinfo` asks every app of a host).
pub fn unverified_claims(token: &str) -> Option<Value> {
    jws::parse(token, MAX_TOKEN_BYTES)
        .ok()
        .map(|j| Value::Object(j.claims))
}

/// Whether `aud` (a string or an array) names one of the app's audiences.
/// Never optional: no audience configured admits nothing (JWT-23, JWT-24);
/// the config refuses an app with `jwt_sources` and no `jwt_audiences`.
pub fn audience_allowed(claims: &Value, audiences: &[String]) -> bool {
    let allowed = |a: &str| audiences.iter().any(|x| x == a);
    match claims.get("aud") {
        Some(Value::String(a)) => allowed(a),
        Some(Value::Array(items)) => items.iter().any(|a| a.as_str().is_some_and(allowed)),
        _ => false,
    }
}

/// The source's `jwt_algorithms` (parsed once, by validation), else every
/// asymmetric algorithm; never HMAC or none.
pub fn allowed_algorithms(configured: &[Algorithm]) -> Vec<Algorithm> {
    let all = crate::source::id_token_algorithms(&[]);
    if configured.is_empty() {
        all
    } else {
        // Validation admits only asymmetric algorithms; this is the second
        // lock for a `Source` built in code.
        configured
            .iter()
            .copied()
            .filter(|a| all.contains(a))
            .collect()
    }
}

/// `exp` required, `nbf`/`iat` honoured with 60 s leeway; with `max_age`, `iat`
/// is required and neither its age nor the remaining lifetime may exceed it
/// (JWT-18). Returns how long a verdict may stand: `exp`, or with `max_age`
/// the moment `iat` grows too old if that comes first (a cached verdict must
/// not outlive the age limit a fresh check applies).
pub fn check_times(c: &Value, now: u64, max_age: Option<u64>) -> Result<u64, BearerError> {
    let exp = c
        .get("exp")
        .and_then(numeric_date)
        .ok_or(BearerError::Expired)?;
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(BearerError::Expired);
    }
    if let Some(nbf) = c.get("nbf") {
        if numeric_date(nbf).is_none_or(|nbf| nbf > now.saturating_add(LEEWAY_SECS)) {
            return Err(BearerError::NotYetValid);
        }
    }
    let mut until = exp;
    let mut issued = None;
    match (c.get("iat"), max_age) {
        (Some(iat), max) => {
            let iat = numeric_date(iat).ok_or(BearerError::IssuedAt)?;
            issued = Some(iat);
            if iat > now.saturating_add(LEEWAY_SECS)
                || max.is_some_and(|m| now.saturating_sub(iat) > m)
            {
                return Err(BearerError::IssuedAt);
            }
            if let Some(m) = max {
                // Accepted while `now - iat <= m`; a verdict stands while `now < until`.
                until = until.min(iat.saturating_add(m).saturating_add(1));
            }
        }
        (None, Some(_)) => return Err(BearerError::IssuedAt),
        (None, None) => {}
    }
    // JWT-18: "remaining lifetime > configured max → reject", no leeway
    // added to the max. Counted from `iat` when that is ahead of our clock
    // (within the leeway, checked above): a token whose whole life is the
    // max, from an issuer whose clock runs a little ahead, is not refused.
    if let Some(m) = max_age {
        let from = issued.map_or(now, |iat| iat.max(now));
        if exp.saturating_sub(from) > m {
            return Err(BearerError::Expired);
        }
    }
    Ok(until)
}

/// The machine's identity: `sub` (the username claim goes to
/// `preferred_username` only), email,
/// groups, and the token's claims for policies and `claim_headers`. Its email
/// counts as vouched for when the token says `email_verified` (or the source
/// sets `trust_email`).
fn principal_of(src: &crate::config::Source, claims: Value) -> Option<Principal> {
    let at = |field: &str| src.claims.get(field).and_then(|path| lookup(&claims, path));
    let text = |field: &str| at(field).and_then(Value::as_str).map(str::to_string);
    let sub = claims.get("sub").and_then(Value::as_str)?.to_string();
    let groups = at("groups")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let email = text("email");
    let vouched = src.trust_email
        || match at("email_verified").or_else(|| claims.get("email_verified")) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => s.eq_ignore_ascii_case("true"),
            _ => false,
        };
    // DESIGN: a machine's `X-Forwarded-User` is the token's `sub`, whatever
    // else it carries (a human's name in it must not pass for that person);
    // the username claim goes to `X-Forwarded-Preferred-Username`.
    let (user, name, preferred_username) = (sub.clone(), text("name"), text("username"));
    Some(Principal {
        user,
        user_id: None,
        email_verified: email.is_some() && vouched,
        email,
        name,
        groups,
        preferred_username,
        source: src.slug.clone(),
        kind: PrincipalKind::Bearer,
        token_subject: claims
            .get("iss")
            .and_then(Value::as_str)
            .map(|iss| format!("{iss}#{sub}")),
        claims: Arc::new(claims),
        rendered: Default::default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_verdict_key_depends_on_the_app_the_whole_token_and_the_secret() {
        let (a, b) = ([7u8; 16], [8u8; 16]);
        let token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2ln";
        let k = verdict_key(Some(&a), 0, token);
        assert_eq!(k, verdict_key(Some(&a), 0, token));
        assert_ne!(k, verdict_key(Some(&a), 1, token), "another app");
        assert_ne!(k, verdict_key(Some(&b), 0, token), "another secret");
        // A signature re-encoded by one character is another token (JWT-07).
        let reencoded = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJjaSJ9.c2lu";
        assert_ne!(k, verdict_key(Some(&a), 0, reencoded));
        // Without randomness, SHA-256, still per app and token.
        let sha = verdict_key(None, 0, token);
        assert_ne!(sha, verdict_key(None, 1, token));
        assert_ne!(sha, k);
    }

    #[test]
    fn times_follow_exp_nbf_iat_and_max_age() {
        let now = 1_700_000_000;
        assert_eq!(
            check_times(&json!({"exp": now + 10}), now, None),
            Ok(now + 10)
        );
        assert_eq!(
            check_times(&json!({}), now, None),
            Err(BearerError::Expired)
        );
        assert_eq!(
            check_times(&json!({"exp": now - 61}), now, None),
            Err(BearerError::Expired)
        );
        assert!(check_times(&json!({"exp": now - 59}), now, None).is_ok());
        assert_eq!(
            check_times(&json!({"exp": now + 10, "nbf": now + 120}), now, None),
            Err(BearerError::NotYetValid)
        );
        assert_eq!(
            check_times(&json!({"exp": now + 10, "iat": now + 120}), now, None),
            Err(BearerError::IssuedAt)
        );
        assert_eq!(
            check_times(
                &json!({"exp": now + 10, "iat": now - 7200}),
                now,
                Some(3600)
            ),
            Err(BearerError::IssuedAt)
        );
        assert_eq!(
            check_times(&json!({"exp": now + 10}), now, Some(3600)),
            Err(BearerError::IssuedAt)
        );
        // JWT-18: boundaries and a lifetime longer than jwt_max_age.
        assert!(check_times(&json!({"exp": now - 60}), now, None).is_ok());
        assert!(check_times(&json!({"exp": now + 10, "nbf": now + 60}), now, None).is_ok());
        assert_eq!(
            check_times(&json!({"exp": now + 10, "nbf": now + 61}), now, None),
            Err(BearerError::NotYetValid)
        );
        assert_eq!(
            check_times(&json!({"exp": now + 7200, "iat": now}), now, Some(3600)),
            Err(BearerError::Expired)
        );
        // One second over the max is over it: no leeway on the lifetime.
        assert_eq!(
            check_times(&json!({"exp": now + 3601, "iat": now}), now, Some(3600)),
            Err(BearerError::Expired)
        );
        assert!(check_times(&json!({"exp": now + 3600, "iat": now}), now, Some(3600)).is_ok());
        // An issuer's clock 30 s ahead: its whole-max token is not refused,
        // one longer than the max from its own `iat` is.
        let ahead = now + 30;
        assert!(check_times(&json!({"exp": ahead + 3600, "iat": ahead}), now, Some(3600)).is_ok());
        assert_eq!(
            check_times(&json!({"exp": ahead + 3601, "iat": ahead}), now, Some(3600)),
            Err(BearerError::Expired)
        );
    }

    #[test]
    fn jwt18_a_verdict_under_jwt_max_age_stands_only_while_iat_is_young_enough() {
        let now = 1_700_000_000;
        let young = json!({"exp": now + 300, "iat": now - 290});
        // Accepted through iat + 300 (now + 10), refused a second later: the
        // verdict stands while `now < until`, so until the second after.
        assert_eq!(check_times(&young, now, Some(300)), Ok(now + 11));
        assert!(check_times(&young, now + 10, Some(300)).is_ok());
        assert_eq!(
            check_times(&young, now + 11, Some(300)),
            Err(BearerError::IssuedAt)
        );
        // Without an age limit, or with `exp` first, `exp` ends it.
        assert_eq!(check_times(&young, now, None), Ok(now + 300));
        assert_eq!(
            check_times(&json!({"exp": now + 5, "iat": now - 290}), now, Some(300)),
            Ok(now + 5)
        );
    }

    #[test]
    fn a_fractional_numeric_date_counts_its_whole_seconds() {
        // RFC 7519 §2: "can represent non-integer values" (`time.time() + 300`).
        let now = 1_700_000_000u64;
        let t = now as f64;
        let fine = json!({"exp": t + 100.5, "nbf": t - 0.5, "iat": t - 0.25});
        assert!(check_times(&fine, now, None).is_ok());
        assert_eq!(
            check_times(&json!({"exp": t - 3600.5}), now, None),
            Err(BearerError::Expired)
        );
    }

    #[test]
    fn jwt19_odd_numeric_dates_are_refused_without_overflow() {
        let now = 1_700_000_000u64;
        for bad in [
            json!("1700000100"),
            json!(true),
            json!([now + 100]),
            json!(-5),
            json!(1e300),
            json!(f64::MAX),
            json!(i64::MAX),
            json!(u64::MAX),
            json!(null),
            json!(-0.5),
            json!(-0.0),
            json!(253_402_300_800.5),
        ] {
            assert_eq!(
                check_times(&json!({ "exp": bad }), now, None),
                Err(BearerError::Expired),
                "exp {bad}"
            );
            assert_eq!(
                check_times(&json!({"exp": now + 10, "nbf": bad}), now, None),
                Err(BearerError::NotYetValid),
                "nbf {bad}"
            );
            assert_eq!(
                check_times(&json!({"exp": now + 10, "iat": bad}), now, None),
                Err(BearerError::IssuedAt),
                "iat {bad}"
            );
        }
    }

    #[test]
    fn jwt23_audience_is_never_optional() {
        let api = vec!["api".to_string()];
        assert!(audience_allowed(&json!({"aud": "api"}), &api));
        assert!(audience_allowed(&json!({"aud": ["other", "api"]}), &api));
        for refused in [
            json!({}),
            json!({"aud": null}),
            json!({"aud": "other"}),
            json!({"aud": ["other"]}),
            json!({"aud": []}),
            json!({"aud": [7, {"api": 1}]}),
            json!({"aud": "API"}),
        ] {
            assert!(!audience_allowed(&refused, &api), "{refused}");
        }
        // An app without audiences admits no token at all.
        assert!(!audience_allowed(&json!({"aud": "api"}), &[]));
        assert!(!audience_allowed(&json!({}), &[]));
    }

    fn app() -> App {
        App {
            name: "api".into(),
            host: None,
            path_prefix: "/".into(),
            upstream: crate::config::Upstream {
                url: url::Url::parse("http://127.0.0.1:1").unwrap(),
                host: "127.0.0.1".into(),
                port: 1,
                tls: false,
            },
            sources: vec![],
            jwt_sources: vec!["ci".into()],
            jwt_audiences: vec!["api".into()],
            forward_bearer_token: false,
            identity_assertion: false,
            pass_access_token: false,
            upstream_ca_file: None,
            public_paths: vec![],
            claim_headers: Default::default(),
            policies: vec![],
        }
    }

    fn allow(expression: Option<&str>) -> crate::config::Policy {
        crate::config::Policy {
            on: vec![crate::config::PolicyAction::Access],
            effect: crate::config::Effect::Allow,
            email_domains: vec![],
            groups: vec!["ops".into()],
            users: vec![],
            expression: expression
                .map(|e| crate::config::expression::Expression::compile(e).unwrap()),
            message: None,
            path_prefix: None,
        }
    }

    #[test]
    fn verdicts_keep_token_claims_only_for_apps_that_read_them() {
        let mut plain = app();
        plain.identity_assertion = true;
        plain.policies.push(allow(None));
        assert!(
            !needs_claims(&plain),
            "groups, users and the assertion need no claims"
        );
        let mut by_expression = app();
        by_expression.policies.push(allow(None));
        by_expression
            .policies
            .push(allow(Some("claims.ref == 'refs/heads/main'")));
        assert!(needs_claims(&by_expression));
        let mut by_header = app();
        by_header.policies.push(allow(None));
        by_header
            .claim_headers
            .insert("x-repo".into(), "repository".into());
        assert!(needs_claims(&by_header));
    }

    #[test]
    fn hmac_and_none_are_never_allowed() {
        let all = allowed_algorithms(&[]);
        assert!(
            !all.contains(&Algorithm::HS256)
                && all.contains(&Algorithm::RS256)
                && all.contains(&Algorithm::EdDSA)
        );
        assert_eq!(
            allowed_algorithms(&[Algorithm::ES256]),
            vec![Algorithm::ES256]
        );
    }
}
