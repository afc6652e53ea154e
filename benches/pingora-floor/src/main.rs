//! Floor for `benches/load.sh`: pingora with nothing but a fixed peer, to
//! show what the pingora engine alone costs.
//! Usage: pingora-floor LISTEN UPSTREAM [THREADS]
#![allow(clippy::unwrap_used, missing_docs)]
use async_trait::async_trait;
use pingora::prelude::*;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct Bare(String);

#[async_trait]
impl ProxyHttp for Bare {
    type CTX = ();
    fn new_ctx(&self) {}
    async fn upstream_peer(&self, _s: &mut Session, _c: &mut ()) -> Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(
            self.0.as_str(),
            false,
            String::new(),
        )))
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let listen = args.next().unwrap();
    let upstream = args.next().unwrap();
    let threads = args.next().and_then(|t| t.parse().ok()).unwrap_or(1);
    let conf = pingora::server::configuration::ServerConf {
        threads,
        ..Default::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut svc = http_proxy_service(&server.configuration, Bare(upstream));
    svc.add_tcp(&listen);
    server.add_service(svc);
    server.run_forever();
}
