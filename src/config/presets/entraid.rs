//! Microsoft Entra ID (formerly Azure AD): OpenID Connect through the
//! tenant's v2.0 discovery; the profile is Microsoft Graph's `/me`, groups
//! from `/me/memberOf`.

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// Entra ID's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::EntraId,
    name: "Microsoft",
    protocol: Protocol::OpenIdConnect,
    // The tenant is required, with no default of `common`: the discovery
    // document of `common` / `organizations` advertises the issuer as the
    // template `https://login.microsoftonline.com/{tenantid}/v2.0`, which an
    // exact issuer check can never match, and accepting any tenant would let
    // every Entra organisation in. Set `tenant` to the directory's id (GUID)
    // or a verified domain:
    // https://learn.microsoft.com/en-us/entra/identity-platform/v2-protocols-oidc#find-your-apps-openid-configuration-document-uri
    oidc_well_known_url: Some(
        "https://login.microsoftonline.com/{tenant}/v2.0/.well-known/openid-configuration",
    ),
    authorization_url: None,
    access_token_url: None,
    // Graph's `/me` rather than the OIDC userinfo (which has no UPN or
    // otherMails). `otherMails` is not among the default properties, so the
    // fields are selected explicitly:
    // https://learn.microsoft.com/en-us/graph/api/user-get
    profile_url: Some(
        "https://graph.microsoft.com/v1.0/me?$select=id,displayName,userPrincipalName,mail,otherMails",
    ),
    oidc_jwks_url: None,
    issuer: None,
    // `User.Read` lets the access token call Graph `/me`.
    scopes: &["openid", "profile", "email", "User.Read"],
    pkce: Pkce::S256,
    pkce_forced: false,
    // Both are accepted; Microsoft's examples put the secret in the body.
    token_auth_method: TokenAuthMethod::ClientSecretPost,
    // `id` is the directory object id (the ID token's `oid`), stable across
    // apps; the ID token's `sub` is pairwise per app. `userPrincipalName` is
    // the sign-in name. `mail` can be null (no Exchange mailbox), hence
    // `email_fallback_other_mails`. `groups` is filled from memberOf.
    claims: &[
        ("identifier", "id"),
        ("username", "userPrincipalName"),
        ("name", "displayName"),
        ("email", "mail"),
        ("groups", "groups"),
    ],
    authorize_params: &[],
    requires: &["tenant"],
    default_base_url: None,
    profile_headers: &[],
    // `mail` and `otherMails` are directory attributes an administrator (or
    // for otherMails, the user) sets; Microsoft does not verify them and
    // warns against using the email claim for authorization:
    // https://learn.microsoft.com/en-us/entra/identity-platform/claims-validation#validate-the-subject
    email_trust: EmailTrust::Unknown,
    quirks: Quirks {
        // Group names need a Graph permission the plain sign-in does not
        // have; they are only fetched when the operator asks for one of these
        // scopes. GroupMember.Read.All is the least privileged:
        // https://learn.microsoft.com/en-us/graph/api/user-list-memberof
        entra_member_of: true,
        group_scopes: &["GroupMember.Read.All", "Group.Read.All", "Directory.Read.All"],
        email_fallback_other_mails: true,
        profile_without_sub: true,
        ..Quirks::NONE
    },
};
