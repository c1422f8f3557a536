//! What can go wrong talking to the overlay actor.

use super::allocator::AllocError;

/// A failed overlay operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OverlayError {
    /// The backend failed.
    #[error("failed to {op} {target}: {message}")]
    Backend {
        /// What was being done (`set up segment`, `attach`, ...).
        op: &'static str,
        /// The segment or container.
        target: String,
        /// The backend's error.
        message: String,
    },
    /// The container is already attached somewhere.
    #[error("failed to attach {container}: already attached to segment {segment}")]
    AlreadyAttached {
        /// The container.
        container: String,
        /// Its current segment.
        segment: String,
    },
    /// Attach to a segment nobody acquired.
    #[error("failed to attach {container}: segment {segment} is not set up (acquire it first)")]
    NoSegment {
        /// The container.
        container: String,
        /// The segment.
        segment: String,
    },
    /// Attach with a namespace this actor did not prepare.
    #[error(
        "failed to attach {container}: network namespace {netns} was not prepared by the overlay actor"
    )]
    UnknownNetns {
        /// The container.
        container: String,
        /// The path given.
        netns: String,
    },
    /// No subnet or address left.
    #[error(transparent)]
    Alloc(#[from] AllocError),
    /// The configuration is unusable.
    #[error("failed to start the overlay actor: {field} = {value:?}: {reason}")]
    Config {
        /// The setting.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The overlay actor is gone, or did not answer in time.
    #[error("the overlay actor is not running")]
    Unavailable,
    /// The overlay actor is down and being restarted.
    #[error("failed to reach the overlay actor: it is restarting")]
    Restarting,
}
