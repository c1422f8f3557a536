//! The deployment actor: the node part that owns the applied spec (the
//! services in start order and the deployment they came from) and applies
//! changes to it: diff, stop what was removed or changed, scale in place
//! what changed only in `replicas`, start what is new in dependency order,
//! register and remove jobs; and, at shutdown, stop the services in
//! dependency waves.
//!
//! One actor applies one change at a time (a deploy, a reload, a service
//! started or stopped from code), which is what serializes them; it never
//! holds a lock. What it applied last is published ([`DeploymentMemory`])
//! after every change, so readers never wait behind a deploy and a
//! restarted deployment actor takes it over.
//!
//! Failure, hook by hook:
//! - `pre_start`: never fails. A restarted actor (the node kept running)
//!   adopts the published deployment and re-reads the start order from the
//!   root supervisor: the services that run are what runs.
//! - `handle`: a failed step is an error to the caller, never to the actor.
//!   A panic (a bug, or an injected fault) fails the actor; the root
//!   restarts it and the caller gets `restarting`.
//! - `post_stop`: nothing to release.

use std::{collections::BTreeMap, sync::Arc};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;

use crate::{
    actors::{
        executor_actor::Executor,
        overlay_actor::Overlay,
        supervisor_actor::{ChildContext, ChildSpec, SupervisorRef, SupervisorSpec},
    },
    error::Error,
    node::{DeployReport, PART_PREFIX},
    part::Part,
    runtime::Runtime,
    spec::{Deployment, PanicAction, SpecErrors, StartTimeoutAction},
};

/// Requests to the deployment actor (the [`crate::Node`] facade sends them).
pub enum DeploymentMsg {
    /// Applies a deployment (validated first).
    Deploy(Box<Deployment>, RpcReplyPort<Result<DeployReport, Error>>),
    /// Starts a service from code, after the ones already running.
    StartService(String, Box<SupervisorSpec>, RpcReplyPort<Result<(), Error>>),
    /// Stops a service and forgets it.
    StopService(String, RpcReplyPort<Result<(), Error>>),
    /// Stops every service in dependency waves (node shutdown).
    StopAll(RpcReplyPort<()>),
    /// An operator stops a service: it stays stopped (across reloads)
    /// until started.
    Halt(String, RpcReplyPort<Result<(), Error>>),
    /// An operator starts a stopped service (a running one is left as is).
    Resume(String, RpcReplyPort<Result<(), Error>>),
    /// An operator sets a deployed service's replicas (until the next
    /// deploy of a spec says otherwise).
    Scale(String, usize, RpcReplyPort<Result<(), Error>>),
    /// The cluster's placement of cluster-placed services: how many
    /// replicas of each this node runs, under an epoch that must be newer
    /// than the last one applied.
    Place(
        u64,
        BTreeMap<String, usize>,
        RpcReplyPort<Result<DeployReport, Error>>,
    ),
    /// Fault injection for tests: panic in the handler.
    #[doc(hidden)]
    InjectPanic,
}

// Local only: never sent to another node (the `cluster` feature of
// ractor asks every message type to say so).
impl ractor::Message for DeploymentMsg {}

/// The services a node runs, in start order, and the deployment applied.
#[derive(Debug, Clone, Default)]
pub struct Deployed {
    /// Service names in start order.
    pub order: Vec<String>,
    /// The deployment applied last, as given (`GET /v1/deployment`).
    pub spec: Deployment,
    /// What runs of it here: `spec` with each cluster-placed service at
    /// this node's share (left out when that is 0).
    pub current: Deployment,
    /// This node's share of each cluster-placed service, from the last
    /// placement applied.
    pub placed: BTreeMap<String, usize>,
    /// The epoch of that placement.
    pub epoch: u64,
    /// Services an operator stopped: left stopped by reloads until started.
    pub stopped: std::collections::BTreeSet<String>,
}

/// What outlives one deployment actor: the last applied state, and
/// whether an actor ran before (a restart rather than the node's boot).
#[derive(Clone, Default)]
pub struct DeploymentMemory {
    last: Arc<watch::Sender<Arc<Deployed>>>,
    started: Arc<std::sync::atomic::AtomicBool>,
}

impl DeploymentMemory {
    /// Starts with this node's last share of the cluster-placed services
    /// (from the state dir), so that an agent that replaces another
    /// (SIGUSR2, a crash) runs, and adopts, the same replicas before the
    /// cluster places again.
    pub fn with_placement(epoch: u64, placed: BTreeMap<String, usize>) -> Self {
        let memory = Self::default();
        memory.last.send_modify(|d| {
            let d = Arc::make_mut(d);
            d.epoch = epoch;
            d.placed = placed;
        });
        memory
    }

    /// What was applied last.
    pub fn get(&self) -> Arc<Deployed> {
        self.last.borrow().clone()
    }

    /// What is applied, seen at each change.
    pub fn subscribe(&self) -> watch::Receiver<Arc<Deployed>> {
        self.last.subscribe()
    }
}

/// What the deployment actor starts with.
pub struct DeploymentArgs {
    /// The root: service supervisors are its children.
    pub root: SupervisorRef,
    /// Jobs are registered here.
    pub executor: Executor,
    /// Networked services attach through it.
    pub overlay: Overlay,
    /// Where services run.
    pub runtime: Arc<dyn Runtime>,
    /// Published state (and what a restarted actor adopts).
    pub memory: DeploymentMemory,
    /// The handle callers reach this actor through.
    pub me: Part<DeploymentMsg>,
    /// True once the node shuts down (ends waits for dependencies).
    pub stopping: watch::Receiver<bool>,
    /// Where services keep their logs (`<state_dir>/services/...`).
    pub state_dir: Option<std::path::PathBuf>,
    /// Where service supervisors keep their children's restart state.
    pub supervision: Option<crate::store::supervision::SupervisionStore>,
    /// Whether the node is in a cluster: cluster-placed services then run
    /// this node's share (none until the cluster places them); alone, a
    /// node runs all their replicas.
    pub clustered: bool,
}

/// The actor's state.
pub struct DeploymentState {
    root: SupervisorRef,
    executor: Executor,
    overlay: Overlay,
    runtime: Arc<dyn Runtime>,
    memory: DeploymentMemory,
    deployed: Deployed,
    stopping: watch::Receiver<bool>,
    state_dir: Option<std::path::PathBuf>,
    supervision: Option<crate::store::supervision::SupervisionStore>,
    clustered: bool,
}

/// The deployment actor.
pub struct DeploymentActor;

impl Actor for DeploymentActor {
    type Msg = DeploymentMsg;
    type State = DeploymentState;
    type Arguments = DeploymentArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<DeploymentMsg>,
        args: DeploymentArgs,
    ) -> Result<DeploymentState, ActorProcessingErr> {
        let restarted = args
            .memory
            .started
            .swap(true, std::sync::atomic::Ordering::SeqCst);
        args.me.set(myself);
        let mut deployed = (*args.memory.get()).clone();
        if restarted {
            // The services that run are what runs: a deploy cut short by
            // the failure may have started or stopped some.
            if let Ok(children) = args.root.which_children().await {
                let running: Vec<String> = children
                    .into_iter()
                    .map(|c| c.id)
                    .filter(|id| !id.starts_with(PART_PREFIX))
                    .collect();
                deployed.order.retain(|s| running.contains(s));
                for name in running {
                    if !deployed.order.contains(&name) {
                        deployed.order.push(name);
                    }
                }
            }
            tracing::info!(
                services = deployed.order.len(),
                "deployment actor restarted: adopted the applied deployment"
            );
        }
        let state = DeploymentState {
            root: args.root,
            executor: args.executor,
            overlay: args.overlay,
            runtime: args.runtime,
            memory: args.memory,
            deployed,
            stopping: args.stopping,
            state_dir: args.state_dir,
            supervision: args.supervision,
            clustered: args.clustered,
        };
        state.publish();
        Ok(state)
    }

    async fn handle(
        &self,
        _: ActorRef<DeploymentMsg>,
        msg: DeploymentMsg,
        state: &mut DeploymentState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DeploymentMsg::Deploy(deployment, reply) => {
                let result = state.deploy(&deployment).await;
                state.publish();
                let _ = reply.send(result);
            }
            DeploymentMsg::StartService(name, spec, reply) => {
                let result = state.start_service(&name, *spec).await;
                state.publish();
                let _ = reply.send(result);
            }
            DeploymentMsg::StopService(name, reply) => {
                let result = state.stop_service(&name).await;
                state.publish();
                let _ = reply.send(result);
            }
            DeploymentMsg::StopAll(reply) => {
                state.stop_all().await;
                state.publish();
                let _ = reply.send(());
            }
            DeploymentMsg::Halt(name, reply) => {
                let result = state.halt(&name).await;
                state.publish();
                let _ = reply.send(result);
            }
            DeploymentMsg::Resume(name, reply) => {
                let result = state.resume(&name).await;
                state.publish();
                let _ = reply.send(result);
            }
            DeploymentMsg::Scale(name, replicas, reply) => {
                let result = state.scale(&name, replicas).await;
                state.publish();
                let _ = reply.send(result);
            }
            DeploymentMsg::Place(epoch, shares, reply) => {
                let result = state.place(epoch, shares).await;
                state.publish();
                let _ = reply.send(result);
            }
            DeploymentMsg::InjectPanic => panic!("injected fault in the deployment actor"),
        }
        Ok(())
    }
}

impl DeploymentState {
    fn publish(&self) {
        self.memory
            .last
            .send_replace(Arc::new(self.deployed.clone()));
    }

    /// Applies `spec` as given: what runs here is its [`Self::effective`]
    /// form.
    async fn deploy(&mut self, spec: &Deployment) -> Result<DeployReport, Error> {
        spec.validate()?;
        let effective = self.effective(spec);
        let report = self.apply(&effective).await?;
        self.deployed.spec = spec.clone();
        Ok(report)
    }

    /// `spec` with each cluster-placed service at this node's share: the
    /// last placement's (0 before the first: left out), or all its
    /// replicas when the node is not in a cluster.
    fn effective(&self, spec: &Deployment) -> Deployment {
        let mut d = spec.clone();
        d.services.retain(|name, s| {
            let Some(p) = s.placement.as_ref().filter(|p| p.is_cluster()) else {
                return true;
            };
            let n = if self.clustered {
                self.deployed.placed.get(name).copied().unwrap_or(0)
            } else {
                p.replicas
            };
            // Here, it is a service of `n` replicas like any other.
            s.replicas = n;
            s.placement = None;
            n > 0
        });
        d
    }

    /// Applies the cluster's placement: this node's share of each
    /// cluster-placed service (an older epoch than the last applied is
    /// refused).
    async fn place(
        &mut self,
        epoch: u64,
        shares: BTreeMap<String, usize>,
    ) -> Result<DeployReport, Error> {
        if epoch <= self.deployed.epoch {
            return Err(Error::Conflict(format!(
                "stale placement: epoch {epoch} is not newer than the applied {}",
                self.deployed.epoch
            )));
        }
        self.deployed.epoch = epoch;
        self.deployed.placed = shares;
        let effective = self.effective(&self.deployed.spec.clone());
        self.apply(&effective).await
    }

    /// Makes what runs here `deployment` (already in its effective form).
    async fn apply(&mut self, deployment: &Deployment) -> Result<DeployReport, Error> {
        deployment.validate()?;
        let diff = self.deployed.current.diff(deployment);
        let mut report = DeployReport::default();
        // Build every new supervisor spec first: an unreadable env file
        // stops the deploy before anything changed.
        let mut specs = BTreeMap::new();
        for name in diff.services.added.iter().chain(&diff.services.changed) {
            specs.insert(name.clone(), self.service_spec(deployment, name)?);
        }
        // A change of `replicas` alone is applied in place.
        let scaled: Vec<String> = diff
            .services
            .changed
            .iter()
            .filter(|n| {
                let (old, new) = (
                    &self.deployed.current.services[*n],
                    &deployment.services[*n],
                );
                let mut same = old.clone();
                same.replicas = new.replicas;
                same == *new
            })
            .cloned()
            .collect();
        // A service an operator stopped stays stopped: a change only
        // replaces its spec for its next start.
        let held: Vec<String> = diff
            .services
            .changed
            .iter()
            .filter(|n| self.deployed.stopped.contains(*n))
            .cloned()
            .collect();
        for name in &held {
            if let Some(spec) = specs.remove(name) {
                let child = self.root_child(deployment, name, spec);
                self.root.replace_child_spec(child).await?;
            }
        }
        let stop: Vec<String> = self
            .deployed
            .order
            .iter()
            .rev()
            .filter(|n| {
                diff.services.removed.contains(n)
                    || (diff.services.changed.contains(n)
                        && !scaled.contains(n)
                        && !held.contains(n))
            })
            .cloned()
            .collect();
        for name in &stop {
            self.stop_service(name).await?;
            self.deployed.stopped.remove(name);
            if diff.services.removed.contains(name) {
                report.services_stopped.push(name.clone());
            }
        }
        for name in diff.services.removed.iter() {
            if !stop.contains(name) {
                report.services_stopped.push(name.clone());
            }
        }
        // A removed service's restart state goes with it (also one removed
        // while no agent ran).
        if let Some(store) = &self.supervision {
            store.retain(deployment.services.keys().cloned().collect());
        }
        for name in deployment.start_order() {
            if scaled.iter().any(|s| s == name)
                && let Some(spec) = specs.remove(name)
            {
                self.scale_service(name, spec, deployment).await?;
                report.services_scaled.push(name.to_owned());
                continue;
            }
            if let Some(spec) = specs.remove(name) {
                let gated = !deployment.services[name].depends_on.is_empty();
                let child = self.root_child(deployment, name, spec);
                if gated {
                    // Started in the root's start task once its
                    // dependencies are ready: the deploy (and the agent's
                    // API) never waits for that.
                    self.start_child_nowait(name, child)?;
                } else {
                    self.start_child(name, child).await?;
                }
                if diff.services.changed.iter().any(|c| c == name) {
                    report.services_restarted.push(name.to_owned());
                } else {
                    report.services_started.push(name.to_owned());
                }
            }
        }
        for name in &diff.jobs.removed {
            self.executor.unregister(name).await?;
            report.jobs_removed.push(name.clone());
        }
        for name in diff.jobs.added.iter().chain(&diff.jobs.changed) {
            let job = deployment
                .job_spec(name)
                .unwrap_or_else(|| deployment.jobs[name].clone());
            self.executor.register(job).await?;
            report.jobs_registered.push(name.clone());
        }
        report.unchanged = diff
            .services
            .unchanged
            .iter()
            .chain(&diff.jobs.unchanged)
            .cloned()
            .collect();
        self.deployed.current = deployment.clone();
        tracing::info!(
            started = ?report.services_started,
            stopped = ?report.services_stopped,
            restarted = ?report.services_restarted,
            scaled = ?report.services_scaled,
            jobs_registered = ?report.jobs_registered,
            jobs_removed = ?report.jobs_removed,
            "deployment applied"
        );
        Ok(report)
    }

    /// Gives a running service the replicas of `spec`: the missing ones
    /// start, the extra ones stop (all at once, each with its grace) and
    /// go; the others are not touched. The service keeps `spec` for its
    /// later restarts.
    async fn scale_service(
        &self,
        name: &str,
        spec: SupervisorSpec,
        deployment: &Deployment,
    ) -> Result<(), Error> {
        if let Some(service) = self.root.child_supervisor(name).await? {
            let have: Vec<String> = service
                .which_children()
                .await?
                .into_iter()
                .map(|c| c.id)
                .collect();
            for child in &spec.children {
                if !have.iter().any(|h| **h == *child.id) {
                    service.start_child(child.clone()).await?;
                }
            }
            let extra: Vec<&String> = have
                .iter()
                .rev()
                .filter(|h| !spec.children.iter().any(|c| *c.id == ***h))
                .collect();
            let stops = extra.iter().map(|id| {
                let service = service.clone();
                async move {
                    service.terminate_child(id).await?;
                    service.delete_child(id).await
                }
            });
            for result in futures::future::join_all(stops).await {
                result?;
            }
        }
        let child = self.root_child(deployment, name, spec);
        self.root.replace_child_spec(child).await?;
        Ok(())
    }

    /// Deployed service `name` as the root's child: one with `depends_on`
    /// waits for its dependencies at each start (see [`gated_service_child`]).
    fn root_child(&self, deployment: &Deployment, name: &str, spec: SupervisorSpec) -> ChildSpec {
        match deployment.services.get(name) {
            Some(service) if !service.depends_on.is_empty() => gated_service_child(
                name,
                spec,
                Gate {
                    depends_on: service.depends_on.clone(),
                    timeout: service.start_timeout,
                    action: service.start_timeout_action,
                    stopping: self.stopping.clone(),
                },
            ),
            _ => service_child(name, spec),
        }
    }

    /// The supervisor spec of deployed service `name`. Replicas of a
    /// networked service get their network from a runtime wrapper
    /// (namespace, attach before start, detach on remove). Reads its env
    /// files now: an unreadable one is an error naming the field.
    fn service_spec(&self, deployment: &Deployment, name: &str) -> Result<SupervisorSpec, Error> {
        let runtime = match deployment.service_network(name) {
            Some(net) => Arc::new(crate::overlay::Networked::new(
                self.runtime.clone(),
                self.overlay.clone(),
                deployment.services[name].segment_key(name),
                net,
            )) as Arc<dyn Runtime>,
            None => self.runtime.clone(),
        };
        let spec = deployment.services[name]
            .supervisor_spec_in(name, runtime, self.state_dir.as_deref())
            .map_err(|e| Error::Spec(SpecErrors::from(e.within(&format!("services.{name}")))))?;
        Ok(match &self.supervision {
            Some(store) => spec.persist(store.clone(), name),
            None => spec,
        })
    }

    fn known(&self, name: &str) -> Result<(), Error> {
        if name.starts_with(PART_PREFIX) || !self.deployed.order.iter().any(|s| s == name) {
            return Err(crate::SupervisorError::NotFound(name.to_owned()).into());
        }
        Ok(())
    }

    /// Stops `name` (its replicas with their graces) and keeps it stopped.
    async fn halt(&mut self, name: &str) -> Result<(), Error> {
        self.known(name)?;
        self.root.terminate_child(name).await?;
        self.deployed.stopped.insert(name.to_owned());
        Ok(())
    }

    /// Starts `name` if an operator stopped it (or it is down); a running
    /// service is left as it is.
    async fn resume(&mut self, name: &str) -> Result<(), Error> {
        self.known(name)?;
        let running = self
            .root
            .which_children()
            .await?
            .into_iter()
            .any(|c| c.id == name && c.state == crate::ChildState::Running);
        if !running {
            self.root.restart_child(name).await?;
        }
        self.deployed.stopped.remove(name);
        Ok(())
    }

    /// Gives deployed service `name` `replicas` replicas, in place.
    async fn scale(&mut self, name: &str, replicas: usize) -> Result<(), Error> {
        self.known(name)?;
        if self
            .deployed
            .spec
            .services
            .get(name)
            .is_some_and(|s| s.is_cluster_placed())
        {
            return Err(Error::Conflict(format!(
                "service {name:?} is placed by the cluster: change its placement.replicas in the spec"
            )));
        }
        let Some(service) = self.deployed.current.services.get(name) else {
            return Err(Error::Conflict(format!(
                "service {name:?} was started from code, not from a spec: scale it there"
            )));
        };
        let mut service = service.clone();
        service.replicas = replicas;
        let mut next = self.deployed.current.clone();
        next.services.insert(name.to_owned(), service);
        next.validate()?;
        let spec = self.service_spec(&next, name)?;
        if self.deployed.stopped.contains(name) {
            let child = self.root_child(&next, name, spec);
            self.root.replace_child_spec(child).await?;
        } else {
            self.scale_service(name, spec, &next).await?;
        }
        if let Some(s) = self.deployed.spec.services.get_mut(name) {
            s.replicas = replicas;
        }
        self.deployed.current = next;
        Ok(())
    }

    async fn start_service(&mut self, name: &str, spec: SupervisorSpec) -> Result<(), Error> {
        self.start_child(name, service_child(name, spec)).await
    }

    async fn start_child(&mut self, name: &str, child: ChildSpec) -> Result<(), Error> {
        if name.starts_with(PART_PREFIX) {
            return Err(Error::Start(format!(
                "failed to start service {name:?}: names starting with {PART_PREFIX:?} belong to the node's own parts"
            )));
        }
        self.root.start_child(child).await?;
        self.deployed.order.retain(|s| s != name);
        self.deployed.order.push(name.to_owned());
        Ok(())
    }

    fn start_child_nowait(&mut self, name: &str, child: ChildSpec) -> Result<(), Error> {
        if name.starts_with(PART_PREFIX) {
            return Err(Error::Start(format!(
                "failed to start service {name:?}: names starting with {PART_PREFIX:?} belong to the node's own parts"
            )));
        }
        self.root.start_child_nowait(child)?;
        self.deployed.order.retain(|s| s != name);
        self.deployed.order.push(name.to_owned());
        Ok(())
    }

    async fn stop_service(&mut self, name: &str) -> Result<(), Error> {
        if name.starts_with(PART_PREFIX) {
            return Err(crate::SupervisorError::NotFound(name.to_owned()).into());
        }
        self.root.terminate_child(name).await?;
        self.root.delete_child(name).await?;
        self.deployed.order.retain(|s| s != name);
        self.deployed.stopped.remove(name);
        Ok(())
    }

    /// Stops the services in waves: a service once every service that
    /// depends on it has stopped, and the services of a wave all at once
    /// (the root answers while their graces run).
    async fn stop_all(&mut self) {
        let mut left = self.deployed.order.clone();
        while !left.is_empty() {
            let wave = stop_wave(&left, &self.deployed.current);
            let root = &self.root;
            let stops = wave.iter().map(|name| async move {
                let result = match root.terminate_child(name).await {
                    Ok(()) => root.delete_child(name).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => {}
                    // Never started (its start waited for a dependency).
                    Err(crate::SupervisorError::NotFound(_)) => {}
                    Err(e) => {
                        tracing::warn!(service = %name, error = %e, "failed to stop a service")
                    }
                }
            });
            futures::future::join_all(stops).await;
            left.retain(|s| !wave.contains(s));
            self.deployed.order.retain(|s| !wave.contains(s));
        }
    }
}

/// A service's supervisor as the root's child: one that gives up ends
/// `failed` alone (panic action `fail`), never restarted by the root.
pub(crate) fn service_child(name: &str, spec: SupervisorSpec) -> ChildSpec {
    ChildSpec::supervisor(name, spec).on_panic(PanicAction::Fail)
}

/// What a service waits for before it starts.
struct Gate {
    depends_on: Vec<String>,
    timeout: std::time::Duration,
    action: StartTimeoutAction,
    stopping: watch::Receiver<bool>,
}

/// A service that starts once every service it depends on is ready (every
/// replica running and passing its readiness probe), or when `timeout`
/// ends (then as `action` says). The wait runs in the root's start task:
/// the root answers meanwhile, and the tree shows `waiting for db`. A
/// restart of the service (by an operator) waits again.
fn gated_service_child(name: &str, spec: SupervisorSpec, gate: Gate) -> ChildSpec {
    let mut child = service_child(name, spec);
    let start = child.start.clone();
    let gate = Arc::new(gate);
    child.start = Arc::new(move |ctx: ChildContext| {
        let (start, gate) = (start.clone(), gate.clone());
        Box::pin(async move {
            match wait_ready(&ctx, &gate).await {
                Ok(()) => {
                    ctx.set_status(None);
                    start(ctx).await
                }
                // Started as a child that fails at once: the service shows
                // `failed` with the reason, and a restart waits again.
                Err(reason) if !*gate.stopping.borrow() => {
                    let (actor, _) =
                        Actor::spawn_linked(None, NotStarted, reason, ctx.supervisor.clone())
                            .await?;
                    Ok(actor.get_cell())
                }
                Err(reason) => Err(reason.into()),
            }
        })
    });
    child
}

/// A service that was not started because its dependencies were not
/// ready: fails as soon as it is linked, with the reason.
struct NotStarted;

impl Actor for NotStarted {
    type Msg = ();
    type State = String;
    type Arguments = String;

    async fn pre_start(
        &self,
        _: ActorRef<()>,
        reason: String,
    ) -> Result<String, ActorProcessingErr> {
        Ok(reason)
    }

    async fn post_start(
        &self,
        _: ActorRef<()>,
        reason: &mut String,
    ) -> Result<(), ActorProcessingErr> {
        Err(std::mem::take(reason).into())
    }
}

/// Waits until every dependency of `gate` is ready; an error when the
/// timeout ends under `fail`, or when the node shuts down.
async fn wait_ready(ctx: &ChildContext, gate: &Gate) -> Result<(), String> {
    let root = SupervisorRef::from_cell(ctx.supervisor.clone(), "", ctx.events.clone());
    let mut events = ctx.events.subscribe();
    let mut stopping = gate.stopping.clone();
    let deadline = tokio::time::Instant::now() + gate.timeout;
    loop {
        let waiting = not_ready(&root, &gate.depends_on).await;
        if waiting.is_empty() {
            return Ok(());
        }
        let names = waiting.join(", ");
        ctx.set_status(Some(format!("waiting for {names}")));
        tokio::select! {
            _ = events.wait_for(|e| concerns(e, &waiting)) => {}
            _ = tokio::time::sleep_until(deadline) => {
                let after = crate::spec::fmt_duration(gate.timeout);
                return match gate.action {
                    StartTimeoutAction::Start => {
                        tracing::warn!(service = %ctx.id, waiting = %names, "dependencies not ready after {after}: starting anyway (start_timeout_action: start)");
                        Ok(())
                    }
                    StartTimeoutAction::Fail => Err(format!(
                        "dependencies not ready after {after}: {names} (start_timeout_action: fail)"
                    )),
                };
            }
            _ = stopping.wait_for(|s| *s) => {
                return Err("the node is shutting down".into());
            }
        }
    }
}

/// The services of `deps` that are not ready: not running, or with a
/// replica that is not running or not ready.
async fn not_ready(root: &SupervisorRef, deps: &[String]) -> Vec<String> {
    let mut waiting = Vec::new();
    for dep in deps {
        let ready = match root.child_supervisor(dep).await {
            Ok(Some(service)) => match service.snapshot().await {
                Ok(tree) => tree.children.iter().all(|c| c.ready != Some(false)),
                Err(_) => false,
            },
            _ => false,
        };
        if !ready {
            waiting.push(dep.clone());
        }
    }
    waiting
}

/// Whether `event` may change the readiness of one of `services`.
fn concerns(event: &crate::events::Event, services: &[String]) -> bool {
    use crate::events::Event as E;
    let supervisor = match event {
        E::Ready { supervisor, .. }
        | E::NotReady { supervisor, .. }
        | E::ChildStarted { supervisor, .. }
        | E::ChildExited { supervisor, .. }
        | E::ChildStopped { supervisor, .. }
        | E::ChildFailed { supervisor, .. } => supervisor,
        _ => return false,
    };
    // A service's own start shows up as a child of the root.
    services.iter().any(|s| s == supervisor)
        || matches!(event, E::ChildStarted { child, .. } if services.contains(child))
}

/// The services of `left` (in start order) that may stop now: those no
/// other service of `left` depends on. A service started outside the
/// deployment (`start_service`) depends on every service started before
/// it, so those stop in reverse start order. Never empty.
fn stop_wave(left: &[String], deployment: &Deployment) -> Vec<String> {
    let depends = |who: &str, on: &str| match deployment.services.get(who) {
        Some(spec) => spec.depends_on.iter().any(|d| d == on),
        None => {
            let pos = |n: &str| left.iter().position(|s| s == n);
            pos(on) < pos(who)
        }
    };
    let wave: Vec<String> = left
        .iter()
        .filter(|s| !left.iter().any(|o| o != *s && depends(o, s)))
        .cloned()
        .collect();
    if wave.is_empty() {
        // A cycle (validation refuses them): the last started goes first.
        left.last().cloned().into_iter().collect()
    } else {
        wave
    }
}
