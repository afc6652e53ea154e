//! OpenID Connect discovery: the well-known document fetched when the config
//! is loaded (and refreshed in the background), checked against the URL it
//! came from and against the rules for configured URLs, and merged with the
//! URLs the operator set by hand (those always win, and `check` says so).

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
    /// A URL the document hands over breaks the rules for configured URLs
    /// (plain http off loopback; an issuer with a query or fragment): the
    /// source is refused (OIDC-25, JWKS-14); set the URL by hand to override.
    #[error("discovery: the document's `{field}` is refused: {reason}")]
    Refused {
        /// The document field.
        field: &'static str,
        /// Which rule it breaks.
        reason: String,
    },
}

impl DiscoveryError {
    /// Whether the document itself is unacceptable (rather than the provider
    /// unreachable): refused at load, counted as `refused` on refresh.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            DiscoveryError::IssuerMismatch { .. }
                | DiscoveryError::BadField { .. }
                | DiscoveryError::Refused { .. }
        )
    }
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
    fetch_fresh(http, well_known).await.map(|(doc, _)| doc)
}

/// [`fetch`], with the response's `Cache-Control` (it bounds the refresh interval).
pub async fn fetch_fresh(
    http: &Http,
    well_known: &Url,
) -> Result<(Document, Option<String>), DiscoveryError> {
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
    Ok((doc, resp.cache_control))
}

/// The document's issuer must equal the well-known URL minus the suffix,
/// byte for byte (no normalisation: OIDC-03), and be a valid issuer: https
/// (http on loopback only), no query, no fragment (OIDC-25).
pub fn check_issuer(well_known: &Url, doc: &Document) -> Result<(), DiscoveryError> {
    let expected = expected_issuer(well_known).unwrap_or_default();
    if doc.issuer != expected {
        return Err(DiscoveryError::IssuerMismatch {
            expected,
            found: doc.issuer.clone(),
        });
    }
    if let Some(reason) = crate::config::issuer_problem(&doc.issuer) {
        return Err(DiscoveryError::Refused {
            field: "issuer",
            reason,
        });
    }
    Ok(())
}

/// A URL the document hands over, held to the rules for configured URLs.
fn discovered_url(field: &'static str, raw: &str) -> Result<Url, DiscoveryError> {
    let url = Url::parse(raw).map_err(|_| DiscoveryError::BadField { field })?;
    if !crate::config::provider_url_allowed(&url) {
        return Err(DiscoveryError::Refused {
            field,
            reason: format!("`{raw}` must be https:// (plain http is allowed only on loopback)"),
        });
    }
    Ok(url)
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
/// A discovered URL that is used must obey the rules for configured URLs
/// (https, or http on loopback); one replaced by hand is only reported.
pub fn resolve(source: &Source, doc: Option<&Document>) -> Result<Endpoints, DiscoveryError> {
    let mut overridden = Vec::new();
    let mut pick = |key: &'static str,
                    field: &'static str,
                    configured: &Option<Url>,
                    discovered: Option<&String>|
     -> Result<Option<Url>, DiscoveryError> {
        match (configured, discovered) {
            (Some(c), Some(d)) => {
                // A preset's own choice (Entra ID's Graph profile) is no
                // operator override to report.
                let by_hand = !source.preset_urls.contains(&key);
                if by_hand && Url::parse(d).map_or(true, |d| d != *c) {
                    overridden.push((key, d.clone(), c.to_string()));
                }
                Ok(Some(c.clone()))
            }
            (Some(c), None) => Ok(Some(c.clone())),
            (None, Some(d)) => discovered_url(field, d).map(Some),
            (None, None) => Ok(None),
        }
    };
    let authorization = pick(
        "authorization_url",
        "authorization_endpoint",
        &source.authorization_url,
        doc.and_then(|d| d.authorization_endpoint.as_ref()),
    )?;
    let token = pick(
        "access_token_url",
        "token_endpoint",
        &source.access_token_url,
        doc.and_then(|d| d.token_endpoint.as_ref()),
    )?;
    let profile = pick(
        "profile_url",
        "userinfo_endpoint",
        &source.profile_url,
        doc.and_then(|d| d.userinfo_endpoint.as_ref()),
    )?;
    let jwks = pick(
        "oidc_jwks_url",
        "jwks_uri",
        &source.oidc_jwks_url,
        doc.and_then(|d| d.jwks_uri.as_ref()),
    )?;
    let end_session = pick(
        "end_session_endpoint",
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

    /// Two Entra ID sources: the preset's Graph profile URL, and one set by hand.
    fn entraid_sources() -> Vec<Source> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        let source = |slug: &str, extra: &str| {
            format!(
                "[[source]]\nslug = \"{slug}\"\ntype = \"entraid\"\ntenant = \"contoso.onmicrosoft.com\"\n\
                 consumer_key = \"c\"\nconsumer_secret = \"s\"\n{extra}"
            )
        };
        std::fs::write(
            &file,
            format!(
                "[server]\nlisten = \"127.0.0.1:8080\"\n[session]\nsecrets = [\"feeQnjJyhqAI92I28IgVDanqRnYHerVyw+5HfOJDMK8=\"]\n\
                 [store]\nurl = \"sqlite::memory:\"\n{}{}\
                 [[app]]\nname = \"wiki\"\nupstream = \"http://127.0.0.1:9\"\nsources = [\"ms\", \"own\"]\n\
                 [[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
                source("ms", ""),
                source("own", "profile_url = \"https://profile.example/me\"\n"),
            ),
        )
        .unwrap();
        crate::config::load_with_env(&file, Vec::<(String, String)>::new())
            .unwrap()
            .sources
    }

    #[test]
    fn a_preset_s_own_url_wins_over_discovery_without_being_reported_as_set_by_hand() {
        let sources = entraid_sources();
        let issuer = "https://login.microsoftonline.com/contoso.onmicrosoft.com/v2.0";
        let preset = resolve(&sources[0], Some(&doc(issuer))).unwrap();
        assert!(
            preset
                .profile
                .as_ref()
                .is_some_and(|u| u.host_str() == Some("graph.microsoft.com")),
            "{:?}",
            preset.profile
        );
        assert_eq!(preset.overridden, vec![]);
        let by_hand = resolve(&sources[1], Some(&doc(issuer))).unwrap();
        assert_eq!(
            by_hand.overridden,
            vec![(
                "profile_url",
                format!("{issuer}/userinfo"),
                "https://profile.example/me".to_string()
            )]
        );
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

    #[test]
    fn oidc25_an_issuer_with_a_query_or_fragment_or_plain_http_is_refused() {
        for (well_known, issuer) in [
            (
                "https://idp.example/t?x=1/.well-known/openid-configuration",
                "https://idp.example/t?x=1",
            ),
            (
                "https://idp.example/t#f/.well-known/openid-configuration",
                "https://idp.example/t#f",
            ),
            (
                "http://idp.example/.well-known/openid-configuration",
                "http://idp.example",
            ),
        ] {
            let wk = Url::parse(well_known).unwrap();
            let err = check_issuer(&wk, &doc(issuer)).unwrap_err();
            assert!(
                err.is_refusal() && matches!(err, DiscoveryError::Refused { .. }),
                "{issuer}: {err}"
            );
        }
        let wk = Url::parse("http://127.0.0.1:9/.well-known/openid-configuration").unwrap();
        assert!(check_issuer(&wk, &doc("http://127.0.0.1:9")).is_ok());
    }

    #[test]
    fn oidc25_jwks14_discovered_urls_follow_the_configured_url_rules() {
        assert!(discovered_url("jwks_uri", "https://idp.example/jwks").is_ok());
        assert!(discovered_url("jwks_uri", "http://localhost:8080/jwks").is_ok());
        assert!(discovered_url("jwks_uri", "http://[::1]/jwks").is_ok());
        for bad in [
            "http://idp.example/jwks",
            "http://10.0.0.1/jwks",
            "ftp://idp.example/jwks",
            "file:///etc/passwd",
        ] {
            let err = discovered_url("jwks_uri", bad).unwrap_err();
            assert!(err.to_string().contains("jwks_uri"), "{bad}: {err}");
            assert!(err.is_refusal(), "{bad}");
        }
        assert!(matches!(
            discovered_url("token_endpoint", "not a url"),
            Err(DiscoveryError::BadField { .. })
        ));
    }
}
