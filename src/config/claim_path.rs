//! Claim paths (`data.id`, `"kubernetes.io".namespace`): the grammar config
//! validation checks a source's `claims` against and the mapping reads with,
//! so a path that passes `portcullis check` is one the mapping can follow.

/// Why a claim path cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimPathError {
    /// Nothing between two dots, or at either end.
    #[error("empty segment; write a dotted path such as \"data.id\" (quote a name with dots: \"kubernetes.io\".namespace)")]
    EmptySegment,
    /// A quoted segment has no closing quote.
    #[error("a quoted segment has no closing quote")]
    Unclosed,
    /// A quote in the middle of a segment, or text right after a closing quote.
    #[error("a quote may only open and close a whole segment: \"a.b\".c")]
    StrayQuote,
}

/// Splits a claim path into its segments: dots separate them, and a segment
/// written in double quotes is taken whole, dots included
/// (`"kubernetes.io".namespace`). No escapes: a claim name with a quote in it
/// cannot be addressed (none is known).
pub fn parse_path(path: &str) -> Result<Vec<&str>, ClaimPathError> {
    let mut segments = Vec::new();
    let mut rest = path;
    loop {
        let (segment, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').ok_or(ClaimPathError::Unclosed)?;
            let (name, tail) = quoted.split_at(end);
            // `tail` starts with the closing quote.
            (name, tail.get(1..).unwrap_or_default())
        } else {
            let end = rest.find('.').unwrap_or(rest.len());
            let (name, tail) = rest.split_at(end);
            if name.contains('"') {
                return Err(ClaimPathError::StrayQuote);
            }
            (name, tail)
        };
        if segment.is_empty() {
            return Err(ClaimPathError::EmptySegment);
        }
        segments.push(segment);
        if after.is_empty() {
            return Ok(segments);
        }
        rest = after.strip_prefix('.').ok_or(ClaimPathError::StrayQuote)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claim_paths_split_on_dots_and_keep_quoted_segments_whole() {
        let ok: &[(&str, &[&str])] = &[
            ("sub", &["sub"]),
            ("data.attributes.email", &["data", "attributes", "email"]),
            ("emails.0", &["emails", "0"]),
            (
                "\"kubernetes.io\".namespace",
                &["kubernetes.io", "namespace"],
            ),
            (
                "\"kubernetes.io\".serviceaccount.name",
                &["kubernetes.io", "serviceaccount", "name"],
            ),
            ("a.\"b.c\"", &["a", "b.c"]),
            ("\"a.b\"", &["a.b"]),
            ("\"plain\"", &["plain"]),
        ];
        for (path, want) in ok {
            assert_eq!(parse_path(path).as_deref(), Ok(*want), "{path}");
        }
        let bad: &[(&str, ClaimPathError)] = &[
            ("", ClaimPathError::EmptySegment),
            ("a..b", ClaimPathError::EmptySegment),
            (".a", ClaimPathError::EmptySegment),
            ("a.", ClaimPathError::EmptySegment),
            ("\"\".a", ClaimPathError::EmptySegment),
            ("\"kubernetes.io.namespace", ClaimPathError::Unclosed),
            ("\"a\"b", ClaimPathError::StrayQuote),
            ("a\"b\".c", ClaimPathError::StrayQuote),
        ];
        for (path, want) in bad {
            assert_eq!(parse_path(path).as_ref(), Err(want), "{path}");
        }
    }
}
