//! The sealed-cookie opener on random bytes and on bit-flipped real cookies:
//! nothing opens unless it is, byte for byte, a value `Sealer` sealed for that
//! very name and purpose (the seeds in corpus/cookie_open/authentic.txt); it
//! never panics; and a `Cookie` line stripped of the gateway's cookies never
//! carries one to the upstream.
#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use libfuzzer_sys::fuzz_target;
use portcullis::config::Secret;
use portcullis::session::cookie::{self, Lookup, Purpose, Sealer};
use portcullis::session::{LoginState, SessionClaims};
use serde_json::Value;

/// The secrets examples/fuzz_seeds.rs sealed the seeds with.
const SECRETS: [&[u8; 32]; 2] = [
    b"portcullis fuzz secret, current!",
    b"portcullis fuzz secret, retired!",
];
const AUTHENTIC: &str = include_str!("../corpus/cookie_open/authentic.txt");

/// One authentic sealed value: the name (or store context) and purpose it was sealed for.
struct Sealed {
    name: &'static str,
    purpose: Purpose,
    value: &'static str,
}

fn authentic() -> &'static [Sealed] {
    static ALL: OnceLock<Vec<Sealed>> = OnceLock::new();
    ALL.get_or_init(|| {
        AUTHENTIC
            .lines()
            .filter_map(|line| {
                let mut words = line.split(' ');
                let (name, purpose, value) = (words.next()?, words.next()?, words.next()?);
                let purpose = match purpose {
                    "session" => Purpose::Session,
                    "login" => Purpose::LoginState,
                    _ => Purpose::Tokens,
                };
                Some(Sealed {
                    name,
                    purpose,
                    value,
                })
            })
            .collect()
    })
}

fn sealer() -> &'static Sealer {
    static SEALER: OnceLock<Sealer> = OnceLock::new();
    SEALER.get_or_init(|| {
        let secrets: Vec<Secret<Vec<u8>>> =
            SECRETS.iter().map(|s| Secret::new(s.to_vec())).collect();
        Sealer::new(&secrets)
    })
}

/// Whether `value` is an authentic value sealed for `name` and `purpose`.
fn is_authentic(name: &str, purpose: Purpose, value: &str) -> bool {
    authentic()
        .iter()
        .any(|s| s.name == name && s.purpose == purpose && s.value == value)
}

/// Tries `value` under every authentic name and purpose; an open must be an authentic value.
fn try_open(value: &str) {
    let sealer = sealer();
    for sealed in authentic() {
        let name = sealed.name;
        for purpose in [Purpose::Session, Purpose::LoginState, Purpose::Tokens] {
            let opened = match purpose {
                Purpose::Tokens => sealer
                    .open_stored::<Value>(name, purpose, value, 64 * 1024)
                    .is_ok(),
                _ => sealer.open::<Value>(name, purpose, value).is_ok(),
            };
            if opened {
                assert!(
                    is_authentic(name, purpose, value),
                    "a value opened that was not sealed for {name} / {purpose:?}: {value}"
                );
            }
        }
        // The typed payloads, as the session layer opens them.
        if sealer
            .open::<SessionClaims>(name, Purpose::Session, value)
            .is_ok()
        {
            assert!(is_authentic(name, Purpose::Session, value));
        }
        if sealer
            .open::<LoginState>(name, Purpose::LoginState, value)
            .is_ok()
        {
            assert!(is_authentic(name, Purpose::LoginState, value));
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if let Some((b'!', flips)) = data.split_first() {
        // Flip mode: which authentic value, then (offset, xor) pairs on its sealed bytes.
        let Some((&which, flips)) = flips.split_first() else {
            return;
        };
        let all = authentic();
        let Some(original) = all.get(usize::from(which) % all.len().max(1)) else {
            return;
        };
        let mut bytes = URL_SAFE_NO_PAD.decode(original.value).unwrap_or_default();
        if bytes.is_empty() {
            return;
        }
        for pair in flips.chunks_exact(2) {
            let at = usize::from(pair[0]) * 7 % bytes.len();
            bytes[at] ^= pair[1];
        }
        let mutated = URL_SAFE_NO_PAD.encode(&bytes);
        if mutated != original.value {
            try_open(&mutated);
            let sealer = sealer();
            let opened = match original.purpose {
                Purpose::Tokens => sealer
                    .open_stored::<Value>(original.name, original.purpose, &mutated, 64 * 1024)
                    .is_ok(),
                purpose => sealer
                    .open::<Value>(original.name, purpose, &mutated)
                    .is_ok(),
            };
            assert!(!opened, "a bit-flipped cookie opened: {mutated}");
        }
        return;
    }
    let header = String::from_utf8_lossy(data);
    // The value as it comes, and as `find` reads it out of a `Cookie` line.
    try_open(&header);
    for sealed in authentic() {
        if let Lookup::One(value) = cookie::find(std::iter::once(header.as_ref()), sealed.name) {
            try_open(value);
        }
    }
    // What the upstream receives holds none of the gateway's cookies.
    let names: Vec<&str> = authentic().iter().map(|s| s.name).collect();
    if let Some(kept) = cookie::without_bytes(data, &names) {
        if let Ok(kept) = std::str::from_utf8(&kept) {
            for name in &names {
                assert_eq!(
                    cookie::find(std::iter::once(kept), name),
                    Lookup::Absent,
                    "{name} reaches the upstream in {kept:?}"
                );
            }
        }
    }
});
