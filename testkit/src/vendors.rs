//! In-process fakes of the vendors behind the presets, for tests: one server,
//! one path prefix per vendor (`/github`, `/entraid`, …), each answering with
//! that vendor's documented response shapes and fixed demo data.
//!
//! How a test configures a source against it: `type = "<vendor>"`,
//! `consumer_key = `[`CLIENT_ID`] (Apple: [`APPLE_SERVICES_ID`]),
//! `consumer_secret = `[`CLIENT_SECRET`], then
//! * Okta, Keycloak, GitLab, Mailcow: `base_url = fakes.base_url(vendor)` —
//!   the preset's templates then point here unchanged;
//! * Entra ID, Google, Twitch: `oidc_well_known_url = urls.oidc_well_known_url`
//!   (Entra also `profile_url`, and `tenant` = anything valid);
//! * the others: `authorization_url`, `access_token_url`, `profile_url`
//!   (Apple: `oidc_jwks_url`; its ID tokens say `iss =
//!   https://appleid.apple.com`, so the preset's issuer stays) from
//!   [`VendorFakes::urls`];
//! * Apple: `team_id = `[`APPLE_TEAM_ID`], `key_id = `[`APPLE_KEY_ID`], and
//!   the key from [`VendorFakes::apple_p8_pem`].
//!
//! Authorization auto-approves the demo person at once. The token endpoint
//! checks the code (one-time, bound to its redirect_uri), the client
//! authentication the vendor documents (strictly: a Reddit fake refuses
//! client_secret_post as Reddit does, see [`ClientAuth`]), and the PKCE
//! verifier when a challenge was sent. [`expected`] says what a sign-in must
//! yield.
//!
//! Nothing here reads portcullis's presets: every behaviour (client
//! authentication, scopes, response shapes, profile fields) is written from
//! the vendor's public documentation, cited next to it, so that a preset
//! that got its vendor wrong fails against its fake. The generic OIDC
//! provider with fault knobs is portcullis's own `demo::provider`.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    EcdsaKeyPair, KeyPair, RsaKeyPair, ECDSA_P256_SHA256_FIXED_SIGNING, RSA_PKCS1_SHA256,
};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use bytes::Bytes;
use http::header::{ACCEPT, AUTHORIZATION, LOCATION, USER_AGENT};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::RngCore;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;
use url::Url;

use crate::server::respond;

/// The client id every vendor fake knows (Apple's is [`APPLE_SERVICES_ID`]).
pub const CLIENT_ID: &str = "portcullis-demo-client";
/// The client secret every vendor fake but Apple checks.
pub const CLIENT_SECRET: &str = "portcullis-demo-secret";
/// Apple: the Services ID, i.e. the client id and the client secret's `sub`.
pub const APPLE_SERVICES_ID: &str = "com.example.portcullis.web";
/// Apple: the team id, the client secret's `iss`.
pub const APPLE_TEAM_ID: &str = "DEMOTEAM01";
/// Apple: the key id, the client secret's `kid` header.
pub const APPLE_KEY_ID: &str = "DEMOKEY001";

/// Apple's ID token issuer and the `aud` of its client secret: "aud: Use
/// `https://appleid.apple.com`" (developer.apple.com/documentation/accountorganizationaldatasharing/creating-a-client-secret).
pub const APPLE_ISSUER: &str = "https://appleid.apple.com";

/// The longest an Apple client secret may live: "exp … not greater than
/// 15777000 (6 months in seconds) from the Current UNIX Time on the server"
/// (the same page).
const APPLE_CLIENT_SECRET_MAX_TTL_SECS: u64 = 15_777_000;

/// The Graph permissions that let `/me/memberOf` list groups: the
/// "Permissions" table of learn.microsoft.com/graph/api/user-list-memberof
/// (GroupMember.Read.All least privileged; Group.Read.All and
/// Directory.Read.All higher). User.Read alone is refused.
const ENTRA_GROUP_SCOPES: [&str; 3] = [
    "GroupMember.Read.All",
    "Group.Read.All",
    "Directory.Read.All",
];

/// How long a code can be redeemed.
const CODE_TTL: Duration = Duration::from_secs(60);
/// Largest request body read.
const MAX_BODY_BYTES: usize = 64 * 1024;
/// Entra `memberOf` page size, small so that paging is exercised.
const MEMBER_OF_PAGE: usize = 2;

type Resp = Response<Full<Bytes>>;

/// A vendor with a preset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[allow(missing_docs)]
pub enum Vendor {
    Github,
    Google,
    Gitlab,
    Discord,
    EntraId,
    Okta,
    Twitter,
    Facebook,
    Apple,
    Keycloak,
    Twitch,
    Reddit,
    Patreon,
    Mailcow,
}

impl Vendor {
    /// Every vendor.
    pub const ALL: [Vendor; 14] = [
        Vendor::Github,
        Vendor::Google,
        Vendor::Gitlab,
        Vendor::Discord,
        Vendor::EntraId,
        Vendor::Okta,
        Vendor::Twitter,
        Vendor::Facebook,
        Vendor::Apple,
        Vendor::Keycloak,
        Vendor::Twitch,
        Vendor::Reddit,
        Vendor::Patreon,
        Vendor::Mailcow,
    ];

    /// Its path prefix on the fake server, the name portcullis's `type`
    /// key gives it.
    pub fn slug(self) -> &'static str {
        match self {
            Vendor::Github => "github",
            Vendor::Google => "google",
            Vendor::Gitlab => "gitlab",
            Vendor::Discord => "discord",
            Vendor::EntraId => "entraid",
            Vendor::Okta => "okta",
            Vendor::Twitter => "twitter",
            Vendor::Facebook => "facebook",
            Vendor::Apple => "apple",
            Vendor::Keycloak => "keycloak",
            Vendor::Twitch => "twitch",
            Vendor::Reddit => "reddit",
            Vendor::Patreon => "patreon",
            Vendor::Mailcow => "mailcow",
        }
    }

    fn from_slug(slug: &str) -> Option<Vendor> {
        Vendor::ALL.into_iter().find(|v| v.slug() == slug)
    }

    /// Whether the vendor issues OpenID Connect ID tokens for the `openid`
    /// scope (each vendor's sign-in documentation: Google "OpenID Connect",
    /// GitLab "OpenID Connect provider", Entra ID "OpenID Connect on the
    /// Microsoft identity platform", Okta, Apple "Sign in with Apple REST
    /// API", Keycloak, Twitch "OIDC authorization code grant flow"). The
    /// others are plain OAuth 2.0 with a profile API.
    pub fn is_oidc(self) -> bool {
        matches!(
            self,
            Vendor::Google
                | Vendor::Gitlab
                | Vendor::EntraId
                | Vendor::Okta
                | Vendor::Apple
                | Vendor::Keycloak
                | Vendor::Twitch
        )
    }

    /// How the vendor's token endpoint takes the client's credentials, as
    /// its documentation says.
    pub fn client_auth(self) -> ClientAuth {
        match self {
            // docs.github.com/en/apps/oauth-apps/building-oauth-apps/authorizing-oauth-apps
            // ("2. Users are redirected back to your site by GitHub"): client_id
            // and client_secret are POST parameters; Basic is not documented.
            Vendor::Github => ClientAuth::PostOnly,
            // developers.facebook.com/docs/facebook-login/guides/advanced/manual-flow
            // ("Exchanging Code for an Access Token"): client_id and client_secret
            // are request parameters.
            Vendor::Facebook => ClientAuth::PostOnly,
            // developer.apple.com/documentation/sign_in_with_apple/generate_and_validate_tokens:
            // client_id and client_secret (the ES256 JWT) are form fields.
            Vendor::Apple => ClientAuth::PostOnly,
            // dev.twitch.tv/docs/authentication/getting-tokens-oidc/#oidc-authorization-code-grant-flow:
            // client_id and client_secret in the body; its discovery document
            // lists only client_secret_post.
            Vendor::Twitch => ClientAuth::PostOnly,
            // docs.patreon.com/#step-4-validating-receipt-of-the-oauth-token:
            // client_id and client_secret are form parameters.
            Vendor::Patreon => ClientAuth::PostOnly,
            // github.com/reddit-archive/reddit/wiki/OAuth2 ("Retrieving the access
            // token"): "You must supply your OAuth2 client's credentials via HTTP
            // Basic Auth".
            Vendor::Reddit => ClientAuth::BasicOnly,
            // developer.x.com/en/docs/authentication/oauth-2-0/user-access-token:
            // "If you are working with confidential clients, you will need to use
            // a basic authentication scheme".
            Vendor::Twitter => ClientAuth::BasicOnly,
            // Okta: a new web app integration's "Client authentication" is
            // "Client secret" sent as client_secret_basic (developer.okta.com/docs/
            // reference/api/oidc/#client-authentication-methods; the app's
            // token_endpoint_auth_method defaults to client_secret_basic).
            Vendor::Okta => ClientAuth::BasicOnly,
            // Documented both ways: Discord (discord.com/developers/docs/topics/oauth2,
            // "Authorization Code Grant": the example sends Basic, the text allows
            // the body); Google (its discovery document lists client_secret_post and
            // client_secret_basic); Entra ID (learn.microsoft.com/entra/identity-platform/
            // v2-oauth2-auth-code-flow: client_secret in the body, or Basic per RFC
            // 6749); GitLab (Doorkeeper: docs.gitlab.com/api/oauth2 sends them in the
            // body, Basic is accepted); Keycloak (the client-secret authenticator
            // takes either); mailcow (its OAuth server accepts either).
            Vendor::Discord
            | Vendor::Google
            | Vendor::EntraId
            | Vendor::Gitlab
            | Vendor::Keycloak
            | Vendor::Mailcow => ClientAuth::Either,
        }
    }

    fn client_id(self) -> &'static str {
        match self {
            Vendor::Apple => APPLE_SERVICES_ID,
            _ => CLIENT_ID,
        }
    }

    /// Paths of the vendor's own endpoints under its prefix. Mailcow keeps
    /// its real `/oauth/...` layout so its preset's `{base_url}` templates
    /// work unchanged.
    fn path(self, endpoint: Endpoint) -> &'static str {
        match (self, endpoint) {
            (Vendor::Mailcow, Endpoint::Authorize) => "/oauth/authorize",
            (Vendor::Mailcow, Endpoint::Token) => "/oauth/token",
            (Vendor::Mailcow, Endpoint::Profile) => "/oauth/profile",
            (_, Endpoint::Discovery) => "/.well-known/openid-configuration",
            (_, Endpoint::Authorize) => "/authorize",
            (_, Endpoint::Token) => "/token",
            (_, Endpoint::Jwks) => "/jwks",
            (_, Endpoint::Userinfo) => "/userinfo",
            (Vendor::Github, Endpoint::Emails) => "/user/emails",
            (Vendor::Github, Endpoint::Orgs) => "/user/orgs",
            (Vendor::Github, Endpoint::Teams) => "/user/teams",
            (Vendor::EntraId, Endpoint::MemberOf) => "/v1.0/me/memberOf",
            (Vendor::Github, _) => "/user",
            (Vendor::Discord, _) => "/users/@me",
            (Vendor::EntraId, _) => "/v1.0/me",
            (Vendor::Twitter, _) => "/2/users/me",
            (Vendor::Facebook, _) => "/me",
            (Vendor::Reddit, _) => "/api/v1/me",
            (Vendor::Patreon, _) => "/api/oauth2/v2/identity",
            // OIDC vendors without a separate profile API: userinfo.
            (
                _,
                Endpoint::Profile
                | Endpoint::Emails
                | Endpoint::MemberOf
                | Endpoint::Orgs
                | Endpoint::Teams,
            ) => "/userinfo",
        }
    }

    fn endpoints(self) -> Vec<Endpoint> {
        let mut list = vec![Endpoint::Authorize, Endpoint::Token];
        if self.is_oidc() {
            list.push(Endpoint::Jwks);
            if self != Vendor::Apple {
                list.push(Endpoint::Discovery);
                list.push(Endpoint::Userinfo);
            }
        }
        match self {
            Vendor::Github => list.extend([
                Endpoint::Profile,
                Endpoint::Emails,
                Endpoint::Orgs,
                Endpoint::Teams,
            ]),
            Vendor::EntraId => list.extend([Endpoint::Profile, Endpoint::MemberOf]),
            Vendor::Discord
            | Vendor::Twitter
            | Vendor::Facebook
            | Vendor::Reddit
            | Vendor::Patreon
            | Vendor::Mailcow => list.push(Endpoint::Profile),
            _ => {}
        }
        list
    }
}

/// How a vendor's token endpoint takes the client id and secret.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// HTTP Basic only (`client_secret_basic`); a secret in the body is refused.
    BasicOnly,
    /// The form body only (`client_secret_post`); HTTP Basic is refused.
    PostOnly,
    /// Either, but not both at once (RFC 6749 §2.3: one method per request).
    Either,
}

/// An endpoint of a vendor fake, for the call counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Endpoint {
    /// OIDC discovery document.
    Discovery,
    /// Authorization (auto-approving).
    Authorize,
    /// Token.
    Token,
    /// JWKS of the ID token key.
    Jwks,
    /// OIDC userinfo.
    Userinfo,
    /// The vendor's own profile API (GitHub `/user`, Graph `/me`, …).
    Profile,
    /// GitHub `/user/emails`.
    Emails,
    /// Entra `/me/memberOf`.
    MemberOf,
    /// GitHub `/user/orgs`.
    Orgs,
    /// GitHub `/user/teams`.
    Teams,
}

/// What a sign-in through a vendor's preset must yield with the demo data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    /// The identifier.
    pub identifier: &'static str,
    /// The username, `None` where the vendor has none (it falls back to
    /// the identifier).
    pub username: Option<&'static str>,
    /// The email, lowercased.
    pub email: Option<&'static str>,
    /// Whether the email counts as verified (the vendor's flag, or, for
    /// mailcow, whose profile has no flag, the mailbox address itself).
    pub email_verified: bool,
    /// The display name.
    pub name: Option<&'static str>,
    /// The groups (Entra: with a group scope requested).
    pub groups: &'static [&'static str],
}

/// The table tests assert against.
pub fn expected(vendor: Vendor) -> Expected {
    let none = Expected {
        identifier: "",
        username: None,
        email: None,
        email_verified: false,
        name: None,
        groups: &[],
    };
    match vendor {
        Vendor::Github => Expected {
            identifier: "583231",
            username: Some("octocat"),
            email: Some("octocat@github.example"),
            email_verified: true,
            name: Some("The Octocat"),
            groups: &[
                "octo-labs",
                "octo-org",
                "octo-org/justice-league",
                "octo-org/platform",
                "octo-org/readers",
            ],
        },
        Vendor::Google => Expected {
            identifier: "108234567890123456789",
            username: Some("ada@gmail.example"),
            email: Some("ada@gmail.example"),
            email_verified: true,
            name: Some("Ada Lovelace"),
            ..none
        },
        Vendor::Gitlab => Expected {
            identifier: "4242",
            username: Some("ada"),
            email: Some("ada@gitlab.example"),
            email_verified: true,
            name: Some("Ada Lovelace"),
            groups: &["analytical-engines", "analytical-engines/notes"],
        },
        Vendor::Discord => Expected {
            identifier: "80351110224678912",
            username: Some("ada.l"),
            email: Some("ada@discord.example"),
            email_verified: true,
            name: Some("Ada"),
            ..none
        },
        Vendor::EntraId => Expected {
            identifier: "48d31887-5fad-4d73-a9f5-3c356e68a038",
            username: Some("ada@contoso.onmicrosoft.com"),
            email: Some("ada.personal@example.com"),
            email_verified: false,
            name: Some("Ada Lovelace"),
            groups: &["Engineering", "Staff", "All Company"],
        },
        Vendor::Okta => Expected {
            identifier: "00u1a2b3c4D5e6F7g8h9",
            username: Some("ada@okta.example"),
            email: Some("ada@okta.example"),
            email_verified: true,
            name: Some("Ada Lovelace"),
            groups: &["Everyone", "Engineering"],
        },
        Vendor::Twitter => Expected {
            identifier: "2244994945",
            username: Some("ada_x"),
            name: Some("Ada Lovelace"),
            ..none
        },
        Vendor::Facebook => Expected {
            identifier: "10224242424242424",
            email: Some("ada@facebook.example"),
            name: Some("Ada Lovelace"),
            ..none
        },
        Vendor::Apple => Expected {
            identifier: "001234.0a1b2c3d4e5f60718293a4b5c6d7e8f9.1234",
            email: Some("x7k2q9@privaterelay.appleid.com"),
            email_verified: true,
            name: Some("Ada Lovelace"),
            ..none
        },
        Vendor::Keycloak => Expected {
            identifier: "f3b1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d",
            username: Some("ada"),
            email: Some("ada@keycloak.example"),
            email_verified: true,
            name: Some("Ada Lovelace"),
            groups: &["engineering"],
        },
        Vendor::Twitch => Expected {
            identifier: "141981764",
            username: Some("AdaPlays"),
            email: Some("ada@twitch.example"),
            email_verified: true,
            name: Some("AdaPlays"),
            ..none
        },
        Vendor::Reddit => Expected {
            identifier: "1w72",
            username: Some("ada_reddit"),
            name: Some("ada_reddit"),
            ..none
        },
        Vendor::Patreon => Expected {
            identifier: "12345678",
            username: Some("ada"),
            email: Some("ada@patreon.example"),
            email_verified: true,
            name: Some("Ada Lovelace"),
            ..none
        },
        Vendor::Mailcow => Expected {
            identifier: "ada@mail.example",
            username: Some("ada@mail.example"),
            email: Some("ada@mail.example"),
            // No flag is sent; the address is the mailbox itself, which the
            // mail server vouches for.
            email_verified: true,
            name: Some("Ada Lovelace"),
            ..none
        },
    }
}

/// The URLs of one vendor fake, for the overriding config keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VendorUrls {
    /// `base_url` (Okta, Keycloak, GitLab, Mailcow use it in templates).
    pub base_url: String,
    /// Discovery (OIDC vendors but Apple).
    pub oidc_well_known_url: Option<String>,
    /// Authorization endpoint.
    pub authorization_url: String,
    /// Token endpoint.
    pub access_token_url: String,
    /// Profile / userinfo.
    pub profile_url: String,
    /// JWKS (OIDC vendors).
    pub oidc_jwks_url: Option<String>,
    /// Issuer of its ID tokens (OIDC vendors).
    pub issuer: Option<String>,
}

// ---------------------------------------------------------------------------
// The running server
// ---------------------------------------------------------------------------

/// The running fakes. Dropping it (or [`VendorFakes::shutdown`]) stops them.
pub struct VendorFakes {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

impl fmt::Debug for VendorFakes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VendorFakes")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// Serves every vendor fake on `listener` (bound by the caller, e.g. to
/// 127.0.0.1:0). Generates the ID token key (RSA-2048) and Apple's team key
/// (P-256) first.
pub async fn start(listener: TcpListener) -> VendorFakes {
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(error) => {
            tracing::error!(%error, "vendor fakes: listener has no local address");
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let keys = tokio::task::spawn_blocking(Keys::generate)
        .await
        .ok()
        .flatten();
    if keys.is_none() {
        // Never a panic: token and JWKS requests answer 500 instead.
        tracing::error!("vendor fakes: key generation failed");
    }
    let shared = Arc::new(Shared {
        origin: format!("http://{addr}"),
        keys,
        state: Mutex::new(State::default()),
    });
    let handler_state = Arc::clone(&shared);
    let stop =
        crate::server::spawn_server(listener, move |req| handle(Arc::clone(&handler_state), req));
    VendorFakes { addr, shared, stop }
}

impl VendorFakes {
    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT/<vendor>`: the vendor's prefix, used as its
    /// `base_url` and (OIDC) issuer.
    pub fn base_url(&self, vendor: Vendor) -> String {
        format!("{}/{}", self.shared.origin, vendor.slug())
    }

    /// Every URL a config needs to point the vendor's preset here.
    pub fn urls(&self, vendor: Vendor) -> VendorUrls {
        let base = self.base_url(vendor);
        let at = |e: Endpoint| format!("{base}{}", vendor.path(e));
        let oidc = vendor.is_oidc();
        let profile = match vendor {
            // The preset's own query (the `$select`) is part of the URL.
            Vendor::EntraId => format!(
                "{}?$select=id,displayName,userPrincipalName,mail,otherMails",
                at(Endpoint::Profile)
            ),
            Vendor::Facebook => format!("{}?fields=id,name,email", at(Endpoint::Profile)),
            Vendor::Patreon => format!(
                "{}?fields%5Buser%5D=email,full_name,is_email_verified,vanity",
                at(Endpoint::Profile)
            ),
            _ => at(Endpoint::Profile),
        };
        VendorUrls {
            oidc_well_known_url: (oidc && vendor != Vendor::Apple).then(|| at(Endpoint::Discovery)),
            authorization_url: at(Endpoint::Authorize),
            access_token_url: at(Endpoint::Token),
            profile_url: profile,
            oidc_jwks_url: oidc.then(|| at(Endpoint::Jwks)),
            issuer: oidc.then(|| issuer(&base, vendor)),
            base_url: base,
        }
    }

    /// Apple's `.p8` key (PKCS#8 PEM) the source signs its client secret
    /// with; the fake holds the public half.
    pub fn apple_p8_pem(&self) -> Option<String> {
        self.shared.keys.as_ref().map(|k| k.apple_pem.clone())
    }

    /// Requests `endpoint` of `vendor` has received.
    pub fn calls(&self, vendor: Vendor, endpoint: Endpoint) -> usize {
        self.shared
            .lock()
            .calls
            .get(&(vendor, endpoint))
            .copied()
            .unwrap_or(0)
    }

    /// Sets every call counter back to zero.
    pub fn reset_calls(&self) {
        self.shared.lock().calls.clear();
    }

    /// Query parameters of the vendor's last authorization request.
    pub fn last_authorize_query(&self, vendor: Vendor) -> Option<BTreeMap<String, String>> {
        self.shared.lock().last_authorize.get(&vendor).cloned()
    }

    /// Forgets that Apple already sent the `user` field, so the next Apple
    /// callback is a "first sign-in" again.
    pub fn reset_apple_first_sign_in(&self) {
        self.shared.lock().apple_user_sent = false;
    }

    /// Stops accepting and closes every open connection.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for VendorFakes {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// The issuer a vendor's ID tokens carry. Apple's is its real one: the
/// preset's issuer needs no override, only the URLs do.
fn issuer(base: &str, vendor: Vendor) -> String {
    match vendor {
        Vendor::Apple => APPLE_ISSUER.to_string(),
        _ => base.to_string(),
    }
}

struct Shared {
    origin: String,
    keys: Option<Keys>,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent between statements; a panicked test
        // must not take the fakes down with it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[derive(Default)]
struct State {
    calls: HashMap<(Vendor, Endpoint), usize>,
    codes: HashMap<String, Grant>,
    tokens: HashMap<String, (Vendor, String)>,
    last_authorize: HashMap<Vendor, BTreeMap<String, String>>,
    apple_user_sent: bool,
}

struct Grant {
    vendor: Vendor,
    redirect_uri: String,
    scope: String,
    challenge: Option<(String, String)>,
    nonce: Option<String>,
    /// Twitch: the `claims` request parameter, parsed.
    claims_request: Value,
    expires: Instant,
}

struct Keys {
    rsa: RsaKeyPair,
    kid: String,
    n: Vec<u8>,
    e: Vec<u8>,
    apple_pem: String,
    apple_x: String,
    apple_y: String,
}

impl Keys {
    fn generate() -> Option<Self> {
        let rsa = RsaKeyPair::generate(KeySize::Rsa2048).ok()?;
        let public = rsa.public_key();
        let n = public.modulus().big_endian_without_leading_zero().to_vec();
        let e = public.exponent().big_endian_without_leading_zero().to_vec();
        let apple = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_FIXED_SIGNING).ok()?;
        let pkcs8 = apple.to_pkcs8v1().ok()?;
        let point = apple.public_key().as_ref();
        let (x, y) = point.strip_prefix(&[0x04])?.split_at_checked(32)?;
        let b64 = STANDARD.encode(pkcs8.as_ref());
        let lines: Vec<String> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect();
        Some(Keys {
            rsa,
            kid: format!("vendor-{}", random_token(6)),
            n,
            e,
            apple_pem: format!(
                "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
                lines.join("\n")
            ),
            apple_x: URL_SAFE_NO_PAD.encode(x),
            apple_y: URL_SAFE_NO_PAD.encode(y),
        })
    }

    fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "RSA", "use": "sig", "alg": "RS256", "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(&self.n), "e": URL_SAFE_NO_PAD.encode(&self.e),
        }]})
    }

    /// An RS256 JWS, signed directly with aws-lc (the RSA key stays PKCS#8).
    fn sign(&self, claims: &Value) -> Option<String> {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": self.kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let mut signature = vec![0u8; self.rsa.public_modulus_len()];
        self.rsa
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut signature,
            )
            .ok()?;
        Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature)))
    }
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Resp {
    let path = req.uri().path().to_string();
    let Some((vendor, rest)) = path
        .strip_prefix('/')
        .and_then(|p| p.split_once('/'))
        .and_then(|(slug, rest)| Some((Vendor::from_slug(slug)?, format!("/{rest}"))))
    else {
        return plain(StatusCode::NOT_FOUND, "no such vendor\n");
    };
    let Some(endpoint) = vendor
        .endpoints()
        .into_iter()
        .find(|e| vendor.path(*e) == rest)
    else {
        return plain(StatusCode::NOT_FOUND, "not found\n");
    };
    *shared.lock().calls.entry((vendor, endpoint)).or_insert(0) += 1;
    let query = req.uri().query().unwrap_or("").to_string();
    match (endpoint, req.method().clone()) {
        (Endpoint::Discovery, Method::GET) => discovery(&shared, vendor),
        (Endpoint::Jwks, Method::GET) => match &shared.keys {
            Some(keys) => json_response(StatusCode::OK, &keys.jwks()),
            None => plain(StatusCode::INTERNAL_SERVER_ERROR, "no keys\n"),
        },
        (Endpoint::Authorize, Method::GET) => authorize(&shared, vendor, &query),
        (Endpoint::Token, Method::POST) => token(&shared, vendor, req).await,
        (
            Endpoint::Userinfo
            | Endpoint::Profile
            | Endpoint::Emails
            | Endpoint::MemberOf
            | Endpoint::Orgs
            | Endpoint::Teams,
            _,
        ) => resource(&shared, vendor, endpoint, req.headers(), &query),
        _ => plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n"),
    }
}

fn discovery(shared: &Shared, vendor: Vendor) -> Resp {
    let base = format!("{}/{}", shared.origin, vendor.slug());
    let at = |e: Endpoint| format!("{base}{}", vendor.path(e));
    let mut doc = json!({
        "issuer": issuer(&base, vendor),
        "authorization_endpoint": at(Endpoint::Authorize),
        "token_endpoint": at(Endpoint::Token),
        "userinfo_endpoint": at(Endpoint::Userinfo),
        "jwks_uri": at(Endpoint::Jwks),
        "response_types_supported": ["code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": ["RS256"],
        "code_challenge_methods_supported": ["S256", "plain"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
    });
    if vendor == Vendor::Twitch {
        // Twitch's document advertises the claims parameter it relies on
        // and only client_secret_post.
        set(&mut doc, "claims_parameter_supported", json!(true));
        set(
            &mut doc,
            "token_endpoint_auth_methods_supported",
            json!(["client_secret_post"]),
        );
        doc.as_object_mut()
            .map(|d| d.remove("code_challenge_methods_supported"));
    }
    json_response(StatusCode::OK, &doc)
}

fn authorize(shared: &Shared, vendor: Vendor, query: &str) -> Resp {
    let params: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    shared.lock().last_authorize.insert(vendor, params.clone());
    let get = |k: &str| params.get(k).map(String::as_str);
    if get("client_id") != Some(vendor.client_id()) {
        return plain(StatusCode::BAD_REQUEST, "unknown client_id\n");
    }
    let Some(redirect) = get("redirect_uri").and_then(|r| Url::parse(r).ok()) else {
        // Never redirect to an unchecked URI: a page, as vendors do.
        return plain(StatusCode::BAD_REQUEST, "redirect_uri missing or invalid\n");
    };
    let state = get("state");
    let refuse = |error: &str| redirect_with(&redirect, &[("error", error)], state);
    if get("response_type") != Some("code")
        && !(vendor == Vendor::Apple && get("response_type") == Some("code id_token"))
    {
        return refuse("unsupported_response_type");
    }
    let scope = get("scope").unwrap_or("").to_string();
    // X refuses an authorization request without PKCE.
    if vendor == Vendor::Twitter && get("code_challenge").is_none() {
        return refuse("invalid_request");
    }
    // Reddit requires `duration` on every request.
    if vendor == Vendor::Reddit && !matches!(get("duration"), Some("temporary" | "permanent")) {
        return refuse("invalid_request");
    }
    // Apple: any scope makes form_post mandatory.
    if vendor == Vendor::Apple && !scope.is_empty() && get("response_mode") != Some("form_post") {
        return plain(
            StatusCode::BAD_REQUEST,
            "invalid_request: response_mode must be form_post\n",
        );
    }
    let challenge = get("code_challenge").map(|c| {
        (
            c.to_string(),
            get("code_challenge_method").unwrap_or("plain").to_string(),
        )
    });
    let code = random_token(24);
    shared.lock().codes.insert(
        code.clone(),
        Grant {
            vendor,
            redirect_uri: redirect.to_string(),
            scope: scope.clone(),
            challenge,
            nonce: get("nonce").map(str::to_string),
            claims_request: get("claims")
                .and_then(|c| serde_json::from_str(c).ok())
                .unwrap_or(Value::Null),
            expires: Instant::now() + CODE_TTL,
        },
    );
    if vendor == Vendor::Apple {
        return apple_form_post(
            shared,
            &redirect,
            &code,
            state,
            &scope,
            get("response_type"),
            get("nonce"),
        );
    }
    redirect_with(&redirect, &[("code", &code)], state)
}

/// Apple answers the authorization with a page that POSTs `code`, `state`,
/// `id_token` (when `response_type` asked for it) and, on the first sign-in
/// only, `user` to the redirect_uri.
fn apple_form_post(
    shared: &Shared,
    redirect: &Url,
    code: &str,
    state: Option<&str>,
    scope: &str,
    response_type: Option<&str>,
    nonce: Option<&str>,
) -> Resp {
    let mut fields: Vec<(&str, String)> = vec![("code", code.to_string())];
    if let Some(state) = state {
        fields.push(("state", state.to_string()));
    }
    if response_type == Some("code id_token") {
        let claims = id_token_claims(
            shared,
            Vendor::Apple,
            &Grant {
                vendor: Vendor::Apple,
                redirect_uri: String::new(),
                scope: scope.to_string(),
                challenge: None,
                nonce: nonce.map(str::to_string),
                claims_request: Value::Null,
                expires: Instant::now(),
            },
            None,
        );
        if let Some(token) = shared.keys.as_ref().and_then(|k| k.sign(&claims)) {
            fields.push(("id_token", token));
        }
    }
    let first = {
        let mut state = shared.lock();
        !std::mem::replace(&mut state.apple_user_sent, true)
    };
    if first && scope.split(' ').any(|s| s == "name" || s == "email") {
        fields.push((
            "user",
            json!({"name": {"firstName": "Ada", "lastName": "Lovelace"},
                   "email": "x7k2q9@privaterelay.appleid.com"})
            .to_string(),
        ));
    }
    let inputs: String = fields
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{k}\" value=\"{}\">",
                html_escape::encode_double_quoted_attribute(v)
            )
        })
        .collect();
    let page = format!(
        "<!doctype html><html><body onload=\"document.forms[0].submit()\">\
         <form method=\"post\" action=\"{}\">{inputs}<noscript><button>Continue</button></noscript></form>\
         </body></html>",
        html_escape::encode_double_quoted_attribute(redirect.as_str())
    );
    respond(StatusCode::OK, "text/html; charset=utf-8", page)
}

/// The action and fields of an auto-submitting form page (Apple's
/// form_post), so a test can make the browser's POST itself.
pub fn parse_form_post(html: &str) -> Option<(String, Vec<(String, String)>)> {
    let attr = |tag: &str, name: &str| -> Option<String> {
        let start = tag.find(&format!("{name}=\""))? + name.len() + 2;
        let rest = tag.get(start..)?;
        let end = rest.find('"')?;
        Some(html_escape::decode_html_entities(rest.get(..end)?).into_owned())
    };
    let form_start = html.find("<form")?;
    let form_tag = html.get(form_start..)?.split('>').next()?;
    let action = attr(form_tag, "action")?;
    let fields = html
        .split("<input")
        .skip(1)
        .filter_map(|chunk| {
            let tag = chunk.split('>').next()?;
            Some((attr(tag, "name")?, attr(tag, "value")?))
        })
        .collect();
    Some((action, fields))
}

// ---------------------------------------------------------------------------
// Token
// ---------------------------------------------------------------------------

async fn token(shared: &Shared, vendor: Vendor, req: Request<Incoming>) -> Resp {
    let headers = req.headers().clone();
    let body = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(c) => c.to_bytes(),
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "body too large\n"),
    };
    let form: BTreeMap<String, String> = url::form_urlencoded::parse(&body).into_owned().collect();
    if let Err(why) = client_auth(shared, vendor, &headers, &form) {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", why);
    }
    if form.get("grant_type").map(String::as_str) != Some("authorization_code") {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "authorization_code only",
        );
    }
    let grant = form.get("code").and_then(|c| shared.lock().codes.remove(c));
    let invalid = |why| oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", why);
    let Some(grant) = grant.filter(|g| g.vendor == vendor) else {
        return invalid("unknown or used code");
    };
    if grant.expires <= Instant::now() {
        return invalid("code expired");
    }
    if form.get("redirect_uri") != Some(&grant.redirect_uri) {
        return invalid("redirect_uri differs from the authorization request");
    }
    match (&grant.challenge, form.get("code_verifier")) {
        (None, None) => {}
        (None, Some(_)) => return invalid("code_verifier without a code_challenge"),
        (Some(_), None) => return invalid("code_verifier missing"),
        (Some((challenge, method)), Some(verifier)) => {
            let derived = match method.as_str() {
                "S256" => URL_SAFE_NO_PAD.encode(digest(&SHA256, verifier.as_bytes())),
                _ => verifier.clone(),
            };
            if derived != *challenge {
                return invalid("code_verifier does not match");
            }
        }
    }
    let access_token = random_token(24);
    shared
        .lock()
        .tokens
        .insert(access_token.clone(), (vendor, grant.scope.clone()));
    let id_token = if vendor.is_oidc() && grant.scope.split(' ').any(|s| s == "openid") {
        let claims = id_token_claims(shared, vendor, &grant, Some(&access_token));
        match shared.keys.as_ref().and_then(|k| k.sign(&claims)) {
            Some(t) => Some(t),
            None => {
                return oauth_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "server_error",
                    "signing failed",
                )
            }
        }
    } else {
        None
    };
    let scope = grant.scope.as_str();
    let mut answer = match vendor {
        Vendor::Github => {
            let scope = scope.replace(' ', ",");
            let wants_json = headers
                .get(ACCEPT)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|a| a.contains("application/json"));
            if !wants_json {
                // GitHub's default answer is form-encoded.
                let body = url::form_urlencoded::Serializer::new(String::new())
                    .append_pair("access_token", &access_token)
                    .append_pair("scope", &scope)
                    .append_pair("token_type", "bearer")
                    .finish();
                return respond(
                    StatusCode::OK,
                    "application/x-www-form-urlencoded; charset=utf-8",
                    body,
                );
            }
            json!({"access_token": access_token, "scope": scope, "token_type": "bearer"})
        }
        Vendor::Facebook => {
            json!({"access_token": access_token, "token_type": "bearer", "expires_in": 5183944})
        }
        Vendor::Reddit => {
            json!({"access_token": access_token, "token_type": "bearer", "expires_in": 86400, "scope": scope})
        }
        Vendor::Twitter => {
            json!({"token_type": "bearer", "expires_in": 7200, "access_token": access_token, "scope": scope})
        }
        // Twitch returns `scope` as an array, unlike RFC 6749.
        Vendor::Twitch => json!({
            "access_token": access_token, "expires_in": 14124, "refresh_token": random_token(16),
            "scope": scope.split(' ').filter(|s| !s.is_empty()).collect::<Vec<_>>(), "token_type": "bearer",
        }),
        Vendor::Discord | Vendor::Patreon | Vendor::Mailcow => json!({
            "access_token": access_token, "token_type": "Bearer", "expires_in": 604800,
            "refresh_token": random_token(16), "scope": scope,
        }),
        Vendor::Apple => json!({
            "access_token": access_token, "token_type": "Bearer", "expires_in": 3600,
            "refresh_token": random_token(16),
        }),
        Vendor::Google | Vendor::Gitlab | Vendor::EntraId | Vendor::Okta | Vendor::Keycloak => {
            json!({
                "access_token": access_token, "token_type": "Bearer", "expires_in": 3599, "scope": scope,
            })
        }
    };
    if let (Some(t), Some(obj)) = (id_token, answer.as_object_mut()) {
        obj.insert("id_token".into(), json!(t));
    }
    json_response(StatusCode::OK, &answer)
}

/// Checks the client authentication the vendor documents ([`Vendor::client_auth`]).
fn client_auth(
    shared: &Shared,
    vendor: Vendor,
    headers: &HeaderMap,
    form: &BTreeMap<String, String>,
) -> Result<(), &'static str> {
    let basic = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| STANDARD.decode(b.trim()).ok())
        .and_then(|raw| String::from_utf8(raw).ok())
        .and_then(|raw| {
            let (id, secret) = raw.split_once(':')?;
            let unescape = |s: &str| {
                percent_encoding::percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .ok()
                    .map(|c| c.into_owned())
            };
            Some((unescape(id)?, unescape(secret)?))
        });
    let in_body = form.contains_key("client_secret");
    let (id, secret) = match (vendor.client_auth(), basic) {
        (ClientAuth::BasicOnly, _) if in_body => {
            return Err("this vendor takes the client secret in HTTP Basic only")
        }
        (ClientAuth::PostOnly, Some(_)) => {
            return Err("this vendor takes the client secret in the form body only")
        }
        (ClientAuth::Either, Some(_)) if in_body => {
            return Err("the client authenticated twice (Basic and body)")
        }
        (ClientAuth::BasicOnly, None) => return Err("HTTP Basic client authentication required"),
        (ClientAuth::BasicOnly | ClientAuth::Either, Some(pair)) => pair,
        (ClientAuth::PostOnly | ClientAuth::Either, None) => (
            form.get("client_id").cloned().ok_or("client_id missing")?,
            form.get("client_secret")
                .cloned()
                .ok_or("client_secret missing")?,
        ),
    };
    if id != vendor.client_id() {
        return Err("unknown client");
    }
    if vendor == Vendor::Apple {
        return apple_client_secret_ok(shared, &secret);
    }
    aws_lc_rs::constant_time::verify_slices_are_equal(secret.as_bytes(), CLIENT_SECRET.as_bytes())
        .map_err(|_| "wrong client secret")
}

/// Apple: the secret must be an ES256 JWT, `kid` = the key id, `iss` = the
/// team, `sub` = the Services ID, `aud` = Apple, unexpired, at most six
/// months long, signed by the team's key.
fn apple_client_secret_ok(shared: &Shared, jwt: &str) -> Result<(), &'static str> {
    let keys = shared.keys.as_ref().ok_or("no keys")?;
    let header = jsonwebtoken::decode_header(jwt).map_err(|_| "client_secret is not a JWT")?;
    if header.alg != Algorithm::ES256 {
        return Err("client_secret must be ES256");
    }
    if header.kid.as_deref() != Some(APPLE_KEY_ID) {
        return Err("client_secret kid is not the key id");
    }
    let key = DecodingKey::from_ec_components(&keys.apple_x, &keys.apple_y)
        .map_err(|_| "bad team key")?;
    let mut validation = Validation::new(Algorithm::ES256);
    validation.set_audience(&[APPLE_ISSUER]);
    validation.set_issuer(&[APPLE_TEAM_ID]);
    validation.sub = Some(APPLE_SERVICES_ID.to_string());
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
    let data = jsonwebtoken::decode::<Value>(jwt, &key, &validation)
        .map_err(|_| "client_secret does not verify")?;
    let iat = data.claims.get("iat").and_then(Value::as_u64).unwrap_or(0);
    let exp = data
        .claims
        .get("exp")
        .and_then(Value::as_u64)
        .unwrap_or(u64::MAX);
    if exp.saturating_sub(iat) > APPLE_CLIENT_SECRET_MAX_TTL_SECS {
        return Err("client_secret lives longer than six months");
    }
    Ok(())
}

fn id_token_claims(
    shared: &Shared,
    vendor: Vendor,
    grant: &Grant,
    access_token: Option<&str>,
) -> Value {
    let now = unix_now();
    let base = format!("{}/{}", shared.origin, vendor.slug());
    let mut c = Map::new();
    c.insert("iss".into(), json!(issuer(&base, vendor)));
    c.insert("aud".into(), json!(vendor.client_id()));
    c.insert("iat".into(), json!(now));
    c.insert("exp".into(), json!(now + 300));
    if let Some(nonce) = &grant.nonce {
        c.insert("nonce".into(), json!(nonce));
    }
    if let Some(token) = access_token {
        let hash = digest(&SHA256, token.as_bytes());
        if let Some(left) = hash.as_ref().get(..16) {
            c.insert("at_hash".into(), json!(URL_SAFE_NO_PAD.encode(left)));
        }
    }
    let scopes: Vec<&str> = grant.scope.split(' ').collect();
    let has = |s: &str| scopes.contains(&s);
    let person = person(vendor);
    match vendor {
        Vendor::Twitch => {
            c.insert(
                "sub".into(),
                person.get("sub").cloned().unwrap_or(Value::Null),
            );
            c.insert("azp".into(), json!(CLIENT_ID));
            // Only what the `claims` parameter asked for (and the email
            // only with user:read:email).
            for (claim, value) in requested(&grant.claims_request, "id_token", &person) {
                if !claim.starts_with("email") || has("user:read:email") {
                    c.insert(claim, value);
                }
            }
        }
        Vendor::EntraId => {
            c.insert(
                "sub".into(),
                json!("AAAAAAAAAAAAAAAAAAAAAIkzqFVrSaSaFHy782bbtaQ"),
            );
            c.insert("oid".into(), json!(expected(vendor).identifier));
            c.insert("tid".into(), json!("9188040d-6c67-4c5b-b112-36a304b66dad"));
            c.insert("ver".into(), json!("2.0"));
            c.insert("name".into(), json!("Ada Lovelace"));
            c.insert(
                "preferred_username".into(),
                json!("ada@contoso.onmicrosoft.com"),
            );
        }
        Vendor::Apple => {
            c.insert("sub".into(), json!(expected(vendor).identifier));
            c.insert("auth_time".into(), json!(now));
            c.insert("nonce_supported".into(), json!(true));
            if has("email") {
                c.insert("email".into(), json!("x7k2q9@privaterelay.appleid.com"));
                // Apple sends these flags as strings.
                c.insert("email_verified".into(), json!("true"));
                c.insert("is_private_email".into(), json!("true"));
            }
            c.insert("real_user_status".into(), json!(2));
        }
        _ => {
            if let Some(p) = person.as_object() {
                for (k, v) in p {
                    let is_email = k.starts_with("email");
                    if !is_email || has("email") {
                        c.insert(k.clone(), v.clone());
                    }
                }
            }
            // GitLab keeps the username and full group list to userinfo
            // and puts only direct groups in the ID token.
            if vendor == Vendor::Gitlab {
                for k in ["nickname", "preferred_username", "groups"] {
                    c.remove(k);
                }
                c.insert("groups_direct".into(), json!(["analytical-engines"]));
            }
        }
    }
    Value::Object(c)
}

/// The claims of `part` ("id_token" / "userinfo") a Twitch `claims`
/// request names, with the person's values.
fn requested(claims_request: &Value, part: &str, person: &Value) -> Vec<(String, Value)> {
    claims_request
        .get(part)
        .and_then(Value::as_object)
        .map(|asked| {
            asked
                .keys()
                .filter_map(|k| Some((k.clone(), person.get(k)?.clone())))
                .collect()
        })
        .unwrap_or_default()
}

/// The OIDC vendors' people, as their userinfo describes them.
fn person(vendor: Vendor) -> Value {
    match vendor {
        Vendor::Google => json!({
            "sub": "108234567890123456789", "name": "Ada Lovelace", "given_name": "Ada",
            "family_name": "Lovelace", "picture": "https://lh3.googleusercontent.example/a/demo",
            "email": "ada@gmail.example", "email_verified": true, "locale": "en",
        }),
        Vendor::Gitlab => json!({
            "sub": "4242", "sub_legacy": "2ecd1b0e5d2b5c3d", "name": "Ada Lovelace", "nickname": "ada",
            "preferred_username": "ada", "email": "ada@gitlab.example", "email_verified": true,
            "website": "", "profile": "https://gitlab.example/ada", "picture": "https://gitlab.example/avatar.png",
            "groups": ["analytical-engines", "analytical-engines/notes"],
        }),
        Vendor::Okta => json!({
            "sub": "00u1a2b3c4D5e6F7g8h9", "name": "Ada Lovelace", "given_name": "Ada",
            "family_name": "Lovelace", "preferred_username": "ada@okta.example", "zoneinfo": "America/Los_Angeles",
            "email": "ada@okta.example", "email_verified": true, "groups": ["Everyone", "Engineering"],
        }),
        Vendor::Keycloak => json!({
            "sub": "f3b1c2d4-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "name": "Ada Lovelace", "given_name": "Ada",
            "family_name": "Lovelace", "preferred_username": "ada", "email": "ada@keycloak.example",
            "email_verified": true, "groups": ["engineering"],
        }),
        Vendor::Twitch => json!({
            "sub": "141981764", "preferred_username": "AdaPlays", "email": "ada@twitch.example",
            "email_verified": true, "picture": "https://static-cdn.jtvnw.example/demo.png",
        }),
        _ => json!({}),
    }
}

// ---------------------------------------------------------------------------
// Profiles
// ---------------------------------------------------------------------------

fn resource(
    shared: &Shared,
    vendor: Vendor,
    endpoint: Endpoint,
    headers: &HeaderMap,
    query: &str,
) -> Resp {
    let params: BTreeMap<String, String> = url::form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let token = if vendor == Vendor::Mailcow {
        // Mailcow's profile is read with the token in the query only.
        params.get("access_token").cloned()
    } else {
        headers
            .get(AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("token "))
            })
            .map(str::to_string)
    };
    let scope = token.and_then(|t| {
        shared
            .lock()
            .tokens
            .get(&t)
            .filter(|(v, _)| *v == vendor)
            .map(|(_, scope)| scope.clone())
    });
    let Some(scope) = scope else {
        return match vendor {
            Vendor::Mailcow => json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"error": "invalid_request", "error_description": "The access token was not found"}),
            ),
            Vendor::Github => json_response(
                StatusCode::UNAUTHORIZED,
                &json!({"message": "Requires authentication", "documentation_url": "https://docs.github.com/rest"}),
            ),
            _ => json_response(StatusCode::UNAUTHORIZED, &json!({"error": "invalid_token"})),
        };
    };
    let has = |s: &str| scope.split([' ', ',']).any(|x| x == s);
    let no_ua = headers.get(USER_AGENT).is_none();
    match (vendor, endpoint) {
        (Vendor::Github, _) if no_ua => plain(
            StatusCode::FORBIDDEN,
            "Request forbidden by administrative rules. Please make sure your request has a User-Agent header\n",
        ),
        (Vendor::Reddit, _) if no_ua => plain(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests\n"),
        (Vendor::Github, Endpoint::Emails) if !has("user:email") && !has("user") => {
            json_response(StatusCode::NOT_FOUND, &json!({"message": "Not Found"}))
        }
        (Vendor::Github, Endpoint::Orgs | Endpoint::Teams) => {
            github_list(shared, endpoint, &params, has("read:org") || has("admin:org"))
        }
        (Vendor::Github, Endpoint::Emails) => json_response(StatusCode::OK, &json!([
            {"email": "octocat@github.example", "verified": true, "primary": true, "visibility": "private"},
            {"email": "octocat@old.example", "verified": true, "primary": false, "visibility": null},
            {"email": "octocat@unverified.example", "verified": false, "primary": false, "visibility": null}
        ])),
        (Vendor::Github, _) => json_response(StatusCode::OK, &json!({
            "login": "octocat", "id": 583231, "node_id": "MDQ6VXNlcjU4MzIzMQ==",
            "avatar_url": "https://avatars.githubusercontent.example/u/583231", "type": "User",
            "site_admin": false, "name": "The Octocat", "company": "@github", "blog": "",
            "location": "San Francisco", "email": null, "hireable": null, "bio": null,
            "public_repos": 8, "followers": 20, "following": 9,
            "created_at": "2011-01-25T18:44:36Z", "updated_at": "2024-01-22T12:00:00Z",
        })),
        (Vendor::Discord, _) => {
            let mut user = json!({
                "id": "80351110224678912", "username": "ada.l", "discriminator": "0",
                "global_name": "Ada", "avatar": "8342729096ea3675442027381ff50dfe",
                "mfa_enabled": true, "locale": "en-US", "flags": 64, "premium_type": 0, "public_flags": 64,
            });
            if has("email") {
                set(&mut user, "email", json!("ada@discord.example"));
                set(&mut user, "verified", json!(true));
            }
            json_response(StatusCode::OK, &user)
        }
        (Vendor::EntraId, Endpoint::MemberOf) => entra_member_of(shared, &params, &scope),
        (Vendor::EntraId, _) => {
            let all = json!({
                "id": "48d31887-5fad-4d73-a9f5-3c356e68a038", "displayName": "Ada Lovelace",
                "givenName": "Ada", "surname": "Lovelace", "userPrincipalName": "ada@contoso.onmicrosoft.com",
                "mail": null, "otherMails": ["ada.personal@example.com", "ada.other@example.com"],
                "businessPhones": [], "jobTitle": null, "mobilePhone": null, "officeLocation": null,
                "preferredLanguage": "en-US",
            });
            // Graph returns the default properties unless $select names
            // others; `otherMails` is not a default one.
            let default = ["businessPhones", "displayName", "givenName", "jobTitle", "mail", "mobilePhone",
                "officeLocation", "preferredLanguage", "surname", "userPrincipalName", "id"];
            let selected: Vec<String> = params
                .get("$select")
                .map(|s| s.split(',').map(|f| f.trim().to_string()).collect())
                .unwrap_or_else(|| default.iter().map(|s| s.to_string()).collect());
            let mut out = Map::new();
            out.insert("@odata.context".into(), json!("https://graph.microsoft.com/v1.0/$metadata#users/$entity"));
            for field in selected {
                if let Some(v) = all.get(&field) {
                    out.insert(field, v.clone());
                }
            }
            json_response(StatusCode::OK, &Value::Object(out))
        }
        (Vendor::Twitter, _) => json_response(StatusCode::OK, &json!({
            "data": {"id": "2244994945", "name": "Ada Lovelace", "username": "ada_x"}
        })),
        (Vendor::Facebook, _) => {
            let fields = params.get("fields").map_or("id,name", String::as_str);
            let mut me = Map::new();
            for field in fields.split(',') {
                match field.trim() {
                    "id" => { me.insert("id".into(), json!("10224242424242424")); }
                    "name" => { me.insert("name".into(), json!("Ada Lovelace")); }
                    // Only with the email permission granted.
                    "email" if has("email") => { me.insert("email".into(), json!("ada@facebook.example")); }
                    _ => {}
                }
            }
            json_response(StatusCode::OK, &Value::Object(me))
        }
        (Vendor::Reddit, _) => json_response(StatusCode::OK, &json!({
            "id": "1w72", "name": "ada_reddit", "created_utc": 1_262_304_000.0, "link_karma": 42,
            "comment_karma": 1815, "has_verified_email": true, "is_gold": false, "is_mod": false,
            "icon_img": "https://styles.redditmedia.example/demo.png", "verified": true,
            "subreddit": {"display_name": "u_ada_reddit", "title": "", "public_description": ""},
        })),
        (Vendor::Patreon, _) => {
            let all = json!({
                "email": "ada@patreon.example", "full_name": "Ada Lovelace", "first_name": "Ada",
                "last_name": "Lovelace", "is_email_verified": true, "vanity": "ada",
                "url": "https://www.patreon.com/ada", "created": "2018-04-01T00:36:26.000+00:00",
            });
            // API v2 returns only the attributes named in fields[user];
            // the email only with the identity[email] scope.
            let mut attributes = Map::new();
            if let Some(fields) = params.get("fields[user]") {
                for f in fields.split(',').map(str::trim) {
                    if f == "email" && !has("identity[email]") {
                        continue;
                    }
                    if let Some(v) = all.get(f) {
                        attributes.insert(f.to_string(), v.clone());
                    }
                }
            }
            json_response(StatusCode::OK, &json!({
                "data": {"attributes": attributes, "id": "12345678", "type": "user"},
                "links": {"self": "https://www.patreon.com/api/oauth2/v2/user/12345678"},
            }))
        }
        (Vendor::Mailcow, _) if scope != "profile" => json_response(StatusCode::OK, &json!({"success": false})),
        (Vendor::Mailcow, _) => json_response(StatusCode::OK, &json!({
            "success": true, "username": "ada@mail.example", "identifier": "ada@mail.example",
            "email": "ada@mail.example", "full_name": "Ada Lovelace", "displayName": "Ada Lovelace",
            "created": "2024-01-01 10:00:00", "modified": "2024-02-01 10:00:00", "active": "1",
        })),
        // OIDC userinfo.
        (Vendor::Twitch, _) => {
            let mut info = Map::new();
            info.insert("sub".into(), json!("141981764"));
            info.insert("aud".into(), json!(CLIENT_ID));
            info.insert("iss".into(), json!(format!("{}/twitch", shared.origin)));
            let grant_claims = shared.lock().last_authorize.get(&Vendor::Twitch).and_then(|q| q.get("claims").cloned());
            let request = grant_claims.and_then(|c| serde_json::from_str(&c).ok()).unwrap_or(Value::Null);
            for (claim, value) in requested(&request, "userinfo", &person(Vendor::Twitch)) {
                if !claim.starts_with("email") || has("user:read:email") {
                    info.insert(claim, value);
                }
            }
            json_response(StatusCode::OK, &Value::Object(info))
        }
        (_, _) => {
            let mut info = person(vendor);
            if !has("email") {
                if let Some(o) = info.as_object_mut() {
                    o.remove("email");
                    o.remove("email_verified");
                }
            }
            json_response(StatusCode::OK, &info)
        }
    }
}

/// Graph `/me/memberOf`: needs a group permission in the token; pages of
/// [`MEMBER_OF_PAGE`] with `@odata.nextLink`, a directory role mixed in.
fn entra_member_of(shared: &Shared, params: &BTreeMap<String, String>, scope: &str) -> Resp {
    if !scope.split(' ').any(|s| ENTRA_GROUP_SCOPES.contains(&s)) {
        return json_response(
            StatusCode::FORBIDDEN,
            &json!({"error": {
                "code": "Authorization_RequestDenied",
                "message": "Insufficient privileges to complete the operation."
            }}),
        );
    }
    let all = [
        json!({"@odata.type": "#microsoft.graph.group", "id": "0c8a6e3e-0000-4000-8000-000000000001", "displayName": "Engineering"}),
        json!({"@odata.type": "#microsoft.graph.directoryRole", "id": "0c8a6e3e-0000-4000-8000-000000000002", "displayName": "Global Reader"}),
        json!({"@odata.type": "#microsoft.graph.group", "id": "0c8a6e3e-0000-4000-8000-000000000003", "displayName": "Staff"}),
        json!({"@odata.type": "#microsoft.graph.group", "id": "0c8a6e3e-0000-4000-8000-000000000004", "displayName": "All Company"}),
    ];
    let skip: usize = params
        .get("$skiptoken")
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let page: Vec<Value> = all
        .iter()
        .skip(skip)
        .take(MEMBER_OF_PAGE)
        .cloned()
        .collect();
    let mut body = json!({
        "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#directoryObjects",
        "value": page,
    });
    if skip + MEMBER_OF_PAGE < all.len() {
        set(
            &mut body,
            "@odata.nextLink",
            json!(format!(
                "{}/entraid/v1.0/me/memberOf?$select=displayName&$skiptoken={}",
                shared.origin,
                skip + MEMBER_OF_PAGE
            )),
        );
    }
    json_response(StatusCode::OK, &body)
}

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Sets a field of a JSON object (a no-op on anything else).
fn set(target: &mut Value, key: &str, value: Value) {
    if let Some(object) = target.as_object_mut() {
        object.insert(key.to_string(), value);
    }
}

fn plain(status: StatusCode, message: &'static str) -> Resp {
    respond(status, "text/plain; charset=utf-8", message)
}

/// GitHub `/user/orgs` and `/user/teams` as the REST docs describe them
/// (docs.github.com/en/rest/orgs/orgs#list-organizations-for-the-authenticated-user,
/// /en/rest/teams/teams#list-teams-for-the-authenticated-user): a JSON array,
/// `per_page` (default 30, at most 100) and `page` (from 1), and a `Link`
/// header with `next`/`last` while more pages follow (`prev`/`first` after
/// the first). Teams need `read:org`; organisations without it list only
/// public memberships (here: none).
fn github_list(
    shared: &Shared,
    endpoint: Endpoint,
    params: &BTreeMap<String, String>,
    read_org: bool,
) -> Resp {
    let all: Vec<Value> = match endpoint {
        Endpoint::Orgs if read_org => vec![
            json!({"login": "octo-org", "id": 1, "node_id": "MDEyOk9yZ2FuaXphdGlvbjE=",
                   "url": "https://api.github.com/orgs/octo-org", "description": "A great organization"}),
            json!({"login": "octo-labs", "id": 2, "node_id": "MDEyOk9yZ2FuaXphdGlvbjI=",
                   "url": "https://api.github.com/orgs/octo-labs", "description": null}),
        ],
        Endpoint::Orgs => Vec::new(),
        _ if !read_org => {
            return json_response(
                StatusCode::FORBIDDEN,
                &json!({"message": "Resource not accessible by integration",
                        "documentation_url": "https://docs.github.com/rest/teams/teams#list-teams-for-the-authenticated-user"}),
            )
        }
        _ => ["justice-league", "platform", "readers"]
            .iter()
            .enumerate()
            .map(|(i, slug)| {
                json!({"id": i + 1, "node_id": "MDQ6VGVhbTE=", "name": slug, "slug": slug,
                       "privacy": "closed", "permission": "admin",
                       "organization": {"login": "octo-org", "id": 1}})
            })
            .collect(),
    };
    let per_page: usize = params
        .get("per_page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(30)
        .clamp(1, 100);
    let page: usize = params
        .get("page")
        .and_then(|p| p.parse().ok())
        .unwrap_or(1)
        .max(1);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    let last = all.len().div_ceil(per_page).max(1);
    let path = if endpoint == Endpoint::Orgs {
        "orgs"
    } else {
        "teams"
    };
    let at = |p: usize| {
        format!(
            "<{}/github/user/{path}?per_page={per_page}&page={p}>",
            shared.origin
        )
    };
    let mut links = Vec::new();
    if page < last {
        links.push(format!("{}; rel=\"next\"", at(page + 1)));
        links.push(format!("{}; rel=\"last\"", at(last)));
    }
    if page > 1 {
        links.push(format!("{}; rel=\"prev\"", at(page - 1)));
        links.push(format!("{}; rel=\"first\"", at(1)));
    }
    let mut resp = json_response(StatusCode::OK, &Value::Array(items));
    if let Ok(v) = http::HeaderValue::from_str(&links.join(", ")) {
        if !links.is_empty() {
            resp.headers_mut().insert(http::header::LINK, v);
        }
    }
    resp
}

fn json_response(status: StatusCode, value: &Value) -> Resp {
    respond(status, "application/json", value.to_string())
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Resp {
    json_response(
        status,
        &json!({"error": error, "error_description": description}),
    )
}

fn redirect_with(target: &Url, pairs: &[(&str, &str)], state: Option<&str>) -> Resp {
    let mut url = target.clone();
    {
        let mut q = url.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
        if let Some(state) = state {
            q.append_pair("state", state);
        }
    }
    let Ok(value) = HeaderValue::from_str(url.as_str()) else {
        return plain(StatusCode::INTERNAL_SERVER_ERROR, "bad redirect target\n");
    };
    let mut response = respond(StatusCode::FOUND, "text/plain; charset=utf-8", "");
    response.headers_mut().insert(LOCATION, value);
    response
}

fn random_token(len: usize) -> String {
    let mut bytes = vec![0u8; len];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
