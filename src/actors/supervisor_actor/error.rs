//! Errors of supervisors and of calls to them.

use std::time::Duration;

use crate::spec::{SpecErrors, fmt_duration};

/// What went wrong with a supervisor or a call to it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SupervisorError {
    /// The spec (or a child spec) is invalid; every error names its field.
    #[error("invalid spec for supervisor {name}: {errors}")]
    InvalidSpec {
        /// The supervisor.
        name: String,
        /// What is wrong.
        #[source]
        errors: SpecErrors,
    },
    /// A child with this id exists already.
    #[error("failed to add child {0:?}: a child with this id exists")]
    AlreadyPresent(String),
    /// No child has this id.
    #[error("no child {0:?}")]
    NotFound(String),
    /// The child runs; terminate it first.
    #[error("child {0:?} is running: terminate it first")]
    Running(String),
    /// The child's automatic restart is under way (its starts fail and are
    /// retried, or it backs off): `restart_child` and `delete_child` refuse
    /// it, as OTP's do; `terminate_child` stops the retries.
    #[error("child {0:?} is restarting: terminate it first")]
    Restarting(String),
    /// `max_children` reached.
    #[error("failed to add a child: the supervisor already has its maximum of {0} children")]
    MaxChildren(usize),
    /// The child could not be started.
    #[error("failed to start child {id:?}: {reason}")]
    StartFailed {
        /// The child.
        id: String,
        /// Why.
        reason: String,
    },
    /// Too many restarts: the supervisor gave up and failed to its parent.
    #[error(
        "supervisor {name} gave up: restart intensity exceeded (more than {max_restarts} restarts in {}, last by child {child}: {cause})",
        fmt_duration(*window)
    )]
    IntensityExceeded {
        /// The supervisor.
        name: String,
        /// The child whose restart went over the limit.
        child: String,
        /// The limit.
        max_restarts: u32,
        /// The window.
        window: Duration,
        /// Why that child needed the restart (`failed to start: ...`,
        /// `exit code 3`, `failed: ...`).
        cause: String,
    },
    /// The supervisor could not be spawned.
    #[error("failed to start supervisor {name}: {reason}")]
    Spawn {
        /// The supervisor.
        name: String,
        /// Why.
        reason: String,
    },
    /// The supervisor is not running (it stopped or failed).
    #[error("supervisor {0} is not running")]
    Unavailable(String),
    /// The supervisor stopped before the call could be carried out.
    #[error("supervisor {0} is shutting down")]
    ShuttingDown(String),
}
