//! Sessions: what the sealed cookies carry, and how they are sealed (`cookie`).
//! `cookie` is pure (the time is a parameter); `service` reads and writes the store.

pub mod cookie;
pub mod ended;
pub mod handoff;
pub mod idle;
pub mod opened;
pub mod service;
pub mod tokens;

use serde::{Deserialize, Serialize};

// The login state belongs to the flow that checks it (`source`, a layer
// below); the cookie layer seals it under this name too.
pub use crate::source::login_state::{LoginState, Oauth1Pending};

/// The session cookie's sealed payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// Session id: the key of the session record in the store (random, 128 bits, base64url).
    pub sid: String,
    /// The local user's id.
    pub uid: String,
    /// The host the session was issued for; a session presented on another host is ignored
    /// (SES-18). `.{domain}` for a cookie shared under `session.cookie_domain`.
    pub host: String,
    /// Issued at, unix seconds.
    pub iat: u64,
    /// Absolute expiry, unix seconds.
    pub exp: u64,
}
