//! The crate's error: one enum per module, rolled up here.

use crate::{actors::supervisor_actor::SupervisorError, runtime::RuntimeError, spec::SpecErrors};

/// Any arbor error.
#[derive(Debug, thiserror::Error)]
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
}

/// `Result` with arbor's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
