//! Compact JWS (RFC 7515), read strictly before any key is touched: exactly
//! three base64url segments, a header without extensions we would have to
//! understand, claims without duplicates; then the signature checked with a
//! key of the issuer whose own algorithm is the token's. Pure: no I/O, no clock.

use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde::de::{self, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::jwk::{Candidates, Key, KeySet};

/// Longest `kid` looked up; longer ones are refused without a refetch (docs/security.md JWT-11).
pub const MAX_KID_BYTES: usize = 256;

/// Why a token is not a signed JWS we accept. The texts are fixed: they never
/// carry the token, its claims, or a library's message (JWT-29).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Over the size limit, checked before anything else.
    #[error("the token is too large")]
    TooLarge,
    /// Not three base64url segments of the JWS alphabet.
    #[error("the token is not a compact JWS")]
    Format,
    /// The header is not a JSON object with a string `alg` (and a short string `kid`).
    #[error("the token's header is malformed")]
    Header,
    /// `crit`, `b64`, `zip`, or a nested JWT: extensions a verifier must understand or refuse.
    #[error("the token uses header extensions that are not supported")]
    Unsupported,
    /// `alg` is `none`, unknown, HMAC where a key is expected, or not allowed here.
    #[error("the token's algorithm `{0}` is not allowed")]
    Algorithm(String),
    /// The payload is not a JSON object, or names a claim twice.
    #[error("the token's claims are malformed")]
    Claims,
    /// No key of the issuer has this `kid` and algorithm: the caller may refetch once.
    #[error("no key of the issuer matches the token")]
    UnknownKey,
    /// No `kid`, and several keys of the issuer fit the algorithm: refused (OIDC-17).
    #[error("the token names no key and several keys of the issuer fit")]
    AmbiguousKey,
    /// No candidate key verifies the signature.
    #[error("the token's signature is invalid")]
    Signature,
}

/// A parsed, not yet verified, compact JWS.
#[derive(Debug)]
pub struct Jws<'a> {
    /// The header's `alg`.
    pub alg: Algorithm,
    /// The header's `kid`.
    pub kid: Option<String>,
    /// The payload's claims (duplicates refused).
    pub claims: Map<String, Value>,
    signing_input: &'a str,
    signature: Vec<u8>,
}

/// Header members we read, taken from the header once it was read whole as
/// a [`UniqueObject`]. Unknown members are ignored, `jwk`/`jku`/`x5u`/`x5c`
/// among them: keys come only from the configured JWKS (JWT-09, JWT-10).
#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
    #[serde(default)]
    cty: Option<String>,
}

/// Header members a verifier must understand to use the token; present at
/// all (even `null`), the token is refused (JWT-12, JWT-13).
const UNSUPPORTED_MEMBERS: [&str; 4] = ["crit", "b64", "zip", "enc"];

/// A JSON object whose keys are unique at every depth; a repeated member is
/// an error, so the gateway never reads a different `sub` (or `org.team`)
/// than the app behind it might (JWT-15). Every member is read, unknown ones
/// too: their strings are checked (UTF-8, no lone surrogates, JWT-16) and
/// their nesting counted (serde_json stops past 128 levels, JWT-17).
struct UniqueObject(Map<String, Value>);

impl<'de> Deserialize<'de> for UniqueObject {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_map(StrictVisitor)? {
            Strict(Value::Object(map)) => Ok(UniqueObject(map)),
            _ => Err(de::Error::custom("not a JSON object")),
        }
    }
}

/// Any JSON value, read by [`StrictVisitor`].
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

/// Builds a [`Value`], refusing an object that names a member twice.
struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::from(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Strict, E> {
        serde_json::Number::from_f64(v)
            .map(|n| Strict(Value::Number(n)))
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_string())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut access: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = access.next_element()? {
            items.push(v);
        }
        Ok(Strict(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> Result<Strict, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom("duplicate member"));
            }
            let Strict(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Strict(Value::Object(map)))
    }
}

fn b64(segment: &str) -> Result<Vec<u8>, JwsError> {
    // The engine refuses padding and non-canonical trailing bits: one encoding per signature.
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwsError::Format)
}

/// Reads a compact JWS of at most `max_bytes`, refusing everything a careful
/// verifier must refuse before any cryptography (JWT-12…JWT-17).
pub fn parse(token: &str, max_bytes: usize) -> Result<Jws<'_>, JwsError> {
    if token.len() > max_bytes {
        return Err(JwsError::TooLarge);
    }
    // JWT-14: only the base64url alphabet and the two dots; no padding, spaces or JSON serialisation.
    if !base64url_or_dots(token.as_bytes()) {
        return Err(JwsError::Format);
    }
    let mut parts = token.split('.');
    let (Some(head), Some(payload), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        // Five segments would be a JWE (JWT-13).
        return Err(JwsError::Format);
    };
    if head.is_empty() || payload.is_empty() {
        return Err(JwsError::Format);
    }
    let signing_input = token
        .get(..head.len() + 1 + payload.len())
        .ok_or(JwsError::Format)?;
    // serde_json refuses invalid UTF-8, lone surrogates, a BOM and nesting
    // past 128 levels (JWT-16, JWT-17), in every member read.
    let UniqueObject(members) =
        serde_json::from_slice(&b64(head)?).map_err(|_| JwsError::Header)?;
    if UNSUPPORTED_MEMBERS.iter().any(|m| members.contains_key(*m)) {
        return Err(JwsError::Unsupported);
    }
    // `"kid": null` is no string either (JWT-11): refused, never read as no `kid`.
    if members.get("kid").is_some_and(Value::is_null) {
        return Err(JwsError::Header);
    }
    let header: Header =
        serde_json::from_value(Value::Object(members)).map_err(|_| JwsError::Header)?;
    if header
        .cty
        .as_deref()
        .is_some_and(|c| c.eq_ignore_ascii_case("JWT"))
    {
        return Err(JwsError::Unsupported);
    }
    // Over-long or holding a control character (a NUL, a newline): malformed,
    // refused before any key lookup or refetch (JWT-11).
    if header
        .kid
        .as_ref()
        .is_some_and(|k| k.len() > MAX_KID_BYTES || k.chars().any(char::is_control))
    {
        return Err(JwsError::Header);
    }
    // Exact, case-sensitive names only: "none", "None", "RS256 " are not algorithms (JWT-01, JWT-03).
    let alg = Algorithm::from_str(&header.alg)
        .map_err(|_| JwsError::Algorithm(printable(&header.alg)))?;
    let claims: UniqueObject =
        serde_json::from_slice(&b64(payload)?).map_err(|_| JwsError::Claims)?;
    // Checked after `alg`, so an unsigned `none` token is reported as what it is.
    if sig.is_empty() {
        return Err(JwsError::Format);
    }
    let signature = b64(sig)?;
    Ok(Jws {
        alg,
        kid: header.kid,
        claims: claims.0,
        signing_input,
        signature,
    })
}

/// Whether every byte is of the base64url alphabet or a dot. No early exit
/// and no branch per byte: a token's bytes are random to a branch predictor,
/// and the loop that stopped at the first bad byte was 95 % of `parse`'s own
/// time on a bearer miss, about 1 µs a token (README, "Performance"); this
/// one the compiler vectorises (32 bytes a step in the x86-64 release build).
fn base64url_or_dots(token: &[u8]) -> bool {
    token.iter().fold(true, |ok, &b| {
        // `| 0x20` folds A–Z onto a–z and maps no other byte into a–z.
        let letter = (b | 0x20).wrapping_sub(b'a') < 26;
        let digit = b.wrapping_sub(b'0') < 10;
        ok & (letter | digit | (b == b'-') | (b == b'_') | (b == b'.'))
    })
}

/// An algorithm name fit for a message: printable ASCII, short.
fn printable(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic())
        .take(16)
        .collect()
}

/// Whether `alg` is an HMAC algorithm (never usable with a public key: JWT-02).
pub fn is_hmac(alg: Algorithm) -> bool {
    matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

impl Jws<'_> {
    /// Verifies the signature with a key of `keys` whose own algorithm is the
    /// token's and which `allowed` permits; returns the key that verified it.
    pub fn verify(&self, keys: &KeySet, allowed: &[Algorithm]) -> Result<Arc<Key>, JwsError> {
        if is_hmac(self.alg) || !allowed.contains(&self.alg) {
            return Err(JwsError::Algorithm(format!("{:?}", self.alg)));
        }
        let candidates = match keys.candidates(self.kid.as_deref(), self.alg) {
            Candidates::Keys(k) => k,
            Candidates::NoKey => return Err(JwsError::UnknownKey),
            Candidates::Ambiguous => return Err(JwsError::AmbiguousKey),
        };
        candidates
            .into_iter()
            .find(|k| k.verify(self.alg, self.signing_input.as_bytes(), &self.signature))
            .cloned()
            .ok_or(JwsError::Signature)
    }

    /// Verifies an HMAC signature with a shared secret (ID tokens of providers
    /// that sign with the client secret, when their metadata allows it).
    pub fn verify_hmac(&self, secret: &[u8]) -> Result<(), JwsError> {
        let alg = match self.alg {
            Algorithm::HS256 => aws_lc_rs::hmac::HMAC_SHA256,
            Algorithm::HS384 => aws_lc_rs::hmac::HMAC_SHA384,
            Algorithm::HS512 => aws_lc_rs::hmac::HMAC_SHA512,
            other => return Err(JwsError::Algorithm(format!("{other:?}"))),
        };
        let key = aws_lc_rs::hmac::Key::new(alg, secret);
        aws_lc_rs::hmac::verify(&key, self.signing_input.as_bytes(), &self.signature)
            .map_err(|_| JwsError::Signature)
    }

    /// The signed part as the token spelt it: `header.payload`.
    pub fn signing_input(&self) -> &str {
        self.signing_input
    }

    /// The signature, decoded.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The claims as one JSON value.
    pub fn into_claims(self) -> Value {
        Value::Object(self.claims)
    }
}

/// The last second of year 9999: later NumericDates are refused rather than
/// carried into arithmetic (docs/security.md JWT-19).
pub const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// A NumericDate (RFC 7519 §2: seconds, "can represent non-integer values")
/// as whole seconds: a non-negative number up to [`MAX_NUMERIC_DATE`], a
/// fraction dropped (`1765432100.5`, as `time.time() + 300` writes it).
/// Strings, negatives, NaN-like and huge values are `None` (JWT-19).
pub fn numeric_date(v: &serde_json::Value) -> Option<u64> {
    if let Some(t) = v.as_u64() {
        return (t <= MAX_NUMERIC_DATE).then_some(t);
    }
    // A float within range (`-0.0` is negative here): its whole part is
    // exact in an f64 (< 2^53), so the cast loses only the fraction.
    let t = v
        .as_f64()
        .filter(|t| t.is_finite() && t.is_sign_positive())?;
    (t <= MAX_NUMERIC_DATE as f64).then(|| t.floor() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seg(v: &str) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v)
    }

    fn token(head: &str, payload: &str) -> String {
        format!("{}.{}.c2ln", seg(head), seg(payload))
    }

    const P: &str = r#"{"iss":"https://idp.example","sub":"a","exp":1}"#;

    #[test]
    fn a_well_formed_token_parses() {
        let t = token(r#"{"alg":"RS256","kid":"k1","typ":"JWT"}"#, P);
        let j = parse(&t, 8192).unwrap();
        assert_eq!(j.alg, Algorithm::RS256);
        assert_eq!(j.kid.as_deref(), Some("k1"));
        assert_eq!(j.claims.get("sub"), Some(&json!("a")));
    }

    #[test]
    fn jwt01_jwt03_none_and_unknown_algorithms_are_refused() {
        for alg in [
            r#""none""#,
            r#""None""#,
            r#""NONE""#,
            r#""nOnE""#,
            r#""RS256 ""#,
            r#""rs256""#,
            r#""""#,
            "256",
            "null",
            r#"["RS256"]"#,
        ] {
            let t = token(&format!(r#"{{"alg":{alg}}}"#), P);
            let e = parse(&t, 8192).unwrap_err();
            assert!(
                matches!(e, JwsError::Algorithm(_) | JwsError::Header),
                "{alg}: {e:?}"
            );
        }
        // No signature segment at all.
        let t = format!("{}.{}.", seg(r#"{"alg":"none"}"#), seg(P));
        assert_eq!(
            parse(&t, 8192).unwrap_err(),
            JwsError::Algorithm("none".into())
        );
        let t = format!("{}.{}.", seg(r#"{"alg":"RS256"}"#), seg(P));
        assert_eq!(parse(&t, 8192).unwrap_err(), JwsError::Format);
    }

    #[test]
    fn jwt11_bad_kids_are_refused() {
        let long = "k".repeat(MAX_KID_BYTES + 1);
        for kid in [
            format!("\"{long}\""),
            "42".into(),
            "[\"a\"]".into(),
            "{}".into(),
            "null".into(),
        ] {
            let t = token(&format!(r#"{{"alg":"RS256","kid":{kid}}}"#), P);
            assert_eq!(parse(&t, 1 << 20).unwrap_err(), JwsError::Header, "{kid}");
        }
        // A control character makes it malformed: no lookup, no refetch.
        for kid in [r#""a\u0000b""#, r#""a\nb""#, r#""\u007f""#] {
            let t = token(&format!(r#"{{"alg":"RS256","kid":{kid}}}"#), P);
            assert_eq!(parse(&t, 1 << 20).unwrap_err(), JwsError::Header, "{kid}");
        }
        // Metacharacters are just an unknown kid: refused later by the key lookup, never used as a path.
        let t = token(r#"{"alg":"RS256","kid":"../../dev/null' OR 1=1"}"#, P);
        assert!(parse(&t, 8192).is_ok());
    }

    #[test]
    fn jwt12_jwt13_extensions_and_nesting_are_refused() {
        for head in [
            r#"{"alg":"RS256","crit":["exp"],"exp":1}"#,
            r#"{"alg":"RS256","crit":[]}"#,
            r#"{"alg":"RS256","crit":["x-unknown"]}"#,
            r#"{"alg":"RS256","b64":false,"crit":["b64"]}"#,
            r#"{"alg":"RS256","b64":false}"#,
            r#"{"alg":"RS256","cty":"JWT"}"#,
            r#"{"alg":"RS256","cty":"jwt"}"#,
            r#"{"alg":"RS256","zip":"DEF"}"#,
            r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#,
            // Present is enough: `null` does not make an extension absent.
            r#"{"alg":"RS256","crit":null}"#,
            r#"{"alg":"RS256","b64":null}"#,
            r#"{"alg":"RS256","zip":null}"#,
            r#"{"alg":"RS256","enc":null}"#,
        ] {
            let e = parse(&token(head, P), 8192).unwrap_err();
            assert!(
                matches!(e, JwsError::Unsupported | JwsError::Algorithm(_)),
                "{head}: {e:?}"
            );
        }
        let jwe = format!("{}.a.b.c.d", seg(r#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#));
        assert_eq!(parse(&jwe, 8192).unwrap_err(), JwsError::Format);
    }

    #[test]
    fn jwt14_only_the_compact_alphabet_is_read() {
        let good = token(r#"{"alg":"RS256"}"#, P);
        let cases = [
            format!("{good}="),
            good.replace('.', ". "),
            format!(" {good}"),
            good.replacen('c', "+", 1),
            good.replacen('c', "/", 1),
            format!("{good}.x"),
            good.replacen('.', "", 1),
            format!(r#"{{"payload":"{}","signatures":[]}}"#, seg(P)),
            "..".into(),
            String::new(),
        ];
        for t in &cases {
            assert!(parse(t, 8192).is_err(), "{t}");
        }
    }

    #[test]
    fn jwt14_every_byte_outside_the_alphabet_is_refused_wherever_it_stands() {
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.';
        // Each byte at each place of a 70-byte run: the 32-byte steps and the tail.
        for b in 0..=u8::MAX {
            for at in 0..70 {
                let mut t = vec![b'a'; 70];
                if let Some(slot) = t.get_mut(at) {
                    *slot = b;
                }
                assert_eq!(base64url_or_dots(&t), allowed(b), "byte {b:#04x} at {at}");
            }
        }
        assert!(base64url_or_dots(b""));
    }

    #[test]
    fn jwt15_duplicate_header_members_and_claims_are_refused() {
        let t = token(r#"{"alg":"RS256","alg":"none"}"#, P);
        assert_eq!(parse(&t, 8192).unwrap_err(), JwsError::Header);
        let t = token(r#"{"alg":"RS256","kid":"a","kid":"b"}"#, P);
        assert_eq!(parse(&t, 8192).unwrap_err(), JwsError::Header);
        // An unknown member written twice too: an upstream may read either.
        let t = token(r#"{"alg":"RS256","typ":"a","typ":"b"}"#, P);
        assert_eq!(parse(&t, 8192).unwrap_err(), JwsError::Header);
        for payload in [
            r#"{"sub":"a","sub":"admin","exp":1}"#,
            r#"{"exp":1,"exp":99999999999}"#,
            // At any depth: `claim_headers` and policies read nested claims.
            r#"{"sub":"a","org":{"team":"a","team":"admins"}}"#,
            r#"{"sub":"a","orgs":[{"team":"a","team":"admins"}]}"#,
        ] {
            let t = token(r#"{"alg":"RS256"}"#, payload);
            assert_eq!(parse(&t, 8192).unwrap_err(), JwsError::Claims, "{payload}");
        }
    }

    #[test]
    fn jwt16_jwt17_bad_encodings_and_bombs_are_refused() {
        let bytes = |raw: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
        let head = seg(r#"{"alg":"RS256"}"#);
        let deep = format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000));
        let payloads: Vec<Vec<u8>> = vec![
            b"{\"sub\":\"\xff\xfe\"}".to_vec(),
            br#"{"sub":"\ud800"}"#.to_vec(),
            b"\xef\xbb\xbf{\"sub\":\"a\"}".to_vec(),
            b"\xff\xfe{\x00\"\x00}\x00".to_vec(),
            format!(r#"{{"sub":{deep}}}"#).into_bytes(),
            b"[1,2]".to_vec(),
            b"\"a\"".to_vec(),
        ];
        for p in &payloads {
            let t = format!("{head}.{}.c2ln", bytes(p));
            assert!(
                parse(&t, 1 << 20).is_err(),
                "{:?}",
                String::from_utf8_lossy(p)
            );
        }
        // The same in a header member nobody reads.
        let headers: Vec<Vec<u8>> = vec![
            b"{\"alg\":\"RS256\",\"typ\":\"\xff\"}".to_vec(),
            br#"{"alg":"RS256","typ":"\ud800"}"#.to_vec(),
            format!(r#"{{"alg":"RS256","x":{deep}}}"#).into_bytes(),
        ];
        for h in &headers {
            let t = format!("{}.{}.c2ln", bytes(h), seg(P));
            assert_eq!(
                parse(&t, 1 << 20).unwrap_err(),
                JwsError::Header,
                "{:?}",
                String::from_utf8_lossy(h)
            );
        }
        let big = token(
            r#"{"alg":"RS256"}"#,
            &format!(r#"{{"x":"{}"}}"#, "a".repeat(9000)),
        );
        assert_eq!(parse(&big, 8192).unwrap_err(), JwsError::TooLarge);
    }

    #[test]
    fn jwt02_hmac_is_never_tried_with_a_key_set() {
        let t = token(r#"{"alg":"HS256"}"#, P);
        let j = parse(&t, 8192).unwrap();
        let all = [Algorithm::HS256, Algorithm::RS256];
        assert!(matches!(
            j.verify(&KeySet::default(), &all),
            Err(JwsError::Algorithm(_))
        ));
    }
}
