//! Mints machine tokens for `benches/load.sh`: starts the in-process demo
//! provider, writes its JWKS and COUNT distinct signed JWTs (one per line).
//!
//! Usage: mint_tokens OUT_DIR RS256_COUNT ES256_COUNT ISSUER AUDIENCE
//! Writes OUT_DIR/jwks.json (both keys) and OUT_DIR/tokens-RS256.txt,
//! OUT_DIR/tokens-ES256.txt; tokens expire in 4 h.
// A bench helper that cannot set up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Write as _;

use portcullis::demo::{Faults, ProviderConfig, SignAlg};
use serde_json::{json, Map};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 6 {
        eprintln!("usage: mint_tokens OUT_DIR RS256_COUNT ES256_COUNT ISSUER AUDIENCE");
        std::process::exit(2);
    }
    let out = std::path::Path::new(&args[1]);
    let rs_count: u64 = args[2].parse().expect("RS256_COUNT must be a number");
    let es_count: u64 = args[3].parse().expect("ES256_COUNT must be a number");
    let (issuer, audience) = (&args[4], &args[5]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let provider = portcullis::demo::provider::start(
        listener,
        ProviderConfig::example("http://127.0.0.1:1/cb").unwrap(),
    )
    .await;
    let jwks = reqwest::get(format!("{}/jwks", provider.issuer()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    std::fs::write(out.join("jwks.json"), jwks).unwrap();
    let now = jsonwebtoken::get_current_timestamp();
    for (name, alg, count) in [
        ("RS256", SignAlg::RS256, rs_count),
        ("ES256", SignAlg::ES256, es_count),
    ] {
        provider.set_faults(|f| {
            *f = Faults {
                alg,
                ..Faults::default()
            }
        });
        let file = std::fs::File::create(out.join(format!("tokens-{name}.txt"))).unwrap();
        let mut w = std::io::BufWriter::new(file);
        for i in 0..count {
            let mut c = Map::new();
            c.insert("iss".into(), json!(issuer));
            c.insert("sub".into(), json!(format!("machine-{}", i % 50)));
            c.insert("aud".into(), json!(audience));
            c.insert("iat".into(), json!(now));
            c.insert("exp".into(), json!(now + 4 * 3600));
            c.insert("jti".into(), json!(i));
            writeln!(w, "{}", provider.sign(&c).unwrap()).unwrap();
        }
        w.flush().unwrap();
    }
    provider.shutdown();
}
