//! Sources: the identity providers people sign in through. The flow itself is
//! pure (`flow`, `idtoken`, `claims`, and `proof`: what a sign-in proves);
//! this module is the thin adapter that makes the HTTP calls (discovery,
//! token, JWKS, profile) in between.

pub mod claims;
pub mod flow;
pub mod idtoken;
pub mod login_state;
pub mod oauth1;
pub mod proof;
mod refresh;
pub mod vendors;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use jsonwebtoken::Algorithm;
use serde_json::Value;
use url::Url;

use crate::config::presets;
use crate::config::{Config, Source, TokenAuthMethod};
use crate::discovery::{self, DiscoveryError, Endpoints};
use crate::identity::Identity;
use crate::jwks::{JwksCache, JwksError};
use crate::outbound::{FetchError, Http, MAX_RESPONSE_BYTES};
use crate::readiness::Readiness;
use login_state::LoginState;

pub use crate::config::defaults::ID_TOKEN_MAX_AGE_SECS;

/// Why a sign-in through a source failed after the callback was accepted.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The provider could not be reached or answered garbage: try again later (502).
    #[error("the provider did not answer properly: {0}")]
    Provider(String),
    /// The token endpoint refused the code (expired, replayed, bad client): start again.
    #[error("the provider refused the authorization code ({0})")]
    TokenRefused(String),
    /// The ID token failed validation: nothing from it is used (401).
    #[error("{0}")]
    IdToken(#[from] idtoken::IdTokenError),
    /// A signed userinfo answer failed validation (OIDC-21, 401); the text
    /// names the check as the ID token's would.
    #[error("the signed userinfo answer is invalid: {0}")]
    Userinfo(idtoken::IdTokenError),
    /// The profile's `sub` differs from the ID token's (OIDC-20).
    #[error("the provider's profile is for another subject than its ID token")]
    SubjectMismatch,
    /// A refresh answer's ID token differs from the session's sign-in in
    /// this claim (OIDC-32).
    #[error("the refreshed ID token's `{0}` is not the session's")]
    NotTheSession(&'static str),
    /// The profile could not be mapped to an identity.
    #[error("{0}")]
    Mapping(#[from] claims::MapError),
    /// The source is not ready (discovery pending): retry later (503).
    #[error("the provider is not ready yet")]
    NotReady,
    /// The provider did not answer in time: retry later (504).
    #[error("{0}")]
    Timeout(String),
}

impl From<FetchError> for SourceError {
    fn from(e: FetchError) -> Self {
        match e {
            FetchError::Timeout { .. } => SourceError::Timeout(e.to_string()),
            _ => SourceError::Provider(e.to_string()),
        }
    }
}

impl From<JwksError> for SourceError {
    fn from(e: JwksError) -> Self {
        match e {
            // The key set did not come in time: the provider's timeout (504).
            JwksError::Fetch(FetchError::Timeout { .. }) => SourceError::Timeout(e.to_string()),
            _ => SourceError::Provider(e.to_string()),
        }
    }
}

/// What a successful callback proves.
#[derive(Debug, Clone)]
pub struct Proven {
    /// The identity at the source.
    pub identity: Identity,
    /// The raw ID token, for `id_token_hint` at logout.
    pub id_token: Option<String>,
    /// The provider's session id (`sid`), for back-channel logout.
    pub oidc_sid: Option<String>,
    /// The ID token's claims overlaid with the profile's, for policy expressions.
    pub claims: Value,
    /// The token endpoint's access and refresh tokens (OAuth 2.0 sources).
    pub tokens: Option<TokenSet>,
}

/// What a token endpoint answered: an access token, perhaps a refresh token, its lifetime.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSet {
    /// The access token.
    pub access_token: String,
    /// The refresh token, if the provider gave one.
    pub refresh_token: Option<String>,
    /// `expires_in`, seconds, if the provider said.
    pub expires_in: Option<u64>,
}

impl TokenSet {
    fn from_response(access_token: &str, body: &Value) -> TokenSet {
        TokenSet {
            access_token: access_token.to_string(),
            refresh_token: body
                .get("refresh_token")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_string),
            // Some vendors send the number as a string.
            expires_in: body.get("expires_in").and_then(|v| {
                v.as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            }),
        }
    }
}

/// Whether a refreshed ID token's `claims` are of the session's sign-in,
/// whose claims are `signed_in` (OIDC Core §12.2): the same `sub`; the same
/// `iss` and `auth_time` where both carry them; and a `nonce` only if it is
/// the sign-in's. A session whose claims kept no `sub` cannot be matched, so
/// it is refused too.
pub fn check_same_identity(claims: &Value, signed_in: Option<&Value>) -> Result<(), SourceError> {
    let old = |name: &str| signed_in.and_then(|c| c.get(name));
    match (claims.get("sub"), old("sub")) {
        (Some(new), Some(old)) if new == old => {}
        _ => return Err(SourceError::NotTheSession("sub")),
    }
    for name in ["iss", "auth_time"] {
        if let (Some(new), Some(old)) = (claims.get(name), old(name)) {
            if new != old {
                return Err(SourceError::NotTheSession(name));
            }
        }
    }
    match claims.get("nonce") {
        Some(nonce) if old("nonce") != Some(nonce) => Err(SourceError::NotTheSession("nonce")),
        _ => Ok(()),
    }
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_token", &"<redacted>")
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// The client id and secret a token request authenticates with (Apple: an
/// ES256 JWT made now from the .p8 key).
fn client_credentials(
    src: &Source,
    quirks: presets::Quirks,
    now: u64,
) -> Result<(String, String), SourceError> {
    let client_id = src.consumer_key.clone().unwrap_or_default();
    if quirks.apple_client_secret {
        let secret = vendors::apple::client_secret(
            src.team_id.as_deref().unwrap_or_default(),
            src.key_id.as_deref().unwrap_or_default(),
            &client_id,
            src.private_key
                .as_ref()
                .map(|k| k.expose().as_str())
                .unwrap_or_default(),
            now,
            vendors::apple::CLIENT_SECRET_TTL_SECS,
        )
        .map_err(|e| SourceError::Provider(format!("Apple client secret: {e}")))?;
        return Ok((client_id, secret));
    }
    let secret = src
        .consumer_secret
        .as_ref()
        .map(|s| s.expose().clone())
        .unwrap_or_default();
    Ok((client_id, secret))
}

/// One source at run time.
pub struct Runtime {
    /// Its config.
    pub config: Source,
    /// Its `[[source.policy]]` rules, compiled.
    pub policies: crate::policy::Rules,
    endpoints: RwLock<Option<Arc<Endpoints>>>,
}

impl Runtime {
    /// Its endpoints, once known.
    pub fn endpoints(&self) -> Option<Arc<Endpoints>> {
        self.endpoints.read().ok().and_then(|e| e.clone())
    }

    fn set_endpoints(&self, e: Endpoints) {
        if let Ok(mut cur) = self.endpoints.write() {
            *cur = Some(Arc::new(e));
        }
    }
}

/// Every source, with the shared HTTP client and key sets.
pub struct Sources {
    http: Http,
    /// Key sets per source.
    pub jwks: JwksCache,
    by_slug: HashMap<String, Arc<Runtime>>,
    readiness: Arc<Readiness>,
    /// Background upkeep of discovery documents (see `refresh`).
    upkeep: refresh::Upkeep,
    /// The wall clock (OAuth 1.0a timestamps).
    clock: crate::clock::Clock,
}

/// What loading the sources found, for `check` and the start-up log.
#[derive(Debug, Default)]
pub struct LoadReport {
    /// Sources whose discovery failed now and will be retried: (slug, reason).
    pub pending: Vec<(String, String)>,
    /// Hand-set URLs that replaced discovered ones: (slug, key, discovered, configured).
    pub overridden: Vec<(String, &'static str, String, String)>,
    /// Each source's effective endpoints.
    pub endpoints: Vec<(String, Endpoints)>,
}

/// A source refused at load (its discovery document names another issuer, or
/// a policy expression does not compile): fix the key named.
#[derive(Debug, thiserror::Error)]
#[error("source[{slug}].{key}: {reason}")]
pub struct LoadError {
    /// The source.
    pub slug: String,
    /// The config key at fault.
    pub key: &'static str,
    /// Why.
    pub reason: String,
}

impl LoadError {
    fn discovery(slug: &str, error: DiscoveryError) -> Self {
        LoadError {
            slug: slug.to_string(),
            key: "oidc_well_known_url",
            reason: error.to_string(),
        }
    }
}

impl Sources {
    /// Runs discovery for every source that has a well-known URL. A provider
    /// that is down leaves its source not ready (retried later); one whose
    /// document names another issuer is refused.
    pub async fn load(
        config: &Config,
        http: Http,
        readiness: Arc<Readiness>,
        clock: crate::clock::Clock,
    ) -> Result<(Sources, LoadReport), LoadError> {
        let mut report = LoadReport::default();
        let mut by_slug = HashMap::new();
        let mut upkeep = refresh::Upkeep::new();
        for s in &config.sources {
            let policies = crate::policy::Rules::new(&s.policies);
            let rt = Arc::new(Runtime {
                policies,
                config: s.clone(),
                endpoints: RwLock::new(None),
            });
            match &s.oidc_well_known_url {
                None => {
                    let e = discovery::resolve(s, None)
                        .map_err(|e| LoadError::discovery(&s.slug, e))?;
                    report.endpoints.push((s.slug.clone(), e.clone()));
                    rt.set_endpoints(e);
                    readiness.set(&s.slug, true);
                }
                Some(wk) => match discovery::fetch_fresh(&http.source(&s.slug), wk).await {
                    Ok((doc, cache_control)) => {
                        let e = discovery::resolve(s, Some(&doc))
                            .map_err(|e| LoadError::discovery(&s.slug, e))?;
                        upkeep.first_refresh(s, cache_control.as_deref());
                        for (key, d, c) in &e.overridden {
                            report
                                .overridden
                                .push((s.slug.clone(), key, d.clone(), c.clone()));
                        }
                        report.endpoints.push((s.slug.clone(), e.clone()));
                        rt.set_endpoints(e);
                        readiness.set(&s.slug, true);
                    }
                    // A document that breaks a rule refuses the source (OIDC-24, OIDC-25).
                    Err(error) if error.is_refusal() => {
                        return Err(LoadError::discovery(&s.slug, error));
                    }
                    Err(e) => {
                        readiness.set(&s.slug, false);
                        report.pending.push((s.slug.clone(), e.to_string()));
                    }
                },
            }
            by_slug.insert(s.slug.clone(), rt);
        }
        let jwks = JwksCache::new(http.clone(), &config.sources, clock.clone());
        Ok((
            Sources {
                http,
                jwks,
                by_slug,
                readiness,
                upkeep,
                clock,
            },
            report,
        ))
    }

    /// The source with this slug.
    pub fn get(&self, slug: &str) -> Option<Arc<Runtime>> {
        self.by_slug.get(slug).cloned()
    }

    /// Whether `iss` is the issuer of a configured source other than
    /// `slug` at another provider: on a callback of a source whose own
    /// issuer is not known, the evidence of a mix-up (SECURITY.md OA2-09).
    pub fn is_issuer_of_another(&self, slug: &str, iss: &str) -> bool {
        let endpoints = |rt: &Arc<Runtime>| rt.endpoints();
        let mine = self.by_slug.get(slug).and_then(endpoints);
        let others: Vec<Arc<Endpoints>> = self
            .by_slug
            .iter()
            .filter(|(other, _)| *other != slug)
            .filter_map(|(_, rt)| endpoints(rt))
            .collect();
        names_another_provider(mine.as_deref(), &others, iss)
    }

    /// Finishes a sign-in: exchanges the code, validates the ID token (no
    /// further call after an invalid one), fetches the profile, maps it.
    pub async fn finish(
        &self,
        rt: &Runtime,
        code: &str,
        login: &LoginState,
        redirect_uri: &str,
        user_field: Option<&str>,
        now: u64,
    ) -> Result<Proven, SourceError> {
        let src = &rt.config;
        let quirks = src.preset.map_or(presets::Quirks::NONE, |p| p.quirks);
        let endpoints = rt.endpoints().ok_or(SourceError::NotReady)?;
        let (status, body) = self
            .exchange_code(src, quirks, &endpoints, code, login, redirect_uri, now)
            .await?;
        let access_token = token_response(status, &body)?;
        let (id_claims, id_token) = self.id_token_of(src, &endpoints, &body, login, now).await?;
        let profile = self
            .gather_profile(src, quirks, &endpoints, &body, access_token, user_field)
            .await?;
        let proof = proof::prove(src, quirks, id_claims.as_ref(), &profile)?;
        Ok(Proven {
            tokens: Some(TokenSet::from_response(access_token, &body)),
            identity: proof.identity,
            id_token,
            oidc_sid: proof.oidc_sid,
            claims: proof.claims,
        })
    }

    /// Trades the authorization code at the token endpoint, authenticated
    /// as the source says (WeChat: by a GET with the secret in the query);
    /// the answer's status and JSON body, unless it is a vendor's API error.
    #[allow(clippy::too_many_arguments)]
    async fn exchange_code(
        &self,
        src: &Source,
        quirks: presets::Quirks,
        endpoints: &Endpoints,
        code: &str,
        login: &LoginState,
        redirect_uri: &str,
        now: u64,
    ) -> Result<(u16, Value), SourceError> {
        let token_url = endpoints.token.as_ref().ok_or(SourceError::NotReady)?;
        let (client_id, secret) = client_credentials(src, quirks, now)?;
        let (client_id, secret) = (client_id.as_str(), secret.as_str());
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", redirect_uri),
        ];
        if let Some(v) = &login.pkce_verifier {
            form.push(("code_verifier", v));
        }
        let basic = match src.token_auth_method {
            TokenAuthMethod::ClientSecretBasic => Some((client_id, secret)),
            TokenAuthMethod::ClientSecretPost => {
                form.push(("client_id", client_id));
                form.push(("client_secret", secret));
                None
            }
        };
        let resp = if quirks.token_by_get {
            // WeChat: the code is traded by a GET with the secret in the query.
            let url = vendors::wechat::token_url(token_url, client_id, secret, code);
            self.http
                .source(&src.slug)
                .get_with(&url, None, &[], MAX_RESPONSE_BYTES)
                .await?
        } else {
            self.http
                .source(&src.slug)
                .post_form(token_url, &form, basic, MAX_RESPONSE_BYTES)
                .await?
        };
        let body = resp.json().unwrap_or(Value::Null);
        vendor_api_error(quirks, &body)?;
        Ok((resp.status, body))
    }

    /// The ID token of an OIDC source's token answer, validated (no further
    /// call after an invalid one): its claims and the raw token.
    async fn id_token_of(
        &self,
        src: &Source,
        endpoints: &Endpoints,
        body: &Value,
        login: &LoginState,
        now: u64,
    ) -> Result<(Option<Value>, Option<String>), SourceError> {
        if !src.is_oidc() {
            return Ok((None, None));
        }
        let raw = body
            .get("id_token")
            .and_then(Value::as_str)
            .ok_or_else(|| SourceError::Provider("the token response has no id_token".into()))?;
        // Every OIDC flow sent a nonce (`flow::start`); a state without one
        // would let any ID token of this client through (OIDC-10).
        let nonce = login
            .nonce
            .as_deref()
            .ok_or(SourceError::IdToken(idtoken::IdTokenError::Nonce))?;
        // max_age asked for at the authorization request: auth_time is checked.
        let max_auth_age = src
            .authorize_params
            .get("max_age")
            .and_then(|v| v.parse().ok());
        let claims = self
            .validate_id_token(src, endpoints, raw, (Some(nonce), max_auth_age), now)
            .await?;
        Ok((Some(claims), Some(raw.to_string())))
    }

    /// The profile: from the profile endpoint the source's quirks say how to
    /// call, completed by the vendor's follow-up calls; Apple's name from the
    /// callback's `user` field.
    async fn gather_profile(
        &self,
        src: &Source,
        quirks: presets::Quirks,
        endpoints: &Endpoints,
        body: &Value,
        access_token: &str,
        user_field: Option<&str>,
    ) -> Result<proof::Profile, SourceError> {
        let mut fields = match &endpoints.profile {
            Some(url) if quirks.profile_with_openid => {
                self.wechat_profile(src, url, body, access_token).await?
            }
            Some(url) if !quirks.no_profile_endpoint => {
                let how = if quirks.token_in_query {
                    TokenIn::Query(access_token)
                } else {
                    TokenIn::Bearer(access_token)
                };
                let resp = self.vendor_fetch(src, url, how).await?;
                if src.is_oidc() && resp.status == 200 && is_jwt(resp.content_type.as_deref()) {
                    self.signed_userinfo(src, endpoints, &resp.body).await?
                } else {
                    vendor_answer(quirks, url, resp)?
                }
            }
            _ => Value::Object(Default::default()),
        };
        let fetched_from = endpoints
            .profile
            .as_ref()
            .filter(|_| !quirks.no_profile_endpoint);
        if let Some(url) = fetched_from {
            self.complete_profile(src, url, access_token, &mut fields)
                .await?;
        }
        if let (Some(user), true) = (user_field, quirks.no_profile_endpoint) {
            // Apple sends the name once, in the first callback's `user` field.
            if let (Some(name), Some(p)) = (vendors::apple::user_name(user), fields.as_object_mut())
            {
                p.insert("name".into(), Value::String(name));
            }
        }
        Ok(proof::Profile {
            fields,
            fetched: fetched_from.is_some(),
        })
    }

    /// WeChat: the profile is asked for by the token answer's openid, must
    /// be about that openid, and is identified by unionid else openid.
    async fn wechat_profile(
        &self,
        src: &Source,
        url: &Url,
        body: &Value,
        access_token: &str,
    ) -> Result<Value, SourceError> {
        let openid =
            vendors::wechat::openid(body).map_err(|e| SourceError::Provider(e.to_string()))?;
        let url = vendors::wechat::profile_url(url, access_token, openid);
        let mut p = self.vendor_get(src, &url, TokenIn::Url).await?;
        vendors::wechat::identify(body, &mut p).map_err(|e| match e {
            vendors::wechat::IdentifyError::Mismatch => SourceError::SubjectMismatch,
            other => SourceError::Provider(other.to_string()),
        })?;
        Ok(p)
    }
    /// Trades a refresh token for fresh tokens (RFC 6749 §6) at the source's
    /// token endpoint, authenticated as the code exchange is. A refused
    /// refresh token is [`SourceError::TokenRefused`].
    ///
    /// An OpenID Connect source's keys are fetched first, so a key set that
    /// cannot be had fails the refresh before the refresh token is spent. An
    /// ID token in the answer (OIDC Core §12.2) is validated as at sign-in
    /// (signature, `iss`, `aud`, `azp`, times; no nonce is asked for) and must
    /// be of the sign-in whose claims are `signed_in` ([`check_same_identity`]):
    /// else [`SourceError::IdToken`] or [`SourceError::NotTheSession`], and
    /// the caller ends the session (OIDC-32).
    pub async fn refresh(
        &self,
        rt: &Runtime,
        refresh_token: &str,
        signed_in: Option<&Value>,
        now: u64,
    ) -> Result<TokenSet, SourceError> {
        let src = &rt.config;
        let quirks = src.preset.map_or(presets::Quirks::NONE, |p| p.quirks);
        let endpoints = rt.endpoints().ok_or(SourceError::NotReady)?;
        let token_url = endpoints.token.as_ref().ok_or(SourceError::NotReady)?;
        let (client_id, secret) = client_credentials(src, quirks, now)?;
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ];
        let basic = match src.token_auth_method {
            TokenAuthMethod::ClientSecretBasic => Some((client_id.as_str(), secret.as_str())),
            TokenAuthMethod::ClientSecretPost => {
                form.push(("client_id", &client_id));
                form.push(("client_secret", &secret));
                None
            }
        };
        if src.is_oidc() && endpoints.jwks.is_some() {
            // The keys are at hand before the refresh token is spent: a
            // provider that rotates it has used it up once it answers, so a
            // key set that cannot be had is better found (and retried) now.
            self.jwks
                .keys_for_sign_in(&src.slug, endpoints.jwks.as_ref(), None)
                .await?;
        }
        let resp = self
            .http
            .source(&src.slug)
            .post_form(token_url, &form, basic, MAX_RESPONSE_BYTES)
            .await?;
        let body = resp.json().unwrap_or(Value::Null);
        vendor_api_error(quirks, &body)?;
        let access_token = token_response(resp.status, &body)?;
        // Only an OpenID Connect source's ID token is read: a plain OAuth 2.0
        // source never asked for one.
        if let (Some(raw), true) = (body.get("id_token").and_then(Value::as_str), src.is_oidc()) {
            let claims = self
                .validate_id_token(src, &endpoints, raw, (None, None), now)
                .await?;
            check_same_identity(&claims, signed_in)?;
        }
        Ok(TokenSet::from_response(access_token, &body))
    }

    /// A JSON object from a vendor API: with the access token as a bearer
    /// (or, for Mailcow, in the query) and the preset's extra headers.
    async fn vendor_get(
        &self,
        src: &Source,
        url: &Url,
        how: TokenIn<'_>,
    ) -> Result<Value, SourceError> {
        let quirks = src.preset.map_or(presets::Quirks::NONE, |p| p.quirks);
        let resp = self.vendor_fetch(src, url, how).await?;
        vendor_answer(quirks, url, resp)
    }

    /// A signed userinfo answer (`application/jwt`, OIDC Core §5.3.2): its
    /// claims once its signature verifies with the provider's keys (an
    /// asymmetric algorithm the key allows; never `none`) and its `iss` and
    /// `aud`, where present, are the provider's and this client's (OIDC-21).
    async fn signed_userinfo(
        &self,
        src: &Source,
        endpoints: &Endpoints,
        body: &[u8],
    ) -> Result<Value, SourceError> {
        let issuer = endpoints.issuer.as_deref().ok_or(SourceError::NotReady)?;
        let raw = std::str::from_utf8(body)
            .map(str::trim)
            .map_err(|_| SourceError::Userinfo(idtoken::IdTokenError::Malformed))?;
        let (_, kid) = idtoken::peek(raw).map_err(SourceError::Userinfo)?;
        let keys = self
            .jwks
            .keys_for_sign_in(&src.slug, endpoints.jwks.as_ref(), kid.as_deref())
            .await?;
        let algorithms = id_token_algorithms(&[]);
        let claims =
            idtoken::verify(raw, &keys.set, &algorithms, None).map_err(SourceError::Userinfo)?;
        let client_id = src.consumer_key.as_deref().unwrap_or_default();
        idtoken::check_userinfo(&claims, issuer, client_id).map_err(SourceError::Userinfo)?;
        Ok(claims)
    }

    /// A vendor API call (a profile, a list), read whole.
    async fn vendor_fetch(
        &self,
        src: &Source,
        url: &Url,
        how: TokenIn<'_>,
    ) -> Result<crate::outbound::Fetched, SourceError> {
        let headers = src.preset.map_or(&[][..], |p| p.profile_headers);
        Ok(match how {
            TokenIn::Query(access_token) => {
                let with_token = vendors::mailcow::profile_url_with_token(url, access_token);
                self.http
                    .source(&src.slug)
                    .get_with(&with_token, None, headers, MAX_RESPONSE_BYTES)
                    .await?
            }
            TokenIn::Url => {
                self.http
                    .source(&src.slug)
                    .get_with(url, None, headers, MAX_RESPONSE_BYTES)
                    .await?
            }
            TokenIn::Bearer(access_token) => {
                self.http
                    .source(&src.slug)
                    .get_with(url, Some(access_token), headers, MAX_RESPONSE_BYTES)
                    .await?
            }
        })
    }

    /// One page of a paged vendor list (a JSON array) and its `Link` header.
    async fn vendor_page(
        &self,
        src: &Source,
        url: &Url,
        access_token: &str,
    ) -> Result<(Value, Option<String>), SourceError> {
        let headers = src.preset.map_or(&[][..], |p| p.profile_headers);
        let resp = self
            .http
            .source(&src.slug)
            .get_with(url, Some(access_token), headers, MAX_RESPONSE_BYTES)
            .await?;
        match (resp.status, resp.json()) {
            (200, Some(v @ Value::Array(_))) => Ok((v, resp.link)),
            (status, _) => Err(SourceError::Provider(format!(
                "{} answered {status}",
                url.path()
            ))),
        }
    }

    /// Vendor follow-up calls that complete a profile: GitHub's private
    /// primary address, Entra's `otherMails` fallback and group memberships.
    async fn complete_profile(
        &self,
        src: &Source,
        profile_url: &Url,
        access_token: &str,
        profile: &mut Value,
    ) -> Result<(), SourceError> {
        let Some(preset) = src.preset else {
            return Ok(());
        };
        let q = preset.quirks;
        let Some(obj) = profile.as_object_mut() else {
            return Ok(());
        };
        let missing = |v: Option<&Value>| v.is_none_or(|v| v.as_str().is_none_or(str::is_empty));
        if q.github_emails && missing(obj.get("email")) {
            let emails = self
                .vendor_get(
                    src,
                    &vendors::github::emails_url(profile_url),
                    TokenIn::Bearer(access_token),
                )
                .await?;
            if let Some(email) = vendors::github::primary_verified_email(&emails) {
                obj.insert("email".into(), Value::String(email));
                obj.insert("email_verified".into(), Value::Bool(true));
            }
        }
        if q.github_memberships
            && src
                .scopes
                .iter()
                .any(|s| vendors::github::reads_memberships(s))
        {
            let groups = self
                .github_memberships(src, profile_url, access_token)
                .await?;
            obj.insert("groups".into(), groups);
        }
        if q.email_fallback_other_mails && missing(obj.get("mail")) {
            if let Some(email) = vendors::entraid::fallback_email(&Value::Object(obj.clone())) {
                obj.insert("mail".into(), Value::String(email));
            }
        }
        if preset.wants_groups(&src.scopes) {
            let groups = self.entra_groups(src, profile_url, access_token).await?;
            obj.insert("groups".into(), groups);
        }
        Ok(())
    }

    /// GitHub: the person's organisations and teams, every page of them.
    async fn github_memberships(
        &self,
        src: &Source,
        profile_url: &Url,
        access_token: &str,
    ) -> Result<Value, SourceError> {
        let mut groups = Vec::new();
        for (what, names) in [
            (
                "orgs",
                vendors::github::org_groups as fn(&Value) -> Vec<String>,
            ),
            ("teams", vendors::github::team_groups),
        ] {
            let mut next = Some(vendors::github::memberships_url(profile_url, what));
            for _ in 0..vendors::github::MAX_PAGES {
                let Some(url) = next.take() else { break };
                let (page, link) = self.vendor_page(src, &url, access_token).await?;
                groups.extend(names(&page));
                next = vendors::github::next_page(link.as_deref(), profile_url);
            }
            if next.is_some() {
                // A cut-off list would quietly drop groups a deny rule
                // looks for: refuse the sign-in rather than admit on half.
                return Err(SourceError::Provider(format!(
                    "GitHub {what} go on past {} pages of 100",
                    vendors::github::MAX_PAGES
                )));
            }
        }
        Ok(Value::Array(
            groups.into_iter().map(Value::String).collect(),
        ))
    }

    /// Entra ID: the person's group memberships, every page of them.
    async fn entra_groups(
        &self,
        src: &Source,
        profile_url: &Url,
        access_token: &str,
    ) -> Result<Value, SourceError> {
        let mut groups = Vec::new();
        let mut next = Some(vendors::entraid::member_of_url(profile_url));
        // At most 20 pages; a next link is followed only on the same host.
        for _ in 0..20 {
            let Some(url) = next.take() else { break };
            let page = self
                .vendor_get(src, &url, TokenIn::Bearer(access_token))
                .await?;
            groups.extend(vendors::entraid::group_names(&page));
            next = vendors::entraid::next_link(&page)
                .and_then(|l| Url::parse(l).ok())
                .filter(|l| {
                    l.host_str() == profile_url.host_str() && l.scheme() == profile_url.scheme()
                });
        }
        if next.is_some() {
            // As for GitHub: no sign-in on a group list cut in half.
            return Err(SourceError::Provider(
                "Entra ID group memberships go on past 20 pages".into(),
            ));
        }
        Ok(Value::Array(
            groups.into_iter().map(Value::String).collect(),
        ))
    }

    async fn validate_id_token(
        &self,
        src: &Source,
        endpoints: &Endpoints,
        raw: &str,
        (nonce, max_auth_age): (Option<&str>, Option<u64>),
        now: u64,
    ) -> Result<Value, SourceError> {
        let issuer = endpoints.issuer.as_deref().ok_or(SourceError::NotReady)?;
        let (alg, kid) = idtoken::peek(raw)?;
        let algorithms = id_token_algorithms(&endpoints.id_token_algs);
        let expect = idtoken::Expect {
            issuer,
            client_id: src.consumer_key.as_deref().unwrap_or_default(),
            client_secret: src.consumer_secret.as_ref().map(|s| s.expose().as_str()),
            nonce,
            algorithms: &algorithms,
            now,
            max_age_secs: ID_TOKEN_MAX_AGE_SECS,
            max_auth_age,
        };
        let hmac = matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512);
        let keys = if hmac {
            // The client secret is the key: there is nothing to fetch.
            crate::jwks::Keys {
                set: Arc::new(crate::jwk::KeySet::default()),
                fetched: true,
            }
        } else {
            self.jwks
                .keys_for_sign_in(&src.slug, endpoints.jwks.as_ref(), kid.as_deref())
                .await?
        };
        match idtoken::validate(raw, &keys.set, &expect) {
            // No key fits a kid-less token: the provider may have rotated; one refetch (OIDC-18).
            Err(idtoken::IdTokenError::UnknownKey) if !keys.fetched => {
                let keys = self
                    .jwks
                    .refetch_for_sign_in(&src.slug, endpoints.jwks.as_ref(), Some(&keys.set))
                    .await?;
                Ok(idtoken::validate(raw, &keys, &expect)?)
            }
            other => Ok(other?),
        }
    }
}

/// OAuth 1.0a (RFC 5849): the three legs around the browser's visit to the
/// provider. Everything after the profile is the OAuth 2.0 code path.
impl Sources {
    /// Leg 1: asks `request_token_url` for a request token (signed, with
    /// `oauth_callback` = `callback`); returns where to send the browser and
    /// the token to seal into its login state.
    pub async fn start_oauth1(
        &self,
        rt: &Runtime,
        callback: &str,
    ) -> Result<(Url, login_state::Oauth1Pending), SourceError> {
        let src = &rt.config;
        let endpoints = rt.endpoints().ok_or(SourceError::NotReady)?;
        let (Some(request_url), Some(mut authorize)) = (
            src.request_token_url.as_ref(),
            endpoints.authorization.clone(),
        ) else {
            return Err(SourceError::NotReady);
        };
        let stamp = oauth1::Stamp::fresh(self.clock.now_unix())
            .map_err(|e| SourceError::Provider(e.to_string()))?;
        let signed = oauth1_signer(src)
            .request_token(request_url, callback, &stamp)
            .map_err(|e| SourceError::Provider(e.to_string()))?;
        let body = self
            .oauth1_token_call(&src.slug, request_url, &signed, "request token")
            .await?;
        // Refuses a missing or false oauth_callback_confirmed (OA1-01).
        let temporary = oauth1::parse_temporary_credentials(&body)
            .map_err(|e| SourceError::Provider(format!("request token: {e}")))?;
        authorize
            .query_pairs_mut()
            .append_pair("oauth_token", &temporary.credentials.token);
        Ok((
            authorize,
            login_state::Oauth1Pending {
                token: temporary.credentials.token.clone(),
                secret: temporary.credentials.secret.expose().clone(),
            },
        ))
    }

    /// Legs 3 and after: trades the verifier for an access token, fetches
    /// the profile signed with it, maps it. The caller has checked that the
    /// callback's `oauth_token` is this browser's and used its state once.
    pub async fn finish_oauth1(
        &self,
        rt: &Runtime,
        pending: &login_state::Oauth1Pending,
        verifier: &str,
    ) -> Result<Proven, SourceError> {
        let src = &rt.config;
        let endpoints = rt.endpoints().ok_or(SourceError::NotReady)?;
        let (Some(token_url), Some(profile_url)) =
            (endpoints.token.as_ref(), endpoints.profile.as_ref())
        else {
            return Err(SourceError::NotReady);
        };
        let signer = oauth1_signer(src);
        let provider = |e: oauth1::SignError| SourceError::Provider(e.to_string());
        let temporary =
            oauth1::TokenCredentials::new(pending.token.clone(), pending.secret.clone());
        let stamp = oauth1::Stamp::fresh(self.clock.now_unix()).map_err(provider)?;
        let signed = signer
            .access_token(token_url, &temporary, verifier, &stamp)
            .map_err(provider)?;
        let body = self
            .oauth1_token_call(&src.slug, token_url, &signed, "access token")
            .await?;
        let access = oauth1::parse_token_credentials(&body)
            .map_err(|e| SourceError::Provider(format!("access token: {e}")))?;
        let stamp = oauth1::Stamp::fresh(self.clock.now_unix()).map_err(provider)?;
        let signed = signer
            .resource("GET", profile_url, None, &access.credentials, &stamp)
            .map_err(provider)?;
        let resp = self
            .http
            .source(&src.slug)
            .signed(
                reqwest::Method::GET,
                profile_url,
                &signed.authorization,
                MAX_RESPONSE_BYTES,
            )
            .await?;
        let profile = match (resp.status, resp.json()) {
            (200, Some(v @ Value::Object(_))) => v,
            (status, _) => {
                return Err(SourceError::Provider(format!(
                    "the profile endpoint answered {status}"
                )))
            }
        };
        let mapped = claims::map(&src.claims, &profile, None)?;
        Ok(Proven {
            // OAuth 1.0a credentials are not bearer tokens: nothing to pass on.
            tokens: None,
            identity: Identity {
                source: src.slug.clone(),
                identifier: mapped.identifier,
                username: mapped.username,
                email: mapped.email,
                email_verified: mapped.email_verified || src.trust_email,
                name: mapped.name,
                groups: mapped.groups,
            },
            id_token: None,
            oidc_sid: None,
            claims: profile,
        })
    }
}

impl Sources {
    /// A signed POST to one of the two token endpoints; the body of a 200.
    async fn oauth1_token_call(
        &self,
        slug: &str,
        url: &Url,
        signed: &oauth1::Signed,
        step: &str,
    ) -> Result<bytes::Bytes, SourceError> {
        let resp = self
            .http
            .source(slug)
            .signed(
                reqwest::Method::POST,
                url,
                &signed.authorization,
                oauth1::MAX_RESPONSE_BYTES,
            )
            .await?;
        match resp.status {
            200 => Ok(resp.body),
            // RFC 5849 §3.2: a request it will not grant (a used verifier,
            // a bad signature or nonce) is a 400 or a 401.
            400 | 401 => Err(SourceError::TokenRefused(format!(
                "the {step} endpoint answered HTTP {}",
                resp.status
            ))),
            // Anything else (a 5xx, a redirect) is the provider failing.
            status => Err(SourceError::Provider(format!(
                "the {step} endpoint answered HTTP {status}"
            ))),
        }
    }
}

fn oauth1_signer(src: &Source) -> oauth1::Signer {
    oauth1::Signer::new(
        src.consumer_key.clone().unwrap_or_default(),
        src.consumer_secret
            .clone()
            .unwrap_or_else(|| crate::config::Secret::new(String::new())),
    )
}

impl Sources {
    /// Verifies a back-channel logout token of `rt` (signature with its keys,
    /// then Back-Channel Logout 1.0 §2.6); what it asks to end.
    pub async fn verify_logout(
        &self,
        rt: &Runtime,
        token: &str,
        now: u64,
    ) -> Result<idtoken::LogoutRequest, SourceError> {
        let src = &rt.config;
        let endpoints = rt.endpoints().ok_or(SourceError::NotReady)?;
        let issuer = endpoints.issuer.as_deref().ok_or(SourceError::NotReady)?;
        let (_, kid) = idtoken::peek(token)?;
        let algorithms = id_token_algorithms(&endpoints.id_token_algs);
        let secret = src.consumer_secret.as_ref().map(|s| s.expose().as_str());
        let keys = self
            .jwks
            .keys_for(&src.slug, endpoints.jwks.as_ref(), kid.as_deref())
            .await?;
        let claims = match idtoken::verify(token, &keys.set, &algorithms, secret) {
            Err(idtoken::IdTokenError::UnknownKey) if !keys.fetched => {
                let keys = self
                    .jwks
                    .refetch(&src.slug, endpoints.jwks.as_ref(), Some(&keys.set))
                    .await?;
                idtoken::verify(token, &keys, &algorithms, secret)?
            }
            other => other?,
        };
        let client_id = src.consumer_key.as_deref().unwrap_or_default();
        Ok(idtoken::check_logout_claims(
            &claims,
            issuer,
            client_id,
            now,
            ID_TOKEN_MAX_AGE_SECS,
        )?)
    }
}

/// The algorithms a provider's ID tokens may use: what its discovery document
/// lists (never `none`), else the asymmetric ones.
pub fn id_token_algorithms(listed: &[String]) -> Vec<Algorithm> {
    let parsed: Vec<Algorithm> = listed
        .iter()
        .filter_map(|a| a.parse::<Algorithm>().ok())
        .collect();
    if parsed.is_empty() {
        let mut all = jsonwebtoken::AlgorithmFamily::Rsa.algorithms().to_vec();
        all.extend_from_slice(jsonwebtoken::AlgorithmFamily::Ec.algorithms());
        all.extend_from_slice(jsonwebtoken::AlgorithmFamily::Ed.algorithms());
        all
    } else {
        parsed
    }
}

/// The answer of a vendor API call: a JSON object or array with a 200,
/// unless the vendor's own error shape says it failed.
fn vendor_answer(
    quirks: presets::Quirks,
    url: &Url,
    resp: crate::outbound::Fetched,
) -> Result<Value, SourceError> {
    match (resp.status, resp.json()) {
        (200, Some(v @ (Value::Object(_) | Value::Array(_)))) => {
            vendor_api_error(quirks, &v)?;
            Ok(v)
        }
        (status, _) => Err(SourceError::Provider(format!(
            "{} answered {status}",
            url.path()
        ))),
    }
}

/// Whether `iss` is the issuer of one of `others` whose authorization
/// endpoint is on another origin than `mine`'s: the same provider set up
/// twice (an OpenID source and a plain OAuth 2.0 one on one realm, which
/// sends its `iss` to both) is no mix-up.
fn names_another_provider(mine: Option<&Endpoints>, others: &[Arc<Endpoints>], iss: &str) -> bool {
    let origin = |e: Option<&Endpoints>| e.and_then(|e| e.authorization.as_ref()).map(Url::origin);
    others
        .iter()
        .any(|other| other.issuer.as_deref() == Some(iss) && origin(Some(other)) != origin(mine))
}

/// Whether a `Content-Type` is `application/jwt` (parameters and case aside).
fn is_jwt(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|c| c.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/jwt"))
}

/// How a vendor API call carries the access token.
#[derive(Clone, Copy)]
enum TokenIn<'a> {
    /// `Authorization: Bearer`.
    Bearer(&'a str),
    /// `?access_token=` (Mailcow).
    Query(&'a str),
    /// Already in the URL with the rest of the query (WeChat).
    Url,
}

/// A vendor API's own failure signal in an otherwise successful answer:
/// Slack's `"ok": false`, WeChat's `errcode` (both in an HTTP 200).
fn vendor_api_error(quirks: presets::Quirks, body: &Value) -> Result<(), SourceError> {
    let error = if quirks.ok_field {
        vendors::slack::api_error(body)
    } else if quirks.errcode_in_body {
        vendors::wechat::api_error(body)
    } else {
        None
    };
    match error {
        Some(e) => Err(SourceError::Provider(format!(
            "the provider answered an error: {}",
            sanitize(&e)
        ))),
        None => Ok(()),
    }
}

/// The access token of a token endpoint's answer (RFC 6749 §5.1, §5.2).
/// A 400 with an `error` is a refused code (replayed, injected, expired);
/// anything else that is not a 200 with a bearer `access_token` (a 5xx, an
/// HTML page, `{"error":…}` in a 200, another `token_type`) is a provider
/// failure (OA2-16, OA2-18).
fn token_response(status: u16, body: &Value) -> Result<&str, SourceError> {
    let error = body.get("error").and_then(Value::as_str);
    match (status, error) {
        (400, Some(err)) => {
            return Err(SourceError::TokenRefused(format!(
                "HTTP 400, {}",
                sanitize(err)
            )))
        }
        (200, None) => {}
        (status, err) => {
            return Err(SourceError::Provider(format!(
                "the token endpoint answered HTTP {status}, {}",
                sanitize(err.unwrap_or("no error code"))
            )))
        }
    }
    // A missing token_type is tolerated (some vendors omit it); another type is not ours to use.
    if let Some(kind) = body.get("token_type") {
        if !kind
            .as_str()
            .is_some_and(|k| k.eq_ignore_ascii_case("bearer"))
        {
            return Err(SourceError::Provider(format!(
                "the token response has token_type {}",
                sanitize(&kind.to_string())
            )));
        }
    }
    body.get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| SourceError::Provider("the token response has no access_token".into()))
}

/// Provider-sent text, cut to printable ASCII for logs and pages.
fn sanitize(s: &str) -> String {
    s.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(80)
        .collect()
}

/// The callback URL of a source: `{public_url}/_auth/callback/{slug}`.
pub fn callback_url(public_url: &Url, slug: &str) -> String {
    format!(
        "{}/_auth/callback/{slug}",
        public_url.origin().ascii_serialization()
    )
}

/// What an operator registers at a source's provider: the redirect URI, the
/// post-logout redirect (RP-initiated logout returns to the sign-in host) and
/// the back-channel logout URI.
pub fn registration_urls(public_url: &Url, slug: &str) -> [(&'static str, String); 3] {
    let origin = public_url.origin().ascii_serialization();
    [
        ("redirect URI", callback_url(public_url, slug)),
        (
            "post-logout redirect URI",
            format!("{origin}/ (and the paths below it)"),
        ),
        (
            "back-channel logout URI",
            format!("{origin}/_auth/backchannel_logout/{slug}"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(authorize: &str, issuer: Option<&str>) -> Endpoints {
        Endpoints {
            authorization: Some(Url::parse(authorize).unwrap()),
            token: None,
            profile: None,
            jwks: None,
            issuer: issuer.map(str::to_string),
            end_session: None,
            id_token_algs: Vec::new(),
            iss_in_response: false,
            overridden: Vec::new(),
        }
    }

    #[test]
    fn oa2_09_another_provider_s_iss_is_a_mix_up_the_same_provider_s_is_not() {
        let gh = at("https://github.example/login/oauth/authorize", None);
        let corp = Arc::new(at("https://idp.example/auth", Some("https://idp.example")));
        let others = [corp];
        assert!(names_another_provider(
            Some(&gh),
            &others,
            "https://idp.example"
        ));
        assert!(!names_another_provider(
            Some(&gh),
            &others,
            "https://else.example"
        ));
        // The same realm set up twice: an OpenID source and a plain OAuth 2.0 one.
        let same_realm = at("https://idp.example/auth?kc=1", None);
        assert!(!names_another_provider(
            Some(&same_realm),
            &others,
            "https://idp.example"
        ));
    }

    #[test]
    fn oidc32_a_refreshed_id_token_must_name_the_sessions_subject_and_issuer() {
        let signed_in = json!({"iss": "https://idp", "sub": "alice", "email": "a@x",
            "auth_time": 100, "nonce": "n1"});
        let same = json!({"iss": "https://idp", "sub": "alice", "auth_time": 100});
        assert!(check_same_identity(&same, Some(&signed_in)).is_ok());
        let refused = |claims: Value| match check_same_identity(&claims, Some(&signed_in)) {
            Err(SourceError::NotTheSession(name)) => name,
            other => panic!("{claims} gave {other:?}"),
        };
        assert_eq!(
            refused(json!({"iss": "https://idp", "sub": "mallory"})),
            "sub"
        );
        assert_eq!(
            refused(json!({"iss": "https://other", "sub": "alice"})),
            "iss"
        );
        assert_eq!(
            refused(json!({"iss": "https://idp", "sub": "alice", "auth_time": 200})),
            "auth_time"
        );
        assert_eq!(
            refused(json!({"iss": "https://idp", "sub": "alice", "nonce": "n2"})),
            "nonce"
        );
        // The sign-in's own nonce may come back (oidc-provider sends it).
        let echoed = json!({"iss": "https://idp", "sub": "alice", "nonce": "n1"});
        assert!(check_same_identity(&echoed, Some(&signed_in)).is_ok());
        // A session whose claims lost `sub` (or has none) cannot be matched.
        let no_sub = json!({"iss": "https://idp"});
        assert!(check_same_identity(&same, Some(&no_sub)).is_err());
        assert!(check_same_identity(&same, None).is_err());
        // A number is not the string it spells.
        let numeric = json!({"iss": "https://idp", "sub": 7});
        let spelled = json!({"iss": "https://idp", "sub": "7"});
        assert!(check_same_identity(&numeric, Some(&spelled)).is_err());
    }
}
