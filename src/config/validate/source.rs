//! `[[source]]`: a sign-in source or machine-token issuer, filled in by its vendor preset.

use std::collections::BTreeMap;

use super::issuer_problem;
use super::policy::policies;
use super::Check;
use crate::config::error::KeyPath;
use crate::config::model::*;
use crate::config::presets::PresetError;
use crate::config::raw::*;

const PKCE: &[(&str, Pkce)] = &[
    ("none", Pkce::None),
    ("plain", Pkce::Plain),
    ("S256", Pkce::S256),
];
const TOKEN_AUTH: &[(&str, TokenAuthMethod)] = &[
    ("client_secret_basic", TokenAuthMethod::ClientSecretBasic),
    ("client_secret_post", TokenAuthMethod::ClientSecretPost),
];
const MATCHING: &[(&str, UserMatchingMode)] = &[
    ("identifier", UserMatchingMode::Identifier),
    ("email_link", UserMatchingMode::EmailLink),
    ("email_deny", UserMatchingMode::EmailDeny),
    ("username_link", UserMatchingMode::UsernameLink),
    ("username_deny", UserMatchingMode::UsernameDeny),
];
/// Algorithms a machine token may use: asymmetric only (RFC 8725 §3.1).
pub const JWT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
];

fn valid_slug(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

pub(super) fn source(c: &mut Check<'_>, at: &KeyPath, mut raw: RawSource) -> Option<Source> {
    let slug = slug(c, at, raw.slug.take());
    let kind = kind(c, at, raw.kind.as_deref());
    let consumer_secret = consumer_secret(c, at, &mut raw);
    // A vendor preset fills every key the config leaves unset (its URLs with
    // `base_url`/`tenant` put in); a key set in the config always wins.
    let preset = kind.and_then(crate::config::presets::preset);
    let (urls, reported) = urls(c, at, &raw, preset);
    let pkce = pkce(c, at, raw.pkce.as_deref(), preset);
    let token_auth_method = c.one_of(
        at.key("token_auth_method"),
        raw.token_auth_method.as_deref(),
        TOKEN_AUTH,
        preset.map_or(TokenAuthMethod::ClientSecretBasic, |p| p.token_auth_method),
    );
    vendor_keys(c, at, &raw, preset, reported);
    let private_key = private_key(c, at, raw.private_key_file.as_deref());
    let user_matching_mode = c.one_of(
        at.key("user_matching_mode"),
        raw.user_matching_mode.as_deref(),
        MATCHING,
        UserMatchingMode::Identifier,
    );
    let jwt_algorithms = jwt_algorithms(c, at, raw.jwt_algorithms.take().unwrap_or_default());
    let jwt_max_age = c.opt_duration(at.key("jwt_max_age"), raw.jwt_max_age.as_deref());
    let ca_file = ca_file(c, at, raw.ca_file.as_deref());
    let keys = key_freshness(c, at, &raw);
    let kind = kind?;
    sign_in_keys(c, at, &raw, kind, preset, consumer_secret.is_some(), &urls);
    let claims = claims(c, at, raw.claims.take().unwrap_or_default(), preset);
    let scopes = raw
        .scopes
        .take()
        .unwrap_or_else(|| default_scopes(kind, preset));
    let authorize_params = authorize_params(c, at, raw.authorize_params.take(), preset);
    let policies = policies(c, at, &raw.policy, SOURCE_ACTIONS);
    let slug = slug?;
    Some(Source {
        name: raw
            .name
            .or_else(|| preset.map(|p| p.name.to_string()))
            .unwrap_or_else(|| slug.clone()),
        slug,
        kind,
        consumer_key: raw.consumer_key,
        consumer_secret,
        oidc_well_known_url: urls.oidc_well_known_url,
        authorization_url: urls.authorization_url,
        access_token_url: urls.access_token_url,
        profile_url: urls.profile_url,
        request_token_url: urls.request_token_url,
        oidc_jwks_url: urls.oidc_jwks_url,
        preset_urls: urls.from_preset,
        oidc_jwks: raw.oidc_jwks,
        scopes,
        pkce,
        token_auth_method,
        user_matching_mode,
        enroll: raw.enroll.unwrap_or(true),
        trust_email: raw.trust_email.unwrap_or(false),
        claims,
        authorize_params,
        issuer: urls.issuer,
        jwt_algorithms,
        jwt_max_age,
        ca_file,
        jwks_cache_ttl: keys.cache_ttl,
        jwks_max_stale: keys.max_stale,
        jwks_cooldown: keys.cooldown,
        base_url: raw.base_url,
        tenant: raw.tenant,
        team_id: raw.team_id,
        key_id: raw.key_id,
        private_key,
        preset,
        policies,
    })
}

/// The scopes asked for when the config names none: the preset's, else
/// OpenID Connect's usual three.
fn default_scopes(
    kind: SourceKind,
    preset: Option<&'static crate::config::presets::Preset>,
) -> Vec<String> {
    match (kind, preset) {
        (_, Some(p)) => p.default_scopes(),
        (SourceKind::OpenIdConnect, None) => {
            vec!["openid".into(), "email".into(), "profile".into()]
        }
        _ => Vec::new(),
    }
}

/// The authorization URL's extra parameters: the preset's, then the config's.
/// Parameters of the authorization request the gateway writes itself: one
/// sent again by `authorize_params` would be a second, conflicting value
/// (`response_type=code id_token`, `code_challenge_method=plain`), which a
/// provider may read either way (OIDC-29, OA2-05).
const OWN_AUTHORIZE_PARAMS: &[(&str, &str)] = &[
    (
        "response_type",
        "the gateway writes it itself: it asks for `code` only",
    ),
    (
        "client_id",
        "the gateway writes it itself: set consumer_key",
    ),
    (
        "redirect_uri",
        "the gateway writes it itself: its own callback URL",
    ),
    ("scope", "the gateway writes it itself: set scopes"),
    ("state", "the gateway writes it itself: one per sign-in"),
    ("nonce", "the gateway writes it itself: one per sign-in"),
    ("code_challenge", "the gateway writes it itself: set pkce"),
    (
        "code_challenge_method",
        "the gateway writes it itself: set pkce",
    ),
    // A request object (RFC 9101) carries its own copies of all of the above.
    (
        "request",
        "a request object would override the gateway's own parameters",
    ),
    (
        "request_uri",
        "a request object would override the gateway's own parameters",
    ),
];

/// `authorize_params`: the preset's, then the config's; none the gateway
/// writes itself, `max_age` a number of seconds (its `auth_time` is then
/// checked), `response_mode` one whose answer reaches the callback.
fn authorize_params(
    c: &mut Check<'_>,
    at: &KeyPath,
    raw: Option<BTreeMap<String, String>>,
    preset: Option<&'static crate::config::presets::Preset>,
) -> BTreeMap<String, String> {
    let raw = raw.unwrap_or_default();
    for (k, v) in &raw {
        let key = at.key("authorize_params").key(k);
        if let Some((_, instead)) = OWN_AUTHORIZE_PARAMS.iter().find(|(n, _)| n == k) {
            c.fail(key, format!("`{k}` cannot be set here: {instead}"));
        } else if k == "max_age" && v.parse::<u64>().is_err() {
            c.fail(key, format!("`{v}` is not a number of seconds"));
        } else if k == "response_mode" && !matches!(v.as_str(), "query" | "form_post") {
            c.fail(
                key,
                format!("`{v}`: the callback reads `query` or `form_post` answers only"),
            );
        }
    }
    let mut params: BTreeMap<String, String> = preset
        .map(|p| {
            p.authorize_params
                .iter()
                .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
                .collect()
        })
        .unwrap_or_default();
    params.extend(raw);
    params
}

/// The actions a source's rules may govern.
const SOURCE_ACTIONS: &[(&str, PolicyAction)] = &[
    ("authenticate", PolicyAction::Authenticate),
    ("enroll", PolicyAction::Enroll),
    ("link", PolicyAction::Link),
];

/// `slug`: present and `[a-z0-9-]+`.
fn slug(c: &mut Check<'_>, at: &KeyPath, raw: Option<String>) -> Option<String> {
    match raw {
        Some(s) if valid_slug(&s) => Some(s),
        Some(s) => {
            c.fail(at.key("slug"), format!("`{s}` must match [a-z0-9-]+"));
            None
        }
        None => {
            c.fail(
                at.key("slug"),
                "missing: every source needs a slug, e.g. slug = \"corp\"",
            );
            None
        }
    }
}

/// `type`: present and a known protocol or vendor.
fn kind(c: &mut Check<'_>, at: &KeyPath, raw: Option<&str>) -> Option<SourceKind> {
    match raw {
        Some(k) => match SourceKind::ALL.iter().find(|(n, _)| *n == k) {
            Some((_, kind)) => Some(*kind),
            None => {
                let names: Vec<&str> = SourceKind::ALL.iter().map(|(n, _)| *n).collect();
                c.fail(
                    at.key("type"),
                    format!(
                        "`{k}` is not a source type; use one of: {}",
                        names.join(", ")
                    ),
                );
                None
            }
        },
        None => {
            c.fail(at.key("type"), "missing: e.g. type = \"openidconnect\"");
            None
        }
    }
}

/// The client secret, from `consumer_secret` or `consumer_secret_file`, not both.
fn consumer_secret(c: &mut Check<'_>, at: &KeyPath, raw: &mut RawSource) -> Option<Secret<String>> {
    match (
        raw.consumer_secret.take(),
        raw.consumer_secret_file.as_deref(),
    ) {
        (Some(_), Some(_)) => {
            c.fail(
                at.key("consumer_secret_file"),
                "set consumer_secret or consumer_secret_file, not both",
            );
            None
        }
        (Some(s), None) => Some(Secret::new(s)),
        (None, Some(f)) => c
            .read_file(at.key("consumer_secret_file"), f)
            .map(Secret::new),
        (None, None) => None,
    }
}

/// A source's provider URLs and issuer, each as configured else from the preset.
struct Urls {
    /// Keys whose URL the vendor preset gave (the config set none).
    from_preset: Vec<&'static str>,
    oidc_well_known_url: Option<url::Url>,
    authorization_url: Option<url::Url>,
    access_token_url: Option<url::Url>,
    profile_url: Option<url::Url>,
    request_token_url: Option<url::Url>,
    oidc_jwks_url: Option<url::Url>,
    issuer: Option<String>,
}

/// The provider URLs (https, or http on loopback), the inline JWKS and the
/// issuer; also the key a preset's URL templates reported missing or
/// invalid, so it is not reported twice.
fn urls(
    c: &mut Check<'_>,
    at: &KeyPath,
    raw: &RawSource,
    preset: Option<&'static crate::config::presets::Preset>,
) -> (Urls, Option<&'static str>) {
    let mut reported: Option<&'static str> = None;
    let by_hand = |key: &str| set_by_hand(raw, key);
    let expanded =
        match preset.map(|p| p.urls(raw.base_url.as_deref(), raw.tenant.as_deref(), by_hand)) {
            None => crate::config::presets::ExpandedUrls::default(),
            Some(Ok(u)) => u,
            Some(Err(e)) => {
                let key = match &e {
                    PresetError::Missing(k) | PresetError::Invalid { key: k, .. } => *k,
                    _ => "type",
                };
                reported = Some(key);
                c.fail(
                    at.key(key),
                    format!("{e} (type `{}`)", raw.kind.as_deref().unwrap_or_default()),
                );
                crate::config::presets::ExpandedUrls::default()
            }
        };
    let mut from_preset = Vec::new();
    let mut url = |key: &'static str, configured: Option<&str>, preset: Option<&str>| {
        if configured.is_none() && preset.is_some() {
            from_preset.push(key);
        }
        c.provider_url(at.key(key), configured.or(preset))
    };
    let mut urls = Urls {
        from_preset: Vec::new(),
        oidc_well_known_url: url(
            "oidc_well_known_url",
            raw.oidc_well_known_url.as_deref(),
            expanded.oidc_well_known_url.as_deref(),
        ),
        authorization_url: url(
            "authorization_url",
            raw.authorization_url.as_deref(),
            expanded.authorization_url.as_deref(),
        ),
        access_token_url: url(
            "access_token_url",
            raw.access_token_url.as_deref(),
            expanded.access_token_url.as_deref(),
        ),
        profile_url: url(
            "profile_url",
            raw.profile_url.as_deref(),
            expanded.profile_url.as_deref(),
        ),
        request_token_url: url("request_token_url", raw.request_token_url.as_deref(), None),
        oidc_jwks_url: url(
            "oidc_jwks_url",
            raw.oidc_jwks_url.as_deref(),
            expanded.oidc_jwks_url.as_deref(),
        ),
        issuer: raw.issuer.clone().or(expanded.issuer.clone()),
    };
    urls.from_preset = from_preset;
    inline_jwks(c, at, raw.oidc_jwks.as_deref());
    if let Some(e) = urls.issuer.as_deref().and_then(issuer_problem) {
        c.fail(at.key("issuer"), e);
    }
    (urls, reported)
}

/// `oidc_jwks`, when given, is a JWKS document.
fn inline_jwks(c: &mut Check<'_>, at: &KeyPath, raw: Option<&str>) {
    if let Some(jwks) = raw {
        let ok = serde_json::from_str::<serde_json::Value>(jwks)
            .ok()
            .and_then(|v| v.get("keys").map(serde_json::Value::is_array))
            .unwrap_or(false);
        if !ok {
            c.fail(
                at.key("oidc_jwks"),
                "must be a JWKS document: {\"keys\": [...]}",
            );
        }
    }
}

/// `pkce`: as configured, else S256; a preset may insist on its own.
fn pkce(
    c: &mut Check<'_>,
    at: &KeyPath,
    raw: Option<&str>,
    preset: Option<&'static crate::config::presets::Preset>,
) -> Pkce {
    let configured_pkce = raw.map(|p| c.one_of(at.key("pkce"), Some(p), PKCE, Pkce::S256));
    match preset.map(|p| p.pkce_for(configured_pkce)) {
        None => configured_pkce.unwrap_or(Pkce::S256),
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            c.fail(at.key("pkce"), e.to_string());
            Pkce::S256
        }
    }
}

/// Whether the config sets the URL (or issuer) `key` of `raw` by hand.
fn set_by_hand(raw: &RawSource, key: &str) -> bool {
    match key {
        "oidc_well_known_url" => raw.oidc_well_known_url.is_some(),
        "authorization_url" => raw.authorization_url.is_some(),
        "access_token_url" => raw.access_token_url.is_some(),
        "profile_url" => raw.profile_url.is_some(),
        "oidc_jwks_url" => raw.oidc_jwks_url.is_some(),
        "issuer" => raw.issuer.is_some(),
        _ => false,
    }
}

/// Keys a vendor cannot work without (URL placeholders are checked with the
/// URLs: `reported`; one is needed only while a template not replaced by
/// hand names it).
fn vendor_keys(
    c: &mut Check<'_>,
    at: &KeyPath,
    raw: &RawSource,
    preset: Option<&'static crate::config::presets::Preset>,
    reported: Option<&'static str>,
) {
    let Some(p) = preset else { return };
    for key in p.requires {
        let present = match *key {
            "base_url" => {
                raw.base_url.is_some()
                    || p.default_base_url.is_some()
                    || !p.needs("base_url", |k| set_by_hand(raw, k))
            }
            "tenant" => raw.tenant.is_some() || !p.needs("tenant", |k| set_by_hand(raw, k)),
            "team_id" => raw.team_id.is_some(),
            "key_id" => raw.key_id.is_some(),
            "private_key_file" => raw.private_key_file.is_some(),
            _ => true,
        };
        if !present && raw.consumer_key.is_some() && reported != Some(*key) {
            c.fail(
                at.key(key),
                format!(
                    "missing: a source of type `{}` needs it",
                    raw.kind.as_deref().unwrap_or_default()
                ),
            );
        }
    }
}

/// Apple's `.p8` key, read from `private_key_file`.
fn private_key(c: &mut Check<'_>, at: &KeyPath, file: Option<&str>) -> Option<Secret<String>> {
    file.and_then(|f| c.read_file(at.key("private_key_file"), f))
        .map(Secret::new)
}

/// `jwt_algorithms`: names on [`JWT_ALGORITHMS`] only, parsed once here.
fn jwt_algorithms(
    c: &mut Check<'_>,
    at: &KeyPath,
    raw: Vec<String>,
) -> Vec<jsonwebtoken::Algorithm> {
    let mut jwt_algorithms = Vec::new();
    for (i, a) in raw.into_iter().enumerate() {
        // Only names on the list are parsed, so HMAC and `none` never get in.
        let parsed = JWT_ALGORITHMS
            .contains(&a.as_str())
            .then(|| a.parse::<jsonwebtoken::Algorithm>().ok())
            .flatten();
        if let Some(alg) = parsed {
            jwt_algorithms.push(alg);
        } else {
            c.fail(
                at.key("jwt_algorithms").item(i, None),
                format!(
                    "`{a}` is not allowed for machine tokens (never none or HMAC); use one of: {}",
                    JWT_ALGORITHMS.join(", ")
                ),
            );
        }
    }
    jwt_algorithms
}

/// `ca_file`: a PEM file of certificates, read now.
fn ca_file(c: &mut Check<'_>, at: &KeyPath, raw: Option<&str>) -> Option<std::path::PathBuf> {
    raw.and_then(|f| {
        let path = c.resolve(f);
        match crate::config::pem::read_certificates(&path) {
            Ok(_) => Some(path),
            Err(e) => {
                c.fail(at.key("ca_file"), e.to_string());
                None
            }
        }
    })
}

/// How long a source's keys are trusted and refetched.
struct KeyFreshness {
    cache_ttl: std::time::Duration,
    max_stale: std::time::Duration,
    cooldown: std::time::Duration,
}

/// `jwks_cache_ttl`, `jwks_max_stale`, `jwks_cooldown`: positive, and keys
/// do not go stale before their first refresh.
fn key_freshness(c: &mut Check<'_>, at: &KeyPath, raw: &RawSource) -> KeyFreshness {
    let cache_ttl = c
        .opt_duration(at.key("jwks_cache_ttl"), raw.jwks_cache_ttl.as_deref())
        .unwrap_or(crate::config::jwks_freshness::DEFAULT_TTL);
    let max_stale = c
        .opt_duration(at.key("jwks_max_stale"), raw.jwks_max_stale.as_deref())
        .unwrap_or(crate::config::jwks_freshness::DEFAULT_MAX_STALE);
    let cooldown = c
        .opt_duration(at.key("jwks_cooldown"), raw.jwks_cooldown.as_deref())
        .unwrap_or(crate::config::jwks_freshness::UNKNOWN_KID_COOLDOWN);
    for (key, d) in [("jwks_cache_ttl", cache_ttl), ("jwks_cooldown", cooldown)] {
        if d.is_zero() {
            c.fail(at.key(key), "must be longer than 0s, e.g. \"30s\"");
        }
    }
    if max_stale < cache_ttl {
        c.fail(
            at.key("jwks_max_stale"),
            "must be at least jwks_cache_ttl: keys would go stale before their first refresh",
        );
    }
    KeyFreshness {
        cache_ttl,
        max_stale,
        cooldown,
    }
}

/// What a source needs for what it is for: sign-in (a `consumer_key`, its
/// secret and the protocol's URLs; never for a machine-only vendor) or
/// machine tokens (a JWKS).
fn sign_in_keys(
    c: &mut Check<'_>,
    at: &KeyPath,
    raw: &RawSource,
    kind: SourceKind,
    preset: Option<&'static crate::config::presets::Preset>,
    has_secret: bool,
    urls: &Urls,
) {
    let has_jwks = urls.oidc_jwks_url.is_some()
        || raw.oidc_jwks.is_some()
        || urls.oidc_well_known_url.is_some();
    let machine_only = preset.is_some_and(|p| p.quirks.machine_only);
    if machine_only && raw.consumer_key.is_some() {
        c.fail(
            at.key("consumer_key"),
            format!(
                "a source of type `{}` is machine-only: nobody signs in through it; remove consumer_key and list the source in an app's jwt_sources",
                raw.kind.as_deref().unwrap_or_default()
            ),
        );
    } else if raw.consumer_key.is_some() {
        if !has_secret && kind != SourceKind::Apple {
            c.fail(
                at.key("consumer_secret"),
                "missing: a source with a consumer_key needs consumer_secret or consumer_secret_file",
            );
        }
        protocol_urls(c, at, raw, kind, urls);
    } else if !has_jwks {
        c.fail(
            at.key("consumer_key"),
            "missing: a source needs consumer_key (for sign-in) or a JWKS (oidc_jwks_url, oidc_jwks or oidc_well_known_url, for machine tokens)",
        );
    }
}

/// The URLs a sign-in source's protocol cannot work without.
fn protocol_urls(c: &mut Check<'_>, at: &KeyPath, raw: &RawSource, kind: SourceKind, urls: &Urls) {
    let need: &[(&str, bool)] = match kind {
        SourceKind::OAuth2 => &[
            ("authorization_url", urls.authorization_url.is_some()),
            ("access_token_url", urls.access_token_url.is_some()),
            ("profile_url", urls.profile_url.is_some()),
        ],
        SourceKind::OAuth1 => &[
            ("request_token_url", urls.request_token_url.is_some()),
            ("authorization_url", urls.authorization_url.is_some()),
            ("access_token_url", urls.access_token_url.is_some()),
            ("profile_url", urls.profile_url.is_some()),
        ],
        SourceKind::OpenIdConnect if urls.oidc_well_known_url.is_none() => &[
            ("authorization_url", urls.authorization_url.is_some()),
            ("access_token_url", urls.access_token_url.is_some()),
            ("issuer", urls.issuer.is_some()),
        ],
        _ => &[],
    };
    for (key, present) in need {
        if !present {
            c.fail(
                at.key(key),
                format!(
                    "missing: a source of type `{}` needs it",
                    raw.kind.as_deref().unwrap_or("")
                ),
            );
        }
    }
}

/// The claim mapping: the defaults, the preset's, then the config's, each
/// a known field and a path that parses.
fn claims(
    c: &mut Check<'_>,
    at: &KeyPath,
    raw: BTreeMap<String, String>,
    preset: Option<&'static crate::config::presets::Preset>,
) -> BTreeMap<String, String> {
    const CLAIM_KEYS: &[&str] = &[
        "identifier",
        "username",
        "email",
        "email_verified",
        "name",
        "groups",
    ];
    let mut claims: BTreeMap<String, String> = [
        ("identifier", "sub"),
        ("username", "preferred_username"),
        ("email", "email"),
        ("email_verified", "email_verified"),
        ("name", "name"),
        ("groups", "groups"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    if let Some(p) = preset {
        p.apply_claims(&mut claims);
    }
    for (k, v) in raw {
        if !CLAIM_KEYS.contains(&k.as_str()) {
            c.fail(
                at.key("claims").key(&k),
                format!(
                    "unknown claim mapping; expected one of: {}",
                    CLAIM_KEYS.join(", ")
                ),
            );
        } else if let Err(e) = crate::config::claim_path::parse_path(&v) {
            c.fail(at.key("claims").key(&k), format!("`{v}`: {e}"));
        } else {
            claims.insert(k, v);
        }
    }
    claims
}
