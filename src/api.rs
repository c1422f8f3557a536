//! The node's HTTP API: JSON under `/v1`, Server-Sent Events, Prometheus
//! metrics. [`router`] builds it around a [`Node`]; [`serve`] runs it on a
//! listener until a shutdown future resolves.
//!
//! # Design
//!
//! The API is a thin shell over [`Node`]: every handler calls one or two
//! methods of the node (or of its [`Executor`](crate::Executor)) and turns
//! the answer into JSON. It owns no table of services or executions; the
//! actors own them and are asked through `call`. One file per family of
//! routes:
//!
//! | file | routes |
//! | --- | --- |
//! | `api/node.rs` | `GET /v1/health`, `GET /v1/tree` |
//! | `api/services.rs` | `GET /v1/services`, `GET /v1/services/{name}`, `POST /v1/services/{name}/restart` |
//! | `api/jobs.rs` | `GET /v1/jobs`, `GET /v1/jobs/{name}`, `POST /v1/jobs/{name}/trigger` |
//! | `api/executions.rs` | `GET /v1/executions[?job=NAME]`, `GET /v1/executions/{id}`, `GET .../{id}/logs`, `GET .../{id}/wait`, `POST .../{id}/cancel`, `POST .../{id}/signal`, `POST .../{id}/pause`, `POST .../{id}/resume` |
//! | `api/runs.rs` | `POST /v1/runs` (an ad-hoc command, as `arbor run`) |
//! | `api/events.rs` | `GET /v1/events` (Server-Sent Events), `GET /v1/events/recent` |
//! | `api/metrics.rs` | `GET /metrics` (Prometheus text) |
//! | `api/ui.rs` | `GET /ui` (the web view: its page, script and style, embedded) |
//! | `api/guard.rs` | the token check, and the same-origin and shutting-down checks of mutating requests; the request log |
//! | `api/tls.rs` | rustls for the TCP listener |
//! | `api/parse_errors.rs` | the JSON error for requests hyper refuses before routing (a URI over 64 KiB: 414, a head over 400 KiB: 431, always past 800 KiB since hyper checks between reads of up to 400 KiB) |
//! | `api/extract.rs` | JSON bodies, query strings, path values and the caller's address, each refusing bad input with a JSON error |
//! | `api/error.rs` | [`ApiError`]: `{"error": {"code", "message", "fields"?}}` and the status of each failure |
//!
//! # Routes and shapes
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /v1/health` | [`Health`](crate::Health); 503 while shutting down or when a part does not answer |
//! | `GET /v1/tree[?format=text]` | [`TreeNode`](crate::TreeNode), or the tree drawn like `pstree` |
//! | `GET /v1/services` | `[`[`ServiceInfo`](crate::ServiceInfo)`]`, in start order |
//! | `GET /v1/services/{name}` | [`ServiceInfo`](crate::ServiceInfo) |
//! | `POST /v1/services/{name}/restart` | [`ServiceInfo`](crate::ServiceInfo) after the restart |
//! | `GET /v1/jobs`, `GET /v1/jobs/{name}` | `[`[`JobInfo`]`]`, [`JobInfo`]: schedule, next run, latest execution |
//! | `POST /v1/jobs/{name}/trigger` | 202 [`TriggerResponse`] `{"execution_id", "job"}` |
//! | `GET /v1/executions[?job=NAME]` | `[`[`ExecutionRecord`](crate::ExecutionRecord)`]`, oldest first |
//! | `GET /v1/executions/{id}` | [`ExecutionRecord`](crate::ExecutionRecord) |
//! | `GET /v1/executions/{id}/logs?stream=stdout\|stderr\|full&tail=N&max_bytes=N[&format=text]` | [`LogsResponse`] (`text`, `observed_bytes`, `included_bytes`, `truncated`, `lines`) or the text |
//! | `GET /v1/executions/{id}/wait?timeout=30s` | [`ExecutionRecord`](crate::ExecutionRecord) once ended, or as it is at the timeout |
//! | `POST /v1/executions/{id}/cancel` | body [`CancelRequest`] `{"grace": "5s"}` (optional); 202 [`ExecutionRecord`](crate::ExecutionRecord); 409 once ended |
//! | `POST /v1/executions/{id}/signal` | body [`SignalRequest`] `{"signal": "SIGUSR1"}` (or `"USR1"`, or `10`); `{"execution_id", "signal"}`; `SIGSTOP`/`SIGCONT` pause and resume |
//! | `POST /v1/executions/{id}/pause`, `.../resume` | [`ExecutionRecord`](crate::ExecutionRecord) |
//! | `POST /v1/runs` | body [`RunRequest`] (the fields of `arbor run`); 202 [`RunResponse`] `{"execution_id", "job", "state", "env_vars", "stdout_log_path", "stderr_log_path"}` |
//! | `GET /v1/events[?kind=a,b]` | `text/event-stream`: `event:` [`Event::kind`](crate::Event::kind), `data:` the [`Event`](crate::Event) JSON |
//! | `GET /v1/events/recent[?limit=N&kind=a,b]` | `[`[`RecentEvent`](crate::events::RecentEvent)`]`: the last events (at most 500), oldest first, each with `at` |
//! | `GET /metrics` | Prometheus text (see `api/metrics.rs`) |
//! | `GET /ui` | the web view (HTML; it reads the routes above with the token) |
//!
//! Executions started through the API are recorded with the trigger
//! `{"kind": "endpoint", "remote_addr": "127.0.0.1:53422"}`.
//!
//! # Errors
//!
//! Every failure is JSON, `{"error": {"code": "...", "message": "..."}}`,
//! with the status of its code: `bad_request` 400, `unauthorized` 401,
//! `forbidden` 403, `not_found` 404, `method_not_allowed` 405, `conflict`
//! 409, `payload_too_large` 413, `uri_too_long` 414, `unsupported_media_type`
//! 415, `headers_too_large` 431,
//! `unavailable` 503, `internal` 500. Messages name the field or the value
//! that is wrong (`invalid JSON body: command[1]: invalid type: integer
//! `1`, expected a string`); an invalid spec also lists every error
//! under `fields`. axum's own plain-text rejections (bad JSON, a bad query
//! string, an oversized body) and unknown routes are turned into this
//! shape. A bad request changes nothing: the node keeps serving.
//!
//! # Security
//!
//! The agent serves the API on a Unix socket only its user may open
//! ([`serve_unix`], no token), and on TCP only when asked ([`serve`], or
//! [`serve_tls`] with rustls). When [`ApiConfig::token`] is set, every
//! request but `GET /v1/health`, `GET /metrics` and the web view's
//! page and assets (`GET /ui`, which hold no data) must carry
//! `Authorization: Bearer <token>` or gets 401 (logs, records and events
//! can hold what only the operator may read); the token is compared in
//! constant time. Independently of the token, a mutating request that
//! carries an `Origin` header naming another host than its `Host` header is
//! refused with 403, and a request body must be JSON (`Content-Type:
//! application/json`, or no content type): a web page in a browser on the
//! same machine can therefore neither trigger jobs nor start commands
//! through the API (cross-site request forgery). Bodies are limited to
//! [`ApiConfig::max_body_bytes`] (413 above). While the node shuts down,
//! mutating requests get 503 and `GET /v1/health` answers 503.

use std::{future::Future, path::PathBuf, sync::Arc};

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{get, post, put},
};
use tokio::sync::watch;

use crate::node::Node;

mod deployment;
mod error;
mod events;
mod executions;
mod extract;
mod guard;
mod jobs;
mod metrics;
mod node;
mod parse_errors;
mod runs;
mod services;
pub mod tls;
mod ui;

pub use error::{ApiError, ErrorBody, ErrorCode, ErrorDetail, FieldError};
pub use executions::{CancelRequest, LogsResponse, SignalRequest, SignalValue};
pub use jobs::{JobInfo, LatestExecution, TriggerResponse};
pub use parse_errors::{JsonParseErrors, TcpPeer};
pub use runs::{RunRequest, RunResponse};

/// How the API behaves.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// When set, every request but `GET /v1/health` and `GET /metrics`
    /// needs `Authorization: Bearer <token>`.
    pub token: Option<String>,
    /// Largest request body accepted (default 1 MiB); larger ones get 413.
    pub max_body_bytes: usize,
    /// Where execution logs are reported to be (default: the node's
    /// [`Node::state_dir`](crate::Node::state_dir); paths are `null` when
    /// neither is set).
    pub state_dir: Option<PathBuf>,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            token: None,
            max_body_bytes: 1 << 20,
            state_dir: None,
        }
    }
}

impl ApiConfig {
    /// Requires this bearer token on every request but health and metrics.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Limits request bodies to `bytes`.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Reports log paths under `dir`.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }
}

/// What every handler gets.
#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) node: Node,
    pub(crate) config: Arc<ApiConfig>,
    pub(crate) metrics: metrics::MetricsHandle,
    /// Turns true when [`serve`] is asked to stop: event streams end, so
    /// that the graceful shutdown does not wait for them.
    pub(crate) stopping: watch::Receiver<bool>,
}

/// The API around `node`. Starts the task that counts events for
/// `/metrics` (it ends when the router and its clones are dropped), so it
/// must be called inside a tokio runtime.
///
/// Handlers that record the caller's address need
/// [`ConnectInfo<SocketAddr>`](axum::extract::ConnectInfo): serve it with
/// `into_make_service_with_connect_info::<SocketAddr>()` ([`serve`] uses
/// [`TcpPeer`] around a [`JsonParseErrors`] listener); without it the
/// address is recorded as `unknown`.
pub fn router(node: Node, config: ApiConfig) -> Router {
    // Nothing stops it: event streams run until their client leaves.
    let (_, rx) = watch::channel(false);
    build(node, config, rx)
}

/// Serves the API of `node` on `listener` until `shutdown` resolves, then
/// stops accepting, ends the event streams and waits for the requests in
/// flight.
pub async fn serve(
    node: Node,
    listener: tokio::net::TcpListener,
    config: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (app, stop) = prepared(node, config, shutdown);
    axum::serve(
        parse_errors::JsonParseErrors(listener),
        app.into_make_service_with_connect_info::<parse_errors::TcpPeer>(),
    )
    .with_graceful_shutdown(stop)
    .await
}

/// Serves the API of `node` over TLS on `listener` (see [`tls`]), as
/// [`serve`] does in clear.
pub async fn serve_tls(
    node: Node,
    listener: tokio::net::TcpListener,
    tls: Arc<tokio_rustls::rustls::ServerConfig>,
    config: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tls::TlsListener::new(listener, tls)?;
    let (app, stop) = prepared(node, config, shutdown);
    axum::serve(
        parse_errors::JsonParseErrors(listener),
        app.into_make_service_with_connect_info::<tls::TlsPeer>(),
    )
    .with_graceful_shutdown(stop)
    .await
}

/// Serves the API of `node` on a Unix socket (no token: the socket's
/// file mode decides who may connect), as [`serve`] does on TCP.
pub async fn serve_unix(
    node: Node,
    listener: tokio::net::UnixListener,
    mut config: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    config.token = None;
    let (app, stop) = prepared(node, config, shutdown);
    axum::serve(
        parse_errors::JsonParseErrors(listener),
        app.into_make_service_with_connect_info::<extract::UnixPeer>(),
    )
    .with_graceful_shutdown(stop)
    .await
}

/// The router of a server, and the future its graceful shutdown waits on:
/// `shutdown`, after which the event streams are told to end.
fn prepared(
    node: Node,
    config: ApiConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> (Router, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = watch::channel(false);
    let app = build(node, config, rx);
    let stop = async move {
        shutdown.await;
        let _ = tx.send(true);
    };
    (app, stop)
}

/// Resolves once [`serve`] is asked to stop (never for a bare [`router`]).
pub(crate) async fn stopped(mut stopping: watch::Receiver<bool>) {
    if stopping.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

fn build(node: Node, config: ApiConfig, stopping: watch::Receiver<bool>) -> Router {
    let metrics = metrics::MetricsHandle::start(node.events());
    let max_body = config.max_body_bytes;
    let state = AppState {
        node,
        config: Arc::new(config),
        metrics,
        stopping,
    };
    let v1 = Router::new()
        .route("/health", get(node::health))
        .route("/tree", get(node::tree))
        .route("/cluster", get(node::cluster))
        .route("/cluster/tree", get(node::cluster_tree))
        .route("/cluster/members/{name}/forget", post(node::cluster_forget))
        .route("/services", get(services::list))
        .route("/services/{name}", get(services::get))
        .route("/services/{name}/restart", post(services::restart))
        .route("/services/{name}/stop", post(services::stop))
        .route("/services/{name}/logs", get(services::logs))
        .route("/services/{name}/start", post(services::start))
        .route("/services/{name}/replicas", put(services::scale))
        .route("/deployment", get(deployment::get).put(deployment::put))
        .route("/jobs", get(jobs::list))
        .route("/jobs/{name}", get(jobs::get))
        .route("/jobs/{name}/trigger", post(jobs::trigger))
        .route("/executions", get(executions::list))
        .route("/executions/{id}", get(executions::get))
        .route("/executions/{id}/logs", get(executions::logs))
        .route("/executions/{id}/wait", get(executions::wait))
        .route("/executions/{id}/cancel", post(executions::cancel))
        .route("/executions/{id}/signal", post(executions::signal))
        .route("/executions/{id}/pause", post(executions::pause))
        .route("/executions/{id}/resume", post(executions::resume))
        .route("/runs", post(runs::run))
        .route("/events", get(events::stream))
        .route("/events/recent", get(events::recent));
    Router::new()
        .nest("/v1", v1)
        .route("/metrics", get(metrics::render))
        .route("/ui", get(ui::page))
        .route("/ui/", get(ui::page))
        .route("/ui/app.js", get(ui::script))
        .route("/ui/app.css", get(ui::style))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), guard::check))
        .layer(DefaultBodyLimit::max(max_body))
        .layer(middleware::from_fn(guard::log))
        .with_state(state)
}
