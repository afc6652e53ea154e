//! WebSocket tunnels: after a 101, the bytes of the client's connection and
//! the upstream's are copied both ways. Each side's writes are bounded by
//! the connection's `send_timeout`: a side that stops reading ends the
//! tunnel (and frees its slot of `max_connections`), as it ends an HTTP/1
//! connection whose client stops reading an answer. An idle tunnel has no
//! timeout: a peer that vanished is found by TCP keep-alive (`keepalive`).

use std::future::Future as _;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::server::Conn;

/// Copies bytes both ways between the client's upgraded connection and the
/// upstream's: the connection is a tunnel from here, its bytes no longer requests.
pub fn open(conn: &Arc<Conn>, down: hyper::upgrade::OnUpgrade, up: hyper::upgrade::OnUpgrade) {
    if let Some(heads) = &conn.heads {
        heads.upgraded();
    }
    // The tunnel holds its connection (and its slot of max_connections)
    // until it ends.
    let held = conn.clone();
    let limit = conn.send_timeout();
    tokio::spawn(async move {
        // Owned by the task for its whole life, not only by the log line.
        let held = held;
        let (Ok(down), Ok(up)) = tokio::join!(down, up) else {
            return;
        };
        let mut down = SendBound::new(TokioIo::new(down), limit);
        let mut up = SendBound::new(TokioIo::new(up), limit);
        if let Err(e) = tokio::io::copy_bidirectional(&mut down, &mut up).await {
            tracing::debug!(client = %held.client, error = %e, "WebSocket tunnel ended");
        }
    });
}

/// An I/O whose write (or flush, or shutdown) fails once it has waited
/// `limit` for the peer to take bytes; a write that goes out restarts the
/// count. Reads pass through.
struct SendBound<T> {
    io: T,
    limit: Duration,
    /// Made on the first wait, reset on each that follows.
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A write is waiting on the peer (the timer runs for it).
    waiting: bool,
}

impl<T> SendBound<T> {
    /// Wraps `io`.
    fn new(io: T, limit: Duration) -> Self {
        SendBound {
            io,
            limit,
            timer: None,
            waiting: false,
        }
    }

    /// Passes a ready result on (the wait, if any, is over) or times a wait.
    fn bound<R>(
        &mut self,
        polled: Poll<io::Result<R>>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<R>> {
        if polled.is_ready() {
            self.waiting = false;
            return polled;
        }
        let deadline = tokio::time::Instant::now() + self.limit;
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if !self.waiting {
            self.waiting = true;
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("the peer took no bytes for {:?}", self.limit),
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for SendBound<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for SendBound<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.bound(polled, cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.bound(polled, cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.bound(polled, cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_shutdown(cx);
        self.bound(polled, cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_peer_that_takes_no_bytes_fails_the_write_after_the_limit() {
        let (near, _far) = tokio::io::duplex(64);
        let mut bound = SendBound::new(near, Duration::from_secs(3));
        let started = tokio::time::Instant::now();
        let e = tokio::time::timeout(Duration::from_secs(60), bound.write_all(&[7u8; 4096]))
            .await
            .expect("the write still waits after a minute")
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_secs(3) && waited < Duration::from_secs(4),
            "{waited:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_peer_that_keeps_taking_bytes_gets_them_all() {
        let (near, mut far) = tokio::io::duplex(64);
        let mut bound = SendBound::new(near, Duration::from_secs(3));
        // 4 KiB through a 64-byte pipe, 64 bytes a second: a minute in all,
        // no wait longer than a second.
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 64];
            while got.len() < 4096 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                let n = far.read(&mut buf).await.unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        bound.write_all(&[7u8; 4096]).await.unwrap();
        assert_eq!(reader.await.unwrap(), vec![7u8; 4096]);
    }
}
