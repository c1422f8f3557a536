//! One supervised container (or host process) replica.
//!
//! The actor owns one container through the [`Runtime`]. Its `pre_start`
//! does no I/O (ractor awaits it before it links the actor, so a slow pull
//! would hold whoever spawns it): the child's start (see
//! [`ChildSpec::container`](crate::ChildSpec::container)) spawns the actor,
//! then asks it to pull, create and start the container, and counts a
//! failure there as a failed start. Once running, the actor awaits the
//! container's exit (the runtime's `wait`, which is event-driven) and turns
//! it into its own: it fails with an [`ExitReport`] carrying the status
//! (even 0), so the supervisor's policy applies to exactly what happened.
//! When its supervisor stops it, it stops the container with its grace
//! period (SIGTERM, then SIGKILL) and removes it.
//!
//! On failure, hook by hook:
//! - `pre_start`: cannot fail.
//! - `handle` (`Start`): a failed pull, create or start answers the error;
//!   a container created before the failure is removed first. The starter
//!   then unlinks and stops the actor.
//! - `handle` (`Exited`): removes the container and fails the actor with
//!   the exit, except when the child is isolated (`on_panic: isolate` and
//!   the exit is abnormal by its exit-code rules): the container is kept
//!   and handed to the supervisor, which removes it when the child is
//!   restarted, terminated or deleted, or when the supervisor stops.
//! - `handle` (`Probe`, `Notify`, `WatchdogDue`): a liveness or startup
//!   probe that failed, a missed `WATCHDOG=1` or `WATCHDOG=trigger` stops
//!   the container (with its grace) and fails the actor with "liveness
//!   probe failed: ..." (a failed child: restart type, intensity and
//!   back-off apply); readiness verdicts and `STATUS=` go to the
//!   supervisor (see `health.rs`).
//! - `handle_supervisor_evt`: a probe actor that panicked is logged; the
//!   replica runs on without that probe.
//! - `post_stop`: stops the container if it still runs, then removes it. A
//!   runtime error is logged; the drop guard then abandons the container.
//! - killed (no `post_stop`): the state's drop guard calls
//!   [`Runtime::abandon`], which kills every process of the container at
//!   once and removes it in the background. Nothing is leaked when an
//!   ancestor is killed or panics.

mod child;
mod health;

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::task::AbortHandle;

use super::{
    probe_actor::{ProbeMsg, ProbeReport},
    supervisor_actor::{
        ChildExit, ExitReport, Retained,
        decision::{ExitClass, classify},
        report_status,
    },
};
use crate::{
    events::EventBus,
    runtime::{ContainerId, ContainerSpec, ExitStatus, LogQuery, Logs, Runtime, Signal},
    spec::{ExitRules, ProbeKind, ProbeSpec},
};

/// A message to a container actor. The queries are built with
/// [`ContainerMsg::info`], [`ContainerMsg::logs`] and
/// [`ContainerMsg::signal`]; the rest (start, the exit report) only by the
/// actor's own code.
pub struct ContainerMsg(Msg);

// Local only: never sent to another node (the `cluster` feature of
// ractor asks every message type to say so).
impl ractor::Message for ContainerMsg {}

enum Msg {
    /// Pull, create and start the container (sent once, by the starter).
    Start(RpcReplyPort<Result<(), String>>),
    /// The runtime reported the main process's end (sent by the actor's waiter).
    Exited(Result<ExitStatus, String>),
    /// The container's id and name.
    Info(RpcReplyPort<(ContainerId, String)>),
    /// A tail of the container's output.
    Logs(LogQuery, RpcReplyPort<Result<Logs, String>>),
    /// Sends a signal to every process of the container.
    Signal(Signal, RpcReplyPort<Result<(), String>>),
    /// A probe's verdict changed (sent by a probe actor).
    Probe(ProbeReport),
    /// A datagram on the replica's notify socket (`READY=1`, ...).
    Notify(String),
    /// A watchdog period ended (stale unless its generation is current).
    WatchdogDue(u64),
}

impl ContainerMsg {
    /// Asks for the container's id and name.
    pub fn info(reply: RpcReplyPort<(ContainerId, String)>) -> Self {
        Self(Msg::Info(reply))
    }

    /// Asks for a tail of the container's output.
    pub fn logs(query: LogQuery, reply: RpcReplyPort<Result<Logs, String>>) -> Self {
        Self(Msg::Logs(query, reply))
    }

    /// Sends `signal` to every process of the container.
    pub fn signal(signal: Signal, reply: RpcReplyPort<Result<(), String>>) -> Self {
        Self(Msg::Signal(signal, reply))
    }
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
    /// Its health probes.
    pub probes: Arc<Probes>,
    /// Where readiness and probe failures are told: the supervisor, its
    /// name and the event bus (none outside a supervisor).
    pub health_sink: Option<HealthSink>,
}

/// The probes of one replica.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probes {
    /// Alive: failing restarts the replica.
    pub liveness: Option<ProbeSpec>,
    /// Ready: gates the services that depend on it.
    pub readiness: Option<ProbeSpec>,
    /// Started: holds the other two back until it passes once.
    pub startup: Option<ProbeSpec>,
    /// The process speaks sd_notify on its own `NOTIFY_SOCKET`: ready
    /// once it sends `READY=1`.
    pub notify: bool,
    /// With `notify`: `WATCHDOG=1` expected at least this often, else the
    /// replica failed.
    pub watchdog: Option<Duration>,
    /// With `notify`: where the replicas' sockets go, at a path stable
    /// across agents (`<state-dir>/notify`), so that an adopted replica's
    /// `NOTIFY_SOCKET` (and so its spec) is unchanged and its later
    /// messages reach the next agent. `None`: a private directory of this
    /// agent.
    pub notify_dir: Option<std::path::PathBuf>,
}

impl Probes {
    /// True when a replica is not ready as soon as it starts.
    pub fn gate_readiness(&self) -> bool {
        self.readiness.is_some() || self.startup.is_some() || self.notify
    }
}

/// Where a replica's health goes.
#[derive(Clone)]
pub struct HealthSink {
    /// Its supervisor (readiness is reported to it).
    pub supervisor: ActorCell,
    /// The supervisor's name, for events.
    pub service: Arc<str>,
    /// The child's id, for events.
    pub child: Arc<str>,
    /// The tree's event bus.
    pub events: EventBus,
}

impl HealthSink {
    /// Shows `status` beside the child in the tree.
    fn set_status(&self, status: Option<String>) {
        report_status(&self.supervisor, self.child.clone(), status);
    }
}

/// The container actor.
pub struct ContainerActor;

/// The container actor's state.
pub struct ContainerActorState {
    runtime: Arc<dyn Runtime>,
    /// The spec, until the container is created.
    spec: Option<ContainerSpec>,
    name: String,
    grace: Duration,
    isolate: bool,
    exit_rules: ExitRules,
    /// The container, once created.
    container: Option<Owned>,
    probes: Arc<Probes>,
    health_sink: Option<HealthSink>,
    health: health::Health,
    /// Where the container's output goes (it takes marker lines too).
    output: Option<crate::runtime::Output>,
    /// The probe actors that run.
    probing: Vec<(ProbeKind, ActorRef<ProbeMsg>)>,
}

/// A container the actor created.
struct Owned {
    id: ContainerId,
    guard: AbandonGuard,
    waiter: Option<AbortHandle>,
    /// Set when the main process ended by itself.
    exit: Option<ExitStatus>,
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
        Ok(ContainerActorState {
            runtime: args.runtime,
            name: args.spec.name.clone(),
            spec: Some(args.spec),
            grace: args.grace,
            isolate: args.isolate,
            exit_rules: args.exit_rules,
            container: None,
            probes: args.probes,
            health_sink: args.health_sink,
            health: Default::default(),
            output: None,
            probing: Vec::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        ContainerMsg(message): Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            Msg::Start(reply) => {
                let result = state.start(&myself).await;
                let started = result.is_ok();
                let _ = reply.send(result);
                if started {
                    state.started(&myself).await;
                }
                Ok(())
            }
            Msg::Probe(report) => state.probed(&myself, report).await,
            Msg::Notify(text) => state.notified(&myself, &text).await,
            Msg::WatchdogDue(generation) => state.watchdog_due(generation).await,
            Msg::Exited(Ok(status)) => Err(Box::new(state.exited(status).await)),
            Msg::Exited(Err(e)) => {
                // The runtime lost track of the container: make sure it is gone.
                let _ = state.stop().await;
                state.remove().await;
                let id = state.id();
                Err(format!("failed to wait for container {id}: {e}").into())
            }
            Msg::Info(reply) => {
                let _ = reply.send((state.id(), state.name.clone()));
                Ok(())
            }
            Msg::Logs(query, reply) => {
                let logs = match &state.container {
                    Some(c) => state
                        .runtime
                        .logs(&c.id, query)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err(format!("container {} is not created yet", state.name)),
                };
                let _ = reply.send(logs);
                Ok(())
            }
            Msg::Signal(signal, reply) => {
                let result = match &state.container {
                    Some(c) => state
                        .runtime
                        .signal(&c.id, signal)
                        .await
                        .map_err(|e| e.to_string()),
                    None => Err(format!("container {} is not created yet", state.name)),
                };
                let _ = reply.send(result);
                Ok(())
            }
        }
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(who, reason) = event {
            state.probing.retain(|(_, p)| p.get_id() != who.get_id());
            tracing::warn!(container = %state.name, error = %reason, "a probe actor failed; the replica runs on without it");
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for (_, probe) in state.probing.drain(..) {
            probe.stop(None);
        }
        if let Some(c) = &mut state.container {
            if let Some(waiter) = c.waiter.take() {
                waiter.abort();
            }
            if c.exit.is_none() {
                let status = state.stop().await;
                state.mark(&match status {
                    Some(s) => format!("stopped by its supervisor: {s}"),
                    None => "stopped by its supervisor".to_owned(),
                });
            }
        }
        state.remove().await;
        Ok(())
    }
}

impl ContainerActorState {
    /// A line in the container's combined log (services keep one).
    fn mark(&self, line: &str) {
        if let Some(o) = &self.output {
            o.0.mark(line);
        }
    }

    fn id(&self) -> ContainerId {
        self.container
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_else(|| ContainerId(String::new()))
    }

    /// Pulls, creates and starts the container, then waits for its exit in
    /// a task. A container created before a failure is removed.
    async fn start(&mut self, myself: &ActorRef<ContainerMsg>) -> Result<(), String> {
        let Some(mut spec) = self.spec.take() else {
            return Err(format!("container {} was started already", self.name));
        };
        self.prepare_notify(myself, &mut spec)?;
        self.output = spec.output.clone();
        if spec.live_restore {
            // Its output from now on follows the `re-adopted` line.
            if let Some(o) = &self.output {
                o.0.hold();
            }
            match self.runtime.adopt(&spec).await {
                Ok(Some(id)) => {
                    self.adopted();
                    let owned = Owned {
                        guard: AbandonGuard::new(self.runtime.clone(), id.clone()),
                        id,
                        waiter: None,
                        exit: None,
                    };
                    self.watch(myself, owned, "re-adopted").await;
                    return Ok(());
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(container = %self.name, error = %e, "failed to adopt the container a previous agent left; starting a new one")
                }
            }
        }
        self.runtime
            .pull_image(&spec)
            .await
            .map_err(|e| e.to_string())?;
        let id = self
            .runtime
            .create(&spec)
            .await
            .map_err(|e| e.to_string())?;
        let mut owned = Owned {
            guard: AbandonGuard::new(self.runtime.clone(), id.clone()),
            id,
            waiter: None,
            exit: None,
        };
        // Its first output follows its `started` line.
        if let Some(o) = &self.output {
            o.0.hold();
        }
        if let Err(e) = self.runtime.start(&owned.id).await {
            self.mark(&format!("failed to start: {e}"));
            if self.runtime.remove(&owned.id).await.is_ok() {
                owned.guard.disarm();
            }
            return Err(e.to_string());
        }
        self.watch(myself, owned, "started").await;
        Ok(())
    }

    /// Waits for the exit of the container `owned` (started, or adopted
    /// from a previous agent) in a task, and marks it `how` in its log.
    async fn watch(&mut self, myself: &ActorRef<ContainerMsg>, mut owned: Owned, how: &str) {
        let id_for_mark = owned.id.clone();
        let (runtime, id, myself) = (self.runtime.clone(), owned.id.clone(), myself.clone());
        let waiter = tokio::spawn(async move {
            let result = runtime.wait(&id).await.map_err(|e| e.to_string());
            let _ = myself.cast(ContainerMsg(Msg::Exited(result)));
        });
        owned.waiter = Some(waiter.abort_handle());
        self.container = Some(owned);
        if self.output.is_some() {
            self.mark(&match self.runtime.pid(&id_for_mark).await {
                Ok(Some(pid)) => format!("{how} {} (pid {pid})", self.name),
                _ => format!("{how} {}", self.name),
            });
        }
    }

    /// The main process ended: the report the actor fails with. An
    /// isolated child keeps its container; otherwise it is removed first.
    async fn exited(&mut self, status: ExitStatus) -> ExitReport {
        self.close_notify();
        self.mark(&format!("exited: {status}"));
        let id = self.id();
        if let Some(c) = &mut self.container {
            c.exit = Some(status);
            c.waiter = None;
        }
        let oom_killed = !status.success() && self.runtime.oom_killed(&id).await.unwrap_or(false);
        let exit = ChildExit::Exited {
            status,
            container: Some(id.0.clone()),
            oom_killed,
        };
        let abnormal = classify(&exit, &self.exit_rules) == ExitClass::Abnormal;
        if self.isolate && abnormal {
            if let Some(c) = &mut self.container {
                c.guard.disarm();
            }
            return ExitReport {
                exit,
                retained: Some(Box::new(RetainedContainer::new(self.runtime.clone(), id))),
            };
        }
        self.remove().await;
        ExitReport {
            exit,
            retained: None,
        }
    }

    /// Stops the container with its grace; how it ended, when known.
    async fn stop(&mut self) -> Option<ExitStatus> {
        let c = self.container.as_ref()?;
        match self.runtime.stop(&c.id, self.grace).await {
            Ok(outcome) => {
                if outcome.killed {
                    tracing::info!(
                        container = %c.id, grace = ?self.grace, status = %outcome.status,
                        "container did not stop within its grace period and was killed"
                    );
                }
                Some(outcome.status)
            }
            Err(e) => {
                tracing::warn!(container = %c.id, error = %e, "failed to stop container");
                None
            }
        }
    }

    /// Removes the container (once; an isolated one is the supervisor's).
    async fn remove(&mut self) {
        let Some(c) = &mut self.container else {
            return;
        };
        if !c.guard.armed {
            return;
        }
        match self.runtime.remove(&c.id).await {
            Ok(()) => c.guard.disarm(),
            Err(e) => {
                tracing::warn!(container = %c.id, error = %e, "failed to remove container; abandoning it")
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
