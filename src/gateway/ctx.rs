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
    /// The request host, lower-case, without port. `None` while
    /// `gateway::protected` runs: it takes the host as an argument.
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
    /// The connection's buffers, lent to this request for its host and path.
    pub spare: Buffers,
}

/// The buffers a connection lends its requests in turn: the request's host
/// and a path already canonical (most are) are written into them, so such a
/// request on a kept-alive connection allocates for neither. A path that
/// has to be rewritten, or a request refused before, makes its own.
#[derive(Debug, Default)]
pub struct Buffers {
    /// Holds the request's host.
    pub host: String,
    /// Holds the request's canonical path (the forwarded form).
    pub path: String,
    /// Holds the forwarding fields set for the upstream.
    pub forwarding: super::upstream::Forwarding,
}

impl Buffers {
    /// Capacity past which a buffer is not kept for the next request: one
    /// long path does not stay with its connection for the connection's life.
    const KEEP: usize = 1024;

    /// `self`, without a buffer grown past [`Buffers::KEEP`].
    fn trimmed(self) -> Buffers {
        let keep = |s: String| {
            if s.capacity() <= Self::KEEP {
                s
            } else {
                String::new()
            }
        };
        Buffers {
            host: keep(self.host),
            path: keep(self.path),
            // Never more than four fields: it does not grow past its first use.
            forwarding: self.forwarding,
        }
    }
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

    /// The id's twelve base64url bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// An id of the caller's choice, for tests of what shows it.
    #[cfg(test)]
    pub const fn of(bytes: [u8; 12]) -> Self {
        RequestId(bytes)
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
            spare: Buffers::default(),
        }
    }

    /// A fresh context writing its host and path into `spare`.
    pub fn with_buffers(spare: Buffers) -> Self {
        Ctx {
            spare,
            ..Ctx::new()
        }
    }

    /// The buffers back, for the connection's next request: the host's and
    /// the path's, emptied (their capacity kept unless past
    /// [`Buffers::KEEP`]), or the spare ones unused.
    pub fn take_buffers(&mut self) -> Buffers {
        let mut spare = std::mem::take(&mut self.spare);
        if let Some(host) = self.host.take() {
            spare.host = host;
        }
        if let Some(path) = self.path.take() {
            spare.path = path.into_buffer();
        }
        spare.host.clear();
        spare.path.clear();
        spare.forwarding.clear();
        spare.trimmed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_gives_its_host_and_path_buffers_back_empty_for_the_next_one() {
        let mut ctx = Ctx::with_buffers(Buffers::default());
        ctx.host = crate::routing::request_host_into(
            None,
            Some("wiki.example"),
            std::mem::take(&mut ctx.spare.host),
        )
        .unwrap();
        ctx.path = crate::config::path::canonicalize_into(
            "/some/page",
            std::mem::take(&mut ctx.spare.path),
        )
        .ok();
        let (host_at, path_at) = (
            ctx.host.as_ref().unwrap().as_ptr(),
            ctx.path.as_ref().unwrap().forward().as_ptr(),
        );
        let back = ctx.take_buffers();
        assert_eq!((back.host.as_str(), back.path.as_str()), ("", ""));
        assert_eq!((back.host.as_ptr(), back.path.as_ptr()), (host_at, path_at));

        // The next request writes into the same memory.
        let mut next = Ctx::with_buffers(back);
        next.host = crate::routing::request_host_into(
            None,
            Some("else.example"),
            std::mem::take(&mut next.spare.host),
        )
        .unwrap();
        assert_eq!(next.host.as_ref().unwrap().as_ptr(), host_at);
    }

    #[test]
    fn a_buffer_grown_by_one_long_path_is_not_kept_for_the_connection_s_life() {
        let mut ctx = Ctx::with_buffers(Buffers::default());
        let long = format!("/{}", "x".repeat(Buffers::KEEP * 2));
        ctx.path = crate::config::path::canonicalize_into(&long, String::new()).ok();
        ctx.host = Some("wiki.example".to_string());
        let back = ctx.take_buffers();
        assert_eq!(back.path.capacity(), 0);
        assert!(back.host.capacity() > 0);
    }

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
