//! What a job execution is, as every part of the node sees it: its id, what
//! triggered it, the state it is in and why it failed.
//!
//! These are plain data shared by the job actor (which moves an execution
//! through its states), the executor (which owns the table of them), the
//! durable store (which writes them to `meta.json` and `state.json`) and the
//! API. The state machine is
//! `Pending -> Initializing -> Running -> Completed | Failed | Cancelled`;
//! a terminal state is never left.

use std::{collections::BTreeMap, fmt, path::PathBuf, str::FromStr, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::runtime::Signal;

/// The id of one execution, unique across restarts of the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExecutionId(pub Uuid);

impl ExecutionId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for ExecutionId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for ExecutionId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// Who or what asked for an execution.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobTrigger {
    /// An HTTP API call from this address.
    Endpoint {
        /// The caller's socket address.
        remote_addr: String,
    },
    /// The command line.
    Cli,
    /// A cron schedule.
    Scheduler {
        /// The scheduled time this run stands for.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheduled_for: Option<DateTime<Utc>>,
    },
    /// The node itself (a retry, a test, an embedding application).
    Internal {
        /// Why.
        reason: String,
    },
}

impl fmt::Display for JobTrigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Endpoint { remote_addr } => write!(f, "endpoint ({remote_addr})"),
            Self::Cli => f.write_str("cli"),
            Self::Scheduler {
                scheduled_for: Some(at),
            } => write!(f, "scheduler ({})", at.to_rfc3339()),
            Self::Scheduler {
                scheduled_for: None,
            } => f.write_str("scheduler"),
            Self::Internal { reason } => write!(f, "internal ({reason})"),
        }
    }
}

/// Where an execution is. The last three are terminal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
#[non_exhaustive]
pub enum JobState {
    /// Accepted; nothing has been done yet.
    Pending,
    /// Pulling, creating, attaching the network, running init steps.
    Initializing,
    /// The main command runs.
    Running,
    /// The main command exited with code 0 (or a code the job counts as success).
    Completed {
        /// Its exit code.
        exit_code: i32,
        /// From start to exit.
        #[serde(with = "humantime_serde")]
        duration: Duration,
    },
    /// A step failed; `reason` says which.
    Failed {
        /// What failed.
        reason: FailReason,
        /// The exit code of the main command, when it ran and exited.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        exit_code: Option<i32>,
    },
    /// Cancelled by a caller, a `replace` policy or a node shutdown.
    Cancelled,
}

impl JobState {
    /// Completed, Failed or Cancelled.
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Self::Completed { .. } | Self::Failed { .. } | Self::Cancelled
        )
    }

    /// Pending, Initializing or Running.
    pub fn is_active(&self) -> bool {
        !self.is_terminal()
    }

    /// The main command's exit code, when it exited.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Self::Completed { exit_code, .. } => Some(*exit_code),
            Self::Failed { exit_code, .. } => *exit_code,
            _ => None,
        }
    }

    /// The state's name as in `state.json` (`pending`, ..., `cancelled`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Initializing => "initializing",
            Self::Running => "running",
            Self::Completed { .. } => "completed",
            Self::Failed { .. } => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Completed {
                exit_code,
                duration,
            } => write!(
                f,
                "completed (exit code {exit_code}, {})",
                crate::spec::fmt_duration(Duration::from_millis(duration.as_millis() as u64))
            ),
            Self::Failed { reason, .. } => write!(f, "failed: {reason}"),
            other => f.write_str(other.name()),
        }
    }
}

/// The step an execution failed at, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailReason {
    /// The image (for host commands: the program) could not be resolved.
    ImagePull {
        /// The runtime's error.
        message: String,
    },
    /// The container could not be created.
    ContainerCreate {
        /// The runtime's error.
        message: String,
    },
    /// The container could not join its network segment.
    OverlayAttach {
        /// The overlay's error.
        message: String,
    },
    /// Init step `step` (1-based) failed to run or exited non-zero.
    InitStep {
        /// 1-based index in the job's `init` list.
        step: usize,
        /// What happened.
        message: String,
    },
    /// The main command could not be started.
    Start {
        /// The runtime's error.
        message: String,
    },
    /// The main command exited with a non-zero code.
    NonZeroExit {
        /// The code.
        code: i32,
    },
    /// The run outlived its deadline and was stopped.
    DeadlineExceeded {
        /// The deadline.
        #[serde(with = "humantime_serde")]
        deadline: Duration,
    },
    /// The main command was killed by a signal it did not get from arbor.
    KilledBySignal {
        /// The signal number.
        signal: i32,
    },
    /// Waiting for the main command failed.
    Wait {
        /// The runtime's error.
        message: String,
    },
    /// An in-process job returned an error or panicked.
    Task {
        /// The error or panic message.
        message: String,
    },
    /// The node stopped while the execution was active.
    NodeRestarted,
    /// The kernel killed a process of the main container at its memory
    /// limit (`resources.memory`).
    OutOfMemory {
        /// The limit, as the spec gave it (`32.0 MiB`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<String>,
    },
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ImagePull { message } => write!(f, "image pull failed: {message}"),
            Self::ContainerCreate { message } => write!(f, "container create failed: {message}"),
            Self::OverlayAttach { message } => write!(f, "overlay attach failed: {message}"),
            Self::InitStep { step, message } => write!(f, "init step {step} failed: {message}"),
            Self::Start { message } => write!(f, "start failed: {message}"),
            Self::NonZeroExit { code } => write!(f, "non-zero exit: exit code {code}"),
            Self::DeadlineExceeded { deadline } => write!(
                f,
                "deadline exceeded: ran longer than {}",
                crate::spec::fmt_duration(*deadline)
            ),
            Self::KilledBySignal { signal } => match Signal::try_from(*signal) {
                Ok(sig) => write!(f, "killed by signal {sig}"),
                Err(_) => write!(f, "killed by signal {signal}"),
            },
            Self::Wait { message } => write!(f, "wait failed: {message}"),
            Self::Task { message } => write!(f, "task failed: {message}"),
            Self::NodeRestarted => f.write_str("node restarted"),
            Self::OutOfMemory { limit: Some(limit) } => {
                write!(
                    f,
                    "out of memory: OOM-killed at its memory limit of {limit}"
                )
            }
            Self::OutOfMemory { limit: None } => f.write_str("out of memory: OOM-killed"),
        }
    }
}

/// What an execution runs and why: written once to `meta.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionMeta {
    /// The execution's id.
    pub id: ExecutionId,
    /// The job's name.
    pub job: String,
    /// 1 for the first attempt, n for the (n-1)th retry.
    pub attempt: u32,
    /// The first attempt's id when this is a retry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_of: Option<ExecutionId>,
    /// argv of the main command (empty for an in-process job).
    #[serde(default)]
    pub command: Vec<String>,
    /// The image, when the job runs one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// What triggered it.
    pub trigger: JobTrigger,
    /// The variables set for it, masked keys shown as `***`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Its working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// When it was accepted.
    pub created_at: DateTime<Utc>,
}

/// Where an execution is now: rewritten (atomically) to `state.json` on
/// every change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionStatus {
    /// The state (`{"status": "failed", "reason": {...}, "exit_code": 3}`).
    pub state: JobState,
    /// Pid (and process group) of the main command while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Start time of that process in clock ticks since boot (from
    /// `/proc/PID/stat`), so a restarted node never signals a reused pid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_start_ticks: Option<u64>,
    /// Signal that ended the main command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    /// True while the process group is stopped (SIGSTOP).
    #[serde(default)]
    pub paused: bool,
    /// When the main command started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// When the execution reached its terminal state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<DateTime<Utc>>,
    /// When this status was written.
    pub updated_at: DateTime<Utc>,
    /// Log files that stopped being written before the end (a full state
    /// dir): each with the bytes it kept of those the command wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs_incomplete: Option<String>,
}

impl ExecutionStatus {
    /// A fresh `Pending` status.
    pub fn pending(now: DateTime<Utc>) -> Self {
        Self {
            state: JobState::Pending,
            pid: None,
            pid_start_ticks: None,
            signal: None,
            paused: false,
            started_at: None,
            finished_at: None,
            updated_at: now,
            logs_incomplete: None,
        }
    }
}

/// One execution as the executor and the API show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExecutionRecord {
    /// What it runs.
    #[serde(flatten)]
    pub meta: ExecutionMeta,
    /// Where it is.
    #[serde(flatten)]
    pub status: ExecutionStatus,
}
