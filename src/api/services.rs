//! `GET /v1/services`, `GET /v1/services/{name}`,
//! `POST /v1/services/{name}/restart|stop|start`,
//! `PUT /v1/services/{name}/replicas` (`{"replicas": N}`): [`ServiceInfo`]
//! as JSON, as the service is once the operation is done.

use axum::{Json, extract::State};

use super::{
    AppState,
    error::ApiError,
    extract::{JsonBody, PathValue, QueryParams},
};
use crate::node::ServiceInfo;

/// Every service, in start order.
pub(crate) async fn list(
    State(state): State<AppState>,
) -> Result<Json<Vec<ServiceInfo>>, ApiError> {
    Ok(Json(state.node.services().await?))
}

/// One service; 404 naming it when there is none.
pub(crate) async fn get(
    State(state): State<AppState>,
    PathValue(name): PathValue,
) -> Result<Json<ServiceInfo>, ApiError> {
    find(&state, &name).await.map(Json)
}

/// Restarts every replica (stop in reverse order, start again) and answers
/// the service as it is after.
pub(crate) async fn restart(
    State(state): State<AppState>,
    PathValue(name): PathValue,
) -> Result<Json<ServiceInfo>, ApiError> {
    find(&state, &name).await?;
    state.node.restart_service(&name).await?;
    find(&state, &name).await.map(Json)
}

/// Stops the service (each replica with its grace); it stays stopped,
/// across reloads too, until started.
pub(crate) async fn stop(
    State(state): State<AppState>,
    PathValue(name): PathValue,
) -> Result<Json<ServiceInfo>, ApiError> {
    find(&state, &name).await?;
    state.node.stop_service_kept(&name).await?;
    find(&state, &name).await.map(Json)
}

/// Starts a stopped service (a running one is left as it is).
pub(crate) async fn start(
    State(state): State<AppState>,
    PathValue(name): PathValue,
) -> Result<Json<ServiceInfo>, ApiError> {
    find(&state, &name).await?;
    state.node.start_stopped_service(&name).await?;
    find(&state, &name).await.map(Json)
}

/// The body of `PUT /v1/services/{name}/replicas`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Replicas {
    replicas: usize,
}

/// Sets the replicas in place (new ones start, extra ones stop from the
/// last; the others are not touched).
pub(crate) async fn scale(
    State(state): State<AppState>,
    PathValue(name): PathValue,
    JsonBody(body): JsonBody<Replicas>,
) -> Result<Json<ServiceInfo>, ApiError> {
    find(&state, &name).await?;
    state.node.scale_service(&name, body.replicas).await?;
    find(&state, &name).await.map(Json)
}

/// The query of `GET /v1/services/{name}/logs`.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogsQuery {
    /// One replica (default: all of them).
    replica: Option<String>,
    /// `full` (default), `stdout` or `stderr`.
    #[serde(default = "full")]
    stream: String,
    /// How many lines (default 100, at most 100000).
    #[serde(default = "hundred")]
    tail: usize,
    /// `json` (default) or `text` (`REPLICA | line`, or bare lines for one replica).
    #[serde(default)]
    format: Option<String>,
    /// Keep sending new lines as they are written (JSON: one object per
    /// line); ends when the service is removed or the server stops.
    #[serde(default)]
    follow: bool,
}

fn full() -> String {
    "full".into()
}

fn hundred() -> usize {
    100
}

/// The last lines of a service's logs, from its replicas' log files.
pub(crate) async fn logs(
    State(state): State<AppState>,
    PathValue(name): PathValue,
    QueryParams(q): QueryParams<LogsQuery>,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if !["full", "stdout", "stderr"].contains(&q.stream.as_str()) {
        return Err(ApiError::bad_request(format!(
            "stream: {:?} is not one of full, stdout, stderr",
            q.stream
        )));
    }
    if q.tail > 100_000 {
        return Err(ApiError::bad_request(format!(
            "tail: {} is more than 100000 lines",
            q.tail
        )));
    }
    let text = match q.format.as_deref() {
        None | Some("json") => false,
        Some("text") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "format: {other:?} is not one of json, text"
            )));
        }
    };
    if state.node.state_dir().is_none() {
        return Err(ApiError::bad_request(
            "the agent has no state dir: service output is only kept in memory",
        ));
    }
    find(&state, &name).await?;
    if q.follow {
        return follow(&state, name, q, text).await;
    }
    let lines = state
        .node
        .service_logs(&name, q.replica.as_deref(), &q.stream, q.tail)
        .await?;
    if text {
        let mut out = String::new();
        for l in &lines {
            if q.replica.is_none() {
                out.push_str(&l.replica);
                out.push_str(" | ");
            }
            out.push_str(&l.text);
            out.push('\n');
        }
        return Ok(out.into_response());
    }
    Ok(Json(serde_json::json!({
        "service": name,
        "stream": q.stream,
        "lines": lines,
    }))
    .into_response())
}

/// The last lines, then each new one, as a streamed body.
async fn follow(
    state: &AppState,
    name: String,
    q: LogsQuery,
    text: bool,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    use futures::StreamExt;
    let info = find(state, &name).await?;
    if let Some(r) = &q.replica
        && !info.tree.children.iter().any(|c| c.name == *r)
    {
        return Err(ApiError::not_found(format!(
            "service {name:?} has no replica {r:?}"
        )));
    }
    let dir = state
        .node
        .state_dir()
        .map(|d| d.join("services").join(&name))
        .ok_or_else(|| ApiError::bad_request("the agent has no state dir"))?;
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    let file = format!("{}.log", q.stream);
    let (replica, tail) = (q.replica.clone(), q.tail);
    tokio::spawn(async move {
        if let Err(e) = crate::store::service_log::follow(dir, file, replica, tail, tx).await {
            tracing::warn!(error = %e, "failed to follow a service's logs");
        }
    });
    // Ends when the service is no longer deployed, or the server stops.
    let mut deployed = state.node.deployed();
    let gone_name = name.clone();
    let removed = async move {
        let _ = deployed.wait_for(|d| !d.order.contains(&gone_name)).await;
    };
    let stop = super::stopped(state.stopping.clone());
    let end = async move {
        tokio::select! {
            () = removed => {}
            () = stop => {}
        }
    };
    let one = q.replica.is_some();
    let lines =
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|l| (l, rx)) })
            .map(move |l: crate::node::ServiceLogLine| {
                let mut s = if text {
                    if one {
                        l.text
                    } else {
                        format!("{} | {}", l.replica, l.text)
                    }
                } else {
                    serde_json::to_string(&l).unwrap_or_default()
                };
                s.push('\n');
                Ok::<_, std::convert::Infallible>(axum::body::Bytes::from(s))
            })
            .take_until(Box::pin(end));
    let content_type = if text {
        "text/plain; charset=utf-8"
    } else {
        "application/x-ndjson"
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, content_type)],
        axum::body::Body::from_stream(lines),
    )
        .into_response())
}

async fn find(state: &AppState, name: &str) -> Result<ServiceInfo, ApiError> {
    state
        .node
        .service(name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no service named {name:?}")))
}
