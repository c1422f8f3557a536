//! [`Part`]: a handle to a node part (the executor, the overlay actor, the
//! cron actor, the job supervisor, the deployment actor) that follows its
//! restarts.
//!
//! Why: a supervisor restarts a failed part as a new actor with a new
//! `ActorId`. A raw `ActorRef` kept by a caller would then point at the dead
//! one forever. A `Part` is a cell the part's child spec fills each time it
//! starts the actor; every clone sees the newest actor. A call made while
//! the part is down waits a short while for the new actor and then answers
//! [`PartError::Restarting`] (the API's 503 `restarting`), never a hang.

use std::{fmt, sync::Arc, time::Duration};

use ractor::{ActorRef, ActorStatus, Message, RpcReplyPort, rpc::CallResult};
use tokio::sync::watch;

/// How long a call waits for a part that is down to come back.
pub const RESTART_PATIENCE: Duration = Duration::from_secs(3);

/// Why a call to a part got no answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PartError {
    /// The part is down (being restarted, or gone for good) and no new
    /// actor came within the patience.
    #[error("failed to reach the {0}: it is restarting")]
    Restarting(&'static str),
    /// The part did not answer within the call's timeout.
    #[error("failed to reach the {part}: no answer within {after:?}")]
    Timeout {
        /// The part.
        part: &'static str,
        /// The timeout.
        after: Duration,
    },
}

/// A handle that resolves the current actor of a part. Cheap to clone.
pub struct Part<M: Message> {
    name: &'static str,
    cell: Arc<watch::Sender<Option<ActorRef<M>>>>,
}

impl<M: Message> Clone for Part<M> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            cell: self.cell.clone(),
        }
    }
}

impl<M: Message> fmt::Debug for Part<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Part")
            .field("name", &self.name)
            .field("up", &self.current().is_some())
            .finish()
    }
}

/// Starting counts: ractor returns from `spawn` before the actor's loop
/// marks it running, and messages sent meanwhile are queued for it.
fn alive<M: Message>(actor: &ActorRef<M>) -> bool {
    actor.get_status() < ActorStatus::Stopping
}

impl<M: Message> Part<M> {
    /// An empty handle, filled by [`Part::set`] when the part starts.
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            cell: Arc::new(watch::Sender::new(None)),
        }
    }

    /// A handle to one actor that is never restarted.
    pub fn fixed(name: &'static str, actor: ActorRef<M>) -> Self {
        let part = Self::new(name);
        part.set(actor);
        part
    }

    /// The part's name (`executor`, `overlay actor`...).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Points every clone at `actor` (the part's new incarnation).
    pub fn set(&self, actor: ActorRef<M>) {
        self.cell.send_replace(Some(actor));
    }

    /// The current actor when it runs.
    pub fn current(&self) -> Option<ActorRef<M>> {
        self.cell.borrow().clone().filter(alive)
    }

    /// The newest actor, running or not (to kill or wait on it).
    pub fn last(&self) -> Option<ActorRef<M>> {
        self.cell.borrow().clone()
    }

    /// Whether the part runs now.
    pub fn is_up(&self) -> bool {
        self.current().is_some()
    }

    /// The current actor, waiting up to `patience` for one that runs.
    pub async fn resolve(&self, patience: Duration) -> Result<ActorRef<M>, PartError> {
        if let Some(actor) = self.current() {
            return Ok(actor);
        }
        let mut rx = self.cell.subscribe();
        let waited = tokio::time::timeout(patience, async {
            loop {
                if let Some(actor) = rx.borrow_and_update().clone().filter(alive) {
                    return Some(actor);
                }
                if rx.changed().await.is_err() {
                    return None;
                }
            }
        })
        .await;
        match waited {
            Ok(Some(actor)) => Ok(actor),
            _ => Err(PartError::Restarting(self.name)),
        }
    }

    /// Sends `msg` to the current actor; lost (and an error) while the part
    /// is down.
    pub fn cast(&self, msg: M) -> Result<(), PartError> {
        let actor = self.current().ok_or(PartError::Restarting(self.name))?;
        actor
            .cast(msg)
            .map_err(|_| PartError::Restarting(self.name))
    }

    /// Asks the current actor and waits for the answer, at most `timeout`
    /// (`None`: as long as the actor lives). An actor that dies before it
    /// answers is [`PartError::Restarting`].
    pub async fn call<T: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<T>) -> M,
        timeout: Option<Duration>,
    ) -> Result<T, PartError> {
        let actor = self.resolve(RESTART_PATIENCE).await?;
        match actor.call(msg, timeout).await {
            Ok(CallResult::Success(v)) => Ok(v),
            Ok(CallResult::Timeout) => Err(PartError::Timeout {
                part: self.name,
                after: timeout.unwrap_or_default(),
            }),
            _ => Err(PartError::Restarting(self.name)),
        }
    }
}
