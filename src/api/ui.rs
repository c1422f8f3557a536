//! The web view at `/ui`: one page, its script and its style sheet,
//! embedded in the binary (no CDN, nothing to download or build at install).
//!
//! The page needs no token to load: it holds no data. Everything it shows
//! it reads from the API with the bearer token the user gives it (from the
//! URL fragment `#token=...`, which the browser never sends to a server, or
//! from its form), kept in `sessionStorage`. It follows `GET /v1/events`
//! and refreshes the tree once per burst of events; see `ui/app.js`.
//!
//! The answers forbid everything but the page's own origin (a Content
//! Security Policy without inline script), framing and sniffing, so an
//! injected service name cannot run script in the page.

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};

const PAGE: &str = include_str!("ui/index.html");
const SCRIPT: &str = include_str!("ui/app.js");
const STYLE: &str = include_str!("ui/app.css");

/// The paths the page is served at (open without the token).
pub(crate) const PATHS: [&str; 4] = ["/ui", "/ui/", "/ui/app.js", "/ui/app.css"];

/// `GET /ui`: the page.
pub(crate) async fn page() -> Response {
    asset("text/html; charset=utf-8", PAGE)
}

/// `GET /ui/app.js`.
pub(crate) async fn script() -> Response {
    asset("text/javascript; charset=utf-8", SCRIPT)
}

/// `GET /ui/app.css`.
pub(crate) async fn style() -> Response {
    asset("text/css; charset=utf-8", STYLE)
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut res = body.into_response();
    let h = res.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    res
}
