//! The one HTTP client for talking to identity providers: rustls, redirects
//! off (a provider cannot bounce us to another host), connect and total
//! timeouts, and a cap on every response body.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use url::Url;

/// Largest provider response read (discovery, token, userinfo).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Largest JWKS document read (SECURITY.md JWKS-07).
pub const MAX_JWKS_BYTES: usize = 512 * 1024;

/// Why a call to a provider failed. Every variant means: the provider is not
/// usable right now; show a retry page or keep the last good data.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Connection refused, reset, DNS or TLS.
    #[error("{url}: {reason}")]
    Transport {
        /// The URL called (never with secrets).
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The provider did not answer within the connect or total timeout:
    /// a sign-in shows 504, background fetches keep the last good data.
    #[error("{url}: no answer within the timeout")]
    Timeout {
        /// The URL called.
        url: String,
    },
    /// The body was larger than allowed.
    #[error("{url}: response larger than {limit} bytes")]
    TooLarge {
        /// The URL called.
        url: String,
        /// The cap.
        limit: usize,
    },
}

/// A response read whole.
#[derive(Debug)]
pub struct Fetched {
    /// HTTP status.
    pub status: u16,
    /// `Cache-Control` header, if any.
    pub cache_control: Option<String>,
    /// `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body, at most the cap.
    pub body: Bytes,
}

impl Fetched {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The shared outbound client.
#[derive(Clone, Debug)]
pub struct Http {
    client: reqwest::Client,
}

impl Http {
    /// A client with the given timeouts.
    pub fn new(connect_timeout: Duration, total_timeout: Duration) -> Result<Self, FetchError> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(connect_timeout)
            .timeout(total_timeout)
            .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FetchError::Transport {
                url: String::new(),
                reason: e.to_string(),
            })?;
        Ok(Http { client })
    }

    /// GET `url`, optionally with a bearer token, reading at most `limit` bytes.
    pub async fn get(
        &self,
        url: &Url,
        bearer: Option<&str>,
        limit: usize,
    ) -> Result<Fetched, FetchError> {
        self.get_with(url, bearer, &[], limit).await
    }

    /// [`Http::get`] with extra request headers (a vendor's API version, say).
    pub async fn get_with(
        &self,
        url: &Url,
        bearer: Option<&str>,
        headers: &[(&str, &str)],
        limit: usize,
    ) -> Result<Fetched, FetchError> {
        let mut req = self
            .client
            .get(url.clone())
            .header("accept", "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        if let Some(token) = bearer {
            req = req.bearer_auth(token);
        }
        self.send(url, req, limit).await
    }

    /// Sends a bodiless `method` request to `url` with this `Authorization`
    /// value (OAuth 1.0a signed calls), reading at most `limit` bytes.
    pub async fn signed(
        &self,
        method: reqwest::Method,
        url: &Url,
        authorization: &str,
        limit: usize,
    ) -> Result<Fetched, FetchError> {
        let req = self
            .client
            .request(method, url.clone())
            .header("authorization", authorization)
            .header(
                "accept",
                "application/json, application/x-www-form-urlencoded",
            );
        self.send(url, req, limit).await
    }

    /// POST a form to `url`, with HTTP Basic credentials when given.
    pub async fn post_form(
        &self,
        url: &Url,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<Fetched, FetchError> {
        let body = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        let mut req = self
            .client
            .post(url.clone())
            .header("content-type", "application/x-www-form-urlencoded")
            .header("accept", "application/json")
            .body(body);
        if let Some((user, pass)) = basic {
            // RFC 6749 §2.3.1: both parts are form-urlencoded before Basic encoding.
            let enc =
                |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
            req = req.basic_auth(enc(user), Some(enc(pass)));
        }
        self.send(url, req, limit).await
    }

    async fn send(
        &self,
        url: &Url,
        req: reqwest::RequestBuilder,
        limit: usize,
    ) -> Result<Fetched, FetchError> {
        let shown = redact(url);
        let transport = |e: reqwest::Error| {
            if e.is_timeout() {
                FetchError::Timeout { url: shown.clone() }
            } else {
                FetchError::Transport {
                    url: shown.clone(),
                    reason: e.without_url().to_string(),
                }
            }
        };
        let mut resp = req.send().await.map_err(transport)?;
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let status = resp.status().as_u16();
        let cache_control = header("cache-control");
        let content_type = header("content-type");
        if resp.content_length().is_some_and(|n| n > limit as u64) {
            return Err(FetchError::TooLarge { url: shown, limit });
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            if body.len() + chunk.len() > limit {
                return Err(FetchError::TooLarge { url: shown, limit });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Fetched {
            status,
            cache_control,
            content_type,
            body: body.freeze(),
        })
    }
}

/// The URL without query or credentials, for messages.
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}
