//! The authorization code flow as plain functions: build the authorization
//! request, and check what comes back to the callback against the login state
//! this browser carries. The time and the random values are parameters.

use base64::Engine as _;
use url::Url;

use super::login_state::LoginState;
use crate::config::{Pkce, Source};
use crate::discovery::Endpoints;

pub use crate::config::defaults::LOGIN_STATE_SECS;

/// Fresh random values for one flow (each 256 bits, base64url).
#[derive(Debug, Clone)]
pub struct Fresh {
    /// `state`.
    pub state: String,
    /// OIDC `nonce`.
    pub nonce: String,
    /// PKCE code verifier.
    pub verifier: String,
}

impl Fresh {
    /// Draws new values from the system's secure random source.
    pub fn generate() -> Result<Fresh, FlowError> {
        Ok(Fresh {
            state: random_token()?,
            nonce: random_token()?,
            verifier: random_token()?,
        })
    }
}

/// 32 random bytes, base64url without padding ([`crate::random::token`]).
pub fn random_token() -> Result<String, FlowError> {
    crate::random::token().map_err(|_| FlowError::Random)
}

/// Why a flow cannot start or its callback is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FlowError {
    /// The source has no authorization endpoint yet: retry when it is ready.
    #[error("the provider is not ready")]
    NotReady,
    /// The system random source failed: retry.
    #[error("no secure random values available")]
    Random,
    /// No login state cookie: the sign-in was not started in this browser, or it expired or was used.
    #[error("this sign-in was not started in this browser, or it has already been used")]
    NoLoginState,
    /// The login state is older than 10 minutes: start again.
    #[error("this sign-in took too long")]
    Expired,
    /// The callback is for another source than the one this browser started with.
    #[error("this sign-in was started with another provider")]
    WrongSource,
    /// `state` missing or not this browser's (CSRF).
    #[error("the sign-in response does not belong to this browser")]
    State,
    /// The provider sent an `iss` other than its issuer (RFC 9207 mix-up defence).
    #[error("the sign-in response came from another provider")]
    Issuer,
    /// No `iss` although the provider's metadata promises one (RFC 9207 §2.4, OA2-08).
    #[error("the sign-in response has no iss although the provider promises one")]
    IssuerMissing,
    /// Both a `code` and an `error`, or a repeated parameter (RFC 6749 §3.1, OA2-11).
    #[error("the sign-in response is ambiguous")]
    Malformed,
    /// The provider refused, e.g. `error=access_denied`.
    #[error("the provider refused the sign-in: {0}")]
    Provider(String),
    /// No `code` in the response.
    #[error("the provider sent no authorization code")]
    NoCode,
}

/// The start of a flow: where to send the browser, and what it must carry.
#[derive(Debug, Clone)]
pub struct Start {
    /// The provider's authorization URL with every parameter.
    pub url: Url,
    /// The login state to seal into this browser's cookie.
    pub state: LoginState,
}

/// Builds the authorization request for `source`.
pub fn start(
    source: &Source,
    endpoints: &Endpoints,
    redirect_uri: &str,
    rd: &str,
    link: Option<String>,
    fresh: Fresh,
    now: u64,
) -> Result<Start, FlowError> {
    let mut url = endpoints.authorization.clone().ok_or(FlowError::NotReady)?;
    // A nonce whenever the callback will demand an ID token (every OIDC
    // source, whatever its scopes say), and wherever `openid` is asked for
    // (also inside one entry: `"openid profile"`): OIDC-10 must not hang
    // on how `scopes` is written.
    let asks_openid = source
        .scopes
        .iter()
        .flat_map(|s| s.split_whitespace())
        .any(|s| s == "openid");
    let oidc = source.is_oidc() || (endpoints.issuer.is_some() && asks_openid);
    let appid = source.preset.is_some_and(|p| p.quirks.appid_authorize);
    let challenge = match source.pkce {
        _ if appid => None,
        Pkce::None => None,
        Pkce::Plain => Some((fresh.verifier.clone(), "plain")),
        Pkce::S256 => Some((pkce_s256(&fresh.verifier), "S256")),
    };
    if appid {
        // WeChat: its own parameter names and order, no PKCE, no nonce.
        url = crate::source::vendors::wechat::authorize_url(
            &url,
            source.consumer_key.as_deref().unwrap_or_default(),
            redirect_uri,
            &source.scopes.join(" "),
            &fresh.state,
            &source.authorize_params,
        );
    } else {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code");
        q.append_pair(
            "client_id",
            source.consumer_key.as_deref().unwrap_or_default(),
        );
        q.append_pair("redirect_uri", redirect_uri);
        if !source.scopes.is_empty() {
            q.append_pair("scope", &source.scopes.join(" "));
        }
        q.append_pair("state", &fresh.state);
        if oidc {
            q.append_pair("nonce", &fresh.nonce);
        }
        if let Some((c, method)) = &challenge {
            q.append_pair("code_challenge", c);
            q.append_pair("code_challenge_method", method);
        }
        for (k, v) in &source.authorize_params {
            q.append_pair(k, v);
        }
    }
    Ok(Start {
        url,
        state: LoginState {
            source: source.slug.clone(),
            state: fresh.state,
            nonce: oidc.then_some(fresh.nonce),
            pkce_verifier: challenge.map(|_| fresh.verifier),
            rd: rd.to_string(),
            link,
            exp: now + LOGIN_STATE_SECS,
            oauth1: None,
            handoff: None,
        },
    })
}

/// `BASE64URL(SHA256(verifier))` (RFC 7636 §4.2).
pub fn pkce_s256(verifier: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, verifier.as_bytes());
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// What the provider sent to the callback.
#[derive(Debug, Clone, Default)]
pub struct Callback {
    /// `code`
    pub code: Option<String>,
    /// `state`
    pub state: Option<String>,
    /// `error`
    pub error: Option<String>,
    /// `iss` (RFC 9207), when the provider sends it.
    pub iss: Option<String>,
}

impl Callback {
    /// Reads the parameters from a query string or form body.
    pub fn parse(query: &str) -> Callback {
        let mut cb = Callback::default();
        for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
            let slot = match k.as_ref() {
                "code" => &mut cb.code,
                "state" => &mut cb.state,
                "error" => &mut cb.error,
                "iss" => &mut cb.iss,
                _ => continue,
            };
            // A repeated parameter is ambiguous: keep none.
            *slot = if slot.is_some() {
                Some(String::new())
            } else {
                Some(v.into_owned())
            };
        }
        cb
    }
}

/// Checks the callback against this browser's login state; returns the code.
/// `iss_required`: the provider's metadata says it sends `iss` (RFC 9207 §3).
pub fn check_callback(
    cb: &Callback,
    login: Option<&LoginState>,
    slug: &str,
    issuer: Option<&str>,
    iss_required: bool,
    now: u64,
) -> Result<String, FlowError> {
    let login = login.ok_or(FlowError::NoLoginState)?;
    if login.source != slug {
        return Err(FlowError::WrongSource);
    }
    if now > login.exp {
        return Err(FlowError::Expired);
    }
    let state_ok = cb
        .state
        .as_deref()
        .is_some_and(|s| !s.is_empty() && constant_time_eq(s.as_bytes(), login.state.as_bytes()));
    if !state_ok {
        return Err(FlowError::State);
    }
    match (cb.iss.as_deref(), issuer) {
        // Sent twice (kept as empty) or empty: ambiguous, also from a
        // provider whose issuer is not known (OA2-11).
        (Some(""), None) => return Err(FlowError::Malformed),
        (Some(sent), Some(expected)) if sent != expected => return Err(FlowError::Issuer),
        // A promised `iss` that is missing may be an attacker's response from another provider.
        (None, Some(_)) if iss_required => return Err(FlowError::IssuerMissing),
        _ => {}
    }
    if cb.error.is_some() && cb.code.is_some() {
        return Err(FlowError::Malformed);
    }
    if let Some(err) = &cb.error {
        return Err(FlowError::Provider(
            err.chars()
                .filter(|c| c.is_ascii_graphic())
                .take(64)
                .collect(),
        ));
    }
    match cb.code.as_deref() {
        Some(c) if !c.is_empty() => Ok(c.to_string()),
        _ => Err(FlowError::NoCode),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(now: u64) -> LoginState {
        LoginState {
            source: "corp".into(),
            state: "st-1".into(),
            nonce: Some("n".into()),
            pkce_verifier: Some("v".into()),
            rd: "/".into(),
            link: None,
            exp: now + LOGIN_STATE_SECS,
            oauth1: None,
            handoff: None,
        }
    }

    #[test]
    fn callback_checks_state_source_expiry_issuer_and_errors() {
        let now = 1000;
        let l = login(now);
        let ok = Callback::parse("code=c1&state=st-1");
        assert_eq!(
            check_callback(&ok, Some(&l), "corp", None, false, now),
            Ok("c1".into())
        );
        assert_eq!(
            check_callback(&ok, None, "corp", None, false, now),
            Err(FlowError::NoLoginState)
        );
        assert_eq!(
            check_callback(&ok, Some(&l), "other", None, false, now),
            Err(FlowError::WrongSource)
        );
        assert_eq!(
            check_callback(&ok, Some(&l), "corp", None, false, now + 601),
            Err(FlowError::Expired)
        );
        for q in [
            "code=c1",
            "code=c1&state=st-2",
            "code=c1&state=",
            "code=c1&state=st-1&state=st-1",
        ] {
            assert_eq!(
                check_callback(&Callback::parse(q), Some(&l), "corp", None, false, now),
                Err(FlowError::State),
                "{q}"
            );
        }
        let mixup = Callback::parse("code=c1&state=st-1&iss=https%3A%2F%2Fevil");
        assert_eq!(
            check_callback(&mixup, Some(&l), "corp", Some("https://idp"), false, now),
            Err(FlowError::Issuer)
        );
        let denied = Callback::parse("error=access_denied&state=st-1");
        assert_eq!(
            check_callback(&denied, Some(&l), "corp", None, false, now),
            Err(FlowError::Provider("access_denied".into()))
        );
        assert_eq!(
            check_callback(
                &Callback::parse("state=st-1"),
                Some(&l),
                "corp",
                None,
                false,
                now
            ),
            Err(FlowError::NoCode)
        );
    }

    // OA2-08, OA2-07, OA2-11
    #[test]
    fn oa2_08_a_promised_iss_must_be_present_and_a_code_with_an_error_is_malformed() {
        let now = 1000;
        let l = login(now);
        let bare = Callback::parse("code=c1&state=st-1");
        assert_eq!(
            check_callback(&bare, Some(&l), "corp", Some("https://idp"), true, now),
            Err(FlowError::IssuerMissing)
        );
        assert_eq!(
            check_callback(&bare, Some(&l), "corp", Some("https://idp"), false, now),
            Ok("c1".into())
        );
        let with_iss = Callback::parse("code=c1&state=st-1&iss=https%3A%2F%2Fidp");
        assert_eq!(
            check_callback(&with_iss, Some(&l), "corp", Some("https://idp"), true, now),
            Ok("c1".into())
        );
        let twice =
            Callback::parse("code=c1&state=st-1&iss=https%3A%2F%2Fidp&iss=https%3A%2F%2Fidp");
        assert_eq!(
            check_callback(&twice, Some(&l), "corp", Some("https://idp"), true, now),
            Err(FlowError::Issuer)
        );
        // A plain OAuth 2.0 source knows no issuer: an `iss` sent twice is still refused.
        let twice = Callback::parse("code=c1&state=st-1&iss=a&iss=b");
        assert_eq!(
            check_callback(&twice, Some(&l), "corp", None, false, now),
            Err(FlowError::Malformed)
        );
        let once = Callback::parse("code=c1&state=st-1&iss=a");
        assert_eq!(
            check_callback(&once, Some(&l), "corp", None, false, now),
            Ok("c1".into())
        );
        let both = Callback::parse("code=c1&error=access_denied&state=st-1");
        assert_eq!(
            check_callback(&both, Some(&l), "corp", None, false, now),
            Err(FlowError::Malformed)
        );
    }

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }
}
