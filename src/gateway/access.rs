//! The one access line of each request: who (the user or `-`, the client IP
//! after `trusted_proxies`), what (method, host, path, app), how it ended
//! (status, outcome, error, duration) and the request id. The binary writes
//! it by hand, JSON or text, straight into the log buffer (no span, no
//! field re-serialising, one append per line); embedded uses, such as the
//! in-process tests, get it as a `tracing` event with the same fields.

use std::cell::Cell;
use std::io::Write as _;
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::ctx::RequestId;
use crate::logging::{LogFormat, LogWriter};
use crate::metrics::Outcome;

/// Where access lines go.
#[derive(Debug, Clone, Default)]
pub enum Sink {
    /// A `tracing` event of target `portcullis::access` (a library user's subscriber formats it).
    #[default]
    Tracing,
    /// Written by hand in `format` to the process's log ([`Sink::direct`]).
    Direct {
        /// JSON or text.
        format: LogFormat,
        /// The log thread's buffer.
        writer: LogWriter,
        /// Whether the log's filter lets access lines through.
        on: bool,
    },
}

/// The facts of one access line.
#[derive(Debug, Clone, Copy)]
pub struct Line<'a> {
    /// Request method.
    pub method: &'a str,
    /// The request host, or `-`.
    pub host: &'a str,
    /// The path as sent (never the query: it may carry secrets).
    pub path: &'a str,
    /// The app the request was routed to, or `-`.
    pub app: &'a str,
    /// The status the client got.
    pub status: u16,
    /// From the head's arrival to the response head.
    pub elapsed: Duration,
    /// How the request ended (its label is the metrics label).
    pub outcome: Outcome,
    /// What failed, if something did.
    pub error: Option<&'a str>,
    /// The id pages and JSON errors show.
    pub request_id: &'a RequestId,
    /// The signed-in user or machine, or `-`.
    pub user: &'a str,
    /// The client, after `trusted_proxies`.
    pub client_ip: IpAddr,
}

impl Sink {
    /// Lines written by hand in `format` into `writer`, if the installed
    /// log filter (`RUST_LOG`, e.g. `portcullis::access=off`) lets them
    /// through: it is asked once, here, so the log must be installed first.
    /// The filter is fixed for the life of the process, and asking it on
    /// every request cost about 240 instructions.
    pub fn direct(format: LogFormat, writer: LogWriter) -> Sink {
        let on = tracing::enabled!(target: "portcullis::access", tracing::Level::INFO);
        Sink::Direct { format, writer, on }
    }

    /// The log format lines are written in by hand; `None` where a
    /// `tracing` subscriber formats them.
    pub fn format(&self) -> Option<LogFormat> {
        match self {
            Sink::Tracing => None,
            Sink::Direct { format, .. } => Some(*format),
        }
    }

    /// The log thread's buffer lines are written into by hand, if any.
    pub fn writer(&self) -> Option<&LogWriter> {
        match self {
            Sink::Tracing => None,
            Sink::Direct { writer, .. } => Some(writer),
        }
    }

    /// Writes `line` (stamped `now`) unless the log filter turned access lines off.
    pub fn emit(&self, line: &Line<'_>, now: SystemTime) {
        match self {
            Sink::Tracing => tracing::info!(
                target: "portcullis::access",
                method = line.method,
                host = line.host,
                path = line.path,
                app = line.app,
                status = line.status,
                duration_ms = line.elapsed.as_secs_f64() * 1000.0,
                outcome = line.outcome.label(),
                error = line.error,
                request_id = line.request_id.as_str(),
                user = line.user,
                client_ip = %line.client_ip,
                "request"
            ),
            Sink::Direct { format, writer, on } => {
                if !*on {
                    return;
                }
                writer.append(|out| match format {
                    LogFormat::Json => write_json(out, line, now),
                    LogFormat::Text => write_text(out, line, now),
                });
            }
        }
    }
}

/// The access line as the JSON object `tracing-subscriber`'s JSON format
/// writes for the same event (`fields`, `target`), so log readers see one shape.
pub fn write_json(out: &mut Vec<u8>, line: &Line<'_>, now: SystemTime) {
    out.extend_from_slice(b"{\"timestamp\":\"");
    write_timestamp(out, now);
    out.extend_from_slice(b"\",\"level\":\"INFO\",\"fields\":{\"message\":\"request\",\"method\":");
    json_str(out, line.method);
    out.extend_from_slice(b",\"host\":");
    json_str(out, line.host);
    out.extend_from_slice(b",\"path\":");
    json_str(out, line.path);
    out.extend_from_slice(b",\"app\":");
    json_str(out, line.app);
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(itoa::Buffer::new().format(line.status).as_bytes());
    out.extend_from_slice(b",\"duration_ms\":");
    write_millis(out, line.elapsed);
    // The outcome and the request id are the gateway's own (a label, twelve
    // base64url characters): nothing to escape, so not tested for it.
    out.extend_from_slice(b",\"outcome\":\"");
    out.extend_from_slice(line.outcome.label().as_bytes());
    out.push(b'"');
    if let Some(e) = line.error {
        out.extend_from_slice(b",\"error\":");
        json_str(out, e);
    }
    out.extend_from_slice(b",\"request_id\":\"");
    out.extend_from_slice(line.request_id.as_bytes());
    out.push(b'"');
    out.extend_from_slice(b",\"user\":");
    json_str(out, line.user);
    out.extend_from_slice(b",\"client_ip\":\"");
    write_ip(out, line.client_ip);
    out.extend_from_slice(b"\"},\"target\":\"portcullis::access\"}\n");
}

/// The access line as `key=value` pairs after the timestamp, level and
/// target, like `tracing-subscriber`'s text format; a value with a blank, a
/// quote or a control byte is quoted and escaped, so a line is always one line.
pub fn write_text(out: &mut Vec<u8>, line: &Line<'_>, now: SystemTime) {
    write_timestamp(out, now);
    out.extend_from_slice(b"  INFO portcullis::access: request method=");
    text_value(out, line.method);
    out.extend_from_slice(b" host=");
    text_value(out, line.host);
    out.extend_from_slice(b" path=");
    text_value(out, line.path);
    out.extend_from_slice(b" app=");
    text_value(out, line.app);
    out.extend_from_slice(b" status=");
    out.extend_from_slice(itoa::Buffer::new().format(line.status).as_bytes());
    out.extend_from_slice(b" duration_ms=");
    write_millis(out, line.elapsed);
    // Bare, as in `write_json`.
    out.extend_from_slice(b" outcome=");
    out.extend_from_slice(line.outcome.label().as_bytes());
    if let Some(e) = line.error {
        out.extend_from_slice(b" error=");
        text_value(out, e);
    }
    out.extend_from_slice(b" request_id=");
    out.extend_from_slice(line.request_id.as_bytes());
    out.extend_from_slice(b" user=");
    text_value(out, line.user);
    out.extend_from_slice(b" client_ip=");
    write_ip(out, line.client_ip);
    out.push(b'\n');
}

/// `s` as a JSON string.
fn json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    json_escaped(out, s);
    out.push(b'"');
}

/// `s` escaped for the inside of a JSON string (RFC 8259 §7).
fn json_escaped(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    // Most values need no escape: one test per eight bytes, one copy.
    if !any_byte(bytes, json_escapes_any, json_escapes) {
        out.extend_from_slice(bytes);
        return;
    }
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(bytes.get(start..i).unwrap_or_default());
        if escape.is_empty() {
            let _ = write!(out, "\\u{b:04x}");
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(bytes.get(start..).unwrap_or_default());
}

/// `s` bare when it is visible ASCII without quotes or backslashes, else quoted.
fn text_value(out: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    if !bytes.is_empty() && !any_byte(bytes, text_quotes_any, text_quotes) {
        out.extend_from_slice(bytes);
    } else {
        json_str(out, s);
    }
}

/// Whether a byte of `bytes` passes `one`, tested eight at a time by
/// `eight` (which must say whether any of the eight bytes passes `one`):
/// the access line tests every value it writes, on every request.
fn any_byte(bytes: &[u8], eight: fn(u64) -> bool, one: fn(u8) -> bool) -> bool {
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        let Ok(chunk) = <[u8; 8]>::try_from(chunk) else {
            return true;
        };
        if eight(u64::from_le_bytes(chunk)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| one(b))
}

/// Eight copies of a byte value across a word.
const fn splat(b: u8) -> u64 {
    0x0101_0101_0101_0101 * b as u64
}

/// Whether a byte of `x` is below `n` (`n` ≤ 128; exact, from the "has less"
/// word trick: a byte's borrow only reaches the next one if it was below `n`).
const fn has_below(x: u64, n: u8) -> bool {
    x.wrapping_sub(splat(n)) & !x & splat(0x80) != 0
}

/// Whether a byte of `x` is `b`.
const fn has_byte(x: u64, b: u8) -> bool {
    has_below(x ^ splat(b), 1)
}

/// A byte a JSON string must escape: a control byte, DEL, `"` or `\`.
fn json_escapes(b: u8) -> bool {
    b < 0x20 || b == 0x7f || b == b'"' || b == b'\\'
}

/// [`json_escapes`] for any of eight bytes.
fn json_escapes_any(x: u64) -> bool {
    has_below(x, 0x20) || has_byte(x, 0x7f) || has_byte(x, b'"') || has_byte(x, b'\\')
}

/// A byte that makes a text value quoted: anything but visible ASCII, `"` and `\`.
fn text_quotes(b: u8) -> bool {
    !b.is_ascii_graphic() || b == b'"' || b == b'\\'
}

/// [`text_quotes`] for any of eight bytes.
fn text_quotes_any(x: u64) -> bool {
    x & splat(0x80) != 0
        || has_below(x, 0x21)
        || has_byte(x, 0x7f)
        || has_byte(x, b'"')
        || has_byte(x, b'\\')
}

/// Milliseconds with three decimals (microsecond resolution).
fn write_millis(out: &mut Vec<u8>, d: Duration) {
    let micros = d.as_micros();
    let mut buf = itoa::Buffer::new();
    out.extend_from_slice(buf.format(micros / 1000).as_bytes());
    out.push(b'.');
    let frac = (micros % 1000) as u16;
    out.extend_from_slice(&[
        b'0' + (frac / 100) as u8,
        b'0' + (frac / 10 % 10) as u8,
        b'0' + (frac % 10) as u8,
    ]);
}

/// RFC 3339 UTC with microseconds, e.g. `2026-12-02T06:36:43.123456Z`,
/// digit by digit (`write!` with padding costs several times as much). The
/// date and time to the second are worked out once a second per thread
/// (most lines fall in the second of the line before: about 300
/// instructions a line).
pub fn write_timestamp(out: &mut Vec<u8>, now: SystemTime) {
    thread_local! {
        /// The second of this thread's last line, and its text.
        static SECOND: Cell<(u64, [u8; 19])> = const { Cell::new((u64::MAX, [0; 19])) };
    }
    let since = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    match SECOND.try_with(Cell::get) {
        Ok((second, text)) if second == secs => out.extend_from_slice(&text),
        _ => {
            let start = out.len();
            write_second(out, secs);
            if let Some(Ok(text)) = out.get(start..).map(<[u8; 19]>::try_from) {
                let _ = SECOND.try_with(|c| c.set((secs, text)));
            }
        }
    }
    out.push(b'.');
    digits(out, since.subsec_micros().into(), 6);
    out.push(b'Z');
}

/// `YYYY-MM-DDTHH:MM:SS` of `secs` since the epoch (years clamped to four
/// digits, so always 19 bytes).
fn write_second(out: &mut Vec<u8>, secs: u64) {
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rest = secs % 86_400;
    digits(out, year.clamp(0, 9999) as u64, 4);
    out.push(b'-');
    digits(out, month.into(), 2);
    out.push(b'-');
    digits(out, day.into(), 2);
    out.push(b'T');
    digits(out, rest / 3600, 2);
    out.push(b':');
    digits(out, rest / 60 % 60, 2);
    out.push(b':');
    digits(out, rest % 60, 2);
}

/// The last `width` decimal digits of `n`, zero-padded.
fn digits(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut buf = [b'0'; 20];
    let width = width.min(buf.len());
    for slot in buf.iter_mut().take(width).rev() {
        *slot = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(buf.get(..width).unwrap_or_default());
}

/// An address as text; IPv4 digit by digit (its `Display` goes through the
/// formatter for every octet).
fn write_ip(out: &mut Vec<u8>, ip: IpAddr) {
    match ip {
        IpAddr::V4(v4) => {
            // Into 15 bytes on the stack, then one copy.
            let mut text = [0u8; 15];
            let mut len = 0;
            let mut put = |b: u8| {
                if let Some(slot) = text.get_mut(len) {
                    *slot = b;
                    len += 1;
                }
            };
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    put(b'.');
                }
                if octet >= 100 {
                    put(b'0' + octet / 100);
                }
                if octet >= 10 {
                    put(b'0' + octet / 10 % 10);
                }
                put(b'0' + octet % 10);
            }
            out.extend_from_slice(text.get(..len).unwrap_or_default());
        }
        IpAddr::V6(v6) => {
            let _ = write!(out, "{v6}");
        }
    }
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The client of a request: the peer itself unless it is a trusted proxy;
/// then `X-Forwarded-For` is read from the right, skipping trusted proxies,
/// and the first hop that is not one is the client (all trusted: the
/// leftmost). A hop that is not an address ends the walk at the last good
/// one: what is left of it could have been written by anyone.
pub fn client_ip<'a, Lines: DoubleEndedIterator<Item = &'a [u8]>>(
    peer: IpAddr,
    peer_trusted: bool,
    forwarded_for: impl FnOnce() -> Lines,
    is_trusted: impl Fn(IpAddr) -> bool,
) -> IpAddr {
    // The lines are looked up only for a trusted peer: most requests come
    // straight from their client.
    if !peer_trusted {
        return peer;
    }
    let mut client = peer;
    for line in forwarded_for().rev() {
        for hop in line.rsplit(|b| *b == b',') {
            let Some(ip) = parse_hop(hop) else {
                return client;
            };
            client = ip;
            if !is_trusted(ip) {
                return ip;
            }
        }
    }
    client
}

/// One `X-Forwarded-For` hop: an address, or an address and port (an
/// IPv4-mapped IPv6 address as its IPv4 address, as a peer is taken).
fn parse_hop(hop: &[u8]) -> Option<IpAddr> {
    let hop = std::str::from_utf8(hop).ok()?.trim();
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .map(|ip| ip.to_canonical())
}

#[cfg(test)]
mod tests {
    use super::*;

    static ID: RequestId = RequestId::of(*b"AbC-_123xyz0");

    fn line() -> Line<'static> {
        Line {
            method: "GET",
            host: "wiki.example",
            path: "/a\"b\\c\nd",
            app: "wiki",
            status: 403,
            elapsed: Duration::from_micros(12_345),
            outcome: Outcome::Forbidden,
            error: None,
            request_id: &ID,
            user: "jöe doe",
            client_ip: "2001:db8::7".parse().unwrap(),
        }
    }

    fn at(secs: u64, micros: u32) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros.into())
    }

    #[test]
    fn every_byte_json_escapes_is_escaped_wherever_it_stands() {
        // Each position of a 40-byte value is tried.
        for special in [b'"', b'\\', b'\n', b'\r', b'\t', 0x00, 0x1f, 0x7f] {
            for at in 0..40 {
                let mut value = vec![b'a'; 40];
                value[at] = special;
                let value = String::from_utf8(value).unwrap();
                let mut out = Vec::new();
                json_str(&mut out, &value);
                let back: String = serde_json::from_slice(&out).unwrap();
                assert_eq!(back, value, "byte {special:#x} at {at}");
                assert!(
                    out.len() > value.len() + 2,
                    "byte {special:#x} at {at} not escaped"
                );
            }
        }
        let mut out = Vec::new();
        json_str(&mut out, "plain/é/0123456789abcdef");
        assert_eq!(out, "\"plain/é/0123456789abcdef\"".as_bytes());
    }

    #[test]
    fn every_byte_is_quoted_or_escaped_as_its_own_rule_says_wherever_it_stands() {
        // The word-at-a-time tests against the byte rules: every byte value,
        // at every place of values that take one, two and three words and a
        // tail, amid every neighbour that could carry a borrow into it.
        for len in [1, 7, 8, 9, 16, 17, 24] {
            for at in 0..len {
                for b in 0..=255u8 {
                    for fill in [b'a', 0x00, 0x1f, 0x20, 0x21, 0x7e, 0x80, 0xff] {
                        let mut value = vec![fill; len];
                        value[at] = b;
                        let want_json = value.iter().any(|&c| json_escapes(c));
                        let want_text = value.iter().any(|&c| text_quotes(c));
                        assert_eq!(
                            any_byte(&value, json_escapes_any, json_escapes),
                            want_json,
                            "json: {b:#x} at {at} of {len} amid {fill:#x}"
                        );
                        assert_eq!(
                            any_byte(&value, text_quotes_any, text_quotes),
                            want_text,
                            "text: {b:#x} at {at} of {len} amid {fill:#x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn an_ipv4_client_is_written_as_its_dotted_quad() {
        for ip in [
            "0.0.0.0",
            "10.0.0.1",
            "127.0.0.1",
            "192.168.100.9",
            "255.255.255.255",
            "1.20.199.250",
        ] {
            let mut out = Vec::new();
            write_ip(&mut out, ip.parse().unwrap());
            assert_eq!(String::from_utf8(out).unwrap(), ip);
        }
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_microseconds() {
        // In and out of one second, forwards and back: the second a thread
        // remembers is never written for another.
        for (secs, micros, want) in [
            (0, 0, "1970-01-01T00:00:00.000000Z"),
            (951_782_400, 1, "2000-02-29T00:00:00.000001Z"),
            (1_796_193_403, 123_456, "2026-12-02T06:36:43.123456Z"),
            (1_796_193_403, 999_999, "2026-12-02T06:36:43.999999Z"),
            (1_796_193_404, 0, "2026-12-02T06:36:44.000000Z"),
            (1_796_193_403, 7, "2026-12-02T06:36:43.000007Z"),
            (4_107_542_399, 999_999, "2100-02-28T23:59:59.999999Z"),
            (4_107_542_399, 5, "2100-02-28T23:59:59.000005Z"),
        ] {
            let mut out = Vec::new();
            write_timestamp(&mut out, at(secs, micros));
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    #[test]
    fn the_json_access_line_is_one_json_object_with_every_field() {
        let mut out = Vec::new();
        write_json(&mut out, &line(), at(1_796_193_403, 5));
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["target"], "portcullis::access");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["timestamp"], "2026-12-02T06:36:43.000005Z");
        let f = &v["fields"];
        assert_eq!(f["message"], "request");
        assert_eq!(f["method"], "GET");
        assert_eq!(f["host"], "wiki.example");
        assert_eq!(f["path"], "/a\"b\\c\nd");
        assert_eq!(f["app"], "wiki");
        assert_eq!(f["status"], 403);
        assert_eq!(f["duration_ms"], 12.345);
        assert_eq!(f["outcome"], "forbidden");
        assert_eq!(f["request_id"], "AbC-_123xyz0");
        assert_eq!(f["user"], "jöe doe");
        assert_eq!(f["client_ip"], "2001:db8::7");
        assert!(f.get("error").is_none(), "{f}");

        let mut out = Vec::new();
        let failed = Line {
            error: Some("ConnectError"),
            user: "-",
            path: "/\u{1}",
            ..line()
        };
        write_json(&mut out, &failed, at(0, 0));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["fields"]["error"], "ConnectError");
        assert_eq!(v["fields"]["user"], "-");
        assert_eq!(v["fields"]["path"], "/\u{1}");
    }

    #[test]
    fn the_text_access_line_is_one_line_of_key_value_pairs() {
        let mut out = Vec::new();
        write_text(&mut out, &line(), at(1_796_193_403, 0));
        let text = String::from_utf8(out).unwrap();
        assert_eq!(
            text,
            "2026-12-02T06:36:43.000000Z  INFO portcullis::access: request method=GET \
             host=wiki.example path=\"/a\\\"b\\\\c\\nd\" app=wiki status=403 duration_ms=12.345 \
             outcome=forbidden request_id=AbC-_123xyz0 user=\"jöe doe\" client_ip=2001:db8::7\n"
        );
        let mut out = Vec::new();
        let plain = Line {
            error: Some("ReadTimedout"),
            user: "-",
            path: "/",
            elapsed: Duration::from_micros(7),
            client_ip: "10.0.0.1".parse().unwrap(),
            ..line()
        };
        write_text(&mut out, &plain, at(0, 0));
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.ends_with(
                "path=/ app=wiki status=403 duration_ms=0.007 outcome=forbidden \
                 error=ReadTimedout request_id=AbC-_123xyz0 user=- client_ip=10.0.0.1\n"
            ),
            "{text}"
        );
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_client_ip_is_the_first_untrusted_hop_from_the_right() {
        let proxies = |ip: IpAddr| ip.to_string().starts_with("10.");
        let peer = ip("10.0.0.2");
        let client = |trusted: bool, lines: &[&str]| {
            client_ip(
                peer,
                trusted,
                || lines.iter().map(|l| l.as_bytes()),
                proxies,
            )
        };
        // An untrusted peer is the client, whatever it claims.
        assert_eq!(client(false, &["203.0.113.9"]), peer);
        assert_eq!(client(true, &[]), peer);
        assert_eq!(client(true, &["203.0.113.9"]), ip("203.0.113.9"));
        // A client-written hop left of the real one is not believed.
        assert_eq!(
            client(true, &["1.1.1.1, 203.0.113.9, 10.0.0.7"]),
            ip("203.0.113.9")
        );
        assert_eq!(
            client(true, &["1.1.1.1", "203.0.113.9 ,10.0.0.7"]),
            ip("203.0.113.9")
        );
        assert_eq!(client(true, &["10.0.0.9, 10.0.0.7"]), ip("10.0.0.9"));
        assert_eq!(client(true, &["garbage, 10.0.0.7"]), ip("10.0.0.7"));
        assert_eq!(client(true, &["[2001:db8::1]:443"]), ip("2001:db8::1"));
        assert_eq!(client(true, &["198.51.100.4:5555"]), ip("198.51.100.4"));
        // An IPv4 client written IPv4-mapped is its IPv4 address, as a peer is.
        assert_eq!(client(true, &["::ffff:203.0.113.9"]), ip("203.0.113.9"));
        assert_eq!(client(true, &["::ffff:10.0.0.9"]), ip("10.0.0.9"));
    }
}
