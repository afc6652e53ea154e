//! Machine tokens: `Authorization: Bearer <JWT>` verified against the JWKS
//! of the app's `jwt_sources`, the source chosen by `iss` (never by trying
//! every source); verified tokens cached until their `exp`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::config::App;
use crate::principal::Principal;
use crate::source::claims::lookup;
use crate::source::idtoken::{self, IdTokenError, LEEWAY_SECS};
use crate::source::Sources;

/// Largest token accepted, checked before any parsing (SECURITY.md).
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Most verified tokens held per replica.
pub const CACHE_ENTRIES: u64 = 100_000;

/// Why a bearer token is refused; the text goes into RFC 6750's
/// `error_description` and never contains the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BearerError {
    /// Over 8 KiB.
    #[error("the token is too large")]
    TooLarge,
    /// Not a signed JWT we can read, `alg: none`, or `crit` headers.
    #[error("the token is malformed or unsigned")]
    Malformed,
    /// `iss` is not the issuer of any source this app trusts.
    #[error("the token's issuer is not trusted by this application")]
    UntrustedIssuer,
    /// The algorithm is not allowed for this source's machine tokens.
    #[error("the token's algorithm is not allowed")]
    Algorithm,
    /// No key of the issuer fits, even after a refetch.
    #[error("the token was not signed by a key of its issuer")]
    UnknownKey,
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
    /// The issuer's keys cannot be fetched and none are held.
    #[error("the issuer's keys are unavailable")]
    KeysUnavailable,
}

struct Verified {
    principal: Arc<Principal>,
    /// When the token expires, as an `Instant` for the cache.
    until: Instant,
}

/// Expires each cached token at its own `exp`.
struct UntilExp;

impl moka::Expiry<[u8; 32], Arc<Verified>> for UntilExp {
    fn expire_after_create(
        &self,
        _k: &[u8; 32],
        v: &Arc<Verified>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(v.until.saturating_duration_since(created_at))
    }
}

/// Bearer verification for the gateway.
pub struct Bearer {
    sources: Arc<Sources>,
    cache: moka::sync::Cache<[u8; 32], Arc<Verified>>,
}

impl Bearer {
    /// Verification over these sources' key sets.
    pub fn new(sources: Arc<Sources>) -> Self {
        Bearer {
            sources,
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                .expire_after(UntilExp)
                .build(),
        }
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
        // The app is part of the key: a token good for one app's audiences is not for another's.
        let key = {
            let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
            ctx.update(&(app_index as u64).to_be_bytes());
            ctx.update(token.as_bytes());
            let mut k = [0u8; 32];
            k.copy_from_slice(ctx.finish().as_ref());
            k
        };
        if let Some(hit) = self.cache.get(&key) {
            return Ok(hit.principal.clone());
        }
        let (principal, exp) = self.verify_uncached(app, token, now).await?;
        let until = Instant::now() + Duration::from_secs(exp.saturating_sub(now));
        self.cache.insert(
            key,
            Arc::new(Verified {
                principal: principal.clone(),
                until,
            }),
        );
        Ok(principal)
    }

    async fn verify_uncached(
        &self,
        app: &App,
        token: &str,
        now: u64,
    ) -> Result<(Arc<Principal>, u64), BearerError> {
        let (alg, kid) = idtoken::peek(token).map_err(|_| BearerError::Malformed)?;
        let iss = unverified_issuer(token).ok_or(BearerError::Malformed)?;
        // The source is chosen by `iss` among the app's jwt_sources only.
        let rt = app
            .jwt_sources
            .iter()
            .filter_map(|slug| self.sources.get(slug))
            .find(|rt| {
                rt.endpoints().and_then(|e| e.issuer.clone()).as_deref() == Some(iss.as_str())
            })
            .ok_or(BearerError::UntrustedIssuer)?;
        let src = &rt.config;
        let allowed = allowed_algorithms(&src.jwt_algorithms);
        if !allowed.contains(&alg) {
            return Err(BearerError::Algorithm);
        }
        let endpoints = rt.endpoints().ok_or(BearerError::KeysUnavailable)?;
        let keys = self
            .sources
            .jwks
            .keys_for(&src.slug, endpoints.jwks.as_ref(), kid.as_deref())
            .await
            .map_err(|_| BearerError::KeysUnavailable)?;
        let claims = match idtoken::verify(token, &keys, &allowed, None) {
            Err(IdTokenError::UnknownKey) => {
                let keys = self
                    .sources
                    .jwks
                    .refetch(&src.slug, endpoints.jwks.as_ref(), Some(&keys))
                    .await
                    .map_err(|_| BearerError::KeysUnavailable)?;
                idtoken::verify(token, &keys, &allowed, None)
            }
            other => other,
        }
        .map_err(|e| match e {
            IdTokenError::UnknownKey => BearerError::UnknownKey,
            IdTokenError::Algorithm(_) => BearerError::Algorithm,
            IdTokenError::Signature => BearerError::Signature,
            _ => BearerError::Malformed,
        })?;
        let exp = check_times(&claims, now, src.jwt_max_age.map(|d| d.as_secs()))?;
        if !app.jwt_audiences.is_empty() {
            let aud_ok = match claims.get("aud") {
                Some(Value::String(a)) => app.jwt_audiences.contains(a),
                Some(Value::Array(items)) => items.iter().any(|a| {
                    a.as_str()
                        .is_some_and(|a| app.jwt_audiences.iter().any(|x| x == a))
                }),
                _ => false,
            };
            if !aud_ok {
                return Err(BearerError::Audience);
            }
        }
        Ok((
            Arc::new(principal_of(src, &claims).ok_or(BearerError::Malformed)?),
            exp,
        ))
    }
}

/// The `iss` of a token, read before verification only to pick the source.
fn unverified_issuer(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    let v: Value = serde_json::from_slice(&bytes).ok()?;
    v.get("iss")?.as_str().map(str::to_string)
}

/// The source's `jwt_algorithms`, else every asymmetric algorithm; never HMAC or none.
pub fn allowed_algorithms(configured: &[String]) -> Vec<Algorithm> {
    let parsed: Vec<Algorithm> = configured.iter().filter_map(|a| a.parse().ok()).collect();
    let all = crate::source::id_token_algorithms(&[]);
    if parsed.is_empty() {
        all
    } else {
        parsed.into_iter().filter(|a| all.contains(a)).collect()
    }
}

/// `exp` required, `nbf`/`iat` honoured with 60 s leeway, `max_age` on `iat`; returns `exp`.
pub fn check_times(c: &Value, now: u64, max_age: Option<u64>) -> Result<u64, BearerError> {
    let exp = c
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(BearerError::Expired)?;
    if now > exp.saturating_add(LEEWAY_SECS) {
        return Err(BearerError::Expired);
    }
    if let Some(nbf) = c.get("nbf") {
        if nbf
            .as_u64()
            .is_none_or(|nbf| nbf > now.saturating_add(LEEWAY_SECS))
        {
            return Err(BearerError::NotYetValid);
        }
    }
    match (c.get("iat"), max_age) {
        (Some(iat), max) => {
            let iat = iat.as_u64().ok_or(BearerError::IssuedAt)?;
            if iat > now.saturating_add(LEEWAY_SECS)
                || max.is_some_and(|m| now.saturating_sub(iat) > m)
            {
                return Err(BearerError::IssuedAt);
            }
        }
        (None, Some(_)) => return Err(BearerError::IssuedAt),
        (None, None) => {}
    }
    Ok(exp)
}

/// The machine's identity: `sub` (or the source's username claim), email, groups.
fn principal_of(src: &crate::config::Source, claims: &Value) -> Option<Principal> {
    let text = |field: &str| {
        src.claims
            .get(field)
            .and_then(|path| lookup(claims, path))
            .and_then(Value::as_str)
            .map(str::to_string)
    };
    let sub = claims.get("sub").and_then(Value::as_str)?.to_string();
    let groups = src
        .claims
        .get("groups")
        .and_then(|path| lookup(claims, path))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|g| g.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Some(Principal {
        user: text("username").unwrap_or_else(|| sub.clone()),
        user_id: None,
        email: text("email"),
        name: text("name"),
        groups,
        preferred_username: text("username"),
        source: src.slug.clone(),
        kind: "bearer",
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
            allowed_algorithms(&["ES256".into()]),
            vec![Algorithm::ES256]
        );
    }
}
