//! The overlay actor: network segments, container attachments, and the
//! reference count that decides when a segment is torn down.
//!
//! A job execution acquires its segment (set up on first use), attaches its
//! container after create and before start, and on cleanup detaches and
//! releases. The segment is torn down when the last holder releases it: the
//! count lives here, in one actor's state, so "is another execution of this
//! job still active?" is a number, not a scan of every execution.
//!
//! The network work itself is done by an [`OverlayBackend`]: [`Disabled`]
//! (no networking; attach hands out no address, the node needs no root) or
//! [`RecordingOverlay`] (a fake for tests that journals every call). A real
//! bridge backend comes with the overlay issue; this actor does not change.
//!
//! Failure: a backend error is returned to the caller and leaves the
//! bookkeeping as it was before the call (an attach that failed holds
//! nothing; a release whose teardown failed still drops the count and keeps
//! the error). The actor itself never fails on a request.

use std::{collections::BTreeMap, fmt, net::IpAddr};

use async_trait::async_trait;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};

use crate::{runtime::ContainerId, testing::Journal};

/// A failed overlay operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
    /// The overlay actor is gone.
    #[error("the overlay actor is not running")]
    Unavailable,
}

/// Where the network work is done.
#[async_trait]
pub trait OverlayBackend: Send + Sync + 'static {
    /// A short name for logs.
    fn name(&self) -> &'static str;
    /// Creates the segment (bridge, subnet).
    async fn setup_segment(&self, segment: &str) -> Result<(), String>;
    /// Removes the segment.
    async fn teardown_segment(&self, segment: &str) -> Result<(), String>;
    /// Connects `container` to `segment`; returns its address, if any.
    async fn attach(
        &self,
        container: &ContainerId,
        segment: &str,
    ) -> Result<Option<IpAddr>, String>;
    /// Disconnects `container` from `segment`.
    async fn detach(&self, container: &ContainerId, segment: &str) -> Result<(), String>;
}

/// No networking: every call succeeds and attach gives no address.
#[derive(Debug, Clone, Copy, Default)]
pub struct Disabled;

#[async_trait]
impl OverlayBackend for Disabled {
    fn name(&self) -> &'static str {
        "disabled"
    }
    async fn setup_segment(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    async fn teardown_segment(&self, _: &str) -> Result<(), String> {
        Ok(())
    }
    async fn attach(&self, _: &ContainerId, _: &str) -> Result<Option<IpAddr>, String> {
        Ok(None)
    }
    async fn detach(&self, _: &ContainerId, _: &str) -> Result<(), String> {
        Ok(())
    }
}

/// A fake backend that writes every call to a [`Journal`]
/// (`overlay setup SEG`, `overlay attach CONTAINER SEG`, `overlay detach
/// CONTAINER SEG`, `overlay teardown SEG`) and hands out 10.0.0.x addresses.
#[derive(Debug, Clone, Default)]
pub struct RecordingOverlay {
    journal: Journal,
}

impl RecordingOverlay {
    /// A fake writing into `journal`.
    pub fn new(journal: Journal) -> Self {
        Self { journal }
    }
}

#[async_trait]
impl OverlayBackend for RecordingOverlay {
    fn name(&self) -> &'static str {
        "recording"
    }
    async fn setup_segment(&self, segment: &str) -> Result<(), String> {
        self.journal.write(format!("overlay setup {segment}"));
        Ok(())
    }
    async fn teardown_segment(&self, segment: &str) -> Result<(), String> {
        self.journal.write(format!("overlay teardown {segment}"));
        Ok(())
    }
    async fn attach(&self, c: &ContainerId, segment: &str) -> Result<Option<IpAddr>, String> {
        self.journal.write(format!("overlay attach {c} {segment}"));
        Ok(None)
    }
    async fn detach(&self, c: &ContainerId, segment: &str) -> Result<(), String> {
        self.journal.write(format!("overlay detach {c} {segment}"));
        Ok(())
    }
}

/// Requests to the overlay actor.
pub enum OverlayMsg {
    /// Sets the segment up if nobody holds it, and counts one more holder.
    Acquire(String, RpcReplyPort<Result<(), OverlayError>>),
    /// Counts one holder less; the last one tears the segment down.
    Release(String, RpcReplyPort<Result<(), OverlayError>>),
    /// Connects a container to an acquired segment.
    Attach(
        ContainerId,
        String,
        RpcReplyPort<Result<Option<IpAddr>, OverlayError>>,
    ),
    /// Disconnects a container (no-op when it is not attached).
    Detach(ContainerId, RpcReplyPort<Result<(), OverlayError>>),
    /// Every segment with its holders and attachments.
    List(RpcReplyPort<Vec<SegmentInfo>>),
}

/// A segment as the overlay actor sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentInfo {
    /// Its name.
    pub name: String,
    /// How many holders it has.
    pub holders: usize,
    /// Containers attached to it, with their addresses.
    pub attachments: Vec<(ContainerId, Option<IpAddr>)>,
}

/// What the overlay actor starts with.
pub struct OverlayArgs {
    /// Where the network work is done.
    pub backend: Box<dyn OverlayBackend>,
}

/// The actor's state: the only truth about segments and attachments.
pub struct OverlayState {
    backend: Box<dyn OverlayBackend>,
    holders: BTreeMap<String, usize>,
    attachments: BTreeMap<ContainerId, (String, Option<IpAddr>)>,
}

/// The overlay actor.
pub struct OverlayActor;

impl Actor for OverlayActor {
    type Msg = OverlayMsg;
    type State = OverlayState;
    type Arguments = OverlayArgs;

    /// Never fails.
    async fn pre_start(
        &self,
        _: ActorRef<Self::Msg>,
        args: OverlayArgs,
    ) -> Result<OverlayState, ActorProcessingErr> {
        Ok(OverlayState {
            backend: args.backend,
            holders: BTreeMap::new(),
            attachments: BTreeMap::new(),
        })
    }

    /// Every request is answered, errors included; nothing here fails the actor.
    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: OverlayMsg,
        state: &mut OverlayState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            OverlayMsg::Acquire(segment, reply) => {
                let _ = reply.send(state.acquire(segment).await);
            }
            OverlayMsg::Release(segment, reply) => {
                let _ = reply.send(state.release(&segment).await);
            }
            OverlayMsg::Attach(container, segment, reply) => {
                let _ = reply.send(state.attach(container, segment).await);
            }
            OverlayMsg::Detach(container, reply) => {
                let _ = reply.send(state.detach(&container).await);
            }
            OverlayMsg::List(reply) => {
                let _ = reply.send(state.list());
            }
        }
        Ok(())
    }

    /// Tears down what is still held (a node stopping with work left).
    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut OverlayState,
    ) -> Result<(), ActorProcessingErr> {
        let attached: Vec<ContainerId> = state.attachments.keys().cloned().collect();
        for c in attached {
            let _ = state.detach(&c).await;
        }
        for segment in std::mem::take(&mut state.holders).into_keys() {
            if let Err(e) = state.backend.teardown_segment(&segment).await {
                tracing::warn!(%segment, error = %e, "failed to tear down segment on stop");
            }
        }
        Ok(())
    }
}

impl OverlayState {
    async fn acquire(&mut self, segment: String) -> Result<(), OverlayError> {
        if let Some(n) = self.holders.get_mut(&segment) {
            *n += 1;
            return Ok(());
        }
        self.backend
            .setup_segment(&segment)
            .await
            .map_err(|message| OverlayError::Backend {
                op: "set up segment",
                target: segment.clone(),
                message,
            })?;
        self.holders.insert(segment, 1);
        Ok(())
    }

    async fn release(&mut self, segment: &str) -> Result<(), OverlayError> {
        let Some(n) = self.holders.get_mut(segment) else {
            return Ok(());
        };
        *n -= 1;
        if *n > 0 {
            return Ok(());
        }
        self.holders.remove(segment);
        self.backend
            .teardown_segment(segment)
            .await
            .map_err(|message| OverlayError::Backend {
                op: "tear down segment",
                target: segment.to_owned(),
                message,
            })
    }

    async fn attach(
        &mut self,
        container: ContainerId,
        segment: String,
    ) -> Result<Option<IpAddr>, OverlayError> {
        if let Some((current, _)) = self.attachments.get(&container) {
            return Err(OverlayError::AlreadyAttached {
                container: container.to_string(),
                segment: current.clone(),
            });
        }
        if !self.holders.contains_key(&segment) {
            return Err(OverlayError::NoSegment {
                container: container.to_string(),
                segment,
            });
        }
        let addr = self
            .backend
            .attach(&container, &segment)
            .await
            .map_err(|message| OverlayError::Backend {
                op: "attach",
                target: container.to_string(),
                message,
            })?;
        self.attachments.insert(container, (segment, addr));
        Ok(addr)
    }

    async fn detach(&mut self, container: &ContainerId) -> Result<(), OverlayError> {
        let Some((segment, _)) = self.attachments.remove(container) else {
            return Ok(());
        };
        self.backend
            .detach(container, &segment)
            .await
            .map_err(|message| OverlayError::Backend {
                op: "detach",
                target: container.to_string(),
                message,
            })
    }

    fn list(&self) -> Vec<SegmentInfo> {
        self.holders
            .iter()
            .map(|(name, &holders)| SegmentInfo {
                name: name.clone(),
                holders,
                attachments: self
                    .attachments
                    .iter()
                    .filter(|(_, (s, _))| s == name)
                    .map(|(c, (_, a))| (c.clone(), *a))
                    .collect(),
            })
            .collect()
    }
}

/// A cheap handle to the overlay actor.
#[derive(Clone)]
pub struct Overlay {
    actor: ActorRef<OverlayMsg>,
}

impl fmt::Debug for Overlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overlay").finish_non_exhaustive()
    }
}

impl Overlay {
    /// Spawns an overlay actor over `backend`.
    pub async fn start(backend: impl OverlayBackend) -> Result<Self, ActorProcessingErr> {
        let (actor, _) = OverlayActor::spawn(
            None,
            OverlayActor,
            OverlayArgs {
                backend: Box::new(backend),
            },
        )
        .await?;
        Ok(Self { actor })
    }

    /// A handle to a running overlay actor.
    pub fn from_ref(actor: ActorRef<OverlayMsg>) -> Self {
        Self { actor }
    }

    /// The actor.
    pub fn actor(&self) -> &ActorRef<OverlayMsg> {
        &self.actor
    }

    /// See [`OverlayMsg::Acquire`].
    pub async fn acquire(&self, segment: &str) -> Result<(), OverlayError> {
        let segment = segment.to_owned();
        self.ask(|r| OverlayMsg::Acquire(segment, r)).await
    }

    /// See [`OverlayMsg::Release`].
    pub async fn release(&self, segment: &str) -> Result<(), OverlayError> {
        let segment = segment.to_owned();
        self.ask(|r| OverlayMsg::Release(segment, r)).await
    }

    /// See [`OverlayMsg::Attach`].
    pub async fn attach(
        &self,
        container: &ContainerId,
        segment: &str,
    ) -> Result<Option<IpAddr>, OverlayError> {
        let (c, s) = (container.clone(), segment.to_owned());
        self.ask(|r| OverlayMsg::Attach(c, s, r)).await
    }

    /// See [`OverlayMsg::Detach`].
    pub async fn detach(&self, container: &ContainerId) -> Result<(), OverlayError> {
        let c = container.clone();
        self.ask(|r| OverlayMsg::Detach(c, r)).await
    }

    /// Every segment held, with holders and attachments.
    pub async fn list(&self) -> Result<Vec<SegmentInfo>, OverlayError> {
        match self.actor.call(OverlayMsg::List, None).await {
            Ok(ractor::rpc::CallResult::Success(list)) => Ok(list),
            _ => Err(OverlayError::Unavailable),
        }
    }

    /// Stops the actor, tearing down whatever is still held.
    pub async fn shutdown(&self) {
        self.actor.stop(None);
        self.actor.get_cell().wait(None).await.ok();
    }

    async fn ask<T: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<Result<T, OverlayError>>) -> OverlayMsg,
    ) -> Result<T, OverlayError> {
        match self.actor.call(msg, None).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            _ => Err(OverlayError::Unavailable),
        }
    }
}
