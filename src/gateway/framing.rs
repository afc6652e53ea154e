//! Refuses requests whose framing or target could be read two ways by the
//! gateway and the upstream (request smuggling, path confusion). Pure: it reads
//! the raw header block and the path, and says what is wrong.

use crate::config::path::CanonicalPath;

/// Most header fields a request may carry (Envoy's default).
pub const MAX_HEADER_FIELDS: usize = 100;
/// Most bytes of request line plus headers (Envoy's default, 60 KiB).
pub const MAX_HEADER_BYTES: usize = 60 * 1024;
/// Longest request line.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// Why a request is refused before anything is forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FramingError {
    /// Ambiguous or malformed framing: answer 400 and close the connection.
    #[error("bad request framing: {0}")]
    BadFraming(&'static str),
    /// The request target could mean another path upstream: answer 400.
    #[error("ambiguous request path: {0}")]
    AmbiguousPath(&'static str),
    /// Too many or too large header fields: answer 431.
    #[error("request headers too large")]
    HeadersTooLarge,
    /// The request line is too long: answer 414.
    #[error("request line too long")]
    UriTooLong,
    /// A body sent to a gateway endpoint did not arrive in time: answer 408
    /// and close the connection.
    #[error("the request body did not arrive in time")]
    BodyTooSlow,
}

impl FramingError {
    /// The HTTP status to answer with.
    pub fn status(self) -> u16 {
        match self {
            FramingError::BadFraming(_) | FramingError::AmbiguousPath(_) => 400,
            FramingError::HeadersTooLarge => 431,
            FramingError::UriTooLong => 414,
            FramingError::BodyTooSlow => 408,
        }
    }
}

/// Whether the method of `request_line` sends a body (PRX-11: an HTTP/1.0
/// body without Content-Length runs to the close; read as no body, RFC 9112
/// §6.3, its bytes would wait unread while an empty request went upstream.
/// RFC 1945 §8.3 requires the length on every HTTP/1.0 POST).
fn sends_a_body(request_line: &[u8]) -> bool {
    let method = request_line
        .split(|b| *b == b' ')
        .next()
        .unwrap_or_default();
    [&b"POST"[..], b"PUT", b"PATCH"].contains(&method)
}

/// Checks the raw HTTP/1.x header block (request line, fields, without body).
pub fn check_raw_head(raw: &[u8], http10: bool) -> Result<(), FramingError> {
    let mut lines = Lines(Some(raw));
    let request_line = lines.next().unwrap_or_default();
    if request_line.len() > MAX_REQUEST_LINE {
        return Err(FramingError::UriTooLong);
    }
    if raw.len() > MAX_HEADER_BYTES {
        return Err(FramingError::HeadersTooLarge);
    }
    let (mut fields, mut cl, mut te, mut host) = (0usize, 0usize, 0usize, 0usize);
    let mut cl_value: &[u8] = b"";
    let mut te_value: &[u8] = b"";
    for line in lines {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if memchr::memchr2(b'\r', 0, line).is_some() {
            return Err(FramingError::BadFraming("bare CR or NUL in a header"));
        }
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err(FramingError::BadFraming("folded header line"));
        }
        fields += 1;
        let Some(colon) = memchr::memchr(b':', line) else {
            return Err(FramingError::BadFraming("header line without a colon"));
        };
        let (name, value) = line.split_at(colon);
        let value = trim(value.get(1..).unwrap_or_default());
        if name.eq_ignore_ascii_case(b"content-length") {
            // Identical repeats collapse to one (PRX-09; hyper keeps the
            // first and forwards one); differing ones are refused.
            if cl > 0 && value != cl_value {
                return Err(FramingError::BadFraming("differing Content-Length values"));
            }
            cl += 1;
            cl_value = value;
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            te += 1;
            te_value = value;
        } else if name.eq_ignore_ascii_case(b"host") {
            host += 1;
        }
    }
    if fields > MAX_HEADER_FIELDS {
        return Err(FramingError::HeadersTooLarge);
    }
    if cl > 0 && te > 0 {
        return Err(FramingError::BadFraming(
            "both Content-Length and Transfer-Encoding",
        ));
    }
    if cl > 0
        && (cl_value.is_empty() || cl_value.len() > 18 || !cl_value.iter().all(u8::is_ascii_digit))
    {
        return Err(FramingError::BadFraming("invalid Content-Length"));
    }
    if te > 1 {
        return Err(FramingError::BadFraming("more than one Transfer-Encoding"));
    }
    if http10 && cl == 0 && te == 0 && sends_a_body(request_line) {
        return Err(FramingError::BadFraming(
            "an HTTP/1.0 request body without Content-Length",
        ));
    }
    if te == 1 && (http10 || !te_value.eq_ignore_ascii_case(b"chunked")) {
        return Err(FramingError::BadFraming(
            "Transfer-Encoding other than a single chunked",
        ));
    }
    if host > 1 {
        return Err(FramingError::BadFraming("more than one Host"));
    }
    if host == 0 && !http10 {
        return Err(FramingError::BadFraming("missing Host"));
    }
    Ok(())
}

/// The lines of a head, split at each LF (as `split`, a last piece after the
/// last LF included), found by `memchr`: a byte-at-a-time split cost a bearer
/// request's 900-byte `Authorization` line about 5 000 instructions.
struct Lines<'a>(Option<&'a [u8]>);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let rest = self.0?;
        match memchr::memchr(b'\n', rest) {
            Some(i) => {
                self.0 = rest.get(i + 1..);
                rest.get(..i)
            }
            None => {
                self.0 = None;
                Some(rest)
            }
        }
    }
}

/// The checks of [`check_raw_head`] that hyper's HTTP/1 parser leaves to the
/// service, made on the head it parsed: hyper already refuses bare CR, NUL,
/// folded lines, lines without a colon, differing or malformed
/// `Content-Length`, `chunked` not last, and more than 100 fields or 60 KiB.
pub fn check_parsed_head(head: &http::request::Parts, http10: bool) -> Result<(), FramingError> {
    let uri = &head.uri;
    let mut target = uri.path_and_query().map_or(1, |pq| pq.as_str().len());
    if let (Some(scheme), Some(authority)) = (uri.scheme(), uri.authority()) {
        target += scheme.as_str().len() + 3 + authority.as_str().len();
    }
    // "METHOD SP target SP HTTP/1.1"
    if head.method.as_str().len() + 1 + target + 9 > MAX_REQUEST_LINE {
        return Err(FramingError::UriTooLong);
    }
    let mut te = head.headers.get_all(http::header::TRANSFER_ENCODING).iter();
    if let Some(first) = te.next() {
        if te.next().is_some() {
            return Err(FramingError::BadFraming("more than one Transfer-Encoding"));
        }
        if http10 || !trim(first.as_bytes()).eq_ignore_ascii_case(b"chunked") {
            return Err(FramingError::BadFraming(
                "Transfer-Encoding other than a single chunked",
            ));
        }
    }
    let hosts = head.headers.get_all(http::header::HOST).iter().count();
    if hosts > 1 {
        return Err(FramingError::BadFraming("more than one Host"));
    }
    if hosts == 0 && !http10 {
        return Err(FramingError::BadFraming("missing Host"));
    }
    Ok(())
}

fn trim(v: &[u8]) -> &[u8] {
    let start = v
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t'))
        .unwrap_or(v.len());
    let end = v
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t'))
        .map_or(start, |e| e + 1);
    v.get(start..end).unwrap_or_default()
}

/// Most options one request's `Connection` may name: a bound on the work a
/// request makes, high enough for a client that nominates every header the
/// gateway manages (PRX-04) beside `close` and `keep-alive`.
pub const MAX_CONNECTION_OPTIONS: usize = 32;

/// Fields a client may not nominate as hop-by-hop: without them the upstream
/// would read the request differently. (Nominated forwarding fields are
/// removed with the client's other copies; the gateway's own are set after,
/// PRX-04.)
const UNNOMINABLE: &[&str] = &["host", "content-length", "transfer-encoding"];

/// Checks the options of `Connection` (PRX-04): each a token, not too many,
/// none naming a field the request cannot lose. Other nominated fields are
/// removed before the gateway adds its own headers (see `upstream`).
pub fn check_connection(headers: &http::HeaderMap) -> Result<(), FramingError> {
    let mut count = 0usize;
    for value in headers.get_all(http::header::CONNECTION) {
        for token in value
            .as_bytes()
            .split(|&b| b == b',')
            .map(<[u8]>::trim_ascii)
        {
            if token.is_empty() {
                continue;
            }
            count += 1;
            if count > MAX_CONNECTION_OPTIONS {
                return Err(FramingError::BadFraming("too many Connection options"));
            }
            if !token.iter().all(|&b| is_tchar(b)) {
                return Err(FramingError::BadFraming(
                    "a Connection option is not a token",
                ));
            }
            if UNNOMINABLE
                .iter()
                .any(|n| n.as_bytes().eq_ignore_ascii_case(token))
            {
                return Err(FramingError::BadFraming(
                    "Connection names a field the request cannot lose",
                ));
            }
        }
    }
    Ok(())
}

/// RFC 9110 §5.6.2 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'!' | b'#'
                | b'$'
                | b'%'
                | b'&'
                | b'\''
                | b'*'
                | b'+'
                | b'-'
                | b'.'
                | b'^'
                | b'_'
                | b'`'
                | b'|'
                | b'~'
        )
}

/// Checks that the path means the same to every server: no dot segments, no
/// NUL, no backslash, also when percent-encoded or hidden behind `;params`.
/// Returns both canonical forms (see [`crate::config::path`]): decide on one, forward the other.
pub fn check_path(path: &str) -> Result<CanonicalPath, FramingError> {
    check_path_into(path, String::new())
}

/// [`check_path`], writing a path already canonical into `buffer`.
pub fn check_path_into(path: &str, buffer: String) -> Result<CanonicalPath, FramingError> {
    crate::config::path::canonicalize_into(path, buffer)
        .map_err(|e| FramingError::AmbiguousPath(e.reason()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_is_split_into_the_same_lines_as_a_byte_by_byte_split() {
        let heads: [&[u8]; 7] = [
            b"",
            b"\n",
            b"GET / HTTP/1.1",
            b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\nx",
            b"\n\n\nA: b\r",
            b"A: \0\rb\n\tfolded\n",
        ];
        for head in heads {
            let ours: Vec<&[u8]> = Lines(Some(head)).collect();
            let split: Vec<&[u8]> = head.split(|&b| b == b'\n').collect();
            assert_eq!(ours, split, "{:?}", String::from_utf8_lossy(head));
        }
    }

    fn head(fields: &str) -> Vec<u8> {
        format!("POST /x HTTP/1.1\r\nHost: a\r\n{fields}\r\n").into_bytes()
    }

    #[test]
    fn prx08_content_length_with_transfer_encoding_is_refused() {
        let r = check_raw_head(
            &head("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
            false,
        );
        assert_eq!(r.unwrap_err().status(), 400);
    }

    #[test]
    fn prx09_differing_or_invalid_content_length_is_refused_and_identical_repeats_collapse() {
        for cl in [
            "Content-Length: 5\r\ncontent-length: 6\r\n",
            "Content-Length: 5\r\ncontent-length: 05\r\n",
            "Content-Length: +5\r\nContent-Length: +5\r\n",
            "Content-Length: +5\r\n",
            "Content-Length: -1\r\n",
            "Content-Length: 0x10\r\n",
            "Content-Length: 5 6\r\n",
            "Content-Length: 1000000000000000000000\r\n",
            "Content-Length:\r\n",
        ] {
            assert!(
                check_raw_head(&head(cl), false).is_err(),
                "{cl:?} was accepted"
            );
        }
        assert!(check_raw_head(&head("Content-Length: 5\r\n"), false).is_ok());
        let twice = head("Content-Length: 5\r\ncontent-length:  5\r\n");
        assert!(check_raw_head(&twice, false).is_ok());
    }

    #[test]
    fn prx10_only_a_single_chunked_transfer_encoding_is_accepted() {
        for te in [
            "gzip, chunked",
            "chunked, chunked",
            "identity",
            "xchunked",
            "\x0bchunked",
        ] {
            let h = head(&format!("Transfer-Encoding: {te}\r\n"));
            assert!(check_raw_head(&h, false).is_err(), "{te:?} was accepted");
        }
        assert!(check_raw_head(
            &head("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            false
        )
        .is_err());
        assert!(check_raw_head(&head("Transfer-Encoding: chunked\r\n"), false).is_ok());
        // PRX-11: HTTP/1.0 cannot use Transfer-Encoding.
        assert!(check_raw_head(&head("Transfer-Encoding: chunked\r\n"), true).is_err());
    }

    #[test]
    fn prx11_an_http10_body_without_content_length_is_refused() {
        for method in ["POST", "PUT", "PATCH"] {
            let h = format!("{method} /x HTTP/1.0\r\nHost: a\r\n\r\n");
            assert!(check_raw_head(h.as_bytes(), true).is_err(), "{method}");
            let h = format!("{method} /x HTTP/1.0\r\nHost: a\r\nContent-Length: 5\r\n\r\n");
            assert!(
                check_raw_head(h.as_bytes(), true).is_ok(),
                "{method} with a length"
            );
        }
        assert!(check_raw_head(b"GET /x HTTP/1.0\r\n\r\n", true).is_ok());
        // HTTP/1.1 has no close-delimited request body: no length, no body.
        assert!(check_raw_head(b"POST /x HTTP/1.1\r\nHost: a\r\n\r\n", false).is_ok());
    }

    #[test]
    fn prx14_host_must_appear_once() {
        assert!(check_raw_head(b"GET / HTTP/1.1\r\n\r\n", false).is_err());
        assert!(check_raw_head(&head("Host: b\r\n"), false).is_err());
        assert!(check_raw_head(b"GET / HTTP/1.0\r\n\r\n", true).is_ok());
    }

    #[test]
    fn prx20_header_limits_answer_431_and_414() {
        let many: String = (0..=MAX_HEADER_FIELDS)
            .map(|i| format!("X-{i}: v\r\n"))
            .collect();
        assert_eq!(
            check_raw_head(&head(&many), false),
            Err(FramingError::HeadersTooLarge)
        );
        let big = format!("X-Big: {}\r\n", "a".repeat(MAX_HEADER_BYTES));
        assert_eq!(
            check_raw_head(&head(&big), false),
            Err(FramingError::HeadersTooLarge)
        );
        let line = format!(
            "GET /{} HTTP/1.1\r\nHost: a\r\n\r\n",
            "a".repeat(MAX_REQUEST_LINE)
        );
        assert_eq!(
            check_raw_head(line.as_bytes(), false),
            Err(FramingError::UriTooLong)
        );
    }

    #[test]
    fn prx13_folded_and_bare_cr_lines_are_refused() {
        assert!(check_raw_head(&head("X-A: b\r\n c\r\n"), false).is_err());
        assert!(check_raw_head(&head("X-A: b\rc\r\n"), false).is_err());
    }

    #[test]
    fn prx04_connection_may_not_nominate_host_or_framing_fields() {
        let conn = |v: &str| {
            let mut h = http::HeaderMap::new();
            h.insert("connection", http::HeaderValue::from_str(v).unwrap());
            check_connection(&h)
        };
        for v in [
            "close, Host",
            "Content-Length",
            "transfer-encoding",
            "\"Host\"",
        ] {
            assert!(conn(v).is_err(), "{v} was accepted");
        }
        let options = |n: usize| {
            (0..n)
                .map(|i| format!("x-o{i}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        assert!(conn(&options(MAX_CONNECTION_OPTIONS + 1)).is_err());
        // Every managed header nominated at once, beside the usual options.
        let managed = "close, keep-alive, X-Forwarded-User, X-Forwarded-Email, \
            X-Forwarded-Groups, X-Forwarded-Preferred-Username, \
            X-Forwarded-Access-Token, X-Auth-Request-User, X-Auth-Request-Email, \
            X-Portcullis-Assertion, Authorization, X-Forwarded-For, \
            X-Forwarded-Proto, X-Forwarded-Host, X-Real-IP, Forwarded";
        assert!(conn(managed).is_ok(), "{managed} was refused");
        assert!(conn(&options(MAX_CONNECTION_OPTIONS)).is_ok());
        for v in [
            "close",
            "keep-alive, Upgrade",
            "X-Forwarded-User, X-Secret",
            "keep-alive, X-Forwarded-For, x-forwarded-proto, X-Forwarded-Host",
            "",
            " , ",
        ] {
            assert!(conn(v).is_ok(), "{v} was refused");
        }
    }

    #[test]
    fn prx06_paths_that_change_meaning_upstream_are_refused() {
        for p in [
            "/public/../admin",
            "/public/%2e%2e/admin",
            "/public/%2E%2e/admin",
            "/./admin",
            "/public/..;/admin",
            "/public%2f..%2fadmin",
            "/a%00b",
            "/a\\..\\b",
            "/a%5cb",
            "admin",
            "/..",
        ] {
            assert!(check_path(p).is_err(), "{p} was accepted");
        }
        for p in [
            "/",
            "/static/app.js",
            "/api/v4/projects/group%2Fproject",
            "/a;b",
            "/...",
            "/.well-known/x",
        ] {
            assert!(check_path(p).is_ok(), "{p} was refused");
        }
    }
}
