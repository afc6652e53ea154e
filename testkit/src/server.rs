//! The HTTP/1.1 server every fake runs on, and their response helper.

use std::convert::Infallible;
use std::future::Future;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A complete response of the demo servers: never cached, never sniffed.
pub fn respond(
    status: http::StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    use http::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Serves HTTP/1.1 on `listener` until the returned sender says stop (or is
/// dropped): one task per connection, every open connection closed on stop.
pub fn spawn_server<H, Fut>(listener: TcpListener, handler: H) -> watch::Sender<bool>
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let (stop_tx, stop_rx) = watch::channel(false);
    tokio::spawn(accept_loop(listener, stop_rx, handler));
    stop_tx
}

async fn accept_loop<H, Fut>(listener: TcpListener, mut stop: watch::Receiver<bool>, handler: H)
where
    H: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            () = stopped(&mut stop) => return,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _peer)) => stream,
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "testkit server: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let handler = handler.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                served = conn => {
                    if let Err(error) = served {
                        tracing::debug!(%error, "testkit server: connection ended with an error");
                    }
                }
                () = stopped(&mut stop) => {}
            }
        });
    }
}

/// Resolves once stop was requested or the owner is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender was dropped: that is a stop too.
    let _ = stop.wait_for(|stop| *stop).await;
}
