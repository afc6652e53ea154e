//! What crosses the gateway: the request headers the upstream receives
//! (gateway-owned headers removed in every spelling, `Connection`-nominated
//! fields removed, forwarding headers believed only from trusted proxies) and
//! the response headers the client receives. Pure over `http::HeaderMap`.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use crate::principal::header_safe;
use crate::source::claims::lookup;

use crate::config::header_names::{
    FOREIGN_IDENTITY_HEADERS, FORWARDING_HEADERS, FORWARDING_PREFIX, GATEWAY_PREFIXES,
    IDENTITY_HEADERS,
};

/// The session's source access token, to the upstream of an app with `pass_access_token`.
pub const FORWARDED_ACCESS_TOKEN: HeaderName = HeaderName::from_static("x-forwarded-access-token");
/// The same token in a `/_auth/check` answer.
pub const AUTH_REQUEST_ACCESS_TOKEN: HeaderName =
    HeaderName::from_static("x-auth-request-access-token");

/// Byte `b` of a header name as the gateway compares names: lower case, `_` read as `-`.
fn canonical_byte(b: u8) -> u8 {
    if b == b'_' {
        b'-'
    } else {
        b.to_ascii_lowercase()
    }
}

/// Whether `name` starts with `prefix` (canonical lower-case `-` spelling)
/// once `_` is read as `-` and case is ignored, as some upstreams read it.
/// Compares in place: names are checked on every request, so no copy is made.
fn canonical_starts_with(name: &str, prefix: &str) -> bool {
    name.len() >= prefix.len()
        && name
            .bytes()
            .zip(prefix.bytes())
            .all(|(n, p)| canonical_byte(n) == p)
}

/// Whether `name` is `canonical` in any spelling (case, `_` for `-`).
fn canonical_eq(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len() && canonical_starts_with(name, canonical)
}

/// Every gateway-owned and forwarding header name but the `Remote-*` family
/// (`is_spoofable` looks at those apart) starts with `x` or `f`: most names
/// are ruled out by their first byte.
fn may_be_ours(name: &str) -> bool {
    matches!(name.as_bytes().first(), Some(b'x' | b'X' | b'f' | b'F'))
}

/// Whether a client-sent header name claims an identity only the gateway may
/// set (its own names, and the `Remote-*` of other gateways). `_` counts as
/// `-` because some upstreams treat them alike (CVE-2025-64484).
pub fn is_spoofable(name: &str) -> bool {
    match name.as_bytes().first() {
        Some(b'x' | b'X' | b'f' | b'F') => {
            IDENTITY_HEADERS.iter().any(|h| canonical_eq(name, h))
                || GATEWAY_PREFIXES
                    .iter()
                    .any(|p| canonical_starts_with(name, p))
        }
        Some(b'r' | b'R') => FOREIGN_IDENTITY_HEADERS
            .iter()
            .any(|h| canonical_eq(name, h)),
        _ => false,
    }
}

/// Whether a header name, in any spelling, is one of the forwarding headers.
pub fn is_forwarding(name: &str) -> bool {
    may_be_ours(name) && FORWARDING_HEADERS.iter().any(|h| canonical_eq(name, h))
}

/// Connection options that name no field.
const CONNECTION_OPTIONS: &[&str] = &["close", "keep-alive", "upgrade"];
/// Fields a client may not remove by nominating them: without them the
/// upstream would read the request (or its body) differently.
const FRAMING_HEADERS: &[&str] = &["host", "content-length", "transfer-encoding"];

/// Facts about the connection that the forwarding headers carry, rendered
/// as header values (the client address once per connection, not per request).
#[derive(Debug, Clone, Copy)]
pub struct Peer<'a> {
    /// The address the request came from.
    pub client: Option<&'a HeaderValue>,
    /// The client after `trusted_proxies` (the peer itself unless it is a
    /// trusted proxy): the `X-Real-IP` the gateway sets when a trusted
    /// proxy sent none, as nginx's realip module would.
    pub real_ip: Option<&'a HeaderValue>,
    /// Whether that address is in `trusted_proxies`.
    pub trusted: bool,
    /// `http` or `https`, as the client connected.
    pub scheme: &'a HeaderValue,
    /// The host the client asked for, port included, as it sent it.
    pub host: Option<&'a HeaderValue>,
}

/// An address as a header value (`X-Forwarded-For`, `X-Real-IP`), written
/// on the stack: the value's own copy is the one allocation.
pub fn ip_value(ip: std::net::IpAddr) -> Option<HeaderValue> {
    use std::io::Write as _;
    // The longest address (`ffff:…:255.255.255.255`) has 45 characters.
    let mut buf = [0u8; 48];
    let mut out = std::io::Cursor::new(&mut buf[..]);
    write!(out, "{ip}").ok()?;
    let len = usize::try_from(out.position()).ok()?;
    HeaderValue::from_bytes(buf.get(..len)?).ok()
}

/// `X-Forwarded-Proto` of a plain listener.
pub static HTTP: HeaderValue = HeaderValue::from_static("http");
/// `X-Forwarded-Proto` of a TLS listener.
pub static HTTPS: HeaderValue = HeaderValue::from_static("https");

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");

/// A request's hop-by-hop fields (RFC 9110 §7.6.1) and `Expect`: they speak
/// of the client's connection, never the upstream's (hyper frames that one).
static REQUEST_HOP_BY_HOP: [HeaderName; 9] = [
    http::header::CONNECTION,
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::EXPECT,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    // h2c's upgrade settings: the only upgrade passed on is WebSocket's.
    HeaderName::from_static("http2-settings"),
];

/// Whether a connection option (a token of `Connection`) names no field, or
/// names one a client may not remove.
fn kept_option(token: &str) -> bool {
    CONNECTION_OPTIONS
        .iter()
        .chain(FRAMING_HEADERS)
        .any(|o| o.eq_ignore_ascii_case(token))
}

/// Filters a client's request headers in place before the gateway adds its
/// own (PRX-01..05), in one pass over the names. Removed: fields the client
/// nominated in `Connection` (RFC 9110 §7.6.1), the hop-by-hop fields, every
/// spelling of a gateway-owned header, every `_` spelling of a forwarding
/// header, and from an untrusted peer every forwarding header and every
/// other `X-Forwarded-*` name. Then
/// `X-Forwarded-For`, `-Proto`, `-Host` and `X-Real-IP` are set from what the
/// gateway saw, into `set`, to go beside the map. A trusted peer's own values
/// are kept in the map, its `X-Forwarded-For` extended by its address (and
/// moved beside it). Most requests carry none of these names: they cost one
/// look at each name, no allocation.
pub fn filter_request_headers(headers: &mut HeaderMap, peer: &Peer<'_>, set: &mut Forwarding) {
    set.clear();
    let (doomed, trusted_forwarding) = doomed_names(headers, peer);
    // A trusted proxy's values survive unless its client nominated them.
    // Once the doomed names are gone, a forwarding name the map still holds
    // is one that survived.
    let survives = |headers: &HeaderMap, doomed: &[HeaderName], name: &HeaderName| {
        trusted_forwarding && headers.contains_key(name) && !doomed.contains(name)
    };
    let [xff, proto, host, real_ip] = [
        &X_FORWARDED_FOR,
        &X_FORWARDED_PROTO,
        &X_FORWARDED_HOST,
        &X_REAL_IP,
    ]
    .map(|n| survives(headers, &doomed, n));
    for name in &doomed {
        headers.remove(name);
    }
    let chain = if xff {
        let chain = extended_chain(headers, peer.client);
        headers.remove(&X_FORWARDED_FOR);
        chain
    } else {
        peer.client.cloned()
    };
    // Nothing true to say (no address, no host): nothing is said.
    if let Some(chain) = chain {
        set.push(&X_FORWARDED_FOR, chain);
    }
    if !proto {
        set.push(&X_FORWARDED_PROTO, peer.scheme.clone());
    }
    if let Some(sent) = peer.host.filter(|_| !host) {
        set.push(&X_FORWARDED_HOST, sent.clone());
    }
    // The client a trusted proxy names is believed only from the chain
    // that goes on to the upstream.
    let client = if xff { peer.real_ip } else { peer.client };
    if let Some(client) = client.filter(|_| !real_ip) {
        set.push(&X_REAL_IP, client.clone());
    }
}

/// The forwarding fields the gateway sets on a request, at most four: they
/// go to the upstream beside the request's map ([`Beside`]), so a request
/// that carried none does not grow its map by four (about 1 100
/// instructions) only for them to be written out of it again. Kept with
/// the connection between requests, so it is allocated once.
#[derive(Debug, Clone, Default)]
pub struct Forwarding {
    fields: Vec<(HeaderName, HeaderValue)>,
}

impl Forwarding {
    fn push(&mut self, name: &HeaderName, value: HeaderValue) {
        self.fields.push((name.clone(), value));
    }

    /// The fields set, in the order they are written.
    pub fn fields(&self) -> &[(HeaderName, HeaderValue)] {
        &self.fields
    }

    /// Empties it for the next request, its room kept.
    pub fn clear(&mut self) {
        self.fields.clear();
    }
}

/// Header fields a request carries beside its map, whose names the map does
/// not hold: the forwarding fields the gateway sets, then the identity
/// fields (rendered once per principal). The gateway's own HTTP/1.1
/// exchange writes them after the map's fields; hyper's client gets them
/// in the map.
#[derive(Debug, Clone, Copy, Default)]
pub struct Beside<'a> {
    /// What [`filter_request_headers`] set.
    pub forwarding: &'a [(HeaderName, HeaderValue)],
    /// The principal's identity headers.
    pub identity: &'a [(HeaderName, HeaderValue)],
}

impl<'a> Beside<'a> {
    /// Every field, the forwarding ones first.
    pub fn fields(self) -> impl Iterator<Item = &'a (HeaderName, HeaderValue)> {
        self.forwarding.iter().chain(self.identity)
    }
}

/// The names [`filter_request_headers`] removes, and whether a trusted
/// proxy sent (`-` spelled) forwarding names that survive. The vector is
/// allocated only when there is a name to remove.
fn doomed_names(headers: &HeaderMap, peer: &Peer<'_>) -> (Vec<HeaderName>, bool) {
    let mut doomed = nominated(headers);
    let mut trusted_forwarding = false;
    for name in headers.keys() {
        if REQUEST_HOP_BY_HOP.iter().any(|h| h == name) {
            doomed.push(name.clone());
            continue;
        }
        let n = name.as_str();
        if is_spoofable(n) {
            doomed.push(name.clone());
        } else if !may_be_ours(n) {
            continue;
        } else if is_forwarding(n) {
            if !peer.trusted || n.contains('_') {
                doomed.push(name.clone());
            } else {
                trusted_forwarding = true;
            }
        } else if !peer.trusted && canonical_starts_with(n, FORWARDING_PREFIX) {
            doomed.push(name.clone());
        }
    }
    (doomed, trusted_forwarding)
}

/// The fields a client nominated in `Connection` that it may remove.
fn nominated(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut doomed = Vec::new();
    if headers.contains_key(http::header::CONNECTION) {
        for value in headers.get_all(http::header::CONNECTION) {
            let Ok(value) = value.to_str() else { continue };
            for token in value.split(',').map(str::trim) {
                if kept_option(token) {
                    continue;
                }
                // `from_bytes` reads the name in any case.
                if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                    doomed.push(name);
                }
            }
        }
    }
    doomed
}

/// A trusted proxy's `X-Forwarded-For` extended by its own address
/// (`client`); `None` when there is nothing to say.
fn extended_chain(headers: &HeaderMap, client: Option<&HeaderValue>) -> Option<HeaderValue> {
    let client = client.and_then(|v| v.to_str().ok());
    let hops: Vec<&str> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .chain(client)
        .collect();
    (!hops.is_empty())
        .then(|| HeaderValue::from_str(&hops.join(", ")).ok())
        .flatten()
}

/// Whether header `name` is `canonical` (a `claim_headers` name as stored:
/// lower-case, `-`) in any case and with `_` for `-`.
fn is_claim_name(name: &str, canonical: &str) -> bool {
    name.len() == canonical.len()
        && name.bytes().zip(canonical.bytes()).all(|(a, b)| {
            let a = if a == b'_' {
                b'-'
            } else {
                a.to_ascii_lowercase()
            };
            a == b
        })
}

/// Removes every client copy of the `claim_headers` names (every app's), in
/// any case and with `_` for `-` (the names are stored canonical,
/// lower-case). Done for every request, public paths and absent claims
/// included.
pub fn strip_claim_headers(headers: &mut HeaderMap, names: &[String]) {
    if names.is_empty() {
        return;
    }
    let doomed: Vec<HeaderName> = headers
        .keys()
        .filter(|k| names.iter().any(|n| is_claim_name(k.as_str(), n)))
        .cloned()
        .collect();
    for name in doomed {
        headers.remove(name);
    }
}

/// Longest claim header value emitted; a longer one is left out.
const MAX_CLAIM_HEADER_BYTES: usize = 4096;

/// A claim as a header value: strings as they are, numbers and booleans
/// printed, arrays of those comma-joined; objects, nulls and unsafe text
/// (CR, LF, NUL, non-visible or non-ASCII, PRX-07) give nothing.
pub fn claim_header_value(claim: &Value) -> Option<HeaderValue> {
    fn scalar(v: &Value) -> Option<String> {
        match v {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }
    let text = match claim {
        // An element holding a comma would read as two: it is left out, as
        // the groups header does, so `["a,b"]` can never pass for `a` and `b`.
        Value::Array(items) => items
            .iter()
            .map(scalar)
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .filter(|item| !item.contains(','))
            .collect::<Vec<_>>()
            .join(","),
        other => scalar(other)?,
    };
    let safe = header_safe(&text)?;
    if safe.len() > MAX_CLAIM_HEADER_BYTES {
        return None;
    }
    HeaderValue::from_str(safe).ok()
}

/// The app's claim headers for a principal's claims (dotted paths into them);
/// a claim that is absent or unsafe gives no header.
pub fn claim_headers(
    names: &BTreeMap<String, String>,
    claims: &Value,
) -> Vec<(HeaderName, HeaderValue)> {
    names
        .iter()
        .filter_map(|(name, path)| {
            let value = claim_header_value(lookup(claims, path)?)?;
            Some((HeaderName::from_bytes(name.as_bytes()).ok()?, value))
        })
        .collect()
}

/// The request target to send upstream when the canonical path `forward`
/// differs from the path the client sent (the query is kept as sent). An
/// absolute-form target with no path (`http://app.example?x`) is sent with
/// its `/`: `Uri::path` reads it as `/`, but its own bytes are `?x`.
pub fn rewritten_target(uri: &http::Uri, forward: &str) -> Option<String> {
    let sent_with_slash = uri
        .path_and_query()
        .is_none_or(|pq| pq.as_str().starts_with('/'));
    if uri.path() == forward && sent_with_slash {
        return None;
    }
    Some(match uri.query() {
        Some(q) => format!("{forward}?{q}"),
        None => forward.to_string(),
    })
}

/// Whether an answer's `Transfer-Encoding` names `chunked` and nothing else
/// (over all its lines). Any other coding would reach the client as
/// content, undecoded and unlabelled, once the field gives way to the
/// client's own framing: such an answer is a 502, as nginx makes it.
pub fn only_chunked(headers: &HeaderMap) -> bool {
    let mut tokens = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    matches!(
        (tokens.next(), tokens.next()),
        (Some(only), None) if only.eq_ignore_ascii_case(b"chunked")
    )
}

/// What one pass over an upstream answer's fields finds: the hop-by-hop
/// fields that must not reach the client, whether its framing could be read
/// two ways, whether it switches to a WebSocket, and whether it sets a
/// cookie. Every answer passes here: a hashed lookup per name, and lines
/// looked up again to be read, cost more than one pass over a handful of
/// fields with their values in hand.
pub fn answer_fields(headers: &HeaderMap, status: u16) -> AnswerFields {
    static STANDARD: [HeaderName; 4] = [
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
        http::header::TE,
        http::header::TRAILER,
    ];
    let mut hop = HopByHop::default();
    let mut framing = FramingSeen::default();
    let mut upgrades = 0usize;
    let mut websocket = false;
    let mut set_cookie = false;
    // Most answers have none of the standard hop-by-hop names: no list is allocated.
    let mut standard: Vec<HeaderName> = Vec::new();
    for (name, value) in headers {
        if name == http::header::CONTENT_LENGTH {
            framing.length(value.as_bytes());
        } else if name == http::header::SET_COOKIE {
            set_cookie = true;
        } else if name == http::header::CONNECTION {
            hop.connection = true;
            nominated_by(value, headers, &mut hop.names);
        } else if name == http::header::TRANSFER_ENCODING {
            hop.transfer_encoding = true;
            framing.coding(value.as_bytes());
        } else if name == http::header::UPGRADE {
            upgrades += 1;
            websocket = value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"websocket");
            // `Upgrade` stays on a 101, which needs it.
            if status != 101 && standard.last() != Some(name) {
                standard.push(name.clone());
            }
        } else if STANDARD.contains(name) && standard.last() != Some(name) {
            // A name's values come one after another: listed once.
            standard.push(name.clone());
        }
    }
    hop.names.append(&mut standard);
    AnswerFields {
        hop,
        framing: framing.verdict(),
        websocket: upgrades == 1 && websocket,
        set_cookie,
    }
}

/// What [`answer_fields`] found.
#[derive(Debug)]
pub struct AnswerFields {
    /// The hop-by-hop fields.
    pub hop: HopByHop,
    /// `Err`, why the answer's length could be read two ways (PRX-23): it
    /// is answered with 502 and its connection is not reused.
    pub framing: Result<(), &'static str>,
    /// One `Upgrade` line, naming `websocket`.
    pub websocket: bool,
    /// The answer has `Set-Cookie`.
    pub set_cookie: bool,
}

/// An answer's `Content-Length` and `Transfer-Encoding` lines, read one by one.
#[derive(Debug, Default)]
struct FramingSeen<'a> {
    length: Lengths<'a>,
    /// A `Transfer-Encoding` line was seen.
    coded: bool,
    /// Its codings over all lines, and whether the first is `chunked`.
    codings: usize,
    chunked_first: bool,
}

impl<'a> FramingSeen<'a> {
    fn length(&mut self, value: &'a [u8]) {
        self.length.see(value);
    }

    fn coding(&mut self, value: &[u8]) {
        self.coded = true;
        for token in value.split(|&b| b == b',').map(<[u8]>::trim_ascii) {
            if token.is_empty() {
                continue;
            }
            if self.codings == 0 {
                self.chunked_first = token.eq_ignore_ascii_case(b"chunked");
            }
            self.codings += 1;
        }
    }

    /// `chunked` alone, or one valid length repeated, or neither.
    fn verdict(&self) -> Result<(), &'static str> {
        if self.coded && !(self.codings == 1 && self.chunked_first) {
            return Err("the upstream sent a transfer coding other than chunked");
        }
        if !self.length.seen() {
            return Ok(());
        }
        if self.coded {
            return Err("the upstream sent both Content-Length and Transfer-Encoding");
        }
        if self.length.length().is_none() {
            return Err("the upstream sent an invalid Content-Length");
        }
        Ok(())
    }
}

/// An answer's `Content-Length` lines, read one by one: the first value,
/// and whether a later one differs from it (as bytes: `3` and `03` differ).
#[derive(Debug, Default, Clone, Copy)]
pub struct Lengths<'a> {
    first: Option<&'a [u8]>,
    differs: bool,
}

impl<'a> Lengths<'a> {
    /// Reads one more `Content-Length` value.
    pub fn see(&mut self, value: &'a [u8]) {
        match self.first {
            None => self.first = Some(value),
            Some(first) => self.differs |= first != value,
        }
    }

    /// Whether any line was read.
    pub fn seen(&self) -> bool {
        self.first.is_some()
    }

    /// The length every line gives, when they are all the same digits (at
    /// most 18 of them: it fits, and hyper's own limit is never reached);
    /// `None` if any is not, or if there was none.
    pub fn length(&self) -> Option<u64> {
        let value = self.first.filter(|_| !self.differs)?;
        let valid = !value.is_empty() && value.len() <= 18 && value.iter().all(u8::is_ascii_digit);
        valid.then(|| value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
    }
}

/// The hop-by-hop fields of an answer (RFC 9110 §7.6.1).
#[derive(Debug, Default)]
pub struct HopByHop {
    /// The fields to remove: nominated ones first, then the standard ones
    /// (`Upgrade` but on a 101).
    pub names: Vec<HeaderName>,
    /// The answer has `Connection`, which the gateway replaces with its own
    /// on any answer but a tunnel's.
    pub connection: bool,
    /// The answer has `Transfer-Encoding`, which the gateway replaces alike.
    pub transfer_encoding: bool,
}

/// Adds to `out` the fields of `headers` one `Connection` value nominates.
fn nominated_by(value: &HeaderValue, headers: &HeaderMap, out: &mut Vec<HeaderName>) {
    // nginx says `Connection: keep-alive` on every answer: no parse for that.
    let bytes = value.as_bytes();
    if bytes.eq_ignore_ascii_case(b"keep-alive") || bytes.eq_ignore_ascii_case(b"close") {
        return;
    }
    let Ok(value) = value.to_str() else {
        return;
    };
    for token in value.split(',').map(str::trim) {
        if kept_option(token) {
            continue;
        }
        if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
            if headers.contains_key(&name) {
                out.push(name);
            }
        }
    }
}

/// Removes the gateway's own cookies from `Cookie` so they never reach the
/// upstream; lines are read as bytes, so one that is not UTF-8 is filtered too.
pub fn strip_gateway_cookies(headers: &mut HeaderMap, names: &[&str]) {
    use crate::session::cookie::{stripped, Stripped};
    let mut lines = headers.get_all(http::header::COOKIE).iter();
    let line = match (lines.next(), lines.next()) {
        // No `Cookie` line (a public path, a machine's request): looked up once.
        (None, _) => return,
        (Some(line), None) => line,
        (Some(_), Some(_)) => return strip_cookie_lines(headers, names),
    };
    // One line, the usual case: read once, and copied only when it changes.
    match stripped(line.as_bytes(), names) {
        Stripped::Unchanged => {}
        Stripped::Empty => {
            headers.remove(http::header::COOKIE);
        }
        Stripped::Kept(kept) => match HeaderValue::from_bytes(&kept) {
            Ok(kept) => {
                headers.insert(http::header::COOKIE, kept);
            }
            Err(_) => {
                headers.remove(http::header::COOKIE);
            }
        },
    }
}

/// [`strip_gateway_cookies`] for a request with several `Cookie` lines.
fn strip_cookie_lines(headers: &mut HeaderMap, names: &[&str]) {
    let ours = |v: &HeaderValue| {
        crate::session::cookie::pieces(v.as_bytes())
            .any(|pair| crate::session::cookie::pair_is_gateway_cookie(pair.trim_ascii(), names))
    };
    if !headers.get_all(http::header::COOKIE).iter().any(ours) {
        return;
    }
    let values: Vec<HeaderValue> = headers
        .get_all(http::header::COOKIE)
        .iter()
        .cloned()
        .collect();
    headers.remove(http::header::COOKIE);
    for v in values {
        if let Some(kept) = crate::session::cookie::without_bytes(v.as_bytes(), names) {
            if let Ok(kept) = HeaderValue::from_bytes(&kept) {
                headers.append(http::header::COOKIE, kept);
            }
        }
    }
}

/// Removes `Set-Cookie` headers of the upstream that would overwrite a
/// gateway cookie (PRX-23); the name is read as bytes, so a value that is not
/// UTF-8 cannot hide one.
pub fn drop_gateway_set_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let owned =
        |v: &HeaderValue| crate::session::cookie::pair_is_gateway_cookie(v.as_bytes(), names);
    if !headers.get_all(http::header::SET_COOKIE).iter().any(owned) {
        return;
    }
    let kept: Vec<HeaderValue> = headers
        .get_all(http::header::SET_COOKIE)
        .iter()
        .filter(|v| !owned(v))
        .cloned()
        .collect();
    headers.remove(http::header::SET_COOKIE);
    for v in kept {
        headers.append(http::header::SET_COOKIE, v);
    }
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
            "Remote_User",
            "remote-user",
            "REMOTE-EMAIL",
            "Remote_Groups",
            "remote-name",
        ] {
            assert!(is_spoofable(n), "{n}");
        }
        for n in [
            "X-Forwarded-For",
            "X-Forwarded-Proto",
            "Authorization",
            "X-User",
            "Remote-Addr",
            "Referer",
        ] {
            assert!(!is_spoofable(n), "{n}");
        }
    }

    #[test]
    fn prx05_every_spelling_of_a_forwarding_header_is_one_and_no_other_name_is() {
        for n in [
            "X-Forwarded-For",
            "x_forwarded_proto",
            "X-REAL-IP",
            "Forwarded",
            "x-original_url",
        ] {
            assert!(is_forwarding(n), "{n}");
        }
        for n in [
            "X-Forwarded-Fo",
            "X-Forwarded-For-Real",
            "Forwarded-By",
            "Host",
            "X-Forwarded-User",
            "",
        ] {
            assert!(!is_forwarding(n), "{n}");
        }
        assert!(!is_spoofable("X-Forwarded-Use"));
        assert!(!is_spoofable("X-Auth-Request"));
    }

    fn map(lines: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in lines {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    /// The fields the upstream gets: the map's, then those set beside it.
    fn filtered(lines: &[(&str, &str)], peer: &Peer<'_>) -> HeaderMap {
        let mut h = map(lines);
        let mut set = Forwarding::default();
        filter_request_headers(&mut h, peer, &mut set);
        for (name, value) in set.fields() {
            assert!(
                !h.contains_key(name),
                "{name} both in the map and beside it"
            );
            h.append(name.clone(), value.clone());
        }
        h
    }

    fn values<'a>(h: &'a HeaderMap, name: &str) -> Vec<&'a str> {
        h.get_all(name)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    static CLIENT: HeaderValue = HeaderValue::from_static("10.1.2.3");
    static HOST: HeaderValue = HeaderValue::from_static("wiki.example:8080");

    static UNTRUSTED: Peer<'static> = Peer {
        client: Some(&CLIENT),
        real_ip: Some(&CLIENT),
        trusted: false,
        scheme: &HTTP,
        host: Some(&HOST),
    };

    static TRUSTED: Peer<'static> = Peer {
        trusted: true,
        ..UNTRUSTED
    };

    #[test]
    fn prx02_prx04_repeated_and_connection_nominated_fields_are_removed() {
        let h = filtered(
            &[
                ("X-Forwarded-User", "a"),
                ("x-forwarded-user", "b"),
                ("X_Forwarded_Email", "c"),
                ("Connection", "keep-alive, X-Secret"),
                ("connection", "Authorization"),
                ("X-Secret", "s"),
                ("Authorization", "Basic eDp5"),
                ("X-Kept", "k"),
            ],
            &UNTRUSTED,
        );
        assert!(h.get("x-forwarded-user").is_none());
        assert!(h.get("x_forwarded_email").is_none());
        assert!(h.get("x-secret").is_none());
        assert!(h.get("authorization").is_none());
        assert_eq!(values(&h, "x-kept"), ["k"]);
    }

    #[test]
    fn prx04_nominated_gateway_headers_still_reach_the_upstream_and_framing_stays() {
        let h = filtered(
            &[
                (
                    "Connection",
                    "close, X-Forwarded-For, X-Forwarded-Proto, X-Real-IP, Host, Content-Length",
                ),
                ("Host", "wiki.example"),
                ("Content-Length", "5"),
                ("X-Forwarded-For", "6.6.6.6"),
            ],
            &TRUSTED,
        );
        // Nominated by the client, so the trusted proxy's value is dropped and
        // the gateway's own is set after.
        assert_eq!(values(&h, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(values(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&h, "x-real-ip"), ["10.1.2.3"]);
        // A client cannot make the upstream lose the request's host or framing.
        assert_eq!(values(&h, "host"), ["wiki.example"]);
        assert_eq!(values(&h, "content-length"), ["5"]);
    }

    #[test]
    fn hop_by_hop_fields_and_expect_never_reach_the_upstream() {
        let h = filtered(
            &[
                ("Connection", "keep-alive"),
                ("TE", "trailers"),
                ("Trailer", "x-sum"),
                ("Transfer-Encoding", "chunked"),
                ("Upgrade", "h2c"),
                ("Expect", "100-continue"),
                ("Keep-Alive", "timeout=5"),
                ("Proxy-Connection", "keep-alive"),
                ("Accept", "text/html"),
            ],
            &UNTRUSTED,
        );
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "accept",
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-real-ip"
            ]
        );
    }

    #[test]
    fn prx05_forwarding_headers_from_untrusted_peers_are_removed_or_replaced() {
        let spoofed = [
            ("X-Forwarded-For", "6.6.6.6"),
            ("x-forwarded-for", "7.7.7.7"),
            ("X_Forwarded_For", "8.8.8.8"),
            ("X-Forwarded-Proto", "https"),
            ("X-Forwarded-Host", "admin.example"),
            ("X-Forwarded-Port", "443"),
            ("X-Forwarded-Uri", "/public/"),
            ("X_Forwarded_Uri", "/public/"),
            ("X-Forwarded-Prefix", "/admin"),
            ("X-Forwarded-Method", "GET"),
            ("X-Original-URL", "http://wiki.example/public/"),
            ("X_Original_URL", "http://wiki.example/public/"),
            ("X-Original-URI", "/public/"),
            ("X-Real-IP", "1.1.1.1"),
            ("X_Real_IP", "1.1.1.1"),
            ("Forwarded", "for=1.1.1.1;proto=https"),
            ("X-Portcullis-Assertion", "forged"),
            ("x_portcullis_anything", "forged"),
            ("X-Forwarded-Access-Token", "forged"),
            ("X_Forwarded_Access_Token", "forged"),
            ("X-Forwarded-Ssl", "on"),
            ("X_Forwarded_Client_Cert", "forged"),
            ("X-Kept", "k"),
        ];
        let h = filtered(&spoofed, &UNTRUSTED);
        let mut names: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "x-forwarded-for",
                "x-forwarded-host",
                "x-forwarded-proto",
                "x-kept",
                "x-real-ip"
            ]
        );
        assert_eq!(values(&h, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(values(&h, "x-forwarded-proto"), ["http"]);
        assert_eq!(values(&h, "x-forwarded-host"), ["wiki.example:8080"]);
        assert_eq!(values(&h, "x-real-ip"), ["10.1.2.3"]);

        // A trusted proxy's own (`-` spelled) values are kept, its chain extended;
        // `_` spellings and gateway-owned headers still go.
        let h = filtered(&spoofed, &TRUSTED);
        assert_eq!(
            values(&h, "x-forwarded-for"),
            ["6.6.6.6, 7.7.7.7, 10.1.2.3"]
        );
        assert_eq!(values(&h, "x-forwarded-proto"), ["https"]);
        assert_eq!(values(&h, "x-forwarded-host"), ["admin.example"]);
        assert_eq!(values(&h, "x-forwarded-uri"), ["/public/"]);
        assert_eq!(
            values(&h, "x-original-url"),
            ["http://wiki.example/public/"]
        );
        assert_eq!(values(&h, "x-real-ip"), ["1.1.1.1"]);
        assert_eq!(values(&h, "forwarded"), ["for=1.1.1.1;proto=https"]);
        assert_eq!(values(&h, "x-forwarded-ssl"), ["on"]);
        for gone in [
            "x_forwarded_for",
            "x_forwarded_uri",
            "x_original_url",
            "x_real_ip",
            "x-portcullis-assertion",
            "x_portcullis_anything",
            "x-forwarded-access-token",
            "x_forwarded_access_token",
        ] {
            assert!(h.get(gone).is_none(), "{gone} reached the upstream");
        }

        // Without a client address or host, nothing false is said either.
        let blind = Peer {
            client: None,
            real_ip: None,
            host: None,
            ..UNTRUSTED
        };
        let h = filtered(&spoofed, &blind);
        assert!(h.get("x-forwarded-for").is_none());
        assert!(h.get("x-forwarded-host").is_none());
        assert!(h.get("x-real-ip").is_none());
    }

    #[test]
    fn an_address_is_written_as_a_header_value_whatever_its_length() {
        for ip in [
            "10.1.2.3",
            "2001:db8::7",
            "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255",
        ] {
            let parsed: std::net::IpAddr = ip.parse().unwrap();
            let v = ip_value(parsed).unwrap();
            assert_eq!(v.to_str().unwrap(), parsed.to_string());
        }
    }

    #[test]
    fn a_trusted_proxy_that_sends_no_x_real_ip_gets_its_client_s_address_as_x_real_ip() {
        static BEHIND: HeaderValue = HeaderValue::from_static("203.0.113.9");
        let behind_proxy = Peer {
            real_ip: Some(&BEHIND),
            ..TRUSTED
        };
        let h = filtered(&[("X-Forwarded-For", "203.0.113.9")], &behind_proxy);
        assert_eq!(values(&h, "x-real-ip"), ["203.0.113.9"]);
        assert_eq!(values(&h, "x-forwarded-for"), ["203.0.113.9, 10.1.2.3"]);
        // Its own X-Real-IP, when it sends one, is kept.
        let h = filtered(&[("X-Real-IP", "198.51.100.4")], &behind_proxy);
        assert_eq!(values(&h, "x-real-ip"), ["198.51.100.4"]);
        // A chain its client nominated away names nobody.
        let h = filtered(
            &[
                ("X-Forwarded-For", "203.0.113.9"),
                ("Connection", "X-Forwarded-For"),
            ],
            &behind_proxy,
        );
        assert_eq!(values(&h, "x-forwarded-for"), ["10.1.2.3"]);
        assert_eq!(values(&h, "x-real-ip"), ["10.1.2.3"]);
    }

    #[test]
    fn a_cookie_line_that_is_not_utf8_still_loses_the_gateway_cookies() {
        let names = ["__Host-portcullis", "__Host-portcullis_login"];
        let mut h = HeaderMap::new();
        h.append(
            http::header::COOKIE,
            HeaderValue::from_bytes(b"__Host-portcullis=sealed; x=\xc3\xa9; y=1").unwrap(),
        );
        h.append(
            http::header::COOKIE,
            HeaderValue::from_static("__Host-portcullis_login-0123456789abcdef=s"),
        );
        strip_gateway_cookies(&mut h, &names);
        let left: Vec<&[u8]> = h
            .get_all(http::header::COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(left, vec![&b"x=\xc3\xa9; y=1"[..]]);
    }

    #[test]
    fn prx23_an_upstream_set_cookie_for_a_gateway_cookie_is_dropped_even_when_not_utf8() {
        let names = ["__Host-portcullis"];
        let mut h = HeaderMap::new();
        h.append(
            http::header::SET_COOKIE,
            HeaderValue::from_bytes(b"__Host-portcullis=attacker; Path=/; Secure; x=\xc3\xa9")
                .unwrap(),
        );
        h.append(
            http::header::SET_COOKIE,
            HeaderValue::from_bytes(b" __Host-portcullis =y").unwrap(),
        );
        // Nameless: a browser would send it back as `__Host-portcullis=z`.
        h.append(
            http::header::SET_COOKIE,
            HeaderValue::from_static(" =__Host-portcullis=z; Path=/; Secure"),
        );
        h.append(
            http::header::SET_COOKIE,
            HeaderValue::from_static("app=1; Path=/"),
        );
        drop_gateway_set_cookies(&mut h, &names);
        let left: Vec<&[u8]> = h
            .get_all(http::header::SET_COOKIE)
            .iter()
            .map(|v| v.as_bytes())
            .collect();
        assert_eq!(left, vec![&b"app=1; Path=/"[..]]);
    }

    #[test]
    fn prx23_ambiguous_upstream_framing_is_refused_and_hop_by_hop_fields_removed() {
        for lines in [
            &[("content-length", "5"), ("transfer-encoding", "chunked")][..],
            &[("content-length", "5"), ("content-length", "6")],
            &[("content-length", "+5")],
            &[("content-length", "")],
            &[("content-length", "0x10")],
            // A coding other than chunked alone would reach the client undecoded.
            &[("transfer-encoding", "gzip")],
            &[("transfer-encoding", "gzip, chunked")],
            &[("transfer-encoding", "chunked, gzip")],
            &[
                ("transfer-encoding", "chunked"),
                ("transfer-encoding", "chunked"),
            ],
            &[("transfer-encoding", "")],
        ] {
            assert!(
                answer_fields(&map(lines), 200).framing.is_err(),
                "{lines:?}"
            );
        }
        for lines in [
            &[("content-length", "5")][..],
            &[("content-length", "5"), ("content-length", "5")],
            &[("transfer-encoding", "chunked")],
            &[("transfer-encoding", " Chunked ")],
            &[],
        ] {
            assert!(answer_fields(&map(lines), 200).framing.is_ok(), "{lines:?}");
        }
        let h = map(&[
            ("connection", "X-Hop, close"),
            ("x-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "x"),
            ("upgrade", "websocket"),
            ("content-length", "5"),
            ("x-kept", "k"),
        ]);
        let names = |status| -> Vec<String> {
            answer_fields(&h, status)
                .hop
                .names
                .iter()
                .map(|n| n.to_string())
                .collect()
        };
        assert_eq!(
            names(200),
            ["x-hop", "keep-alive", "proxy-connection", "upgrade"]
        );
        assert_eq!(names(101), ["x-hop", "keep-alive", "proxy-connection"]);
    }

    #[test]
    fn one_pass_over_an_answer_tells_a_websocket_switch_and_a_set_cookie() {
        let seen = |lines: &[(&'static str, &'static str)]| {
            let f = answer_fields(&map(lines), 101);
            (f.websocket, f.set_cookie)
        };
        assert_eq!(seen(&[("upgrade", "websocket")]), (true, false));
        assert_eq!(seen(&[("upgrade", " WebSocket ")]), (true, false));
        assert_eq!(seen(&[("upgrade", "h2c")]), (false, false));
        assert_eq!(seen(&[("upgrade", "websocket, h2c")]), (false, false));
        assert_eq!(
            seen(&[("upgrade", "websocket"), ("upgrade", "websocket")]),
            (false, false)
        );
        assert_eq!(
            seen(&[("upgrade", "h2c"), ("set-cookie", "a=1")]),
            (false, true)
        );
        assert_eq!(seen(&[("x-upgrade", "websocket")]), (false, false));
        assert_eq!(seen(&[]), (false, false));
    }

    #[test]
    fn prx07_claim_headers_carry_safe_claims_only() {
        let names: BTreeMap<String, String> = [
            ("x-team", "org.team"),
            ("x-repo", "repository"),
            ("x-roles", "roles"),
            ("x-level", "level"),
            ("x-evil", "evil"),
            ("x-missing", "nope.nope"),
            ("x-object", "org"),
            ("x-mixed", "mixed"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let claims = serde_json::json!({
            "org": {"team": "platform"},
            "repository": "acme/deploy",
            "roles": ["a", "b"],
            "level": 3,
            "evil": "x\r\nX-Forwarded-User: root",
            "mixed": ["a", {"b": 1}],
        });
        let got: Vec<(String, String)> = claim_headers(&names, &claims)
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("x-level".to_string(), "3".to_string()),
                ("x-repo".into(), "acme/deploy".into()),
                ("x-roles".into(), "a,b".into()),
                ("x-team".into(), "platform".into()),
            ]
        );
        for bad in [
            serde_json::json!("tab\there"),
            serde_json::json!("nul\u{0}"),
            serde_json::json!("zoë"),
            serde_json::json!(null),
            serde_json::json!("x".repeat(5000)),
        ] {
            assert_eq!(claim_header_value(&bad), None, "{bad}");
        }
        // An element with a comma would pass for two: it is left out.
        let roles = serde_json::json!(["admin,ops", "dev"]);
        assert_eq!(claim_header_value(&roles).unwrap(), "dev");
    }

    #[test]
    fn prx03_client_copies_of_claim_headers_go_in_every_spelling() {
        let names = ["x-team".to_string()];
        let mut h = map(&[
            ("X-Team", "spoofed"),
            ("x_team", "spoofed"),
            ("X_TEAM", "spoofed"),
            ("x-teams", "kept"),
        ]);
        strip_claim_headers(&mut h, &names);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(values(&h, "x-teams"), vec!["kept"]);
    }

    #[test]
    fn prx06_only_a_changed_path_rewrites_the_target() {
        let uri: http::Uri = "/admin?x=1".parse().unwrap();
        assert_eq!(rewritten_target(&uri, "/admin"), None);
        let uri: http::Uri = "//%61dmin?x=%2F".parse().unwrap();
        assert_eq!(
            rewritten_target(&uri, "/admin").as_deref(),
            Some("/admin?x=%2F")
        );
        let uri: http::Uri = "//admin".parse().unwrap();
        assert_eq!(rewritten_target(&uri, "/admin").as_deref(), Some("/admin"));
        // Absolute form without a path: its own bytes are `?x`, not `/?x`.
        let uri: http::Uri = "http://wiki.example?x".parse().unwrap();
        assert_eq!(rewritten_target(&uri, "/").as_deref(), Some("/?x"));
        let uri: http::Uri = "http://wiki.example/?x".parse().unwrap();
        assert_eq!(rewritten_target(&uri, "/"), None);
    }
}
