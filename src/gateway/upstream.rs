//! What the upstream receives: spoofable identity headers removed (every
//! spelling), fields nominated by `Connection` removed, forwarding headers set
//! from facts the gateway knows, and the peer to connect to.

use std::net::IpAddr;

use pingora::http::RequestHeader;

/// Identity headers the gateway owns, in canonical lower-case `-` spelling.
const IDENTITY_HEADERS: &[&str] = &[
    "x-forwarded-user",
    "x-forwarded-email",
    "x-forwarded-groups",
    "x-forwarded-preferred-username",
];
/// Every header starting with this (any spelling) belongs to the gateway too.
const AUTH_REQUEST_PREFIX: &str = "x-auth-request-";

/// Whether a client-sent header name claims an identity only the gateway may
/// set. `_` counts as `-` because some upstreams treat them alike
/// (CVE-2025-64484).
pub fn is_spoofable(name: &str) -> bool {
    let canonical: String = name
        .chars()
        .map(|c| {
            if c == '_' {
                '-'
            } else {
                c.to_ascii_lowercase()
            }
        })
        .collect();
    IDENTITY_HEADERS.contains(&canonical.as_str()) || canonical.starts_with(AUTH_REQUEST_PREFIX)
}

/// Connection options that name no field.
const CONNECTION_OPTIONS: &[&str] = &["close", "keep-alive", "upgrade"];

/// Removes every client copy of a gateway-owned header and every field the
/// client nominated as hop-by-hop (RFC 9110 §7.6.1), before the gateway adds its own.
pub fn strip_client_headers(req: &mut RequestHeader) {
    let mut doomed: Vec<String> = req
        .headers
        .keys()
        .map(|k| k.as_str())
        .filter(|k| is_spoofable(k))
        .map(str::to_string)
        .collect();
    for value in req.headers.get_all(http::header::CONNECTION) {
        let Ok(value) = value.to_str() else { continue };
        for token in value.split(',').map(|t| t.trim().to_ascii_lowercase()) {
            if !token.is_empty() && !CONNECTION_OPTIONS.contains(&token.as_str()) {
                doomed.push(token);
            }
        }
    }
    for name in doomed {
        req.remove_header(name.as_str());
    }
}

/// Removes the gateway's own cookies from `Cookie` so they never reach the upstream.
pub fn strip_gateway_cookies(req: &mut RequestHeader, names: &[&str]) -> pingora::Result<()> {
    let values: Vec<String> = req
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    if values.is_empty() || !values.iter().any(|v| names.iter().any(|n| v.contains(n))) {
        return Ok(());
    }
    req.remove_header(&http::header::COOKIE);
    for v in values {
        if let Some(kept) = crate::session::cookie::without(&v, names) {
            req.append_header(http::header::COOKIE, kept)?;
        }
    }
    Ok(())
}

/// Removes `Set-Cookie` headers of the upstream that would overwrite a gateway cookie.
pub fn drop_gateway_set_cookies(
    resp: &mut pingora::http::ResponseHeader,
    names: &[&str],
) -> pingora::Result<()> {
    let owned = |v: &http::HeaderValue| {
        v.to_str()
            .ok()
            .and_then(|s| s.split_once('='))
            .is_some_and(|(n, _)| crate::session::cookie::is_gateway_cookie(n.trim(), names))
    };
    if !resp
        .headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .any(owned)
    {
        return Ok(());
    }
    let kept: Vec<http::HeaderValue> = resp
        .headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter(|v| !owned(v))
        .cloned()
        .collect();
    resp.remove_header(&http::header::SET_COOKIE);
    for v in kept {
        resp.append_header(http::header::SET_COOKIE, v)?;
    }
    Ok(())
}

/// Sets `X-Forwarded-For/-Proto/-Host`: kept and extended only when the peer is
/// a trusted proxy, replaced otherwise (PRX-05).
pub fn set_forwarding_headers(
    req: &mut RequestHeader,
    client: Option<IpAddr>,
    trusted: bool,
    scheme: &str,
    host: Option<&str>,
) -> pingora::Result<()> {
    let client = client.map(|ip| ip.to_string()).unwrap_or_default();
    let xff = match req
        .headers
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) if trusted && !client.is_empty() => format!("{prev}, {client}"),
        Some(prev) if trusted => prev.to_string(),
        _ => client,
    };
    req.remove_header("forwarded");
    if xff.is_empty() {
        req.remove_header("x-forwarded-for");
    } else {
        req.insert_header("x-forwarded-for", xff)?;
    }
    if !trusted || !req.headers.contains_key("x-forwarded-proto") {
        req.insert_header("x-forwarded-proto", scheme)?;
    }
    if !trusted || !req.headers.contains_key("x-forwarded-host") {
        match host {
            Some(h) => req.insert_header("x-forwarded-host", h)?,
            None => {
                req.remove_header("x-forwarded-host");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prx01_prx03_every_spelling_of_an_identity_header_is_spoofable() {
        for n in [
            "X-Forwarded-User",
            "x-forwarded-email",
            "X_Forwarded_Groups",
            "X-Forwarded_Preferred-Username",
            "X-AUTH-REQUEST-USER",
            "x_auth_request_email",
            "X-Auth-Request-Anything",
        ] {
            assert!(is_spoofable(n), "{n}");
        }
        for n in [
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "Authorization",
            "X-User",
        ] {
            assert!(!is_spoofable(n), "{n}");
        }
    }

    #[test]
    fn prx02_prx04_repeated_and_connection_nominated_fields_are_removed() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Forwarded-User", "a").unwrap();
        req.append_header("x-forwarded-user", "b").unwrap();
        req.append_header("X_Forwarded_Email", "c").unwrap();
        req.append_header("Connection", "keep-alive, X-Secret")
            .unwrap();
        req.append_header("X-Secret", "s").unwrap();
        req.append_header("X-Kept", "k").unwrap();
        strip_client_headers(&mut req);
        assert!(req.headers.get("x-forwarded-user").is_none());
        assert!(req.headers.get("x_forwarded_email").is_none());
        assert!(req.headers.get("x-secret").is_none());
        assert_eq!(req.headers.get("x-kept").unwrap(), "k");
    }

    #[test]
    fn prx05_forwarding_headers_from_untrusted_peers_are_replaced() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Forwarded-For", "6.6.6.6").unwrap();
        req.append_header("X-Forwarded-Proto", "https").unwrap();
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        set_forwarding_headers(&mut req, Some(ip), false, "http", Some("wiki.example")).unwrap();
        assert_eq!(req.headers.get("x-forwarded-for").unwrap(), "10.1.2.3");
        assert_eq!(req.headers.get("x-forwarded-proto").unwrap(), "http");
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        req.append_header("X-Forwarded-For", "1.1.1.1").unwrap();
        set_forwarding_headers(&mut req, Some(ip), true, "http", None).unwrap();
        assert_eq!(
            req.headers.get("x-forwarded-for").unwrap(),
            "1.1.1.1, 10.1.2.3"
        );
    }
}
