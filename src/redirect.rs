//! `rd` validation: where a person may be sent back to after signing in or
//! out. A same-origin relative path, or an absolute `http(s)` URL on the
//! sign-in host or a configured app host, is kept; anything else becomes `/`. Pure.

use url::Url;

/// The origins an absolute `rd` may name: the sign-in host's and every
/// configured app host's. App hosts are served with `public_url`'s scheme
/// and port (one listener, or one load balancer, for every host).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origins {
    /// `public_url`'s scheme.
    pub scheme: String,
    /// `public_url`'s port, the scheme's default when not written.
    pub port: Option<u16>,
    /// The sign-in host (`public_url`'s), lower-case.
    pub sign_in_host: String,
    /// Every `[[app]]` `host`, lower-case.
    pub app_hosts: Vec<String>,
    /// The sign-in host as a bare name: an IPv6 literal without its
    /// brackets, no trailing dot (how `same_origin` hands hosts over).
    sign_in_bare: String,
}

impl Origins {
    /// The origins of a config: `public_url` and the apps' hosts.
    pub fn new(public_url: &Url, app_hosts: impl IntoIterator<Item = String>) -> Origins {
        let mut app_hosts: Vec<String> = app_hosts
            .into_iter()
            .map(|h| h.to_ascii_lowercase())
            .collect();
        app_hosts.sort();
        app_hosts.dedup();
        let sign_in_host = public_url
            .host_str()
            .unwrap_or_default()
            .to_ascii_lowercase();
        // `host_str` keeps an IPv6 literal's brackets.
        let sign_in_bare = bare(&sign_in_host).to_string();
        Origins {
            scheme: public_url.scheme().to_string(),
            port: public_url.port_or_known_default(),
            sign_in_host,
            app_hosts,
            sign_in_bare,
        }
    }

    /// Whether bare `host` (any case, no port, no brackets, no trailing
    /// dot) is the sign-in host or an app host: only hosts the config names
    /// (an app without `host` serves any host, yet names none).
    pub fn names_bare_host(&self, host: &str) -> bool {
        self.sign_in_bare.eq_ignore_ascii_case(host)
            || self.app_hosts.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Whether `host` (lower-case, no port) is the sign-in host, written as
    /// a request's host is (an IPv6 literal bare, no trailing dot) or as a
    /// URL writes it (brackets, the dot kept).
    pub fn is_sign_in_host(&self, host: &str) -> bool {
        self.sign_in_host == host || self.sign_in_bare == bare(host)
    }

    /// Whether `host` (lower-case, no port) is named by an `[[app]]`.
    pub fn is_app_host(&self, host: &str) -> bool {
        self.app_hosts.iter().any(|h| h == host)
    }

    /// `{scheme}://{host}[:port]` for one of our hosts (the port left out where it is the scheme's default).
    pub fn origin_of(&self, host: &str) -> String {
        let default = match self.scheme.as_str() {
            "https" => Some(443),
            _ => Some(80),
        };
        match self.port {
            Some(p) if Some(p) != default => format!("{}://{host}:{p}", self.scheme),
            _ => format!("{}://{host}", self.scheme),
        }
    }

    /// Every origin of ours: the sign-in host's, then each app host's.
    pub fn all(&self) -> Vec<String> {
        std::iter::once(&self.sign_in_host)
            .chain(&self.app_hosts)
            .map(|h| self.origin_of(h))
            .collect()
    }

    /// Whether an absolute URL's scheme, host and port are ours.
    fn allows(&self, url: &Url) -> bool {
        let Some(host) = url.host_str() else {
            return false;
        };
        let host = host.to_ascii_lowercase();
        url.scheme() == self.scheme
            && url.port_or_known_default() == self.port
            && url.username().is_empty()
            && url.password().is_none()
            && (self.is_sign_in_host(&host) || self.is_app_host(&host))
    }
}

/// `host` as a request names it: an IPv6 literal without its brackets, no
/// trailing dot.
fn bare(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
        .trim_end_matches('.')
}

/// Where a kept `rd` leads: a path on the current host, or an absolute URL on one of ours.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target<'a> {
    /// A same-origin path (with query).
    Path(&'a str),
    /// An absolute URL on `host` (lower-case), whose path and query are `path`.
    Absolute {
        /// The host it names.
        host: String,
        /// Its path and query.
        path: String,
    },
}

/// What a kept `rd` (one [`safe_rd_for`] returned) points at.
pub fn target(rd: &str) -> Target<'_> {
    if rd.starts_with('/') {
        return Target::Path(rd);
    }
    match Url::parse(rd) {
        Ok(u) => {
            let mut path = u.path().to_string();
            if let Some(q) = u.query() {
                path.push('?');
                path.push_str(q);
            }
            Target::Absolute {
                host: u.host_str().unwrap_or_default().to_ascii_lowercase(),
                path,
            }
        }
        Err(_) => Target::Path("/"),
    }
}

/// The `rd` to use: `raw` when it is a same-origin relative path or an
/// absolute `http(s)` URL whose scheme, host and port are in `origins`
/// (written as the URL parser spells it), else `/`.
pub fn safe_rd_for(raw: Option<&str>, origins: &Origins) -> String {
    let Some(r) = raw else {
        return "/".to_string();
    };
    relative(r)
        .or_else(|| absolute(r, origins))
        .unwrap_or_else(|| "/".to_string())
}

/// `raw` as an absolute URL on one of `origins`, if it is one.
fn absolute(raw: &str, origins: &Origins) -> Option<String> {
    // The URL parser drops tabs, newlines and surrounding spaces and reads
    // `\` as `/` before the query: refuse them rather than let it repair a
    // hostile value (a `\` in the query it keeps as it is, as a relative
    // `rd` keeps it).
    let before_query = raw.split(['?', '#']).next().unwrap_or_default();
    if raw.len() > MAX_RD
        || raw.chars().any(|c| c.is_control() || c == ' ')
        || before_query.contains('\\')
    {
        return None;
    }
    let lower = raw.get(..8).unwrap_or(raw).to_ascii_lowercase();
    if !(lower.starts_with("http://") || lower.starts_with("https://")) {
        return None;
    }
    let url = Url::parse(raw).ok()?;
    if !origins.allows(&url) {
        return None;
    }
    // The path must pass the same rules as a relative `rd` (no `//x` inside).
    let origin_len = url.origin().ascii_serialization().len();
    let rest = url
        .as_str()
        .get(origin_len..)
        .filter(|r| !r.is_empty())
        .unwrap_or("/");
    is_safe(rest).then(|| url.to_string())
}

/// Longest `rd` kept.
pub const MAX_RD: usize = 2048;

/// The `rd` to use where only a same-origin path will do: `raw` when it is
/// a relative path, else `/`.
/// Checked on the raw value and again after percent-decoding (up to three
/// rounds), so `/%2F%2Fevil.example` or `/%5Cevil.example` cannot pass.
/// Spaces and non-ASCII characters come back percent-encoded (UTF-8): a
/// `Location` holds visible ASCII only, and a browser sends that path the
/// same way (a proxy's unencoded `rd=$request_uri` arrives with `+` and
/// `%20` decoded to spaces).
pub fn safe_rd(raw: Option<&str>) -> String {
    raw.and_then(relative).unwrap_or_else(|| "/".to_string())
}

/// `raw` when it is a same-origin relative path, spaces and non-ASCII
/// percent-encoded.
fn relative(raw: &str) -> Option<String> {
    const ENCODED: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b' ');
    is_safe(raw).then(|| percent_encoding::utf8_percent_encode(raw, ENCODED).to_string())
}

fn is_safe(raw: &str) -> bool {
    if raw.is_empty() || raw.len() > MAX_RD {
        return false;
    }
    // The path ends at the raw value's first `?` or `#`: a `%3F` or `%23`
    // is part of the path for the browser and for the gateway, so the
    // boundary is never moved by decoding.
    let raw_path = raw.split(['?', '#']).next().unwrap_or_default();
    let (mut current, mut path) = (raw.to_string(), raw_path.to_string());
    for _ in 0..3 {
        if !is_relative_path(&current, &path) {
            return false;
        }
        let decoded = percent_encoding::percent_decode_str(&current)
            .decode_utf8_lossy()
            .into_owned();
        if decoded == current {
            return true;
        }
        path = percent_encoding::percent_decode_str(&path)
            .decode_utf8_lossy()
            .into_owned();
        current = decoded;
    }
    // Still changing after three rounds: nested encoding has no honest use here.
    false
}

/// Whether `s` (one decoding round of an `rd`) is a same-origin path,
/// `path` being the same round of its path part.
fn is_relative_path(s: &str, path: &str) -> bool {
    // Whitespace is looked through at the start: `/ /evil` is read as
    // `//evil` by a parser that drops it (OA2-13).
    let mut lead = s.chars().filter(|c| !c.is_whitespace());
    // A backslash or a control character is refused anywhere in the path (a
    // browser reads `\` as `/` there), and looked through in the query and
    // fragment, where no parser gives it a meaning: `/search?q=C%3A%5Cdir`
    // comes back to its page.
    s.starts_with('/')
        && lead.next() == Some('/')
        && !matches!(lead.next(), Some('/') | Some('\\'))
        && !path.contains('\\')
        && !path.chars().any(|c| c.is_control())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oa2_13_open_redirect_bypasses_fall_back_to_root() {
        for bad in [
            "//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "https://evil.example",
            "evil.example",
            "/%2F%2Fevil.example",
            "/%2f/evil.example",
            "/%5Cevil.example",
            "/%252F%252Fevil.example",
            "/\tevil",
            "/%09/evil.example",
            "/%0d%0aSet-Cookie:x",
            "//%09/evil.example",
            "/x\\y",
            "",
            "javascript:alert(1)",
            "/ /evil",
            "/\u{a0}/evil",
            "/./\\evil",
            "data:text/html,x",
        ] {
            assert_eq!(safe_rd(Some(bad)), "/", "{bad:?} was kept");
        }
        assert_eq!(safe_rd(None), "/");
        assert_eq!(safe_rd(Some(&format!("/{}", "a".repeat(MAX_RD)))), "/");
        // Paths a browser could have asked for are kept, as a Location can carry them.
        assert_eq!(
            safe_rd(Some("/docs/my%20file?q=a%20b")),
            "/docs/my%20file?q=a%20b"
        );
        // As a form-decoded `rd=$request_uri` brings them: spaces encoded.
        assert_eq!(
            safe_rd(Some("/docs/my file?q=a b")),
            "/docs/my%20file?q=a%20b"
        );
        assert_eq!(safe_rd(Some("/caf\u{e9}?x=\u{e9}")), "/caf%C3%A9?x=%C3%A9");
        // A backslash or control character in the query or fragment means
        // nothing to a URL parser: the page is kept; in the path it is not.
        for kept in ["/search?q=C%3A%5Cdir", "/x?a%0Ab#c%5Cd", "/x?q=a\\b"] {
            assert_eq!(safe_rd(Some(kept)), kept);
        }
        assert_eq!(safe_rd(Some("/x?a\nb")), "/x?a%0Ab");
        // A `%3F` or `%23` is part of the path: decoding never moves the
        // path's end to hide what follows it.
        for bad in [
            "/x%5Cy?q",
            "/x%0A?q",
            "/%3F/\\evil",
            "/%5C?x",
            "/x%3F%0D%0ASet-Cookie:x",
            "/a%3F%5C..%5Cb",
            "/%3F/%5C%5Cevil",
            "/%253F%250D%250A",
            "/a%23%5Cb",
        ] {
            assert_eq!(safe_rd(Some(bad)), "/", "{bad:?} was kept");
        }
    }

    fn origins() -> Origins {
        let public = Url::parse("https://auth.corp.example").unwrap();
        Origins::new(&public, ["Wiki.corp.example".to_string()])
    }

    #[test]
    fn an_absolute_rd_is_kept_only_on_the_sign_in_host_or_an_app_host() {
        let o = origins();
        for good in [
            "https://wiki.corp.example/page?x=1",
            "https://WIKI.corp.example:443/",
            "https://auth.corp.example/done",
        ] {
            assert_ne!(safe_rd_for(Some(good), &o), "/", "{good:?} was refused");
        }
        assert_eq!(
            safe_rd_for(Some("https://WIKI.corp.example:443/a?b=c"), &o),
            "https://wiki.corp.example/a?b=c"
        );
        for bad in [
            "https://evil.example/",
            "http://wiki.corp.example/",
            "https://wiki.corp.example:8443/",
            "https://wiki.corp.example@evil.example/",
            "https://user@wiki.corp.example/",
            "https://wiki.corp.example.evil.example/",
            "https://evil.example\\@wiki.corp.example/",
            "https://wiki.corp.example//evil.example",
            "https://wi\tki.corp.example/",
            " https://wiki.corp.example/",
            "javascript://wiki.corp.example/%0aalert(1)",
            "data:text/html,x",
            "//wiki.corp.example/",
            "ftp://wiki.corp.example/",
        ] {
            assert_eq!(safe_rd_for(Some(bad), &o), "/", "{bad:?} was kept");
        }
        assert_eq!(safe_rd_for(Some("/x?y"), &o), "/x?y");
        // A `\` in the query is kept, as in a relative `rd` (a login begun on
        // an app host sends its `rd` on as an absolute URL).
        assert_eq!(
            safe_rd_for(Some("https://wiki.corp.example/x?q=a\\b"), &o),
            "https://wiki.corp.example/x?q=a\\b"
        );
        for bad in [
            "https://wiki.corp.example/x\\y?q",
            "https://wiki.corp.example\\@evil.example/?q",
        ] {
            assert_eq!(safe_rd_for(Some(bad), &o), "/", "{bad:?} was kept");
        }
        assert_eq!(safe_rd_for(Some("//evil.example"), &o), "/");
    }

    #[test]
    fn an_rd_names_its_host_and_path() {
        assert_eq!(target("/a?b"), Target::Path("/a?b"));
        assert_eq!(
            target("https://wiki.corp.example/p?q=1"),
            Target::Absolute {
                host: "wiki.corp.example".into(),
                path: "/p?q=1".into()
            }
        );
        let o = origins();
        assert_eq!(
            o.origin_of("wiki.corp.example"),
            "https://wiki.corp.example"
        );
        let http = Origins::new(&Url::parse("http://127.0.0.1:8080").unwrap(), []);
        assert_eq!(http.origin_of("localhost"), "http://localhost:8080");
    }

    /// A sign-in host written as an IPv6 literal or with a trailing dot is
    /// still recognised in a request, which names it bare: else its login
    /// would redirect to itself and its callback would be refused.
    #[test]
    fn an_ipv6_or_dotted_sign_in_host_is_recognised_as_a_request_names_it() {
        let v6 = Origins::new(&Url::parse("http://[::1]:8080").unwrap(), []);
        assert!(v6.is_sign_in_host("::1"));
        assert!(v6.is_sign_in_host("[::1]"));
        assert!(!v6.is_sign_in_host("::2"));
        let dotted = Origins::new(&Url::parse("http://Wiki.LocalHost.:8080").unwrap(), []);
        assert!(dotted.is_sign_in_host("wiki.localhost"));
        assert!(dotted.is_sign_in_host("wiki.localhost."));
        assert!(!dotted.is_sign_in_host("localhost"));
    }

    #[test]
    fn same_origin_paths_are_kept_as_written() {
        for good in [
            "/",
            "/wiki/Page?x=1&y=%2F",
            "/a/b#frag",
            "/search?q=http://x",
        ] {
            assert_eq!(safe_rd(Some(good)), good);
        }
    }
}
