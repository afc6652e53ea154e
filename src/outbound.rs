//! The one HTTP client for talking to identity providers: rustls, redirects
//! off (a provider cannot bounce us to another host), connect and total
//! timeouts, and a cap on every response body.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use url::Url;

/// Largest provider response read (discovery, token, userinfo).
pub const MAX_RESPONSE_BYTES: usize = 1024 * 1024;
/// Largest JWKS document read (docs/security.md JWKS-07).
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
    /// `Link` header, if any (paged APIs).
    pub link: Option<String>,
    /// The body, at most the cap.
    pub body: Bytes,
}

impl Fetched {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }
}

/// The shared outbound client: one reqwest client per trust set. Every source
/// without a `ca_file` shares the default (system roots plus the webpki
/// roots); a source with one gets its own client that trusts that CA too.
#[derive(Clone, Debug)]
pub struct Http {
    client: reqwest::Client,
    by_source: Arc<HashMap<String, reqwest::Client>>,
}

/// Builds one client trusting the system roots, the webpki roots and `ca_file`.
fn build_client(
    connect_timeout: Duration,
    total_timeout: Duration,
    ca_file: Option<&Path>,
) -> Result<reqwest::Client, FetchError> {
    let setup = |reason: String| FetchError::Transport {
        url: ca_file.map(|f| f.display().to_string()).unwrap_or_default(),
        reason,
    };
    let tls = crate::tls::client_config(crate::tls::base_roots(), ca_file)
        .map_err(|e| setup(e.to_string()))?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(connect_timeout)
        .timeout(total_timeout)
        .user_agent(concat!("portcullis/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| setup(e.to_string()))
}

impl Http {
    /// A client with the given timeouts, trusting the system and webpki roots.
    pub fn new(connect_timeout: Duration, total_timeout: Duration) -> Result<Self, FetchError> {
        Ok(Http {
            client: build_client(connect_timeout, total_timeout, None)?,
            by_source: Arc::new(HashMap::new()),
        })
    }

    /// The same, plus a client per source that sets `ca_file` (DESIGN "Safe
    /// defaults and deployment": system roots plus the source's CA).
    pub fn for_sources(
        connect_timeout: Duration,
        total_timeout: Duration,
        sources: &[crate::config::Source],
    ) -> Result<Self, FetchError> {
        let mut by_source = HashMap::new();
        for s in sources {
            if let Some(ca) = &s.ca_file {
                by_source.insert(
                    s.slug.clone(),
                    build_client(connect_timeout, total_timeout, Some(ca))?,
                );
            }
        }
        Ok(Http {
            client: build_client(connect_timeout, total_timeout, None)?,
            by_source: Arc::new(by_source),
        })
    }

    /// The client for calls to `source`'s URLs.
    pub fn source(&self, source: &str) -> Http {
        match self.by_source.get(source) {
            Some(client) => Http {
                client: client.clone(),
                by_source: self.by_source.clone(),
            },
            None => self.clone(),
        }
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
                    reason: chain(&e.without_url()),
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
        let link = header("link");
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
            link,
            body: body.freeze(),
        })
    }
}

/// An error with every cause after it: reqwest's own text is only "error
/// sending request", the cause says "invalid peer certificate: UnknownIssuer".
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let next = c.to_string();
        if !text.contains(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = c.source();
    }
    text
}

/// The URL without query or credentials, for messages.
fn redact(url: &Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    let _ = u.set_password(None);
    let _ = u.set_username("");
    u.to_string()
}
