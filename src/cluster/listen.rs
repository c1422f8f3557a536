//! The cluster port: arbor's own accept loop in front of ractor_cluster's
//! node server.
//!
//! ractor_cluster's listener accepts and, with TLS, handshakes inline: one
//! client that connects and says nothing holds every later peer back. It
//! also leaves accepted sockets without keepalive. Arbor accepts on the
//! cluster port itself, hardens each socket ([`dial::harden`]), runs each
//! TLS handshake in a task of its own with a deadline, and hands the
//! connection to the node server as ractor_cluster's own listener would.
//! (The node server's own listener is bound to an ephemeral loopback port
//! nobody is told about.)

use std::{net::SocketAddr, sync::Arc, time::Duration};

use ractor::ActorRef;
use ractor_cluster::{NetworkStream, NodeServerMessage};
use socket2::SockRef;
use tokio::net::TcpListener;
use tokio_rustls::{TlsAcceptor, rustls};

use super::dial;

/// The longest a peer's TLS handshake may take.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Accepts peers on `listener` until the task is aborted.
pub async fn accept_loop(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    server: ActorRef<NodeServerMessage>,
    user_timeout: Duration,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    loop {
        let (stream, peer_addr) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                // Out of descriptors, mostly: wait a little, do not spin.
                tracing::warn!(error = %e, "cluster: failed to accept a peer");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let local_addr = match stream.local_addr() {
            Ok(a) => a,
            Err(_) => continue,
        };
        if let Err(e) = dial::harden(SockRef::from(&stream), user_timeout)
            .and_then(|_| stream.set_nodelay(true))
        {
            tracing::debug!(peer = %peer_addr, error = %e, "cluster: failed to set socket options");
        }
        let (acceptor, server) = (acceptor.clone(), server.clone());
        tokio::spawn(async move {
            let stream = match acceptor {
                None => NetworkStream::Raw {
                    peer_addr,
                    local_addr,
                    stream,
                },
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => NetworkStream::TlsServer {
                            peer_addr,
                            local_addr,
                            stream,
                        },
                        Ok(Err(e)) => {
                            tracing::warn!(peer = %peer_addr, error = %e, "cluster: refused a peer: TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::warn!(peer = %peer_addr, "cluster: refused a peer: no TLS handshake within {HANDSHAKE_TIMEOUT:?}");
                            return;
                        }
                    }
                }
            };
            let _ = server.cast(NodeServerMessage::ConnectionOpened {
                stream: Box::new(stream),
                is_server: true,
            });
        });
    }
}

/// How long a bind waits for its port while it is in use: the accept loop
/// of a cluster actor that just failed holds it until its task, aborted,
/// is dropped, which the runtime may do after the restarted actor binds.
const BIND_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Binds the cluster port (the error says which address), waiting up to
/// [`BIND_WAIT`] while it is in use.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, super::ClusterError> {
    let deadline = tokio::time::Instant::now() + BIND_WAIT;
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && tokio::time::Instant::now() < deadline =>
            {
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
            Err(e) => {
                return Err(super::ClusterError::Listen {
                    addr,
                    reason: e.to_string(),
                });
            }
        }
    }
}
