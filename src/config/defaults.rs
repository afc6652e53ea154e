//! Built-in values that are not config keys of their own, or are the
//! default of one: kept at the bottom layer so validation can fill them in
//! and the modules that use them import them from here, never upward.

/// Most verified tokens held per replica by default (`server.bearer_cache_entries`).
pub const BEARER_CACHE_ENTRIES: u64 = 100_000;

/// How long a sign-in may take (docs/security.md: 10 minutes): the login-state
/// cookie's lifetime (the replay guard keeps a used state for
/// [`USED_ONCE_SECS`], longer).
pub const LOGIN_STATE_SECS: u64 = 600;

/// How old an ID token's (or a logout token's) `iat` may be when it arrives.
pub const ID_TOKEN_MAX_AGE_SECS: u64 = 15 * 60;

/// Clock leeway for a provider's `exp` and `iat` (docs/security.md: 60 s).
pub const CLOCK_LEEWAY_SECS: u64 = 60;

/// How long a used login state or logout-token `jti` is remembered: as long
/// as either could still be accepted, so a replay is refused for the whole
/// time. A logout token's `iat` may be up to the leeway ahead and then be
/// accepted until it is `ID_TOKEN_MAX_AGE_SECS` old.
pub const USED_ONCE_SECS: u64 = {
    let logout = ID_TOKEN_MAX_AGE_SECS + 2 * CLOCK_LEEWAY_SECS;
    if logout > LOGIN_STATE_SECS {
        logout
    } else {
        LOGIN_STATE_SECS
    }
};
