//! The engine's connection behaviour: head and idle timeouts, the connection
//! limit, and pooled upstream connections.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::support::{base_config, client, Gateway, Upstream};

/// A gateway in front of `up` with everything public and these `[server]` lines.
fn gateway(up: &str, server_extra: &str) -> Gateway {
    Gateway::start_full(&format!(
        "{}[[app]]\nname = \"open\"\nupstream = \"{up}\"\npublic_paths = [\"/\"]\n",
        base_config().replace("[session]", &format!("{server_extra}\n[session]"))
    ))
}

/// Waits until the gateway closes `conn` (read returns 0 or fails); how long it took.
fn time_until_closed(mut conn: TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    conn.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 1024];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return None
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_dripping_its_head_is_closed_at_the_head_timeout_while_others_are_served() {
    let up = Upstream::start("app").await;
    let gw = gateway(&up.url(), "request_header_timeout = \"2s\"");
    let conn = TcpStream::connect(gw.addr).unwrap();
    let mut writer = conn.try_clone().unwrap();
    // One byte every 500 ms: the whole head would take 30 s.
    let head = format!(
        "GET /x HTTP/1.1\r\nHost: a\r\nX-Slow: {}\r\n\r\n",
        "z".repeat(20)
    );
    let dripper = std::thread::spawn(move || {
        for b in head.bytes() {
            if writer.write_all(&[b]).is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    });
    let watcher = std::thread::spawn(move || time_until_closed(conn, Duration::from_secs(20)));
    // Meanwhile another client is served as usual.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let resp = client().get(gw.url("/fast")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.unwrap(), "hello from app");

    let closed_after = tokio::task::spawn_blocking(move || watcher.join().unwrap())
        .await
        .unwrap()
        .expect("the dripping client was never closed");
    // 2 s timeout; generous upper bound for a loaded machine.
    assert!(
        closed_after >= Duration::from_millis(1500) && closed_after < Duration::from_secs(8),
        "{closed_after:?}"
    );
    dripper.join().unwrap();
    assert!(
        up.requests().iter().all(|r| r.uri == "/fast"),
        "the slow request was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_keep_alive_connection_idle_past_idle_timeout_is_closed() {
    let up = Upstream::start("app").await;
    let gw = gateway(&up.url(), "idle_timeout = \"1s\"");
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).ends_with("hello from app") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed before answering");
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let closed_after =
        tokio::task::spawn_blocking(move || time_until_closed(conn, Duration::from_secs(15)))
            .await
            .unwrap()
            .expect("the idle connection was never closed");
    assert!(closed_after < Duration::from_secs(8), "{closed_after:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_max_connections_wait_until_one_closes() {
    let up = Upstream::start("app").await;
    let gw = gateway(&up.url(), "max_connections = 1");
    let request = b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n";
    let read_answer = |conn: &mut TcpStream| {
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).ends_with("hello from app") {
            match conn.read(&mut buf) {
                Ok(n) if n > 0 => got.extend_from_slice(&buf[..n]),
                _ => return None,
            }
        }
        Some(String::from_utf8_lossy(&got).into_owned())
    };
    let mut first = TcpStream::connect(gw.addr).unwrap();
    first.write_all(request).unwrap();
    let answer = read_answer(&mut first).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    // The second connection waits in the accept queue while the first is open.
    let mut second = TcpStream::connect(gw.addr).unwrap();
    second.write_all(request).unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(800)))
        .unwrap();
    let mut buf = [0u8; 64];
    assert!(
        second.read(&mut buf).is_err(),
        "a connection over the limit was served"
    );
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let answer = read_answer(&mut second).expect("the waiting connection was never served");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_connections_are_reused_across_requests() {
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (accepted, served) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    {
        let (accepted, served) = (accepted.clone(), served.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let served = served.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |_req| {
                        served.fetch_add(1, Ordering::SeqCst);
                        async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"ok")),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), svc)
                        .await;
                });
            }
        });
    }
    let gw = gateway(&format!("http://{addr}"), "");
    let c = client();
    for i in 0..40 {
        let resp = c.get(gw.url(&format!("/n{i}"))).send().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.text().await.unwrap(), "ok");
    }
    assert_eq!(served.load(Ordering::SeqCst), 40);
    let connections = accepted.load(Ordering::SeqCst);
    assert!(
        connections <= 4,
        "40 requests took {connections} upstream connections"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_keep_alive_connection_outlives_a_shorter_head_timeout() {
    let up = Upstream::start("app").await;
    let gw = gateway(
        &up.url(),
        "request_header_timeout = \"1s\"\nidle_timeout = \"30s\"",
    );
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let exchange = |conn: &mut TcpStream| {
        conn.write_all(b"GET /x HTTP/1.1\r\nHost: a\r\n\r\n")
            .unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !String::from_utf8_lossy(&got).ends_with("hello from app") {
            let n = conn.read(&mut buf).unwrap();
            assert!(n > 0, "the connection was closed");
            got.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&got).into_owned()
    };
    assert!(exchange(&mut conn).starts_with("HTTP/1.1 200"));
    // Idle for twice the head timeout, well within the idle timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(exchange(&mut conn).starts_with("HTTP/1.1 200"));
    assert_eq!(up.requests().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_upload_is_not_taken_for_a_silent_upstream() {
    let up = Upstream::start("app").await;
    let gw = gateway(&up.url(), "upstream_read_timeout = \"1s\"");
    let mut conn = TcpStream::connect(gw.addr).unwrap();
    conn.write_all(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        .unwrap();
    // Eight chunks 400 ms apart: 3.2 s of upload, each gap well under 1 s.
    for _ in 0..8 {
        conn.write_all(b"5\r\nabcde\r\n").unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    conn.write_all(b"0\r\n\r\n").unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&got).ends_with("hello from app") {
        let n = conn.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    let seen = up.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].body.len(), 40);
}
