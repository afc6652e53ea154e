//! The echo app: an upstream that answers every request with what it received
//! (method, path, the identity headers, every other header), as HTML or JSON.

use std::net::SocketAddr;

use bytes::Bytes;
use http::header::ACCEPT;
use http::{HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::respond;

/// The identity headers the gateway sets, shown first and by name.
pub const IDENTITY_HEADERS: [&str; 4] = [
    "X-Forwarded-User",
    "X-Forwarded-Email",
    "X-Forwarded-Groups",
    "X-Forwarded-Preferred-Username",
];

/// Request bodies are read (so the connection stays usable) up to this size.
const MAX_BODY: usize = 1 << 20;

/// A running echo app. Dropping it (or [`EchoApp::shutdown`]) stops it.
#[derive(Debug)]
pub struct EchoApp {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: watch::Sender<bool>,
}

impl EchoApp {
    /// `http://ADDR`, the upstream URL to configure.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting and closes every open connection.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Serves the echo app on `listener` (the caller binds it, e.g. to 127.0.0.1:0).
pub async fn start(listener: TcpListener) -> EchoApp {
    let addr = match listener.local_addr() {
        Ok(addr) => addr,
        Err(error) => {
            tracing::error!(%error, "echo app: listener has no local address");
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let stop = super::spawn_server(listener, echo);
    EchoApp { addr, stop }
}

async fn echo(req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body_bytes = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes().len(),
        Err(_) => {
            return respond(
                StatusCode::PAYLOAD_TOO_LARGE,
                "text/plain; charset=utf-8",
                "request body too large\n",
            )
        }
    };
    let seen = Seen {
        method: parts.method.as_str().to_string(),
        path: parts.uri.path_and_query().map_or_else(
            || parts.uri.path().to_string(),
            |pq| pq.as_str().to_string(),
        ),
        identity: IDENTITY_HEADERS
            .iter()
            .map(|name| (*name, values(&parts.headers, name)))
            .collect(),
        others: parts
            .headers
            .iter()
            .filter(|(name, _)| {
                !IDENTITY_HEADERS
                    .iter()
                    .any(|id| name.as_str().eq_ignore_ascii_case(id))
            })
            .map(|(name, value)| (name.as_str().to_string(), lossy(value)))
            .collect(),
        body_bytes,
    };
    if wants_json(&parts.headers) {
        respond(StatusCode::OK, "application/json", seen.json().to_string())
    } else {
        respond(StatusCode::OK, "text/html; charset=utf-8", seen.html())
    }
}

/// The facts one request carried.
struct Seen {
    method: String,
    path: String,
    identity: Vec<(&'static str, Vec<String>)>,
    others: Vec<(String, String)>,
    body_bytes: usize,
}

impl Seen {
    fn json(&self) -> Value {
        let identity: Map<String, Value> = self
            .identity
            .iter()
            .map(|(name, values)| (name.to_string(), json!(values)))
            .collect();
        let headers: Vec<Value> = self
            .others
            .iter()
            .map(|(name, value)| json!([name, value]))
            .collect();
        json!({
            "method": self.method,
            "path": self.path,
            "identity": identity,
            "headers": headers,
            "body_bytes": self.body_bytes,
        })
    }

    fn html(&self) -> String {
        use html_escape::encode_text as text;
        let mut identity = String::new();
        for (name, values) in &self.identity {
            let shown = if values.is_empty() {
                "<span class=\"none\">not sent</span>".to_string()
            } else {
                values
                    .iter()
                    .map(|v| format!("<code>{}</code>", text(v)))
                    .collect::<Vec<_>>()
                    .join("<br>")
            };
            identity.push_str(&format!("<dt>{}</dt><dd>{shown}</dd>\n", text(name)));
        }
        let mut headers = String::new();
        for (name, value) in &self.others {
            headers.push_str(&format!(
                "<tr><th scope=\"row\">{}</th><td><code>{}</code></td></tr>\n",
                text(name),
                text(value)
            ));
        }
        format!(
            r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>portcullis echo</title>
<style>
:root {{ color-scheme: light dark; }}
body {{ font: 16px/1.5 system-ui, sans-serif; max-width: 48rem; margin: 2rem auto; padding: 0 1rem; }}
dl {{ display: grid; grid-template-columns: max-content 1fr; gap: .25rem 1rem; }}
dt {{ font-weight: 600; }}
dd {{ margin: 0; overflow-wrap: anywhere; }}
table {{ border-collapse: collapse; width: 100%; }}
th, td {{ text-align: left; vertical-align: top; padding: .25rem .5rem; border-bottom: 1px solid color-mix(in srgb, CanvasText 15%, transparent); }}
td {{ overflow-wrap: anywhere; }}
.none {{ opacity: .6; font-style: italic; }}
</style>
</head>
<body>
<main>
<h1>Echo</h1>
<p>This app shows what reached it through the gateway.</p>
<h2>Request</h2>
<dl>
<dt>Method</dt><dd><code>{method}</code></dd>
<dt>Path</dt><dd><code>{path}</code></dd>
<dt>Body</dt><dd>{body_bytes} bytes</dd>
</dl>
<h2>Identity headers</h2>
<dl>
{identity}</dl>
<h2>Other headers</h2>
<table>
<thead><tr><th scope="col">Name</th><th scope="col">Value</th></tr></thead>
<tbody>
{headers}</tbody>
</table>
</main>
</body>
</html>
"#,
            method = text(&self.method),
            path = text(&self.path),
            body_bytes = self.body_bytes,
        )
    }
}

fn values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers.get_all(name).iter().map(lossy).collect()
}

fn lossy(value: &HeaderValue) -> String {
    String::from_utf8_lossy(value.as_bytes()).into_owned()
}

fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT)
        .iter()
        .any(|v| lossy(v).to_ascii_lowercase().contains("application/json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn running() -> EchoApp {
        start(TcpListener::bind("127.0.0.1:0").await.unwrap()).await
    }

    #[tokio::test]
    async fn echo_shows_identity_headers_escaped_in_html() {
        let app = running().await;
        let body = reqwest::Client::new()
            .get(format!("{}/some/path?q=<b>", app.url()))
            .header("X-Forwarded-User", "alice<script>alert(1)</script>")
            .header("X-Forwarded-Email", "alice@example.com")
            .header("X-Forwarded-Groups", "admins,\"staff\"")
            .header("X-Custom", "a&b")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.contains("alice&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(!body.contains("<script>"));
        assert!(body.contains("alice@example.com"));
        assert!(body.contains("<code>admins,\"staff\"</code>"));
        assert!(body.contains(
            "<dt>X-Forwarded-Preferred-Username</dt><dd><span class=\"none\">not sent</span>"
        ));
        assert!(body.contains("x-custom"));
        assert!(body.contains("a&amp;b"));
        assert!(body.contains("/some/path?q=") && !body.contains("q=<b>"));
        assert!(body.contains("<code>GET</code>"));
    }

    #[tokio::test]
    async fn echo_answers_json_when_asked_and_keeps_every_value() {
        let app = running().await;
        let seen: Value = reqwest::Client::new()
            .post(format!("{}/api", app.url()))
            .header(ACCEPT, "application/json")
            .header("X-Forwarded-User", "alice")
            .header("X-Forwarded-User", "mallory")
            .header("X-Other", "1")
            .body("12345")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(seen["method"], "POST");
        assert_eq!(seen["path"], "/api");
        assert_eq!(
            seen["identity"]["X-Forwarded-User"],
            json!(["alice", "mallory"])
        );
        assert_eq!(seen["identity"]["X-Forwarded-Email"], json!([]));
        assert_eq!(seen["body_bytes"], 5);
        let headers = seen["headers"].as_array().unwrap();
        assert!(headers.contains(&json!(["x-other", "1"])));
        assert!(!headers.iter().any(|h| h[0] == "x-forwarded-user"));
    }

    #[tokio::test]
    async fn echo_stops_when_shut_down() {
        let app = running().await;
        let url = app.url();
        reqwest::get(&url).await.unwrap();
        app.shutdown();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(reqwest::Client::new().get(&url).send().await.is_err());
    }
}
