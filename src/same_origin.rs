//! Whether a state-changing request (sign-out) comes from one of the gateway's
//! own origins, as browsers report it (`Sec-Fetch-Site`, `Origin`): the
//! defence against cross-site request forgery (SES-16). Pure.

use http::HeaderMap;
use url::Url;

/// Why a request is not taken as same-origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CrossOrigin {
    /// Neither `Sec-Fetch-Site` nor `Origin`: nothing vouches for the request.
    #[error("the request carries neither Sec-Fetch-Site nor Origin")]
    Unproven,
    /// `Sec-Fetch-Site` says the request came from another site or origin.
    #[error("Sec-Fetch-Site is not same-origin")]
    FetchSite,
    /// `Origin` names another origin (or is `null`, or malformed).
    #[error("Origin is not this request's origin")]
    ForeignOrigin,
    /// The request's host is neither the sign-in host nor an app host.
    #[error("the request's host is not served here")]
    UnknownHost,
    /// A header that must appear once appears several times.
    #[error("Sec-Fetch-Site or Origin appears more than once")]
    Ambiguous,
}

/// Whether the request is same-origin: `Sec-Fetch-Site: same-origin` (when a
/// browser sends it, it decides), else an `Origin` equal to
/// `{scheme}://{authority}` of this request, whose host (lower-case, without
/// port) `is_our_host` accepts. `authority` is the request's `Host`, as sent.
pub fn check(
    headers: &HeaderMap,
    scheme: &str,
    authority: Option<&str>,
    is_our_host: impl Fn(&str) -> bool,
) -> Result<(), CrossOrigin> {
    if let Some(site) = single(headers, "sec-fetch-site")? {
        return if site.trim().eq_ignore_ascii_case("same-origin") {
            Ok(())
        } else {
            Err(CrossOrigin::FetchSite)
        };
    }
    let origin = single(headers, http::header::ORIGIN.as_str())?.ok_or(CrossOrigin::Unproven)?;
    let origin = bare_origin(origin).ok_or(CrossOrigin::ForeignOrigin)?;
    let ours = authority
        .filter(|a| !a.is_empty() && !a.contains(['@', '/', '\\', '?', '#']))
        .and_then(|a| Url::parse(&format!("{scheme}://{a}")).ok())
        .ok_or(CrossOrigin::UnknownHost)?;
    let host = ours.host_str().ok_or(CrossOrigin::UnknownHost)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    if !is_our_host(host.trim_end_matches('.')) {
        return Err(CrossOrigin::UnknownHost);
    }
    // `Origin` tuples compare scheme, host and port (a default port equals none).
    if origin.origin() == ours.origin() {
        Ok(())
    } else {
        Err(CrossOrigin::ForeignOrigin)
    }
}

/// The one value of header `name`, `None` if absent; several lines, or one
/// that is not text, are refused.
fn single<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, CrossOrigin> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(CrossOrigin::Ambiguous);
    }
    first.to_str().map(Some).map_err(|_| CrossOrigin::Ambiguous)
}

/// `raw` parsed as a serialized origin (`scheme://host[:port]`, nothing more);
/// `null` and anything with a path, query, fragment or user part is not one.
fn bare_origin(raw: &str) -> Option<Url> {
    let url = Url::parse(raw.trim()).ok()?;
    let plain = matches!(url.scheme(), "http" | "https")
        && url.host().is_some()
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.path() == "/"
        && !raw.trim().ends_with('/');
    plain.then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, value.parse().unwrap());
        }
        h
    }

    fn ours(host: &str) -> bool {
        host == "wiki.example" || host == "login.example" || host == "127.0.0.1"
    }

    fn verdict(pairs: &[(&'static str, &str)], authority: &str) -> Result<(), CrossOrigin> {
        check(&headers(pairs), "https", Some(authority), ours)
    }

    #[test]
    fn ses16_sec_fetch_site_same_origin_is_enough() {
        assert_eq!(
            verdict(&[("sec-fetch-site", "same-origin")], "wiki.example"),
            Ok(())
        );
        assert_eq!(
            verdict(&[("sec-fetch-site", "Same-Origin")], "wiki.example"),
            Ok(())
        );
    }

    #[test]
    fn ses16_sec_fetch_site_of_another_site_is_refused_whatever_the_origin() {
        for site in ["cross-site", "same-site", "none", ""] {
            assert_eq!(
                verdict(
                    &[("sec-fetch-site", site), ("origin", "https://wiki.example")],
                    "wiki.example"
                ),
                Err(CrossOrigin::FetchSite),
                "{site:?}"
            );
        }
    }

    #[test]
    fn ses16_origin_equal_to_this_request_is_accepted() {
        assert_eq!(
            verdict(&[("origin", "https://wiki.example")], "wiki.example"),
            Ok(())
        );
        assert_eq!(
            verdict(&[("origin", "https://wiki.example")], "Wiki.Example:443"),
            Ok(())
        );
        assert_eq!(
            verdict(
                &[("origin", "https://login.example:8443")],
                "login.example:8443"
            ),
            Ok(())
        );
        assert_eq!(
            check(
                &headers(&[("origin", "http://127.0.0.1:8080")]),
                "http",
                Some("127.0.0.1:8080"),
                ours
            ),
            Ok(())
        );
    }

    #[test]
    fn ses16_neither_header_is_refused() {
        assert_eq!(verdict(&[], "wiki.example"), Err(CrossOrigin::Unproven));
        assert_eq!(
            verdict(&[("referer", "https://wiki.example/")], "wiki.example"),
            Err(CrossOrigin::Unproven)
        );
    }

    #[test]
    fn ses16_a_foreign_or_malformed_origin_is_refused() {
        for origin in [
            "https://evil.example",
            "http://wiki.example",
            "https://wiki.example:8443",
            "https://login.example",
            "https://wiki.example.evil.example",
            "null",
            "https://wiki.example/",
            "https://wiki.example/path",
            "https://user@wiki.example",
            "wiki.example",
            "",
        ] {
            assert_eq!(
                verdict(&[("origin", origin)], "wiki.example"),
                Err(CrossOrigin::ForeignOrigin),
                "{origin:?}"
            );
        }
    }

    #[test]
    fn ses16_a_host_that_is_not_ours_is_refused_even_with_a_matching_origin() {
        assert_eq!(
            verdict(&[("origin", "https://evil.example")], "evil.example"),
            Err(CrossOrigin::UnknownHost)
        );
        assert_eq!(
            check(
                &headers(&[("origin", "https://wiki.example")]),
                "https",
                None,
                ours
            ),
            Err(CrossOrigin::UnknownHost)
        );
        assert_eq!(
            verdict(
                &[("origin", "https://wiki.example")],
                "evil.example@wiki.example"
            ),
            Err(CrossOrigin::UnknownHost)
        );
    }

    #[test]
    fn ses16_repeated_headers_are_refused() {
        assert_eq!(
            verdict(
                &[
                    ("origin", "https://wiki.example"),
                    ("origin", "https://wiki.example")
                ],
                "wiki.example"
            ),
            Err(CrossOrigin::Ambiguous)
        );
        assert_eq!(
            verdict(
                &[
                    ("sec-fetch-site", "same-origin"),
                    ("sec-fetch-site", "cross-site")
                ],
                "wiki.example"
            ),
            Err(CrossOrigin::Ambiguous)
        );
    }
}
