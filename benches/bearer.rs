//! Machine-token verification on the request path: a cold verify (signature,
//! cache miss) and a hot one (cache hit), beside the raw cost of
//! `jsonwebtoken::decode` with the same key, for RS256 and ES256.
// A bench that cannot set up should stop loudly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::sync::Arc;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::bearer::Bearer;
use portcullis::demo::{Faults, Provider, ProviderConfig, SignAlg};
use serde_json::{json, Map, Value};

fn claims(iss: &str, jti: u64) -> Map<String, Value> {
    let now = jsonwebtoken::get_current_timestamp();
    let mut c = Map::new();
    c.insert("iss".into(), json!(iss));
    c.insert("sub".into(), json!("bench"));
    c.insert("aud".into(), json!("api"));
    c.insert("iat".into(), json!(now));
    c.insert("exp".into(), json!(now + 3600));
    c.insert("jti".into(), json!(jti));
    c
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let provider: Provider = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        portcullis::demo::provider::start(
            l,
            ProviderConfig::example("http://127.0.0.1:1/cb").unwrap(),
        )
        .await
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bench.toml");
    std::fs::write(
        &file,
        format!(
            "[session]\nsecrets = [\"/xwspt2JjZe0JvfDbWUYyLCXMgUr2e+qVTBcd7vY1P0=\"]\n[store]\nurl = \"sqlite::memory:\"\n\
             [[source]]\nslug = \"ci\"\ntype = \"openidconnect\"\noidc_well_known_url = \"{}\"\n\
             [[app]]\nname = \"api\"\nupstream = \"http://127.0.0.1:1\"\njwt_sources = [\"ci\"]\njwt_audiences = [\"api\"]\n[[app.policy]]\non = [\"access\"]\neffect = \"allow\"\n",
            provider.well_known_url()
        ),
    )
    .unwrap();
    let config = portcullis::config::load_with_env(&file, Vec::new()).unwrap();
    let http = portcullis::outbound::Http::new(
        std::time::Duration::from_secs(5),
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    let readiness = Arc::new(portcullis::readiness::Readiness::new(["ci"], false));
    let (sources, _) = rt
        .block_on(portcullis::source::Sources::load(
            &config,
            http,
            readiness,
            portcullis::clock::Clock::system(),
        ))
        .unwrap();
    let sources = Arc::new(sources);
    let app = config.apps[0].clone();
    let jwks: Value = rt.block_on(async {
        reqwest::get(format!("{}/jwks", provider.issuer()))
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    });

    for (name, alg) in [("RS256", SignAlg::RS256), ("ES256", SignAlg::ES256)] {
        provider.set_faults(|f| {
            *f = Faults {
                alg,
                ..Faults::default()
            }
        });
        let bearer = Bearer::new(sources.clone(), &config.sources, 100_000);
        let now = jsonwebtoken::get_current_timestamp();
        // Warm the key set once, so "cold" measures the signature, not the fetch.
        let first = provider.sign(&claims(&provider.issuer(), 0)).unwrap();
        rt.block_on(bearer.verify(0, &app, &first, now)).unwrap();

        let tokens: Vec<String> = (1..=20_000u64)
            .map(|i| provider.sign(&claims(&provider.issuer(), i)).unwrap())
            .collect();
        let mut next = tokens.iter().cycle();
        c.bench_function(
            &format!("bearer {name} cold (signature, cache miss)"),
            |b| {
                b.iter_batched(
                    || Bearer::new(sources.clone(), &config.sources, 100_000),
                    // The fresh cache is handed back so its drop is not measured.
                    |fresh| {
                        let p = rt
                            .block_on(fresh.verify(0, &app, black_box(next.next().unwrap()), now))
                            .unwrap();
                        (fresh, p)
                    },
                    criterion::BatchSize::SmallInput,
                )
            },
        );
        c.bench_function(&format!("bearer {name} hot (cache hit)"), |b| {
            b.iter(|| {
                rt.block_on(bearer.verify(0, &app, black_box(&first), now))
                    .unwrap()
            })
        });

        // The raw cost of jsonwebtoken with a DecodingKey built once.
        let header = jsonwebtoken::decode_header(&first).unwrap();
        let jwk = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"].as_str() == header.kid.as_deref())
            .unwrap();
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(jwk.clone()).unwrap();
        let key = jsonwebtoken::DecodingKey::from_jwk(&jwk).unwrap();
        let mut validation = jsonwebtoken::Validation::new(header.alg);
        validation.set_audience(&["api"]);
        c.bench_function(&format!("raw jsonwebtoken::decode {name}"), |b| {
            b.iter(|| jsonwebtoken::decode::<Value>(black_box(&first), &key, &validation).unwrap())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
