//! Per-request context: what the phases learn about a request, kept for the
//! next phase and for the one access log line.

use std::sync::Arc;
use std::time::Instant;

pub use crate::metrics::Outcome;

/// State carried through one request's phases.
#[derive(Debug)]
pub struct Ctx {
    /// When the request arrived.
    pub started: Instant,
    /// The span every event of this request belongs to.
    pub span: tracing::Span,
    /// Index of the app the request was routed to.
    pub app: Option<usize>,
    /// The request host, lower-case, without port.
    pub host: Option<String>,
    /// The request path, canonical: decided on and forwarded (PRX-06).
    pub path: Option<crate::config::path::CanonicalPath>,
    /// How the request ended (set by the phase that decided).
    pub outcome: Option<Outcome>,
    /// Status written by the gateway itself, when it answered.
    pub status: Option<u16>,
    /// Who the request is from, once authenticated.
    pub principal: Option<Arc<crate::principal::Principal>>,
    /// A `Set-Cookie` re-sealing the session with the current secret.
    pub reseal: Option<String>,
    /// The session's source access token, for an app with `pass_access_token`.
    pub access_token: Option<String>,
    /// Why the request's session was ended early (its token could not be
    /// renewed), so the refusal can say it.
    pub session_ended: Option<crate::session::ended::SessionEnded>,
    /// The id pages, JSON errors and the access line show.
    pub request_id: RequestId,
    /// The client after `trusted_proxies`: the access line's and the audit lines' `client_ip`.
    pub client_ip: Option<std::net::IpAddr>,
    /// Why an `/_auth` endpoint refused, for its one audit line.
    pub refused: Option<crate::audit::Reason>,
}

/// A short random id shown on error pages and logged with the request, so an
/// operator can find the detail a page does not show: 72 random bits,
/// base64url (12 characters), kept inline (no allocation per request).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 12]);

impl RequestId {
    /// A fresh random id ([`crate::random::id_bytes`]: a per-thread pool of
    /// secure random bytes, one refill per 56 ids). Without random values it
    /// still correlates lines: a process-wide counter takes their place (an
    /// id is no secret, and a request must not fail for its log line).
    pub fn new() -> Self {
        use base64::Engine as _;
        static FALLBACK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let bytes = crate::random::id_bytes().unwrap_or_else(|_| {
            let n = FALLBACK.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let mut bytes = [0u8; crate::random::ID_BYTES];
            for (b, n) in bytes.iter_mut().zip(n.to_be_bytes()) {
                *b = n;
            }
            bytes
        });
        let mut id = [b'A'; 12];
        // 9 bytes are exactly 12 base64 characters: this never fails.
        let _ = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode_slice(bytes, &mut id);
        RequestId(id)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        // Always base64url ASCII.
        std::str::from_utf8(&self.0).unwrap_or("-")
    }
}

impl Default for RequestId {
    fn default() -> Self {
        RequestId::new()
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Ctx::new()
    }
}

impl Ctx {
    /// A fresh context.
    pub fn new() -> Self {
        Ctx {
            started: Instant::now(),
            span: tracing::Span::none(),
            app: None,
            host: None,
            path: None,
            outcome: None,
            status: None,
            principal: None,
            reseal: None,
            access_token: None,
            session_ended: None,
            request_id: RequestId::new(),
            client_ip: None,
            refused: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_twelve_base64url_characters_and_differ() {
        let ids: std::collections::HashSet<String> =
            (0..1000).map(|_| RequestId::new().to_string()).collect();
        assert_eq!(ids.len(), 1000);
        for id in &ids {
            assert_eq!(id.len(), 12, "{id}");
            assert!(
                id.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                "{id}"
            );
        }
    }
}
