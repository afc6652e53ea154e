//! ID token validation (OpenID Connect Core §3.1.3.7), pure: the signature
//! against this issuer's keys with the algorithm the key allows, then every
//! claim checked against the flow's expectations and the given time.

use jsonwebtoken::Algorithm;
use serde_json::Value;

use crate::jwk::KeySet;
use crate::jws::{self, JwsError};

/// Clock leeway for `exp` and `iat` (docs/security.md: 60 s).
pub const LEEWAY_SECS: u64 = crate::config::defaults::CLOCK_LEEWAY_SECS;
/// Largest ID token accepted.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// What the ID token must say.
#[derive(Debug, Clone)]
pub struct Expect<'a> {
    /// Exact `iss`.
    pub issuer: &'a str,
    /// The client id: the only accepted audience.
    pub client_id: &'a str,
    /// The client secret, for HS256/384/512 ID tokens (only if allowed).
    pub client_secret: Option<&'a str>,
    /// The nonce bound to this browser's flow.
    pub nonce: Option<&'a str>,
    /// Algorithms allowed for this provider (never `none`).
    pub algorithms: &'a [Algorithm],
    /// Now, unix seconds.
    pub now: u64,
    /// Oldest acceptable `iat`, in seconds before now.
    pub max_age_secs: u64,
    /// The `max_age` the authorization request asked for: `auth_time` must
    /// then be present and no older (OIDC Core §3.1.3.7 (13), OIDC-31).
    pub max_auth_age: Option<u64>,
}

/// Why an ID token is refused. Each ends the sign-in with a refusal page.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdTokenError {
    /// Not a compact JWS, too large, or an unreadable header.
    #[error("the ID token is malformed")]
    Malformed,
    /// `alg: none` or an algorithm this provider may not use.
    #[error("the ID token's algorithm `{0}` is not allowed")]
    Algorithm(String),
    /// The header carries `crit` extensions we do not understand (RFC 7515 §4.1.11).
    #[error("the ID token has critical header extensions")]
    Critical,
    /// No key of this issuer fits the token's `kid`/`alg`: the caller may refetch the JWKS once.
    #[error("no key of the provider matches the ID token")]
    UnknownKey,
    /// No `kid`, and several of the provider's keys fit its algorithm (OIDC-17).
    #[error("the ID token names no key and the provider has several that fit")]
    AmbiguousKey,
    /// No candidate key verified the signature.
    #[error("the ID token's signature is invalid")]
    Signature,
    /// `iss` is not exactly the provider's issuer.
    #[error("the ID token was issued by someone else")]
    Issuer,
    /// `aud` is missing, does not contain the client id, or contains others.
    #[error("the ID token is not (only) for this client")]
    Audience,
    /// `azp` is present and not the client id.
    #[error("the ID token's authorized party is not this client")]
    AuthorizedParty,
    /// `exp` missing or passed.
    #[error("the ID token has expired")]
    Expired,
    /// `iat` missing, in the future, or too old.
    #[error("the ID token's issue time is missing or out of range")]
    IssuedAt,
    /// `nonce` missing or not this flow's.
    #[error("the ID token's nonce does not match this sign-in")]
    Nonce,
    /// `sub` missing, not a string, empty or over 255 characters.
    #[error("the ID token has no valid subject")]
    Subject,
    /// `max_age` was asked for, and `auth_time` is missing or older.
    #[error("the ID token's authentication time is missing or older than max_age")]
    AuthTime,
}

impl From<JwsError> for IdTokenError {
    fn from(e: JwsError) -> Self {
        match e {
            JwsError::Algorithm(a) => IdTokenError::Algorithm(a),
            JwsError::Unsupported => IdTokenError::Critical,
            JwsError::UnknownKey => IdTokenError::UnknownKey,
            JwsError::AmbiguousKey => IdTokenError::AmbiguousKey,
            JwsError::Signature => IdTokenError::Signature,
            JwsError::TooLarge | JwsError::Format | JwsError::Header | JwsError::Claims => {
                IdTokenError::Malformed
            }
        }
    }
}

/// The algorithm and `kid` of a token, read without trusting it; refuses
/// `none`, `crit` and anything else [`jws::parse`] refuses.
pub fn peek(token: &str) -> Result<(Algorithm, Option<String>), IdTokenError> {
    let jws = jws::parse(token, MAX_TOKEN_BYTES)?;
    Ok((jws.alg, jws.kid))
}

/// Verifies the signature and every claim; returns the claims.
pub fn validate(token: &str, keys: &KeySet, e: &Expect<'_>) -> Result<Value, IdTokenError> {
    let claims = verify(token, keys, e.algorithms, e.client_secret)?;
    check_claims(&claims, e)?;
    Ok(claims)
}

/// Verifies a JWS with this issuer's keys (or the client secret for HMAC,
/// when allowed) and an algorithm in `algorithms`; returns its claims unchecked.
pub fn verify(
    token: &str,
    keys: &KeySet,
    algorithms: &[Algorithm],
    client_secret: Option<&str>,
) -> Result<Value, IdTokenError> {
    let jws = jws::parse(token, MAX_TOKEN_BYTES)?;
    if !algorithms.contains(&jws.alg) {
        return Err(IdTokenError::Algorithm(format!("{:?}", jws.alg)));
    }
    if jws::is_hmac(jws.alg) {
        let secret = client_secret.ok_or(IdTokenError::Algorithm(format!("{:?}", jws.alg)))?;
        jws.verify_hmac(secret.as_bytes())?;
    } else {
        jws.verify(keys, algorithms)?;
    }
    Ok(jws.into_claims())
}

/// Checks the claims of a signed userinfo answer (OIDC Core §5.3.2): it
/// "SHOULD contain" `iss` and `aud`; where present, `iss` must be the
/// provider's and `aud` must be or include this client (SECURITY.md
/// OIDC-21). No `exp` is looked for: a userinfo answer need not carry one.
pub fn check_userinfo(c: &Value, issuer: &str, client_id: &str) -> Result<(), IdTokenError> {
    if c.get("iss").is_some_and(|i| i.as_str() != Some(issuer)) {
        return Err(IdTokenError::Issuer);
    }
    let aud_ok = match c.get("aud") {
        None => true,
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(items)) => items.iter().any(|a| a.as_str() == Some(client_id)),
        Some(_) => false,
    };
    if !aud_ok {
        return Err(IdTokenError::Audience);
    }
    Ok(())
}

/// The `events` member a logout token must carry (Back-Channel Logout 1.0 §2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// What a valid logout token asks to end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutRequest {
    /// The provider's session id.
    pub sid: Option<String>,
    /// The subject.
    pub sub: Option<String>,
    /// The token id (required), to refuse replays.
    pub jti: String,
}

/// Checks a verified logout token's claims (Back-Channel Logout 1.0 §2.6).
pub fn check_logout_claims(
    c: &Value,
    issuer: &str,
    client_id: &str,
    now: u64,
    max_age_secs: u64,
) -> Result<LogoutRequest, IdTokenError> {
    if c.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(IdTokenError::Issuer);
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == client_id,
        Some(Value::Array(items)) => items.iter().any(|a| a.as_str() == Some(client_id)),
        _ => false,
    };
    if !aud_ok {
        return Err(IdTokenError::Audience);
    }
    let iat = c
        .get("iat")
        .and_then(jws::numeric_date)
        .ok_or(IdTokenError::IssuedAt)?;
    if iat > now.saturating_add(LEEWAY_SECS) || now.saturating_sub(iat) > max_age_secs {
        return Err(IdTokenError::IssuedAt);
    }
    if let Some(exp) = c.get("exp") {
        if jws::numeric_date(exp).is_none_or(|exp| now > exp.saturating_add(LEEWAY_SECS)) {
            return Err(IdTokenError::Expired);
        }
    }
    let event_ok = c
        .get("events")
        .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    // A nonce would make it usable as an ID token (or vice versa): refused.
    if !event_ok || c.get("nonce").is_some() {
        return Err(IdTokenError::Malformed);
    }
    let text = |k: &str| {
        c.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let (sid, sub) = (text("sid"), text("sub"));
    if sid.is_none() && sub.is_none() {
        return Err(IdTokenError::Subject);
    }
    // Back-Channel Logout §2.4: `jti` is required; without it a token could
    // not be told from its replay.
    let jti = text("jti").ok_or(IdTokenError::Malformed)?;
    Ok(LogoutRequest { sid, sub, jti })
}

/// The claim checks of OIDC Core §3.1.3.7 steps 2–5 and 9–11, and §2 for `sub`.
pub fn check_claims(c: &Value, e: &Expect<'_>) -> Result<(), IdTokenError> {
    if c.get("iss").and_then(Value::as_str) != Some(e.issuer) {
        return Err(IdTokenError::Issuer);
    }
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => a == e.client_id,
        Some(Value::Array(items)) => {
            !items.is_empty() && items.iter().all(|a| a.as_str() == Some(e.client_id))
        }
        _ => false,
    };
    if !aud_ok {
        return Err(IdTokenError::Audience);
    }
    if let Some(azp) = c.get("azp") {
        if azp.as_str() != Some(e.client_id) {
            return Err(IdTokenError::AuthorizedParty);
        }
    }
    let exp = c
        .get("exp")
        .and_then(jws::numeric_date)
        .ok_or(IdTokenError::Expired)?;
    if e.now > exp.saturating_add(LEEWAY_SECS) {
        return Err(IdTokenError::Expired);
    }
    let iat = c
        .get("iat")
        .and_then(jws::numeric_date)
        .ok_or(IdTokenError::IssuedAt)?;
    if iat > e.now.saturating_add(LEEWAY_SECS) || e.now.saturating_sub(iat) > e.max_age_secs {
        return Err(IdTokenError::IssuedAt);
    }
    if let Some(expected) = e.nonce {
        if c.get("nonce").and_then(Value::as_str) != Some(expected) {
            return Err(IdTokenError::Nonce);
        }
    }
    if let Some(max_age) = e.max_auth_age {
        let auth_time = c
            .get("auth_time")
            .and_then(jws::numeric_date)
            .ok_or(IdTokenError::AuthTime)?;
        let too_old = e.now.saturating_sub(auth_time) > max_age.saturating_add(LEEWAY_SECS);
        if too_old || auth_time > e.now.saturating_add(LEEWAY_SECS) {
            return Err(IdTokenError::AuthTime);
        }
    }
    match c.get("sub").and_then(Value::as_str) {
        Some(s) if !s.is_empty() && s.len() <= 255 => Ok(()),
        _ => Err(IdTokenError::Subject),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use serde_json::json;

    #[test]
    fn logout_token_claims_follow_backchannel_logout_2_6() {
        let now = 1_700_000_000;
        let good = json!({"iss": "https://idp", "aud": "rp", "iat": now, "jti": "j1", "sid": "s1",
            "events": {BACKCHANNEL_LOGOUT_EVENT: {}}});
        let ok = check_logout_claims(&good, "https://idp", "rp", now, 600).unwrap();
        assert_eq!(
            ok,
            LogoutRequest {
                sid: Some("s1".into()),
                sub: None,
                jti: "j1".into()
            }
        );
        let mut cases: Vec<(&str, Value)> = vec![];
        let mut with = |name: &'static str, f: &dyn Fn(&mut Value)| {
            let mut v = good.clone();
            f(&mut v);
            cases.push((name, v));
        };
        with("wrong iss", &|v| v["iss"] = json!("https://evil"));
        with("wrong aud", &|v| v["aud"] = json!("other"));
        with("no iat", &|v| {
            v.as_object_mut().unwrap().remove("iat");
        });
        with("old iat", &|v| v["iat"] = json!(now - 3600));
        with("no events", &|v| {
            v.as_object_mut().unwrap().remove("events");
        });
        with("no jti", &|v| {
            v.as_object_mut().unwrap().remove("jti");
        });
        with("empty jti", &|v| v["jti"] = json!(""));
        with("other event", &|v| {
            v["events"] = json!({"http://example/other": {}})
        });
        with("nonce present", &|v| v["nonce"] = json!("n"));
        with("neither sid nor sub", &|v| {
            v.as_object_mut().unwrap().remove("sid");
        });
        with("expired", &|v| v["exp"] = json!(now - 3600));
        for (name, v) in cases {
            assert!(
                check_logout_claims(&v, "https://idp", "rp", now, 600).is_err(),
                "{name} accepted"
            );
        }
    }

    /// A used `jti` is remembered for `USED_ONCE_SECS`: the most lenient
    /// logout token (its `iat` a leeway ahead) must be refused by its age
    /// by then, or a replay after the store forgot it would be accepted.
    #[test]
    fn a_logout_token_is_refused_by_its_age_before_its_jti_is_forgotten() {
        use crate::config::defaults::USED_ONCE_SECS;
        let first_use = 1_700_000_000;
        let ahead = json!({"iss": "https://idp", "aud": "rp", "iat": first_use + LEEWAY_SECS,
            "jti": "j1", "sid": "s1", "events": {BACKCHANNEL_LOGOUT_EVENT: {}}});
        let at = |now| {
            check_logout_claims(
                &ahead,
                "https://idp",
                "rp",
                now,
                crate::source::ID_TOKEN_MAX_AGE_SECS,
            )
        };
        assert!(at(first_use).is_ok());
        assert!(at(first_use + USED_ONCE_SECS - 1).is_err());
        assert!(at(first_use + USED_ONCE_SECS).is_err());
    }

    fn expect(now: u64) -> Expect<'static> {
        Expect {
            issuer: "https://idp.example",
            client_id: "portcullis",
            client_secret: Some("s3cret-s3cret-s3cret-s3cret-s3cret"),
            nonce: Some("n-1"),
            algorithms: &[Algorithm::RS256, Algorithm::HS256],
            now,
            max_age_secs: 900,
            max_auth_age: None,
        }
    }

    fn good(now: u64) -> Value {
        json!({"iss": "https://idp.example", "aud": "portcullis", "sub": "u1", "exp": now + 300, "iat": now, "nonce": "n-1"})
    }

    fn with(mut v: Value, key: &str, val: Value) -> Value {
        if val.is_null() {
            v.as_object_mut().unwrap().remove(key);
        } else {
            v[key] = val;
        }
        v
    }

    #[test]
    fn each_claim_rule_refuses_its_case() {
        let now = 1_700_000_000;
        let e = expect(now);
        assert_eq!(check_claims(&good(now), &e), Ok(()));
        let cases = [
            ("iss", json!("https://idp.example/"), IdTokenError::Issuer), // OIDC-03
            ("iss", Value::Null, IdTokenError::Issuer),                   // OIDC-02
            ("aud", json!("other"), IdTokenError::Audience),              // OIDC-05
            ("aud", Value::Null, IdTokenError::Audience),                 // OIDC-05
            ("aud", json!(["portcullis", "evil"]), IdTokenError::Audience), // OIDC-06
            ("azp", json!("evil"), IdTokenError::AuthorizedParty),        // OIDC-06
            ("exp", Value::Null, IdTokenError::Expired),                  // OIDC-08
            ("exp", json!(now - 301), IdTokenError::Expired),             // OIDC-08
            ("iat", Value::Null, IdTokenError::IssuedAt),                 // OIDC-07
            ("iat", json!(now - 7 * 86400), IdTokenError::IssuedAt),      // OIDC-09
            ("iat", json!(now + 120), IdTokenError::IssuedAt),            // OIDC-09
            ("nonce", json!("n-2"), IdTokenError::Nonce),                 // OIDC-10
            ("nonce", Value::Null, IdTokenError::Nonce),                  // OIDC-10
            ("sub", Value::Null, IdTokenError::Subject),                  // OIDC-04
            ("sub", json!(42), IdTokenError::Subject),                    // OIDC-04
            ("sub", json!("x".repeat(256)), IdTokenError::Subject),       // OIDC-04
        ];
        for (key, val, want) in cases {
            let c = with(good(now), key, val.clone());
            assert_eq!(check_claims(&c, &e), Err(want), "{key} = {val}");
        }
        // OIDC-31: with max_age asked for, auth_time must be there and recent enough.
        let asked = Expect {
            max_auth_age: Some(600),
            ..expect(now)
        };
        let authed = |at: Option<u64>| match at {
            Some(t) => with(good(now), "auth_time", json!(t)),
            None => good(now),
        };
        assert_eq!(
            check_claims(&authed(None), &asked),
            Err(IdTokenError::AuthTime)
        );
        assert_eq!(check_claims(&authed(Some(now - 600)), &asked), Ok(()));
        assert_eq!(
            check_claims(&authed(Some(now - 600 - LEEWAY_SECS - 1)), &asked),
            Err(IdTokenError::AuthTime)
        );
        assert_eq!(
            check_claims(&authed(Some(now + 3600)), &asked),
            Err(IdTokenError::AuthTime)
        );
        assert_eq!(check_claims(&authed(None), &e), Ok(()));
        // Within the leeway: accepted (OIDC-08), and an aud array of only us (OIDC-06).
        assert_eq!(
            check_claims(&with(good(now), "exp", json!(now - 55)), &e),
            Ok(())
        );
        assert_eq!(
            check_claims(&with(good(now), "aud", json!(["portcullis"])), &e),
            Ok(())
        );
    }

    #[test]
    fn oidc15_alg_none_and_crit_are_refused_before_any_key_is_used() {
        let b64 =
            |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let body = b64(&good(1_700_000_000));
        let none = format!("{}.{body}.", b64(&json!({"alg": "none"})));
        assert!(matches!(peek(&none), Err(IdTokenError::Algorithm(_))));
        let crit = format!(
            "{}.{body}.c2ln",
            b64(&json!({"alg": "RS256", "crit": ["exp"], "exp": 1}))
        );
        assert_eq!(peek(&crit), Err(IdTokenError::Critical));
        assert_eq!(peek("a.b"), Err(IdTokenError::Malformed));
        assert_eq!(
            peek(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(IdTokenError::Malformed)
        );
    }

    /// OIDC-14: the provider's discovery document pins the algorithms its ID
    /// tokens use; a token in another one is refused even though a key of the
    /// provider verifies it.
    #[tokio::test]
    async fn oidc14_an_id_token_in_an_algorithm_the_provider_does_not_list_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let p = crate::demo::provider::start(
            listener,
            crate::demo::ProviderConfig::example("http://127.0.0.1:1/cb").unwrap(),
        )
        .await;
        p.set_faults(|f| f.alg = crate::demo::SignAlg::ES256);
        let now = jsonwebtoken::get_current_timestamp();
        let claims = good(now);
        let token = p.sign(claims.as_object().unwrap()).unwrap();
        let jwks = reqwest::get(format!("{}/jwks", p.issuer()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let keys = crate::jwk::parse(&jwks).unwrap();
        let pinned = crate::source::id_token_algorithms(&["RS256".into(), "PS256".into()]);
        assert!(matches!(
            verify(&token, &keys, &pinned, None),
            Err(IdTokenError::Algorithm(_))
        ));
        let listed = crate::source::id_token_algorithms(&["RS256".into(), "ES256".into()]);
        assert_eq!(verify(&token, &keys, &listed, None).unwrap()["sub"], "u1");
    }

    #[test]
    fn oidc13_hs256_verifies_with_the_client_secret_and_rejects_a_flipped_byte() {
        let now = jsonwebtoken::get_current_timestamp();
        let e = expect(now);
        let key = jsonwebtoken::EncodingKey::from_secret(e.client_secret.unwrap().as_bytes());
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::HS256),
            &good(now),
            &key,
        )
        .unwrap();
        let keys = KeySet::default();
        assert!(validate(&token, &keys, &e).is_ok());
        let mut bad = token.clone().into_bytes();
        let last = bad.len() - 2;
        bad[last] = if bad[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            validate(&String::from_utf8(bad).unwrap(), &keys, &e),
            Err(IdTokenError::Signature)
        );
        // Not allowed for this provider: refused whatever the signature.
        let e2 = Expect {
            algorithms: &[Algorithm::RS256],
            ..e
        };
        assert!(matches!(
            validate(&token, &keys, &e2),
            Err(IdTokenError::Algorithm(_))
        ));
    }
}
