//! Why the executor refused or failed a request.

use crate::{execution::ExecutionId, spec::SpecErrors};

/// A refused or failed executor request. Each variant maps to one HTTP
/// status in the API (see [`ExecutorError::status`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ExecutorError {
    /// No job is registered under that name.
    #[error("no job named {0:?} is registered")]
    UnknownJob(String),
    /// No execution has that id (never existed, or deleted by retention).
    #[error("no execution with id {0}")]
    UnknownExecution(ExecutionId),
    /// The job spec is invalid.
    #[error("invalid job spec: {0}")]
    Invalid(SpecErrors),
    /// An env file could not be read.
    #[error("failed to read the env files of job {job:?}: {message}")]
    EnvFile {
        /// The job.
        job: String,
        /// Which file, which line, what is wrong.
        message: String,
    },
    /// `concurrency: forbid` and an execution is active.
    #[error("job {job:?} was not started: concurrency is forbid and execution {active} is active")]
    Forbidden {
        /// The job.
        job: String,
        /// The active execution.
        active: ExecutionId,
    },
    /// `max_concurrent` executions are active.
    #[error("job {job:?} was not started: {limit} execution(s) already active (max_concurrent)")]
    ConcurrencyLimit {
        /// The job.
        job: String,
        /// The limit.
        limit: usize,
    },
    /// The execution already ended.
    #[error("execution {id} already ended ({state})")]
    Finished {
        /// The execution.
        id: ExecutionId,
        /// Its terminal state.
        state: String,
    },
    /// The execution refused the request (nothing runs yet, a task cannot be signalled).
    #[error("failed to control execution {id}: {message}")]
    Control {
        /// The execution.
        id: ExecutionId,
        /// Why.
        message: String,
    },
    /// The executor is shutting down and takes no new executions.
    #[error("the executor is shutting down: no new executions are accepted")]
    ShuttingDown,
    /// Reading logs from disk failed.
    #[error("failed to read the logs of execution {id}: {message}")]
    Logs {
        /// The execution.
        id: ExecutionId,
        /// Why.
        message: String,
    },
    /// The executor is not running.
    #[error("the executor is not running")]
    Unavailable,
    /// A part the request needs (the executor, the job supervisor) is down
    /// and being restarted; try again.
    #[error("failed to reach the {0}: it is restarting")]
    Restarting(String),
    /// The executor did not answer in time.
    #[error("the executor did not answer within {0:?}")]
    Timeout(std::time::Duration),
}

impl ExecutorError {
    /// The HTTP status an API answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::UnknownJob(_) | Self::UnknownExecution(_) => 404,
            Self::Invalid(_) | Self::EnvFile { .. } => 400,
            Self::Forbidden { .. }
            | Self::ConcurrencyLimit { .. }
            | Self::Finished { .. }
            | Self::Control { .. } => 409,
            Self::ShuttingDown | Self::Unavailable | Self::Restarting(_) | Self::Timeout(_) => 503,
            Self::Logs { .. } => 500,
        }
    }
}
