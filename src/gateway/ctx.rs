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
    pub path: Option<crate::path::CanonicalPath>,
    /// How the request ended (set by the phase that decided).
    pub outcome: Option<Outcome>,
    /// Status written by the gateway itself, when it answered.
    pub status: Option<u16>,
    /// Who the request is from, once authenticated.
    pub principal: Option<Arc<crate::principal::Principal>>,
    /// A `Set-Cookie` re-sealing the session with the current secret.
    pub reseal: Option<String>,
    /// A short random id shown on error pages and logged with the request,
    /// so an operator can find the detail a page does not show.
    pub request_id: String,
}

/// 72 random bits, base64url (12 characters); the clock if the system random source fails,
/// since an id only has to tell requests apart in the log.
fn new_request_id() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 9];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        for (b, n) in bytes.iter_mut().zip(nanos.to_le_bytes()) {
            *b = n;
        }
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
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
            request_id: new_request_id(),
        }
    }
}
