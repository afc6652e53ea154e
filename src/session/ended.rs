//! Why a session ended before its time because its access token could not
//! be renewed, in words a person understands. The reason travels to the
//! sign-in page as a fixed code in the query (`reason=…&source=…`), so the
//! page can say why without ever reflecting free text or an internal error.
//! The ended session's record keeps the reason, sealed, in place of its
//! tokens, so every replica can say it.

use serde::{Deserialize, Serialize};

use crate::session::cookie::{Purpose, Sealer, SessionError};

/// Longest sealed reason opened (a code and a slug).
const MAX_SEALED_BYTES: usize = 4096;

/// Why a session with `pass_access_token` ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndReason {
    /// The provider refused the refresh token (revoked there, expired, already used).
    RefreshRefused,
    /// The access token expired and the provider gave no refresh token.
    TokenExpired,
    /// The provider could not be reached (or answered garbage) until the access token expired.
    ProviderUnreachable,
    /// The session's source is no longer configured.
    SourceRemoved,
    /// The renewed tokens could not be sealed or stored.
    TokensNotKept,
    /// The refresh answer's ID token was of another subject, issuer or
    /// client, or did not verify (OIDC-32).
    RefreshInvalid,
}

impl EndReason {
    /// Every reason, for lookups and tests.
    pub const ALL: [EndReason; 6] = [
        EndReason::RefreshRefused,
        EndReason::TokenExpired,
        EndReason::ProviderUnreachable,
        EndReason::SourceRemoved,
        EndReason::TokensNotKept,
        EndReason::RefreshInvalid,
    ];

    /// The code in the sign-in URL's `reason` parameter and in logs.
    pub fn code(self) -> &'static str {
        match self {
            EndReason::RefreshRefused => "refresh_refused",
            EndReason::TokenExpired => "token_expired",
            EndReason::ProviderUnreachable => "provider_unreachable",
            EndReason::SourceRemoved => "source_removed",
            EndReason::TokensNotKept => "tokens_not_kept",
            EndReason::RefreshInvalid => "refresh_invalid",
        }
    }

    /// The reason a code names; `None` for anything else (a hand-made URL).
    pub fn from_code(code: &str) -> Option<EndReason> {
        EndReason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The sentence shown on the sign-in page and sent to API clients as
    /// `error_description`; `provider` is the source's display name.
    pub fn wording(self, provider: &str) -> String {
        match self {
            EndReason::RefreshRefused => format!(
                "Your session ended because {provider} no longer accepts it (it was revoked or has expired there). Sign in again."
            ),
            EndReason::TokenExpired => format!(
                "Your session ended because the access {provider} granted has expired and cannot be renewed. Sign in again."
            ),
            EndReason::ProviderUnreachable => format!(
                "Your session ended because {provider} could not be reached to renew it. Sign in again."
            ),
            EndReason::SourceRemoved => {
                "Your session ended because the sign-in method it used is no longer offered here. Sign in again.".to_string()
            }
            EndReason::TokensNotKept => {
                "Your session ended because its renewed access could not be saved. Sign in again.".to_string()
            }
            EndReason::RefreshInvalid => format!(
                "Your session ended because {provider} renewed it with an ID token this gateway cannot accept (for another account or application, or one that does not verify). Sign in again."
            ),
        }
    }
}

/// A session that ended early: why, and through which source it was signed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEnded {
    /// Why it ended.
    pub reason: EndReason,
    /// The slug of the session's source (named on the page).
    pub source: String,
}

/// What an ended session's record keeps where its tokens were.
#[derive(Serialize, Deserialize)]
struct Sealed {
    ended: String,
    source: String,
}

impl SessionEnded {
    /// Sealed for session `sid`'s record, in place of its tokens (which are
    /// dropped with the session), as the tokens are sealed.
    pub fn seal(&self, sealer: &Sealer, sid: &str) -> Result<String, SessionError> {
        let value = Sealed {
            ended: self.reason.code().to_string(),
            source: self.source.clone(),
        };
        sealer.seal_stored(sid, Purpose::Tokens, &value)
    }

    /// Opens what [`SessionEnded::seal`] made for session `sid`; `None` for
    /// anything else (live tokens, another session's, a retired secret).
    pub fn open(sealer: &Sealer, sid: &str, sealed: &str) -> Option<SessionEnded> {
        let opened = sealer
            .open_stored::<Sealed>(sid, Purpose::Tokens, sealed, MAX_SEALED_BYTES)
            .ok()?
            .value;
        Some(SessionEnded {
            reason: EndReason::from_code(&opened.ended)?,
            source: opened.source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use crate::session::tokens::SessionTokens;
    use crate::source::TokenSet;

    #[test]
    fn a_sealed_reason_opens_only_for_its_session_and_never_as_tokens() {
        let sealer = Sealer::new(&[Secret::new(vec![9u8; 32])]);
        let why = SessionEnded {
            reason: EndReason::ProviderUnreachable,
            source: "corp".into(),
        };
        let sealed = why.seal(&sealer, "sid-1").unwrap();
        assert_eq!(SessionEnded::open(&sealer, "sid-1", &sealed), Some(why));
        assert_eq!(SessionEnded::open(&sealer, "sid-2", &sealed), None);
        assert_eq!(SessionTokens::open(&sealer, "sid-1", &sealed), None);
        let tokens = SessionTokens::issued(
            &TokenSet {
                access_token: "a".into(),
                refresh_token: None,
                expires_in: Some(60),
            },
            0,
        );
        let sealed = tokens.seal(&sealer, "sid-1").unwrap();
        assert_eq!(SessionEnded::open(&sealer, "sid-1", &sealed), None);
    }

    #[test]
    fn every_reason_round_trips_through_its_code_and_unknown_codes_are_none() {
        for r in EndReason::ALL {
            assert_eq!(EndReason::from_code(r.code()), Some(r));
        }
        assert_eq!(EndReason::from_code("<script>"), None);
        assert_eq!(EndReason::from_code(""), None);
    }

    #[test]
    fn a_refused_refresh_names_the_provider_and_asks_to_sign_in_again() {
        let text = EndReason::RefreshRefused.wording("Corp SSO");
        assert!(text.contains("Corp SSO no longer accepts it"), "{text}");
        assert!(text.ends_with("Sign in again."), "{text}");
    }
}
