//! [`Overlay`]: the cheap, cloneable handle the rest of the node holds.

use std::{
    fmt,
    net::IpAddr,
    path::{Path, PathBuf},
};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};

use super::{
    AttachRequest, AttachmentInfo, OverlayActor, OverlayArgs, OverlayBackend, OverlayConfig,
    OverlayError, OverlayMsg, SegmentInfo, SegmentKey,
};
use crate::runtime::ContainerId;

/// A cheap handle to the overlay actor.
#[derive(Clone)]
pub struct Overlay {
    actor: ActorRef<OverlayMsg>,
    networked: bool,
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
            },
        )
        .await?;
        Ok(Self { actor, networked })
    }

    /// A handle to a running overlay actor.
    pub fn from_ref(actor: ActorRef<OverlayMsg>, networked: bool) -> Self {
        Self { actor, networked }
    }

    /// The actor.
    pub fn actor(&self) -> &ActorRef<OverlayMsg> {
        &self.actor
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
        match self.actor.call(OverlayMsg::List, None).await {
            Ok(ractor::rpc::CallResult::Success(list)) => Ok(list),
            _ => Err(OverlayError::Unavailable),
        }
    }

    /// Every attachment, failed detaches included.
    pub async fn attachments(&self) -> Result<Vec<AttachmentInfo>, OverlayError> {
        match self.actor.call(OverlayMsg::Attachments, None).await {
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
