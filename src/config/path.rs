//! Request paths canonicalised once (PRX-06): the path the upstream receives
//! and the path every decision (routing, `/_auth/*`, public paths, policies)
//! is made on come from one pure function, so the two cannot disagree.
//! It lives in config, the bottom layer, because validation refuses a
//! policy's `path_prefix` that is not already in this canonical spelling.

/// A request path in its two canonical forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanonicalPath {
    /// What the upstream receives: unreserved `%xx` decoded, other `%xx`
    /// upper-cased, empty segments merged, `;parameters`, `%2F` and `%3B` kept.
    forward: String,
    /// What decisions match against, when it differs from `forward`: the
    /// forward path with `%2F` read as `/`, `%3B` as `;`, each segment
    /// without its `;parameters`, empty segments merged.
    decision: Option<String>,
}

impl CanonicalPath {
    /// What the upstream receives.
    pub fn forward(&self) -> &str {
        &self.forward
    }

    /// What decisions (routing, public paths, policies) match against.
    pub fn decision(&self) -> &str {
        self.decision.as_deref().unwrap_or(&self.forward)
    }

    /// Whether decisions see the forward path itself: no `;parameters`,
    /// `%2F` or `%3B` in it.
    pub fn is_plain(&self) -> bool {
        self.decision.is_none()
    }

    /// The forward path's buffer, for [`canonicalize_into`] to write the
    /// next path into.
    pub fn into_buffer(self) -> String {
        self.forward
    }
}

/// Why a path is refused (400): it could mean another path to some server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path does not start with `/` (`*`, empty, or a relative target).
    #[error("the path must start with /")]
    NotAbsolute,
    /// A `.` or `..` segment, plain, percent-encoded, behind `%2F` or before `;params`.
    #[error("dot segment in the path")]
    DotSegment,
    /// NUL, plain or encoded.
    #[error("NUL in the path")]
    Nul,
    /// A backslash, plain or encoded (some servers read it as `/`).
    #[error("backslash in the path")]
    Backslash,
    /// A `%` not followed by two hex digits: servers disagree on what it means.
    #[error("malformed percent-encoding in the path")]
    BadEncoding,
    /// An overlong UTF-8 form (`%C0%AE` for `.`): never valid UTF-8, it
    /// exists only to spell `.`, `/` or `\\` so that a filter misses them and
    /// a lenient decoder still reads them.
    #[error("overlong UTF-8 in the path")]
    Overlong,
}

impl PathError {
    /// A fixed reason, safe to show to the client.
    pub fn reason(self) -> &'static str {
        match self {
            PathError::NotAbsolute => "the path must start with /",
            PathError::DotSegment => "dot segment in the path",
            PathError::Nul => "NUL in the path",
            PathError::Backslash => "backslash in the path",
            PathError::BadEncoding => "malformed percent-encoding in the path",
            PathError::Overlong => "overlong UTF-8 in the path",
        }
    }
}

/// RFC 3986 unreserved characters: their `%xx` form means the same, so it is decoded.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters a path segment may carry literally (RFC 3986 `pchar` without `%`);
/// any other byte (space, raw non-ASCII, ...) is percent-encoded on the way through.
fn is_literal(b: u8) -> bool {
    is_unreserved(b)
        || matches!(
            b,
            b'!' | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
                | b':'
                | b'@'
        )
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_encoded(out: &mut String, b: u8) {
    use std::fmt::Write as _;
    // `{:02X}` is the upper-case `%xx` DESIGN asks for; writing to a String cannot fail.
    let _ = write!(out, "%{b:02X}");
}

/// One raw segment (between literal `/`) normalised: unreserved `%xx`
/// decoded, other `%xx` upper-cased, bytes that may not appear literally
/// encoded. Also returns the segment fully decoded, for the checks.
fn normalise_segment(raw: &[u8]) -> Result<(String, Vec<u8>), PathError> {
    let mut out = String::with_capacity(raw.len());
    let mut decoded = Vec::with_capacity(raw.len());
    let mut bytes = raw.iter().copied();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hi = bytes.next().and_then(hex_value);
            let lo = bytes.next().and_then(hex_value);
            let (Some(hi), Some(lo)) = (hi, lo) else {
                return Err(PathError::BadEncoding);
            };
            let value = hi << 4 | lo;
            decoded.push(value);
            if is_unreserved(value) {
                out.push(char::from(value));
            } else {
                push_encoded(&mut out, value);
            }
        } else {
            decoded.push(b);
            if is_literal(b) {
                out.push(char::from(b));
            } else {
                push_encoded(&mut out, b);
            }
        }
    }
    Ok((out, decoded))
}

/// Refuses what some server would read as another path: NUL, backslash, and
/// dot segments, looking through `%xx`, `%2F` and `;params` alike.
fn check_decoded(decoded: &[u8]) -> Result<(), PathError> {
    if decoded.contains(&0) {
        return Err(PathError::Nul);
    }
    if decoded.contains(&b'\\') {
        return Err(PathError::Backslash);
    }
    if has_overlong_utf8(decoded) {
        return Err(PathError::Overlong);
    }
    for part in decoded.split(|&b| b == b'/') {
        // Tomcat and others read `..;x` as `..`: the name before `;` decides.
        let name = part.split(|&b| b == b';').next().unwrap_or_default();
        if name == b"." || name == b".." {
            return Err(PathError::DotSegment);
        }
    }
    Ok(())
}

/// Whether `bytes` hold an overlong UTF-8 form (RFC 3629 §3): `C0`/`C1`
/// (two bytes), `E0` then `80`–`9F` (three), `F0` then `80`–`8F` (four),
/// or the five- and six-byte forms of old decoders (`F8`–`FD`), each
/// followed by a continuation byte. Other bytes that are not UTF-8 pass
/// (Latin-1 names: `%C0_propos`, `%FCber`): they spell no ASCII character
/// in any decoder.
fn has_overlong_utf8(bytes: &[u8]) -> bool {
    bytes.iter().enumerate().any(|(i, &b)| {
        let next = bytes.get(i + 1).copied().unwrap_or(0);
        let continued = (0x80..0xC0).contains(&next);
        (matches!(b, 0xC0 | 0xC1 | 0xF8..=0xFD) && continued)
            || (b == 0xE0 && (0x80..0xA0).contains(&next))
            || (b == 0xF0 && (0x80..0x90).contains(&next))
    })
}

/// Canonicalises a request path (without query), as DESIGN "Paths" says;
/// `Err` means answer 400 and forward nothing.
pub fn canonicalize(raw: &str) -> Result<CanonicalPath, PathError> {
    canonicalize_into(raw, String::new())
}

/// [`canonicalize`], writing a path that is already canonical into `buffer`
/// (emptied first) instead of a new `String`.
pub fn canonicalize_into(raw: &str, mut buffer: String) -> Result<CanonicalPath, PathError> {
    if is_plain(raw) {
        // Most paths: both forms are the path itself, one copy, no more.
        buffer.clear();
        buffer.push_str(raw);
        return Ok(CanonicalPath {
            forward: buffer,
            decision: None,
        });
    }
    canonicalize_fully(raw)
}

/// [`canonicalize`] segment by segment, for any path.
fn canonicalize_fully(raw: &str) -> Result<CanonicalPath, PathError> {
    let Some(rest) = raw.as_bytes().strip_prefix(b"/") else {
        return Err(PathError::NotAbsolute);
    };
    let mut forward = String::with_capacity(raw.len());
    let mut decision = String::with_capacity(raw.len());
    // A trailing `/` is kept (`/static/` is not `/static`); empty segments elsewhere merge.
    let trailing_slash = rest.is_empty() || rest.ends_with(b"/");
    // Whether the decision path ends in a piece with no name (`/x%2F`, `/x/;p`),
    // which reads as a trailing `/`.
    let mut ends_open = false;
    for segment in rest.split(|&b| b == b'/').filter(|s| !s.is_empty()) {
        let (canonical, decoded) = normalise_segment(segment)?;
        check_decoded(&decoded)?;
        forward.push('/');
        forward.push_str(&canonical);
        // For decisions `%2F` is a `/` and `%3B` a `;` (an upstream may decode
        // them), and each piece is seen without its `;parameters`.
        let split = canonical.replace("%2F", "/").replace("%3B", ";");
        for piece in split.split('/') {
            let name = piece.split(';').next().unwrap_or_default();
            ends_open = name.is_empty();
            if !ends_open {
                decision.push('/');
                decision.push_str(name);
            }
        }
    }
    if trailing_slash {
        forward.push('/');
    }
    if trailing_slash || ends_open || decision.is_empty() {
        decision.push('/');
    }
    let decision = (decision != forward).then_some(decision);
    Ok(CanonicalPath { forward, decision })
}

/// Whether `raw` is already canonical in both forms, as most paths are:
/// absolute, only bytes a segment may carry literally (no `%`, no `;`), no
/// empty segment but a trailing `/`, no `.` or `..` segment. The full
/// canonicalisation would give it back unchanged, twice (a test holds the
/// two to the same answers).
fn is_plain(raw: &str) -> bool {
    let Some(rest) = raw.as_bytes().strip_prefix(b"/") else {
        return false;
    };
    let segments = rest.strip_suffix(b"/").unwrap_or(rest);
    rest.is_empty()
        || segments.split(|&b| b == b'/').all(|segment| {
            !segment.is_empty()
                && segment != b"."
                && segment != b".."
                && segment.iter().all(|&b| b != b';' && is_literal(b))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_canonical_path_is_written_into_the_buffer_it_is_given() {
        let mut buffer = String::with_capacity(64);
        buffer.push_str("/left/over/from/the/last/request");
        let at = buffer.as_ptr();
        let path = canonicalize_into("/wiki/page", buffer).unwrap();
        assert_eq!(
            (path.forward(), path.decision()),
            ("/wiki/page", "/wiki/page")
        );
        let buffer = path.into_buffer();
        assert_eq!(buffer.as_ptr(), at, "a new String was made");
        // A path that needs rewriting is built whole, as before.
        let path = canonicalize_into("/a//b/%7Ex", buffer).unwrap();
        assert_eq!(path.forward(), "/a/b/~x");
    }

    fn ok(raw: &str) -> (String, String) {
        let c = canonicalize(raw).unwrap_or_else(|e| panic!("{raw}: {e}"));
        (c.forward().to_string(), c.decision().to_string())
    }

    #[test]
    fn prx06_hostile_spellings_canonicalise_to_the_path_they_mean() {
        for (raw, forward, decision) in [
            ("/", "/", "/"),
            ("/admin", "/admin", "/admin"),
            ("//admin", "/admin", "/admin"),
            ("///admin//x", "/admin/x", "/admin/x"),
            ("/admin/", "/admin/", "/admin/"),
            ("/admin//", "/admin/", "/admin/"),
            ("/%61dmin", "/admin", "/admin"),
            ("/%41%44MIN", "/ADMIN", "/ADMIN"),
            ("/%7euser/%2d%5f", "/~user/-_", "/~user/-_"),
            ("/admin;x", "/admin;x", "/admin"),
            ("/admin;x/y;z=1", "/admin;x/y;z=1", "/admin/y"),
            ("/;x/admin", "/;x/admin", "/admin"),
            ("/admin%2Fx", "/admin%2Fx", "/admin/x"),
            ("/admin%2fx", "/admin%2Fx", "/admin/x"),
            ("/admin%2F", "/admin%2F", "/admin/"),
            ("/%2Fadmin", "/%2Fadmin", "/admin"),
            ("/admin%3Bx", "/admin%3Bx", "/admin"),
            ("/admin%3bx/y", "/admin%3Bx/y", "/admin/y"),
            ("/static/;v=2", "/static/;v=2", "/static/"),
            ("/a%20b", "/a%20b", "/a%20b"),
            ("/a%c3%a9", "/a%C3%A9", "/a%C3%A9"),
            ("/a b", "/a%20b", "/a%20b"),
            ("/caf\u{e9}", "/caf%C3%A9", "/caf%C3%A9"),
            ("/...", "/...", "/..."),
            ("/.well-known/x", "/.well-known/x", "/.well-known/x"),
            ("/a.b/..c", "/a.b/..c", "/a.b/..c"),
            (
                "/api/v4/group%2Fproject",
                "/api/v4/group%2Fproject",
                "/api/v4/group/project",
            ),
            ("/_auth;x/check", "/_auth;x/check", "/_auth/check"),
        ] {
            assert_eq!(
                ok(raw),
                (forward.to_string(), decision.to_string()),
                "{raw}"
            );
        }
    }

    #[test]
    fn a_path_taken_as_already_canonical_is_what_the_full_canonicalisation_gives() {
        const PIECES: &[&str] = &[
            "/", "a", "B", "0", ".", "..", "-", "_", "~", ";", "=", "%2F", "%2e", "%41", "%", " ",
            "\\", "\u{e9}", "!", "@", ":", "+", "$", "&", "'", "(", ")", "*", ",", "\u{0}",
        ];
        // The same cases every run.
        let mut cases = portcullis_testkit::cases::Cases::new(0x9E37_79B9_7F4A_7C15);
        let mut next = |n: usize| cases.below(n);
        let mut plain = 0;
        for case in 0..50_000 {
            let tail: String = (0..next(8)).map(|_| PIECES[next(PIECES.len())]).collect();
            let raw = format!("/{tail}");
            if is_plain(&raw) {
                plain += 1;
                let full =
                    canonicalize_fully(&raw).unwrap_or_else(|e| panic!("case {case}: {raw}: {e}"));
                assert_eq!(
                    (full.forward(), full.decision()),
                    (raw.as_str(), raw.as_str()),
                    "case {case}"
                );
            }
            assert_eq!(
                canonicalize(&raw),
                canonicalize_fully(&raw),
                "case {case}: {raw}"
            );
        }
        // The generator reaches both kinds.
        assert!(plain > 1_000, "{plain} plain paths");
    }

    #[test]
    fn prx06_ambiguous_paths_are_refused() {
        for (raw, why) in [
            ("/public/../admin", PathError::DotSegment),
            ("/./admin", PathError::DotSegment),
            ("/..", PathError::DotSegment),
            ("/admin/.", PathError::DotSegment),
            ("/%2e%2e/admin", PathError::DotSegment),
            ("/public/%2E%2e/admin", PathError::DotSegment),
            ("/public/.%2e/admin", PathError::DotSegment),
            ("/public/%2e/admin", PathError::DotSegment),
            ("/public/..%2Fadmin", PathError::DotSegment),
            ("/public%2F..%2Fadmin", PathError::DotSegment),
            ("/public/..;/admin", PathError::DotSegment),
            ("/public/..;x/admin", PathError::DotSegment),
            ("/public;x/../admin", PathError::DotSegment),
            ("/public/x;%2F..%2F/admin", PathError::DotSegment),
            ("/public/%2e%2e%3Bx/admin", PathError::DotSegment),
            ("/admin%00", PathError::Nul),
            ("/a;%00", PathError::Nul),
            ("/a\\b", PathError::Backslash),
            ("/a%5cb", PathError::Backslash),
            ("/a%5C..%5Cadmin", PathError::Backslash),
            ("/a;x\\y", PathError::Backslash),
            ("/a%", PathError::BadEncoding),
            ("/a%2", PathError::BadEncoding),
            ("/a%zz", PathError::BadEncoding),
            ("/a%%32%65", PathError::BadEncoding),
            // Overlong `.`, `/` and `\\`, which a lenient decoder reads as such.
            ("/public/%c0%ae%c0%ae/admin", PathError::Overlong),
            ("/public%c0%afadmin", PathError::Overlong),
            ("/a%C1%9Cb", PathError::Overlong),
            ("/a%e0%80%ae", PathError::Overlong),
            ("/a%F0%80%80%AE", PathError::Overlong),
            ("/a%F8%80%80%80%AE", PathError::Overlong),
            ("/a%FC%80%80%80%80%AF", PathError::Overlong),
            ("admin", PathError::NotAbsolute),
            ("*", PathError::NotAbsolute),
            ("", PathError::NotAbsolute),
        ] {
            assert_eq!(canonicalize(raw), Err(why), "{raw}");
        }
    }

    #[test]
    fn prx06_the_canonical_path_is_a_fixed_point() {
        for raw in [
            "//admin;x//%61%2fb%3b/",
            "/a%20b/c%c3%a9;p=1",
            // No overlong form: Latin-1 (`é`, `À_`, `Á`, `ü`), and valid UTF-8
            // that begins with `E0` or `F0`.
            "/caf%E9",
            "/%C0_propos/%C1/%FCber",
            "/%E0%A4%85/%F0%9F%98%80",
            "/%2Fadmin%2F",
            "/x/;y",
        ] {
            let once = canonicalize(raw).unwrap();
            let twice = canonicalize(&once.forward).unwrap();
            assert_eq!(once, twice, "{raw}");
        }
    }
}
