//! The gateway's cookies: sealing payloads with AES-256-GCM (keys derived by HKDF, rotation),
//! finding one cookie in `Cookie` headers, and building `Set-Cookie` values.
//! Pure: no I/O, no clock; expiry is the caller's check, with its own `now`.

use std::fmt;

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::error::Unspecified;
use aws_lc_rs::hkdf::{self, Salt, HKDF_SHA256};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use cookie::{Cookie, SameSite};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::Secret;

/// Browsers drop a cookie whose name + value exceed this (RFC 6265bis §5.6), so nothing larger is
/// set, and nothing larger is worth decoding.
pub const MAX_COOKIE_BYTES: usize = 4096;

/// The format byte that starts every sealed value; a new format gets a new byte.
const VERSION: u8 = 1;
/// Fixed HKDF salt: the secrets are already uniformly random, so the salt only separates this use.
const HKDF_SALT: &[u8] = b"portcullis session cookie salt";
/// HKDF info for the AEAD key.
const KEY_INFO: &[u8] = b"portcullis cookie v1";
/// HKDF info for the one-byte key hint; domain-separated from the AEAD key.
const KEY_ID_INFO: &[u8] = b"portcullis cookie v1 key id";
/// A sealed value, before base64url: version(1) || key hint(1) || nonce(12) || ciphertext || tag(16).
/// This is the length of the part before the ciphertext.
const HEADER_LEN: usize = 2 + NONCE_LEN;

/// Why a cookie could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The cookie did not open (tampered, truncated, oversize, foreign or retired key, another
    /// cookie's or purpose's value, unreadable payload): treat it as absent and clear it.
    #[error("the cookie could not be opened")]
    Invalid,
    /// The payload could not be serialized to JSON: a bug in the payload type; answer 500.
    #[error("the cookie payload could not be serialized: {0}")]
    Serialize(serde_json::Error),
    /// The sealed cookie would exceed 4096 bytes (name + value) and browsers would drop it: a bug
    /// (the payload grew); answer 500 rather than set it.
    #[error(
        "the sealed cookie would be {bytes} bytes (name + value), over the 4096 browsers keep"
    )]
    TooLarge {
        /// Name + sealed value, in bytes.
        bytes: usize,
    },
    /// No session secret is configured: config validation should have refused to start; answer 500.
    #[error("no session secret is configured")]
    NoKey,
    /// The system random generator or the cipher failed: answer 500 and set nothing (never seal
    /// without a fresh nonce).
    #[error("the system random generator or the cipher failed")]
    Crypto,
}

/// What a sealed value is for; bound into the associated data so one cannot stand in for another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The session cookie: who is signed in.
    Session,
    /// The login-state cookie: one sign-in attempt in progress.
    LoginState,
    /// A session's source tokens in the store (`context` is the session id).
    Tokens,
}

impl Purpose {
    fn tag(self) -> u8 {
        match self {
            Purpose::Session => 1,
            Purpose::LoginState => 2,
            Purpose::Tokens => 3,
        }
    }
}

/// A value that opened, and whether it was sealed with a key other than the current one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Opened<T> {
    /// The payload.
    pub value: T,
    /// Opened with an older key: re-seal it with the current key (SES-05).
    pub stale_key: bool,
}

struct Key {
    /// A hint in the cookie, derived from the secret (not its position in the list, which shifts
    /// when a new secret is put in front), so `open` usually tries one key.
    id: u8,
    aead: LessSafeKey,
}

/// Seals and opens cookie payloads with the keys derived from the session secrets.
pub struct Sealer {
    /// The first key seals; every key opens.
    keys: Vec<Key>,
}

impl fmt::Debug for Sealer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealer")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

/// `hkdf::KeyType` for the one-byte key hint.
struct KeyIdLen;

impl hkdf::KeyType for KeyIdLen {
    fn len(&self) -> usize {
        1
    }
}

fn derive_key(secret: &[u8]) -> Result<Key, Unspecified> {
    let prk = Salt::new(HKDF_SHA256, HKDF_SALT).extract(secret);
    let aead = LessSafeKey::new(UnboundKey::from(prk.expand(&[KEY_INFO], &AES_256_GCM)?));
    let mut id = [0u8; 1];
    prk.expand(&[KEY_ID_INFO], KeyIdLen)?.fill(&mut id)?;
    let [id] = id;
    Ok(Key { id, aead })
}

/// Associated data: the cookie's own header bytes and what the ciphertext is for, fixed-width
/// fields before the one variable-length field, so no two contexts share an encoding (SES-04,
/// SES-14). Opening passes the header as read, so even a header byte the checks would let
/// through cannot be changed without failing the tag.
fn associated_data(version: u8, key_id: u8, purpose: Purpose, cookie_name: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(3 + cookie_name.len());
    aad.extend_from_slice(&[version, key_id, purpose.tag()]);
    aad.extend_from_slice(cookie_name.as_bytes());
    aad
}

impl Sealer {
    /// Derives one key per secret; the first seals, all open.
    pub fn new(secrets: &[Secret<Vec<u8>>]) -> Sealer {
        // Derivation only fails for output lengths HKDF-SHA256 cannot produce, which these are
        // not; if it ever did, hold no key at all so that nothing seals or opens (fail closed),
        // rather than silently sealing with the second secret.
        let keys = secrets
            .iter()
            .map(|secret| derive_key(secret.expose()))
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_default();
        Sealer { keys }
    }

    /// Seals `value` as JSON for the cookie `cookie_name` and `purpose`: base64url, no padding.
    pub fn seal<T: Serialize>(
        &self,
        cookie_name: &str,
        purpose: Purpose,
        value: &T,
    ) -> Result<String, SessionError> {
        let sealed = self.seal_unbounded(cookie_name, purpose, value)?;
        let bytes = cookie_name.len() + sealed.len();
        if bytes > MAX_COOKIE_BYTES {
            return Err(SessionError::TooLarge { bytes });
        }
        Ok(sealed)
    }

    fn seal_unbounded<T: Serialize>(
        &self,
        cookie_name: &str,
        purpose: Purpose,
        value: &T,
    ) -> Result<String, SessionError> {
        let key = self.keys.first().ok_or(SessionError::NoKey)?;
        // A fresh random nonce per seal (SES-15): replicas share keys but no counter.
        let mut nonce = [0u8; NONCE_LEN];
        crate::random::fill(&mut nonce).map_err(|_| SessionError::Crypto)?;
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&[VERSION, key.id]);
        buf.extend_from_slice(&nonce);
        serde_json::to_writer(&mut buf, value).map_err(SessionError::Serialize)?;
        let aad = associated_data(VERSION, key.id, purpose, cookie_name);
        let plaintext = buf.get_mut(HEADER_LEN..).ok_or(SessionError::Crypto)?;
        let tag = key
            .aead
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                plaintext,
            )
            .map_err(|_| SessionError::Crypto)?;
        buf.extend_from_slice(tag.as_ref());
        Ok(URL_SAFE_NO_PAD.encode(&buf))
    }

    /// Seals a value kept in the store rather than a cookie (no cookie size
    /// bound), bound to `context` (the session id) and `purpose`.
    pub fn seal_stored<T: Serialize>(
        &self,
        context: &str,
        purpose: Purpose,
        value: &T,
    ) -> Result<String, SessionError> {
        self.seal_unbounded(context, purpose, value)
    }

    /// Opens a value sealed by [`Sealer::seal_stored`] (at most `max_len` bytes of text).
    pub fn open_stored<T: DeserializeOwned>(
        &self,
        context: &str,
        purpose: Purpose,
        sealed: &str,
        max_len: usize,
    ) -> Result<Opened<T>, SessionError> {
        self.open_bounded(context, purpose, sealed, max_len)
    }

    /// Opens a value sealed for `cookie_name` and `purpose` by any of the keys.
    pub fn open<T: DeserializeOwned>(
        &self,
        cookie_name: &str,
        purpose: Purpose,
        sealed: &str,
    ) -> Result<Opened<T>, SessionError> {
        self.open_bounded(cookie_name, purpose, sealed, MAX_COOKIE_BYTES)
    }

    fn open_bounded<T: DeserializeOwned>(
        &self,
        cookie_name: &str,
        purpose: Purpose,
        sealed: &str,
        max_len: usize,
    ) -> Result<Opened<T>, SessionError> {
        use SessionError::Invalid;
        if sealed.len() > max_len {
            return Err(Invalid);
        }
        // The engine is strict: no padding, no `+`/`/`, no non-zero trailing bits, so each value
        // has exactly one spelling.
        let bytes = URL_SAFE_NO_PAD.decode(sealed).map_err(|_| Invalid)?;
        let (&version, rest) = bytes.split_first().ok_or(Invalid)?;
        let (&key_id, rest) = rest.split_first().ok_or(Invalid)?;
        let (nonce, ciphertext) = rest.split_at_checked(NONCE_LEN).ok_or(Invalid)?;
        if version != VERSION || ciphertext.len() < AES_256_GCM.tag_len() {
            return Err(Invalid);
        }
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Invalid)?;
        let aad = associated_data(version, key_id, purpose, cookie_name);
        // Several keys share a hint one time in 256; try each, current key first.
        for (index, key) in self.keys.iter().enumerate().filter(|(_, k)| k.id == key_id) {
            // A failed open may scribble on its buffer, so each attempt gets a fresh copy.
            let mut buf = ciphertext.to_vec();
            let Ok(plaintext) = key.aead.open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut buf,
            ) else {
                continue;
            };
            // Authentic but not this type (a payload from an older release): no session either.
            let value = serde_json::from_slice(plaintext).map_err(|_| Invalid)?;
            return Ok(Opened {
                value,
                stale_key: index != 0,
            });
        }
        Err(Invalid)
    }
}

/// Whether a payload with expiry `exp` is expired at `now` (unix seconds; `exp` itself is too late).
pub fn is_expired(exp: u64, now: u64) -> bool {
    now >= exp
}

/// The session cookie's name: `__Host-{base}` on https, so a sibling domain cannot set it.
pub fn cookie_name(base: &str, secure: bool) -> String {
    if secure {
        format!("__Host-{base}")
    } else {
        base.to_string()
    }
}

/// The session cookie's name when it is shared by a parent domain
/// (`session.cookie_domain`): `__Secure-{base}` on https (`__Host-` forbids
/// `Domain`), `{base}` on http.
pub fn shared_cookie_name(base: &str, secure: bool) -> String {
    if secure {
        format!("__Secure-{base}")
    } else {
        base.to_string()
    }
}

/// The login-state cookie's name: the session cookie's name plus `_login`.
pub fn login_cookie_name(base: &str, secure: bool) -> String {
    format!("{}_login", cookie_name(base, secure))
}

/// How many sign-ins one browser may have in progress at once (OA2-23): starting another drops
/// the oldest, so a page opening logins in a loop cannot grow the `Cookie` header without bound.
pub const MAX_LOGIN_FLOWS: usize = 5;

/// Hex digits of SHA-256(state) in a login flow's cookie name: 64 bits, so two live flows of one
/// browser never share a name by chance.
const FLOW_TAG_HEX: usize = 16;

/// The cookie of one login flow, `{login_base}-{tag}` with the tag taken from the flow's `state`
/// (OAuth 1.0a: the request token): each tab's sign-in keeps its own state (OA2-23), and the
/// callback finds it by the `state` (or `oauth_token`) the provider sends back.
pub fn flow_cookie_name(login_base: &str, state: &str) -> String {
    use std::fmt::Write as _;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, state.as_bytes());
    let mut name = format!("{login_base}-");
    for b in digest.as_ref().iter().take(FLOW_TAG_HEX / 2) {
        let _ = write!(name, "{b:02x}");
    }
    name
}

/// Whether `name` is one of `login_base`'s flow cookies: `{login_base}-` and 16 lowercase hex digits.
pub fn is_flow_cookie(name: &str, login_base: &str) -> bool {
    name.strip_prefix(login_base)
        .and_then(|rest| rest.strip_prefix('-'))
        .is_some_and(|tag| {
            tag.len() == FLOW_TAG_HEX
                && tag
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        })
}

/// Whether `name` is one of the gateway's cookies: one of `names`, or a flow cookie
/// (`{name}-{16 hex}`) of one of them; the gateway only sets those for its login name, but the
/// whole pattern is its namespace. What the upstream may neither see nor set.
pub fn is_gateway_cookie(name: &str, names: &[&str]) -> bool {
    names.iter().any(|n| name == *n || is_flow_cookie(name, n))
}

/// This browser's login cookies under `login_base` (every flow's, and the base name itself, which
/// older releases used), name and value, malformed values included: all of them are ours.
pub fn login_cookies<'a>(
    cookie_headers: impl Iterator<Item = &'a str>,
    login_base: &str,
) -> Vec<(&'a str, &'a str)> {
    let mut found = Vec::new();
    for header in cookie_headers {
        for pair in Cookie::split_parse(header).flatten() {
            if let (Some(name), Some(value)) = (pair.name_raw(), pair.value_raw()) {
                if (name == login_base || is_flow_cookie(name, login_base))
                    && !found.iter().any(|(n, _)| *n == name)
                {
                    found.push((name, value));
                }
            }
        }
    }
    found
}

/// Which login cookies to drop before a new flow starts, given each one's expiry (`None`: it
/// did not open), in the order the browser sent them: the unreadable and expired ones, then the
/// oldest until, with the new flow, at most [`MAX_LOGIN_FLOWS`] stay live (OA2-23).
pub fn flows_to_drop(flows: &[(&str, Option<u64>)], now: u64) -> Vec<String> {
    let mut live: Vec<(&str, u64)> = Vec::new();
    let mut drop = Vec::new();
    for (name, exp) in flows {
        match exp {
            Some(exp) if !is_expired(*exp, now) => live.push((name, *exp)),
            _ => drop.push(name.to_string()),
        }
    }
    // Every flow lives the same 10 minutes, so the earliest expiry is the oldest start; flows
    // started in the same second keep the order the browser listed them in, which is creation
    // order (RFC 6265 §5.4): the sort is stable.
    live.sort_by_key(|(_, exp)| *exp);
    let excess = (live.len() + 1).saturating_sub(MAX_LOGIN_FLOWS);
    drop.extend(live.iter().take(excess).map(|(name, _)| name.to_string()));
    drop
}

/// What the `Cookie` headers hold under one name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup<'a> {
    /// No well-formed cookie with that name.
    Absent,
    /// Exactly one, with this value.
    One(&'a str),
    /// More than one: treat as absent, never pick one (SES-09, cookie tossing).
    Many,
}

/// RFC 6265 `cookie-octet`s, unquoted: what a cookie value may hold. Quoted values count as
/// malformed; nothing the gateway sets is quoted.
fn is_cookie_value(s: &str) -> bool {
    s.bytes()
        .all(|b| COOKIE_OCTET.get(usize::from(b)).copied().unwrap_or(false))
}

/// RFC 6265 cookie-octets, as a table: a session cookie's 200-odd bytes are
/// checked on every request.
// `b` stays below 256, the table's length (and a const block cannot call `get_mut`).
#[allow(clippy::indexing_slicing)]
static COOKIE_OCTET: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0;
    while b < 256 {
        table[b] = matches!(b, 0x21 | 0x23..=0x2B | 0x2D..=0x3A | 0x3C..=0x5B | 0x5D..=0x7E);
        b += 1;
    }
    table
};

/// Finds the cookie `name` in every `Cookie` header; malformed pairs are skipped (SES-13).
/// A pair is read as the `cookie` crate's `split_parse` reads it (split at
/// `;`, then at the first `=`, each side trimmed, the value raw), without
/// building a cookie per pair (a test holds the two to the same answers).
pub fn find<'a>(cookie_headers: impl Iterator<Item = &'a str>, name: &str) -> Lookup<'a> {
    one_of(values_named(cookie_headers, name).filter(|v| is_cookie_value(v)))
}

/// The value of the one pair named `name`, whatever bytes it holds; `None`
/// when there is none or more than one. For a value the caller already
/// knows to be well-formed (it equals one it read through [`find`]
/// before): the check of each byte is then skipped, and a value it does
/// not know goes through [`find`]. `lines` are those [`visible`] passes,
/// read as bytes: a pair is split and trimmed as [`find`] does it.
pub fn sole_unchecked<'a>(lines: impl Iterator<Item = &'a [u8]>, name: &str) -> Option<&'a [u8]> {
    let mut values = lines.flat_map(pieces).filter_map(|piece| {
        let eq = memchr::memchr(b'=', piece)?;
        let (pair_name, value) = (piece.get(..eq)?, piece.get(eq + 1..)?);
        (pair_name.trim_ascii() == name.as_bytes()).then(|| value.trim_ascii())
    });
    match (values.next(), values.next()) {
        (Some(value), None) => Some(value),
        _ => None,
    }
}

/// Whether a `Cookie` line is one `HeaderValue::to_str` reads (visible
/// ASCII and tabs), which is how every line reaches [`find`]. Tested without
/// stopping early, so that it compiles to vector code: a line carrying a
/// session cookie is a few hundred bytes, read on every request.
pub fn visible(line: &[u8]) -> bool {
    line.iter()
        .map(|&b| u8::from(!(b == b'\t' || (0x20..0x7f).contains(&b))))
        .fold(0, |bad, b| bad | b)
        == 0
}

/// What of a `Cookie` line is read: the whole line when it is [`visible`]
/// (the usual case: no second pass over it), else each of its `;`-separated
/// pairs that is (SES-13: a malformed pair, a non-ASCII `note=café` an app
/// set, is skipped; the pairs beside it still count).
pub fn readable_parts(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let whole = visible(line);
    let mut once = whole.then_some(line);
    let mut parts = (!whole).then(|| pieces(line));
    std::iter::from_fn(move || match once.take() {
        Some(line) => Some(line),
        None => parts.as_mut()?.find(|pair| visible(pair)),
    })
}

/// The values of the pairs named `name`, each trimmed, as the `cookie`
/// crate's `split_parse` reads pairs (split at `;`, then at the first `=`).
fn values_named<'a, 'n, I: Iterator<Item = &'a str>>(
    cookie_headers: I,
    name: &'n str,
) -> impl Iterator<Item = &'a str> + use<'a, 'n, I> {
    // One pass over each header, no backtracking: linear in the header bytes, which the gateway
    // caps before this runs (SES-12).
    cookie_headers
        .flat_map(|header| header.split(';'))
        .filter_map(|segment| segment.split_once('='))
        .filter(move |(pair_name, _)| pair_name.trim() == name)
        .map(|(_, value)| value.trim())
}

/// None, one, or more than one of `values` (stops at the second).
fn one_of<'a>(mut values: impl Iterator<Item = &'a str>) -> Lookup<'a> {
    match (values.next(), values.next()) {
        (None, _) => Lookup::Absent,
        (Some(value), None) => Lookup::One(value),
        (Some(_), Some(_)) => Lookup::Many,
    }
}

/// `cookie_header` without the gateway's cookies (see [`without_bytes`]).
pub fn without(cookie_header: &str, names: &[&str]) -> Option<String> {
    without_bytes(cookie_header.as_bytes(), names).and_then(|kept| String::from_utf8(kept).ok())
}

/// A `Cookie` line without any pair named like a gateway cookie; `None` when
/// nothing else is left. Read as bytes, because a line may carry bytes that
/// are not UTF-8 (hyper accepts obs-text): such a line must not slip through
/// unread with the session cookie in it. Every pair under one of our names
/// goes, malformed or not: its value is ours, not the upstream's; anything
/// else stays exactly as the client sent it.
pub fn without_bytes(cookie_header: &[u8], names: &[&str]) -> Option<Vec<u8>> {
    match stripped(cookie_header, names) {
        // A line of empty pieces only leaves nothing either.
        Stripped::Unchanged if pieces(cookie_header).all(|p| p.trim_ascii().is_empty()) => None,
        Stripped::Unchanged => Some(cookie_header.to_vec()),
        Stripped::Empty => None,
        Stripped::Kept(kept) => Some(kept),
    }
}

/// A `Cookie` line with the gateway's cookies taken out (see [`without_bytes`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Stripped {
    /// It carried none of them: as it was.
    Unchanged,
    /// Nothing else was left.
    Empty,
    /// What was left, pairs joined by `; `.
    Kept(Vec<u8>),
}

/// `cookie_header` without the gateway's cookies, in one pass that copies
/// nothing when there is nothing to take out.
pub fn stripped(cookie_header: &[u8], names: &[&str]) -> Stripped {
    let mut kept: Vec<&[u8]> = Vec::new();
    let mut removed = false;
    for segment in pieces(cookie_header) {
        let pair = segment.trim_ascii();
        if pair.is_empty() {
            continue;
        }
        if pair_is_gateway_cookie(pair, names) {
            removed = true;
        } else {
            kept.push(pair);
        }
    }
    if !removed {
        Stripped::Unchanged
    } else if kept.is_empty() {
        Stripped::Empty
    } else {
        Stripped::Kept(kept.join(&b"; "[..]))
    }
}

/// The `;`-separated pieces of a `Cookie` line, as `split` on `;` gives
/// them, found by `memchr`: a line carrying a session cookie is a few
/// hundred bytes, read on every request.
pub fn pieces(line: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(line);
    std::iter::from_fn(move || {
        let r = rest?;
        match memchr::memchr(b';', r) {
            Some(i) => {
                rest = r.get(i + 1..);
                r.get(..i)
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// Whether a `name=value` pair (a `Cookie` pair or the start of a
/// `Set-Cookie`) is named like a gateway cookie. Our names are ASCII, so a
/// name that is not UTF-8 is never ours. A nameless pair (`=portcullis=…`)
/// is judged by the name in its value: a browser keeps it as a cookie with
/// an empty name and sends it back as `portcullis=…`.
pub fn pair_is_gateway_cookie(pair: &[u8], names: &[&str]) -> bool {
    let pair = pair.trim_ascii_start();
    let pair = pair.strip_prefix(b"=").unwrap_or(pair);
    let name = pair
        .split(|b| *b == b'=')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    std::str::from_utf8(name).is_ok_and(|n| is_gateway_cookie(n, names))
}

/// `Set-Cookie` for one of the gateway's cookies; `name` must be a token and `value`
/// cookie-octets (a sealed value is).
pub fn set_cookie(
    name: &str,
    value: &str,
    max_age_secs: i64,
    secure: bool,
    same_site_none: bool,
) -> String {
    // Host-only (no Domain) and Path=/ so the `__Host-` prefix holds and siblings never see it
    // (SES-01); SameSite=None only for the provider's cross-site form_post back to us.
    let same_site = if same_site_none {
        SameSite::None
    } else {
        SameSite::Lax
    };
    Cookie::build((name, value))
        .path("/")
        .http_only(true)
        .same_site(same_site)
        .secure(secure || same_site_none)
        .max_age(cookie::time::Duration::seconds(max_age_secs.max(0)))
        .build()
        .to_string()
}

/// [`set_cookie`] (SameSite=Lax) for the session cookie, with `Domain=` when
/// the operator shares it across a parent domain (`session.cookie_domain`).
pub fn set_session_cookie(
    name: &str,
    value: &str,
    max_age_secs: i64,
    secure: bool,
    domain: Option<&str>,
) -> String {
    let Some(domain) = domain else {
        return set_cookie(name, value, max_age_secs, secure, false);
    };
    Cookie::build((name, value))
        .domain(domain)
        .path("/")
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(secure)
        .max_age(cookie::time::Duration::seconds(max_age_secs.max(0)))
        .build()
        .to_string()
}

/// `Set-Cookie` that deletes one of the gateway's cookies: same attributes, so the browser
/// matches it, empty value, `Max-Age=0` (SES-16).
pub fn clear_cookie(name: &str, secure: bool, same_site_none: bool) -> String {
    set_cookie(name, "", 0, secure, same_site_none)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{LoginState, SessionClaims};
    use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE};

    /// `find` as it was written on the `cookie` crate's parser.
    fn find_by_the_cookie_crate<'a>(headers: &[&'a str], name: &str) -> Lookup<'a> {
        let mut found = Lookup::Absent;
        for header in headers {
            for pair in Cookie::split_parse(*header).flatten() {
                let (Some(pair_name), Some(value)) = (pair.name_raw(), pair.value_raw()) else {
                    continue;
                };
                if pair_name != name || !is_cookie_value(value) {
                    continue;
                }
                found = match found {
                    Lookup::Absent => Lookup::One(value),
                    Lookup::One(_) | Lookup::Many => return Lookup::Many,
                };
            }
        }
        found
    }

    #[test]
    fn a_cookie_line_is_rewritten_only_when_it_carries_a_gateway_cookie() {
        let names = [NAME, LOGIN];
        for (line, expected) in [
            ("a=1; b=2", Stripped::Unchanged),
            ("a=1; ; b=2", Stripped::Unchanged),
            (";", Stripped::Unchanged),
            ("__Host-portcullis=x", Stripped::Empty),
            (
                " __Host-portcullis=x ; __Host-portcullis_login=y",
                Stripped::Empty,
            ),
            (
                "a=1; __Host-portcullis=x; b=2",
                Stripped::Kept(b"a=1; b=2".to_vec()),
            ),
            ("__Host-portcullis=x;a=1", Stripped::Kept(b"a=1".to_vec())),
        ] {
            assert_eq!(stripped(line.as_bytes(), &names), expected, "{line:?}");
        }
        // `without_bytes` keeps its answers: nothing left is `None`.
        assert_eq!(without_bytes(b";", &names), None);
        assert_eq!(without_bytes(b"a=1", &names), Some(b"a=1".to_vec()));
    }

    #[test]
    fn pieces_are_what_split_gives() {
        for line in ["", ";", "a", "a;b", ";a;", "a;;b;", "x=1; y=2", " ; "] {
            let ours: Vec<&[u8]> = pieces(line.as_bytes()).collect();
            let split: Vec<&[u8]> = line.as_bytes().split(|b| *b == b';').collect();
            assert_eq!(ours, split, "{line:?}");
        }
    }

    #[test]
    fn find_reads_cookie_lines_exactly_as_the_cookie_crate_does() {
        // Pieces a hostile or sloppy client might put together.
        const PIECES: &[&str] = &[
            "a",
            "b",
            "=",
            ";",
            " ",
            "\t",
            "\"",
            "v1",
            "x=y",
            NAME,
            "__Host-portcullisX",
            ";;",
            "= ",
            " =",
            "\"v\"",
            ",",
            "\\",
            "%20",
            "\u{a0}",
            "é",
        ];
        // The same cases every run.
        let mut cases = portcullis_testkit::cases::Cases::new(0x2545_F491_4F6C_DD1D);
        let mut next = |n: usize| cases.below(n);
        for case in 0..20_000 {
            let lines: Vec<String> = (0..1 + next(2))
                .map(|_| (0..next(12)).map(|_| PIECES[next(PIECES.len())]).collect())
                .collect();
            let lines: Vec<&str> = lines.iter().map(String::as_str).collect();
            for name in [NAME, "a", "x"] {
                let found = find(lines.iter().copied(), name);
                assert_eq!(
                    found,
                    find_by_the_cookie_crate(&lines, name),
                    "case {case}: {lines:?} for {name}"
                );
                // What `Sessions::read` takes from a remembered value: a
                // sole pair that is well-formed is the one `find` gives.
                // The visible lines, as `Sessions::read` hands them to both
                // (a line that is not goes to `find` pair by pair only).
                let sent = || lines.iter().map(|l| l.as_bytes()).filter(|l| visible(l));
                let found = find(sent().filter_map(|p| std::str::from_utf8(p).ok()), name);
                let sole = sole_unchecked(sent(), name);
                let well_formed = sole
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .filter(|v| is_cookie_value(v));
                if let Some(v) = well_formed {
                    assert_eq!(found, Lookup::One(v), "case {case}: {lines:?} for {name}");
                }
                if let Lookup::One(v) = found {
                    assert!(
                        sole.is_none_or(|s| s == v.as_bytes()),
                        "case {case}: {lines:?} for {name}"
                    );
                }
            }
        }
    }

    const NAME: &str = "__Host-portcullis";
    const LOGIN: &str = "__Host-portcullis_login";

    fn sealer(secrets: &[&[u8]]) -> Sealer {
        let secrets: Vec<_> = secrets.iter().map(|s| Secret::new(s.to_vec())).collect();
        Sealer::new(&secrets)
    }

    fn claims() -> SessionClaims {
        SessionClaims {
            sid: "q3Vd0o2kq1sXH0sVY4PmNw".into(),
            uid: "alice".into(),
            host: "wiki.example".into(),
            iat: 1_700_000_000,
            exp: 1_700_043_200,
        }
    }

    fn login_state() -> LoginState {
        LoginState {
            source: "corp".into(),
            state: "st-8f2a".into(),
            nonce: Some("n-19c4".into()),
            pkce_verifier: Some("v".repeat(43)),
            rd: "/wiki/Main_Page".into(),
            link: None,
            exp: 1_700_000_600,
            oauth1: None,
            handoff: None,
        }
    }

    const K1: &[u8] = &[1u8; 32];
    const K2: &[u8] = &[2u8; 32];
    const K3: &[u8] = &[3u8; 32];

    fn open_session(s: &Sealer, sealed: &str) -> Result<Opened<SessionClaims>, SessionError> {
        s.open(NAME, Purpose::Session, sealed)
    }

    #[test]
    fn session_claims_round_trip_with_the_current_key() {
        let s = sealer(&[K1]);
        let sealed = s.seal(NAME, Purpose::Session, &claims()).unwrap();
        let opened = open_session(&s, &sealed).unwrap();
        assert_eq!(opened.value, claims());
        assert!(!opened.stale_key);
    }

    #[test]
    fn login_state_round_trips() {
        let s = sealer(&[K1]);
        let sealed = s.seal(LOGIN, Purpose::LoginState, &login_state()).unwrap();
        let opened: Opened<LoginState> = s.open(LOGIN, Purpose::LoginState, &sealed).unwrap();
        assert_eq!(opened.value, login_state());
    }

    #[test]
    fn sealed_value_is_version_hint_nonce_ciphertext_tag_in_base64url() {
        let s = sealer(&[K1]);
        let sealed = s.seal(NAME, Purpose::Session, &claims()).unwrap();
        assert!(sealed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert!(is_cookie_value(&sealed));
        let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        let json_len = serde_json::to_vec(&claims()).unwrap().len();
        assert_eq!(raw.len(), 1 + 1 + 12 + json_len + 16);
        assert_eq!(raw[0], VERSION);
        assert_eq!(raw[1], s.keys[0].id);
        // Compact: a session is a few hundred bytes, far below the 4096 browsers keep.
        assert!(sealed.len() < 300, "{} bytes", sealed.len());
    }

    // SES-03
    #[test]
    fn ses_03_every_single_bit_flip_of_the_sealed_bytes_fails_to_open() {
        let s = sealer(&[K1]);
        let raw = URL_SAFE_NO_PAD
            .decode(s.seal(NAME, Purpose::Session, &claims()).unwrap())
            .unwrap();
        for i in 0..raw.len() {
            for bit in 0..8 {
                let mut flipped = raw.clone();
                flipped[i] ^= 1 << bit;
                let sealed = URL_SAFE_NO_PAD.encode(&flipped);
                assert!(
                    matches!(open_session(&s, &sealed), Err(SessionError::Invalid)),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    // SES-03
    #[test]
    fn ses_03_every_single_bit_flip_of_the_cookie_text_fails_to_open() {
        let s = sealer(&[K1]);
        let sealed = s.seal(NAME, Purpose::Session, &claims()).unwrap();
        for i in 0..sealed.len() {
            // Bit 7 would leave ASCII, which a `&str` header value cannot carry here anyway.
            for bit in 0..7 {
                let mut bytes = sealed.clone().into_bytes();
                bytes[i] ^= 1 << bit;
                let text = String::from_utf8(bytes).unwrap();
                assert!(open_session(&s, &text).is_err(), "char {i} bit {bit}");
            }
        }
    }

    // SES-03
    #[test]
    fn ses_03_every_truncation_including_empty_fails_to_open() {
        let s = sealer(&[K1]);
        let sealed = s.seal(NAME, Purpose::Session, &claims()).unwrap();
        for end in 0..sealed.len() {
            assert!(open_session(&s, &sealed[..end]).is_err(), "prefix {end}");
            assert!(
                open_session(&s, &sealed[end + 1..]).is_err(),
                "suffix from {}",
                end + 1
            );
        }
        assert!(matches!(open_session(&s, ""), Err(SessionError::Invalid)));
    }

    // SES-03
    #[test]
    fn ses_03_extended_values_fail_to_open() {
        let s = sealer(&[K1]);
        let sealed = s.seal(NAME, Purpose::Session, &claims()).unwrap();
        for tail in ["A", "AA", "AAA", "AAAA", "-", "_", "0", "x", " ", "\0", ";"] {
            assert!(
                open_session(&s, &format!("{sealed}{tail}")).is_err(),
                "{tail:?}"
            );
            assert!(
                open_session(&s, &format!("{tail}{sealed}")).is_err(),
                "{tail:?}"
            );
        }
        // Bytes appended before encoding (a longer ciphertext) fail the tag too.
        let mut raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
        raw.extend_from_slice(&[0, 0, 0]);
        assert!(open_session(&s, &URL_SAFE_NO_PAD.encode(&raw)).is_err());
    }

    // SES-03
    #[test]
    fn ses_03_padding_and_the_standard_alphabet_fail_to_open() {
        let s = sealer(&[K1]);
        let mut checked_padding = false;
        let mut checked_alphabet = false;
        for i in 0..64 {
            // Three payload lengths, so some sealed lengths need padding whatever the JSON is.
            let mut value = claims();
            value.uid = "u".repeat(i % 3 + 1);
            let sealed = s.seal(NAME, Purpose::Session, &value).unwrap();
            let raw = URL_SAFE_NO_PAD.decode(&sealed).unwrap();
            for pad in ["=", "==", "==="] {
                assert!(open_session(&s, &format!("{sealed}{pad}")).is_err());
            }
            let padded = URL_SAFE.encode(&raw);
            if padded != sealed {
                checked_padding = true;
                assert!(open_session(&s, &padded).is_err());
            }
            // The same bytes in the std alphabet differ only where url has `-`/`_`.
            let standard = STANDARD_NO_PAD.encode(&raw);
            if standard != sealed {
                checked_alphabet = true;
                assert!(open_session(&s, &standard).is_err());
            }
        }
        assert!(
            checked_padding && checked_alphabet,
            "no seal needed padding or had -/_"
        );
    }

    // SES-03
    #[test]
    fn ses_03_oversize_values_fail_to_open_even_when_authentic() {
        let s = sealer(&[K1]);
        let mut state = login_state();
        state.rd = format!("/{}", "a".repeat(2700));
        let fits = s
            .seal_unbounded(LOGIN, Purpose::LoginState, &state)
            .unwrap();
        assert!(fits.len() <= MAX_COOKIE_BYTES);
        assert!(s
            .open::<LoginState>(LOGIN, Purpose::LoginState, &fits)
            .is_ok());
        state.rd = format!("/{}", "a".repeat(3100));
        let over = s
            .seal_unbounded(LOGIN, Purpose::LoginState, &state)
            .unwrap();
        assert!(over.len() > MAX_COOKIE_BYTES);
        assert!(matches!(
            s.open::<LoginState>(LOGIN, Purpose::LoginState, &over),
            Err(SessionError::Invalid)
        ));
        assert!(open_session(&s, &"A".repeat(64 * 1024)).is_err());
    }

    // SES-10
    #[test]
    fn ses_10_sealing_a_value_browsers_would_drop_is_an_error() {
        let s = sealer(&[K1]);
        let mut state = login_state();
        state.rd = format!("/{}", "a".repeat(3100));
        assert!(matches!(
            s.seal(LOGIN, Purpose::LoginState, &state),
            Err(SessionError::TooLarge { bytes }) if bytes > MAX_COOKIE_BYTES
        ));
    }

    // SES-03
    #[test]
    fn ses_03_garbage_of_every_shape_fails_to_open_without_panicking() {
        let s = sealer(&[K1]);
        for junk in [
            "", "=", "A", "AA", "AAA", "AAAA", "!!!!", "é", "\0\0\0\0", "null", "{}", "%41%41",
            " AAAA", "AAAA\n",
        ] {
            assert!(open_session(&s, junk).is_err(), "{junk:?}");
        }
        // Right shape, other version byte.
        let mut raw = URL_SAFE_NO_PAD
            .decode(s.seal(NAME, Purpose::Session, &claims()).unwrap())
            .unwrap();
        raw[0] = 2;
        assert!(open_session(&s, &URL_SAFE_NO_PAD.encode(&raw)).is_err());
        // Header only, and header plus a short tag.
        assert!(open_session(&s, &URL_SAFE_NO_PAD.encode(&raw[..HEADER_LEN])).is_err());
        assert!(open_session(&s, &URL_SAFE_NO_PAD.encode(&raw[..HEADER_LEN + 15])).is_err());
    }

    // SES-04
    #[test]
    fn ses_04_a_login_state_value_does_not_open_as_the_session_and_vice_versa() {
        let s = sealer(&[K1]);
        let login = s.seal(LOGIN, Purpose::LoginState, &login_state()).unwrap();
        assert!(matches!(
            open_session(&s, &login),
            Err(SessionError::Invalid)
        ));
        assert!(s
            .open::<LoginState>(NAME, Purpose::LoginState, &login)
            .is_err());
        assert!(s
            .open::<LoginState>(LOGIN, Purpose::Session, &login)
            .is_err());
        let session = s.seal(NAME, Purpose::Session, &claims()).unwrap();
        assert!(s
            .open::<SessionClaims>(LOGIN, Purpose::Session, &session)
            .is_err());
        assert!(s
            .open::<SessionClaims>(NAME, Purpose::LoginState, &session)
            .is_err());
    }

    // SES-04
    #[test]
    fn ses_04_a_value_under_another_cookie_name_fails_to_open() {
        let s = sealer(&[K1]);
        let sealed = s.seal(NAME, Purpose::Session, &claims()).unwrap();
        for other in [
            "portcullis",
            "__Host-portcullis2",
            "__host-portcullis",
            "",
            "x",
        ] {
            assert!(
                s.open::<SessionClaims>(other, Purpose::Session, &sealed)
                    .is_err(),
                "{other:?}"
            );
        }
    }

    // SES-05
    #[test]
    fn ses_05_a_previous_key_still_opens_and_asks_for_a_reseal() {
        let old = sealer(&[K1]);
        let rotated = sealer(&[K2, K1]);
        let sealed = old.seal(NAME, Purpose::Session, &claims()).unwrap();
        let opened = open_session(&rotated, &sealed).unwrap();
        assert_eq!(opened.value, claims());
        assert!(opened.stale_key);
        let resealed = rotated.seal(NAME, Purpose::Session, &opened.value).unwrap();
        assert!(!open_session(&rotated, &resealed).unwrap().stale_key);
    }

    // SES-05
    #[test]
    fn ses_05_a_retired_key_or_another_deployments_key_fails_to_open() {
        let old = sealer(&[K1]);
        let sealed = old.seal(NAME, Purpose::Session, &claims()).unwrap();
        let retired = sealer(&[K2]);
        assert!(matches!(
            open_session(&retired, &sealed),
            Err(SessionError::Invalid)
        ));
        let elsewhere = sealer(&[K3, K2]);
        assert!(matches!(
            open_session(&elsewhere, &sealed),
            Err(SessionError::Invalid)
        ));
    }

    // SES-05
    #[test]
    fn ses_05_keys_sharing_a_hint_both_open() {
        // Find two secrets whose one-byte hints collide, so open must try past the first match.
        let first = sealer(&[K1]);
        let other = (0u16..)
            .map(|i| {
                let mut secret = vec![9u8; 32];
                secret[..2].copy_from_slice(&i.to_be_bytes());
                secret
            })
            .find(|secret| sealer(&[secret.as_slice()]).keys[0].id == first.keys[0].id)
            .unwrap();
        let both = sealer(&[other.as_slice(), K1]);
        let from_k1 = first.seal(NAME, Purpose::Session, &claims()).unwrap();
        let opened = open_session(&both, &from_k1).unwrap();
        assert!(opened.stale_key);
        let from_other = both.seal(NAME, Purpose::Session, &claims()).unwrap();
        assert!(!open_session(&both, &from_other).unwrap().stale_key);
        assert!(open_session(&first, &from_other).is_err());
    }

    // SES-05: secrets, not their order, decide the keys.
    #[test]
    fn ses_05_the_same_secret_at_another_position_keeps_its_key() {
        assert_eq!(sealer(&[K1]).keys[0].id, sealer(&[K2, K1]).keys[1].id);
        let sealed = sealer(&[K2, K1])
            .seal(NAME, Purpose::Session, &claims())
            .unwrap();
        assert!(!open_session(&sealer(&[K2]), &sealed).unwrap().stale_key);
    }

    // SES-14
    #[test]
    fn ses_14_rewriting_known_plaintext_inside_the_ciphertext_fails_to_open() {
        // GCM is a stream cipher underneath: xor-ing the ciphertext with (old json ^ new json)
        // would turn alice into admin if the tag did not cover the JSON.
        let s = sealer(&[K1]);
        let mut admin = claims();
        admin.uid = "admin".into();
        admin.exp = 4_000_000_000;
        let a = serde_json::to_vec(&claims()).unwrap();
        let b = serde_json::to_vec(&admin).unwrap();
        assert_eq!(a.len(), b.len());
        let mut raw = URL_SAFE_NO_PAD
            .decode(s.seal(NAME, Purpose::Session, &claims()).unwrap())
            .unwrap();
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            raw[HEADER_LEN + i] ^= x ^ y;
        }
        assert!(matches!(
            open_session(&s, &URL_SAFE_NO_PAD.encode(&raw)),
            Err(SessionError::Invalid)
        ));
    }

    // SES-14
    #[test]
    fn ses_14_an_authentic_payload_of_another_shape_fails_to_open() {
        let s = sealer(&[K1]);
        let sealed = s.seal(NAME, Purpose::Session, &login_state()).unwrap();
        assert!(matches!(
            open_session(&s, &sealed),
            Err(SessionError::Invalid)
        ));
    }

    // SES-15
    #[test]
    fn ses_15_the_same_value_sealed_twice_differs_in_nonce_and_ciphertext() {
        let s = sealer(&[K1]);
        let one = URL_SAFE_NO_PAD
            .decode(s.seal(NAME, Purpose::Session, &claims()).unwrap())
            .unwrap();
        let two = URL_SAFE_NO_PAD
            .decode(s.seal(NAME, Purpose::Session, &claims()).unwrap())
            .unwrap();
        assert_ne!(one[2..HEADER_LEN], two[2..HEADER_LEN]);
        assert_ne!(one[HEADER_LEN..], two[HEADER_LEN..]);
    }

    #[test]
    fn a_sealer_without_secrets_seals_nothing_and_opens_nothing() {
        let none = Sealer::new(&[]);
        assert!(matches!(
            none.seal(NAME, Purpose::Session, &claims()),
            Err(SessionError::NoKey)
        ));
        let sealed = sealer(&[K1])
            .seal(NAME, Purpose::Session, &claims())
            .unwrap();
        assert!(open_session(&none, &sealed).is_err());
    }

    #[test]
    fn sealer_debug_shows_no_key_material() {
        let shown = format!("{:?}", sealer(&[K1, K2]));
        assert_eq!(shown, "Sealer { keys: 2, .. }");
    }

    #[test]
    fn is_expired_from_exp_on() {
        assert!(!is_expired(100, 99));
        assert!(is_expired(100, 100));
        assert!(is_expired(100, 101));
    }

    #[test]
    fn cookie_names_use_the_host_prefix_on_https_only() {
        assert_eq!(cookie_name("portcullis", true), "__Host-portcullis");
        assert_eq!(cookie_name("portcullis", false), "portcullis");
        assert_eq!(
            login_cookie_name("portcullis", true),
            "__Host-portcullis_login"
        );
        assert_eq!(login_cookie_name("portcullis", false), "portcullis_login");
    }

    #[test]
    fn find_returns_the_one_value_borrowed_from_the_header() {
        let header = "theme=dark; __Host-portcullis=abc-_123; __Host-portcullis_login=zzz";
        assert_eq!(find([header].into_iter(), NAME), Lookup::One("abc-_123"));
        assert_eq!(find([header].into_iter(), LOGIN), Lookup::One("zzz"));
        assert_eq!(find([header].into_iter(), "portcullis"), Lookup::Absent);
        assert_eq!(
            find([header].into_iter(), "__host-portcullis"),
            Lookup::Absent
        );
        assert_eq!(find(std::iter::empty(), NAME), Lookup::Absent);
        assert_eq!(
            find(["a=1", "b=2; portcullis=v"].into_iter(), "portcullis"),
            Lookup::One("v")
        );
    }

    // SES-09
    #[test]
    fn ses_09_two_cookies_with_the_name_are_many_never_the_first() {
        let same_header = "__Host-portcullis=a; x=1; __Host-portcullis=b";
        assert_eq!(find([same_header].into_iter(), NAME), Lookup::Many);
        let split = ["__Host-portcullis=a", "x=1; __Host-portcullis=a"];
        assert_eq!(find(split.into_iter(), NAME), Lookup::Many);
        let empty_second = "__Host-portcullis=a; __Host-portcullis=";
        assert_eq!(find([empty_second].into_iter(), NAME), Lookup::Many);
    }

    // SES-13
    #[test]
    fn ses_13_a_line_is_read_whole_or_by_its_visible_pairs() {
        let whole: Vec<&[u8]> = readable_parts(b"a=1; b=2").collect();
        assert_eq!(whole, [b"a=1; b=2".as_slice()]);
        let parts: Vec<&[u8]> = readable_parts(b"a=1; n=caf\xe9; b=\xc3\xa9; c=3").collect();
        assert_eq!(parts, [b"a=1".as_slice(), b" c=3".as_slice()]);
        assert_eq!(readable_parts(b"\xff").count(), 0);
    }

    #[test]
    fn ses_13_malformed_pairs_are_skipped_without_panicking() {
        let header = "garbage; ;; =x; \"q\"=1; bad\0=1; ü=2; a b=3; \
                      __Host-portcullis=good; after=\"quoted\"; tail=é";
        assert_eq!(find([header].into_iter(), NAME), Lookup::One("good"));
        for bad in [
            "__Host-portcullis",
            "__Host-portcullis=\"quoted\"",
            "__Host-portcullis=a\0b",
            "__Host-portcullis=é",
            "__Host-portcullis=a b",
            "__Host-portcullis=a,b",
            "__Host-portcullis=a\\b",
            "__Host-portcullis=\"",
        ] {
            assert_eq!(find([bad].into_iter(), NAME), Lookup::Absent, "{bad:?}");
            let with_good = format!("{bad}; __Host-portcullis=ok");
            assert_eq!(
                find([with_good.as_str()].into_iter(), NAME),
                Lookup::One("ok")
            );
        }
        for junk in ["", ";", ";;;", "=", "==;=", "\0", "\"", "é=é", "; =; ;="] {
            assert_eq!(find([junk].into_iter(), NAME), Lookup::Absent, "{junk:?}");
            // Nothing of ours to remove: blank headers vanish, the rest pass unchanged.
            assert!(without(junk, &[NAME]).is_none_or(|h| h == junk), "{junk:?}");
        }
    }

    // SES-12
    #[test]
    fn ses_12_a_60_kib_header_with_1000_cookies_is_scanned_to_the_end() {
        let mut header = (0..1000)
            .map(|i| format!("c{i:04}={}", "v".repeat(54)))
            .collect::<Vec<_>>()
            .join("; ");
        header.push_str("; __Host-portcullis=last");
        assert!(header.len() >= 60 * 1024, "{}", header.len());
        assert_eq!(
            find([header.as_str()].into_iter(), NAME),
            Lookup::One("last")
        );
        let doubled = format!("{header}; __Host-portcullis=again");
        assert_eq!(find([doubled.as_str()].into_iter(), NAME), Lookup::Many);
        let stripped = without(&header, &[NAME]).unwrap();
        assert_eq!(
            stripped.len(),
            header.len() - "; __Host-portcullis=last".len()
        );
    }

    #[test]
    fn without_removes_only_the_named_cookies_and_keeps_the_rest_byte_for_byte() {
        let header =
            "a=1; __Host-portcullis=x; b=\"q w\"; __Host-portcullis_login=y; c=%E2%9C%93; \
                      __Host-portcullis=dup; d=é";
        assert_eq!(
            without(header, &[NAME, LOGIN]).as_deref(),
            Some("a=1; b=\"q w\"; c=%E2%9C%93; d=é")
        );
        assert_eq!(
            without(header, &[LOGIN]).as_deref(),
            Some("a=1; __Host-portcullis=x; b=\"q w\"; c=%E2%9C%93; __Host-portcullis=dup; d=é")
        );
        // Untouched headers keep even their separators.
        assert_eq!(without("a=1;b=2", &[NAME]).as_deref(), Some("a=1;b=2"));
        // Our cookie goes even when malformed, and whatever its spacing.
        assert_eq!(
            without(
                "__Host-portcullis=\"x\" ;a=1;  __Host-portcullis = y",
                &[NAME]
            )
            .as_deref(),
            Some("a=1")
        );
        assert_eq!(without("__Host-portcullis=x", &[NAME]), None);
        assert_eq!(without("__Host-portcullis=x; ; ", &[NAME]), None);
        assert_eq!(
            without(
                "portcullis=x; portcullis_login=y",
                &["portcullis", "portcullis_login"]
            ),
            None
        );
        assert_eq!(
            without("xportcullis=1", &["portcullis"]).as_deref(),
            Some("xportcullis=1")
        );
    }

    // OA2-23
    #[test]
    fn oa2_23_each_flow_has_its_own_cookie_name_and_the_filter_knows_them_all() {
        let a = flow_cookie_name(LOGIN, "state-a");
        let b = flow_cookie_name(LOGIN, "state-b");
        assert_ne!(a, b);
        assert_eq!(a, flow_cookie_name(LOGIN, "state-a"));
        assert!(
            a.starts_with("__Host-portcullis_login-") && a.len() == LOGIN.len() + 17,
            "{a}"
        );
        assert!(is_flow_cookie(&a, LOGIN));
        for not_ours in [
            LOGIN.to_string(),
            format!("{LOGIN}-"),
            format!("{LOGIN}-0123"),
            format!("{LOGIN}-0123456789ABCDEF"),
            format!("{LOGIN}-0123456789abcdef0"),
            format!("{LOGIN}x0123456789abcdef"),
            "__Host-portcullis-0123456789abcdef".to_string(),
        ] {
            assert!(!is_flow_cookie(&not_ours, LOGIN), "{not_ours}");
        }
        assert!(is_gateway_cookie(&a, &[NAME, LOGIN]));
        assert!(is_gateway_cookie(LOGIN, &[NAME, LOGIN]));
        assert!(!is_gateway_cookie(
            "__Host-portcullis_loginx",
            &[NAME, LOGIN]
        ));
        let header = format!("x=1; {a}=va; {NAME}=s; {b}=vb; y=2");
        assert_eq!(
            without(&header, &[NAME, LOGIN]).as_deref(),
            Some("x=1; y=2")
        );
        assert_eq!(
            login_cookies([header.as_str()].into_iter(), LOGIN),
            vec![(a.as_str(), "va"), (b.as_str(), "vb")]
        );
        assert_eq!(
            clear_cookie(&a, true, false),
            format!("{a}=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0")
        );
        assert_eq!(
            clear_cookie(&b, true, true),
            format!("{b}=; HttpOnly; SameSite=None; Secure; Path=/; Max-Age=0")
        );
    }

    // OA2-23
    #[test]
    fn oa2_23_a_sixth_flow_drops_the_oldest_and_every_unreadable_or_expired_one() {
        let now = 1000;
        let five = [
            ("c", Some(1300)),
            ("a", Some(1100)),
            ("e", Some(1500)),
            ("b", Some(1200)),
            ("d", Some(1400)),
        ];
        assert_eq!(flows_to_drop(&five, now), vec!["a".to_string()]);
        assert!(flows_to_drop(&five[..4], now).is_empty());
        let same_second = [
            ("z", Some(1600)),
            ("y", Some(1600)),
            ("x", Some(1600)),
            ("w", Some(1600)),
            ("v", Some(1600)),
        ];
        assert_eq!(flows_to_drop(&same_second, now), vec!["z".to_string()]);
        let junk = [("x", None), ("old", Some(1000)), ("a", Some(1100))];
        assert_eq!(
            flows_to_drop(&junk, now),
            vec!["x".to_string(), "old".to_string()]
        );
    }

    // SES-01
    #[test]
    fn ses_01_session_set_cookie_is_host_only_http_only_lax_secure_path_root() {
        let header = set_cookie(NAME, "v4lue", 43_200, true, false);
        assert_eq!(
            header,
            "__Host-portcullis=v4lue; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=43200"
        );
        let parsed = Cookie::parse(header.as_str()).unwrap();
        assert_eq!(parsed.name(), NAME);
        assert_eq!(parsed.value(), "v4lue");
        assert_eq!(parsed.path(), Some("/"));
        assert_eq!(parsed.domain(), None);
        assert_eq!(parsed.http_only(), Some(true));
        assert_eq!(parsed.secure(), Some(true));
        assert_eq!(parsed.same_site(), Some(SameSite::Lax));
        assert_eq!(
            parsed.max_age(),
            Some(cookie::time::Duration::seconds(43_200))
        );
    }

    // SES-01
    #[test]
    fn ses_01_plain_http_omits_secure_and_same_site_none_forces_it() {
        assert_eq!(
            set_cookie("portcullis", "v", 60, false, false),
            "portcullis=v; HttpOnly; SameSite=Lax; Path=/; Max-Age=60"
        );
        assert_eq!(
            set_cookie("portcullis_login", "v", 600, false, true),
            "portcullis_login=v; HttpOnly; SameSite=None; Secure; Path=/; Max-Age=600"
        );
        assert_eq!(
            set_cookie(LOGIN, "v", 600, true, true),
            "__Host-portcullis_login=v; HttpOnly; SameSite=None; Secure; Path=/; Max-Age=600"
        );
        assert_eq!(
            set_cookie(NAME, "v", -5, true, false),
            "__Host-portcullis=v; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0"
        );
    }

    // SES-16
    #[test]
    fn ses_16_clear_cookie_is_empty_with_max_age_zero_and_the_same_attributes() {
        assert_eq!(
            clear_cookie(NAME, true, false),
            "__Host-portcullis=; HttpOnly; SameSite=Lax; Secure; Path=/; Max-Age=0"
        );
        assert_eq!(
            clear_cookie(LOGIN, true, true),
            "__Host-portcullis_login=; HttpOnly; SameSite=None; Secure; Path=/; Max-Age=0"
        );
        assert_eq!(
            clear_cookie("portcullis", false, false),
            "portcullis=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0"
        );
    }
}
