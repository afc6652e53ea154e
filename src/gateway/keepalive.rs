//! TCP keep-alive on every client connection (set on the proxy listeners,
//! which their connections inherit) and every upstream connection: the one
//! way a long-lived, idle connection (a WebSocket tunnel) learns that its
//! peer is gone.

use std::time::Duration;

/// How long a connection may carry nothing before TCP keep-alive probes
/// begin (`probe_silent_peers`).
const PROBE_AFTER: Duration = Duration::from_secs(60);
/// Time between two probes.
const PROBE_EVERY: Duration = Duration::from_secs(10);
/// Probes unanswered before the kernel ends the connection.
const PROBES: u32 = 6;

/// Turns TCP keep-alive on for `socket`: a connection to an upstream, or a
/// proxy listener, whose accepted connections inherit it (Linux copies the
/// listener's options into each). An idle WebSocket tunnel has no timeout
/// of its own, and a peer that vanished without a FIN or RST (powered off,
/// a NAT that forgot it) would hold it, and its slot of `max_connections`,
/// for ever. The kernel ends such a connection about two minutes after it
/// fell silent, or, with data of ours unacknowledged, when retransmission
/// gives up (`tcp_retries2`, about 15 minutes).
pub fn probe_silent_peers<S: std::os::fd::AsFd>(socket: &S) {
    let probes = socket2::TcpKeepalive::new()
        .with_time(PROBE_AFTER)
        .with_interval(PROBE_EVERY)
        .with_retries(PROBES);
    if let Err(e) = socket2::SockRef::from(socket).set_tcp_keepalive(&probes) {
        tracing::debug!(error = %e, "TCP keep-alive could not be turned on");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_connection_probed_for_a_silent_peer_has_keep_alive_after_a_minute() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        probe_silent_peers(&accepted);
        let sock = socket2::SockRef::from(&accepted);
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(60));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            Duration::from_secs(10)
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 6);
        assert!(!socket2::SockRef::from(&client).keepalive().unwrap());
    }
}
