//! [`Node`]: the facade an application embeds, and the whole of what the
//! agent, its HTTP API and the CLI use.
//!
//! A node is one supervision tree. Its root (one_for_one) has the node's
//! own parts as children, then one supervisor per service (started in
//! dependency order, stopped in reverse):
//!
//! ```text
//! node                      root supervisor (one_for_one)
//! ├── node:overlay          overlay actor      (adopts live attachments on restart)
//! ├── node:executor         executor actor     (reloads its table, finds running job actors)
//! ├── node:jobs             job supervisor     (dynamic; one job actor per execution)
//! ├── node:cron             cron actor         (the executor puts the schedules back)
//! ├── node:deployment       deployment actor   (the applied spec; diff and apply)
//! ├── node:cluster          cluster actor      (with a cluster only; ractor_cluster's
//! │                                             node server and peer sessions under it)
//! └── <service>             one supervisor per service (back-off by default)
//! ```
//!
//! Each part is `transient`: a part that fails is restarted by the root
//! (within the root's intensity; past it the root gives up and `arbor
//! agent` exits non-zero). Callers reach the parts through [`Part`]
//! handles that follow restarts; a call to a part that is down answers
//! `restarting` after a short wait, never hangs. A service never takes the
//! node down: its supervisor ends `failed` alone when it gives up.
//!
//! Build a node with a runtime and a state dir, deploy services and jobs
//! (from a spec file or from code), trigger and control executions, follow
//! events, read the tree, and shut it down gracefully.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use ractor::Actor;
use serde::{Deserialize, Serialize};

use crate::{
    actors::{
        cron_actor::{CronActor, CronArgs, CronMsg},
        deployment_actor::{DeploymentActor, DeploymentArgs, DeploymentMemory, DeploymentMsg},
        executor_actor::{
            Executor, ExecutorActor, ExecutorArgs, ExecutorConfig, ExecutorMemory, ExecutorMsg,
        },
        overlay_actor::{Disabled, Overlay, OverlayBackend, OverlayConfig, OverlayMsg},
        supervisor_actor::{
            ChildContext, ChildKind, ChildSpec, ChildState, SupervisorMsg, SupervisorRef,
            SupervisorSpec, TreeNode,
        },
    },
    cron::{Clock, CronRef, SystemClock},
    error::Error,
    events::{EventBus, EventStream},
    overlay::{LinuxBridge, NetworkMode, can_use_bridges},
    part::{Part, PartError, RESTART_PATIENCE},
    runtime::Runtime,
    spec::{Deployment, RestartType, Shutdown, Strategy, SupervisorFlags},
    tokens::{NoTokens, TokenSink},
};

/// Ids of the node's own parts start with this; service names cannot
/// (a service name has no `:`).
pub const PART_PREFIX: &str = "node:";

/// How to build a node.
pub struct NodeConfig {
    /// Where services and jobs run.
    pub runtime: Arc<dyn Runtime>,
    /// Durable execution records and logs (`None`: in memory only).
    pub state_dir: Option<PathBuf>,
    /// The overlay actor; `None`: one is started per `network`.
    pub overlay: Option<Overlay>,
    /// Which overlay backend to start when `overlay` is `None` (default
    /// `None`: no networking; the agent passes `Auto`).
    pub network: NetworkMode,
    /// Names, pool and state file of that overlay actor (the state file
    /// defaults to `<state_dir>/overlay.json`).
    pub overlay_config: OverlayConfig,
    /// Told when a job container is removed.
    pub tokens: Arc<dyn TokenSink>,
    /// The wall clock for schedules.
    pub clock: Arc<dyn Clock>,
    /// Flags of the root supervisor (the strategy is always one_for_one:
    /// services are independent; order comes from `depends_on`).
    pub flags: SupervisorFlags,
    /// The node's name (the root of the tree).
    pub name: String,
    /// Join a cluster (`None`: this node is alone).
    pub cluster: Option<crate::cluster::ClusterConfig>,
}

impl NodeConfig {
    /// Defaults around `runtime`: in memory, no networking, system clock.
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        Self {
            runtime,
            state_dir: None,
            overlay: None,
            network: NetworkMode::None,
            overlay_config: OverlayConfig::default(),
            tokens: Arc::new(NoTokens),
            clock: Arc::new(SystemClock),
            flags: SupervisorFlags::default(),
            name: "node".into(),
            cluster: None,
        }
    }

    /// Keeps execution records and logs under `dir`.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Uses this overlay actor.
    pub fn overlay(mut self, overlay: Overlay) -> Self {
        self.overlay = Some(overlay);
        self
    }

    /// Starts an overlay actor with this backend choice.
    pub fn network(mut self, mode: NetworkMode) -> Self {
        self.network = mode;
        self
    }

    /// Reads schedules on this clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Tells `tokens` when a job container is removed.
    pub fn tokens(mut self, tokens: impl TokenSink) -> Self {
        self.tokens = Arc::new(tokens);
        self
    }

    /// Root supervisor flags.
    pub fn flags(mut self, flags: SupervisorFlags) -> Self {
        self.flags = flags;
        self
    }

    /// The node's name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Joins a cluster: the node gets the part `node:cluster`.
    pub fn cluster(mut self, cluster: crate::cluster::ClusterConfig) -> Self {
        self.cluster = Some(cluster);
        self
    }
}

/// A service as the API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// Its name.
    pub name: String,
    /// Its supervisor's state.
    pub state: ChildState,
    /// Replicas whose container runs.
    pub running: usize,
    /// Replicas in all.
    pub replicas: usize,
    /// Replicas that run and pass their readiness probe (all running ones
    /// when the service has no readiness or startup probe).
    #[serde(default)]
    pub ready: usize,
    /// Restarts of its replicas (and of the service supervisor itself).
    pub restarts: u32,
    /// What it does, in a word: `running` (every replica runs),
    /// `degraded` (some do), `starting`, `waiting` (for the services it
    /// depends on to be ready; `reason` names them), `crash_loop_back_off` (a replica
    /// waits out a back-off delay), `failed` (it gave up and stays down),
    /// `stopped`, `completed`, `shutdown`.
    pub status: String,
    /// While a replica backs off: the earliest next restart (wall clock).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart: Option<chrono::DateTime<chrono::Utc>>,
    /// Why it failed (status `failed`), or how its last failing replica
    /// ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The service's subtree.
    pub tree: TreeNode,
}

/// One line of a service's logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLogLine {
    /// The replica that wrote it.
    pub replica: String,
    /// The line (in `full`: `<RFC 3339 time> [STDOUT] text`).
    pub text: String,
}

/// Whether the node's parts are up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    /// True when every part answers and the node is not shutting down.
    pub ok: bool,
    /// True once a shutdown began.
    pub shutting_down: bool,
    /// Each part and whether it answers.
    pub parts: BTreeMap<String, bool>,
}

pub use crate::actors::deployment_actor::Deployed;

/// What a deploy (or reload) changed.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeployReport {
    /// Services started (new ones, in start order).
    pub services_started: Vec<String>,
    /// Services stopped and removed.
    pub services_stopped: Vec<String>,
    /// Services whose spec changed: stopped, then started with the new spec.
    pub services_restarted: Vec<String>,
    /// Services whose `replicas` alone changed: replicas added or removed
    /// in place, the others untouched.
    #[serde(default)]
    pub services_scaled: Vec<String>,
    /// Jobs registered (new or changed).
    pub jobs_registered: Vec<String>,
    /// Jobs removed.
    pub jobs_removed: Vec<String>,
    /// Services and jobs left untouched.
    pub unchanged: Vec<String>,
}

impl DeployReport {
    /// One line for people: `started web; scaled db; 2 jobs registered`,
    /// or `nothing changed`.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        for (what, names) in [
            ("started", &self.services_started),
            ("stopped", &self.services_stopped),
            ("restarted", &self.services_restarted),
            ("scaled", &self.services_scaled),
            ("jobs registered:", &self.jobs_registered),
            ("jobs removed:", &self.jobs_removed),
        ] {
            if !names.is_empty() {
                parts.push(format!("{what} {}", names.join(", ")));
            }
        }
        if parts.is_empty() {
            "nothing changed".into()
        } else {
            parts.join("; ")
        }
    }
}

/// A running node. Cheap to clone; clones drive the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

struct Inner {
    name: String,
    state_dir: Option<PathBuf>,
    root: SupervisorRef,
    executor: Executor,
    overlay: Overlay,
    /// An overlay actor the application passed in (not a child of the root).
    own_overlay: bool,
    jobs: Part<SupervisorMsg>,
    cron: Part<CronMsg>,
    deployment: Part<DeploymentMsg>,
    deployed: DeploymentMemory,
    events: EventBus,
    /// The last events, for [`Node::recent_events`].
    recent: crate::events::RecentEvents,
    runtime: Arc<dyn Runtime>,
    shutting_down: tokio::sync::watch::Sender<bool>,
    /// Where service supervisors keep their restart state (with a state dir).
    supervision: Option<crate::store::supervision::SupervisionStore>,
    /// The cluster actor's view (`None` outside a cluster, or while the
    /// actor restarts).
    cluster: tokio::sync::watch::Receiver<Option<crate::cluster::ClusterView>>,
    /// The cluster actor, with a cluster.
    cluster_part: Part<crate::actors::cluster_actor::ClusterMsg>,
    /// Whether the node has the part `node:cluster`.
    clustered: bool,
}

/// The overlay backend `mode` asks for, decided once at node start.
/// `Auto` without root, or when netlink cannot be opened, falls back to no
/// networking and says so once.
fn overlay_backend(mode: NetworkMode) -> Result<bool, Error> {
    let failed =
        |e: &dyn std::fmt::Display| Error::Start(format!("failed to start the overlay actor: {e}"));
    match mode {
        NetworkMode::None => Ok(false),
        NetworkMode::Bridge if !can_use_bridges() => Err(Error::Start(
            "failed to start the overlay actor: --network bridge needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)".into(),
        )),
        NetworkMode::Bridge => LinuxBridge::new().map(|_| true).map_err(|e| failed(&e)),
        NetworkMode::Auto if !can_use_bridges() => {
            tracing::warn!(
                "networking disabled: not running as root; jobs run on the node's network and their `network` fields are ignored (pass --network none to say so)"
            );
            Ok(false)
        }
        NetworkMode::Auto => match LinuxBridge::new() {
            Ok(_) => Ok(true),
            Err(e) => {
                tracing::warn!(error = %e, "networking disabled: netlink is not available");
                Ok(false)
            }
        },
    }
}

/// Starts an unsupervised overlay actor for `mode` (for programs that
/// build an executor without a node).
pub async fn start_overlay(mode: NetworkMode, config: OverlayConfig) -> Result<Overlay, Error> {
    let failed =
        |e: &dyn std::fmt::Display| Error::Start(format!("failed to start the overlay actor: {e}"));
    if overlay_backend(mode)? {
        let bridge = LinuxBridge::new().map_err(|e| failed(&e))?;
        Overlay::start_with(bridge, config)
            .await
            .map_err(|e| failed(&e))
    } else {
        Overlay::start(Disabled).await.map_err(|e| failed(&e))
    }
}

/// A node part as a child of the root: `transient` (restarted when it
/// fails, not when it is stopped), started by `start`.
fn part_child<F, Fut>(id: &str, shutdown: Shutdown, start: F) -> ChildSpec
where
    F: Fn(ChildContext) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<ractor::ActorCell, ractor::ActorProcessingErr>>
        + Send
        + 'static,
{
    ChildSpec::new(format!("{PART_PREFIX}{id}"), start)
        .restart(RestartType::Transient)
        .shutdown(shutdown)
}

impl Node {
    /// Starts the root supervisor with the node's parts: the overlay actor,
    /// the executor (which reloads the history kept in the state dir), the
    /// job supervisor, the cron actor and the deployment actor.
    pub async fn start(config: NodeConfig) -> Result<Self, Error> {
        // Restart storms of panicking children stay cheap (see `panics`).
        crate::panics::install();
        let events = EventBus::new();
        // Kept from the start: what happened before anyone followed.
        let recent = crate::events::RecentEvents::start(events.subscribe());
        let mut parts = Vec::new();

        // The overlay actor: a part of the tree unless the application
        // passed its own.
        let own_overlay = config.overlay.is_some();
        let overlay = match config.overlay {
            Some(o) => o,
            None => {
                let mut oc = config.overlay_config.clone();
                if oc.state_file.is_none() {
                    oc.state_file = config.state_dir.as_ref().map(|d| d.join("overlay.json"));
                }
                let bridged = overlay_backend(config.network)?;
                if bridged {
                    tracing::info!(prefix = %oc.prefix, pool = %oc.pool, "networking: linux bridges");
                }
                let (child, overlay) = Overlay::supervised(
                    format!("{PART_PREFIX}overlay"),
                    move || -> Result<Box<dyn OverlayBackend>, String> {
                        Ok(if bridged {
                            Box::new(LinuxBridge::new()?)
                        } else {
                            Box::new(Disabled)
                        })
                    },
                    bridged,
                    oc,
                );
                parts.push(
                    child
                        .restart(RestartType::Transient)
                        .shutdown(Shutdown::Infinity),
                );
                overlay
            }
        };

        // The executor, and the job supervisor beside it (so that running
        // executions outlive an executor restart).
        let mut exec = ExecutorConfig::new(config.runtime.clone())
            .overlay(overlay.clone())
            .events(events.clone());
        exec.tokens = config.tokens;
        exec.clock = config.clock.clone();
        exec.state_dir = config.state_dir.clone();
        let (services, _) =
            crate::actors::executor_actor::job_services(&exec, overlay.clone()).await?;
        let executor_part: Part<ExecutorMsg> = Part::new("executor");
        let jobs: Part<SupervisorMsg> = Part::new("job supervisor");
        let cron: Part<CronMsg> = Part::new("cron actor");
        {
            let (me, jobs, cron, events) = (
                executor_part.clone(),
                jobs.clone(),
                cron.clone(),
                events.clone(),
            );
            let memory = ExecutorMemory::default();
            parts.push(part_child(
                "executor",
                Shutdown::Timeout(Duration::from_secs(70)),
                move |ctx| {
                    let args = ExecutorArgs {
                        services: services.clone(),
                        events: events.clone(),
                        me: me.clone(),
                        jobs: jobs.clone(),
                        own_jobs: false,
                        cron: Some(CronRef::from(cron.clone())),
                        memory: memory.clone(),
                    };
                    async move {
                        let (actor, _) =
                            Actor::spawn_linked(None, ExecutorActor, args, ctx.supervisor).await?;
                        Ok(actor.get_cell())
                    }
                },
            ));
        }
        {
            let jobs = jobs.clone();
            let spec = SupervisorSpec::dynamic("jobs");
            let mut child = ChildSpec::supervisor(format!("{PART_PREFIX}jobs"), spec.clone())
                .restart(RestartType::Transient);
            child.start = Arc::new(move |ctx: ChildContext| {
                let (jobs, spec) = (jobs.clone(), spec.clone());
                Box::pin(async move {
                    let cell = crate::actors::supervisor_actor::spawn_linked(
                        spec,
                        ctx.supervisor,
                        ctx.events,
                    )
                    .await
                    .map_err(|e| -> ractor::ActorProcessingErr { Box::new(e) })?;
                    jobs.set(cell.clone().into());
                    Ok(cell)
                })
            });
            parts.push(child);
        }
        {
            let (part, executor, clock) = (cron.clone(), executor_part.clone(), config.clock);
            let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
            parts.push(part_child("cron", Shutdown::WORKER_DEFAULT, move |ctx| {
                let target = executor.clone();
                let args = CronArgs {
                    target: Arc::new(move |fire| {
                        let _ = target.cast(ExecutorMsg::Scheduled(fire));
                    }),
                    clock: clock.clone(),
                };
                let (part, executor, started) = (part.clone(), executor.clone(), started.clone());
                async move {
                    let (actor, _) =
                        Actor::spawn_linked(None, CronActor, args, ctx.supervisor).await?;
                    part.set(actor.clone());
                    // A restarted cron actor is empty: the executor puts
                    // the schedules back.
                    if started.swap(true, std::sync::atomic::Ordering::SeqCst) {
                        let _ = executor.cast(ExecutorMsg::CronRestarted);
                    }
                    Ok(actor.get_cell())
                }
            }));
        }
        let executor = Executor::from_part(executor_part);
        let deployment: Part<DeploymentMsg> = Part::new("deployment actor");
        let supervision = config
            .state_dir
            .as_deref()
            .map(crate::store::supervision::SupervisionStore::open);
        let deployed = match config
            .cluster
            .as_ref()
            .and(config.state_dir.as_ref())
            .and_then(|d| crate::cluster::Remembered::read(&d.join("cluster.json")))
        {
            Some(r) => DeploymentMemory::with_placement(r.epoch, r.placed),
            None => DeploymentMemory::default(),
        };
        let shutting_down = tokio::sync::watch::Sender::new(false);
        let clustered = config.cluster.is_some();
        {
            let stopping = shutting_down.subscribe();
            let state_dir = config.state_dir.clone();
            let supervision = supervision.clone();
            let (me, memory, executor, overlay, runtime, name) = (
                deployment.clone(),
                deployed.clone(),
                executor.clone(),
                overlay.clone(),
                config.runtime.clone(),
                config.name.clone(),
            );
            parts.push(part_child(
                "deployment",
                Shutdown::WORKER_DEFAULT,
                move |ctx| {
                    let args = DeploymentArgs {
                        root: SupervisorRef::from_cell(
                            ctx.supervisor.clone(),
                            name.clone(),
                            ctx.events.clone(),
                        ),
                        executor: executor.clone(),
                        overlay: overlay.clone(),
                        runtime: runtime.clone(),
                        memory: memory.clone(),
                        me: me.clone(),
                        stopping: stopping.clone(),
                        state_dir: state_dir.clone(),
                        supervision: supervision.clone(),
                        clustered,
                    };
                    async move {
                        let (actor, _) =
                            Actor::spawn_linked(None, DeploymentActor, args, ctx.supervisor)
                                .await?;
                        Ok(actor.get_cell())
                    }
                },
            ));
        }

        let cluster_view = Arc::new(tokio::sync::watch::Sender::new(None));
        let cluster_part: Part<crate::actors::cluster_actor::ClusterMsg> =
            Part::new("cluster actor");
        if let Some(mut cluster) = config.cluster {
            if cluster.state_file.is_none() {
                cluster.state_file = config.state_dir.as_ref().map(|d| d.join("cluster.json"));
            }
            let (view, events) = (cluster_view.clone(), events.clone());
            let (deployment, deployed, me) =
                (deployment.clone(), deployed.clone(), cluster_part.clone());
            let name = config.name.clone();
            parts.push(part_child(
                "cluster",
                Shutdown::WORKER_DEFAULT,
                move |ctx| {
                    let args = crate::actors::cluster_actor::ClusterArgs {
                        config: cluster.clone(),
                        events: events.clone(),
                        view: view.clone(),
                        deployment: deployment.clone(),
                        deployed: deployed.subscribe(),
                        root: SupervisorRef::from_cell(
                            ctx.supervisor.clone(),
                            name.clone(),
                            ctx.events.clone(),
                        ),
                        me: me.clone(),
                    };
                    async move {
                        let (actor, _) = Actor::spawn_linked(
                            None,
                            crate::actors::cluster_actor::ClusterActor,
                            args,
                            ctx.supervisor,
                        )
                        .await?;
                        Ok(actor.get_cell())
                    }
                },
            ));
        }

        let mut flags = config.flags;
        flags.strategy = Strategy::OneForOne;
        let mut spec = SupervisorSpec::new(&config.name).flags(flags);
        for part in parts {
            spec = spec.child(part);
        }
        let (root, _) = SupervisorRef::start_with_events(spec, events.clone()).await?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: config.name,
                state_dir: config.state_dir,
                root,
                executor,
                overlay,
                own_overlay,
                jobs,
                cron,
                deployment,
                deployed,
                events,
                recent,
                runtime: config.runtime,
                shutting_down,
                supervision,
                cluster: cluster_view.subscribe(),
                cluster_part,
                clustered,
            }),
        })
    }

    /// This node's view of its cluster (`None` when it is not in one).
    pub fn cluster(&self) -> Option<crate::cluster::ClusterView> {
        self.inner.cluster.borrow().clone()
    }

    /// Every cluster member's supervision tree, this node first (a member
    /// that does not answer within 2 s is listed with why). `None` when
    /// the node is not in a cluster.
    pub async fn cluster_trees(&self) -> Option<Result<Vec<crate::cluster::NodeTree>, Error>> {
        if !self.inner.clustered {
            return None;
        }
        Some(
            self.inner
                .cluster_part
                .call(
                    crate::actors::cluster_actor::ClusterMsg::Trees,
                    Some(Duration::from_secs(10)),
                )
                .await
                .map_err(|e| Error::Restarting(e.to_string())),
        )
    }

    /// Forgets a cluster member that is down for good: it no longer
    /// counts for the majority (`Ok(None)`: the node is not in a cluster).
    pub async fn cluster_forget(
        &self,
        node: &str,
    ) -> Result<Option<Result<(), crate::cluster::ForgetError>>, Error> {
        if !self.inner.clustered {
            return Ok(None);
        }
        let node = node.to_string();
        self.inner
            .cluster_part
            .call(
                |r| crate::actors::cluster_actor::ClusterMsg::Forget(node, r),
                Some(Duration::from_secs(10)),
            )
            .await
            .map(Some)
            .map_err(|e| Error::Restarting(e.to_string()))
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Where execution records and logs are kept (`None`: in memory only).
    pub fn state_dir(&self) -> Option<&std::path::Path> {
        self.inner.state_dir.as_deref()
    }

    /// The executor: jobs, executions, schedules. The handle follows the
    /// executor's restarts.
    pub fn executor(&self) -> &Executor {
        &self.inner.executor
    }

    /// The overlay actor.
    pub fn overlay(&self) -> &Overlay {
        &self.inner.overlay
    }

    /// The runtime services and jobs run on.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.inner.runtime
    }

    /// The root supervisor.
    pub fn root(&self) -> &SupervisorRef {
        &self.inner.root
    }

    /// The last events (at most [`RECENT`](crate::events::RECENT)), oldest
    /// first, each with the time it was seen: what happened before a
    /// client began to follow [`Node::events`].
    pub async fn recent_events(&self) -> Vec<crate::events::RecentEvent> {
        self.inner.recent.get().await
    }

    /// Every supervisor and job event from now on.
    pub fn events(&self) -> EventStream {
        self.inner.events.subscribe()
    }

    /// The event bus (to publish into, or subscribe).
    pub fn event_bus(&self) -> &EventBus {
        &self.inner.events
    }

    /// Asks the deployment actor; waits as long as its work takes (a
    /// deploy starts services), but not for an actor that is down.
    async fn deployment_call<T: Send + 'static>(
        &self,
        msg: impl FnOnce(ractor::RpcReplyPort<T>) -> DeploymentMsg,
    ) -> Result<T, Error> {
        self.inner
            .deployment
            .call(msg, None)
            .await
            .map_err(|e| Error::Restarting(e.to_string()))
    }

    /// Starts a service: a supervisor named `name` under the root, after the
    /// services already running.
    pub async fn start_service(&self, name: &str, spec: SupervisorSpec) -> Result<(), Error> {
        self.refuse_when_stopping()?;
        let name = name.to_owned();
        self.deployment_call(|r| DeploymentMsg::StartService(name, Box::new(spec), r))
            .await?
    }

    /// Applies `deployment`: validates it, then stops removed services (in
    /// reverse order), restarts changed ones, scales in place the ones
    /// whose `replicas` alone changed, starts new ones in dependency order,
    /// and registers, replaces or removes jobs. What did not change is not
    /// touched. The first call deploys everything.
    pub async fn deploy(&self, deployment: &Deployment) -> Result<DeployReport, Error> {
        self.refuse_when_stopping()?;
        deployment.validate()?;
        let deployment = Box::new(deployment.clone());
        self.deployment_call(|r| DeploymentMsg::Deploy(deployment, r))
            .await?
    }

    /// The services the node runs (and the deployment applied), at each
    /// change.
    pub fn deployed(&self) -> tokio::sync::watch::Receiver<Arc<Deployed>> {
        self.inner.deployed.subscribe()
    }

    /// The deployment applied last.
    pub async fn deployment(&self) -> Deployment {
        self.inner.deployed.get().spec.clone()
    }

    /// Stops a service (its replicas in reverse order, each with its grace)
    /// and forgets it.
    pub async fn stop_service(&self, name: &str) -> Result<(), Error> {
        let name = name.to_owned();
        self.deployment_call(|r| DeploymentMsg::StopService(name, r))
            .await?
    }

    /// Stops a service as an operator does (`arbor services stop`): its
    /// replicas stop with their graces and it stays in the tree `stopped`,
    /// across reloads too, until [`Node::start_stopped_service`].
    pub async fn stop_service_kept(&self, name: &str) -> Result<(), Error> {
        self.refuse_when_stopping()?;
        let name = name.to_owned();
        self.deployment_call(|r| DeploymentMsg::Halt(name, r))
            .await?
    }

    /// Starts a service an operator stopped (or one that is down); a
    /// running one is left as it is.
    pub async fn start_stopped_service(&self, name: &str) -> Result<(), Error> {
        self.refuse_when_stopping()?;
        let name = name.to_owned();
        self.deployment_call(|r| DeploymentMsg::Resume(name, r))
            .await?
    }

    /// Sets a deployed service's replicas in place: new ones start in
    /// order, extra ones stop from the last; the others are not touched.
    /// The next deploy of a spec file sets them again.
    pub async fn scale_service(&self, name: &str, replicas: usize) -> Result<(), Error> {
        self.refuse_when_stopping()?;
        let name = name.to_owned();
        self.deployment_call(|r| DeploymentMsg::Scale(name, replicas, r))
            .await?
    }

    /// The last `tail` lines of the logs of service `name` (or of one of
    /// its replicas), from `<state-dir>/services/`: `stream` is `full`
    /// (both streams, timestamped and labelled, with start and exit
    /// markers), `stdout` or `stderr`. Lines of several replicas are
    /// merged in time order (`full`) or one replica after the other.
    pub async fn service_logs(
        &self,
        name: &str,
        replica: Option<&str>,
        stream: &str,
        tail: usize,
    ) -> Result<Vec<ServiceLogLine>, Error> {
        let Some(dir) = self.inner.state_dir.clone() else {
            return Err(Error::Conflict(
                "the node has no state dir: service output is only kept in memory (start the agent with --state-dir)".into(),
            ));
        };
        let Some(info) = self.service(name).await? else {
            return Err(crate::SupervisorError::NotFound(name.to_owned()).into());
        };
        let replicas: Vec<String> = info
            .tree
            .children
            .iter()
            .map(|c| c.name.clone())
            .filter(|r| replica.is_none_or(|want| want == r))
            .collect();
        if let Some(want) = replica
            && replicas.is_empty()
        {
            return Err(crate::SupervisorError::NotFound(want.to_owned()).into());
        }
        let file = format!("{stream}.log");
        let (name, stream_is_full) = (name.to_owned(), stream == "full");
        tokio::task::spawn_blocking(move || {
            let mut all = Vec::new();
            for r in replicas {
                let d = crate::store::service_log::replica_dir(&dir, &name, &r);
                let lines = crate::store::service_log::tail(&d, &file, tail).map_err(|e| {
                    Error::Start(format!("failed to read {}: {e}", d.join(&file).display()))
                })?;
                all.extend(lines.into_iter().map(|text| ServiceLogLine {
                    replica: r.clone(),
                    text,
                }));
            }
            if stream_is_full {
                // RFC 3339 UTC times with a fixed width sort as text.
                all.sort_by(|a, b| a.text.get(..27).cmp(&b.text.get(..27)));
                let skip = all.len().saturating_sub(tail);
                all.drain(..skip);
            }
            Ok(all)
        })
        .await
        .map_err(|e| Error::Start(format!("failed to read the logs: {e}")))?
    }

    /// Restarts every replica of a service (stop in reverse order, start again).
    pub async fn restart_service(&self, name: &str) -> Result<(), Error> {
        self.refuse_when_stopping()?;
        if name.starts_with(PART_PREFIX) {
            return Err(crate::SupervisorError::NotFound(name.to_owned()).into());
        }
        self.inner.root.restart_child(name).await?;
        Ok(())
    }

    /// The services, in start order.
    pub async fn services(&self) -> Result<Vec<ServiceInfo>, Error> {
        let tree = self.inner.root.snapshot().await?;
        Ok(tree
            .children
            .into_iter()
            .filter(|c| !c.name.starts_with(PART_PREFIX))
            .map(service_info)
            .collect())
    }

    /// One service.
    pub async fn service(&self, name: &str) -> Result<Option<ServiceInfo>, Error> {
        if name.starts_with(PART_PREFIX) {
            return Ok(None);
        }
        let tree = self.inner.root.snapshot().await?;
        Ok(tree
            .children
            .into_iter()
            .find(|c| c.name == name)
            .map(service_info))
    }

    /// The whole tree: the root with the node's parts (the job supervisor
    /// with one child per running execution) and its services.
    pub async fn tree(&self) -> Result<TreeNode, Error> {
        Ok(self.inner.root.snapshot().await?)
    }

    /// Whether every part runs. A part that is busy (the executor waiting
    /// on a slow disk, the overlay actor on netlink) is up; a part is down
    /// only while it is being restarted (or after it stopped).
    pub async fn health(&self) -> Health {
        const PATIENCE: Duration = Duration::from_secs(1);
        let root = tokio::time::timeout(PATIENCE, self.inner.root.count_children()).await;
        let mut parts = BTreeMap::new();
        parts.insert("supervisor".into(), matches!(root, Ok(Ok(_))));
        parts.insert("executor".into(), self.inner.executor.part().is_up());
        parts.insert("jobs".into(), self.inner.jobs.is_up());
        parts.insert("cron".into(), self.inner.cron.is_up());
        parts.insert("deployment".into(), self.inner.deployment.is_up());
        parts.insert("overlay".into(), self.inner.overlay.part().is_up());
        if self.inner.clustered {
            // The view is published while the cluster actor runs.
            parts.insert("cluster".into(), self.inner.cluster.borrow().is_some());
        }
        let shutting_down = *self.inner.shutting_down.borrow();
        Health {
            ok: !shutting_down && parts.values().all(|v| *v),
            shutting_down,
            parts,
        }
    }

    /// Fault injection for tests: makes one of the node's parts panic
    /// (`executor`, `overlay`, `cron`, `jobs`, `deployment`, or the root
    /// `supervisor`). False when the part is unknown or down.
    #[doc(hidden)]
    pub fn inject_panic(&self, part: &str) -> bool {
        use crate::actors::{cron_actor, executor_actor, overlay_actor};
        let i = &self.inner;
        match part {
            "executor" => i
                .executor
                .part()
                .cast(ExecutorMsg::Internal(
                    executor_actor::InternalMsg::inject_panic(),
                ))
                .is_ok(),
            "overlay" => i
                .overlay
                .part()
                .cast(OverlayMsg::Internal(
                    overlay_actor::InternalMsg::inject_panic(),
                ))
                .is_ok(),
            "cron" => i
                .cron
                .cast(CronMsg::Internal(cron_actor::InternalMsg::inject_panic()))
                .is_ok(),
            "deployment" => i.deployment.cast(DeploymentMsg::InjectPanic).is_ok(),
            "cluster" => i
                .cluster_part
                .cast(crate::actors::cluster_actor::ClusterMsg::InjectPanic)
                .is_ok(),
            "jobs" => match i.jobs.current() {
                Some(actor) => {
                    SupervisorRef::from_cell(actor.get_cell(), "jobs", i.events.clone())
                        .inject_panic();
                    true
                }
                None => false,
            },
            "supervisor-stall" => {
                i.root.inject_stall(Duration::from_secs(30));
                true
            }
            "supervisor" => {
                i.root.inject_panic();
                true
            }
            _ => false,
        }
    }

    /// True once [`Node::shutdown`] began.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutting_down.borrow()
    }

    /// Prepares the node's process to exit leaving its services running
    /// (live restore; the caller then exits without stopping them): new
    /// work is refused, running executions whose command runs under a
    /// keeper are left running for the next agent, the others get
    /// `deadline` to finish (then are cancelled), and the supervision
    /// state is written, so the next agent on the same state directory
    /// continues from it and adopts the services and the executions.
    pub async fn detach(&self, deadline: Duration) {
        if self.inner.shutting_down.send_replace(true) {
            return;
        }
        tracing::info!(node = %self.inner.name, "leaving: services keep running for the next agent");
        self.inner.executor.leave().await;
        let bound = deadline.saturating_add(Duration::from_secs(60));
        if tokio::time::timeout(bound, self.inner.executor.shutdown(deadline))
            .await
            .is_err()
        {
            self.inner.executor.kill().await;
        }
        if let Some(store) = &self.inner.supervision
            && let Err(e) = store.flush().await
        {
            tracing::warn!(error = %e, "failed to write the supervision state");
        }
    }

    /// Refuses new work, lets running executions finish within `deadline`
    /// (then cancels them), stops the services in dependency waves with
    /// each replica's grace, then the node's parts. Later calls wait for
    /// the first.
    pub async fn shutdown(&self, deadline: Duration) {
        let first = !self.inner.shutting_down.send_replace(true);
        if !first {
            self.inner.root.wait().await;
            return;
        }
        tracing::info!(node = %self.inner.name, "shutting down");
        // A cluster member says it leaves, so that the others place its
        // replicas now rather than after the grace.
        if self.inner.clustered {
            let _ = self
                .inner
                .cluster_part
                .call(
                    crate::actors::cluster_actor::ClusterMsg::Leave,
                    Some(Duration::from_secs(3)),
                )
                .await;
        }
        // Bounded: executions get the deadline, then their cancel with its
        // grace (a minute at most); past that the executor and its job
        // actors are killed and their drop guards abandon the containers.
        let bound = deadline.saturating_add(Duration::from_secs(60));
        if tokio::time::timeout(bound, self.inner.executor.shutdown(deadline))
            .await
            .is_err()
        {
            tracing::warn!(node = %self.inner.name, "executions did not end in time; killing them");
            self.inner.executor.kill().await;
            if let Some(jobs) = self.inner.jobs.last() {
                jobs.kill();
            }
        }
        match self.inner.deployment.resolve(RESTART_PATIENCE).await {
            Ok(actor) => {
                let _ = actor.call(DeploymentMsg::StopAll, None).await;
            }
            Err(PartError::Restarting(_) | PartError::Timeout { .. }) => {
                tracing::warn!(node = %self.inner.name, "the deployment actor is down; services stop with the root");
            }
        }
        self.inner.root.shutdown().await;
        if let Some(store) = &self.inner.supervision {
            store.stopped();
        }
        if let Some(store) = &self.inner.supervision
            && let Err(e) = store.flush().await
        {
            tracing::warn!(error = %e, "failed to write the supervision state");
        }
        if self.inner.own_overlay {
            self.inner.overlay.shutdown().await;
        }
        tracing::info!(node = %self.inner.name, "stopped");
    }

    fn refuse_when_stopping(&self) -> Result<(), Error> {
        if self.is_shutting_down() {
            Err(Error::ShuttingDown)
        } else {
            Ok(())
        }
    }
}

fn service_info(tree: TreeNode) -> ServiceInfo {
    let replicas = tree
        .children
        .iter()
        .filter(|c| c.kind == ChildKind::Container || c.kind == ChildKind::Worker)
        .count();
    let running = tree
        .children
        .iter()
        .filter(|c| c.state == ChildState::Running)
        .count();
    let ready = tree
        .children
        .iter()
        .filter(|c| c.state == ChildState::Running && c.ready != Some(false))
        .count();
    let restarts = tree.restarts + tree.children.iter().map(|c| c.restarts).sum::<u32>();
    let next_restart = tree.children.iter().filter_map(|c| c.next_restart).min();
    let backing_off = tree
        .children
        .iter()
        .any(|c| c.state == ChildState::CrashLoopBackOff);
    let failed = tree.children.iter().any(|c| c.state == ChildState::Failed);
    let status = match tree.state {
        ChildState::Running if backing_off => "crash_loop_back_off".to_owned(),
        ChildState::Running if failed && running == 0 => "failed".to_owned(),
        ChildState::Running if failed => "degraded".to_owned(),
        ChildState::Running if replicas > 0 && running == replicas => "running".to_owned(),
        ChildState::Running if running > 0 => "degraded".to_owned(),
        ChildState::Running
            if tree
                .children
                .iter()
                .all(|c| c.state == ChildState::Shutdown) =>
        {
            "shutdown".to_owned()
        }
        ChildState::Running if replicas == 0 => "running".to_owned(),
        ChildState::Running => "starting".to_owned(),
        ChildState::Starting if tree.status.is_some() => "waiting".to_owned(),
        other => other.to_string(),
    };
    let reason = match (tree.state, &tree.last_exit) {
        (ChildState::Starting, _) if tree.status.is_some() => tree.status.clone(),
        (ChildState::Failed, Some(crate::ChildExit::Failed { reason })) => Some(reason.clone()),
        (ChildState::Failed, exit) => exit.as_ref().map(ToString::to_string),
        _ => tree
            .children
            .iter()
            .filter(|c| c.state != ChildState::Running)
            .find_map(|c| match (&c.status, &c.last_exit) {
                (Some(s), Some(e)) if c.state == ChildState::Failed => {
                    Some(format!("{}: {s} (last exit: {e})", c.name))
                }
                (_, e) => e.as_ref().map(|e| format!("{}: {e}", c.name)),
            }),
    };
    ServiceInfo {
        name: tree.name.clone(),
        state: tree.state,
        running,
        replicas,
        ready,
        restarts,
        status,
        next_restart,
        reason,
        tree,
    }
}
