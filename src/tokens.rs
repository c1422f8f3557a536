//! Container tokens: the credential a job's container uses to call back into
//! the node. arbor does not mint them; it tells whoever does when a
//! container is gone, so a token never outlives its container.

use crate::{
    execution::ExecutionId,
    journal::{Entry, Journal},
    runtime::ContainerId,
};

/// Told when an execution's container is removed, exactly once per
/// container. Must be quick and must not fail (log instead).
pub trait TokenSink: Send + Sync + 'static {
    /// Revokes the token of `container`, which ran `execution`.
    fn revoke(&self, execution: ExecutionId, container: &ContainerId);
}

/// No tokens are issued: nothing to revoke.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTokens;

impl TokenSink for NoTokens {
    fn revoke(&self, _: ExecutionId, _: &ContainerId) {}
}

/// A fake that writes `token revoke CONTAINER` to a [`Journal`].
#[derive(Debug, Clone, Default)]
pub struct RecordingTokens {
    journal: Journal,
}

impl RecordingTokens {
    /// A fake writing into `journal`.
    pub fn new(journal: Journal) -> Self {
        Self { journal }
    }
}

impl TokenSink for RecordingTokens {
    fn revoke(&self, _: ExecutionId, container: &ContainerId) {
        self.journal.write(Entry::TokenRevoked(container.0.clone()));
    }
}
