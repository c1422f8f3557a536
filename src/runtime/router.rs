//! One runtime in front of two: the node's default (`arbor agent --runtime`)
//! and the other, picked per container by its spec's `runtime:` field.
//!
//! Supervisors, jobs and the API hold one `Arc<dyn Runtime>`; this keeps it
//! that way when a node runs both host processes and OCI containers. A
//! container goes to `spec.runtime` when given, else to the OCI runtime when
//! it names an image and the node has one, else to the default. Which
//! runtime owns each container id is remembered (a table owned by one task)
//! so every later call goes to the right one.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use async_trait::async_trait;

use super::{
    Cause, ContainerId, ContainerSpec, ContainerState, ExitStatus, LogQuery, Logs, Op, Runtime,
    RuntimeError, RuntimeKind, Signal, StopOutcome,
};
use crate::{
    owned::Owned,
    spec::{SpecError, SpecErrors},
};

/// Routes each container to the process or the OCI runtime.
#[derive(Clone)]
pub struct RuntimeRouter {
    default: RuntimeKind,
    process: Option<Arc<dyn Runtime>>,
    oci: Result<Arc<dyn Runtime>, String>,
    owners: Owned<BTreeMap<ContainerId, RuntimeKind>>,
}

impl RuntimeRouter {
    /// A router whose default is `default`. `oci` is the OCI runtime, or why
    /// the node has none (said to whoever asks for it). Must be called inside
    /// a tokio runtime.
    pub fn new(
        default: RuntimeKind,
        process: Option<Arc<dyn Runtime>>,
        oci: Result<Arc<dyn Runtime>, String>,
    ) -> Self {
        Self {
            default,
            process,
            oci,
            owners: Owned::spawn(BTreeMap::new()),
        }
    }

    /// The kind that runs `spec`.
    pub fn kind_for(&self, spec: &ContainerSpec) -> RuntimeKind {
        spec.runtime
            .unwrap_or(if spec.image.is_some() && self.oci.is_ok() {
                RuntimeKind::Oci
            } else {
                self.default
            })
    }

    fn get(&self, kind: RuntimeKind) -> Result<&Arc<dyn Runtime>, String> {
        match kind {
            RuntimeKind::Oci => self.oci.as_ref().map_err(Clone::clone),
            RuntimeKind::Process => self
                .process
                .as_ref()
                .ok_or_else(|| "this node has no process runtime".to_owned()),
        }
    }

    fn pick(
        &self,
        op: Op,
        spec: &ContainerSpec,
    ) -> Result<(RuntimeKind, &Arc<dyn Runtime>), RuntimeError> {
        let kind = self.kind_for(spec);
        self.get(kind).map(|rt| (kind, rt)).map_err(|why| {
            RuntimeError::new(
                op,
                &spec.name,
                Cause::Spec(SpecErrors::from(SpecError::new(
                    "runtime",
                    kind,
                    format!("the {kind} runtime is not available on this node: {why}"),
                ))),
            )
        })
    }

    async fn owner(&self, op: Op, id: &ContainerId) -> Result<Arc<dyn Runtime>, RuntimeError> {
        let key = id.clone();
        let kind = self
            .owners
            .call(move |t| t.get(&key).copied())
            .await
            .ok_or_else(|| RuntimeError::new(op, id, Cause::Closed))?
            .ok_or_else(|| RuntimeError::new(op, id, Cause::NotFound))?;
        self.get(kind)
            .cloned()
            .map_err(|_| RuntimeError::new(op, id, Cause::NotFound))
    }
}

#[async_trait]
impl Runtime for RuntimeRouter {
    fn name(&self) -> &'static str {
        match self.get(self.default) {
            Ok(rt) => rt.name(),
            Err(_) => "router",
        }
    }

    async fn pull_image(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        self.pick(Op::Pull, spec)?.1.pull_image(spec).await
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        let (kind, rt) = self.pick(Op::Create, spec)?;
        let id = rt.create(spec).await?;
        let key = id.clone();
        self.owners.call(move |t| t.insert(key, kind)).await;
        Ok(id)
    }

    async fn start(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.owner(Op::Start, id).await?.start(id).await
    }

    async fn adopt(&self, spec: &ContainerSpec) -> Result<Option<ContainerId>, RuntimeError> {
        let (kind, rt) = self.pick(Op::Create, spec)?;
        let Some(id) = rt.adopt(spec).await? else {
            return Ok(None);
        };
        let key = id.clone();
        self.owners.call(move |t| t.insert(key, kind)).await;
        Ok(Some(id))
    }

    async fn is_kept(&self, id: &ContainerId) -> bool {
        match self.owner(Op::State, id).await {
            Ok(rt) => rt.is_kept(id).await,
            Err(_) => false,
        }
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        self.owner(Op::Stop, id).await?.stop(id, grace).await
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        self.owner(Op::Remove, id).await?.remove(id).await?;
        let key = id.clone();
        self.owners.cast(move |t| {
            t.remove(&key);
        });
        Ok(())
    }

    async fn wait(&self, id: &ContainerId) -> Result<ExitStatus, RuntimeError> {
        self.owner(Op::Wait, id).await?.wait(id).await
    }

    async fn state(&self, id: &ContainerId) -> Result<ContainerState, RuntimeError> {
        self.owner(Op::State, id).await?.state(id).await
    }

    async fn pid(&self, id: &ContainerId) -> Result<Option<u32>, RuntimeError> {
        self.owner(Op::Pid, id).await?.pid(id).await
    }

    async fn signal(&self, id: &ContainerId, signal: Signal) -> Result<(), RuntimeError> {
        self.owner(Op::Signal, id).await?.signal(id, signal).await
    }

    async fn logs(&self, id: &ContainerId, query: LogQuery) -> Result<Logs, RuntimeError> {
        self.owner(Op::Logs, id).await?.logs(id, query).await
    }

    async fn exec(
        &self,
        id: &ContainerId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<super::ExecOutput, RuntimeError> {
        self.owner(Op::Exec, id)
            .await?
            .exec(id, argv, timeout)
            .await
    }

    async fn address(&self, id: &ContainerId) -> Result<Option<std::net::IpAddr>, RuntimeError> {
        self.owner(Op::State, id).await?.address(id).await
    }

    async fn oom_killed(&self, id: &ContainerId) -> Result<bool, RuntimeError> {
        self.owner(Op::State, id).await?.oom_killed(id).await
    }

    fn abandon(&self, id: &ContainerId) {
        let key = id.clone();
        let (process, oci) = (self.process.clone(), self.oci.clone().ok());
        self.owners.cast(move |t| {
            let rt = match t.remove(&key) {
                Some(RuntimeKind::Process) => process,
                Some(RuntimeKind::Oci) => oci,
                None => None,
            };
            if let Some(rt) = rt {
                rt.abandon(&key);
            }
        });
    }
}
