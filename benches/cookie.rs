//! The session cookie's cost on every signed-in request: open it (and, on a rotated key, seal a
//! fresh one), plus finding it among a browser's usual cookies.
// A bench that cannot set up should stop loudly.
#![allow(clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::config::Secret;
use portcullis::session::cookie::{self, Purpose, Sealer};
use portcullis::session::SessionClaims;

const NAME: &str = "__Host-portcullis";

fn claims() -> SessionClaims {
    SessionClaims {
        sid: "q3Vd0o2kq1sXH0sVY4PmNw".into(),
        uid: "0b6f4f3e-2a7c-4d51-9d0e-5f1c2b7a9e44".into(),
        host: "wiki.example".into(),
        iat: 1_700_000_000,
        exp: 1_700_043_200,
    }
}

fn bench(c: &mut Criterion) {
    let current = Secret::new(vec![0x11; 32]);
    let previous = Secret::new(vec![0x22; 32]);
    let sealer = Sealer::new(&[current.clone(), previous.clone()]);
    let old_sealer = Sealer::new(&[previous]);
    let value = claims();

    c.bench_function("seal SessionClaims", |b| {
        b.iter(|| sealer.seal(black_box(NAME), Purpose::Session, black_box(&value)))
    });

    let sealed = sealer.seal(NAME, Purpose::Session, &value).unwrap();
    c.bench_function("open SessionClaims", |b| {
        b.iter(|| {
            sealer.open::<SessionClaims>(black_box(NAME), Purpose::Session, black_box(&sealed))
        })
    });

    let stale = old_sealer.seal(NAME, Purpose::Session, &value).unwrap();
    assert!(
        sealer
            .open::<SessionClaims>(NAME, Purpose::Session, &stale)
            .unwrap()
            .stale_key
    );
    c.bench_function("open with stale key", |b| {
        b.iter(|| {
            sealer.open::<SessionClaims>(black_box(NAME), Purpose::Session, black_box(&stale))
        })
    });

    let header = format!(
        "_ga=GA1.2.1234567890.1700000000; _gid=GA1.2.987654321.1700000000; theme=dark; \
         lang=en-US; csrftoken=4f1d2c3b4a5968778695a4b3c2d1e0f1; {NAME}={sealed}; \
         __Host-portcullis_login=abc; tz=Europe%2FBerlin"
    );
    c.bench_function("find session cookie (8 cookies)", |b| {
        b.iter(|| cookie::find(std::iter::once(black_box(header.as_str())), black_box(NAME)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
