//! Extractors that refuse bad input with an [`ApiError`] naming what is
//! wrong, where axum's own answer plain text: JSON bodies (with the path of
//! the bad field), query strings, path values, and the caller's address.

use std::net::SocketAddr;

use axum::{
    body::Bytes,
    extract::{ConnectInfo, FromRequest, FromRequestParts, Query, Request},
    http::{header, request::Parts},
};
use serde::de::DeserializeOwned;

use super::{
    AppState,
    error::{ApiError, ErrorCode},
};
use crate::execution::ExecutionId;

/// A JSON body; an empty body is refused.
pub(crate) struct JsonBody<T>(pub T);

/// A JSON body, or `T::default()` when the body is empty.
pub(crate) struct OptionalJsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::bad_request(
                "the request body is empty: expected a JSON object",
            ));
        }
        parse_json(&bytes).map(Self)
    }
}

impl<T: DeserializeOwned + Default> FromRequest<AppState> for OptionalJsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = body_bytes(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        parse_json(&bytes).map(Self)
    }
}

/// The body's bytes, within the size limit, when it is JSON (or untyped).
async fn body_bytes(req: Request, state: &AppState) -> Result<Bytes, ApiError> {
    if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
        let ct = ct.to_str().unwrap_or("(not text)");
        let mime = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if mime != "application/json" && !mime.ends_with("+json") {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                format!("Content-Type {ct:?} is not accepted: send the body as application/json"),
            ));
        }
    }
    let limit = state.config.max_body_bytes;
    Bytes::from_request(req, state).await.map_err(|r| {
        if r.status().as_u16() == 413 {
            ApiError::new(
                ErrorCode::PayloadTooLarge,
                format!(
                    "the request body is larger than the limit of {limit} bytes (max_body_bytes)"
                ),
            )
        } else {
            ApiError::bad_request(format!(
                "failed to read the request body: {}",
                r.body_text()
            ))
        }
    })
}

/// Parses `bytes` as one JSON value of type `T`; the error names the path
/// of the bad field.
pub(crate) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path.is_empty() || path == "." {
            ApiError::bad_request(format!("invalid JSON body: {inner}"))
        } else {
            ApiError::bad_request(format!("invalid JSON body: {path}: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    Ok(value)
}

/// A query string; a bad one is refused naming the parameter.
pub(crate) struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(Self(v)),
            Err(r) => Err(ApiError::bad_request(format!(
                "invalid query string {:?}: {}",
                parts.uri.query().unwrap_or(""),
                r.body_text()
                    .trim_start_matches("Failed to deserialize query string: ")
            ))),
        }
    }
}

/// The one value in a route's path (`{name}`, `{id}`).
pub(crate) struct PathValue(pub String);

impl<S: Send + Sync> FromRequestParts<S> for PathValue {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<String>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|r| ApiError::bad_request(format!("invalid path: {}", r.body_text())))
    }
}

/// The execution id in a route's path; bad syntax is refused naming it.
pub(crate) struct PathId(pub ExecutionId);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let PathValue(raw) = PathValue::from_request_parts(parts, state).await?;
        parse_id(&raw).map(Self)
    }
}

/// Parses an execution id, naming it when it is not a UUID.
pub(crate) fn parse_id(raw: &str) -> Result<ExecutionId, ApiError> {
    raw.parse().map_err(|e| {
        ApiError::bad_request(format!(
            "invalid execution id {raw:?}: expected a UUID like 67e55044-10b1-426f-9247-bb680e5fe0c8 ({e})"
        ))
    })
}

/// The caller's socket address, when the server records it.
pub(crate) struct Caller(pub Result<SocketAddr, UnixPeer>);

impl Caller {
    /// The address as the trigger records it: `IP:PORT`, `unix:uid=N` on
    /// the socket, `unknown` without either.
    pub(crate) fn remote_addr(&self) -> String {
        match self.0 {
            Ok(a) => a.to_string(),
            Err(UnixPeer { uid: Some(uid) }) => format!("unix:uid={uid}"),
            Err(UnixPeer { uid: None }) => "unknown".into(),
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        if let Ok(ConnectInfo(peer)) =
            ConnectInfo::<UnixPeer>::from_request_parts(parts, state).await
        {
            return Ok(Self(Err(peer)));
        }
        if let Ok(ConnectInfo(super::parse_errors::TcpPeer(addr))) =
            ConnectInfo::<super::parse_errors::TcpPeer>::from_request_parts(parts, state).await
        {
            return Ok(Self(Ok(addr)));
        }
        if let Ok(ConnectInfo(super::tls::TlsPeer(addr))) =
            ConnectInfo::<super::tls::TlsPeer>::from_request_parts(parts, state).await
        {
            return Ok(Self(Ok(addr)));
        }
        Ok(Self(
            ConnectInfo::<SocketAddr>::from_request_parts(parts, state)
                .await
                .map(|c| c.0)
                .map_err(|_| UnixPeer { uid: None }),
        ))
    }
}

/// A caller on the agent's Unix socket: its uid, when the kernel said.
#[derive(Debug, Clone, Copy)]
pub struct UnixPeer {
    /// The caller's user id.
    pub uid: Option<u32>,
}

impl
    axum::extract::connect_info::Connected<
        axum::serve::IncomingStream<'_, tokio::net::UnixListener>,
    > for UnixPeer
{
    fn connect_info(stream: axum::serve::IncomingStream<'_, tokio::net::UnixListener>) -> Self {
        Self {
            uid: stream.io().peer_cred().ok().map(|c| c.uid()),
        }
    }
}
