//! `GET /v1/executions[?job=NAME]`, `GET /v1/executions/{id}`,
//! `GET /v1/executions/{id}/logs`, `GET /v1/executions/{id}/wait`, and the
//! controls: `POST /v1/executions/{id}/cancel`, `.../signal`, `.../pause`,
//! `.../resume`. Executions are [`ExecutionRecord`] JSON.

use std::{fmt, str::FromStr, time::Duration};

use axum::{
    Json,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Deserializer, Serialize, de};

use super::{
    AppState,
    error::ApiError,
    extract::{JsonBody, OptionalJsonBody, PathId, QueryParams},
};
use crate::{
    execution::{ExecutionId, ExecutionRecord},
    runtime::Signal,
    store::{LogSnapshot, LogSnapshotQuery, SnapshotStream},
};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    job: Option<String>,
}

/// Retained executions, oldest first: of one job with `?job=NAME` (an
/// empty list when it has none), else all.
pub(crate) async fn list(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> Result<Json<Vec<ExecutionRecord>>, ApiError> {
    let exec = state.node.executor();
    Ok(Json(match q.job {
        Some(job) => exec.list(&job).await?,
        None => exec.list_all().await?,
    }))
}

/// One execution; 404 when none has the id.
pub(crate) async fn get(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<ExecutionRecord>, ApiError> {
    record(&state, id).await.map(Json)
}

async fn record(state: &AppState, id: ExecutionId) -> Result<ExecutionRecord, ApiError> {
    state
        .node
        .executor()
        .get(id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no execution with id {id}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LogsQuery {
    #[serde(default)]
    stream: SnapshotStream,
    tail: Option<usize>,
    max_bytes: Option<usize>,
    #[serde(default)]
    format: LogsFormat,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LogsFormat {
    #[default]
    Json,
    Text,
}

/// A log tail as `GET /v1/executions/{id}/logs` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogsResponse {
    /// The execution.
    pub execution_id: ExecutionId,
    /// Which log (`stdout`, `stderr`, `full`).
    pub stream: SnapshotStream,
    /// The tail and what it leaves out.
    #[serde(flatten)]
    pub snapshot: LogSnapshot,
    /// When log files stopped being written before the end (a full state
    /// dir): which, and how much each kept (`truncated` is then true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub incomplete: Option<String>,
}

/// The tail of a log (`?stream=stdout|stderr|full` (default full),
/// `&tail=N` lines, `&max_bytes=N`); live while the execution runs, from
/// disk after. `&format=text` answers the text alone.
pub(crate) async fn logs(
    State(state): State<AppState>,
    PathId(id): PathId,
    QueryParams(q): QueryParams<LogsQuery>,
) -> Result<Response, ApiError> {
    let query = LogSnapshotQuery {
        stream: q.stream,
        tail_lines: q.tail,
        max_bytes: q.max_bytes,
    };
    let mut snapshot = state.node.executor().logs(id, query).await?;
    let incomplete = record(&state, id).await?.status.logs_incomplete;
    if incomplete.is_some() {
        snapshot.truncated = true;
    }
    Ok(match q.format {
        LogsFormat::Json => Json(LogsResponse {
            execution_id: id,
            stream: q.stream,
            snapshot,
            incomplete,
        })
        .into_response(),
        LogsFormat::Text => (
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            snapshot.text,
        )
            .into_response(),
    })
}

/// Longest `GET /v1/executions/{id}/wait` holds a request.
const MAX_WAIT: Duration = Duration::from_secs(600);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WaitQuery {
    #[serde(default, with = "humantime_serde")]
    timeout: Option<Duration>,
}

/// Waits until the execution ended, `?timeout=` (default 30 s, at most
/// 10 min) passed or the server stops, then answers its record, whatever
/// its state.
pub(crate) async fn wait(
    State(state): State<AppState>,
    PathId(id): PathId,
    QueryParams(q): QueryParams<WaitQuery>,
) -> Result<Json<ExecutionRecord>, ApiError> {
    let timeout = q.timeout.unwrap_or(Duration::from_secs(30));
    if timeout > MAX_WAIT {
        return Err(ApiError::bad_request(format!(
            "invalid timeout {}: must be at most 10m",
            humantime::format_duration(timeout)
        )));
    }
    let current = record(&state, id).await?;
    if current.status.state.is_terminal() {
        return Ok(Json(current));
    }
    // Ends early when the server stops, so that it does not wait for us.
    tokio::select! {
        r = tokio::time::timeout(timeout, state.node.executor().wait(id)) => match r {
            Ok(r) => Ok(Json(r?)),
            Err(_) => record(&state, id).await.map(Json),
        },
        () = super::stopped(state.stopping.clone()) => record(&state, id).await.map(Json),
    }
}

/// The body of `POST /v1/executions/{id}/cancel` (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelRequest {
    /// Between the graceful signal and the kill (default: the job's
    /// `stop_timeout`), e.g. `"5s"`.
    #[serde(default, with = "humantime_serde")]
    pub grace: Option<Duration>,
}

/// Cancels an execution (graceful stop, kill after the grace): 202 with its
/// record as it is now; 409 when it already ended.
pub(crate) async fn cancel(
    State(state): State<AppState>,
    PathId(id): PathId,
    OptionalJsonBody(body): OptionalJsonBody<CancelRequest>,
) -> Result<(StatusCode, Json<ExecutionRecord>), ApiError> {
    state.node.executor().cancel(id, body.grace).await?;
    Ok((StatusCode::ACCEPTED, Json(record(&state, id).await?)))
}

/// A signal as a request names it: `"SIGUSR1"`, `"USR1"` or `10`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum SignalValue {
    /// By name.
    Name(String),
    /// By number.
    Number(i64),
}

impl<'de> Deserialize<'de> for SignalValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = SignalValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a signal name like \"SIGUSR1\" or a signal number")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<SignalValue, E> {
                Ok(SignalValue::Name(v.to_owned()))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<SignalValue, E> {
                Ok(SignalValue::Number(v))
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<SignalValue, E> {
                Ok(SignalValue::Number(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_any(V)
    }
}

impl SignalValue {
    /// The signal, or a 400 naming the value.
    pub fn parse(&self) -> Result<Signal, ApiError> {
        let bad = |shown: String| {
            ApiError::bad_request(format!(
                "invalid signal {shown}: expected a name like \"SIGTERM\", \"SIGUSR1\", \"SIGSTOP\" or a number such as 15"
            ))
        };
        match self {
            Self::Name(name) => {
                let upper = name.trim().to_ascii_uppercase();
                let full = if upper.starts_with("SIG") {
                    upper
                } else {
                    format!("SIG{upper}")
                };
                Signal::from_str(&full).map_err(|_| bad(format!("{name:?}")))
            }
            Self::Number(n) => i32::try_from(*n)
                .ok()
                .and_then(|n| Signal::try_from(n).ok())
                .ok_or_else(|| bad(n.to_string())),
        }
    }
}

/// The body of `POST /v1/executions/{id}/signal`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalRequest {
    /// The signal.
    pub signal: SignalValue,
}

#[derive(Debug, Serialize)]
pub(crate) struct Signalled {
    execution_id: ExecutionId,
    signal: &'static str,
}

/// Sends a signal to the execution's process group. `SIGSTOP` and
/// `SIGCONT` pause and resume it (its record says `paused`).
pub(crate) async fn signal(
    State(state): State<AppState>,
    PathId(id): PathId,
    JsonBody(body): JsonBody<SignalRequest>,
) -> Result<Json<Signalled>, ApiError> {
    let signal = body.signal.parse()?;
    let exec = state.node.executor();
    match signal {
        Signal::SIGSTOP => exec.pause(id).await?,
        Signal::SIGCONT => exec.resume(id).await?,
        other => exec.signal(id, other).await?,
    }
    Ok(Json(Signalled {
        execution_id: id,
        signal: signal.as_str(),
    }))
}

/// Stops the execution's process group (SIGSTOP); answers its record.
pub(crate) async fn pause(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<ExecutionRecord>, ApiError> {
    state.node.executor().pause(id).await?;
    record(&state, id).await.map(Json)
}

/// Continues the execution's process group (SIGCONT); answers its record.
pub(crate) async fn resume(
    State(state): State<AppState>,
    PathId(id): PathId,
) -> Result<Json<ExecutionRecord>, ApiError> {
    state.node.executor().resume(id).await?;
    record(&state, id).await.map(Json)
}
