//! Unpredictable values (tokens, nonces, ids): the one place the product
//! asks the operating system's secure random source for bytes. A leaf: it
//! imports nothing from the crate, so every layer may use it.

use base64::Engine as _;

/// The system's secure random source failed: the caller cannot go on
/// safely and should answer "retry" (never fall back to a weaker source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no secure random values available")]
pub struct NoRandom;

/// Fills `bytes` from the system's secure random source.
pub fn fill(bytes: &mut [u8]) -> Result<(), NoRandom> {
    aws_lc_rs::rand::fill(bytes).map_err(|_| NoRandom)
}

/// A random `u64` (jitter, ids that need no encoding).
pub fn u64() -> Result<u64, NoRandom> {
    let mut bytes = [0u8; 8];
    fill(&mut bytes)?;
    Ok(u64::from_le_bytes(bytes))
}

/// 32 random bytes, base64url without padding: state, nonce, PKCE
/// verifier, session id, hand-off code.
pub fn token() -> Result<String, NoRandom> {
    let mut bytes = [0u8; 32];
    fill(&mut bytes)?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_43_url_safe_characters_and_never_repeat() {
        let a = token().unwrap();
        let b = token().unwrap();
        assert_eq!(a.len(), 43);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_'));
        assert_ne!(a, b);
    }

    #[test]
    fn two_random_u64s_differ_and_filled_bytes_are_not_all_zero() {
        assert_ne!(u64().unwrap(), u64().unwrap());
        let mut bytes = [0u8; 32];
        fill(&mut bytes).unwrap();
        assert_ne!(bytes, [0u8; 32]);
    }
}
