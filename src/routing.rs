//! Picks the `[[app]]` for a request: an app naming the request's host beats a
//! host-less one, then the longest matching path prefix wins. Pure.

use crate::config::{path_has_prefix, App};

/// Routes built once from the config; a lookup is a short linear scan.
#[derive(Debug, Clone)]
pub struct Router {
    /// (app index, host, prefix), most specific first.
    order: Vec<(usize, Option<String>, String)>,
}

impl Router {
    /// Orders the apps by specificity.
    pub fn new(apps: &[App]) -> Self {
        let mut order: Vec<(usize, Option<String>, String)> = apps
            .iter()
            .enumerate()
            .map(|(i, a)| (i, a.host.clone(), a.path_prefix.clone()))
            .collect();
        order.sort_by(|a, b| {
            b.1.is_some()
                .cmp(&a.1.is_some())
                .then(b.2.len().cmp(&a.2.len()))
                .then(a.0.cmp(&b.0))
        });
        Router { order }
    }

    /// The app serving `host` (lower-case, no port) and `path`, the request's
    /// decision path (see [`crate::config::path`]), never the raw one.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.order
            .iter()
            .find(|(_, h, prefix)| {
                host_matches(h.as_deref(), host) && path_has_prefix(path, prefix)
            })
            .map(|(i, _, _)| *i)
    }

    /// The app that owns `/_auth/*` on `host`: the most specific app of that
    /// host, whatever its path prefix.
    pub fn route_host(&self, host: Option<&str>) -> Option<usize> {
        self.on_host(host).next()
    }

    /// Every app serving `host`, most specific first.
    pub fn on_host<'a>(&'a self, host: Option<&'a str>) -> impl Iterator<Item = usize> + 'a {
        self.order
            .iter()
            .filter(move |(_, h, _)| host_matches(h.as_deref(), host))
            .map(|(i, _, _)| *i)
    }
}

fn host_matches(app_host: Option<&str>, request_host: Option<&str>) -> bool {
    match app_host {
        None => true,
        Some(h) => request_host == Some(h),
    }
}

/// Why a request's host is refused (answer 400): it is not `host [":" port]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the host is not a name or IP literal with an optional port")]
pub struct BadHost;

/// The host a request names, lower-cased and without port: the authority of an
/// absolute-form target, else the `Host` header. `Err` for one that is not a
/// host name (letters, digits, `-`, `.`, `_`, `~`) or a bracketed IPv6
/// literal, with an optional port: userinfo (`wiki.example:@evil.com`) and
/// anything else an upstream could read as another host are refused, never
/// routed on one part while the upstream reads another (PRX-14).
pub fn request_host(
    authority: Option<&str>,
    host_header: Option<&str>,
) -> Result<Option<String>, BadHost> {
    request_host_into(authority, host_header, String::new())
}

/// [`request_host`], written into `buffer` (emptied first) instead of a new `String`.
pub fn request_host_into(
    authority: Option<&str>,
    host_header: Option<&str>,
    mut buffer: String,
) -> Result<Option<String>, BadHost> {
    let Some(raw) = authority.or(host_header).map(str::trim) else {
        return Ok(None);
    };
    let (name, _) = host_and_port(raw)?;
    buffer.clear();
    buffer.push_str(name);
    buffer.make_ascii_lowercase();
    Ok(Some(buffer))
}

/// Whether two authorities (`host [":" port]`) name the same host and port
/// once normalised (RFC 9113 §8.3.1, RFC 3986 §6.2.3): case, one trailing
/// dot, and a missing or empty port read as `default_port`.
pub fn same_authority(a: &str, b: &str, default_port: u16) -> bool {
    match (host_and_port(a.trim()), host_and_port(b.trim())) {
        (Ok((ha, pa)), Ok((hb, pb))) => {
            ha.eq_ignore_ascii_case(hb) && pa.unwrap_or(default_port) == pb.unwrap_or(default_port)
        }
        _ => false,
    }
}

/// The host of `raw` (`host [":" port]`), without brackets and without one
/// trailing dot, and its port (`None` when absent or empty); an empty `raw`
/// (allowed where a target has no authority) is an empty host.
fn host_and_port(raw: &str) -> Result<(&str, Option<u16>), BadHost> {
    if raw.is_empty() {
        return Ok((raw, None));
    }
    let (host, port) = match raw.strip_prefix('[') {
        Some(rest) => {
            let (literal, port) = rest.split_once(']').ok_or(BadHost)?;
            if literal.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(BadHost);
            }
            (literal, port)
        }
        None => {
            let (name, port) = raw.split_at(name_end(raw)?);
            (name.strip_suffix('.').unwrap_or(name), port)
        }
    };
    Ok((host, port_of(port)?))
}

/// Where the host name at the start of `raw` ends (at `:` or the end): one
/// pass over its bytes, since every request's host comes here. Letters,
/// digits, `-`, `_`, `~` and `.` between labels, one trailing `.` allowed;
/// no empty label (`wiki.example..` or `.` would be routed as another name
/// than the upstream reads).
fn name_end(raw: &str) -> Result<usize, BadHost> {
    let bytes = raw.as_bytes();
    let mut label_empty = true;
    let mut end = bytes.len();
    for (i, &b) in bytes.iter().enumerate() {
        match b {
            b':' => {
                end = i;
                break;
            }
            b'.' if label_empty => return Err(BadHost),
            b'.' => label_empty = true,
            b if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') => {
                label_empty = false
            }
            _ => return Err(BadHost),
        }
    }
    // Nothing before the port: no name (a lone `.` failed above).
    if end == 0 {
        return Err(BadHost);
    }
    Ok(end)
}

/// The port after a host: `None` when absent or empty (`host:`), else 1 to
/// 5 digits up to 65535.
fn port_of(rest: &str) -> Result<Option<u16>, BadHost> {
    let Some(digits) = rest.strip_prefix(':') else {
        return if rest.is_empty() {
            Ok(None)
        } else {
            Err(BadHost)
        };
    };
    if digits.len() > 5 {
        return Err(BadHost);
    }
    let mut port: u32 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            return Err(BadHost);
        }
        port = port * 10 + u32::from(b - b'0');
    }
    match (digits.is_empty(), u16::try_from(port)) {
        (true, _) => Ok(None),
        (false, Ok(p)) => Ok(Some(p)),
        (false, Err(_)) => Err(BadHost),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Upstream;

    fn app(name: &str, host: Option<&str>, prefix: &str) -> App {
        App {
            name: name.into(),
            host: host.map(str::to_string),
            path_prefix: prefix.into(),
            upstream: Upstream {
                url: url::Url::parse("http://127.0.0.1:1").unwrap(),
                host: "127.0.0.1".into(),
                port: 1,
                tls: false,
            },
            sources: vec![],
            jwt_sources: vec![],
            jwt_audiences: vec![],
            forward_bearer_token: false,
            identity_assertion: false,
            pass_access_token: false,
            upstream_ca_file: None,
            public_paths: vec![],
            claim_headers: Default::default(),
            policies: vec![],
        }
    }

    #[test]
    fn most_specific_app_wins() {
        let apps = vec![
            app("any", None, "/"),
            app("any-api", None, "/api"),
            app("wiki", Some("wiki.example"), "/"),
            app("wiki-api", Some("wiki.example"), "/api/"),
        ];
        let r = Router::new(&apps);
        let name = |h: Option<&str>, p: &str| r.route(h, p).map(|i| apps[i].name.as_str());
        assert_eq!(name(Some("wiki.example"), "/"), Some("wiki"));
        assert_eq!(name(Some("wiki.example"), "/api/x"), Some("wiki-api"));
        assert_eq!(name(Some("other.example"), "/api/x"), Some("any-api"));
        assert_eq!(name(Some("other.example"), "/apix"), Some("any"));
        assert_eq!(name(None, "/"), Some("any"));
    }

    #[test]
    fn no_app_for_unknown_host_without_catch_all() {
        let apps = vec![app("wiki", Some("wiki.example"), "/")];
        let r = Router::new(&apps);
        assert_eq!(r.route(Some("evil.example"), "/"), None);
        assert_eq!(r.route(None, "/"), None);
        assert_eq!(r.route_host(Some("wiki.example")), Some(0));
    }

    #[test]
    fn request_host_strips_port_and_case() {
        assert_eq!(
            request_host(None, Some("Wiki.Example:8080"))
                .unwrap()
                .as_deref(),
            Some("wiki.example")
        );
        assert_eq!(
            request_host(Some("a.example"), Some("b.example"))
                .unwrap()
                .as_deref(),
            Some("a.example")
        );
        assert_eq!(
            request_host(None, Some("[::1]:80")).unwrap().as_deref(),
            Some("::1")
        );
        assert_eq!(request_host(None, None), Ok(None));
        let buffer = String::from("old.example.with.room");
        let at = buffer.as_ptr();
        let host = request_host_into(None, Some("Wiki.Example.:443"), buffer)
            .unwrap()
            .unwrap();
        assert_eq!((host.as_str(), host.as_ptr()), ("wiki.example", at));
    }

    #[test]
    fn two_spellings_of_one_authority_are_the_same_and_other_hosts_or_ports_are_not() {
        for (a, b) in [
            ("example.com", "example.com:443"),
            ("Example.COM:443", "example.com."),
            ("example.com:", "example.com"),
            ("[::1]:443", "[::1]"),
        ] {
            assert!(same_authority(a, b, 443), "{a} {b}");
            assert!(same_authority(b, a, 443), "{b} {a}");
        }
        for (a, b) in [
            ("example.com", "example.com:8443"),
            ("example.com", "admin.example.com"),
            ("example.com", "example.com:@evil.com"),
            ("[::1]", "[::2]"),
        ] {
            assert!(!same_authority(a, b, 443), "{a} {b}");
        }
    }

    #[test]
    fn prx14_a_host_an_upstream_could_read_as_another_is_refused() {
        for bad in [
            "wiki.example:@evil.com",
            "admin@wiki.example",
            "wiki.example@evil.com",
            "[wiki.example].evil.com",
            "[::1].evil.com",
            "[::1]:80:81",
            "[]",
            "[::1",
            "wiki.example:80:81",
            "wiki.example:8o",
            "wiki.example:123456",
            "wiki example",
            "wiki.example/x",
            "wiki.example\\x",
            "wiki.example%2fx",
            "wiki.example,evil.com",
            ":80",
            "wiki.example..",
            ".",
            "...",
            ".wiki.example",
            "wiki..example",
            "wiki.example:65536",
            "[cafe]",
            "[1.2.3.4]",
            "[:]",
        ] {
            assert_eq!(request_host(None, Some(bad)), Err(BadHost), "{bad}");
            assert_eq!(request_host(Some(bad), Some("x")), Err(BadHost), "{bad}");
        }
        for (good, host) in [
            ("wiki.example", "wiki.example"),
            ("Wiki.Example:8080", "wiki.example"),
            ("wiki.example:", "wiki.example"),
            ("[::1]:80", "::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("[::FFFF:1.2.3.4]:8080", "::ffff:1.2.3.4"),
            ("localhost:080", "localhost"),
            ("127.0.0.1:8080", "127.0.0.1"),
            ("my_host.internal", "my_host.internal"),
            ("Wiki.Example.:443", "wiki.example"),
            ("", ""),
        ] {
            assert_eq!(
                request_host(None, Some(good)),
                Ok(Some(host.to_string())),
                "{good}"
            );
        }
    }
}
