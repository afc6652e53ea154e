//! The identity assertion (`X-Portcullis-Assertion`): an ES256 JWT saying who
//! made a request, signed with a P-256 key derived from each session secret
//! (HKDF, so every replica signs alike and rotation rotates it), the public
//! keys served as a JWKS, and a bounded cache so the hot path signs rarely.

use std::time::Duration;

use aws_lc_rs::agreement;
use aws_lc_rs::digest::{self, SHA256};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use http::HeaderValue;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;
use serde_json::{json, Value};

use crate::config::Secret;
use crate::principal::{Principal, PrincipalKind};

/// The header that carries the assertion to the upstream.
pub const HEADER: &str = "x-portcullis-assertion";
/// How long an assertion is valid (DESIGN: at most 5 minutes).
pub const LIFETIME_SECS: u64 = 300;
/// An assertion is re-signed once less than this is left of it, so the
/// upstream always receives one with at least this long to live (clock skew,
/// slow requests).
pub const REFRESH_MARGIN_SECS: u64 = 60;
/// Most assertions held per replica (one per identity and app).
pub const CACHE_ENTRIES: u64 = 100_000;

/// Fixed HKDF salt: separates this use of the session secrets from the
/// cookie keys (`session::cookie`), which use their own salt and info.
const HKDF_SALT: &[u8] = b"portcullis identity assertion salt";
/// HKDF info for the P-256 private scalar; a counter byte follows it.
const KEY_INFO: &[u8] = b"portcullis identity assertion es256 v1";
/// Tries before giving up on a secret: a 32-byte HKDF output is a valid
/// P-256 scalar (non-zero, below the group order) with probability
/// 1 - 2^-32, so a second try is already astronomically rare.
const KEY_TRIES: u8 = 8;

/// Why the assertion keys could not be made or an assertion signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// No session secret is configured (config validation refuses that): nothing can sign.
    #[error("no session secret to derive the assertion key from")]
    NoSecret,
    /// The crypto library refused every derived scalar or failed: a bug or a broken build.
    #[error("the assertion key could not be derived")]
    Derive,
    /// Signing failed: the request goes on without an assertion rather than with a wrong one.
    #[error("the assertion could not be signed")]
    Sign,
}

/// One P-256 key derived from one session secret.
struct DerivedKey {
    /// RFC 7638 thumbprint of the public key: stable for a given secret.
    kid: String,
    /// The public key as a JWK.
    jwk: Value,
    /// The private key (PKCS#8), for signing.
    encoding: EncodingKey,
}

/// Derives the key of one secret: HKDF-SHA256 → a 32-byte scalar, accepted
/// by the library as a P-256 private key (else the next counter), its public
/// point computed by the library.
fn derive_key(secret: &[u8]) -> Result<DerivedKey, AssertionError> {
    let prk = Salt::new(HKDF_SHA256, HKDF_SALT).extract(secret);
    for counter in 0..KEY_TRIES {
        let mut scalar = [0u8; 32];
        prk.expand(&[KEY_INFO, &[counter]], HKDF_SHA256)
            .and_then(|okm| okm.fill(&mut scalar))
            .map_err(|_| AssertionError::Derive)?;
        let Ok(private) = agreement::PrivateKey::from_private_key(&agreement::ECDH_P256, &scalar)
        else {
            continue;
        };
        let public = private
            .compute_public_key()
            .map_err(|_| AssertionError::Derive)?;
        let pair = EcdsaKeyPair::from_private_key_and_public_key(
            &ECDSA_P256_SHA256_FIXED_SIGNING,
            &scalar,
            public.as_ref(),
        )
        .map_err(|_| AssertionError::Derive)?;
        scalar.fill(0);
        let pkcs8 = pair.to_pkcs8v1().map_err(|_| AssertionError::Derive)?;
        let (kid, jwk) = public_jwk(pair.public_key().as_ref()).ok_or(AssertionError::Derive)?;
        return Ok(DerivedKey {
            kid,
            jwk,
            encoding: EncodingKey::from_ec_der(pkcs8.as_ref()),
        });
    }
    Err(AssertionError::Derive)
}

/// The JWK of an uncompressed P-256 point (`04 || x || y`) and its RFC 7638 thumbprint.
fn public_jwk(point: &[u8]) -> Option<(String, Value)> {
    let (tag, xy) = point.split_first()?;
    if *tag != 4 || xy.len() != 64 {
        return None;
    }
    let (x, y) = xy.split_at(32);
    let (x, y) = (URL_SAFE_NO_PAD.encode(x), URL_SAFE_NO_PAD.encode(y));
    // RFC 7638 §3.2: the required members, lexicographic order, no whitespace.
    let canonical = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
    let kid = URL_SAFE_NO_PAD.encode(digest::digest(&SHA256, canonical.as_bytes()));
    let jwk = json!({
        "kty": "EC",
        "crv": "P-256",
        "x": x,
        "y": y,
        "kid": kid,
        "alg": "ES256",
        "use": "sig",
    });
    Some((kid, jwk))
}

/// The keys of every configured secret: the first signs, all are published.
pub struct AssertionKeys {
    keys: Vec<DerivedKey>,
    /// `GET /_auth/jwks.json`, serialized once.
    jwks: bytes::Bytes,
}

impl std::fmt::Debug for AssertionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionKeys")
            .field("kids", &self.kids())
            .finish_non_exhaustive()
    }
}

impl AssertionKeys {
    /// One key per secret, in order (a secret listed twice is published once).
    pub fn derive(secrets: &[Secret<Vec<u8>>]) -> Result<Self, AssertionError> {
        if secrets.is_empty() {
            return Err(AssertionError::NoSecret);
        }
        let mut keys: Vec<DerivedKey> = Vec::with_capacity(secrets.len());
        for secret in secrets {
            let key = derive_key(secret.expose())?;
            if !keys.iter().any(|k| k.kid == key.kid) {
                keys.push(key);
            }
        }
        let doc = json!({ "keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>() });
        Ok(AssertionKeys {
            jwks: bytes::Bytes::from(doc.to_string()),
            keys,
        })
    }

    /// The JWKS document listing every key.
    pub fn jwks(&self) -> bytes::Bytes {
        self.jwks.clone()
    }

    /// The `kid` of every key, the signing key first.
    pub fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_str()).collect()
    }

    /// Signs `claims` with the first secret's key (`kid` in the header).
    pub fn sign(&self, claims: &impl Serialize) -> Result<String, AssertionError> {
        let key = self.keys.first().ok_or(AssertionError::NoSecret)?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(key.kid.clone());
        jsonwebtoken::encode(&header, claims, &key.encoding).map_err(|_| AssertionError::Sign)
    }
}

/// What the assertion says, besides its times.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity<'a> {
    /// The gateway's public URL (origin).
    pub iss: &'a str,
    /// The app's name.
    pub aud: &'a str,
    /// The local user id; for a machine `{iss}#{sub}` of its token.
    pub sub: &'a str,
    /// Email, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<&'a str>,
    /// Whether a source vouched for `email` (present with it): an upstream
    /// that keys accounts on email must not trust an unvouched one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    /// Display name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<&'a str>,
    /// Groups (possibly none).
    pub groups: &'a [String],
    /// The username, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<&'a str>,
    /// `session` or `bearer`.
    pub kind: PrincipalKind,
}

impl<'a> Identity<'a> {
    /// The assertion of `p` for app `aud`, issued by `iss`.
    pub fn of(iss: &'a str, aud: &'a str, p: &'a Principal) -> Self {
        let sub = match p.kind {
            PrincipalKind::Bearer => p.token_subject.as_deref().unwrap_or(&p.user),
            PrincipalKind::Session => p.user_id.as_deref().unwrap_or(&p.user),
        };
        Identity {
            iss,
            aud,
            sub,
            email: p.email.as_deref(),
            email_verified: p.email.as_ref().map(|_| p.email_verified),
            name: p.name.as_deref(),
            groups: &p.groups,
            preferred_username: p.preferred_username.as_deref(),
            kind: p.kind,
        }
    }

    /// A digest of everything the assertion says: equal identities share a
    /// cached assertion, any difference (a renamed user, a new group) gets
    /// a new one. Each field is length-prefixed so no two differ only in
    /// where one field ends.
    fn cache_key(&self) -> [u8; 32] {
        let mut ctx = digest::Context::new(&SHA256);
        let mut field = |tag: u8, v: Option<&str>| {
            let v = v.unwrap_or_default();
            ctx.update(&[tag, u8::from(v.is_empty())]);
            ctx.update(&(v.len() as u64).to_be_bytes());
            ctx.update(v.as_bytes());
        };
        field(1, Some(self.iss));
        field(2, Some(self.aud));
        field(3, Some(self.sub));
        field(4, self.email);
        field(5, self.name);
        field(6, self.preferred_username);
        field(7, Some(self.kind.as_str()));
        field(9, self.email_verified.map(|v| if v { "1" } else { "0" }));
        for g in self.groups {
            field(8, Some(g));
        }
        let mut key = [0u8; 32];
        key.copy_from_slice(ctx.finish().as_ref());
        key
    }
}

/// The signed claims: the identity plus `iat` and `exp`.
#[derive(Serialize)]
struct Claims<'a> {
    #[serde(flatten)]
    identity: &'a Identity<'a>,
    iat: u64,
    exp: u64,
}

/// One cached assertion.
#[derive(Clone)]
struct Cached {
    header: HeaderValue,
    exp: u64,
}

/// Assertions for one gateway: its keys, its issuer and the cache.
pub struct Assertions {
    keys: AssertionKeys,
    issuer: String,
    cache: moka::sync::Cache<[u8; 32], Cached>,
}

impl Assertions {
    /// Assertions issued by `issuer` (the public URL's origin) with the keys of `secrets`.
    pub fn new(secrets: &[Secret<Vec<u8>>], issuer: String) -> Result<Self, AssertionError> {
        Ok(Assertions {
            keys: AssertionKeys::derive(secrets)?,
            issuer,
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_ENTRIES)
                // A bound only: `header` checks each entry's own expiry with its `now`.
                .time_to_live(Duration::from_secs(LIFETIME_SECS - REFRESH_MARGIN_SECS))
                .build(),
        })
    }

    /// The keys (for `/_auth/jwks.json`).
    pub fn keys(&self) -> &AssertionKeys {
        &self.keys
    }

    /// The assertion header of `p` for app `aud` at `now`: the cached one
    /// while it has more than [`REFRESH_MARGIN_SECS`] to live, else a new one.
    pub fn header(
        &self,
        aud: &str,
        p: &Principal,
        now: u64,
    ) -> Result<HeaderValue, AssertionError> {
        let identity = Identity::of(&self.issuer, aud, p);
        let key = identity.cache_key();
        if let Some(hit) = self.cache.get(&key) {
            if hit.exp > now.saturating_add(REFRESH_MARGIN_SECS) && hit.exp <= now + LIFETIME_SECS {
                return Ok(hit.header);
            }
        }
        let exp = now.saturating_add(LIFETIME_SECS);
        let jwt = self.keys.sign(&Claims {
            identity: &identity,
            iat: now,
            exp,
        })?;
        let header = HeaderValue::from_str(&jwt).map_err(|_| AssertionError::Sign)?;
        self.cache.insert(
            key,
            Cached {
                header: header.clone(),
                exp,
            },
        );
        Ok(header)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{DecodingKey, Validation};

    fn secret(b: u8) -> Secret<Vec<u8>> {
        Secret::new(vec![b; 32])
    }

    fn person() -> Principal {
        Principal {
            user: "ada".into(),
            user_id: Some("u-1".into()),
            email: Some("ada@example.com".into()),
            name: Some("Ada L".into()),
            groups: vec!["staff".into(), "ops".into()],
            preferred_username: Some("ada".into()),
            source: "corp".into(),
            kind: PrincipalKind::Session,
            token_subject: None,
            email_verified: true,
            claims: crate::principal::no_claims(),
            rendered: Default::default(),
        }
    }

    fn decoding_key(jwks: &[u8], kid: &str) -> DecodingKey {
        let doc: Value = serde_json::from_slice(jwks).unwrap();
        let jwk = doc["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap();
        DecodingKey::from_ec_components(jwk["x"].as_str().unwrap(), jwk["y"].as_str().unwrap())
            .unwrap()
    }

    fn verify(jwt: &str, jwks: &[u8], aud: &str) -> Result<Value, jsonwebtoken::errors::Error> {
        let kid = jsonwebtoken::decode_header(jwt)?.kid.unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[aud]);
        v.set_issuer(&["https://sso.example"]);
        jsonwebtoken::decode::<Value>(jwt, &decoding_key(jwks, &kid), &v).map(|d| d.claims)
    }

    #[test]
    fn the_same_secrets_derive_the_same_keys_and_kids_on_every_replica() {
        let a = AssertionKeys::derive(&[secret(1), secret(2)]).unwrap();
        let b = AssertionKeys::derive(&[secret(1), secret(2)]).unwrap();
        assert_eq!(a.kids(), b.kids());
        assert_eq!(a.jwks(), b.jwks());
        assert_eq!(a.kids().len(), 2);
        assert_ne!(a.kids()[0], a.kids()[1]);
        // What one replica signs, another's JWKS verifies.
        let jwt = a
            .sign(&json!({"aud": "wiki", "iss": "https://sso.example", "exp": u32::MAX}))
            .unwrap();
        assert!(verify(&jwt, &b.jwks(), "wiki").is_ok());
    }

    #[test]
    fn rotation_changes_the_signer_and_the_jwks_lists_every_secret() {
        let before = AssertionKeys::derive(&[secret(1)]).unwrap();
        let rotated = AssertionKeys::derive(&[secret(2), secret(1)]).unwrap();
        assert_eq!(
            rotated.kids()[1],
            before.kids()[0],
            "the old key stays published"
        );
        assert_ne!(rotated.kids()[0], before.kids()[0], "the new secret signs");
        let doc: Value = serde_json::from_slice(&rotated.jwks()).unwrap();
        let keys = doc["keys"].as_array().unwrap();
        assert_eq!(keys.len(), 2);
        for k in keys {
            assert_eq!(k["kty"], "EC");
            assert_eq!(k["crv"], "P-256");
            assert_eq!(k["alg"], "ES256");
            assert!(k.get("d").is_none(), "never the private part");
        }
        let claims = json!({"aud": "wiki", "iss": "https://sso.example", "exp": u32::MAX});
        let jwt = rotated.sign(&claims).unwrap();
        let kid = jsonwebtoken::decode_header(&jwt).unwrap().kid.unwrap();
        assert_eq!(kid, rotated.kids()[0]);
        // The old JWKS does not know the new signer's key.
        let old = before.sign(&claims).unwrap();
        assert!(verify(&old, &rotated.jwks(), "wiki").is_ok());
        assert_eq!(
            AssertionKeys::derive(&[secret(1), secret(1)])
                .unwrap()
                .kids()
                .len(),
            1
        );
        assert_eq!(
            AssertionKeys::derive(&[]).unwrap_err(),
            AssertionError::NoSecret
        );
    }

    #[test]
    fn the_kid_is_the_rfc7638_thumbprint_of_the_public_key() {
        let keys = AssertionKeys::derive(&[secret(3)]).unwrap();
        let doc: Value = serde_json::from_slice(&keys.jwks()).unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(doc["keys"][0].clone()).unwrap();
        // An independent implementation computes the same thumbprint.
        let thumbprint = jwk
            .thumbprint(jsonwebtoken::jwk::ThumbprintHash::SHA256)
            .unwrap();
        assert_eq!(keys.kids()[0], thumbprint);
        assert!(
            public_jwk(&[4u8; 64]).is_none(),
            "a truncated point is refused"
        );
    }

    #[test]
    fn an_assertion_carries_the_identity_and_expires_within_five_minutes() {
        let a = Assertions::new(&[secret(7)], "https://sso.example".into()).unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let h = a.header("wiki", &person(), now).unwrap();
        let claims = verify(h.to_str().unwrap(), &a.keys().jwks(), "wiki").unwrap();
        assert_eq!(claims["iss"], "https://sso.example");
        assert_eq!(claims["aud"], "wiki");
        assert_eq!(claims["sub"], "u-1");
        assert_eq!(claims["email"], "ada@example.com");
        assert_eq!(claims["email_verified"], true);
        assert_eq!(claims["name"], "Ada L");
        assert_eq!(claims["groups"], json!(["staff", "ops"]));
        assert_eq!(claims["preferred_username"], "ada");
        assert_eq!(claims["kind"], "session");
        assert_eq!(claims["iat"], now);
        assert_eq!(claims["exp"], now + LIFETIME_SECS);
        // Another app's audience does not accept it.
        assert!(verify(h.to_str().unwrap(), &a.keys().jwks(), "other").is_err());
    }

    #[test]
    fn an_unvouched_email_is_marked_so_and_cached_apart() {
        let a = Assertions::new(&[secret(7)], "https://sso.example".into()).unwrap();
        let now = jsonwebtoken::get_current_timestamp();
        let unvouched = Principal {
            email_verified: false,
            ..person()
        };
        let h = a.header("wiki", &unvouched, now).unwrap();
        let claims = verify(h.to_str().unwrap(), &a.keys().jwks(), "wiki").unwrap();
        assert_eq!(claims["email_verified"], false);
        // The vouched twin is another assertion, not the cached one.
        let h = a.header("wiki", &person(), now).unwrap();
        let claims = verify(h.to_str().unwrap(), &a.keys().jwks(), "wiki").unwrap();
        assert_eq!(claims["email_verified"], true);
    }

    #[test]
    fn a_machine_is_named_by_its_issuer_and_subject() {
        let a = Assertions::new(&[secret(7)], "https://sso.example".into()).unwrap();
        let machine = Principal {
            user: "deploy-bot".into(),
            user_id: None,
            email: None,
            name: None,
            groups: vec![],
            preferred_username: None,
            source: "ci".into(),
            kind: PrincipalKind::Bearer,
            token_subject: Some("https://ci.example#repo:acme/deploy".into()),
            email_verified: false,
            claims: crate::principal::no_claims(),
            rendered: Default::default(),
        };
        let now = jsonwebtoken::get_current_timestamp();
        let h = a.header("api", &machine, now).unwrap();
        let claims = verify(h.to_str().unwrap(), &a.keys().jwks(), "api").unwrap();
        assert_eq!(claims["sub"], "https://ci.example#repo:acme/deploy");
        assert_eq!(claims["kind"], "bearer");
        assert!(claims.get("email").is_none());
        assert!(claims.get("email_verified").is_none());
    }

    #[test]
    fn a_cached_assertion_is_reused_until_shortly_before_it_expires() {
        let a = Assertions::new(&[secret(7)], "https://sso.example".into()).unwrap();
        let now = 1_800_000_000;
        let first = a.header("wiki", &person(), now).unwrap();
        let later = now + LIFETIME_SECS - REFRESH_MARGIN_SECS - 1;
        assert_eq!(a.header("wiki", &person(), later).unwrap(), first);
        let renewed = a.header("wiki", &person(), later + 1).unwrap();
        assert_ne!(
            renewed, first,
            "re-signed once less than the margin is left"
        );
        // Another app, or a changed identity, never gets the cached one.
        assert_ne!(a.header("docs", &person(), later + 1).unwrap(), renewed);
        let mut renamed = person();
        renamed.groups.push("admins".into());
        assert_ne!(a.header("wiki", &renamed, later + 1).unwrap(), renewed);
    }
}
