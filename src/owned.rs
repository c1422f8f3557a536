//! State owned by exactly one task and changed only by messages sent to it.
//!
//! The runtimes keep tables (containers by id, scripted behaviours, call
//! records). Instead of a map behind a shared lock, each table lives inside one
//! task; callers send it closures, which run one at a time on that task, and
//! get the result back through a oneshot. Nothing else can hold a reference
//! into the table, no lock can be held across an `.await`, and a caller that
//! does not need an answer (`cast`) never waits. This is an actor whose
//! messages are closures; arbor's long-lived components are ractor actors,
//! this is for the small tables inside a runtime.

use tokio::sync::{mpsc, oneshot};

type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

/// A handle to state owned by one task. Cloning the handle shares the task;
/// the state is dropped when the last handle is.
pub(crate) struct Owned<S> {
    tx: mpsc::UnboundedSender<Job<S>>,
}

impl<S> Clone for Owned<S> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<S: Send + 'static> Owned<S> {
    /// Moves `state` into a new task. Must be called inside a tokio runtime.
    pub(crate) fn spawn(state: S) -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<Job<S>>();
        tokio::spawn(async move {
            let mut state = state;
            while let Some(job) = rx.recv().await {
                job(&mut state);
            }
        });
        Self { tx }
    }

    /// Runs `f` on the owner without waiting. False if the owner is gone.
    pub(crate) fn cast(&self, f: impl FnOnce(&mut S) + Send + 'static) -> bool {
        self.tx.send(Box::new(f)).is_ok()
    }

    /// Runs `f` on the owner and returns its result; `None` if the owner is gone.
    pub(crate) async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut S) -> R + Send + 'static,
    ) -> Option<R> {
        let (tx, rx) = oneshot::channel();
        if !self.cast(move |s| {
            let _ = tx.send(f(s));
        }) {
            return None;
        }
        rx.await.ok()
    }
}
