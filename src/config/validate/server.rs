//! `[server]`: listeners, the public origin, trusted proxies, timeouts.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use url::Url;

use super::Check;
use super::{browser_loopback, is_loopback};
use crate::config::error::KeyPath;
use crate::config::model::*;
use crate::config::raw::*;

pub(super) fn server(c: &mut Check<'_>, raw: RawServer) -> Option<Server> {
    let at = KeyPath::root("server");
    let [request_header_timeout, idle_timeout, send_timeout] = connection_timeouts(c, &at, &raw);
    let listen = match raw.listen.as_deref() {
        Some(s) => c.socket_addr(at.key("listen"), s),
        None => Some(SocketAddr::from(([127, 0, 0, 1], 8080))),
    };
    let admin_listen = match raw.admin_listen.as_deref() {
        Some(s) => c.socket_addr(at.key("admin_listen"), s),
        None => None,
    };
    let tls = raw.tls.map(|t| Tls {
        cert_file: c.resolve(&t.cert_file),
        key_file: c.resolve(&t.key_file),
    });
    if let Some(tls) = &tls {
        tls_files(c, &at.key("tls"), tls);
    }
    let public_url = public_url(c, &at, raw.public_url.as_deref(), listen, tls.is_some());
    let trusted_proxies = trusted_proxies(c, &at, raw.trusted_proxies.unwrap_or_default());
    let threads = raw.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    if threads == 0 {
        c.fail(at.key("threads"), "must be at least 1");
    }
    let shutdown_timeout = c.duration_or_zero(
        at.key("shutdown_timeout"),
        raw.shutdown_timeout.as_deref(),
        Duration::from_secs(30),
    );
    let upstream_connect_timeout = c.duration(
        at.key("upstream_connect_timeout"),
        raw.upstream_connect_timeout.as_deref(),
        Duration::from_secs(5),
    );
    let upstream_read_timeout = c.duration(
        at.key("upstream_read_timeout"),
        raw.upstream_read_timeout.as_deref(),
        Duration::from_secs(60),
    );
    let log_format = raw.log_format.as_deref().map(|f| {
        c.one_of(
            at.key("log_format"),
            Some(f),
            &[("text", LogFormat::Text), ("json", LogFormat::Json)],
            LogFormat::Text,
        )
    });
    let max_connections = raw.max_connections.unwrap_or(10_000);
    if max_connections == 0 {
        c.fail(at.key("max_connections"), "must be at least 1");
    }
    Some(Server {
        listen: listen?,
        admin_listen,
        public_url: public_url?,
        public_url_derived: raw.public_url.is_none(),
        trusted_proxies,
        tls,
        threads: threads.max(1),
        shutdown_timeout,
        upstream_connect_timeout,
        upstream_read_timeout,
        bearer_cache_entries: raw
            .bearer_cache_entries
            .unwrap_or(crate::config::defaults::BEARER_CACHE_ENTRIES),
        request_header_timeout,
        idle_timeout,
        send_timeout,
        max_connections: max_connections.max(1),
        max_connections_per_ip: raw.max_connections_per_ip.unwrap_or(0),
        log_format,
    })
}

/// `public_url`: an origin, https unless on loopback (SES-02: without https
/// the session cookie cannot be Secure/__Host-); when unset, the listen
/// address, held to the same rule.
fn public_url(
    c: &mut Check<'_>,
    at: &KeyPath,
    raw: Option<&str>,
    listen: Option<SocketAddr>,
    tls: bool,
) -> Option<Url> {
    match raw {
        Some(s) => {
            let u = c.http_url(at.key("public_url"), Some(s));
            if let Some(u) = &u {
                // SES-02: without https the session cookie cannot be Secure/__Host-.
                if u.scheme() == "http" && !browser_loopback(u) {
                    c.fail(
                        at.key("public_url"),
                        format!("`{s}` is plain http on a non-loopback host: session cookies would travel unprotected; use https:// (terminate TLS here with server.tls or in front)"),
                    );
                }
                if (u.path() != "/" && !u.path().is_empty()) || u.query().is_some() {
                    c.fail(
                        at.key("public_url"),
                        format!("`{s}` must be an origin only (scheme, host, port), without path or query"),
                    );
                }
            }
            u
        }
        None => {
            let u = listen.and_then(|l| crate::config::model::listener_origin(l, tls));
            // SES-02 holds for the default too: `listen = "0.0.0.0:8080"` alone
            // would serve cookies without Secure on a public interface.
            if let Some(u) = u
                .as_ref()
                .filter(|u| u.scheme() == "http" && !is_loopback(u))
            {
                c.fail(
                    at.key("public_url"),
                    format!(
                        "not set, so it defaults to `{}` (from server.listen), plain http on a non-loopback address: \
                         session cookies would travel unprotected; set public_url to the https:// origin your users open \
                         (TLS here with server.tls, or at a load balancer in front), or listen on 127.0.0.1",
                        u.origin().ascii_serialization()
                    ),
                );
            }
            u
        }
    }
}

/// An IPv4-mapped IPv6 range (`::ffff:10.0.0.0/104`) as the IPv4 range it
/// names: peers are matched as IPv4 (`Server::is_trusted_proxy`), so the
/// mapped spelling would otherwise never match.
fn ipv4_as_itself(n: IpNet) -> IpNet {
    let IpNet::V6(v6) = n else {
        return n;
    };
    match (v6.addr().to_ipv4_mapped(), v6.prefix_len().checked_sub(96)) {
        (Some(v4), Some(len)) => ipnet::Ipv4Net::new(v4, len).map_or(n, IpNet::V4),
        _ => n,
    }
}

/// `request_header_timeout`, `idle_timeout` and `send_timeout`, with their defaults.
fn connection_timeouts(c: &mut Check<'_>, at: &KeyPath, raw: &RawServer) -> [Duration; 3] {
    [
        (
            "request_header_timeout",
            &raw.request_header_timeout,
            Duration::from_secs(10),
        ),
        (
            "idle_timeout",
            &raw.idle_timeout,
            crate::config::model::DEFAULT_CONNECTION_IDLE,
        ),
        ("send_timeout", &raw.send_timeout, Duration::from_secs(60)),
    ]
    .map(|(key, value, default)| c.duration(at.key(key), value.as_deref(), default))
}

/// `trusted_proxies`: IP addresses or CIDR ranges.
fn trusted_proxies(c: &mut Check<'_>, at: &KeyPath, raw: Vec<String>) -> Vec<IpNet> {
    let mut trusted_proxies = Vec::new();
    for (i, p) in raw.iter().enumerate() {
        let parsed = p
            .parse::<IpNet>()
            .or_else(|_| p.parse::<std::net::IpAddr>().map(IpNet::from));
        match parsed.map(ipv4_as_itself) {
            // PRX-05: every address a trusted proxy would let any client
            // name its own IP, host and path to forward auth (judged once
            // `::ffff:0.0.0.0/96` is read as the `0.0.0.0/0` it is).
            Ok(n) if n.prefix_len() == 0 => c.fail(
                at.key("trusted_proxies").item(i, None),
                format!("`{p}` trusts every client to set X-Forwarded-*: name your proxies' own addresses or subnet (e.g. 10.0.0.0/8)"),
            ),
            Ok(n) => trusted_proxies.push(n),
            Err(_) => c.fail(
                at.key("trusted_proxies").item(i, None),
                format!("`{p}` is not an IP address or CIDR range, e.g. 10.0.0.0/8"),
            ),
        }
    }
    trusted_proxies
}

/// `tls.cert_file` and `tls.key_file`, read now: a chain and the key that
/// goes with it, as the listener will load them (the problem names the
/// file at fault, not a start-up failure after `check` said "valid").
fn tls_files(c: &mut Check<'_>, at: &KeyPath, tls: &Tls) {
    let certs = crate::config::pem::read_certificates(&tls.cert_file)
        .map_err(|e| c.fail(at.key("cert_file"), e.to_string()))
        .ok();
    let key = crate::config::pem::read_private_key(&tls.key_file)
        .map_err(|e| c.fail(at.key("key_file"), e.to_string()))
        .ok();
    let (Some(certs), Some(key)) = (certs, key) else {
        return;
    };
    let provider = rustls::crypto::ring::default_provider();
    if let Err(e) = rustls::sign::CertifiedKey::from_der(certs, key, &provider) {
        c.fail(
            at.key("key_file"),
            format!(
                "{} and the certificate in {} cannot serve TLS together: {e}",
                tls.key_file.display(),
                tls.cert_file.display()
            ),
        );
    }
}
