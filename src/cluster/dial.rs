//! Dialing a peer: sockets that notice a dead link, and a jittered back-off
//! between attempts.
//!
//! ractor_cluster's own `client_connect` opens a plain socket; a peer that
//! vanishes without a FIN (power cut, cut cable) then leaves the session
//! open until the kernel gives up retransmitting, ~15 minutes on Linux
//! defaults. Arbor dials its own sockets with TCP keepalive (idle 5 s, then
//! every 1 s, 3 probes) and `TCP_USER_TIMEOUT` (unacknowledged data for
//! that long closes the connection), and hands them to the node server.

use std::{net::SocketAddr, time::Duration};

use socket2::{SockRef, TcpKeepalive};
use tokio::net::{TcpSocket, TcpStream};

/// How long a connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The first retry's delay; each next one doubles, up to [`MAX_DELAY`].
pub const FIRST_DELAY: Duration = Duration::from_millis(200);

/// The longest delay between attempts.
pub const MAX_DELAY: Duration = Duration::from_secs(5);

/// Keepalive and user timeout on a socket, before or after it connects.
pub fn harden(socket: SockRef<'_>, user_timeout: Duration) -> std::io::Result<()> {
    socket.set_keepalive(true)?;
    socket.set_tcp_keepalive(
        &TcpKeepalive::new()
            .with_time(Duration::from_secs(5))
            .with_interval(Duration::from_secs(1))
            .with_retries(3),
    )?;
    socket.set_tcp_user_timeout(Some(user_timeout))?;
    Ok(())
}

/// Opens a hardened connection to `addr`.
pub async fn connect(addr: SocketAddr, user_timeout: Duration) -> std::io::Result<TcpStream> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    harden(SockRef::from(&socket), user_timeout)?;
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no answer within {CONNECT_TIMEOUT:?}"),
            )
        })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The delay before attempt `attempt` (0: the first retry): doubling from
/// [`FIRST_DELAY`] up to [`MAX_DELAY`], then scaled by a factor in
/// [0.5, 1.0] drawn from `random`, so that nodes that lost the same peer
/// do not all dial it at once.
pub fn backoff(attempt: u32, random: u64) -> Duration {
    let base = FIRST_DELAY
        .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
        .min(MAX_DELAY);
    let factor = 0.5 + (random >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
    base.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_back_off_doubles_up_to_its_cap_and_is_jittered_down_to_half() {
        assert_eq!(backoff(0, 0), Duration::from_millis(100));
        assert_eq!(backoff(1, 0), Duration::from_millis(200));
        assert_eq!(backoff(3, 0), Duration::from_millis(800));
        assert_eq!(backoff(30, 0), MAX_DELAY / 2);
        assert!(backoff(0, u64::MAX) <= FIRST_DELAY);
        assert!(backoff(0, u64::MAX) > Duration::from_millis(199));
        assert!(backoff(u32::MAX, u64::MAX) <= MAX_DELAY);
    }

    #[tokio::test]
    async fn a_dialed_socket_has_keepalive_and_a_user_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stream = connect(addr, Duration::from_secs(7)).await.unwrap();
        let s = SockRef::from(&stream);
        assert!(s.keepalive().unwrap());
        assert_eq!(s.tcp_user_timeout().unwrap(), Some(Duration::from_secs(7)));
        assert_eq!(s.tcp_keepalive_time().unwrap(), Duration::from_secs(5));
        assert!(s.tcp_nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        assert!(connect(addr, Duration::from_secs(1)).await.is_err());
    }
}
