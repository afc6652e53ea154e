//! Key sets per source: parsed once into ready `DecodingKey`s, held in memory,
//! refetched on an unknown `kid` (one caller fetches, the others wait for it;
//! at most once per cooldown), and the last good set kept when a fetch fails.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use url::Url;

use crate::outbound::{FetchError, Http, MAX_JWKS_BYTES};

/// Most keys accepted in one set (SECURITY.md JWKS-08).
pub const MAX_KEYS: usize = 100;
/// Least time between two refetches caused by unknown `kid`s (JWKS-02).
pub const UNKNOWN_KID_COOLDOWN: Duration = Duration::from_secs(30);

/// Why no key set is available.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The JWKS endpoint failed and there is no good set yet: retry later.
    #[error("jwks: {0}")]
    Fetch(#[from] FetchError),
    /// The document is not a usable JWKS (not JSON, no keys, too many keys): the provider is misconfigured.
    #[error("jwks: {0}")]
    Invalid(String),
    /// The source has no JWKS URL or inline keys: configure oidc_jwks_url, oidc_jwks or discovery.
    #[error("jwks: source `{0}` has no keys configured")]
    NoKeys(String),
}

/// One verification key, built once.
pub struct Key {
    /// The JWK's `kid`, if any.
    pub kid: Option<String>,
    /// Algorithms this key may verify: the JWK's own `alg`, or its family's.
    pub algorithms: Vec<Algorithm>,
    /// The ready-to-use key.
    pub key: DecodingKey,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

/// A parsed key set.
#[derive(Debug, Default)]
pub struct KeySet {
    /// Usable keys; unusable ones were skipped when parsing.
    pub keys: Vec<Arc<Key>>,
}

impl KeySet {
    /// Keys that may verify a token with this header `kid` and `alg`: by `kid`
    /// when the token names one, else every key whose algorithms allow `alg`.
    pub fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<Arc<Key>> {
        self.keys
            .iter()
            .filter(|k| match kid {
                Some(kid) => k.kid.as_deref() == Some(kid),
                None => true,
            })
            .filter(|k| k.algorithms.contains(&alg))
            .cloned()
            .collect()
    }

    /// Whether a key with this `kid` exists (any algorithm).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Parses a JWKS document. Keys that are unknown, private, symmetric, for
/// encryption, or malformed are skipped one by one (OIDC-19, JWKS-10/11); a
/// document with no usable key or over [`MAX_KEYS`] is refused as a whole.
pub fn parse(body: &[u8]) -> Result<KeySet, JwksError> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| JwksError::Invalid("not JSON".into()))?;
    let Some(raw_keys) = doc.get("keys").and_then(|k| k.as_array()) else {
        return Err(JwksError::Invalid("no `keys` array".into()));
    };
    if raw_keys.len() > MAX_KEYS {
        return Err(JwksError::Invalid(format!(
            "{} keys, more than {MAX_KEYS}",
            raw_keys.len()
        )));
    }
    let mut keys = Vec::new();
    for raw in raw_keys {
        match parse_key(raw) {
            Ok(k) => keys.push(Arc::new(k)),
            Err(why) => tracing::info!(
                kid = raw.get("kid").and_then(|v| v.as_str()),
                why,
                "jwks: key skipped"
            ),
        }
    }
    if keys.is_empty() {
        return Err(JwksError::Invalid("no usable key".into()));
    }
    Ok(KeySet { keys })
}

fn parse_key(raw: &serde_json::Value) -> Result<Key, &'static str> {
    let obj = raw.as_object().ok_or("not an object")?;
    // Private members must never be used (or kept) by a verifier.
    if ["d", "p", "q", "dp", "dq", "qi", "k"]
        .iter()
        .any(|m| obj.contains_key(*m))
    {
        return Err("private or symmetric key material");
    }
    if let Some(ops) = obj.get("key_ops").and_then(|v| v.as_array()) {
        if !ops.iter().any(|o| o == "verify") {
            return Err("key_ops without verify");
        }
    }
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|_| "unknown or malformed key")?;
    if matches!(
        jwk.common.public_key_use,
        Some(PublicKeyUse::Encryption) | Some(PublicKeyUse::Other(_))
    ) {
        return Err("use is not sig");
    }
    let family = match &jwk.algorithm {
        jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => jsonwebtoken::AlgorithmFamily::Rsa,
        jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => {
            jsonwebtoken::AlgorithmFamily::Ec
        }
        jsonwebtoken::jwk::AlgorithmParameters::OctetKeyPair(_) => {
            jsonwebtoken::AlgorithmFamily::Ed
        }
        _ => return Err("symmetric or unknown key type"),
    };
    let algorithms = match jwk.common.key_algorithm {
        Some(alg) => {
            let alg = key_algorithm(alg).ok_or("alg is not a signature algorithm")?;
            if alg.family() != family {
                return Err("alg does not fit the key type");
            }
            vec![alg]
        }
        None => family.algorithms().to_vec(),
    };
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "key rejected by the verifier")?;
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        algorithms,
        key,
    })
}

fn key_algorithm(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The keys of one source.
#[derive(Default)]
struct SourceKeys {
    current: RwLock<Option<Arc<KeySet>>>,
    /// Held by the one caller that fetches; others wait and then reuse its result.
    fetching: tokio::sync::Mutex<Option<Instant>>,
}

/// Key sets of every source, fetched lazily and kept.
pub struct JwksCache {
    http: Http,
    sources: HashMap<String, SourceKeys>,
}

impl JwksCache {
    /// A cache for these sources; sources with inline keys start with them.
    pub fn new(http: Http, sources: &[crate::config::Source]) -> Self {
        let mut map = HashMap::new();
        for s in sources {
            let keys = SourceKeys::default();
            if let Some(inline) = &s.oidc_jwks {
                match parse(inline.as_bytes()) {
                    Ok(set) => {
                        if let Ok(mut cur) = keys.current.write() {
                            *cur = Some(Arc::new(set));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(source = %s.slug, error = %e, "inline oidc_jwks unusable")
                    }
                }
            }
            map.insert(s.slug.clone(), keys);
        }
        JwksCache { http, sources: map }
    }

    fn current(&self, source: &str) -> Option<Arc<KeySet>> {
        self.sources
            .get(source)
            .and_then(|s| s.current.read().ok().and_then(|c| c.clone()))
    }

    /// The key set to verify a token naming `kid`: the held set when it has
    /// the key (or the token names none), else the result of [`Self::refetch`].
    pub async fn keys_for(
        &self,
        source: &str,
        url: Option<&Url>,
        kid: Option<&str>,
    ) -> Result<Arc<KeySet>, JwksError> {
        let held = self.current(source);
        match &held {
            Some(set) if kid.is_none_or(|k| set.has_kid(k)) => Ok(set.clone()),
            _ => self.refetch(source, url, held.as_ref()).await,
        }
    }

    /// Fetches the source's JWKS again because `seen` (the set the caller
    /// tried, if any) lacked a key. Concurrent callers share one fetch; after
    /// the first set, at most one refetch per cooldown; a failed fetch keeps
    /// the last good set.
    pub async fn refetch(
        &self,
        source: &str,
        url: Option<&Url>,
        seen: Option<&Arc<KeySet>>,
    ) -> Result<Arc<KeySet>, JwksError> {
        let held = self.current(source);
        let (Some(entry), Some(url)) = (self.sources.get(source), url) else {
            return held.ok_or_else(|| JwksError::NoKeys(source.to_string()));
        };
        let mut last = entry.fetching.lock().await;
        // Another caller fetched while this one waited: use its result.
        if let Some(set) = self.current(source) {
            if seen.is_none_or(|s| !Arc::ptr_eq(s, &set)) {
                return Ok(set);
            }
        }
        let held = self.current(source);
        if held.is_some() && last.is_some_and(|t| t.elapsed() < UNKNOWN_KID_COOLDOWN) {
            return held.ok_or_else(|| JwksError::NoKeys(source.to_string()));
        }
        if held.is_some() {
            *last = Some(Instant::now());
        }
        match self.fetch(url).await {
            Ok(set) => {
                let set = Arc::new(set);
                if let Ok(mut cur) = entry.current.write() {
                    *cur = Some(set.clone());
                }
                Ok(set)
            }
            Err(e) => {
                tracing::warn!(source, error = %e, "jwks fetch failed; keeping the last good keys");
                held.ok_or(e)
            }
        }
    }

    async fn fetch(&self, url: &Url) -> Result<KeySet, JwksError> {
        let resp = self.http.get(url, None, MAX_JWKS_BYTES).await?;
        if resp.status != 200 {
            return Err(JwksError::Invalid(format!(
                "{url} answered {}",
                resp.status
            )));
        }
        parse(&resp.body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RSA_N: &str = "u1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0_IzW7yWR7QkrmBL7jTKEn5u-qKhbwKfBstIs-bMY2Zkp18gnTxKLxoS2tFczGkPLPgizskuemMghRniWaoLcyehkd3qqGElvW_VDL5AaWTg0nLVkjRo9z-40RQzuVaE8AkAFmxZzow3x-VJYKdjykkJ0iT9wCS0DRTXu269V264Vf_3jvredZiKRkgwlL9xNAwxXFg0x_XFw005UWVRIkdgcKWTjpBP2dPwVZ4WWC-9aGVd-Gyn1o0CLelf4rEjGoXbAAEgAqeGUxrcIlbjXfbcmw";

    fn rsa(kid: &str, extra: &str) -> String {
        format!(r#"{{"kty":"RSA","kid":"{kid}","n":"{RSA_N}","e":"AQAB"{extra}}}"#)
    }

    #[test]
    fn oidc19_jwks10_jwks11_unusable_keys_are_skipped_one_by_one() {
        let doc = format!(
            r#"{{"keys":[{},{{"kty":"AKP","kid":"pq","alg":"ML-DSA-44","pub":"AAAA"}},{},{},{},{{"kty":"oct","kid":"h","k":"c2VjcmV0"}}]}}"#,
            rsa("good", ""),
            rsa("enc", r#","use":"enc""#),
            rsa("priv", r#","d":"AAAA""#),
            rsa("mismatch", r#","alg":"ES256""#),
        );
        let set = parse(doc.as_bytes()).unwrap();
        let kids: Vec<_> = set.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, vec!["good"]);
        assert_eq!(
            set.keys[0].algorithms,
            jsonwebtoken::AlgorithmFamily::Rsa.algorithms().to_vec()
        );
    }

    #[test]
    fn jwks08_jwks09_bad_documents_are_refused() {
        assert!(parse(b"<html>").is_err());
        assert!(parse(br#"{"keys":"x"}"#).is_err());
        assert!(parse(br#"{"keys":[]}"#).is_err());
        let many: Vec<String> = (0..=MAX_KEYS).map(|i| rsa(&format!("k{i}"), "")).collect();
        assert!(parse(format!(r#"{{"keys":[{}]}}"#, many.join(",")).as_bytes()).is_err());
    }

    #[test]
    fn candidates_follow_kid_then_algorithm() {
        let doc = format!(
            r#"{{"keys":[{},{}]}}"#,
            rsa("a", r#","alg":"RS256""#),
            rsa("b", "")
        );
        let set = parse(doc.as_bytes()).unwrap();
        assert_eq!(set.candidates(Some("a"), Algorithm::RS256).len(), 1);
        assert_eq!(set.candidates(Some("a"), Algorithm::PS256).len(), 0);
        assert_eq!(set.candidates(None, Algorithm::RS256).len(), 2);
        assert_eq!(set.candidates(None, Algorithm::ES256).len(), 0);
        assert_eq!(set.candidates(Some("zz"), Algorithm::RS256).len(), 0);
    }
}
