//! The JWKS parser on hostile documents: never a panic; a set it accepts has
//! between one and `MAX_KEYS` keys, each able to verify at least one
//! asymmetric algorithm and nothing else; and key lookup by `kid`/`alg` agrees
//! with the keys it holds.
#![no_main]

use jsonwebtoken::Algorithm;
use libfuzzer_sys::fuzz_target;
use portcullis::jwk::{self, Candidates, MAX_KEYS};

const ALL: [Algorithm; 10] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
    Algorithm::HS256,
];

fuzz_target!(|data: &[u8]| {
    let Ok(set) = jwk::parse(data) else {
        return;
    };
    assert!(!set.keys.is_empty() && set.keys.len() <= MAX_KEYS);
    // Private or symmetric material never makes a key.
    let doc: serde_json::Value = serde_json::from_slice(data).expect("an accepted JWKS is JSON");
    let raw = doc["keys"]
        .as_array()
        .expect("an accepted JWKS has a keys array");
    let private = ["d", "p", "q", "dp", "dq", "qi", "k"];
    let clean = raw
        .iter()
        .filter(|k| {
            k.as_object()
                .is_some_and(|o| !private.iter().any(|m| o.contains_key(*m)))
        })
        .count();
    assert!(
        set.keys.len() <= clean,
        "a key with private members was kept"
    );
    for key in &set.keys {
        assert!(!key.algorithms.is_empty());
        assert!(!key.algorithms.iter().any(|a| portcullis::jws::is_hmac(*a)));
        for alg in ALL {
            let no_kid = set.candidates(None, alg);
            let fitting = set
                .keys
                .iter()
                .filter(|k| k.algorithms.contains(&alg))
                .count();
            match (no_kid, fitting) {
                (Candidates::NoKey, 0) | (Candidates::Keys(_), 1) => {}
                (Candidates::Ambiguous, n) if n > 1 => {}
                (c, n) => panic!("{n} keys fit {alg:?}, lookup says {c:?}"),
            }
            if let Some(kid) = &key.kid {
                assert!(set.has_kid(kid));
                if let Candidates::Keys(found) = set.candidates(Some(kid), alg) {
                    assert!(found
                        .iter()
                        .all(|k| k.kid.as_deref() == Some(kid.as_str())
                            && k.algorithms.contains(&alg)));
                }
            }
        }
        // A signature made of nothing verifies nothing.
        for alg in ALL {
            assert!(!key.verify(alg, b"message", &[]));
        }
    }
});
