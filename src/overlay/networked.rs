//! [`Networked`]: a runtime wrapper that gives a service's containers their
//! overlay network, so supervised replicas get what job executions get
//! without the supervisor or the container actor knowing about networks.
//!
//! `create` prepares a namespace, creates the container in it, acquires the
//! service's segment and attaches the container, all before `create`
//! returns, so the container actor's `start` never runs a process without
//! its network. `remove` (and `abandon`) detach it and release the segment.
//! Every restart is a new container with a new namespace and address.
//!
//! An overlay failure fails `create` when the service's `network.required`
//! is true; otherwise the container is created again on the node's network
//! and a warning is logged (best effort).

use std::{path::PathBuf, sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::{
    actors::overlay_actor::{AttachRequest, Overlay, OverlayMsg, SegmentKey},
    runtime::{
        Cause, ContainerId, ContainerSpec, ContainerState, ExitStatus, LogQuery, Logs, Op, Runtime,
        RuntimeError, Signal, StopOutcome,
    },
    spec::NetworkSpec,
};

/// A runtime whose containers join one overlay segment.
pub struct Networked {
    inner: Arc<dyn Runtime>,
    overlay: Overlay,
    key: SegmentKey,
    network: NetworkSpec,
}

impl Networked {
    /// Containers of `inner` join `key` per `network`.
    pub fn new(
        inner: Arc<dyn Runtime>,
        overlay: Overlay,
        key: SegmentKey,
        network: NetworkSpec,
    ) -> Self {
        Self {
            inner,
            overlay,
            key,
            network,
        }
    }

    /// An overlay step failed for `spec`: an error when required, else
    /// `Ok` after a warning.
    fn failed(&self, spec: &ContainerSpec, message: String) -> Result<(), RuntimeError> {
        if self.network.required {
            return Err(RuntimeError::new(
                Op::Create,
                &spec.name,
                Cause::Network(message),
            ));
        }
        tracing::warn!(container = %spec.name, segment = %self.key, %message, "overlay failed; running on the node's network");
        Ok(())
    }

    async fn undo(&self, id: &ContainerId, netns: Option<&PathBuf>) {
        let _ = self.inner.remove(id).await;
        if let Some(p) = netns {
            let _ = self.overlay.discard(p).await;
        }
    }

    /// The best-effort fallback: the container again, without a namespace.
    async fn plain(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        let mut spec = spec.clone();
        spec.netns = None;
        spec.dns_search.clear();
        self.inner.create(&spec).await
    }
}

#[async_trait]
impl Runtime for Networked {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    async fn pull_image(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.inner.pull_image(spec).await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        let mut spec = spec.clone();
        let netns = match self.overlay.prepare().await {
            Ok(p) => p,
            Err(e) => {
                self.failed(&spec, e.to_string())?;
                return self.plain(&spec).await;
            }
        };
        spec.netns = netns.clone();
        spec.dns_search = self.network.dns_search.clone();
        let id = match self.inner.create(&spec).await {
            Ok(id) => id,
            Err(e) => {
                if let Some(p) = &netns {
                    let _ = self.overlay.discard(p).await;
                }
                return Err(e);
            }
        };
        if let Err(e) = self.overlay.acquire_for(&self.key, netns.is_some()).await {
            self.undo(&id, netns.as_ref()).await;
            self.failed(&spec, e.to_string())?;
            return self.plain(&spec).await;
        }
        let request = AttachRequest {
            container: id.clone(),
            segment: self.key.clone(),
            netns: netns.clone(),
            dns_search: spec.dns_search.clone(),
        };
        if let Err(e) = self.overlay.attach_with(request).await {
            let _ = self.overlay.release(&self.key).await;
            self.undo(&id, netns.as_ref()).await;
            self.failed(&spec, e.to_string())?;
            return self.plain(&spec).await;
        }
        Ok(id)
    }

    async fn start(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.inner.start(id).await
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        self.inner.stop(id, grace).await
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let removed = self.inner.remove(id).await;
        if removed.is_ok()
            && let Err(e) = self.overlay.leave(id).await
        {
            tracing::warn!(container = %id, error = %e, "failed to detach a service container (retried)");
        }
        removed
    }

    async fn wait(&self, id: &ContainerId) -> Result<ExitStatus, RuntimeError> {
        self.inner.wait(id).await
    }

    async fn state(&self, id: &ContainerId) -> Result<ContainerState, RuntimeError> {
        self.inner.state(id).await
    }

    async fn pid(&self, id: &ContainerId) -> Result<Option<u32>, RuntimeError> {
        self.inner.pid(id).await
    }

    async fn signal(&self, id: &ContainerId, signal: Signal) -> Result<(), RuntimeError> {
        self.inner.signal(id, signal).await
    }

    async fn logs(&self, id: &ContainerId, query: LogQuery) -> Result<Logs, RuntimeError> {
        self.inner.logs(id, query).await
    }

    async fn exec(
        &self,
        id: &ContainerId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<crate::runtime::ExecOutput, RuntimeError> {
        self.inner.exec(id, argv, timeout).await
    }

    async fn oom_killed(&self, id: &ContainerId) -> Result<bool, RuntimeError> {
        self.inner.oom_killed(id).await
    }

    /// The address the overlay gave the container.
    async fn address(&self, id: &ContainerId) -> Result<Option<std::net::IpAddr>, RuntimeError> {
        match self.overlay.attachments().await {
            Ok(all) => Ok(all
                .into_iter()
                .find(|a| a.container == *id)
                .and_then(|a| a.address)),
            Err(e) => Err(RuntimeError::new(
                crate::runtime::Op::State,
                id,
                crate::runtime::Cause::Network(e.to_string()),
            )),
        }
    }

    fn abandon(&self, id: &ContainerId) {
        self.inner.abandon(id);
        let (tx, _) = tokio::sync::oneshot::channel();
        self.overlay.cast(OverlayMsg::Leave(id.clone(), tx.into()));
    }
}
