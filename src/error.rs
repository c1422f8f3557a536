//! The crate's error: one enum per module, rolled up here.

use crate::{
    actors::supervisor_actor::SupervisorError, runtime::RuntimeError, spec::SpecErrors,
    store::StoreError,
};

/// Any arbor error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A spec is invalid.
    #[error(transparent)]
    Spec(#[from] SpecErrors),
    /// A runtime step failed.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// A supervisor failed or refused a call.
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// Durable records could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A job request was refused.
    #[error(transparent)]
    Executor(#[from] crate::actors::executor_actor::ExecutorError),
    /// An actor could not be started.
    #[error("{0}")]
    Start(String),
    /// A part of the node is down and being restarted.
    #[error("{0}")]
    Restarting(String),
    /// The request does not apply to what it names as it is now (a
    /// service started from code cannot be scaled by name, logs kept only
    /// in memory cannot be read from disk).
    #[error("{0}")]
    Conflict(String),
    /// The node is shutting down and takes no new work.
    #[error("the node is shutting down: no new work is accepted")]
    ShuttingDown,
}

/// `Result` with arbor's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
