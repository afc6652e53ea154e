//! The admin listener: `/healthz` (the process is up), `/readyz` (config
//! loaded and every source ready), `/metrics` (Prometheus text).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use http::Response;

use crate::gateway::body::{self, Body};
use crate::metrics::Metrics;

/// Whether each source can serve sign-ins (its discovery and keys are loaded).
#[derive(Debug, Default)]
pub struct Readiness {
    sources: Vec<(String, AtomicBool)>,
}

impl Readiness {
    /// Tracks these sources, each starting as `ready`.
    pub fn new<'a>(slugs: impl IntoIterator<Item = &'a str>, ready: bool) -> Self {
        Readiness {
            sources: slugs
                .into_iter()
                .map(|s| (s.to_string(), AtomicBool::new(ready)))
                .collect(),
        }
    }

    /// Marks a source ready or not.
    pub fn set(&self, slug: &str, ready: bool) {
        if let Some((_, flag)) = self.sources.iter().find(|(s, _)| s == slug) {
            flag.store(ready, Ordering::Release);
        }
    }

    /// The slugs of the sources that are not ready.
    pub fn not_ready(&self) -> Vec<&str> {
        self.sources
            .iter()
            .filter(|(_, f)| !f.load(Ordering::Acquire))
            .map(|(s, _)| s.as_str())
            .collect()
    }
}

/// The admin HTTP app.
pub struct Admin {
    metrics: Arc<Metrics>,
    readiness: Arc<Readiness>,
}

impl Admin {
    /// An admin app over the gateway's metrics and readiness.
    pub fn new(metrics: Arc<Metrics>, readiness: Arc<Readiness>) -> Self {
        Admin { metrics, readiness }
    }

    /// The response for a path; pure apart from reading the shared counters.
    pub fn answer(&self, path: &str) -> (u16, &'static str, String) {
        match path {
            "/healthz" => (200, "text/plain; charset=utf-8", "ok\n".into()),
            "/readyz" => {
                let waiting = self.readiness.not_ready();
                let body = serde_json::json!({
                    "ready": waiting.is_empty(),
                    "config": "loaded",
                    "sources_not_ready": waiting,
                });
                let status = if waiting.is_empty() { 200 } else { 503 };
                (status, "application/json", body.to_string())
            }
            "/metrics" => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            _ => (
                404,
                "text/plain; charset=utf-8",
                "not found: try /healthz, /readyz or /metrics\n".into(),
            ),
        }
    }
}

impl Admin {
    /// The HTTP response for a request to `path`.
    pub fn response(&self, path: &str) -> Response<Body> {
        let (status, content_type, text) = self.answer(path);
        let len = text.len();
        let mut resp = Response::new(body::full(bytes::Bytes::from(text)));
        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
        let headers = resp.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        headers.insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(len));
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-store"),
        );
        resp
    }
}

/// Serves the admin endpoints over HTTP/1.1 until `shutdown` changes.
pub async fn serve(
    admin: Arc<Admin>,
    listener: tokio::net::TcpListener,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            _ = shutdown.changed() => return,
            a = listener.accept() => a,
        };
        let Ok((tcp, _)) = accepted else {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let resp = admin.response(req.uri().path());
                    async move { Ok::<_, std::convert::Infallible>(resp) }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(std::time::Duration::from_secs(10));
            let _ = builder
                .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readyz_lists_sources_that_are_not_ready() {
        let metrics = Arc::new(Metrics::new(&["wiki".to_string()]).unwrap());
        let readiness = Arc::new(Readiness::new(["corp", "ci"], true));
        let admin = Admin::new(metrics, readiness.clone());
        assert_eq!(admin.answer("/readyz").0, 200);
        readiness.set("corp", false);
        let (status, _, body) = admin.answer("/readyz");
        assert_eq!(status, 503);
        assert!(body.contains("\"corp\""), "{body}");
        assert_eq!(admin.answer("/healthz").0, 200);
        assert!(admin
            .answer("/metrics")
            .2
            .contains("portcullis_requests_total"));
    }
}
