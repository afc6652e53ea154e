//! Session secrets printed in portcullis's own examples and docs. Anyone can
//! read them, so a gateway keyed with one seals cookies anyone can forge:
//! `serve`, `check` and a reload refuse them. A test scans the README,
//! `config/`, `docs/`, `examples/` and the fuzz config seeds so that a new
//! example secret is added here.

/// Every session secret the project has published (base64, as printed).
pub const EXAMPLE_SECRETS: &[&str] = &[
    // config/portcullis.toml and the Docker image until 2026-12 (the image copied it).
    "k1p0fLq2pQm7WQ0r5V9o3cL1yW6m2sQ8tR4uE7iO0aA=",
    // The fuzz seeds: config files under fuzz/corpus/config_load/ ("hello world" x3)…
    "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQgaGVsbG8gd29ybGQ=",
    // …and the keys of the sealed cookies under fuzz/corpus/cookie_open/.
    "cG9ydGN1bGxpcyBmdXp6IHNlY3JldCwgY3VycmVudCE=",
    "cG9ydGN1bGxpcyBmdXp6IHNlY3JldCwgcmV0aXJlZCE=",
    // docs/recipes/kubernetes.yaml's placeholder: URL-safe base64 of 33 bytes,
    // so a manifest applied unedited would otherwise start with it.
    "REPLACE-with-the-output-of-portcullis-keygen",
    // A PKCE verifier of examples/fuzz_seeds.rs: not meant as a secret, but
    // published and long enough to be one.
    "dmVyaWZpZXItdmVyaWZpZXItdmVyaWZpZXItdmVyaWZpZXI",
];

/// Whether `secret` (decoded bytes) is one of the published example secrets,
/// whichever base64 flavour it was written in.
pub fn is_example_secret(secret: &[u8]) -> bool {
    EXAMPLE_SECRETS
        .iter()
        .filter_map(|s| super::validate::decode_secret(s))
        .any(|known| known == secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_published_secret_is_known_in_any_base64_flavour() {
        use base64::Engine as _;
        let bytes = super::super::validate::decode_secret(EXAMPLE_SECRETS[0]).unwrap();
        let url_safe = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes);
        let decoded = super::super::validate::decode_secret(&url_safe).unwrap();
        assert!(is_example_secret(&decoded));
        assert!(!is_example_secret(&[7u8; 32]));
    }
}
