//! Floor for `benches/load.sh`: a hyper 1.x reverse proxy with nothing in it
//! (HTTP/1.1, one current-thread runtime per thread, a pooled keep-alive
//! client per runtime, mimalloc), to show what the engine alone costs.
//!
//! Usage: bare_hyper LISTEN UPSTREAM [THREADS]   e.g. 127.0.0.1:8080 127.0.0.1:9000 1

use std::net::SocketAddr;

use anyhow::Context as _;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: bare_hyper LISTEN UPSTREAM [THREADS]";
    let listen: SocketAddr = args.next().context(usage)?.parse().context("LISTEN")?;
    let upstream = args.next().context(usage)?;
    let threads: usize = args
        .next()
        .map_or(Ok(1), |t| t.parse())
        .context("THREADS")?;
    // One runtime per thread, each with its own SO_REUSEPORT listener and its
    // own pool: no cross-thread wake-ups, which is the point of the floor.
    let workers: Vec<_> = (0..threads.max(1))
        .map(|_| {
            let upstream = upstream.clone();
            std::thread::spawn(move || serve(listen, upstream))
        })
        .collect();
    for w in workers {
        w.join()
            .map_err(|_| anyhow::anyhow!("a worker thread panicked"))??;
    }
    Ok(())
}

fn serve(listen: SocketAddr, upstream: String) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        // The socket registers with the reactor of the runtime that creates it.
        let socket = tokio::net::TcpSocket::new_v4()?;
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(listen)?;
        let listener = socket.listen(1024)?;
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client: Client<_, Incoming> = Client::builder(TokioExecutor::new()).build(connector);
        // Like any real proxy it keeps hyper's 30 s head timeout, which needs a timer.
        let mut server = http1::Builder::new();
        server.timer(TokioTimer::new());
        loop {
            let (stream, _) = listener.accept().await?;
            stream.set_nodelay(true)?;
            let (client, upstream, server) = (client.clone(), upstream.clone(), server.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |mut req: Request<Incoming>| {
                    let (client, upstream) = (client.clone(), upstream.clone());
                    async move {
                        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
                        *req.uri_mut() = Uri::try_from(format!("http://{upstream}{path}"))?;
                        anyhow::Ok(client.request(req).await?)
                    }
                });
                // A client that goes away mid-request is not the floor's concern.
                let _ = server.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    })
}
