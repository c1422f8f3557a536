//! `POST /v1/runs`: an ad-hoc command run once as a job, with the fields of
//! `arbor run`.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use axum::{Json, extract::State, http::StatusCode};
use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::{
    AppState,
    error::ApiError,
    extract::{Caller, JsonBody},
};
use crate::{
    execution::{ExecutionId, JobTrigger},
    spec::{JobSpec, NotifySpec},
    store::{STDERR_FILE, STDOUT_FILE},
};

/// The body of `POST /v1/runs`. Unknown fields are refused.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunRequest {
    /// argv: the program and its arguments (never run through a shell).
    pub command: Vec<String>,
    /// The job name (default: the program's file name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Variables for the command.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files of `KEY=VALUE` lines, read on the node; `env` wins over them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_file: Vec<PathBuf>,
    /// Whether the command starts from the node's environment (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inherit_env: Option<bool>,
    /// Keys whose values are shown as `***` in every output and record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mask: Vec<String>,
    /// Working directory, on the node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Stop the command and fail the run after this long (`"30s"`): the
    /// job's `deadline`.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Grace between SIGTERM and SIGKILL on timeout or cancel (`"1s"`): the
    /// job's `stop_timeout` (default 10 s).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub kill_after: Option<Duration>,
    /// Live tail kept in memory (`"1 MiB"` or a number of bytes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_log_size: Option<ByteSize>,
    /// Where to report the end: `{"command": [...], "file": "..."}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<NotifySpec>,
}

impl RunRequest {
    /// The job spec this request runs; every invalid field is named.
    pub fn to_spec(&self) -> Result<JobSpec, ApiError> {
        let name = self.name.clone().unwrap_or_else(|| {
            self.command
                .first()
                .and_then(|p| std::path::Path::new(p).file_name())
                .map_or_else(|| "run".into(), |n| n.to_string_lossy().into_owned())
        });
        let mut spec = JobSpec::command(name, self.command.clone());
        spec.env = self.env.clone();
        spec.env_file = self.env_file.clone();
        spec.inherit_env = self.inherit_env.unwrap_or(true);
        spec.mask = self.mask.clone();
        spec.cwd = self.cwd.clone();
        spec.deadline = self.timeout;
        if let Some(d) = self.kill_after {
            spec.stop_timeout = d;
        }
        if let Some(size) = self.max_log_size {
            spec.max_log_size = size;
        }
        if let Some(notify) = &self.notify {
            spec.notify = notify.clone();
        }
        spec.validate().map_err(|mut errors| {
            // Named as the request names them.
            for e in &mut errors.0 {
                if let Some(rest) = e.field.strip_prefix("deadline") {
                    e.field = format!("timeout{rest}");
                } else if let Some(rest) = e.field.strip_prefix("stop_timeout") {
                    e.field = format!("kill_after{rest}");
                }
            }
            ApiError::invalid_spec(&errors)
        })?;
        Ok(spec)
    }
}

/// The answer to `POST /v1/runs`: 202 Accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunResponse {
    /// The new execution.
    pub execution_id: ExecutionId,
    /// Its job name.
    pub job: String,
    /// Its state when accepted (`pending`, or further when quick).
    pub state: String,
    /// The variables set for it (from `env` and `env_file`), masked keys
    /// as `***`.
    pub env_vars: BTreeMap<String, String>,
    /// `<state_dir>/executions/<id>/stdout.log`; `None` without a state dir.
    pub stdout_log_path: Option<PathBuf>,
    /// `<state_dir>/executions/<id>/stderr.log`; `None` without a state dir.
    pub stderr_log_path: Option<PathBuf>,
}

/// Runs the command once as a job, recorded as triggered by the caller's
/// address.
pub(crate) async fn run(
    State(state): State<AppState>,
    caller: Caller,
    JsonBody(req): JsonBody<RunRequest>,
) -> Result<(StatusCode, Json<RunResponse>), ApiError> {
    let spec = req.to_spec()?;
    let job = spec.name.clone();
    let exec = state.node.executor();
    let trigger = JobTrigger::Endpoint {
        remote_addr: caller.remote_addr(),
    };
    let id = exec.run(spec, trigger).await?;
    // Accepted means recorded: a crash after this answer keeps the run.
    // (An executor restarting meanwhile does not undo the trigger.)
    let _ = exec.recorded(id).await;
    let record = exec.get(id).await?;
    let dir = state
        .config
        .state_dir
        .as_deref()
        .or(state.node.state_dir())
        .map(|d| d.join("executions").join(id.to_string()));
    Ok((
        StatusCode::ACCEPTED,
        Json(RunResponse {
            execution_id: id,
            job,
            state: record
                .as_ref()
                .map_or("pending", |r| r.status.state.name())
                .to_owned(),
            env_vars: record.map(|r| r.meta.env).unwrap_or_default(),
            stdout_log_path: dir.as_ref().map(|d| d.join(STDOUT_FILE)),
            stderr_log_path: dir.as_ref().map(|d| d.join(STDERR_FILE)),
        }),
    ))
}
