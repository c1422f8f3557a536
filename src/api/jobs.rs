//! `GET /v1/jobs`, `GET /v1/jobs/{name}`, `POST /v1/jobs/{name}/trigger`.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    AppState,
    error::ApiError,
    extract::{Caller, PathValue},
};
use crate::{
    cron::ScheduleInfo,
    execution::{ExecutionId, ExecutionRecord, JobState, JobTrigger},
    spec::Overlap,
};

/// A registered job as `GET /v1/jobs` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobInfo {
    /// Its name.
    pub name: String,
    /// argv of its main command.
    pub command: Vec<String>,
    /// Its image, when it runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Its cron expression, when scheduled.
    pub schedule: Option<String>,
    /// The zone the schedule is read in.
    pub time_zone: Option<String>,
    /// True while scheduled runs are suspended.
    pub suspended: bool,
    /// The next scheduled time (`None`: not scheduled, suspended, or never again).
    pub next_run: Option<DateTime<Utc>>,
    /// The last scheduled time that ran.
    pub last_run: Option<DateTime<Utc>>,
    /// What a trigger does while executions are active.
    pub concurrency: Overlap,
    /// Its newest retained execution.
    pub latest: Option<LatestExecution>,
}

/// The newest execution of a job, in short.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LatestExecution {
    /// Its id.
    pub execution_id: ExecutionId,
    /// Its state (`{"status": "completed", "exit_code": 0, "duration": "12ms"}`).
    pub state: JobState,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<ExecutionRecord> for LatestExecution {
    fn from(r: ExecutionRecord) -> Self {
        Self {
            execution_id: r.meta.id,
            state: r.status.state,
            created_at: r.meta.created_at,
            finished_at: r.status.finished_at,
        }
    }
}

/// The answer to a trigger: 202 Accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriggerResponse {
    /// The new execution (queryable at once).
    pub execution_id: ExecutionId,
    /// The job.
    pub job: String,
}

/// Every registered job, sorted by name.
pub(crate) async fn list(State(state): State<AppState>) -> Result<Json<Vec<JobInfo>>, ApiError> {
    let exec = state.node.executor();
    let schedules = exec.schedules().await?;
    let mut jobs = Vec::new();
    for name in exec.jobs().await? {
        // A job unregistered between the two calls is left out.
        if let Some(info) = info(&state, &name, &schedules).await? {
            jobs.push(info);
        }
    }
    Ok(Json(jobs))
}

/// One registered job; 404 naming it when there is none.
pub(crate) async fn get(
    State(state): State<AppState>,
    PathValue(name): PathValue,
) -> Result<Json<JobInfo>, ApiError> {
    let schedules = state.node.executor().schedules().await?;
    info(&state, &name, &schedules)
        .await?
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("no job named {name:?} is registered")))
}

async fn info(
    state: &AppState,
    name: &str,
    schedules: &[ScheduleInfo],
) -> Result<Option<JobInfo>, ApiError> {
    let exec = state.node.executor();
    let Some(spec) = exec.spec(name).await? else {
        return Ok(None);
    };
    let schedule = schedules.iter().find(|s| s.job == name);
    let latest = exec.latest(name).await?.map(LatestExecution::from);
    Ok(Some(JobInfo {
        name: spec.name,
        command: spec.command,
        image: spec.image,
        time_zone: schedule
            .map(|s| s.time_zone.clone())
            .or(spec.time_zone.filter(|_| spec.schedule.is_some())),
        schedule: spec.schedule,
        suspended: schedule.map_or(spec.suspend, |s| s.suspended),
        next_run: schedule.and_then(|s| s.next_run),
        last_run: schedule.and_then(|s| s.last_run),
        concurrency: spec.concurrency,
        latest,
    }))
}

/// Starts an execution of a registered job, recorded as triggered by the
/// caller's address: 202 with its id, once its records are on disk.
pub(crate) async fn trigger(
    State(state): State<AppState>,
    caller: Caller,
    PathValue(name): PathValue,
) -> Result<(StatusCode, Json<TriggerResponse>), ApiError> {
    let trigger = JobTrigger::Endpoint {
        remote_addr: caller.remote_addr(),
    };
    let exec = state.node.executor();
    let id = exec.trigger(&name, trigger).await?;
    // Accepted means recorded: a crash after this answer keeps the run.
    // (An executor restarting meanwhile does not undo the trigger.)
    let _ = exec.recorded(id).await;
    Ok((
        StatusCode::ACCEPTED,
        Json(TriggerResponse {
            execution_id: id,
            job: name,
        }),
    ))
}
