//! Vendor presets: for each `type = "<vendor>"`, the URLs, scopes, client
//! authentication, PKCE, identifier and claim mapping that vendor needs, as
//! plain static data, one file per vendor saying why each quirk exists.
//!
//! Nothing here does I/O. Config validation starts from a [`Preset`] and lets
//! every config key of the same name win; the sign-in adapter reads
//! [`Quirks`] for the behaviour that is more than a URL or a claim path, and
//! calls the small pure helpers in `source::vendors` (GitHub's primary email,
//! Entra's groups, Apple's client secret).

pub mod apple;
pub mod discord;
pub mod entraid;
pub mod facebook;
pub mod github;
pub mod github_actions;
pub mod gitlab;
pub mod google;
pub mod keycloak;
pub mod mailcow;
pub mod okta;
pub mod patreon;
pub mod reddit;
pub mod slack;
pub mod twitch;
pub mod twitter;
pub mod wechat;

use std::collections::BTreeMap;

use url::Url;

use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Whether the sign-in is OpenID Connect (an ID token is validated, a nonce
/// is sent) or plain OAuth 2.0 (identity comes from the profile call only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// ID token validated against the vendor's JWKS and issuer.
    OpenIdConnect,
    /// No ID token: the profile endpoint is the identity.
    OAuth2,
}

/// How far the vendor's email address can be trusted for `email_link`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailTrust {
    /// The vendor says per address: the mapped `email_verified` path (or,
    /// for GitHub, the `verified` flag of the chosen address) decides.
    Flag,
    /// The vendor only hands out addresses it has verified or owns (a
    /// mail server's own mailbox): treat them as verified.
    Always,
    /// The vendor gives no address, or says nothing about it: unverified
    /// unless the operator sets `trust_email = true`.
    Unknown,
}

/// A vendor's built-in source settings; every field can be overridden by
/// the config key of the same name.
#[derive(Debug, Clone, Copy)]
pub struct Preset {
    /// The `type` this preset is for.
    pub kind: SourceKind,
    /// Default button label (config `name` wins).
    pub name: &'static str,
    /// OpenID Connect or plain OAuth 2.0.
    pub protocol: Protocol,
    /// OIDC discovery URL; `{base_url}` / `{tenant}` placeholders are filled
    /// from the source's config (see [`expand`]).
    pub oidc_well_known_url: Option<&'static str>,
    /// Authorization endpoint (template, like every URL here).
    pub authorization_url: Option<&'static str>,
    /// Token endpoint.
    pub access_token_url: Option<&'static str>,
    /// Profile endpoint; for OIDC vendors `None` means discovery's userinfo.
    pub profile_url: Option<&'static str>,
    /// JWKS URL for vendors whose keys are not found through discovery.
    pub oidc_jwks_url: Option<&'static str>,
    /// Expected `iss` for vendors without discovery.
    pub issuer: Option<&'static str>,
    /// Scopes requested when the config sets none.
    pub scopes: &'static [&'static str],
    /// PKCE method when the config sets none.
    pub pkce: Pkce,
    /// Whether a config may turn PKCE off or down (Twitter forces S256).
    pub pkce_forced: bool,
    /// Client authentication at the token endpoint when the config sets none.
    pub token_auth_method: TokenAuthMethod,
    /// Claim mapping (local field -> dotted path), laid over the defaults
    /// (`sub`, `preferred_username`, `email`, `email_verified`, `name`,
    /// `groups`) and under the config's `claims`.
    pub claims: &'static [(&'static str, &'static str)],
    /// Extra authorization parameters, under the config's `authorize_params`.
    pub authorize_params: &'static [(&'static str, &'static str)],
    /// Config keys this vendor cannot work without (beyond `consumer_key`
    /// and, except for Apple, `consumer_secret`): `base_url` for Okta,
    /// Keycloak and Mailcow, `tenant` for Entra ID, the key material for
    /// Apple. Validation names each missing one.
    pub requires: &'static [&'static str],
    /// `base_url` when the config sets none (GitLab: gitlab.com).
    pub default_base_url: Option<&'static str>,
    /// Headers the profile (and follow-up) calls must carry.
    pub profile_headers: &'static [(&'static str, &'static str)],
    /// How far its email addresses can be trusted.
    pub email_trust: EmailTrust,
    /// Behaviour beyond URLs and mapping.
    pub quirks: Quirks,
}

/// Vendor behaviour beyond URLs and mapping; each flag is explained where a
/// vendor file sets it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quirks {
    /// GitHub: when the profile's `email` is null, fetch
    /// `source::vendors::github::emails_url` and take `source::vendors::github::primary_verified_email`.
    pub github_emails: bool,
    /// GitHub: with the `read:org` scope, organisations and teams become
    /// groups (`source::vendors::github::memberships`).
    pub github_memberships: bool,
    /// Entra ID: when one of `group_scopes` is requested, fetch
    /// `source::vendors::entraid::member_of_url` (following `@odata.nextLink`) and put
    /// `source::vendors::entraid::group_names` into the profile's `groups`.
    pub entra_member_of: bool,
    /// Scopes that switch on the group fetch (`entra_member_of`).
    pub group_scopes: &'static [&'static str],
    /// Mailcow: the profile call carries the access token as
    /// `?access_token=` (`source::vendors::mailcow::profile_url_with_token`), not a header.
    pub token_in_query: bool,
    /// Entra ID: `mail` may be null; fall back to the first of `otherMails`
    /// (`source::vendors::entraid::fallback_email`).
    pub email_fallback_other_mails: bool,
    /// Apple: `response_mode=form_post` — the callback is a cross-site POST,
    /// so the login-state cookie must be `SameSite=None; Secure`.
    pub form_post: bool,
    /// Apple: the client secret is an ES256 JWT made per request from the
    /// team id, key id, Services ID and `.p8` key (`source::vendors::apple::client_secret`).
    pub apple_client_secret: bool,
    /// Apple: no profile endpoint; identity is the ID token, and the name
    /// arrives once, as the `user` form field of the first callback
    /// (`source::vendors::apple::user_name`).
    pub no_profile_endpoint: bool,
    /// GitHub: the token endpoint answers form-encoded unless the request
    /// says `Accept: application/json`.
    pub token_accept_json: bool,
    /// GitHub and Reddit refuse or throttle API calls without a descriptive
    /// `User-Agent` (the shared client sends `portcullis/<version>`).
    pub user_agent_required: bool,
    /// The profile is a vendor API, not OIDC userinfo: it has no `sub`, so it
    /// is not compared with the ID token's (Entra's Graph `/me`).
    pub profile_without_sub: bool,
    /// The vendor only mints tokens for machines (GitHub Actions): nobody
    /// signs in through it, so a `consumer_key` or an app's `sources` naming
    /// it is a config error; it belongs in `jwt_sources`.
    pub machine_only: bool,
    /// Slack: the Web API answers HTTP 200 with `"ok": false` and an
    /// `error` on failure (`source::vendors::slack::api_error`), token and profile alike.
    pub ok_field: bool,
    /// WeChat: the authorization URL names the client `appid` (not
    /// `client_id`), keeps WeChat's parameter order and ends in
    /// `#wechat_redirect` (`source::vendors::wechat::authorize_url`).
    pub appid_authorize: bool,
    /// WeChat: the code is exchanged by a GET with `appid`, `secret`,
    /// `code` and `grant_type` in the query (`source::vendors::wechat::token_url`).
    pub token_by_get: bool,
    /// WeChat: an `errcode` in a 200 answer is an error
    /// (`source::vendors::wechat::api_error`).
    pub errcode_in_body: bool,
    /// WeChat: the profile call carries `access_token` and the token
    /// answer's `openid` in the query (`source::vendors::wechat::profile_url`), and the
    /// identifier is `unionid` else `openid` (`source::vendors::wechat::identify`).
    pub profile_with_openid: bool,
}

impl Quirks {
    /// No quirks: a well-behaved vendor.
    pub const NONE: Quirks = Quirks {
        github_emails: false,
        github_memberships: false,
        entra_member_of: false,
        group_scopes: &[],
        token_in_query: false,
        email_fallback_other_mails: false,
        form_post: false,
        apple_client_secret: false,
        no_profile_endpoint: false,
        token_accept_json: false,
        user_agent_required: false,
        profile_without_sub: false,
        machine_only: false,
        ok_field: false,
        appid_authorize: false,
        token_by_get: false,
        errcode_in_body: false,
        profile_with_openid: false,
    };
}

/// Every preset, in the order of [`SourceKind::ALL`].
pub static ALL: &[&Preset] = &[
    &github::PRESET,
    &google::PRESET,
    &gitlab::PRESET,
    &discord::PRESET,
    &entraid::PRESET,
    &okta::PRESET,
    &twitter::PRESET,
    &facebook::PRESET,
    &apple::PRESET,
    &keycloak::PRESET,
    &twitch::PRESET,
    &reddit::PRESET,
    &patreon::PRESET,
    &mailcow::PRESET,
    &github_actions::PRESET,
    &slack::PRESET,
    &wechat::PRESET,
];

/// The preset of a vendor type; `None` for `oauth2`, `oauth1` and
/// `openidconnect`, which have no built-in settings.
pub fn preset(kind: SourceKind) -> Option<&'static Preset> {
    ALL.iter().copied().find(|p| p.kind == kind)
}

/// Why a preset could not be turned into a working source.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PresetError {
    /// A URL template needs this config key and it is not set: set it.
    #[error("missing: `{0}` is needed to build this vendor's URLs")]
    Missing(&'static str),
    /// The key is set but cannot go into a URL: fix its value.
    #[error("`{key}`: {reason}")]
    Invalid {
        /// The config key.
        key: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A template names a placeholder other than `{base_url}` / `{tenant}`:
    /// a mistake in a preset or an overriding URL.
    #[error("unknown placeholder `{{{0}}}` in a URL")]
    UnknownPlaceholder(String),
    /// The config turns PKCE off or down where the vendor requires it.
    #[error("`pkce`: this vendor requires {0}")]
    PkceForced(&'static str),
}

/// Fills `{base_url}` and `{tenant}` in a template; errors name the missing
/// key. `base_url` loses any trailing `/` (so `{base_url}/x` never has
/// `//`) and must be an http(s) URL without query or fragment; `tenant`
/// must be one path segment (a GUID, a domain, or `organizations` …).
pub fn expand(
    template: &str,
    base_url: Option<&str>,
    tenant: Option<&str>,
) -> Result<String, PresetError> {
    let mut out = String::with_capacity(template.len() + 64);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let (before, after) = rest.split_at(open);
        out.push_str(before);
        let after = after.get(1..).unwrap_or_default();
        let Some(close) = after.find('}') else {
            // A lone brace is text, not a placeholder.
            out.push('{');
            rest = after;
            continue;
        };
        let (name, tail) = after.split_at(close);
        match name {
            "base_url" => out.push_str(&checked_base_url(base_url)?),
            "tenant" => out.push_str(checked_tenant(tenant)?),
            other => return Err(PresetError::UnknownPlaceholder(other.to_string())),
        }
        rest = tail.get(1..).unwrap_or_default();
    }
    out.push_str(rest);
    Ok(out)
}

fn checked_base_url(base_url: Option<&str>) -> Result<String, PresetError> {
    let raw = base_url
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(PresetError::Missing("base_url"))?;
    let invalid = |reason| PresetError::Invalid {
        key: "base_url",
        reason,
    };
    let url = Url::parse(raw).map_err(|_| invalid("not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(invalid("must be an http or https URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(invalid("must not have a query or fragment"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(invalid("must not carry credentials"));
    }
    Ok(raw.trim_end_matches('/').to_string())
}

fn checked_tenant(tenant: Option<&str>) -> Result<&str, PresetError> {
    let t = tenant
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .ok_or(PresetError::Missing("tenant"))?;
    // A GUID, a verified domain or one of Microsoft's keywords: never
    // anything that could leave its path segment.
    if t.len() > 253
        || !t
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        || t.starts_with('.')
    {
        return Err(PresetError::Invalid {
            key: "tenant",
            reason: "must be a tenant id or domain (letters, digits, '-' and '.')",
        });
    }
    Ok(t)
}

/// The preset's URLs with placeholders filled; `None` where the preset has
/// none (discovery supplies it, or the vendor has no such endpoint).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExpandedUrls {
    /// OIDC discovery document.
    pub oidc_well_known_url: Option<String>,
    /// Authorization endpoint.
    pub authorization_url: Option<String>,
    /// Token endpoint.
    pub access_token_url: Option<String>,
    /// Profile endpoint.
    pub profile_url: Option<String>,
    /// JWKS.
    pub oidc_jwks_url: Option<String>,
    /// Expected issuer.
    pub issuer: Option<String>,
}

impl Preset {
    /// Every URL of the preset, expanded. `base_url` falls back to
    /// [`Preset::default_base_url`]. A template is only expanded if the
    /// config does not replace it, so pass `None`-free overrides first:
    /// callers that set a URL by hand need not provide what its template
    /// would have needed.
    pub fn urls(
        &self,
        base_url: Option<&str>,
        tenant: Option<&str>,
        set_by_hand: impl Fn(&str) -> bool,
    ) -> Result<ExpandedUrls, PresetError> {
        let base_url = base_url.or(self.default_base_url);
        // A URL set by hand wins: its template is not filled in, so the
        // keys only that template needs (`base_url`, `tenant`) are not either.
        let [well_known, authorization, token, profile, jwks, issuer] =
            self.templates().map(|(key, t)| {
                t.filter(|_| !set_by_hand(key))
                    .map(|t| expand(t, base_url, tenant))
                    .transpose()
            });
        Ok(ExpandedUrls {
            oidc_well_known_url: well_known?,
            authorization_url: authorization?,
            access_token_url: token?,
            profile_url: profile?,
            oidc_jwks_url: jwks?,
            issuer: issuer?,
        })
    }

    /// Each URL key (and `issuer`) with the preset's template for it.
    fn templates(&self) -> [(&'static str, Option<&'static str>); 6] {
        [
            ("oidc_well_known_url", self.oidc_well_known_url),
            ("authorization_url", self.authorization_url),
            ("access_token_url", self.access_token_url),
            ("profile_url", self.profile_url),
            ("oidc_jwks_url", self.oidc_jwks_url),
            ("issuer", self.issuer),
        ]
    }

    /// Whether a template of a URL not `set_by_hand` names `{placeholder}`
    /// (`base_url`, `tenant`): only then must the config give it.
    pub fn needs(&self, placeholder: &str, set_by_hand: impl Fn(&str) -> bool) -> bool {
        let marker = format!("{{{placeholder}}}");
        self.templates()
            .into_iter()
            .any(|(key, t)| !set_by_hand(key) && t.is_some_and(|t| t.contains(&marker)))
    }

    /// Lays the preset's claim paths over `claims` (the defaults); the
    /// caller lays the config's `claims` over the result.
    pub fn apply_claims(&self, claims: &mut BTreeMap<String, String>) {
        for (field, path) in self.claims {
            claims.insert((*field).to_string(), (*path).to_string());
        }
    }

    /// The preset's scopes as owned strings (the config's `scopes`, when
    /// set, replace them entirely).
    pub fn default_scopes(&self) -> Vec<String> {
        self.scopes.iter().map(|s| (*s).to_string()).collect()
    }

    /// The PKCE method to use given the config's choice (`None`: not set).
    /// A vendor that forces PKCE refuses any other method.
    pub fn pkce_for(&self, configured: Option<Pkce>) -> Result<Pkce, PresetError> {
        match configured {
            None => Ok(self.pkce),
            Some(p) if self.pkce_forced && p != self.pkce => {
                Err(PresetError::PkceForced(match self.pkce {
                    Pkce::S256 => "S256",
                    Pkce::Plain => "plain",
                    Pkce::None => "no PKCE",
                }))
            }
            Some(p) => Ok(p),
        }
    }

    /// Whether the requested scopes switch on the vendor's group fetch.
    pub fn wants_groups(&self, scopes: &[String]) -> bool {
        self.quirks.entra_member_of
            && scopes
                .iter()
                .any(|s| self.quirks.group_scopes.contains(&s.as_str()))
    }

    /// The `type` name this preset answers to.
    pub fn type_name(&self) -> &'static str {
        SourceKind::ALL
            .iter()
            .find(|(_, k)| *k == self.kind)
            .map_or("", |(n, _)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOT_VENDORS: &[SourceKind] = &[
        SourceKind::OAuth2,
        SourceKind::OAuth1,
        SourceKind::OpenIdConnect,
    ];

    #[test]
    fn every_vendor_kind_has_exactly_one_preset() {
        for (name, kind) in SourceKind::ALL {
            let found = ALL.iter().filter(|p| p.kind == *kind).count();
            if NOT_VENDORS.contains(kind) {
                assert_eq!(found, 0, "{name} is not a vendor");
                assert!(preset(*kind).is_none());
            } else {
                assert_eq!(found, 1, "{name} needs one preset");
                assert_eq!(preset(*kind).unwrap().type_name(), *name);
            }
        }
        assert_eq!(ALL.len(), SourceKind::ALL.len() - NOT_VENDORS.len());
    }

    #[test]
    fn every_preset_is_complete_and_its_urls_expand() {
        for p in ALL {
            let name = p.type_name();
            assert!(!p.name.is_empty(), "{name}: button label");
            assert!(p
                .claims
                .iter()
                .all(|(f, path)| !f.is_empty() && !path.is_empty()));
            let urls = p
                .urls(
                    Some("https://idp.example/realms/x/"),
                    Some("contoso.onmicrosoft.com"),
                    |_| false,
                )
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            for url in [
                &urls.oidc_well_known_url,
                &urls.authorization_url,
                &urls.access_token_url,
                &urls.profile_url,
                &urls.oidc_jwks_url,
            ]
            .into_iter()
            .flatten()
            {
                let parsed = Url::parse(url).unwrap_or_else(|e| panic!("{name}: {url}: {e}"));
                assert_eq!(parsed.scheme(), "https", "{name}: {url}");
                assert!(!url.contains("//.well-known"), "{name}: {url}");
            }
            match p.protocol {
                Protocol::OpenIdConnect => {
                    assert!(
                        urls.oidc_well_known_url.is_some()
                            || (urls.oidc_jwks_url.is_some() && urls.issuer.is_some()),
                        "{name}: an OIDC preset needs discovery or a JWKS and an issuer"
                    );
                    assert!(
                        p.quirks.machine_only || p.scopes.contains(&"openid"),
                        "{name}: openid scope"
                    );
                }
                Protocol::OAuth2 => {
                    assert!(urls.authorization_url.is_some(), "{name}");
                    assert!(urls.access_token_url.is_some(), "{name}");
                    assert!(urls.profile_url.is_some(), "{name}");
                    assert!(
                        !p.scopes.contains(&"openid"),
                        "{name}: no ID token expected"
                    );
                }
            }
        }
    }

    #[test]
    fn templates_expand_base_url_and_tenant() {
        assert_eq!(
            expand(
                "{base_url}/.well-known/openid-configuration",
                Some("https://kc.example/realms/corp/"),
                None
            )
            .unwrap(),
            "https://kc.example/realms/corp/.well-known/openid-configuration"
        );
        assert_eq!(
            expand(
                "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration",
                None,
                Some("11111111-2222-3333-4444-555555555555")
            )
            .unwrap(),
            "https://login.microsoftonline.com/11111111-2222-3333-4444-555555555555/v2.0/.well-known/openid-configuration"
        );
        assert_eq!(
            expand("https://x.example/a", None, None).unwrap(),
            "https://x.example/a"
        );
        assert_eq!(
            expand("https://x.example/{", None, None).unwrap(),
            "https://x.example/{"
        );
    }

    #[test]
    fn a_missing_base_url_or_tenant_errors_naming_the_key() {
        let err = preset(SourceKind::Keycloak)
            .unwrap()
            .urls(None, None, |_| false)
            .unwrap_err();
        assert_eq!(err, PresetError::Missing("base_url"));
        assert!(err.to_string().contains("`base_url`"));
        let err = preset(SourceKind::EntraId)
            .unwrap()
            .urls(None, None, |_| false)
            .unwrap_err();
        assert_eq!(err, PresetError::Missing("tenant"));
        assert!(err.to_string().contains("`tenant`"));
        assert_eq!(
            expand("{base_url}/x", Some("  "), None).unwrap_err(),
            PresetError::Missing("base_url")
        );
    }

    #[test]
    fn hostile_values_are_refused_not_spliced() {
        for bad in ["common/../evil", "a?b", "a#b", "a b", ".evil", "x/y"] {
            assert!(
                matches!(
                    expand("{tenant}", None, Some(bad)),
                    Err(PresetError::Invalid { key: "tenant", .. })
                ),
                "{bad}"
            );
        }
        for bad in [
            "ftp://x.example",
            "https://x.example/?q=1",
            "https://u:p@x.example",
            "not a url",
        ] {
            assert!(
                matches!(
                    expand("{base_url}", Some(bad), None),
                    Err(PresetError::Invalid {
                        key: "base_url",
                        ..
                    })
                ),
                "{bad}"
            );
        }
        assert_eq!(
            expand("{realm}", None, None).unwrap_err(),
            PresetError::UnknownPlaceholder("realm".into())
        );
    }

    #[test]
    fn vendors_that_need_a_url_or_tenant_say_so_and_gitlab_defaults_to_gitlab_com() {
        for kind in [SourceKind::Okta, SourceKind::Keycloak, SourceKind::Mailcow] {
            assert!(
                preset(kind).unwrap().requires.contains(&"base_url"),
                "{kind:?}"
            );
        }
        assert!(preset(SourceKind::EntraId)
            .unwrap()
            .requires
            .contains(&"tenant"));
        let gitlab = preset(SourceKind::Gitlab).unwrap();
        assert!(gitlab.requires.is_empty());
        assert_eq!(
            gitlab
                .urls(None, None, |_| false)
                .unwrap()
                .oidc_well_known_url
                .as_deref(),
            Some("https://gitlab.com/.well-known/openid-configuration")
        );
        assert_eq!(
            gitlab
                .urls(Some("https://git.corp.example"), None, |_| false)
                .unwrap()
                .oidc_well_known_url
                .as_deref(),
            Some("https://git.corp.example/.well-known/openid-configuration")
        );
    }

    #[test]
    fn twitter_forces_s256_and_others_may_turn_pkce_off() {
        let twitter = preset(SourceKind::Twitter).unwrap();
        assert_eq!(twitter.pkce_for(None), Ok(Pkce::S256));
        assert_eq!(twitter.pkce_for(Some(Pkce::S256)), Ok(Pkce::S256));
        assert_eq!(
            twitter.pkce_for(Some(Pkce::None)),
            Err(PresetError::PkceForced("S256"))
        );
        assert_eq!(
            twitter.pkce_for(Some(Pkce::Plain)),
            Err(PresetError::PkceForced("S256"))
        );
        let github = preset(SourceKind::Github).unwrap();
        assert_eq!(github.pkce_for(Some(Pkce::None)), Ok(Pkce::None));
    }

    #[test]
    fn claims_lay_over_the_defaults() {
        let mut claims: BTreeMap<String, String> = [
            ("identifier", "sub"),
            ("username", "preferred_username"),
            ("groups", "groups"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        preset(SourceKind::Patreon)
            .unwrap()
            .apply_claims(&mut claims);
        assert_eq!(claims["identifier"], "data.id");
        assert_eq!(claims["email"], "data.attributes.email");
        assert_eq!(claims["groups"], "groups", "untouched defaults stay");
    }

    #[test]
    fn entra_fetches_groups_only_when_a_group_scope_is_requested() {
        let entra = preset(SourceKind::EntraId).unwrap();
        let scopes = |s: &[&str]| s.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!entra.wants_groups(&entra.default_scopes()));
        assert!(entra.wants_groups(&scopes(&["openid", "GroupMember.Read.All"])));
        assert!(!preset(SourceKind::Github)
            .unwrap()
            .wants_groups(&scopes(&["GroupMember.Read.All"])));
    }

    #[test]
    fn only_apple_posts_its_callback_and_signs_its_own_secret() {
        for p in ALL {
            let apple = p.kind == SourceKind::Apple;
            assert_eq!(p.quirks.form_post, apple);
            assert_eq!(p.quirks.apple_client_secret, apple);
            assert_eq!(
                p.authorize_params.contains(&("response_mode", "form_post")),
                apple
            );
        }
    }
}
