//! Per-request context: what the phases learn about a request, kept for the
//! next phase and for the one access log line.

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
    /// How the request ended (set by the phase that decided).
    pub outcome: Option<Outcome>,
    /// Status written by the gateway itself, when it answered.
    pub status: Option<u16>,
}

impl Ctx {
    /// A fresh context.
    pub fn new() -> Self {
        Ctx {
            started: Instant::now(),
            span: tracing::Span::none(),
            app: None,
            host: None,
            outcome: None,
            status: None,
        }
    }
}

impl Default for Ctx {
    fn default() -> Self {
        Self::new()
    }
}
