//! The header names the gateway owns or judges, in canonical lower-case `-`
//! spelling: one list for the data path (what it strips and replaces) and
//! for config validation (what `claim_headers` may not use), so the two can
//! never drift apart.

/// Identity headers the gateway sets; every client copy is removed, always.
pub const IDENTITY_HEADERS: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
    "x-forwarded-access-token",
];

/// Identity headers other gateways set (Authelia's, and Apache's `REMOTE_USER`
/// as a header): an app moved from behind one may still read them, so a
/// client's copy is removed on every route, in every spelling (PRX-03 names
/// `Remote_User`). An app may still have the gateway set one (`claim_headers`).
pub const FOREIGN_IDENTITY_HEADERS: &[&str] = &[
    "remote-user",
    "remote-email",
    "remote-groups",
    "remote-name",
];

/// Every header starting with one of these (any spelling) belongs to the gateway too.
pub const GATEWAY_PREFIXES: &[&str] = &["x-auth-request-", "x-portcullis-"];

/// Every other `X-Forwarded-*` name (`-Ssl`, `-Scheme`, `-Client-Cert`, …)
/// is a forwarding claim too: from a peer not in `trusted_proxies` it is
/// removed, whatever follows the prefix (DESIGN: only trusted proxies may set
/// `X-Forwarded-*`).
pub const FORWARDING_PREFIX: &str = "x-forwarded-";

/// Headers that say where a request came from and what it asked for: believed
/// only from a trusted proxy, removed or replaced otherwise (PRX-05).
pub const FORWARDING_HEADERS: &[&str] = &[
    "x-forwarded-for",
    "x-forwarded-proto",
    "x-forwarded-host",
    "x-forwarded-port",
    "x-forwarded-uri",
    "x-forwarded-prefix",
    "x-forwarded-method",
    "x-original-url",
    "x-original-uri",
    "x-real-ip",
    "forwarded",
];
