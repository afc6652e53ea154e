//! OAuth 1.0a: token endpoint answers, the callback query and the
//! `Authorization` header on hostile input (never a panic; what is accepted is
//! complete and reads back the same), and sign-then-verify on hostile URLs,
//! methods and secrets (what the signer signs, the verifier accepts, and a
//! changed method or secret is refused). The first byte picks the mode.
#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis::config::Secret;
use portcullis::source::oauth1::{self, Callback, Signer, Stamp, TokenCredentials};
// The server side: the testkit's own RFC 5849 verifier.
use portcullis_testkit::oauth1::{verify_request, Authorization, MAX_HEADER_BYTES};

fn answers(body: &[u8], temporary: bool) {
    let parsed = if temporary {
        oauth1::parse_temporary_credentials(body)
    } else {
        oauth1::parse_token_credentials(body)
    };
    let Ok(answer) = parsed else {
        return;
    };
    assert!(!answer.credentials.token.is_empty());
    assert!(!answer.credentials.secret.expose().is_empty());
    for reserved in [
        "oauth_token",
        "oauth_token_secret",
        "oauth_callback_confirmed",
    ] {
        assert!(
            !answer.extra.contains_key(reserved),
            "{reserved} left in the extras"
        );
    }
    if temporary {
        let text = String::from_utf8_lossy(body);
        assert!(
            text.contains("oauth_callback_confirmed=true"),
            "unconfirmed callback accepted"
        );
    }
}

fn callback(query: &str) {
    let Ok(cb) = Callback::parse(query) else {
        return;
    };
    assert!(!cb.token.is_empty() && !cb.verifier.is_empty());
    // What was read serialises to a query that reads back the same.
    let again: String = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("oauth_token", &cb.token)
        .append_pair("oauth_verifier", &cb.verifier)
        .finish();
    assert_eq!(Callback::parse(&again).ok(), Some(cb.clone()));
    assert!(cb.check_token(&cb.token).is_ok());
    assert!(cb.check_token(&format!("{}x", cb.token)).is_err());
}

fn header(value: &str) {
    let Ok(auth) = Authorization::parse(value) else {
        return;
    };
    // `re%61lm` decodes to a parameter named realm, which re-sent reads as the
    // realm itself: not a header a signer writes, so not a round trip to check.
    if auth.params().iter().any(|(n, _)| n == "realm") {
        return;
    }
    // Re-encoded, the parameters read back the same.
    let mut parts: Vec<String> = auth
        .params()
        .iter()
        .map(|(n, v)| format!("{}=\"{}\"", oauth1::encode(n), oauth1::encode(v)))
        .collect();
    if let Some(realm) = auth.realm() {
        // A quoted-string: the parser took its quoted pairs apart, so put them back.
        let quoted = realm.replace('\\', "\\\\").replace('"', "\\\"");
        parts.insert(0, format!("realm=\"{quoted}\""));
    }
    if parts.is_empty() {
        return;
    }
    let resent = format!("OAuth {}", parts.join(", "));
    // Percent-encoding what was sent raw can make it longer than a header may be.
    if resent.len() > MAX_HEADER_BYTES {
        return;
    }
    let again = Authorization::parse(&resent)
        .unwrap_or_else(|e| panic!("re-encoded header refused ({e}): {value:?}"));
    assert_eq!(again.params(), auth.params());
    assert_eq!(again.realm(), auth.realm());
}

/// Method, URL, token secret and realm, one per line.
fn roundtrip(text: &str) {
    let mut lines = text.split('\n');
    let (Some(method), Some(url), secret, realm) =
        (lines.next(), lines.next(), lines.next(), lines.next())
    else {
        return;
    };
    let Ok(url) = url::Url::parse(url) else {
        return;
    };
    let secret = secret.unwrap_or_default();
    let mut signer = Signer::new("consumer key", Secret::new("consumer&secret".to_string()));
    if let Some(realm) = realm {
        signer = signer.with_realm(realm);
    }
    let token = TokenCredentials::new("token", secret);
    let Ok(signed) = signer.resource(
        method,
        &url,
        None,
        &token,
        &Stamp::new("nonce", 1_767_000_000),
    ) else {
        return;
    };
    let verified = verify_request(
        method,
        &url,
        None,
        &signed.authorization,
        "consumer&secret",
        secret,
    );
    assert!(
        verified.is_ok(),
        "our own signature is refused ({verified:?}): {}",
        signed.authorization
    );
    let other = verify_request(
        method,
        &url,
        None,
        &signed.authorization,
        "consumer&secret",
        &format!("{secret}x"),
    );
    assert!(other.is_err(), "another token secret verifies");
    let changed = format!("{method}X");
    let moved = verify_request(
        &changed,
        &url,
        None,
        &signed.authorization,
        "consumer&secret",
        secret,
    );
    assert!(moved.is_err(), "another method verifies");
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let text = std::str::from_utf8(rest).ok();
    match mode % 5 {
        0 => answers(rest, true),
        1 => answers(rest, false),
        2 => {
            if let Some(t) = text {
                callback(t);
                let _ = oauth1::check_callback(t, "request-token");
            }
        }
        3 => {
            if let Some(t) = text {
                header(t);
            }
        }
        _ => {
            if let Some(t) = text {
                roundtrip(t);
            }
        }
    }
});
