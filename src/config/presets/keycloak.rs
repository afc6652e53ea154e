//! Keycloak: OpenID Connect through the discovery document of one realm,
//! whose URL (`base_url`) is per deployment.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Keycloak's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Keycloak,
    name: "Keycloak",
    protocol: Protocol::OpenIdConnect,
    // `base_url` is the realm URL, `https://HOST/realms/REALM` (Keycloak 17+
    // dropped the `/auth` prefix; older servers need `.../auth/realms/REALM`):
    // https://www.keycloak.org/securing-apps/oidc-layers#_endpoints
    oidc_well_known_url: Some("{base_url}/.well-known/openid-configuration"),
    authorization_url: None,
    access_token_url: None,
    profile_url: None,
    oidc_jwks_url: None,
    issuer: None,
    scopes: &["openid", "profile", "email"],
    pkce: Pkce::S256,
    pkce_forced: false,
    token_auth_method: TokenAuthMethod::ClientSecretBasic,
    // The defaults fit. Keycloak sends no `groups` claim until the client
    // gets a "Group Membership" mapper with that claim name; the default
    // path is kept so adding the mapper is all it takes.
    claims: &[],
    authorize_params: &[],
    requires: &["base_url"],
    default_base_url: None,
    profile_headers: &[],
    email_trust: EmailTrust::Flag,
    quirks: Quirks::NONE,
};
