//! Built-in values that are not config keys of their own, or are the
//! default of one: kept at the bottom layer so validation can fill them in
//! and the modules that use them import them from here, never upward.

/// Most verified tokens held per replica by default (`server.bearer_cache_entries`).
pub const BEARER_CACHE_ENTRIES: u64 = 100_000;

/// How long a sign-in may take (docs/security.md: 10 minutes): the login-state
/// cookie's lifetime and how long the replay guard remembers a state.
pub const LOGIN_STATE_SECS: u64 = 600;
