//! The JWS reader on hostile tokens: it never panics; anything it accepts
//! re-serialises to the same three segments; and nothing verifies against the
//! demo provider's keys (or its HMAC secret) unless its signed part is one the
//! provider really signed (the seed tokens).
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use portcullis::jwk::KeySet;
use portcullis::jws;

const MAX_BYTES: usize = 16 * 1024;
const JWKS: &str = include_str!("../corpus/jwks/demo_rsa_ec");
const HMAC_SECRET: &str = include_str!("../corpus/jws/hs256_secret.txt");
/// Tokens the demo provider signed with the keys above (a bad-signature one is among the seeds, not here).
const SIGNED: [&str; 5] = [
    include_str!("../corpus/jws/rs256"),
    include_str!("../corpus/jws/rs256_no_kid"),
    include_str!("../corpus/jws/es256"),
    include_str!("../corpus/jws/hs256"),
    include_str!("../corpus/jws/rs256_hostile_claims"),
];

fn keys() -> &'static KeySet {
    static KEYS: OnceLock<KeySet> = OnceLock::new();
    KEYS.get_or_init(|| portcullis::jwk::parse(JWKS.as_bytes()).unwrap_or_default())
}

fn authentic(signing_input: &str) -> bool {
    SIGNED.iter().any(|t| {
        t.rsplit_once('.')
            .is_some_and(|(signed, _)| signed == signing_input)
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(parsed) = jws::parse(token, MAX_BYTES) else {
        return;
    };
    // Accepted: exactly three segments, which the parts re-serialise to.
    let again = format!(
        "{}.{}",
        parsed.signing_input(),
        URL_SAFE_NO_PAD.encode(parsed.signature())
    );
    assert_eq!(
        again, token,
        "an accepted token does not re-serialise to itself"
    );
    let segments: Vec<&str> = token.split('.').collect();
    assert_eq!(segments.len(), 3);
    for segment in &segments {
        let decoded = URL_SAFE_NO_PAD
            .decode(segment)
            .expect("an accepted segment decodes");
        assert_eq!(
            &URL_SAFE_NO_PAD.encode(decoded),
            segment,
            "two spellings of one segment"
        );
    }
    // The claims as read are the payload's JSON, nothing added or lost.
    let payload = URL_SAFE_NO_PAD.decode(segments[1]).unwrap_or_default();
    let claims: serde_json::Value =
        serde_json::from_slice(&payload).expect("accepted claims are JSON");
    assert_eq!(claims, serde_json::Value::Object(parsed.claims.clone()));

    let all = [
        jsonwebtoken::Algorithm::RS256,
        jsonwebtoken::Algorithm::RS384,
        jsonwebtoken::Algorithm::RS512,
        jsonwebtoken::Algorithm::PS256,
        jsonwebtoken::Algorithm::PS384,
        jsonwebtoken::Algorithm::PS512,
        jsonwebtoken::Algorithm::ES256,
        jsonwebtoken::Algorithm::ES384,
        jsonwebtoken::Algorithm::EdDSA,
        jsonwebtoken::Algorithm::HS256,
    ];
    if parsed.verify(keys(), &all).is_ok() {
        assert!(
            authentic(parsed.signing_input()),
            "a forged token verified: {token}"
        );
        assert!(
            !jws::is_hmac(parsed.alg),
            "an HMAC token verified with a public key"
        );
    }
    if parsed.verify_hmac(HMAC_SECRET.trim().as_bytes()).is_ok() {
        assert!(
            authentic(parsed.signing_input()),
            "a forged HMAC token verified: {token}"
        );
    }
    let _ = parsed.into_claims();
});
