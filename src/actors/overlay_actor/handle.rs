//! [`Overlay`]: the cheap, cloneable handle the rest of the node holds.

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use std::time::Duration;

use super::{
    AttachRequest, AttachmentInfo, OverlayActor, OverlayArgs, OverlayBackend, OverlayConfig,
    OverlayError, OverlayMemory, OverlayMsg, SegmentInfo, SegmentKey,
};
use crate::actors::supervisor_actor::{ChildContext, ChildSpec};
use crate::{
    part::{Part, PartError},
    runtime::ContainerId,
};

/// Longest a query (list, attachments) waits for an answer.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest a change (netlink work, done one request at a time) waits.
const CHANGE_TIMEOUT: Duration = Duration::from_secs(60);

/// A cheap handle to the overlay actor; it follows the actor's restarts
/// when the actor is a supervised node part.
#[derive(Clone)]
pub struct Overlay {
    actor: Part<OverlayMsg>,
    networked: bool,
}

impl From<PartError> for OverlayError {
    fn from(e: PartError) -> Self {
        match e {
            PartError::Restarting(_) => OverlayError::Restarting,
            PartError::Timeout { .. } => OverlayError::Unavailable,
        }
    }
}

impl fmt::Debug for Overlay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overlay")
            .field("networked", &self.networked)
            .finish_non_exhaustive()
    }
}

impl Overlay {
    /// Spawns an overlay actor over `backend` with the default
    /// configuration and no state file.
    pub async fn start(backend: impl OverlayBackend) -> Result<Self, ActorProcessingErr> {
        Self::start_with(backend, OverlayConfig::default()).await
    }

    /// Spawns an overlay actor over `backend` with `config` (removing what
    /// a previous node left first).
    pub async fn start_with(
        backend: impl OverlayBackend,
        config: OverlayConfig,
    ) -> Result<Self, ActorProcessingErr> {
        let networked = backend.networked();
        let (actor, _) = OverlayActor::spawn(
            None,
            OverlayActor,
            OverlayArgs {
                backend: Box::new(backend),
                config,
                memory: None,
            },
        )
        .await?;
        Ok(Self::from_ref(actor, networked))
    }

    /// The overlay actor as a supervised child `id`, and the handle that
    /// follows its restarts. Each start makes its backend with `backend`;
    /// the first start cleans up what a previous node left (as
    /// [`Overlay::start_with`]), a restart adopts the failed actor's live
    /// segments and attachments instead.
    pub fn supervised<F>(
        id: impl Into<String>,
        backend: F,
        networked: bool,
        config: OverlayConfig,
    ) -> (ChildSpec, Self)
    where
        F: Fn() -> Result<Box<dyn OverlayBackend>, String> + Send + Sync + 'static,
    {
        let part: Part<OverlayMsg> = Part::new("overlay actor");
        let memory = OverlayMemory::default();
        let handle = part.clone();
        let backend = std::sync::Arc::new(backend);
        let spec = ChildSpec::new(id, move |ctx: ChildContext| {
            let (part, memory, config, backend) = (
                handle.clone(),
                memory.clone(),
                config.clone(),
                backend.clone(),
            );
            async move {
                let args = OverlayArgs {
                    backend: backend()?,
                    config,
                    memory: Some(memory),
                };
                let (actor, _) =
                    Actor::spawn_linked(None, OverlayActor, args, ctx.supervisor).await?;
                part.set(actor.clone());
                Ok(actor.get_cell())
            }
        });
        (spec, Self::from_part(part, networked))
    }

    /// A handle to a running overlay actor.
    pub fn from_ref(actor: ActorRef<OverlayMsg>, networked: bool) -> Self {
        Self {
            actor: Part::fixed("overlay actor", actor),
            networked,
        }
    }

    /// A handle to the overlay actor of a node part: it resolves the
    /// actor `part` holds now.
    pub fn from_part(part: Part<OverlayMsg>, networked: bool) -> Self {
        Self {
            actor: part,
            networked,
        }
    }

    /// The actor (the newest one; it may have stopped).
    pub fn actor(&self) -> Option<ActorRef<OverlayMsg>> {
        self.actor.last()
    }

    /// The handle that follows the actor's restarts.
    pub fn part(&self) -> &Part<OverlayMsg> {
        &self.actor
    }

    /// Sends `msg` without waiting (lost while the actor restarts).
    pub fn cast(&self, msg: OverlayMsg) {
        let _ = self.actor.cast(msg);
    }

    /// Whether containers get namespaces and addresses.
    pub fn networked(&self) -> bool {
        self.networked
    }

    /// See [`OverlayMsg::Acquire`].
    pub async fn acquire(&self, segment: impl Into<SegmentKey>) -> Result<(), OverlayError> {
        self.acquire_for(segment, true).await
    }

    /// See [`OverlayMsg::Acquire`]: `networked` false for a holder whose
    /// container runs on the node's network (no bridge is made for it).
    pub async fn acquire_for(
        &self,
        segment: impl Into<SegmentKey>,
        networked: bool,
    ) -> Result<(), OverlayError> {
        let key = segment.into();
        self.ask(|r| OverlayMsg::Acquire(key, networked, r)).await
    }

    /// See [`OverlayMsg::Release`].
    pub async fn release(&self, segment: impl Into<SegmentKey>) -> Result<(), OverlayError> {
        let key = segment.into();
        self.ask(|r| OverlayMsg::Release(key, r)).await
    }

    /// See [`OverlayMsg::Prepare`].
    pub async fn prepare(&self) -> Result<Option<PathBuf>, OverlayError> {
        self.ask(OverlayMsg::Prepare).await
    }

    /// See [`OverlayMsg::Discard`].
    pub async fn discard(&self, netns: &Path) -> Result<(), OverlayError> {
        let p = netns.to_owned();
        self.ask(|r| OverlayMsg::Discard(p, r)).await
    }

    /// Attaches `container` to `segment` without a namespace (bookkeeping
    /// only); see [`Overlay::attach_with`].
    pub async fn attach(
        &self,
        container: &ContainerId,
        segment: impl Into<SegmentKey>,
    ) -> Result<Option<IpAddr>, OverlayError> {
        self.attach_with(AttachRequest {
            container: container.clone(),
            segment: segment.into(),
            netns: None,
            dns_search: Vec::new(),
        })
        .await
        .map(|a| a.address)
    }

    /// See [`OverlayMsg::Attach`].
    pub async fn attach_with(&self, req: AttachRequest) -> Result<AttachmentInfo, OverlayError> {
        self.ask(|r| OverlayMsg::Attach(req, r)).await
    }

    /// See [`OverlayMsg::Detach`].
    pub async fn detach(&self, container: &ContainerId) -> Result<(), OverlayError> {
        let c = container.clone();
        self.ask(|r| OverlayMsg::Detach(c, r)).await
    }

    /// See [`OverlayMsg::Leave`].
    pub async fn leave(&self, container: &ContainerId) -> Result<(), OverlayError> {
        let c = container.clone();
        self.ask(|r| OverlayMsg::Leave(c, r)).await
    }

    /// Every segment, with holders and attachments.
    pub async fn list(&self) -> Result<Vec<SegmentInfo>, OverlayError> {
        Ok(self
            .actor
            .call(OverlayMsg::List, Some(QUERY_TIMEOUT))
            .await?)
    }

    /// Every attachment, failed detaches included.
    pub async fn attachments(&self) -> Result<Vec<AttachmentInfo>, OverlayError> {
        Ok(self
            .actor
            .call(OverlayMsg::Attachments, Some(QUERY_TIMEOUT))
            .await?)
    }

    /// Stops the actor, tearing down whatever is still held.
    pub async fn shutdown(&self) {
        if let Some(actor) = self.actor.last() {
            actor.stop(None);
            actor.get_cell().wait(None).await.ok();
        }
    }

    async fn ask<T: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<Result<T, OverlayError>>) -> OverlayMsg,
    ) -> Result<T, OverlayError> {
        self.actor.call(msg, Some(CHANGE_TIMEOUT)).await?
    }
}
