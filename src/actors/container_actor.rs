//! One supervised container (or host process) replica.
//!
//! The actor owns one container through the [`Runtime`]: it creates and starts
//! it when it starts, awaits its exit (the runtime's `wait`, which is
//! event-driven) and turns that exit into its own: a clean exit (code 0)
//! stops the actor normally, anything else fails it with a [`ContainerExit`]
//! carrying the status, so the supervisor's policy applies. When its
//! supervisor stops it, it stops the container with its grace period
//! (SIGTERM, then SIGKILL) and removes it.
//!
//! On failure, hook by hook:
//! - `pre_start`: a failed pull, create or start fails the spawn (the
//!   supervisor counts a failed start); a container created before the
//!   failure is removed first.
//! - `handle` (`Exited`): an abnormal exit removes the container and fails
//!   the actor, except when the child is isolated (`on_panic: isolate` and
//!   the exit is abnormal by its exit-code rules): the container is kept and
//!   handed to the supervisor, which removes it when the child is restarted
//!   or deleted, or when the supervisor stops.
//! - `post_stop`: stops the container if it still runs, then removes it. A
//!   runtime error is logged; the drop guard then abandons the container.
//! - killed (no `post_stop`): the state's drop guard calls
//!   [`Runtime::abandon`], which kills every process of the container at
//!   once and removes it in the background. Nothing is leaked when an
//!   ancestor is killed or panics.

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::AbortHandle;

use super::supervisor_actor::{
    ChildContext, ChildExit, ContainerExit, Retained,
    decision::{ExitClass, classify},
};
use crate::{
    runtime::{ContainerId, ContainerSpec, ExitStatus, LogQuery, Logs, Runtime, Signal},
    spec::{ExitRules, PanicAction, Shutdown},
};

/// Messages a container actor handles.
pub enum ContainerMsg {
    /// The runtime reported the main process's end (sent by the actor's waiter).
    Exited(Result<ExitStatus, String>),
    /// The container's id and name.
    Info(RpcReplyPort<(ContainerId, String)>),
    /// A tail of the container's output.
    Logs(LogQuery, RpcReplyPort<Result<Logs, String>>),
    /// Sends a signal to every process of the container.
    Signal(Signal, RpcReplyPort<Result<(), String>>),
}

/// What a container actor is spawned with.
pub struct ContainerArgs {
    /// The runtime that runs the container.
    pub runtime: Arc<dyn Runtime>,
    /// What to run.
    pub spec: ContainerSpec,
    /// SIGTERM-to-SIGKILL grace when stopped (`Duration::MAX`: wait forever).
    pub grace: Duration,
    /// Keep the container after an abnormal exit (the child is isolated).
    pub isolate: bool,
    /// Exit-code rules deciding what "abnormal" means.
    pub exit_rules: ExitRules,
}

/// The container actor.
pub struct ContainerActor;

/// The container actor's state; the supervisor reads the exit status out of
/// it when the actor stops normally.
pub struct ContainerActorState {
    runtime: Arc<dyn Runtime>,
    id: ContainerId,
    name: String,
    grace: Duration,
    isolate: bool,
    exit_rules: ExitRules,
    /// Set when the main process ended by itself.
    exit: Option<ExitStatus>,
    guard: AbandonGuard,
    waiter: Option<AbortHandle>,
}

impl ContainerActorState {
    /// How the main process ended by itself, and the container.
    pub(crate) fn exit(&self) -> Option<(ExitStatus, ContainerId)> {
        self.exit.map(|s| (s, self.id.clone()))
    }
}

impl Actor for ContainerActor {
    type Msg = ContainerMsg;
    type State = ContainerActorState;
    type Arguments = ContainerArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: ContainerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let ContainerArgs {
            runtime,
            spec,
            grace,
            isolate,
            exit_rules,
        } = args;
        runtime.pull_image(&spec).await?;
        let id = runtime.create(&spec).await?;
        let mut guard = AbandonGuard::new(runtime.clone(), id.clone());
        if let Err(e) = runtime.start(&id).await {
            if runtime.remove(&id).await.is_ok() {
                guard.disarm();
            }
            return Err(Box::new(e));
        }
        Ok(ContainerActorState {
            runtime,
            id,
            name: spec.name,
            grace,
            isolate,
            exit_rules,
            exit: None,
            guard,
            waiter: None,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let runtime = state.runtime.clone();
        let id = state.id.clone();
        let waiter = tokio::spawn(async move {
            let result = runtime.wait(&id).await.map_err(|e| e.to_string());
            let _ = myself.cast(ContainerMsg::Exited(result));
        });
        state.waiter = Some(waiter.abort_handle());
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ContainerMsg::Exited(Ok(status)) => {
                state.exit = Some(status);
                state.waiter = None;
                let exit = ChildExit::Exited {
                    status,
                    container: Some(state.id.clone()),
                };
                let abnormal = classify(&exit, &state.exit_rules) == ExitClass::Abnormal;
                if state.isolate && abnormal {
                    state.guard.disarm();
                    return Err(Box::new(ContainerExit {
                        status,
                        container: state.id.clone(),
                        retained: Some(Box::new(RetainedContainer::new(
                            state.runtime.clone(),
                            state.id.clone(),
                        ))),
                    }));
                }
                if status.success() {
                    // post_stop removes the container; the supervisor reads
                    // the status from the final state.
                    myself.stop(Some(format!("container exited: {status}")));
                    return Ok(());
                }
                state.remove().await;
                Err(Box::new(ContainerExit {
                    status,
                    container: state.id.clone(),
                    retained: None,
                }))
            }
            ContainerMsg::Exited(Err(e)) => {
                // The runtime lost track of the container: make sure it is gone.
                state.stop().await;
                state.remove().await;
                Err(format!("failed to wait for container {}: {e}", state.id).into())
            }
            ContainerMsg::Info(reply) => {
                let _ = reply.send((state.id.clone(), state.name.clone()));
                Ok(())
            }
            ContainerMsg::Logs(query, reply) => {
                let logs = state.runtime.logs(&state.id, query).await;
                let _ = reply.send(logs.map_err(|e| e.to_string()));
                Ok(())
            }
            ContainerMsg::Signal(signal, reply) => {
                let result = state.runtime.signal(&state.id, signal).await;
                let _ = reply.send(result.map_err(|e| e.to_string()));
                Ok(())
            }
        }
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(waiter) = state.waiter.take() {
            waiter.abort();
        }
        if state.exit.is_none() {
            state.stop().await;
        }
        state.remove().await;
        Ok(())
    }
}

impl ContainerActorState {
    async fn stop(&mut self) {
        match self.runtime.stop(&self.id, self.grace).await {
            Ok(outcome) if outcome.killed => tracing::info!(
                container = %self.id, grace = ?self.grace, status = %outcome.status,
                "container did not stop within its grace period and was killed"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(container = %self.id, error = %e, "failed to stop container"),
        }
    }

    async fn remove(&mut self) {
        match self.runtime.remove(&self.id).await {
            Ok(()) => self.guard.disarm(),
            Err(e) => {
                tracing::warn!(container = %self.id, error = %e, "failed to remove container; abandoning it")
            }
        }
    }
}

/// Abandons the container (kill now, remove in the background) when the
/// actor's state is dropped without a clean stop, e.g. when ractor kills it.
struct AbandonGuard {
    runtime: Arc<dyn Runtime>,
    id: ContainerId,
    armed: bool,
}

impl AbandonGuard {
    fn new(runtime: Arc<dyn Runtime>, id: ContainerId) -> Self {
        Self {
            runtime,
            id,
            armed: true,
        }
    }

    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for AbandonGuard {
    fn drop(&mut self) {
        if self.armed {
            self.runtime.abandon(&self.id);
        }
    }
}

/// An isolated container kept for debugging. Released (removed) by the
/// supervisor; dropped unreleased, it is abandoned (removed in the background).
struct RetainedContainer {
    guard: AbandonGuard,
}

impl RetainedContainer {
    fn new(runtime: Arc<dyn Runtime>, id: ContainerId) -> Self {
        Self {
            guard: AbandonGuard::new(runtime, id),
        }
    }
}

impl Retained for RetainedContainer {
    fn release(mut self: Box<Self>) -> BoxFuture<'static, ()> {
        Box::pin(async move {
            let (runtime, id) = (self.guard.runtime.clone(), self.guard.id.clone());
            match runtime.remove(&id).await {
                Ok(()) => self.guard.disarm(),
                Err(e) => {
                    tracing::warn!(container = %id, error = %e, "failed to remove isolated container")
                }
            }
        })
    }
}

/// Spawns a container actor for a supervised child, linked to `ctx.supervisor`.
pub(crate) async fn spawn_for_child(
    ctx: ChildContext,
    runtime: Arc<dyn Runtime>,
    mut spec: ContainerSpec,
) -> Result<ractor::ActorCell, ActorProcessingErr> {
    let grace = match ctx.shutdown {
        Shutdown::BrutalKill => Duration::ZERO,
        Shutdown::Timeout(d) => d,
        Shutdown::Infinity => Duration::MAX,
    };
    spec.labels
        .entry("service".into())
        .or_insert_with(|| ctx.service.to_string());
    spec.labels
        .entry("child".into())
        .or_insert_with(|| ctx.id.to_string());
    let args = ContainerArgs {
        runtime,
        spec,
        grace,
        isolate: ctx.on_panic == PanicAction::Isolate,
        exit_rules: ctx.exit_rules,
    };
    let (actor, _) = ContainerActor::spawn_linked(None, ContainerActor, args, ctx.supervisor)
        .await
        .map_err(super::supervisor_actor::spawn_reason)?;
    Ok(actor.get_cell())
}
