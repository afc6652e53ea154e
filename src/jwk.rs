//! JSON Web Keys (RFC 7517), parsed once into the crypto library's ready
//! form: which keys of a set may verify a token, and which keys are skipped
//! as unusable. Pure: no I/O, no clock; the cache that fetches sets is `jwks`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aws_lc_rs::signature::ParsedPublicKey;
use base64::Engine as _;
use jsonwebtoken::Algorithm;

/// Most keys accepted in one set (docs/security.md JWKS-08).
pub const MAX_KEYS: usize = 100;

/// Why a JWKS document was refused as a whole (not JSON, no `keys`, too
/// many keys, no usable key): the provider is misconfigured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("jwks: {0}")]
pub struct InvalidKeySet(pub String);

/// One verification key, parsed once into the crypto library's ready form
/// (one per algorithm it may verify), so a verification does no key setup.
pub struct Key {
    /// The JWK's `kid`, if any.
    pub kid: Option<String>,
    /// Algorithms this key may verify: the JWK's own `alg`, or its type's
    /// (RSA: RS*/PS*; EC: the one its curve fixes; OKP: EdDSA).
    pub algorithms: Vec<Algorithm>,
    verifiers: Vec<(Algorithm, ParsedPublicKey)>,
    /// SHA-256 of the public members: the same key across refreshes keeps its `Arc`.
    fingerprint: [u8; 32],
    /// Unix seconds until which a verdict made with this key may be reused:
    /// the end of its set's max stale age; 0 once the issuer stopped publishing it.
    usable_until: AtomicU64,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish()
    }
}

impl Key {
    /// Whether `signature` over `message` verifies with this key under `alg`.
    pub fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        self.verifiers
            .iter()
            .find(|(a, _)| *a == alg)
            .is_some_and(|(_, k)| k.verify_sig(message, signature).is_ok())
    }

    /// Whether verdicts made with this key still stand at `now` (unix seconds):
    /// the issuer still publishes it and its set is within its max stale age.
    pub fn usable(&self, now: u64) -> bool {
        now < self.usable_until.load(Ordering::Relaxed)
    }

    /// Sets the end of the time verdicts made with this key may be reused
    /// (the cache calls it on every fetch of the key's set).
    pub fn set_usable_until(&self, until: u64) {
        self.usable_until.store(until, Ordering::Relaxed);
    }
}

/// A parsed key set.
#[derive(Debug, Default)]
pub struct KeySet {
    /// Usable keys; unusable ones were skipped when parsing.
    pub keys: Vec<Arc<Key>>,
}

/// Which keys of a set may verify a token.
#[derive(Debug)]
pub enum Candidates<'a> {
    /// These keys (the token's `kid` with its `alg`, or the one key that fits a kid-less token).
    Keys(Vec<&'a Arc<Key>>),
    /// No key fits: the issuer may have rotated; the caller may refetch once.
    NoKey,
    /// The token names no `kid` and several keys fit its `alg`: refused, never
    /// tried one by one (OIDC Core §10.1, OIDC-17).
    Ambiguous,
}

impl KeySet {
    /// Keys that may verify a token with this header `kid` and `alg`: those
    /// with that `kid` whose algorithms allow `alg`; without a `kid`, the one
    /// key that allows `alg`, and none when several do.
    pub fn candidates<'a>(&'a self, kid: Option<&str>, alg: Algorithm) -> Candidates<'a> {
        let fits: Vec<&Arc<Key>> = self
            .keys
            .iter()
            .filter(|k| {
                kid.is_none_or(|kid| k.kid.as_deref() == Some(kid)) && k.algorithms.contains(&alg)
            })
            .collect();
        match (kid, fits.len()) {
            (_, 0) => Candidates::NoKey,
            (None, n) if n > 1 => Candidates::Ambiguous,
            _ => Candidates::Keys(fits),
        }
    }

    /// Whether a key with this `kid` exists (any algorithm).
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

/// Parses a JWKS document. Keys that are unknown, private, symmetric, for
/// encryption, weak or malformed are skipped one by one with a log line
/// (OIDC-19, JWKS-10/11, JWT-08); a document with no usable key or over
/// [`MAX_KEYS`] is refused as a whole.
pub fn parse(body: &[u8]) -> Result<KeySet, InvalidKeySet> {
    parse_reusing(body, None)
}

/// [`parse`], keeping the `Arc` of every key `previous` already holds, so
/// verdicts made with an unchanged key survive a refresh.
pub fn parse_reusing(body: &[u8], previous: Option<&KeySet>) -> Result<KeySet, InvalidKeySet> {
    let doc: serde_json::Value =
        serde_json::from_slice(body).map_err(|_| InvalidKeySet("not JSON".into()))?;
    let Some(raw_keys) = doc.get("keys").and_then(|k| k.as_array()) else {
        return Err(InvalidKeySet("no `keys` array".into()));
    };
    if raw_keys.len() > MAX_KEYS {
        return Err(InvalidKeySet(format!(
            "{} keys, more than {MAX_KEYS}",
            raw_keys.len()
        )));
    }
    let mut keys = Vec::new();
    for raw in raw_keys {
        match parse_key(raw) {
            Ok(k) => {
                let kept =
                    previous.and_then(|p| p.keys.iter().find(|o| o.fingerprint == k.fingerprint));
                keys.push(kept.cloned().unwrap_or_else(|| Arc::new(k)));
            }
            Err(why) => tracing::info!(
                kid = raw.get("kid").and_then(|v| v.as_str()),
                why,
                "jwks: key skipped"
            ),
        }
    }
    if keys.is_empty() {
        return Err(InvalidKeySet("no usable key".into()));
    }
    Ok(KeySet { keys })
}

fn member<'a>(obj: &'a serde_json::Map<String, serde_json::Value>, name: &str) -> Option<&'a str> {
    obj.get(name).and_then(|v| v.as_str())
}

fn b64_member(
    obj: &serde_json::Map<String, serde_json::Value>,
    name: &str,
) -> Result<Vec<u8>, &'static str> {
    let text = member(obj, name).ok_or("a required member is missing")?;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .map_err(|_| "a member is not base64url")
}

fn parse_key(raw: &serde_json::Value) -> Result<Key, &'static str> {
    let obj = raw.as_object().ok_or("not an object")?;
    refuse_unless_for_verifying(obj)?;
    let declared = match obj.get("alg") {
        None => None,
        Some(a) => {
            let name = a.as_str().ok_or("alg is not a string")?;
            Some(signature_algorithm(name).ok_or("alg is not a signature algorithm")?)
        }
    };
    let kid = match obj.get("kid") {
        None => None,
        Some(k) => Some(k.as_str().ok_or("kid is not a string")?.to_string()),
    };
    let kty = member(obj, "kty").ok_or("no kty")?;
    let fingerprint = fingerprint(obj);
    let (family_algs, verifiers) = match kty {
        "RSA" => rsa_verifiers(obj, declared)?,
        "EC" => ec_verifiers(obj, declared)?,
        "OKP" => okp_verifiers(obj, declared)?,
        _ => return Err("symmetric or unknown key type"),
    };
    let algorithms = match declared {
        Some(a) => vec![a],
        None => family_algs,
    };
    Ok(Key {
        kid,
        algorithms,
        verifiers,
        fingerprint,
        usable_until: AtomicU64::new(u64::MAX),
    })
}

/// A JSON Web Key's object.
type JwkObject = serde_json::Map<String, serde_json::Value>;

/// The algorithms of a key's family, and a verifier for each algorithm the
/// key may be used with.
type Verifiers = (Vec<Algorithm>, Vec<(Algorithm, ParsedPublicKey)>);

/// Refuses a key a verifier must not hold or use: private or symmetric
/// material, `key_ops` without verify, a `use` other than sig.
fn refuse_unless_for_verifying(obj: &JwkObject) -> Result<(), &'static str> {
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
    match obj.get("use") {
        None => Ok(()),
        Some(u) if u == "sig" => Ok(()),
        Some(_) => Err("use is not sig"),
    }
}

/// A digest of the members that make a public key what it is, to tell a
/// changed key from the same key fetched again.
fn fingerprint(obj: &JwkObject) -> [u8; 32] {
    let mut print = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    for name in ["kty", "kid", "alg", "crv", "n", "e", "x", "y"] {
        print.update(name.as_bytes());
        print.update(b"=");
        print.update(member(obj, name).unwrap_or("").as_bytes());
        print.update(b";");
    }
    let mut fingerprint = [0u8; 32];
    fingerprint.copy_from_slice(print.finish().as_ref());
    fingerprint
}

/// An RSA key: at least 2048 bits, an odd exponent other than 1.
fn rsa_verifiers(obj: &JwkObject, declared: Option<Algorithm>) -> Result<Verifiers, &'static str> {
    let n = strip_zeros(b64_member(obj, "n")?);
    let e = strip_zeros(b64_member(obj, "e")?);
    // JWT-08: short moduli and degenerate exponents are refused at load.
    let bits = n
        .first()
        .map_or(0, |b| (n.len() - 1) * 8 + (8 - b.leading_zeros() as usize));
    if bits < 2048 {
        return Err("RSA modulus shorter than 2048 bits");
    }
    let e_odd = e.last().is_some_and(|b| b & 1 == 1);
    if e.len() > 8 || !e_odd || e == [1] {
        return Err("RSA exponent is 1, even, or too large");
    }
    let algs = jsonwebtoken::AlgorithmFamily::Rsa.algorithms().to_vec();
    let wanted: Vec<Algorithm> = match declared {
        Some(a) if algs.contains(&a) => vec![a],
        Some(_) => return Err("alg does not fit the key type"),
        None => algs.clone(),
    };
    let components = aws_lc_rs::signature::RsaPublicKeyComponents {
        n: n.as_slice(),
        e: e.as_slice(),
    };
    let mut v = Vec::new();
    for a in wanted {
        let params = rsa_params(a).ok_or("alg does not fit the key type")?;
        let parsed = components
            .to_parsed_public_key(params)
            .map_err(|_| "RSA key rejected by the crypto library")?;
        v.push((a, parsed));
    }
    Ok((algs, v))
}

/// An EC key on P-256 or P-384, whose curve fixes the algorithm.
fn ec_verifiers(obj: &JwkObject, declared: Option<Algorithm>) -> Result<Verifiers, &'static str> {
    // JWT-04: the curve fixes the algorithm; a P-256 key never verifies ES384.
    let (alg, params, len): (
        _,
        &'static aws_lc_rs::signature::EcdsaVerificationAlgorithm,
        _,
    ) = match member(obj, "crv") {
        Some("P-256") => (
            Algorithm::ES256,
            &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED,
            32,
        ),
        Some("P-384") => (
            Algorithm::ES384,
            &aws_lc_rs::signature::ECDSA_P384_SHA384_FIXED,
            48,
        ),
        _ => return Err("unsupported EC curve"),
    };
    if declared.is_some_and(|d| d != alg) {
        return Err("alg does not fit the key's curve");
    }
    let x = b64_member(obj, "x")?;
    let y = b64_member(obj, "y")?;
    if x.len() != len || y.len() != len {
        return Err("EC coordinates of the wrong length");
    }
    let mut point = Vec::with_capacity(1 + 2 * len);
    point.push(4);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    // JWT-08: the library refuses a point that is not on the curve.
    let parsed = ParsedPublicKey::new(params, &point).map_err(|_| "EC point not on the curve")?;
    Ok((vec![alg], vec![(alg, parsed)]))
}

/// An Ed25519 key.
fn okp_verifiers(obj: &JwkObject, declared: Option<Algorithm>) -> Result<Verifiers, &'static str> {
    if member(obj, "crv") != Some("Ed25519") {
        return Err("unsupported OKP curve");
    }
    if declared.is_some_and(|d| d != Algorithm::EdDSA) {
        return Err("alg does not fit the key type");
    }
    let x = b64_member(obj, "x")?;
    if x.len() != 32 {
        return Err("Ed25519 key of the wrong length");
    }
    let parsed = ParsedPublicKey::new(&aws_lc_rs::signature::ED25519, &x)
        .map_err(|_| "Ed25519 key rejected by the crypto library")?;
    Ok((vec![Algorithm::EdDSA], vec![(Algorithm::EdDSA, parsed)]))
}

fn strip_zeros(mut v: Vec<u8>) -> Vec<u8> {
    let zeros = v.iter().take_while(|b| **b == 0).count();
    v.drain(..zeros);
    v
}

fn rsa_params(a: Algorithm) -> Option<&'static aws_lc_rs::signature::RsaParameters> {
    use aws_lc_rs::signature as s;
    Some(match a {
        Algorithm::RS256 => &s::RSA_PKCS1_2048_8192_SHA256,
        Algorithm::RS384 => &s::RSA_PKCS1_2048_8192_SHA384,
        Algorithm::RS512 => &s::RSA_PKCS1_2048_8192_SHA512,
        Algorithm::PS256 => &s::RSA_PSS_2048_8192_SHA256,
        Algorithm::PS384 => &s::RSA_PSS_2048_8192_SHA384,
        Algorithm::PS512 => &s::RSA_PSS_2048_8192_SHA512,
        _ => return None,
    })
}

fn signature_algorithm(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "PS384" => Algorithm::PS384,
        "PS512" => Algorithm::PS512,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
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

    fn count(c: Candidates<'_>) -> Option<usize> {
        match c {
            Candidates::Keys(k) => Some(k.len()),
            Candidates::NoKey => Some(0),
            Candidates::Ambiguous => None,
        }
    }

    #[test]
    fn candidates_follow_kid_then_algorithm() {
        let doc = format!(
            r#"{{"keys":[{},{}]}}"#,
            rsa("a", r#","alg":"RS256""#),
            rsa("b", "")
        );
        let set = parse(doc.as_bytes()).unwrap();
        assert_eq!(count(set.candidates(Some("a"), Algorithm::RS256)), Some(1));
        assert_eq!(count(set.candidates(Some("a"), Algorithm::PS256)), Some(0));
        assert_eq!(count(set.candidates(Some("b"), Algorithm::PS256)), Some(1));
        assert_eq!(count(set.candidates(None, Algorithm::ES256)), Some(0));
        assert_eq!(count(set.candidates(Some("zz"), Algorithm::RS256)), Some(0));
    }

    #[test]
    fn oidc16_oidc17_a_kid_less_token_needs_exactly_one_fitting_key() {
        let doc = format!(
            r#"{{"keys":[{},{}]}}"#,
            rsa("a", r#","alg":"RS256""#),
            rsa("b", r#","alg":"PS256""#)
        );
        let set = parse(doc.as_bytes()).unwrap();
        // One key allows RS256, one PS256: each kid-less token has its one key (OIDC-16).
        assert_eq!(count(set.candidates(None, Algorithm::RS256)), Some(1));
        assert_eq!(count(set.candidates(None, Algorithm::PS256)), Some(1));
        // Two keys allow RS256: a kid-less RS256 token is refused, never tried on both (OIDC-17).
        let doc = format!(r#"{{"keys":[{},{}]}}"#, rsa("a", ""), rsa("b", ""));
        let set = parse(doc.as_bytes()).unwrap();
        assert!(matches!(
            set.candidates(None, Algorithm::RS256),
            Candidates::Ambiguous
        ));
        // With a kid the same set is fine.
        assert_eq!(count(set.candidates(Some("b"), Algorithm::RS256)), Some(1));
    }

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn jwt08_jwt04_weak_or_mismatched_keys_are_skipped() {
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(RSA_N)
            .unwrap();
        let short = b64(&n[..128]);
        let p256 = |x: &[u8], y: &[u8], extra: &str| {
            format!(
                r#"{{"kty":"EC","kid":"ec","crv":"P-256","x":"{}","y":"{}"{extra}}}"#,
                b64(x),
                b64(y)
            )
        };
        // A real P-256 point (the generator).
        let gx = [
            0x6b, 0x17, 0xd1, 0xf2, 0xe1, 0x2c, 0x42, 0x47, 0xf8, 0xbc, 0xe6, 0xe5, 0x63, 0xa4,
            0x40, 0xf2, 0x77, 0x03, 0x7d, 0x81, 0x2d, 0xeb, 0x33, 0xa0, 0xf4, 0xa1, 0x39, 0x45,
            0xd8, 0x98, 0xc2, 0x96,
        ];
        let gy = [
            0x4f, 0xe3, 0x42, 0xe2, 0xfe, 0x1a, 0x7f, 0x9b, 0x8e, 0xe7, 0xeb, 0x4a, 0x7c, 0x0f,
            0x9e, 0x16, 0x2b, 0xce, 0x33, 0x57, 0x6b, 0x31, 0x5e, 0xce, 0xcb, 0xb6, 0x40, 0x68,
            0x37, 0xbf, 0x51, 0xf5,
        ];
        let bad: Vec<(&str, String)> = vec![
            (
                "1024-bit modulus",
                format!(r#"{{"kty":"RSA","n":"{short}","e":"AQAB"}}"#),
            ),
            (
                "e = 1",
                format!(r#"{{"kty":"RSA","n":"{RSA_N}","e":"AQ"}}"#),
            ),
            (
                "even e",
                format!(r#"{{"kty":"RSA","n":"{RSA_N}","e":"AQAA"}}"#),
            ),
            ("point off the curve", p256(&[1; 32], &[1; 32], "")),
            (
                "P-256 key declared ES384",
                p256(&gx, &gy, r#","alg":"ES384""#),
            ),
            ("short coordinate", p256(&gx[..31], &gy, "")),
            ("RS256 key declared HS256", rsa("h", r#","alg":"HS256""#)),
            ("use enc", rsa("e", r#","use":"enc""#)),
            (
                "kid not a string",
                rsa("x", "").replace(r#""kid":"x""#, r#""kid":7"#),
            ),
        ];
        for (name, key) in &bad {
            assert!(
                parse_key(&serde_json::from_str(key).unwrap()).is_err(),
                "{name} was accepted"
            );
        }
        let ec = parse_key(&serde_json::from_str(&p256(&gx, &gy, "")).unwrap()).unwrap();
        assert_eq!(
            ec.algorithms,
            vec![Algorithm::ES256],
            "the curve fixes the algorithm"
        );
        let pinned =
            parse_key(&serde_json::from_str(&rsa("p", r#","alg":"RS256""#)).unwrap()).unwrap();
        assert_eq!(pinned.algorithms, vec![Algorithm::RS256]);
    }

    #[test]
    fn jwks19_a_refresh_keeps_unchanged_keys_and_drops_removed_ones() {
        let first =
            parse(format!(r#"{{"keys":[{},{}]}}"#, rsa("a", ""), rsa("b", "")).as_bytes()).unwrap();
        let second = parse_reusing(
            format!(r#"{{"keys":[{}]}}"#, rsa("a", "")).as_bytes(),
            Some(&first),
        )
        .unwrap();
        assert!(Arc::ptr_eq(&first.keys[0], &second.keys[0]));
        assert_eq!(second.keys.len(), 1);
    }
}
