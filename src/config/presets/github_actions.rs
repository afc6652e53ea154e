//! GitHub Actions: the OIDC tokens a workflow asks for
//! (`permissions: id-token: write`), verified as machine tokens. Nobody signs
//! in through it: there is no client, no authorization endpoint.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// The issuer of every GitHub Actions token (github.com; GHES has its own).
pub const ISSUER: &str = "https://token.actions.githubusercontent.com";

/// GitHub Actions' preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::GithubActions,
    name: "GitHub Actions",
    protocol: Protocol::OpenIdConnect,
    // https://docs.github.com/en/actions/security-for-github-actions/security-hardening-your-deployments/about-security-hardening-with-openid-connect
    oidc_well_known_url: Some(
        "https://token.actions.githubusercontent.com/.well-known/openid-configuration",
    ),
    authorization_url: None,
    access_token_url: None,
    profile_url: None,
    oidc_jwks_url: None,
    // Set here too, so an app can name the source in `jwt_sources` before
    // discovery has run (and `check` shows it); discovery must agree.
    issuer: Some(ISSUER),
    scopes: &[],
    pkce: Pkce::S256,
    pkce_forced: false,
    token_auth_method: TokenAuthMethod::ClientSecretBasic,
    // X-Forwarded-User is the token's `sub` (`repo:acme/deploy:ref:refs/heads/main`):
    // the tokens carry no username. Policies read the rest as `claims.*`
    // (`repository`, `ref`, `environment`, `workflow_ref`, ...).
    claims: &[],
    authorize_params: &[],
    requires: &[],
    default_base_url: None,
    profile_headers: &[],
    // The tokens name a workflow, not a person: no email at all.
    email_trust: EmailTrust::Unknown,
    quirks: Quirks {
        machine_only: true,
        ..Quirks::NONE
    },
};
