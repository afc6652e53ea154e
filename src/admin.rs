//! The admin listener: `/healthz` (the process is up), `/readyz` (config
//! loaded, every source ready, the store answering within `STORE_TIMEOUT`),
//! `/metrics` (Prometheus text).

use std::sync::Arc;
use std::time::Duration;

use http::Response;

use crate::identity::store::UserStore;

use crate::gateway::body::{self, Body};
use crate::metrics::Metrics;
use crate::readiness::Readiness;

/// How long `/readyz` waits for the store's answer: a probe must not hang
/// on a database that accepts connections but does not answer.
pub const STORE_TIMEOUT: Duration = Duration::from_millis(1500);

/// The config being served: its generation (1 at start, one more per
/// accepted reload), when it was loaded, and its sources' readiness.
#[derive(Debug)]
pub struct Loaded {
    /// 1 for the config read at start, then one more per accepted reload.
    pub generation: u64,
    /// When this config was loaded.
    pub loaded_at: std::time::SystemTime,
    /// Its sources' readiness.
    pub readiness: Arc<Readiness>,
}

/// The admin HTTP app.
pub struct Admin {
    metrics: Arc<Metrics>,
    loaded: Arc<arc_swap::ArcSwap<Loaded>>,
    store: Arc<dyn UserStore>,
}

/// `ok`, or why the store is not usable (shown on `/readyz`).
pub async fn store_status(store: &dyn UserStore, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, store.ping()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(format!("unreachable: {e}")),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}

impl Admin {
    /// An admin app over the gateway's metrics, loaded config (swapped by reloads) and store.
    pub fn new(
        metrics: Arc<Metrics>,
        loaded: Arc<arc_swap::ArcSwap<Loaded>>,
        store: Arc<dyn UserStore>,
    ) -> Self {
        Admin {
            metrics,
            loaded,
            store,
        }
    }

    /// The response for a path: reads the shared counters, and for `/readyz`
    /// asks the store one bounded query.
    pub async fn answer(&self, path: &str) -> (u16, &'static str, String) {
        match path {
            "/healthz" => (200, "text/plain; charset=utf-8", "ok\n".into()),
            "/readyz" => {
                let loaded = self.loaded.load_full();
                let waiting = loaded.readiness.not_ready();
                let store = store_status(self.store.as_ref(), STORE_TIMEOUT).await;
                let ready = waiting.is_empty() && store.is_ok();
                let body = serde_json::json!({
                    "ready": ready,
                    "config": "loaded",
                    "config_generation": loaded.generation,
                    // DESIGN's word for it, beside the name it has had since 1.
                    "generation": loaded.generation,
                    "config_loaded_at": humantime::format_rfc3339_seconds(loaded.loaded_at).to_string(),
                    "sources_not_ready": waiting,
                    "store": store.as_ref().map_or_else(String::as_str, |()| "ok"),
                });
                let status = if ready { 200 } else { 503 };
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
    pub async fn response(&self, path: &str) -> Response<Body> {
        let (status, content_type, text) = self.answer(path).await;
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
                    let admin = admin.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(admin.response(req.uri().path()).await)
                    }
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

    #[tokio::test]
    async fn readyz_lists_sources_that_are_not_ready_and_says_the_store_is_ok() {
        let metrics = Arc::new(Metrics::new(&["wiki".to_string()]).unwrap());
        let readiness = Arc::new(Readiness::new(["corp", "ci"], true));
        let store = crate::identity::store::open("sqlite::memory:")
            .await
            .unwrap();
        let loaded = Arc::new(arc_swap::ArcSwap::from_pointee(Loaded {
            generation: 3,
            loaded_at: std::time::UNIX_EPOCH + Duration::from_secs(86_400),
            readiness: readiness.clone(),
        }));
        let admin = Admin::new(metrics, loaded, store);
        let (status, _, body) = admin.answer("/readyz").await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("\"store\":\"ok\""), "{body}");
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["config_generation"], 3, "{body}");
        assert_eq!(json["generation"], 3, "{body}");
        assert!(
            body.contains("\"config_loaded_at\":\"1970-01-02T00:00:00Z\""),
            "{body}"
        );
        readiness.set("corp", false);
        let (status, _, body) = admin.answer("/readyz").await;
        assert_eq!(status, 503);
        assert!(body.contains("\"corp\""), "{body}");
        assert_eq!(admin.answer("/healthz").await.0, 200);
        assert!(admin
            .answer("/metrics")
            .await
            .2
            .contains("portcullis_requests_total"));
    }
}
