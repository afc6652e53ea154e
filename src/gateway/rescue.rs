//! The one place that turns a refusal into a response: a page for browsers,
//! JSON (with RFC 6750 headers where it applies) for everything else.

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};

use super::ctx::{Ctx, Outcome};
use super::exchange::Exchange;
use super::framing::FramingError;
use super::pages;
use crate::audit::Reason;
use crate::identity::flow::Refusal;
use crate::identity::signin::SignInError;
use crate::source::flow::FlowError;
use crate::source::SourceError;

/// Why the gateway answers a request itself instead of proxying it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// Framing or path the gateway will not forward; the connection is closed.
    Framing(FramingError),
    /// No app serves this host and path.
    NoApp,
    /// No such `/_auth` endpoint.
    UnknownAuthEndpoint,
    /// A JSON endpoint (`/_auth/userinfo`) has no identity to show: 401,
    /// never a redirect (a browser too gets the JSON or page that says so).
    NoIdentity,
    /// The path needs a signed-in user or a bearer token; `rd` is where to return.
    Unauthenticated {
        /// The original path and query, to come back to after signing in.
        rd: String,
    },
    /// The request's session was just ended because its access token could
    /// not be renewed: a browser is sent to sign in with the reason (the page
    /// says it), an API client gets 401 `error="invalid_token"` with it.
    SessionEnded {
        /// The original path and query, to come back to after signing in.
        rd: String,
        /// Why, and through which source.
        ended: crate::session::ended::SessionEnded,
        /// The reason in words (names the source), safe to show.
        description: String,
    },
    /// The upstream could not be reached or failed.
    UpstreamFailed,
    /// The upstream did not connect or answer in time (PRX-24): 504.
    UpstreamTimeout,
    /// A sign-in was refused: a fixed wording and status per kind; the detail is only logged.
    SignIn(SignInRefusal),
    /// A bearer token that is not accepted: 401 `error="invalid_token"` (RFC 6750), never a redirect.
    InvalidToken {
        /// Safe to show; never contains the token.
        description: String,
    },
    /// An app policy refuses a machine: 403 `error="insufficient_scope"` (RFC 6750 §3.1).
    InsufficientScope {
        /// The policy's message.
        reason: String,
    },
    /// The request carries its bearer token ambiguously: 400 `error="invalid_request"`.
    InvalidRequest {
        /// Safe to show.
        description: String,
    },
    /// An app policy refuses this principal: 403 with the policy's message.
    Forbidden {
        /// The policy's message.
        reason: String,
    },
    /// Forward auth: the app asked about refuses this principal, or no app
    /// serves that address: 401, as `/_auth/check` answers 200 or 401 only
    /// (docs/design.md), with the policy's message and `access_denied`
    /// (a machine token: `insufficient_scope`, RFC 6750 §3.1, so that its
    /// client does not take it for an expired token).
    CheckDenied {
        /// The policy's message.
        reason: String,
        /// The principal is a machine token.
        bearer: bool,
        /// For a browser behind a front proxy: the sign-in page to send it
        /// to (`X-Auth-Request-Redirect`), whose refusal says why.
        sign_in: Option<String>,
    },
    /// The source is not ready yet (discovery pending): 503 with Retry-After.
    SourceNotReady,
    /// A session cookie whose record is not cached here and the store cannot
    /// be asked: 503 with Retry-After, neither admitted nor sent to sign in
    /// (signing in needs the store too).
    SessionUnavailable,
    /// A body over the limit was sent to a gateway endpoint: 413.
    TooLarge,
    /// The method is not allowed on this endpoint: 405, with the methods
    /// it allows (`Allow`, RFC 9110 §15.5.6).
    MethodNotAllowed {
        /// The value of `Allow`.
        allow: &'static str,
    },
    /// A sign-out POST that does not come from one of our origins (SES-16): 403, nothing changed.
    CrossOriginSignOut,
    /// A request that belongs on another of our hosts (a callback off the
    /// sign-in host, a handoff code made for another host): 400 with a page
    /// that names the fix.
    WrongHost {
        /// What happened, in the person's terms.
        reason: String,
        /// What to do about it (the operator's fix where there is one).
        fix: String,
    },
}

/// Why a sign-in was refused (docs/design.md "Sign-in outcomes"). Each kind has
/// one status and one public wording; what actually went wrong (a URL, a
/// library's message) is logged with the request id, never shown.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignInRefusal {
    /// No login state for this response in this browser: not started here,
    /// already used, or dropped for a newer one (400).
    NotStarted,
    /// The login state is older than 10 minutes (400).
    Expired,
    /// The response belongs to another flow or provider: `state`, `iss`, or
    /// the source does not match, or a promised `iss` is missing (400).
    ForeignResponse,
    /// A third-party-initiated login names another issuer than the
    /// source's (OIDC Core §4, SECURITY.md OIDC-34; 400).
    ForeignInitiation,
    /// The response is malformed: no code, repeated parameters (400).
    Malformed,
    /// The token endpoint refused the code: replayed, injected, expired (400).
    CodeRefused,
    /// The provider answered with an error instead of a code, e.g. the
    /// person cancelled (400: SECURITY.md OA1-03's REJECT-LOGIN; no code came
    /// back to sign in with).
    ProviderDenied,
    /// The ID token, the signed profile or the profile's `sub` did not validate (401).
    InvalidIdToken,
    /// A source policy refused; its `message` is operator text and shown (403).
    Policy(String),
    /// The directory refused: disabled user, enrollment closed, identity
    /// taken or linked elsewhere (403, the refusal's fixed wording).
    Directory(Refusal),
    /// The provider failed: unreachable, an error or garbage instead of an answer (502).
    ProviderFailed,
    /// The provider did not answer within the outbound timeout (504).
    ProviderTimeout,
    /// The user directory is unavailable (503).
    StoreUnavailable,
    /// The source is not ready yet (503).
    NotReady,
    /// The gateway itself failed (no random values, a cookie it could not seal) (500).
    Internal,
    /// A handoff code from the sign-in host that is unknown, already used,
    /// expired, not this browser's, or whose session has ended (400).
    HandoffRefused,
}

impl SignInRefusal {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> u16 {
        match self {
            SignInRefusal::NotStarted
            | SignInRefusal::Expired
            | SignInRefusal::ForeignResponse
            | SignInRefusal::ForeignInitiation
            | SignInRefusal::Malformed
            | SignInRefusal::CodeRefused
            | SignInRefusal::ProviderDenied
            | SignInRefusal::HandoffRefused => 400,
            SignInRefusal::InvalidIdToken => 401,
            SignInRefusal::Policy(_) | SignInRefusal::Directory(_) => 403,
            SignInRefusal::Internal => 500,
            SignInRefusal::ProviderFailed => 502,
            SignInRefusal::StoreUnavailable | SignInRefusal::NotReady => 503,
            SignInRefusal::ProviderTimeout => 504,
        }
    }

    /// The audit line's reason code. Every refusal of the sign-in, link,
    /// callback and handoff paths reaches the person as a `SignInRefusal`
    /// (from a `FlowError`, a `SourceError`, a `SignInError` or a handoff
    /// failure), so this one match gives each of them its code.
    pub fn reason(&self) -> Reason {
        match self {
            SignInRefusal::NotStarted => Reason::StateInvalid,
            SignInRefusal::Expired => Reason::StateExpired,
            SignInRefusal::ForeignResponse | SignInRefusal::ForeignInitiation => {
                Reason::ResponseMismatch
            }
            SignInRefusal::Malformed => Reason::ResponseMalformed,
            SignInRefusal::CodeRefused => Reason::CodeRefused,
            SignInRefusal::ProviderDenied => Reason::ProviderDenied,
            SignInRefusal::InvalidIdToken => Reason::IdTokenInvalid,
            SignInRefusal::Policy(_) => Reason::PolicyDenied,
            SignInRefusal::Directory(r) => match r {
                Refusal::Disabled => Reason::UserDisabled,
                Refusal::EnrollClosed => Reason::EnrollClosed,
                Refusal::LinkedElsewhere(_) | Refusal::Taken(_) => Reason::IdentityTaken,
                Refusal::Ambiguous(_) => Reason::MatchAmbiguous,
            },
            SignInRefusal::ProviderFailed => Reason::ProviderError,
            SignInRefusal::ProviderTimeout => Reason::ProviderTimeout,
            SignInRefusal::StoreUnavailable => Reason::StoreUnavailable,
            SignInRefusal::NotReady => Reason::SourceNotReady,
            SignInRefusal::Internal => Reason::Internal,
            SignInRefusal::HandoffRefused => Reason::HandoffInvalid,
        }
    }

    /// What the person is told: fixed text, or the operator's policy message.
    pub fn wording(&self) -> String {
        let fixed = match self {
            SignInRefusal::Policy(message) => return message.clone(),
            SignInRefusal::Directory(refusal) => return refusal.to_string(),
            SignInRefusal::NotStarted => {
                "This sign-in was not started in this browser, or it has already been used."
            }
            SignInRefusal::Expired => "This sign-in took too long.",
            SignInRefusal::ForeignResponse => {
                "The sign-in response does not belong to this sign-in."
            }
            SignInRefusal::ForeignInitiation => {
                "This sign-in was started for another provider than this one."
            }
            SignInRefusal::Malformed => "The sign-in response is malformed.",
            SignInRefusal::CodeRefused => {
                "The provider did not accept this sign-in's authorization code."
            }
            SignInRefusal::ProviderDenied => {
                "The sign-in was cancelled or refused at the provider."
            }
            SignInRefusal::InvalidIdToken => "The provider's proof of your identity is not valid.",
            SignInRefusal::ProviderFailed => "The provider did not answer properly.",
            SignInRefusal::ProviderTimeout => "The provider did not answer in time.",
            SignInRefusal::StoreUnavailable => "The user directory is unavailable.",
            SignInRefusal::NotReady => "The identity provider is not reachable right now.",
            SignInRefusal::Internal => "The gateway could not complete the sign-in.",
            SignInRefusal::HandoffRefused => {
                "This sign-in link is not valid: it has expired, it was already used, it was opened in another browser, or its session has ended."
            }
        };
        fixed.to_string()
    }
}

impl From<&FlowError> for SignInRefusal {
    fn from(e: &FlowError) -> Self {
        match e {
            FlowError::NotReady => SignInRefusal::NotReady,
            FlowError::Random => SignInRefusal::Internal,
            FlowError::NoLoginState => SignInRefusal::NotStarted,
            FlowError::Expired => SignInRefusal::Expired,
            FlowError::WrongSource
            | FlowError::State
            | FlowError::Issuer
            | FlowError::IssuerMissing => SignInRefusal::ForeignResponse,
            // The provider says it failed (RFC 6749 §4.1.2.1): a provider
            // error, 502 (docs/design.md); any other code refused the
            // request or the person declined: 400.
            FlowError::Provider(code)
                if code == "server_error" || code == "temporarily_unavailable" =>
            {
                SignInRefusal::ProviderFailed
            }
            FlowError::Provider(_) => SignInRefusal::ProviderDenied,
            FlowError::NoCode | FlowError::Malformed => SignInRefusal::Malformed,
        }
    }
}

impl From<&SourceError> for SignInRefusal {
    fn from(e: &SourceError) -> Self {
        match e {
            SourceError::IdToken(_)
            | SourceError::Userinfo(_)
            | SourceError::SubjectMismatch
            | SourceError::NotTheSession(_) => SignInRefusal::InvalidIdToken,
            SourceError::TokenRefused(_) => SignInRefusal::CodeRefused,
            SourceError::NotReady => SignInRefusal::NotReady,
            SourceError::Timeout(_) => SignInRefusal::ProviderTimeout,
            SourceError::Provider(_) | SourceError::Mapping(_) => SignInRefusal::ProviderFailed,
        }
    }
}

impl From<SignInError> for SignInRefusal {
    fn from(e: SignInError) -> Self {
        match e {
            SignInError::Refused(r) => SignInRefusal::Directory(r),
            SignInError::Policy(message) => SignInRefusal::Policy(message),
            SignInError::Store(_) => SignInRefusal::StoreUnavailable,
        }
    }
}

impl Rejection {
    /// The HTTP status of this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Rejection::Framing(f) => f.status(),
            Rejection::CheckDenied { .. } => 401,
            Rejection::NoApp | Rejection::UnknownAuthEndpoint => 404,
            Rejection::Unauthenticated { .. }
            | Rejection::SessionEnded { .. }
            | Rejection::NoIdentity => 401,
            Rejection::UpstreamFailed => 502,
            Rejection::UpstreamTimeout => 504,
            Rejection::SignIn(r) => r.status(),
            Rejection::SourceNotReady | Rejection::SessionUnavailable => 503,
            Rejection::Forbidden { .. } | Rejection::InsufficientScope { .. } => 403,
            Rejection::InvalidToken { .. } => 401,
            Rejection::InvalidRequest { .. } => 400,
            Rejection::TooLarge => 413,
            Rejection::MethodNotAllowed { .. } => 405,
            Rejection::CrossOriginSignOut => 403,
            Rejection::WrongHost { .. } => 400,
        }
    }

    fn outcome(&self, browser: bool) -> Outcome {
        match self {
            Rejection::Framing(_) => Outcome::BadRequest,
            Rejection::NoApp | Rejection::UnknownAuthEndpoint => Outcome::NotFound,
            Rejection::Unauthenticated { .. } if browser => Outcome::Redirected,
            Rejection::Unauthenticated { .. } | Rejection::NoIdentity => Outcome::Unauthorized,
            Rejection::SessionEnded { .. } if browser => Outcome::Redirected,
            Rejection::SessionEnded { .. } => Outcome::Unauthorized,
            Rejection::UpstreamFailed | Rejection::UpstreamTimeout => Outcome::UpstreamError,
            Rejection::SignIn(r) => match r.status() {
                401 => Outcome::Unauthorized,
                403 => Outcome::Forbidden,
                _ => Outcome::AuthEndpoint,
            },
            Rejection::SourceNotReady => Outcome::AuthEndpoint,
            Rejection::SessionUnavailable => Outcome::Error,
            Rejection::TooLarge | Rejection::MethodNotAllowed { .. } => Outcome::BadRequest,
            Rejection::Forbidden { .. }
            | Rejection::InsufficientScope { .. }
            | Rejection::CheckDenied { .. } => Outcome::Forbidden,
            Rejection::InvalidToken { .. } => Outcome::Unauthorized,
            Rejection::InvalidRequest { .. } => Outcome::BadRequest,
            Rejection::CrossOriginSignOut => Outcome::Forbidden,
            Rejection::WrongHost { .. } => Outcome::BadRequest,
        }
    }

    // Long: one flat table, a row per refusal, so the wordings read side by side.
    /// (heading, reason, what to do), shown to people and sent to API clients.
    fn explain(&self) -> (&'static str, String, &'static str) {
        match self {
            Rejection::Framing(f) => (
                "Bad request",
                f.to_string(),
                "Send the request again without the ambiguous parts.",
            ),
            Rejection::NoApp => (
                "Not found",
                "No application is served at this address.".into(),
                "Check the address; the host or path may be mistyped.",
            ),
            Rejection::UnknownAuthEndpoint => (
                "Not found",
                "This sign-in address does not exist.".into(),
                "Go back to the application and start again.",
            ),
            Rejection::Unauthenticated { .. } | Rejection::NoIdentity => (
                "Sign-in required",
                "This resource needs a signed-in user or a bearer token.".into(),
                "Send an Authorization: Bearer token, or sign in through a browser.",
            ),
            Rejection::SessionEnded { description, .. } => (
                "Session ended",
                description.clone(),
                "Sign in again through a browser.",
            ),
            Rejection::UpstreamFailed => (
                "Bad gateway",
                "The application behind this gateway did not answer.".into(),
                "Try again in a moment; if it persists, tell the operator.",
            ),
            Rejection::UpstreamTimeout => (
                "Gateway timeout",
                "The application behind this gateway did not answer in time.".into(),
                "Try again in a moment; if it persists, tell the operator.",
            ),
            Rejection::SignIn(r) => (
                "Sign-in refused",
                r.wording(),
                if r.status() >= 500 {
                    "Try signing in again in a moment; if this repeats, tell the operator the request id."
                } else {
                    "Go back to the application and sign in again; if this repeats, tell the operator the request id."
                },
            ),
            Rejection::InvalidToken { description } => (
                "Invalid token",
                description.clone(),
                "Send a valid bearer token, or none and sign in through a browser.",
            ),
            Rejection::InsufficientScope { reason }
            | Rejection::CheckDenied {
                reason,
                bearer: true,
                ..
            } => (
                "Access denied",
                reason.clone(),
                "The token is valid, but this application's policy does not admit it; ask its owner for access.",
            ),
            Rejection::InvalidRequest { description } => (
                "Bad request",
                description.clone(),
                "Send the token once, in the Authorization header only.",
            ),
            Rejection::Forbidden { reason }
            | Rejection::CheckDenied {
                reason,
                bearer: false,
                ..
            } => (
                "Access denied",
                reason.clone(),
                "You are signed in, but this application does not allow your account; ask its owner for access.",
            ),
            Rejection::SourceNotReady => (
                "Sign-in unavailable",
                "The identity provider is not reachable right now.".into(),
                "Try again in a minute.",
            ),
            Rejection::SessionUnavailable => (
                "Temporarily unavailable",
                "Your session cannot be checked right now: the user directory is unavailable.".into(),
                "Try again in a moment; you are still signed in. If this persists, tell the operator the request id.",
            ),
            Rejection::TooLarge => (
                "Request too large",
                "The request body is larger than this endpoint accepts.".into(),
                "Send a smaller request.",
            ),
            Rejection::MethodNotAllowed { .. } => (
                "Method not allowed",
                "This address does not accept that method.".into(),
                "Use GET (or POST where a form is expected).",
            ),
            Rejection::CrossOriginSignOut => (
                "Sign-out refused",
                "This sign-out request did not come from this site, so nothing was changed.".into(),
                "To sign out, open /_auth/sign_out on this site and press its Sign out button.",
            ),
            Rejection::WrongHost { reason, .. } => (
                "Wrong address for this sign-in",
                reason.clone(),
                "",
            ),
        }
    }
}

/// Why a back-channel logout request (OIDC Back-Channel Logout 1.0 §2.8)
/// is refused. The provider, not a person, reads the answer: JSON with an
/// OAuth error code, never a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogoutRefusal {
    /// Not a POST (405).
    NotPost,
    /// No source has this slug (404).
    UnknownSource,
    /// The form is larger than a gateway endpoint accepts (413).
    TooLarge,
    /// The form carries no `logout_token` (400).
    NoToken,
    /// The logout token did not verify; which check failed is only logged (400).
    InvalidToken,
    /// The logout token's `jti` was used before (400).
    Replayed,
    /// The session store could not revoke the sessions; the provider may retry (503).
    StoreUnavailable,
}

impl LogoutRefusal {
    /// The HTTP status of this refusal.
    pub fn status(self) -> u16 {
        match self {
            LogoutRefusal::NotPost => 405,
            LogoutRefusal::UnknownSource => 404,
            LogoutRefusal::TooLarge => 413,
            LogoutRefusal::NoToken | LogoutRefusal::InvalidToken | LogoutRefusal::Replayed => 400,
            LogoutRefusal::StoreUnavailable => 503,
        }
    }

    /// The OAuth error code and its description, as the provider reads them.
    pub fn explain(self) -> (&'static str, &'static str) {
        match self {
            LogoutRefusal::NotPost => ("invalid_request", "use POST"),
            LogoutRefusal::UnknownSource => ("invalid_request", "no such source"),
            LogoutRefusal::TooLarge => ("invalid_request", "body too large"),
            LogoutRefusal::NoToken => ("invalid_request", "no logout_token"),
            LogoutRefusal::InvalidToken => ("invalid_request", "the logout token is not valid"),
            LogoutRefusal::Replayed => ("invalid_request", "logout token replayed"),
            LogoutRefusal::StoreUnavailable => (
                "temporarily_unavailable",
                "the session store is unavailable; retry",
            ),
        }
    }

    /// The audit line's reason code; `None` for a request that is not a
    /// logout at all (wrong method, unknown source, too large).
    pub fn reason(self) -> Option<Reason> {
        match self {
            LogoutRefusal::NotPost | LogoutRefusal::UnknownSource | LogoutRefusal::TooLarge => None,
            LogoutRefusal::NoToken | LogoutRefusal::InvalidToken => {
                Some(Reason::LogoutTokenInvalid)
            }
            LogoutRefusal::Replayed => Some(Reason::LogoutTokenReplayed),
            LogoutRefusal::StoreUnavailable => Some(Reason::StoreUnavailable),
        }
    }
}

/// Writes the JSON answer to a refused back-channel logout and records its
/// reason in `ctx` (the caller sets the outcome).
pub fn refuse_logout(session: &mut Exchange, ctx: &mut Ctx, refusal: LogoutRefusal) {
    if let Some(reason) = refusal.reason() {
        ctx.refused = Some(reason);
    }
    let (error, description) = refusal.explain();
    let body = serde_json::json!({
        "error": error,
        "error_description": description,
        "request_id": ctx.request_id.as_str(),
    })
    .to_string();
    let allow = [("allow", "POST".to_string())];
    let extra: &[(&'static str, String)] = match refusal {
        LogoutRefusal::NotPost => &allow,
        _ => &[],
    };
    write(
        session,
        ctx,
        refusal.status(),
        extra,
        "application/json",
        Bytes::from(body),
    );
}

/// `text` as the content of an RFC 6750 §3 quoted-string: printable ASCII
/// without `"` and `\`.
pub fn quoted_string(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii() && *c != '"' && *c != '\\' && !c.is_control())
        .collect()
}

/// Whether the client is a browser that should see pages and redirects.
pub fn wants_html(session: &Exchange) -> bool {
    session
        .req_header()
        .headers
        .get_all(http::header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|s| s.contains("text/html")))
}

/// Writes the response for `rejection` and records the outcome in `ctx`.
pub fn respond(session: &mut Exchange, ctx: &mut Ctx, rejection: Rejection) {
    respond_with(session, ctx, rejection, Vec::new())
}

/// [`respond`] with extra headers (e.g. a `Set-Cookie` clearing the login state).
pub fn respond_with(
    session: &mut Exchange,
    ctx: &mut Ctx,
    rejection: Rejection,
    mut extra: Vec<(&'static str, String)>,
) {
    let browser = wants_html(session);
    ctx.outcome = Some(rejection.outcome(browser));
    if browser {
        if let Some(location) = sign_in_redirect(&rejection) {
            extra.push(("location", location));
            return write(
                session,
                ctx,
                302,
                &extra,
                "text/plain; charset=utf-8",
                Bytes::new(),
            );
        }
    }
    let status = rejection.status();
    let (heading, reason, hint) = rejection.explain();
    // The fix for a request on the wrong host names hosts and keys: not a fixed text.
    let hint = match &rejection {
        Rejection::WrongHost { fix, .. } => fix.as_str(),
        _ => hint,
    };
    let token_error = challenge(&rejection, &mut extra);
    if let Rejection::Framing(_) = rejection {
        // Bytes after a refused head could be a smuggled request: never read them.
        session.close = true;
    }
    if browser {
        let html = pages::error_page(status, heading, &reason, hint, ctx.request_id.as_str());
        write(
            session,
            ctx,
            status,
            &extra,
            "text/html; charset=utf-8",
            Bytes::from(html),
        )
    } else {
        let code = match (&rejection, token_error) {
            (_, Some((code, _))) => code,
            // A 401 that is not "sign in": the person is known and refused.
            (Rejection::CheckDenied { .. }, None) => "access_denied",
            (_, None) => error_code(status),
        };
        let json = serde_json::json!({
            "error": code,
            "error_description": reason,
            "hint": hint,
            "request_id": ctx.request_id.as_str(),
        });
        write(
            session,
            ctx,
            status,
            &extra,
            "application/json",
            Bytes::from(json.to_string()),
        )
    }
}

/// The header of a forward-auth 401 that names, for a browser behind a
/// front proxy, the sign-in URL to send it to, its `rd` encoded (a proxy
/// that pastes `$request_uri` into a query cuts it at the first `&`).
pub const CHECK_REDIRECT: &str = "x-auth-request-redirect";

/// Where a browser is sent instead of a page: to sign in, for a request that
/// needs a user (only an anonymous browser is redirected; a token error
/// never is) or whose session just ended (with fixed codes only: the
/// sign-in page turns them back into words).
pub(crate) fn sign_in_redirect(rejection: &Rejection) -> Option<String> {
    match rejection {
        Rejection::Unauthenticated { rd } => Some(format!(
            "/_auth/sign_in?rd={}",
            percent_encoding::utf8_percent_encode(rd, QUERY_VALUE)
        )),
        Rejection::SessionEnded { rd, ended, .. } => Some(format!(
            "/_auth/sign_in?rd={}&reason={}&source={}",
            percent_encoding::utf8_percent_encode(rd, QUERY_VALUE),
            ended.reason.code(),
            percent_encoding::utf8_percent_encode(&ended.source, QUERY_VALUE)
        )),
        _ => None,
    }
}

/// Adds the `Retry-After` and RFC 6750 `WWW-Authenticate` headers a refusal
/// carries to `extra`; returns its RFC 6750 error code and description, if it has one.
fn challenge<'r>(
    rejection: &'r Rejection,
    extra: &mut Vec<(&'static str, String)>,
) -> Option<(&'static str, &'r String)> {
    if matches!(
        rejection,
        Rejection::SourceNotReady
            | Rejection::SignIn(SignInRefusal::NotReady)
            | Rejection::SessionUnavailable
    ) {
        extra.push(("retry-after", "30".into()));
    }
    if let Rejection::MethodNotAllowed { allow } = rejection {
        extra.push(("allow", (*allow).to_string()));
    }
    if let Rejection::CheckDenied {
        sign_in: Some(url), ..
    } = rejection
    {
        extra.push((CHECK_REDIRECT, url.clone()));
    }
    if let Rejection::Unauthenticated { .. }
    | Rejection::NoIdentity
    | Rejection::CheckDenied { bearer: false, .. } = rejection
    {
        extra.push(("www-authenticate", "Bearer realm=\"portcullis\"".into()));
    }
    let token_error = match rejection {
        Rejection::InvalidToken { description } | Rejection::SessionEnded { description, .. } => {
            Some(("invalid_token", description))
        }
        Rejection::InsufficientScope { reason }
        | Rejection::CheckDenied {
            reason,
            bearer: true,
            ..
        } => Some(("insufficient_scope", reason)),
        Rejection::InvalidRequest { description } => Some(("invalid_request", description)),
        _ => None,
    };
    if let Some((code, description)) = token_error {
        let quoted = quoted_string(description);
        extra.push((
            "www-authenticate",
            format!(
                "Bearer realm=\"portcullis\", error=\"{code}\", error_description=\"{quoted}\""
            ),
        ));
    }
    token_error
}

fn error_code(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "too_large",
        500 => "internal_error",
        503 => "unavailable",
        504 => "gateway_timeout",
        414 => "uri_too_long",
        431 => "headers_too_large",
        502 => "bad_gateway",
        _ => "error",
    }
}

/// Characters escaped in a query value.
const QUERY_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'/')
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

static REFERRER_POLICY: HeaderName = HeaderName::from_static("referrer-policy");
static X_FRAME_OPTIONS: HeaderName = HeaderName::from_static("x-frame-options");
static X_CONTENT_TYPE_OPTIONS: HeaderName = HeaderName::from_static("x-content-type-options");
static PAGE_CSP: HeaderValue = HeaderValue::from_static(
    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
);

/// Sets a complete gateway response, with the headers every gateway page
/// carries, as the exchange's answer.
pub fn write(
    session: &mut Exchange,
    ctx: &mut Ctx,
    status: u16,
    extra: &[(&'static str, String)],
    content_type: &'static str,
    body: Bytes,
) {
    use http::header;
    // A body the client sent with a refused request is not read: close instead
    // of parsing its bytes as the next request (PRX-18).
    if session.has_unread_body() {
        session.close = true;
    }
    let length = body.len();
    let mut resp = http::Response::new(super::body::full(body));
    *resp.status_mut() =
        http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(&REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(&X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(&X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::CONTENT_SECURITY_POLICY, PAGE_CSP.clone());
    for (name, value) in extra {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) else {
            continue;
        };
        if name == header::CONTENT_SECURITY_POLICY || name == header::CACHE_CONTROL {
            // A page that widens its own policy (see `page_csp`), or a
            // public document that may be cached, replaces the default.
            h.insert(name, value);
        } else {
            // append: a response may set several cookies.
            h.append(name, value);
        }
    }
    if session.close {
        h.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    ctx.status = Some(status);
    session.response = Some(resp);
}

/// The gateway pages' Content-Security-Policy. `form_targets` are origins,
/// besides our own, that a form on the page may lead to: `form-action` also
/// governs the redirects after a submission (sign-out's 303 to the provider).
pub fn page_csp(form_targets: &[String]) -> String {
    let mut csp = String::from(
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; form-action 'self'",
    );
    for target in form_targets {
        csp.push(' ');
        csp.push_str(target);
    }
    csp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_error_names_its_status_never_another() {
        for (status, code) in [
            (400, "bad_request"),
            (408, "request_timeout"),
            (413, "too_large"),
            (414, "uri_too_long"),
            (431, "headers_too_large"),
            (502, "bad_gateway"),
            (504, "gateway_timeout"),
            (418, "error"),
        ] {
            assert_eq!(error_code(status), code, "{status}");
        }
    }

    #[test]
    fn sign_in_refusals_carry_the_design_status_and_never_the_detail() {
        let leaky = "https://idp.internal:8443/token: error sending request: tcp connect error";
        let rows: Vec<(SignInRefusal, u16)> = vec![
            ((&FlowError::NoLoginState).into(), 400),
            ((&FlowError::State).into(), 400),
            ((&FlowError::Issuer).into(), 400),
            ((&FlowError::IssuerMissing).into(), 400),
            (SignInRefusal::ForeignInitiation, 400),
            ((&FlowError::Malformed).into(), 400),
            ((&FlowError::Provider(leaky.into())).into(), 400),
            ((&SourceError::TokenRefused(leaky.into())).into(), 400),
            ((&SourceError::SubjectMismatch).into(), 401),
            ((&SourceError::Provider(leaky.into())).into(), 502),
            ((&SourceError::Timeout(leaky.into())).into(), 504),
            ((&SourceError::NotReady).into(), 503),
            (
                SignInError::Store(crate::identity::store::StoreError::Ambiguous).into(),
                503,
            ),
            (SignInError::Refused(Refusal::EnrollClosed).into(), 403),
            (SignInError::Policy("Ask the admins".into()).into(), 403),
            (SignInRefusal::Internal, 500),
        ];
        for (refusal, status) in rows {
            assert_eq!(refusal.status(), status, "{refusal:?}");
            let shown = refusal.wording();
            assert!(
                !shown.contains("idp.internal") && !shown.contains("tcp"),
                "{shown}"
            );
        }
        // A policy's message is operator text: shown as written.
        assert_eq!(
            SignInRefusal::from(SignInError::Policy("Ask the admins".into())).wording(),
            "Ask the admins"
        );
    }

    #[test]
    fn a_refused_back_channel_logout_answers_the_provider_with_its_status_oauth_error_and_audit_code(
    ) {
        let rows = [
            (
                LogoutRefusal::NotPost,
                405,
                "invalid_request",
                "use POST",
                None,
            ),
            (
                LogoutRefusal::UnknownSource,
                404,
                "invalid_request",
                "no such source",
                None,
            ),
            (
                LogoutRefusal::TooLarge,
                413,
                "invalid_request",
                "body too large",
                None,
            ),
            (
                LogoutRefusal::NoToken,
                400,
                "invalid_request",
                "no logout_token",
                Some("logout_token_invalid"),
            ),
            (
                LogoutRefusal::InvalidToken,
                400,
                "invalid_request",
                "the logout token is not valid",
                Some("logout_token_invalid"),
            ),
            (
                LogoutRefusal::Replayed,
                400,
                "invalid_request",
                "logout token replayed",
                Some("logout_token_replayed"),
            ),
            (
                LogoutRefusal::StoreUnavailable,
                503,
                "temporarily_unavailable",
                "the session store is unavailable; retry",
                Some("store_unavailable"),
            ),
        ];
        for (refusal, status, error, description, code) in rows {
            assert_eq!(refusal.status(), status, "{refusal:?}");
            assert_eq!(refusal.explain(), (error, description), "{refusal:?}");
            assert_eq!(refusal.reason().map(Reason::as_str), code, "{refusal:?}");
        }
    }

    #[test]
    fn every_typed_refusal_of_a_sign_in_maps_to_its_audit_reason_code() {
        use crate::source::idtoken::IdTokenError;
        let store = || crate::identity::store::StoreError::Ambiguous;
        let rows: Vec<(SignInRefusal, &str)> = vec![
            ((&FlowError::NoLoginState).into(), "state_invalid"),
            ((&FlowError::Expired).into(), "state_expired"),
            ((&FlowError::State).into(), "response_mismatch"),
            ((&FlowError::WrongSource).into(), "response_mismatch"),
            ((&FlowError::Issuer).into(), "response_mismatch"),
            ((&FlowError::IssuerMissing).into(), "response_mismatch"),
            ((&FlowError::Malformed).into(), "response_malformed"),
            ((&FlowError::NoCode).into(), "response_malformed"),
            (
                (&FlowError::Provider("access_denied".into())).into(),
                "provider_denied",
            ),
            ((&FlowError::NotReady).into(), "source_not_ready"),
            ((&FlowError::Random).into(), "internal_error"),
            (
                (&SourceError::TokenRefused("x".into())).into(),
                "code_refused",
            ),
            (
                (&SourceError::IdToken(IdTokenError::Malformed)).into(),
                "id_token_invalid",
            ),
            ((&SourceError::SubjectMismatch).into(), "id_token_invalid"),
            (
                (&SourceError::Provider("x".into())).into(),
                "provider_error",
            ),
            (
                (&SourceError::Mapping(crate::source::claims::MapError::NoIdentifier(
                    "sub".into(),
                )))
                    .into(),
                "provider_error",
            ),
            (
                (&SourceError::Timeout("x".into())).into(),
                "provider_timeout",
            ),
            ((&SourceError::NotReady).into(), "source_not_ready"),
            (SignInError::Store(store()).into(), "store_unavailable"),
            (
                SignInError::Policy("Ask the admins".into()).into(),
                "policy_denied",
            ),
            (
                SignInError::Refused(Refusal::Disabled).into(),
                "user_disabled",
            ),
            (
                SignInError::Refused(Refusal::EnrollClosed).into(),
                "enroll_closed",
            ),
            (
                SignInError::Refused(Refusal::LinkedElsewhere("github".into())).into(),
                "identity_taken",
            ),
            (
                SignInError::Refused(Refusal::Taken("email")).into(),
                "identity_taken",
            ),
            (
                SignInError::Refused(Refusal::Ambiguous("email")).into(),
                "match_ambiguous",
            ),
            (SignInRefusal::HandoffRefused, "handoff_invalid"),
        ];
        for (refusal, code) in rows {
            assert_eq!(refusal.reason().as_str(), code, "{refusal:?}");
        }
    }
}
