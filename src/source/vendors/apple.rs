//! Sign in with Apple: the vendor behaviour beyond URLs and mapping, pure
//! helpers the sign-in adapter calls; the preset itself (URLs, scopes,
//! quirk flags and why) is `config::presets::apple`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

use crate::config::presets::apple::ISSUER;

/// Lifetime given to a client secret. Apple accepts up to 15777000 s (six
/// months); one made per token request needs minutes, and a short life
/// limits what a leaked secret is worth.
pub const CLIENT_SECRET_TTL_SECS: u64 = 300;

/// Longest lifetime Apple accepts for a client secret.
pub const CLIENT_SECRET_MAX_TTL_SECS: u64 = 15_777_000;

/// Why a client secret could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientSecretError {
    /// The key file is not a PKCS#8 PEM P-256 private key (Apple's `.p8`):
    /// download the key again from the developer account.
    #[error("the private key is not an Apple .p8 key (PKCS#8 PEM, P-256)")]
    BadKey,
    /// Signing failed: a bug or a broken crypto backend.
    #[error("signing the client secret failed")]
    Sign,
}

/// The client secret for Apple's token endpoint: an ES256 JWT with `kid` =
/// `key_id`, `iss` = `team_id`, `sub` = `services_id` (the client id), `aud`
/// = `https://appleid.apple.com`, `iat` = `now`, `exp` = `now + ttl_secs`
/// (capped at Apple's six months), signed with the `.p8` key.
pub fn client_secret(
    team_id: &str,
    key_id: &str,
    services_id: &str,
    p8_pem: &str,
    now: u64,
    ttl_secs: u64,
) -> Result<String, ClientSecretError> {
    let der = p8_der(p8_pem).ok_or(ClientSecretError::BadKey)?;
    aws_lc_rs::signature::EcdsaKeyPair::from_pkcs8(
        &aws_lc_rs::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
        &der,
    )
    .map_err(|_| ClientSecretError::BadKey)?;
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(key_id.to_string());
    let claims = json!({
        "iss": team_id,
        "iat": now,
        "exp": now.saturating_add(ttl_secs.min(CLIENT_SECRET_MAX_TTL_SECS)),
        "aud": ISSUER,
        "sub": services_id,
    });
    jsonwebtoken::encode(&header, &claims, &EncodingKey::from_ec_der(&der))
        .map_err(|_| ClientSecretError::Sign)
}

/// The DER inside a `-----BEGIN PRIVATE KEY-----` PEM.
fn p8_der(pem: &str) -> Option<Vec<u8>> {
    let body = pem
        .trim()
        .strip_prefix("-----BEGIN PRIVATE KEY-----")?
        .strip_suffix("-----END PRIVATE KEY-----")?;
    let joined: String = body.split_whitespace().collect();
    STANDARD.decode(joined).ok().filter(|d| !d.is_empty())
}

/// The display name from the `user` form field of Apple's first callback:
/// `firstName lastName`, either alone if the other is missing.
pub fn user_name(user_field: &str) -> Option<String> {
    let user: Value = serde_json::from_str(user_field).ok()?;
    let name = user.get("name")?;
    let part = |k: &str| {
        name.get(k)
            .and_then(Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    let joined = [part("firstName"), part("lastName")]
        .into_iter()
        .flatten()
        .collect::<Vec<_>>()
        .join(" ");
    (!joined.is_empty()).then_some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_lc_rs::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
    use jsonwebtoken::{DecodingKey, Validation};

    fn p8() -> (String, Vec<u8>) {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).unwrap();
        let der = pair.to_pkcs8v1().unwrap();
        let b64 = STANDARD.encode(der.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
            lines.join("\n")
        );
        (pem, pair.public_key().as_ref().to_vec())
    }

    #[test]
    fn client_secret_is_an_es256_jwt_apple_can_verify() {
        let (pem, point) = p8();
        let jwt = client_secret(
            "TEAM123456",
            "KEY1234567",
            "com.example.web",
            &pem,
            1_700_000_000,
            600,
        )
        .unwrap();
        let header = jsonwebtoken::decode_header(&jwt).unwrap();
        assert_eq!(header.alg, Algorithm::ES256);
        assert_eq!(header.kid.as_deref(), Some("KEY1234567"));
        let (x, y) = point[1..].split_at(32);
        let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
        let key = DecodingKey::from_ec_components(&b64(x), &b64(y)).unwrap();
        let mut v = Validation::new(Algorithm::ES256);
        v.set_audience(&[ISSUER]);
        v.set_issuer(&["TEAM123456"]);
        v.validate_exp = false;
        let claims = jsonwebtoken::decode::<Value>(&jwt, &key, &v)
            .unwrap()
            .claims;
        assert_eq!(claims["sub"], "com.example.web");
        assert_eq!(claims["exp"], 1_700_000_600u64);
    }

    #[test]
    fn the_lifetime_is_capped_and_a_bad_key_is_named() {
        let (pem, _) = p8();
        let jwt = client_secret("T", "K", "S", &pem, 0, u64::MAX).unwrap();
        let payload = jwt.split('.').nth(1).unwrap();
        let claims: Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap();
        assert_eq!(claims["exp"], CLIENT_SECRET_MAX_TTL_SECS);
        assert_eq!(
            client_secret("T", "K", "S", "not a key", 0, 60),
            Err(ClientSecretError::BadKey)
        );
        let rsa_like = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----";
        assert_eq!(
            client_secret("T", "K", "S", rsa_like, 0, 60),
            Err(ClientSecretError::BadKey)
        );
    }

    #[test]
    fn user_name_joins_what_apple_sent() {
        assert_eq!(user_name(r#"{"name":{"firstName":"Ada","lastName":"Lovelace"},"email":"a@privaterelay.appleid.com"}"#).as_deref(), Some("Ada Lovelace"));
        assert_eq!(
            user_name(r#"{"name":{"firstName":"Ada"}}"#).as_deref(),
            Some("Ada")
        );
        assert_eq!(user_name(r#"{"email":"x"}"#), None);
        assert_eq!(user_name("garbage"), None);
    }
}
