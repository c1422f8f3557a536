//! Checks before a handler runs: the bearer token when one is configured
//! (on every request but `GET /v1/health` and `GET /metrics`: logs, records
//! and events can hold what only the operator may read), and on mutating
//! requests (any method but `GET`, `HEAD`, `OPTIONS`) the same-origin rule
//! and refusal while the node shuts down. Also the request log.

use axum::{
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use super::{
    AppState,
    error::{ApiError, ErrorCode},
};

/// Logs each request (target `arbor::api`): debug, warn for a 5xx.
pub(crate) async fn log(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let started = std::time::Instant::now();
    let res = next.run(req).await;
    let status = res.status().as_u16();
    let ms = started.elapsed().as_millis() as u64;
    if status >= 500 {
        tracing::warn!(target: "arbor::api", %method, path, status, ms, "request failed");
    } else {
        tracing::debug!(target: "arbor::api", %method, path, status, ms, "request");
    }
    res
}

/// Paths served without the token: liveness probes, scrapers, and the web
/// view's page and assets (which hold no data: the page asks for the token).
fn open_path(path: &str) -> bool {
    matches!(path, "/v1/health" | "/metrics") || super::ui::PATHS.contains(&path)
}

/// Refuses a request without the token (health and metrics excepted), and
/// a mutating request from another origin or while the node shuts down.
pub(crate) async fn check(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if let Some(token) = &state.config.token
        && !(read && open_path(req.uri().path()))
        && let Err(e) = authorize(req.headers(), token)
    {
        let mut res = e.into_response();
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"arbor\""),
        );
        return res;
    }
    if read {
        return next.run(req).await;
    }
    if let Err(e) = same_origin(req.headers()) {
        return e.into_response();
    }
    if state.node.is_shutting_down() {
        return ApiError::new(
            ErrorCode::Unavailable,
            format!(
                "the node is shutting down: {} {} is refused",
                req.method(),
                req.uri().path()
            ),
        )
        .into_response();
    }
    next.run(req).await
}

fn authorize(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "missing Authorization header: this agent requires \"Authorization: Bearer <token>\" on every request but GET /v1/health and /metrics",
        ));
    };
    let value = value.as_bytes();
    let given = match value.get(..7) {
        Some(scheme) if scheme.eq_ignore_ascii_case(b"bearer ") => value[7..].trim_ascii(),
        _ => {
            return Err(ApiError::new(
                ErrorCode::Unauthorized,
                "invalid Authorization header: expected \"Bearer <token>\"",
            ));
        }
    };
    if constant_time_eq(given, token.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorCode::Unauthorized,
            "invalid bearer token in the Authorization header",
        ))
    }
}

/// Equality whose time depends on the lengths only, not on where the
/// inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(std::hint::black_box(x ^ y));
    }
    diff == 0
}

/// A request a browser sends from a page of another site carries its
/// `Origin`; command-line clients send none.
fn same_origin(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(origin) = headers.get(header::ORIGIN) else {
        return Ok(());
    };
    let origin = origin.to_str().unwrap_or("(not text)");
    let authority = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"));
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    match (authority, host) {
        (Some(a), Some(h)) if a.eq_ignore_ascii_case(h) => Ok(()),
        _ => Err(ApiError::new(
            ErrorCode::Forbidden,
            format!(
                "cross-origin request refused: Origin {origin:?} is not this agent ({})",
                host.unwrap_or("no Host header")
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn compares_whole_values() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
