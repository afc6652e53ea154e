//! The server side of OAuth 1.0a, written from RFC 5849 for the fake
//! provider: reading an `Authorization: OAuth` header (§3.5.1) and checking
//! an HMAC-SHA1 signature (§3.4). Deliberately not portcullis's signer run
//! backwards: a verifier that shared the client's code would share its
//! mistakes, and a test of one against the other would prove nothing.

use std::fmt;

use aws_lc_rs::hmac;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use percent_encoding::{percent_decode_str, utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use url::Url;

/// The only signature method checked (§3.4.2); PLAINTEXT and RSA-SHA1 are refused.
pub const SIGNATURE_METHOD: &str = "HMAC-SHA1";

/// Longest `Authorization` header read.
pub const MAX_HEADER_BYTES: usize = 8 * 1024;

/// Most parameters a header may carry.
pub const MAX_PARAMETERS: usize = 32;

/// §3.6: everything but the unreserved characters `ALPHA / DIGIT / "-" / "." /
/// "_" / "~"` is percent-encoded, with upper-case hex digits.
const NOT_UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// §3.6 percent-encoding of a parameter name or value (UTF-8 first).
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, NOT_UNRESERVED).to_string()
}

/// Why a signed request was refused. RFC 5849 §3.2 says which status to
/// answer: 400 for a malformed request, 401 for a bad signature or no
/// credentials.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No `Authorization` header with the `OAuth` scheme (401).
    #[error("no OAuth Authorization header")]
    NotOAuth,
    /// The header is not a list of `name="value"` pairs (400).
    #[error("the Authorization header is malformed ({0})")]
    Malformed(&'static str),
    /// A parameter is given twice (400).
    #[error("the parameter {0} is given more than once")]
    Duplicate(String),
    /// A required protocol parameter is missing (400).
    #[error("the parameter {0} is missing")]
    Missing(&'static str),
    /// A signature method other than HMAC-SHA1 (400).
    #[error("the signature method {0} is not supported")]
    UnsupportedSignatureMethod(String),
    /// `oauth_version` is present and not `1.0` (§3.1: optional, "1.0" if present) (400).
    #[error("oauth_version must be 1.0")]
    Version,
    /// An `oauth_` parameter in the query or body: this provider takes the
    /// protocol parameters in the header only (§3.5 lets a server choose) (400).
    #[error("the protocol parameter {0} is outside the Authorization header")]
    ParameterOutsideHeader(String),
    /// The URL is not `http` or `https` with a host (400).
    #[error("the request URL has no base string URI")]
    Url,
    /// The signature does not match (401).
    #[error("the signature does not match")]
    BadSignature,
}

/// A parsed `Authorization: OAuth` header, values percent-decoded.
#[derive(Clone, PartialEq, Eq)]
pub struct Authorization {
    realm: Option<String>,
    params: Vec<(String, String)>,
}

impl fmt::Debug for Authorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: the values hold the signature and the token.
        let names: Vec<&str> = self.params.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("Authorization")
            .field("realm", &self.realm)
            .field("params", &names)
            .finish()
    }
}

impl Authorization {
    /// Reads the header value (§3.5.1): the scheme `OAuth` (any case), then
    /// `name="value"` pairs separated by commas, values as quoted-strings
    /// (RFC 9110 §5.6.4) holding percent-encoded text; no name twice.
    pub fn parse(header: &str) -> Result<Authorization, VerifyError> {
        if header.len() > MAX_HEADER_BYTES {
            return Err(VerifyError::Malformed("too long"));
        }
        let header = header.trim();
        let Some(space) = header.find([' ', '\t']) else {
            return Err(VerifyError::NotOAuth);
        };
        let (scheme, list) = header.split_at(space);
        if !scheme.eq_ignore_ascii_case("OAuth") {
            return Err(VerifyError::NotOAuth);
        }
        let mut realm = None;
        let mut params: Vec<(String, String)> = Vec::new();
        for (raw_name, quoted) in QuotedPairs::new(list) {
            let (raw_name, quoted) = (raw_name?, quoted);
            // §3.5.1: realm is not percent-encoded and not a signed parameter.
            if raw_name == "realm" {
                if realm.replace(quoted).is_some() {
                    return Err(VerifyError::Duplicate("realm".to_string()));
                }
                continue;
            }
            let name = decode(raw_name)?;
            let value = decode(&quoted)?;
            if name.is_empty() {
                return Err(VerifyError::Malformed("an empty name"));
            }
            if params.iter().any(|(seen, _)| *seen == name) {
                return Err(VerifyError::Duplicate(name));
            }
            if params.len() == MAX_PARAMETERS {
                return Err(VerifyError::Malformed("too many parameters"));
            }
            params.push((name, value));
        }
        Ok(Authorization { realm, params })
    }

    /// The decoded value of parameter `name` (never `realm`).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find_map(|(n, v)| (n == name).then_some(v.as_str()))
    }

    /// `realm`, as sent.
    pub fn realm(&self) -> Option<&str> {
        self.realm.as_deref()
    }

    /// `oauth_consumer_key`
    pub fn consumer_key(&self) -> Option<&str> {
        self.get("oauth_consumer_key")
    }

    /// `oauth_token`
    pub fn token(&self) -> Option<&str> {
        self.get("oauth_token")
    }

    /// `oauth_nonce`
    pub fn nonce(&self) -> Option<&str> {
        self.get("oauth_nonce")
    }

    /// `oauth_timestamp` when it is a positive integer (§3.3).
    pub fn timestamp(&self) -> Option<u64> {
        self.get("oauth_timestamp")
            .and_then(|t| t.parse::<u64>().ok())
            .filter(|t| *t != 0)
    }

    /// Every parameter but `realm`, decoded, in the order sent.
    pub fn params(&self) -> &[(String, String)] {
        &self.params
    }
}

fn decode(s: &str) -> Result<String, VerifyError> {
    percent_decode_str(s)
        .decode_utf8()
        .map(|d| d.into_owned())
        .map_err(|_| VerifyError::Malformed("a value is not UTF-8"))
}

/// The `name="value"` pairs of an auth-param list, one at a time: a
/// character scanner, because a realm may hold escaped quotes and commas.
struct QuotedPairs<'a> {
    rest: Option<&'a str>,
}

impl<'a> QuotedPairs<'a> {
    fn new(list: &'a str) -> Self {
        QuotedPairs { rest: Some(list) }
    }

    /// One pair from the front of `input`, and what follows it (without the
    /// comma), or `None` at the end.
    fn pair(input: &'a str) -> Result<(&'a str, String, Option<&'a str>), VerifyError> {
        let Some((name, after_eq)) = input.split_once('=') else {
            return Err(VerifyError::Malformed("a parameter without '='"));
        };
        let name = name.trim();
        if name.contains(',') {
            return Err(VerifyError::Malformed("a parameter without '='"));
        }
        let unquoted = VerifyError::Malformed("a value is not quoted");
        let Some(body) = after_eq.trim_start().strip_prefix('"') else {
            return Err(unquoted);
        };
        let mut value = String::new();
        let mut escaped = false;
        let mut end = None;
        for (at, c) in body.char_indices() {
            if escaped {
                value.push(c);
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                end = Some(at + 1);
                break;
            } else {
                value.push(c);
            }
        }
        let after = end.and_then(|e| body.get(e..)).ok_or(unquoted.clone())?;
        let after = after.trim_start();
        if after.is_empty() {
            return Ok((name, value, None));
        }
        let next = after.strip_prefix(',').ok_or(unquoted)?;
        Ok((name, value, Some(next)))
    }
}

impl<'a> Iterator for QuotedPairs<'a> {
    type Item = (Result<&'a str, VerifyError>, String);

    fn next(&mut self) -> Option<Self::Item> {
        let input = self.rest.take()?;
        match Self::pair(input) {
            Ok((name, value, rest)) => {
                self.rest = rest;
                Some((Ok(name), value))
            }
            Err(error) => Some((Err(error), String::new())),
        }
    }
}

/// §3.4.1.2: scheme and host in lower case, the port only when it is not
/// the scheme's default, the path; no query, no fragment.
pub fn base_string_uri(url: &Url) -> Result<String, VerifyError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(VerifyError::Url);
    }
    let host = url.host_str().ok_or(VerifyError::Url)?.to_ascii_lowercase();
    // `Url::port` is `None` for the scheme's default port.
    let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
    Ok(format!(
        "{}://{host}{port}{}",
        url.scheme().to_ascii_lowercase(),
        url.path()
    ))
}

/// §3.4.1.3.1: the query's and the form body's parameters, decoded as
/// `application/x-www-form-urlencoded`.
pub fn request_parameters(url: &Url, form_body: Option<&[u8]>) -> Vec<(String, String)> {
    let mut params: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    if let Some(body) = form_body {
        params.extend(url::form_urlencoded::parse(body).into_owned());
    }
    params
}

/// §3.4.1.3.2: each name and value encoded, sorted by name then value,
/// `name=value` joined by `&`.
pub fn normalized_parameters<'a>(params: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut encoded: Vec<(String, String)> = params
        .into_iter()
        .map(|(n, v)| (percent_encode(n), percent_encode(v)))
        .collect();
    encoded.sort();
    encoded
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// §3.4.1.1: the method in upper case, the base string URI and the
/// normalized parameters, each encoded, joined by `&`.
pub fn signature_base_string<'a>(
    method: &str,
    url: &Url,
    params: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<String, VerifyError> {
    Ok(format!(
        "{}&{}&{}",
        percent_encode(&method.to_ascii_uppercase()),
        percent_encode(&base_string_uri(url)?),
        percent_encode(&normalized_parameters(params))
    ))
}

/// §3.4.2: the HMAC-SHA1 key is the encoded consumer secret, `&`, and the
/// encoded token secret (the `&` stays when the token secret is empty).
fn hmac_key(consumer_secret: &str, token_secret: &str) -> hmac::Key {
    let key = format!(
        "{}&{}",
        percent_encode(consumer_secret),
        percent_encode(token_secret)
    );
    hmac::Key::new(hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, key.as_bytes())
}

/// The base64 HMAC-SHA1 signature of `base_string` (§3.4.2).
pub fn hmac_sha1(base_string: &str, consumer_secret: &str, token_secret: &str) -> String {
    let tag = hmac::sign(
        &hmac_key(consumer_secret, token_secret),
        base_string.as_bytes(),
    );
    STANDARD.encode(tag.as_ref())
}

/// Checks the protocol parameters (§3.1) and the HMAC-SHA1 signature of a
/// request with the given secrets (`token_secret` empty for the temporary
/// credentials request). Nonce replay and timestamp freshness are the
/// caller's policy.
pub fn verify(
    method: &str,
    url: &Url,
    form_body: Option<&[u8]>,
    authorization: &Authorization,
    consumer_secret: &str,
    token_secret: &str,
) -> Result<(), VerifyError> {
    check_protocol_parameters(authorization)?;
    let sent = authorization
        .get("oauth_signature")
        .ok_or(VerifyError::Missing("oauth_signature"))?;
    let sent = STANDARD
        .decode(sent)
        .map_err(|_| VerifyError::BadSignature)?;
    let request = request_parameters(url, form_body);
    if let Some((name, _)) = request.iter().find(|(n, _)| n.starts_with("oauth_")) {
        return Err(VerifyError::ParameterOutsideHeader(name.clone()));
    }
    // §3.4.1.3.1: every parameter but oauth_signature (realm is not in `params`).
    let signed = request
        .iter()
        .chain(authorization.params())
        .filter(|(n, _)| n != "oauth_signature")
        .map(|(n, v)| (n.as_str(), v.as_str()));
    let base = signature_base_string(method, url, signed)?;
    hmac::verify(
        &hmac_key(consumer_secret, token_secret),
        base.as_bytes(),
        &sent,
    )
    .map_err(|_| VerifyError::BadSignature)
}

/// §3.1: HMAC-SHA1, version 1.0 when present, a consumer key, a nonce and a
/// positive integer timestamp.
fn check_protocol_parameters(authorization: &Authorization) -> Result<(), VerifyError> {
    let method = authorization
        .get("oauth_signature_method")
        .ok_or(VerifyError::Missing("oauth_signature_method"))?;
    if method != SIGNATURE_METHOD {
        return Err(VerifyError::UnsupportedSignatureMethod(
            method.chars().take(32).collect(),
        ));
    }
    if authorization
        .get("oauth_version")
        .is_some_and(|v| v != "1.0")
    {
        return Err(VerifyError::Version);
    }
    if authorization.consumer_key().is_none_or(|k| k.is_empty()) {
        return Err(VerifyError::Missing("oauth_consumer_key"));
    }
    if authorization.nonce().is_none_or(|n| n.is_empty()) {
        return Err(VerifyError::Missing("oauth_nonce"));
    }
    if authorization.get("oauth_timestamp").is_none() {
        return Err(VerifyError::Missing("oauth_timestamp"));
    }
    if authorization.timestamp().is_none() {
        return Err(VerifyError::Malformed(
            "oauth_timestamp is not a positive integer",
        ));
    }
    Ok(())
}

/// [`Authorization::parse`] then [`verify`]; the parsed header.
pub fn verify_request(
    method: &str,
    url: &Url,
    form_body: Option<&[u8]>,
    authorization: &str,
    consumer_secret: &str,
    token_secret: &str,
) -> Result<Authorization, VerifyError> {
    let parsed = Authorization::parse(authorization)?;
    verify(
        method,
        url,
        form_body,
        &parsed,
        consumer_secret,
        token_secret,
    )?;
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5849 §3.4.1.1's example request, signed as §3.4.2 says with the
    /// secrets of §1.2 (the example's signature value in the RFC is for
    /// other secrets; this checks the parts the RFC prints).
    #[test]
    fn the_base_string_of_rfc5849_section_3_4_1_1_is_reproduced() {
        let url = Url::parse("http://example.com/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b").unwrap();
        let body = b"c2&a3=2+q";
        let header = "OAuth realm=\"Example\", oauth_consumer_key=\"9djdj82h48djs9d2\", \
                      oauth_token=\"kkk9d7dh3k39sjv7\", oauth_signature_method=\"HMAC-SHA1\", \
                      oauth_timestamp=\"137131201\", oauth_nonce=\"7d8f3e4a\", \
                      oauth_signature=\"djosJKDKJSD8743243%2Fjdk33klY%3D\"";
        let auth = Authorization::parse(header).unwrap();
        let params = request_parameters(&url, Some(body));
        let all = params
            .iter()
            .chain(auth.params())
            .filter(|(n, _)| n != "oauth_signature")
            .map(|(n, v)| (n.as_str(), v.as_str()));
        assert_eq!(
            signature_base_string("post", &url, all).unwrap(),
            "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q\
             %26a3%3Da%26b5%3D%253D%25253D%26c%2540%3D%26c2%3D%26oauth_consumer_\
             key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26oauth_signature_m\
             ethod%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk\
             9d7dh3k39sjv7"
        );
        assert_eq!(auth.realm(), Some("Example"));
    }

    /// RFC 5849 §1.2: the temporary credentials request of the photo
    /// example carries `oauth_signature="74KNZJeDHnMBp0EMJ9ZHt%2FXKycU%3D"`.
    #[test]
    fn the_signature_of_rfc5849_section_1_2_verifies() {
        let url = Url::parse("https://photos.example.net/initiate").unwrap();
        let header = "OAuth realm=\"Photos\", oauth_consumer_key=\"dpf43f3p2l4k3l03\", \
                      oauth_signature_method=\"HMAC-SHA1\", oauth_timestamp=\"137131200\", \
                      oauth_nonce=\"wIjqoS\", oauth_callback=\"http%3A%2F%2Fprinter.example.com%2Fready\", \
                      oauth_signature=\"74KNZJeDHnMBp0EMJ9ZHt%2FXKycU%3D\"";
        assert!(verify_request("POST", &url, None, header, "kd94hf93k423kf44", "").is_ok());
        assert_eq!(
            verify_request("POST", &url, None, header, "other", ""),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn default_ports_are_dropped_and_others_kept() {
        let uri = |s: &str| base_string_uri(&Url::parse(s).unwrap());
        assert_eq!(
            uri("HTTP://EXAMPLE.COM:80/r%20v/X?id=123").unwrap(),
            "http://example.com/r%20v/X"
        );
        assert_eq!(
            uri("https://www.example.net:8080/?q=1").unwrap(),
            "https://www.example.net:8080/"
        );
        assert_eq!(uri("ftp://example.com/"), Err(VerifyError::Url));
    }
}
