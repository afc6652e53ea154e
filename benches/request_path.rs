//! The pure work the gateway does on every request before proxying: framing
//! checks on the raw head, path check, routing, and header stripping.
// A bench that cannot set up should stop loudly.
#![allow(clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use portcullis::config::{App, Upstream};
use portcullis::gateway::{framing, head_tap, upstream};
use portcullis::routing::Router;

fn app(name: &str, host: Option<&str>, prefix: &str) -> App {
    App {
        name: name.into(),
        host: host.map(str::to_string),
        path_prefix: prefix.into(),
        upstream: Upstream {
            url: url::Url::parse("http://127.0.0.1:3000").unwrap(),
            host: "127.0.0.1".into(),
            port: 3000,
            tls: false,
        },
        sources: vec![],
        jwt_sources: vec![],
        jwt_audiences: vec![],
        forward_bearer_token: false,
        identity_assertion: false,
        pass_access_token: false,
        upstream_ca_file: None,
        public_paths: vec!["/static/".into()],
        claim_headers: Default::default(),
        policies: vec![],
    }
}

const HEAD: &[u8] = b"GET /static/app.js?v=3 HTTP/1.1\r\nHost: wiki.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64)\r\n\
Accept: text/html,application/xhtml+xml\r\nAccept-Language: en-US,en;q=0.9\r\nAccept-Encoding: gzip, deflate, br\r\n\
Cookie: portcullis=abcdefghijklmnopqrstuvwxyz0123456789\r\nConnection: keep-alive\r\n\r\n";

fn bench(c: &mut Criterion) {
    c.bench_function("framing::check_raw_head (8 headers)", |b| {
        b.iter(|| framing::check_raw_head(black_box(HEAD), false))
    });
    c.bench_function("framing::check_path", |b| {
        b.iter(|| framing::check_path(black_box("/static/js/app.bundle.min.js")))
    });
    let apps: Vec<App> = (0..20)
        .map(|i| app(&format!("app{i}"), Some(&format!("app{i}.example")), "/"))
        .chain([
            app("wiki-api", Some("wiki.example"), "/api"),
            app("wiki", Some("wiki.example"), "/"),
        ])
        .collect();
    let router = Router::new(&apps);
    c.bench_function("routing::route (22 apps)", |b| {
        b.iter(|| router.route(black_box(Some("wiki.example")), black_box("/api/v1/pages")))
    });
    let mut req = http::HeaderMap::new();
    for (k, v) in [
        ("host", "wiki.example"),
        ("user-agent", "Mozilla/5.0"),
        ("accept", "text/html"),
        ("accept-language", "en"),
        ("x-forwarded-user", "spoof"),
        ("connection", "keep-alive"),
    ] {
        req.append(k, http::HeaderValue::from_static(v));
    }
    let client = http::HeaderValue::from_static("10.0.0.1");
    let host = http::HeaderValue::from_static("wiki.example");
    let peer = upstream::Peer {
        client: Some(&client),
        real_ip: Some(&client),
        trusted: false,
        scheme: &upstream::HTTP,
        host: Some(&host),
    };
    c.bench_function("upstream::filter_request_headers (6 headers)", |b| {
        b.iter_batched(
            || req.clone(),
            |mut r| {
                let mut set = upstream::Forwarding::default();
                upstream::filter_request_headers(&mut r, black_box(&peer), &mut set);
                (r, set)
            },
            criterion::BatchSize::SmallInput,
        )
    });
    c.bench_function("path::canonicalize (hostile spelling)", |b| {
        b.iter(|| {
            portcullis::config::path::canonicalize(black_box("//api/%76%31;v=2/pages%2Fhome"))
        })
    });
}

/// A browser-like head of about 500 bytes.
const HEAD_500: &[u8] = b"GET /wiki/Special:RecentChanges?days=30&limit=50 HTTP/1.1\r\n\
Host: wiki.example\r\nUser-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\nAccept-Language: en-US,en;q=0.5\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\nReferer: https://wiki.example/wiki/Main_Page\r\n\
Cookie: portcullis=abcdefghijklmnopqrstuvwxyz0123456789abcdefghij; theme=dark\r\n\
Connection: keep-alive\r\nUpgrade-Insecure-Requests: 1\r\nSec-Fetch-Dest: document\r\n\
Sec-Fetch-Mode: navigate\r\n\r\n";

fn bench_head_tap(c: &mut Criterion) {
    // One tap for the whole run, as on a keep-alive connection: the head
    // buffer and the queue are reused from one request to the next.
    let (mut tap, heads) = head_tap::HeadTap::new();
    c.bench_function("head_tap: feed a 500-byte head + pop it", |b| {
        b.iter(|| {
            tap.feed(black_box(HEAD_500));
            black_box(heads.pop())
        })
    });
    let (mut tap, heads) = head_tap::HeadTap::new();
    c.bench_function("head_tap: feed + pop + check_raw_head (500 bytes)", |b| {
        b.iter(|| {
            tap.feed(black_box(HEAD_500));
            heads.pop().map(|h| h.check())
        })
    });
}

criterion_group!(benches, bench, bench_head_tap);
criterion_main!(benches);
