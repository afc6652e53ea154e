//! One request as the service holds it: its head, its body while unread,
//! the connection facts taken once per connection, and the answer once the
//! gateway has written one itself.

use std::net::SocketAddr;

use bytes::Bytes;
use http::request::Parts;
use http::Response;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::body::Body;

/// Where a request came from: the connection's peer, and whether the
/// config the request is served under trusts it.
#[derive(Debug, Clone, Copy)]
pub struct Peer {
    /// The client's address (an IPv4 peer of a dual-stack listener as IPv4).
    pub addr: SocketAddr,
    /// Whether that address is in `server.trusted_proxies`: read per
    /// request, so a reload changes it on open connections too.
    pub trusted: bool,
}

/// The request being served and, once the gateway answered it, its response.
pub struct Exchange {
    /// Method, target, version, headers and extensions, as hyper parsed them.
    pub head: Parts,
    /// The request body, until it is read or forwarded.
    pub body: Option<Incoming>,
    /// Where the request came from.
    pub peer: Peer,
    /// The gateway's own answer, once written.
    pub response: Option<Response<Body>>,
    /// Close the connection after the answer (bytes after it are never read).
    pub close: bool,
}

/// A request body that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Its framing is broken or the client left.
    #[error("reading the request body: {0}")]
    Broken(#[from] hyper::Error),
    /// It did not arrive in time (a gateway endpoint's body).
    #[error("the request body did not arrive in time")]
    TooSlow,
}

impl Exchange {
    /// A fresh exchange for a request from `peer`.
    pub fn new(request: http::Request<Incoming>, peer: Peer) -> Self {
        let (head, body) = request.into_parts();
        Exchange {
            head,
            body: Some(body),
            peer,
            response: None,
            close: false,
        }
    }

    /// The request head.
    pub fn req_header(&self) -> &Parts {
        &self.head
    }

    /// The next chunk of the request body; `None` at its end.
    pub async fn read_request_body(&mut self) -> Result<Option<Bytes>, BodyError> {
        let Some(body) = self.body.as_mut() else {
            return Ok(None);
        };
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame?.into_data() {
                return Ok(Some(data));
            }
        }
        Ok(None)
    }

    /// Whether the request still has body bytes nobody read.
    pub fn has_unread_body(&self) -> bool {
        use http_body::Body as _;
        self.body.as_ref().is_some_and(|b| !b.is_end_stream())
    }
}
