//! Invariants shared by the fuzz targets.

use portcullis::config::path::{canonicalize, CanonicalPath};

/// Whether `bytes` (fully percent-decoded) holds a `.` or `..` segment, a NUL
/// or a backslash, reading `%2F` as `/` and ignoring `;params`, as
/// upstream servers might.
fn ambiguous(path: &str) -> Option<&'static str> {
    let mut decoded = Vec::with_capacity(path.len());
    let mut bytes = path.bytes();
    while let Some(b) = bytes.next() {
        if b == b'%' {
            let hex: Vec<u8> = bytes.by_ref().take(2).collect();
            match std::str::from_utf8(&hex)
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
            {
                Some(v) if hex.len() == 2 => decoded.push(v),
                _ => return Some("malformed percent-encoding"),
            }
        } else {
            decoded.push(b);
        }
    }
    if decoded.contains(&0) {
        return Some("NUL");
    }
    if decoded.contains(&b'\\') {
        return Some("backslash");
    }
    for segment in decoded.split(|&b| b == b'/') {
        let name = segment.split(|&b| b == b';').next().unwrap_or_default();
        if name == b"." || name == b".." {
            return Some("dot segment");
        }
    }
    None
}

/// Canonicalises `raw`; when it is accepted, checks that neither canonical
/// form carries a dot segment, NUL or backslash (however decoded), and that
/// canonicalising again changes nothing.
pub fn check_path_invariants(raw: &str) {
    let Ok(once) = canonicalize(raw) else {
        return;
    };
    // Anything accepted: the raw path itself had nothing ambiguous either.
    if let Some(why) = ambiguous(raw) {
        panic!("accepted a path with a {why}: {raw:?} -> {once:?}");
    }
    for form in [once.forward(), once.decision()] {
        if let Some(why) = ambiguous(form) {
            panic!("a canonical form has a {why}: {raw:?} -> {once:?}");
        }
        assert!(form.starts_with('/'), "not absolute: {raw:?} -> {once:?}");
        assert!(
            !form.contains("//"),
            "empty segment kept: {raw:?} -> {once:?}"
        );
    }
    let twice: CanonicalPath = canonicalize(once.forward())
        .unwrap_or_else(|e| panic!("the forward form is refused ({e}): {raw:?} -> {once:?}"));
    assert_eq!(once, twice, "canonicalising twice changed {raw:?}");
    let decided = canonicalize(once.decision())
        .unwrap_or_else(|e| panic!("the decision form is refused ({e}): {raw:?} -> {once:?}"));
    assert_eq!(
        decided.decision(),
        once.decision(),
        "the decision form is not a fixed point for {raw:?}"
    );
}
