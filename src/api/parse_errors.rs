//! JSON for the requests hyper refuses before the router sees them.
//!
//! hyper answers a request it cannot parse itself, with an empty body: a
//! request line over 64 KiB gets `414`, a head larger than its read
//! buffer `431`, a malformed head `400`. Every other failure of the API is
//! a JSON [`ErrorBody`], and a client that reads `error.message` should
//! not find nothing here. hyper has no hook for these answers, so
//! [`JsonParseErrors`] wraps each accepted connection and, when hyper
//! writes one of them (a bare head: one of those statuses, `content-length:
//! 0`, nothing after), writes the same status with the JSON error instead
//! and closes the connection, as hyper does after a parse error.
//!
//! Our own handlers never answer 414 or 431, and never answer 400 with an
//! empty body, so nothing the router writes is touched.

use std::{
    io,
    net::SocketAddr,
    pin::Pin,
    task::{Context, Poll, ready},
};

use axum::{
    extract::connect_info::Connected,
    serve::{IncomingStream, Listener},
};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, UnixListener},
};

use super::{
    error::{ErrorBody, ErrorCode, ErrorDetail},
    extract::UnixPeer,
    tls::{TlsListener, TlsPeer},
};

/// A listener whose connections answer unparsable requests with the API's
/// JSON error.
#[derive(Debug)]
pub struct JsonParseErrors<L>(pub L);

impl<L: Listener> Listener for JsonParseErrors<L> {
    type Io = Conn<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.0.accept().await;
        (
            Conn {
                inner: io,
                pending: None,
            },
            addr,
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.0.local_addr()
    }
}

/// The address of a caller over plain TCP (what
/// [`ConnectInfo`](axum::extract::ConnectInfo) holds for the agent's TCP
/// listener).
#[derive(Debug, Clone, Copy)]
pub struct TcpPeer(pub SocketAddr);

impl Connected<IncomingStream<'_, JsonParseErrors<TcpListener>>> for TcpPeer {
    fn connect_info(stream: IncomingStream<'_, JsonParseErrors<TcpListener>>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, JsonParseErrors<TlsListener>>> for TlsPeer {
    fn connect_info(stream: IncomingStream<'_, JsonParseErrors<TlsListener>>) -> Self {
        Self(*stream.remote_addr())
    }
}

impl Connected<IncomingStream<'_, JsonParseErrors<UnixListener>>> for UnixPeer {
    fn connect_info(stream: IncomingStream<'_, JsonParseErrors<UnixListener>>) -> Self {
        Self {
            uid: stream.io().inner.peer_cred().ok().map(|c| c.uid()),
        }
    }
}

/// One connection: reads pass through; a parse-error answer of hyper is
/// replaced as it is written.
#[derive(Debug)]
pub struct Conn<T> {
    inner: T,
    /// The replacement being written, and how many bytes of hyper's own
    /// answer to report once it is.
    pending: Option<(Vec<u8>, usize, usize)>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Conn<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Conn<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let Self { inner, pending } = self.get_mut();
        if pending.is_none() {
            match replacement(buf) {
                Some(bytes) => *pending = Some((bytes, 0, buf.len())),
                None => return Pin::new(inner).poll_write(cx, buf),
            }
        }
        let Some((bytes, written, reported)) = pending.as_mut() else {
            return Poll::Ready(Ok(0));
        };
        while *written < bytes.len() {
            match ready!(Pin::new(&mut *inner).poll_write(cx, &bytes[*written..])) {
                Ok(0) => {
                    *pending = None;
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                Ok(n) => *written += n,
                Err(e) => {
                    *pending = None;
                    return Poll::Ready(Err(e));
                }
            }
        }
        let n = *reported;
        *pending = None;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// The JSON answer to write instead of `written`, when `written` is one of
/// hyper's bare parse-error heads.
fn replacement(written: &[u8]) -> Option<Vec<u8>> {
    let rest = written.strip_prefix(b"HTTP/1.1 ")?;
    if !written.ends_with(b"\r\n\r\n") || written.len() > 1024 {
        return None;
    }
    let head = String::from_utf8_lossy(written).to_ascii_lowercase();
    if !head.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let (code, message) = match rest.get(..4)? {
        b"414 " => (
            ErrorCode::UriTooLong,
            "the request line is too long: the URI (path and query string) must be shorter than 64 KiB",
        ),
        b"431 " => (
            ErrorCode::HeadersTooLarge,
            "the request's head is too large: its request line and headers must be smaller than 400 KiB",
        ),
        b"400 " => (
            ErrorCode::BadRequest,
            "the request is not valid HTTP/1.1 (its request line or a header could not be parsed)",
        ),
        _ => return None,
    };
    let body = serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code,
            message: message.into(),
            fields: Vec::new(),
        },
    })
    .ok()?;
    let status = code.status();
    let mut out = format!(
        "HTTP/1.1 {} {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::replacement;

    #[test]
    fn hyper_uri_too_long_head_becomes_json() {
        let out = replacement(b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: x\r\n\r\n")
            .expect("replaced");
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 414 URI Too Long\r\n"), "{text}");
        assert!(text.contains("\"code\":\"uri_too_long\""), "{text}");
    }

    #[test]
    fn a_response_with_a_body_is_left_alone() {
        assert!(replacement(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n").is_none());
        assert!(replacement(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").is_none());
        assert!(replacement(b"{\"not\": \"a head\"}").is_none());
    }
}
