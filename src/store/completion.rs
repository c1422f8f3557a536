//! Completion events: what an execution's end is reported as, and its
//! delivery to the sinks of a job's `notify` (a command, an NDJSON file).
//!
//! A sink's failure is recorded in the execution's `completion_event.json`
//! and logged; it never changes the execution.

use std::{
    fs::OpenOptions,
    io::Write,
    os::unix::fs::OpenOptionsExt,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use chrono::{DateTime, Utc};
use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::ExecutionFiles;
use crate::{
    execution::{ExecutionId, ExecutionRecord, JobState, JobTrigger},
    spec::NotifySpec,
};

/// How long a notify command may run before it is killed (30 s).
pub const DEFAULT_NOTIFY_TIMEOUT: Duration = Duration::from_secs(30);

/// Most bytes of a failed notify command's stderr kept in its delivery error.
const STDERR_KEPT: usize = 2048;

/// The end of an execution, as sinks receive it (JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionEvent {
    /// `completed`, `failed` or `cancelled`.
    pub event_type: String,
    /// The execution.
    pub execution_id: ExecutionId,
    /// Its job's name.
    pub job: String,
    /// 1 for a first attempt.
    pub attempt: u32,
    /// What triggered it.
    pub trigger: JobTrigger,
    /// Its final state.
    pub state: JobState,
    /// The main command's exit code, when it exited.
    pub exit_code: Option<i32>,
    /// When the main command started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the execution ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// From start to end, when it started.
    pub duration_ms: Option<u64>,
    /// Its `stdout.log`.
    pub stdout_path: PathBuf,
    /// Its `stderr.log`.
    pub stderr_path: PathBuf,
}

impl CompletionEvent {
    /// The event of an execution that reached a terminal state (for an
    /// active one, `event_type` is the state's name).
    pub fn new(record: &ExecutionRecord, files: &ExecutionFiles) -> Self {
        let status = &record.status;
        let finished_at = status.finished_at.or(Some(status.updated_at));
        let duration_ms = match (&status.state, status.started_at, finished_at) {
            (JobState::Completed { duration, .. }, _, _) => {
                Some(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX))
            }
            (_, Some(start), Some(end)) => {
                Some(u64::try_from((end - start).num_milliseconds()).unwrap_or(0))
            }
            _ => None,
        };
        Self {
            event_type: Self::event_type_of(&status.state).to_owned(),
            execution_id: record.meta.id,
            job: record.meta.job.clone(),
            attempt: record.meta.attempt,
            trigger: record.meta.trigger.clone(),
            state: status.state.clone(),
            exit_code: status.state.exit_code(),
            started_at: status.started_at,
            finished_at,
            duration_ms,
            stdout_path: files.stdout_path(),
            stderr_path: files.stderr_path(),
        }
    }

    /// `completed`, `failed` or `cancelled` (the state's name for the
    /// others).
    pub fn event_type_of(state: &JobState) -> &'static str {
        state.name()
    }
}

/// The completion event and what each sink made of it:
/// `completion_event.json` (the event's fields, plus `deliveries`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompletionRecord {
    /// The event.
    #[serde(flatten)]
    pub event: CompletionEvent,
    /// One per sink, command first.
    #[serde(default)]
    pub deliveries: Vec<Delivery>,
}

/// The kind of a sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverySink {
    /// `notify.command`.
    Command,
    /// `notify.file`.
    File,
}

/// The outcome of delivering an event to one sink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    /// Which sink.
    pub sink: DeliverySink,
    /// Its argv (joined with spaces) or its file.
    pub target: String,
    /// True when it took the event (the command exited 0, the line was
    /// appended).
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The command's exit code, when it exited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    /// How long the delivery took.
    pub duration_ms: u64,
}

/// Delivers `event` to the sinks of `notify` (both at once) and records
/// the outcome in `completion_event.json`, which is written once before
/// any sink runs (with no deliveries) and again after.
///
/// The command sink runs `notify.command` (argv, no shell) in its own
/// process group with the event as JSON on stdin and `ARBOR_EVENT_PATH`
/// (the `completion_event.json`), `ARBOR_JOB_ID` (the execution id),
/// `ARBOR_JOB_NAME` and `ARBOR_EVENT_TYPE` set; after `timeout` its group is
/// killed. The file sink appends the event as one JSON line with a single
/// `O_APPEND` write, so concurrent appenders never interleave. Failures
/// (spawn, non-zero exit, timeout, write) are in the returned deliveries,
/// never an error.
pub async fn deliver(
    notify: &NotifySpec,
    event: &CompletionEvent,
    files: &ExecutionFiles,
    timeout: Duration,
) -> CompletionRecord {
    let mut record = CompletionRecord {
        event: event.clone(),
        deliveries: Vec::new(),
    };
    write_record(files, &record).await;
    let json = match serde_json::to_vec(event) {
        Ok(j) => j,
        Err(e) => {
            // Not expected (plain data); report it on every sink.
            let error = format!("failed to serialize the completion event: {e}");
            let failed = |sink, target: String| Delivery {
                sink,
                target,
                ok: false,
                error: Some(error.clone()),
                exit_code: None,
                duration_ms: 0,
            };
            if let Some(argv) = &notify.command {
                record
                    .deliveries
                    .push(failed(DeliverySink::Command, argv.join(" ")));
            }
            if let Some(path) = &notify.file {
                record
                    .deliveries
                    .push(failed(DeliverySink::File, path.display().to_string()));
            }
            write_record(files, &record).await;
            return record;
        }
    };
    let event_path = files.completion_path();
    let (command, file) = tokio::join!(
        async {
            match &notify.command {
                Some(argv) => Some(run_command(argv, &json, event, &event_path, timeout).await),
                None => None,
            }
        },
        async {
            match &notify.file {
                Some(path) => Some(append_line(path, &json).await),
                None => None,
            }
        },
    );
    record.deliveries.extend(command);
    record.deliveries.extend(file);
    if record.deliveries.is_empty() {
        // No sinks: the record written above is already the final one.
        return record;
    }
    for d in record.deliveries.iter().filter(|d| !d.ok) {
        tracing::warn!(
            execution = %event.execution_id,
            sink = ?d.sink,
            target = %d.target,
            error = d.error.as_deref().unwrap_or(""),
            "completion event not delivered"
        );
    }
    write_record(files, &record).await;
    record
}

async fn write_record(files: &ExecutionFiles, record: &CompletionRecord) {
    let (files, record) = (files.clone(), record.clone());
    let result = tokio::task::spawn_blocking(move || files.write_completion(&record)).await;
    match result {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "completion record not written"),
        Err(e) => tracing::warn!(error = %e, "completion record not written"),
    }
}

fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

async fn run_command(
    argv: &[String],
    json: &[u8],
    event: &CompletionEvent,
    event_path: &Path,
    timeout: Duration,
) -> Delivery {
    let started = Instant::now();
    let mut delivery = Delivery {
        sink: DeliverySink::Command,
        target: argv.join(" "),
        ok: false,
        error: None,
        exit_code: None,
        duration_ms: 0,
    };
    let Some((program, args)) = argv.split_first() else {
        delivery.error = Some("empty command".into());
        return delivery;
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("ARBOR_EVENT_PATH", event_path)
        .env("ARBOR_JOB_ID", event.execution_id.to_string())
        .env("ARBOR_JOB_NAME", &event.job)
        .env("ARBOR_EVENT_TYPE", &event.event_type)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            delivery.error = Some(format!("failed to spawn {program}: {e}"));
            delivery.duration_ms = millis(started);
            return delivery;
        }
    };
    let pid = child.id();
    let stdin = child.stdin.take();
    // Kept draining so that a chatty command never blocks on a full pipe.
    let stderr = child.stderr.take().map(|mut err| {
        tokio::spawn(async move {
            let mut kept = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = err.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                let room = STDERR_KEPT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
            kept
        })
    });
    let run = tokio::time::timeout(timeout, async {
        if let Some(mut stdin) = stdin {
            // A command that does not read its stdin is fine (EPIPE).
            let _ = stdin.write_all(json).await;
        }
        child.wait().await
    })
    .await;
    let status = match run {
        Ok(Ok(status)) => Some(status),
        Ok(Err(e)) => {
            delivery.error = Some(format!("failed to wait for {program}: {e}"));
            None
        }
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            let _ = child.kill().await;
            delivery.error = Some(format!(
                "timed out after {}; killed",
                crate::spec::fmt_duration(timeout)
            ));
            None
        }
    };
    // What the command said on stderr (its descendants may hold the pipe:
    // take what came within a moment).
    let said = match stderr {
        Some(task) => {
            let abort = task.abort_handle();
            let got = tokio::time::timeout(Duration::from_millis(500), task).await;
            abort.abort();
            match got {
                Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).trim().to_owned(),
                _ => String::new(),
            }
        }
        None => String::new(),
    };
    if let Some(status) = status {
        delivery.exit_code = status.code();
        delivery.ok = status.success();
        if !status.success() {
            let how = match (status.code(), status.signal()) {
                (Some(code), _) => format!("exit code {code}"),
                (None, Some(sig)) => format!("killed by signal {sig}"),
                (None, None) => "failed".to_owned(),
            };
            delivery.error = Some(if said.is_empty() {
                how
            } else {
                format!("{how}: {said}")
            });
        }
    }
    delivery.duration_ms = millis(started);
    delivery
}

async fn append_line(path: &Path, json: &[u8]) -> Delivery {
    let started = Instant::now();
    let mut line = Vec::with_capacity(json.len() + 1);
    line.extend_from_slice(json);
    line.push(b'\n');
    let owned = path.to_owned();
    let result = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&owned)?;
        // One write call: with O_APPEND the line lands whole at the end.
        let n = file.write(&line)?;
        if n != line.len() {
            return Err(std::io::Error::other(format!(
                "short write: {n} of {} bytes",
                line.len()
            )));
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| Err(std::io::Error::other(e)));
    Delivery {
        sink: DeliverySink::File,
        target: path.display().to_string(),
        ok: result.is_ok(),
        error: result
            .err()
            .map(|e| format!("failed to append to {}: {e}", path.display())),
        exit_code: None,
        duration_ms: millis(started),
    }
}
