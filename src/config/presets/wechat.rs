//! WeChat (Weixin) website QR-code login: OAuth 2.0 in WeChat's own dialect.
//! The person scans a QR code on WeChat's page with the phone app; the site
//! gets a code, trades it by GET for an access token and an `openid`, and
//! reads the profile with both. No ID token, no email address.
//! Guide (website apps, "Weixin Login"):
//! https://developers.weixin.qq.com/doc/oplatform/en/Website_App/WeChat_Login/Wechat_Login.html
//! English mirror: https://open.wechat.com/cgi-bin/newreadtemplate?t=overseas_open/docs/web/login/login

use super::{EmailTrust, Preset, Protocol, Quirks};
use crate::config::{Pkce, SourceKind, TokenAuthMethod};

/// WeChat's preset.
pub static PRESET: Preset = Preset {
    kind: SourceKind::Wechat,
    name: "WeChat",
    protocol: Protocol::OAuth2,
    oidc_well_known_url: None,
    // Step 1 of the guide: the QR-code page for website apps (the in-WeChat
    // browser flow of official accounts is `/connect/oauth2/authorize`, a
    // different product with different scopes).
    authorization_url: Some("https://open.weixin.qq.com/connect/qrconnect"),
    // Step 2: "Obtain access_token through code", an HTTP GET.
    access_token_url: Some("https://api.weixin.qq.com/sns/oauth2/access_token"),
    // Step 3 / "Get user personal information (UnionID mechanism)".
    profile_url: Some("https://api.weixin.qq.com/sns/userinfo"),
    oidc_jwks_url: None,
    issuer: None,
    // Website apps have exactly one scope, `snsapi_login`; the guide says
    // the page fails to open with any other.
    scopes: &["snsapi_login"],
    // WeChat documents no PKCE.
    pkce: Pkce::None,
    pkce_forced: false,
    // Unused: the secret travels as `secret` in the token GET's query
    // (`token_by_get`); this is what a hand-set token URL would get.
    token_auth_method: TokenAuthMethod::ClientSecretPost,
    // `id` is put into the profile by [`identify`]: `unionid` (the same for
    // one person across every app of the developer's Open Platform
    // account) else `openid` (per app). Binding the app to an Open Platform
    // account later switches identifiers; link the old connections first.
    // `nickname` is neither unique nor stable, so it is only the display
    // name; the username falls back to `{slug}-{identifier}`. No email.
    claims: &[("identifier", "id"), ("name", "nickname")],
    authorize_params: &[],
    requires: &[],
    default_base_url: None,
    profile_headers: &[],
    email_trust: EmailTrust::Unknown,
    quirks: Quirks {
        // `appid=APPID&redirect_uri=…&response_type=code&scope=SCOPE&state=STATE#wechat_redirect`
        // (step 1). WeChat matches the link against that form; its official
        // account guide warns that the page does not open when the order is
        // different:
        // https://developers.weixin.qq.com/doc/offiaccount/en/OA_Web_Apps/Wechat_webpage_authorization.html
        appid_authorize: true,
        // `GET …/sns/oauth2/access_token?appid=APPID&secret=SECRET&code=CODE&grant_type=authorization_code`
        // (step 2); there is no redirect_uri and no form body.
        token_by_get: true,
        // Failures are `{"errcode":40029,"errmsg":"invalid code"}` in an
        // HTTP 200 (step 2's "error example", and every API after it).
        errcode_in_body: true,
        // `GET …/sns/userinfo?access_token=ACCESS_TOKEN&openid=OPENID`:
        // the openid comes from the token answer, the token in the query.
        profile_with_openid: true,
        ..Quirks::NONE
    },
};
