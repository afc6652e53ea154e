//! OpenID Connect discovery: the well-known document fetched when the config
//! is loaded, checked against the URL it came from, and merged with the URLs
//! the operator set by hand (those always win, and `check` says so).

use serde::Deserialize;
use url::Url;

use crate::config::Source;
use crate::outbound::{FetchError, Http, MAX_RESPONSE_BYTES};

/// The suffix of a discovery URL (OpenID Connect Discovery 1.0 §4).
pub const WELL_KNOWN_SUFFIX: &str = "/.well-known/openid-configuration";

/// Why discovery failed.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The provider did not answer: retry later; the source is not ready meanwhile.
    #[error("discovery: {0}")]
    Fetch(#[from] FetchError),
    /// The provider answered something else than a discovery document: fix the URL or the provider.
    #[error("discovery: {url} answered {status}, not a discovery document")]
    BadResponse {
        /// The well-known URL.
        url: String,
        /// Its HTTP status.
        status: u16,
    },
    /// The document names another issuer than the URL it came from: the source is refused (Discovery §4.3).
    #[error("discovery: the document's issuer `{found}` is not `{expected}` (the well-known URL without {WELL_KNOWN_SUFFIX}); fix oidc_well_known_url")]
    IssuerMismatch {
        /// Derived from the well-known URL.
        expected: String,
        /// Found in the document.
        found: String,
    },
    /// A URL in the document is missing or invalid: the provider is misconfigured.
    #[error("discovery: `{field}` is missing or not an https URL")]
    BadField {
        /// The document field.
        field: &'static str,
    },
}

/// The fields of a discovery document portcullis uses.
#[derive(Debug, Clone, Deserialize)]
pub struct Document {
    /// The issuer identifier.
    pub issuer: String,
    /// Authorization endpoint.
    pub authorization_endpoint: Option<String>,
    /// Token endpoint.
    pub token_endpoint: Option<String>,
    /// UserInfo endpoint (the profile URL).
    pub userinfo_endpoint: Option<String>,
    /// JWKS URL.
    pub jwks_uri: Option<String>,
    /// RP-initiated logout endpoint.
    pub end_session_endpoint: Option<String>,
    /// Algorithms the provider signs ID tokens with.
    #[serde(default)]
    pub id_token_signing_alg_values_supported: Vec<String>,
    /// The provider sends `iss` in every authorization response (RFC 9207 §3).
    #[serde(default)]
    pub authorization_response_iss_parameter_supported: bool,
}

/// The issuer a well-known URL implies: the URL without the suffix.
pub fn expected_issuer(well_known: &Url) -> Option<String> {
    well_known
        .as_str()
        .strip_suffix(WELL_KNOWN_SUFFIX)
        .map(str::to_string)
}

/// Fetches and checks the document at `well_known`.
pub async fn fetch(http: &Http, well_known: &Url) -> Result<Document, DiscoveryError> {
    let resp = http.get(well_known, None, MAX_RESPONSE_BYTES).await?;
    let doc: Document = match (resp.status, serde_json::from_slice::<Document>(&resp.body)) {
        (200, Ok(doc)) => doc,
        (status, _) => {
            return Err(DiscoveryError::BadResponse {
                url: well_known.to_string(),
                status,
            })
        }
    };
    check_issuer(well_known, &doc)?;
    Ok(doc)
}

/// The document's issuer must equal the well-known URL minus the suffix,
/// byte for byte (no normalisation: OIDC-03).
pub fn check_issuer(well_known: &Url, doc: &Document) -> Result<(), DiscoveryError> {
    let expected = expected_issuer(well_known).unwrap_or_default();
    if doc.issuer != expected {
        return Err(DiscoveryError::IssuerMismatch {
            expected,
            found: doc.issuer.clone(),
        });
    }
    Ok(())
}

/// Where a source's endpoints are, after discovery and the operator's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// Authorization endpoint.
    pub authorization: Option<Url>,
    /// Token endpoint.
    pub token: Option<Url>,
    /// Profile / userinfo endpoint.
    pub profile: Option<Url>,
    /// JWKS URL.
    pub jwks: Option<Url>,
    /// Expected `iss` of ID tokens and machine tokens.
    pub issuer: Option<String>,
    /// RP-initiated logout endpoint.
    pub end_session: Option<Url>,
    /// Algorithms the provider says it signs ID tokens with.
    pub id_token_algs: Vec<String>,
    /// The provider promises `iss` in authorization responses: one without it is refused (OA2-08).
    pub iss_in_response: bool,
    /// Keys set by hand that replaced a discovered value: (key, discovered, configured).
    pub overridden: Vec<(&'static str, String, String)>,
}

/// Merges a source's hand-set URLs with a discovery document; hand-set wins.
pub fn resolve(source: &Source, doc: Option<&Document>) -> Result<Endpoints, DiscoveryError> {
    let mut overridden = Vec::new();
    let mut pick = |key: &'static str,
                    configured: &Option<Url>,
                    discovered: Option<&String>|
     -> Result<Option<Url>, DiscoveryError> {
        let found = match discovered {
            Some(s) => Some(Url::parse(s).map_err(|_| DiscoveryError::BadField { field: key })?),
            None => None,
        };
        match (configured, found) {
            (Some(c), Some(d)) => {
                if *c != d {
                    overridden.push((key, d.to_string(), c.to_string()));
                }
                Ok(Some(c.clone()))
            }
            (Some(c), None) => Ok(Some(c.clone())),
            (None, d) => Ok(d),
        }
    };
    let authorization = pick(
        "authorization_url",
        &source.authorization_url,
        doc.and_then(|d| d.authorization_endpoint.as_ref()),
    )?;
    let token = pick(
        "access_token_url",
        &source.access_token_url,
        doc.and_then(|d| d.token_endpoint.as_ref()),
    )?;
    let profile = pick(
        "profile_url",
        &source.profile_url,
        doc.and_then(|d| d.userinfo_endpoint.as_ref()),
    )?;
    let jwks = pick(
        "oidc_jwks_url",
        &source.oidc_jwks_url,
        doc.and_then(|d| d.jwks_uri.as_ref()),
    )?;
    let end_session = pick(
        "end_session_endpoint",
        &None,
        doc.and_then(|d| d.end_session_endpoint.as_ref()),
    )?;
    let issuer = match (&source.issuer, doc.map(|d| &d.issuer)) {
        (Some(c), Some(d)) => {
            if c != d {
                overridden.push(("issuer", d.clone(), c.clone()));
            }
            Some(c.clone())
        }
        (Some(c), None) => Some(c.clone()),
        (None, d) => d.cloned(),
    };
    Ok(Endpoints {
        authorization,
        token,
        profile,
        jwks,
        issuer,
        end_session,
        id_token_algs: doc
            .map(|d| d.id_token_signing_alg_values_supported.clone())
            .unwrap_or_default(),
        iss_in_response: doc.is_some_and(|d| d.authorization_response_iss_parameter_supported),
        overridden,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(issuer: &str) -> Document {
        Document {
            issuer: issuer.into(),
            authorization_endpoint: Some(format!("{issuer}/authorize")),
            token_endpoint: Some(format!("{issuer}/token")),
            userinfo_endpoint: Some(format!("{issuer}/userinfo")),
            jwks_uri: Some(format!("{issuer}/jwks")),
            end_session_endpoint: None,
            id_token_signing_alg_values_supported: vec!["RS256".into()],
            authorization_response_iss_parameter_supported: false,
        }
    }

    #[test]
    fn oidc03_issuer_must_match_the_well_known_url_exactly() {
        let wk = Url::parse("https://idp.example/tenant/.well-known/openid-configuration").unwrap();
        assert!(check_issuer(&wk, &doc("https://idp.example/tenant")).is_ok());
        for bad in [
            "https://idp.example/tenant/",
            "https://IDP.example/tenant",
            "https://idp.example:443/tenant",
            "https://idp.example/other",
        ] {
            assert!(check_issuer(&wk, &doc(bad)).is_err(), "{bad} accepted");
        }
    }
}
