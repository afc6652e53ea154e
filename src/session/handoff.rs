//! The hand-back from the sign-in host to an app host (DESIGN "URLs"): a
//! one-time code, bound to one host and to the browser that asked (a nonce
//! cookie on that host), good for 60 s, that the app host trades for its own
//! cookie of the same session. Pure: the store keeps the codes (by hash) and
//! the caller passes `now`.

use aws_lc_rs::digest::{digest, SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// How long a handoff code may be traded, in seconds.
pub const HANDOFF_SECS: u64 = 60;

// The record is the store's (a layer below); the code and its checks are here.
pub use crate::identity::HandoffRecord;

/// Why a handoff code is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandoffError {
    /// No such code: never issued, already traded (on any replica), or purged.
    #[error("unknown or already used handoff code")]
    Unknown,
    /// The code is older than [`HANDOFF_SECS`].
    #[error("the handoff code has expired")]
    Expired,
    /// The browser does not hold the nonce the code is bound to: the link
    /// was made for another browser (login CSRF) or its cookie is gone.
    #[error("the handoff code belongs to another browser")]
    OtherBrowser,
    /// The code was made for another host.
    #[error("the handoff code was made for {made_for}, not for {presented_on}")]
    ForeignHost {
        /// The host the code is bound to.
        made_for: String,
        /// The host it was presented on.
        presented_on: String,
    },
}

/// What the store keys a code by: SHA-256 of the code, base64url, so that a
/// copy of the table cannot be replayed.
pub fn code_key(code: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest(&SHA256, code.as_bytes()).as_ref())
}

/// What a code is bound to: SHA-256 of the browser's nonce, base64url (the
/// nonce itself never leaves its cookie).
pub fn binding_of(nonce: &str) -> String {
    code_key(nonce)
}

/// What a link started on an app host tells the sign-in host of the session
/// that started it: SHA-256 of the session id under its own label,
/// base64url (the id itself never leaves its cookie). The sign-in host
/// links only for the session with this tag (DESIGN "Sign-in outcomes" 2).
pub fn session_tag(sid: &str) -> String {
    let mut ctx = aws_lc_rs::digest::Context::new(&SHA256);
    ctx.update(b"portcullis link session\0");
    ctx.update(sid.as_bytes());
    URL_SAFE_NO_PAD.encode(ctx.finish().as_ref())
}

/// Whether `s` looks like a nonce, binding or code we made (base64url of 32 bytes).
pub fn well_formed(s: &str) -> bool {
    s.len() == 43
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether a record taken from the store (already removed there, so the
/// code is spent whatever this says) may be traded on `host` at `now` by a
/// browser holding `nonce` on that host.
pub fn check(
    record: &HandoffRecord,
    host: &str,
    nonce: Option<&str>,
    now: u64,
) -> Result<(), HandoffError> {
    if record.host != host {
        return Err(HandoffError::ForeignHost {
            made_for: record.host.clone(),
            presented_on: host.to_string(),
        });
    }
    let now = i64::try_from(now).unwrap_or(i64::MAX);
    if now >= record.expires_at {
        return Err(HandoffError::Expired);
    }
    if nonce.map(binding_of).as_deref() != Some(record.binding.as_str()) {
        return Err(HandoffError::OtherBrowser);
    }
    Ok(())
}

/// `{origin}/_auth/handoff?code=…` on the app host.
pub fn url(origin: &str, code: &str) -> String {
    let code: String = url::form_urlencoded::byte_serialize(code.as_bytes()).collect();
    format!("{origin}/_auth/handoff?code={code}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "n0nce-of-the-browser-that-asked";

    fn record() -> HandoffRecord {
        HandoffRecord {
            session_id: "s1".into(),
            host: "wiki.example".into(),
            rd: "https://wiki.example/p".into(),
            binding: binding_of(NONCE),
            expires_at: 1_000 + HANDOFF_SECS as i64,
        }
    }

    #[test]
    fn a_code_is_accepted_on_its_host_until_it_expires() {
        let nonce = Some(NONCE);
        assert_eq!(check(&record(), "wiki.example", nonce, 1_000), Ok(()));
        assert_eq!(check(&record(), "wiki.example", nonce, 1_059), Ok(()));
        assert_eq!(
            check(&record(), "wiki.example", nonce, 1_060),
            Err(HandoffError::Expired)
        );
    }

    #[test]
    fn a_code_presented_on_another_host_is_refused() {
        assert!(matches!(
            check(&record(), "other.example", Some(NONCE), 1_000),
            Err(HandoffError::ForeignHost { .. })
        ));
    }

    #[test]
    fn a_code_presented_by_another_browser_is_refused() {
        for nonce in [None, Some("another-browser"), Some("")] {
            assert_eq!(
                check(&record(), "wiki.example", nonce, 1_000),
                Err(HandoffError::OtherBrowser),
                "{nonce:?}"
            );
        }
    }

    #[test]
    fn codes_are_stored_by_hash_and_sent_url_encoded() {
        assert_eq!(code_key("abc").len(), 43);
        assert_ne!(code_key("abc"), code_key("abd"));
        assert_ne!(code_key("abc"), "abc");
        assert_eq!(
            url("http://localhost:8080", "a+b"),
            "http://localhost:8080/_auth/handoff?code=a%2Bb"
        );
    }
}
