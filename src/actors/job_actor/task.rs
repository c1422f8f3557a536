//! In-process jobs: a future run as an execution, with its output and its
//! cancellation.

use std::fmt;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::{execution::ExecutionId, runtime::LogStream, store::ExecutionOutput};

/// What an execution runs.
pub enum Work {
    /// The job spec's command (or image), as a container.
    Command,
    /// A future in this process.
    Task(TaskFn),
}

impl fmt::Debug for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Command => f.write_str("Command"),
            Self::Task(_) => f.write_str("Task(..)"),
        }
    }
}

/// The body of an in-process job.
pub type TaskFn = Box<dyn FnOnce(TaskContext) -> BoxFuture<'static, Result<(), String>> + Send>;

/// What an in-process job gets: its id, its output and its cancellation.
#[derive(Clone)]
pub struct TaskContext {
    pub(super) id: ExecutionId,
    pub(super) output: ExecutionOutput,
    pub(super) cancelled: watch::Receiver<bool>,
}

impl TaskContext {
    /// The execution's id.
    pub fn id(&self) -> ExecutionId {
        self.id
    }

    /// Writes a line to the execution's stdout.
    pub fn stdout(&self, line: &str) {
        self.output.write_line(LogStream::Stdout, line);
    }

    /// Writes a line to the execution's stderr.
    pub fn stderr(&self, line: &str) {
        self.output.write_line(LogStream::Stderr, line);
    }

    /// True once the execution was cancelled (or its deadline passed).
    pub fn is_cancelled(&self) -> bool {
        *self.cancelled.borrow()
    }

    /// Resolves when the execution is cancelled: return soon after, or be
    /// aborted when the grace runs out.
    pub async fn cancelled(&self) {
        let mut rx = self.cancelled.clone();
        let _ = rx.wait_for(|c| *c).await;
    }
}
