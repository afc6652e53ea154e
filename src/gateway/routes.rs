//! `/_auth/*`: the gateway's own endpoints, answered on every app host.
//! Sign-in itself arrives with the sources; until a request can carry an
//! identity, the identity endpoints answer as for an anonymous client.

use super::rescue::Rejection;

/// What an `/_auth/*` request resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthRoute {
    /// `/_auth/check`: forward auth.
    Check,
    /// `/_auth/userinfo`: the current identity as JSON.
    Userinfo,
    /// Anything else under `/_auth/`.
    Unknown,
}

/// Maps an `/_auth/...` path to its endpoint.
pub fn classify(path: &str) -> AuthRoute {
    match path {
        "/_auth/check" => AuthRoute::Check,
        "/_auth/userinfo" => AuthRoute::Userinfo,
        _ => AuthRoute::Unknown,
    }
}

/// Whether `path` is in the gateway's reserved space.
pub fn is_auth_path(path: &str) -> bool {
    path == "/_auth" || path.starts_with("/_auth/")
}

/// The answer to an anonymous request for `route`: forward auth and userinfo
/// both say 401 (RFC 6750 challenge); unknown URLs are 404.
pub fn anonymous_answer(route: &AuthRoute) -> Rejection {
    match route {
        AuthRoute::Check | AuthRoute::Userinfo => Rejection::Unauthenticated { rd: "/".into() },
        AuthRoute::Unknown => Rejection::UnknownAuthEndpoint,
    }
}
