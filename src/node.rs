//! [`Node`]: the facade an application embeds, and the whole of what the
//! agent, its HTTP API and the CLI use.
//!
//! A node is a root supervisor with one service supervisor per service
//! (started in dependency order, stopped in reverse), the executor with its
//! job supervisor and cron actor, and the overlay actor. Build it with a
//! runtime and a state dir, deploy services and jobs (from a spec file or
//! from code), trigger and control executions, follow events, read the
//! tree, and shut it down gracefully.
//!
//! The executor and the overlay actor are started beside the root
//! supervisor rather than as its children: job actors and handles hold
//! their addresses, which a restart would change. Their failure is reported
//! by [`Node::health`].

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::{
    actors::{
        executor_actor::{Executor, ExecutorConfig},
        overlay_actor::{Disabled, Overlay, OverlayConfig},
        supervisor_actor::{
            ChildKind, ChildSpec, ChildState, SupervisorRef, SupervisorSpec, TreeNode,
        },
    },
    cron::{Clock, SystemClock},
    error::Error,
    events::{EventBus, EventStream},
    overlay::{LinuxBridge, NetworkMode, can_use_bridges},
    runtime::Runtime,
    spec::{Deployment, SpecErrors, Strategy, SupervisorFlags},
    tokens::{NoTokens, TokenSink},
};

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
    /// Restarts of its replicas (and of the service supervisor itself).
    pub restarts: u32,
    /// What it does, in a word: `running` (every replica runs),
    /// `degraded` (some do), `starting`, `crash_loop_back_off` (a replica
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

/// The services a node runs, in start order, and the deployment applied.
#[derive(Default)]
pub(crate) struct Deployed {
    order: Vec<String>,
    current: Deployment,
}

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
    events: EventBus,
    runtime: Arc<dyn Runtime>,
    /// Serializes deploys and reloads; holds the names of the services in
    /// start order and the deployment they came from.
    services: Mutex<Deployed>,
    shutting_down: tokio::sync::watch::Sender<bool>,
}

/// Starts the overlay actor `mode` asks for. `Auto` without root, or when
/// netlink cannot be opened, falls back to no networking and says so once.
pub async fn start_overlay(mode: NetworkMode, config: OverlayConfig) -> Result<Overlay, Error> {
    let failed =
        |e: &dyn std::fmt::Display| Error::Start(format!("failed to start the overlay actor: {e}"));
    let bridge = match mode {
        NetworkMode::None => None,
        NetworkMode::Bridge if !can_use_bridges() => {
            return Err(Error::Start(
                "failed to start the overlay actor: --network bridge needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN)".into(),
            ));
        }
        NetworkMode::Bridge => Some(LinuxBridge::new().map_err(|e| failed(&e))?),
        NetworkMode::Auto if !can_use_bridges() => {
            tracing::warn!(
                "networking disabled: not running as root; jobs run on the node's network and their `network` fields are ignored (pass --network none to say so)"
            );
            None
        }
        NetworkMode::Auto => match LinuxBridge::new() {
            Ok(b) => Some(b),
            Err(e) => {
                tracing::warn!(error = %e, "networking disabled: netlink is not available");
                None
            }
        },
    };
    match bridge {
        Some(b) => {
            tracing::info!(prefix = %config.prefix, pool = %config.pool, "networking: linux bridges");
            Overlay::start_with(b, config).await.map_err(|e| failed(&e))
        }
        None => Overlay::start(Disabled).await.map_err(|e| failed(&e)),
    }
}

impl Node {
    /// Starts the root supervisor, the overlay actor and the executor (which
    /// reloads the history kept in the state dir).
    pub async fn start(config: NodeConfig) -> Result<Self, Error> {
        // Restart storms of panicking children stay cheap (see `panics`).
        crate::panics::install();
        let events = EventBus::new();
        let overlay = match config.overlay {
            Some(o) => o,
            None => {
                let mut oc = config.overlay_config.clone();
                if oc.state_file.is_none() {
                    oc.state_file = config.state_dir.as_ref().map(|d| d.join("overlay.json"));
                }
                start_overlay(config.network, oc).await?
            }
        };
        let mut exec = ExecutorConfig::new(config.runtime.clone())
            .overlay(overlay.clone())
            .events(events.clone());
        exec.tokens = config.tokens;
        exec.clock = config.clock;
        exec.state_dir = config.state_dir.clone();
        let executor = Executor::start(exec).await?;
        let mut flags = config.flags;
        flags.strategy = Strategy::OneForOne;
        let (root, _) = SupervisorRef::start_with_events(
            SupervisorSpec::new(&config.name).flags(flags),
            events.clone(),
        )
        .await?;
        Ok(Self {
            inner: Arc::new(Inner {
                name: config.name,
                state_dir: config.state_dir,
                root,
                executor,
                overlay,
                events,
                runtime: config.runtime,
                services: Mutex::new(Deployed::default()),
                shutting_down: tokio::sync::watch::Sender::new(false),
            }),
        })
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Where execution records and logs are kept (`None`: in memory only).
    pub fn state_dir(&self) -> Option<&std::path::Path> {
        self.inner.state_dir.as_deref()
    }

    /// The executor: jobs, executions, schedules.
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

    /// Every supervisor and job event from now on.
    pub fn events(&self) -> EventStream {
        self.inner.events.subscribe()
    }

    /// The event bus (to publish into, or subscribe).
    pub fn event_bus(&self) -> &EventBus {
        &self.inner.events
    }

    /// Starts a service: a supervisor named `name` under the root, after the
    /// services already running.
    pub async fn start_service(&self, name: &str, spec: SupervisorSpec) -> Result<(), Error> {
        self.refuse_when_stopping()?;
        let mut services = self.inner.services.lock().await;
        self.start_service_locked(&mut services.order, name, spec)
            .await
    }

    /// Applies `deployment`: validates it, then stops removed services (in
    /// reverse order), restarts changed ones, starts new ones in dependency
    /// order, and registers, replaces or removes jobs. What did not change
    /// is not touched. The first call deploys everything.
    pub async fn deploy(&self, deployment: &Deployment) -> Result<DeployReport, Error> {
        self.refuse_when_stopping()?;
        deployment.validate()?;
        let mut deployed = self.inner.services.lock().await;
        let diff = deployed.current.diff(deployment);
        let mut report = DeployReport::default();
        // Build every new supervisor spec first: an unreadable env file
        // stops the deploy before anything changed.
        let mut specs = BTreeMap::new();
        for name in diff.services.added.iter().chain(&diff.services.changed) {
            // Replicas of a networked service get their network from a
            // runtime wrapper (namespace, attach before start, detach on remove).
            let runtime = match deployment.service_network(name) {
                Some(net) => Arc::new(crate::overlay::Networked::new(
                    self.inner.runtime.clone(),
                    self.inner.overlay.clone(),
                    deployment.services[name].segment_key(name),
                    net,
                )) as Arc<dyn Runtime>,
                None => self.inner.runtime.clone(),
            };
            let spec = deployment.services[name]
                .supervisor_spec(name, runtime)
                .map_err(|e| {
                    Error::Spec(SpecErrors::from(e.within(&format!("services.{name}"))))
                })?;
            specs.insert(name.clone(), spec);
        }
        // A change of `replicas` alone is applied in place.
        let scaled: Vec<String> = diff
            .services
            .changed
            .iter()
            .filter(|n| {
                let (old, new) = (&deployed.current.services[*n], &deployment.services[*n]);
                let mut same = old.clone();
                same.replicas = new.replicas;
                same == *new
            })
            .cloned()
            .collect();
        let stop: Vec<String> = deployed
            .order
            .iter()
            .rev()
            .filter(|n| {
                diff.services.removed.contains(n)
                    || (diff.services.changed.contains(n) && !scaled.contains(n))
            })
            .cloned()
            .collect();
        for name in &stop {
            self.stop_service_locked(&mut deployed.order, name).await?;
            if diff.services.removed.contains(name) {
                report.services_stopped.push(name.clone());
            }
        }
        for name in diff.services.removed.iter() {
            if !stop.contains(name) {
                report.services_stopped.push(name.clone());
            }
        }
        for name in deployment.start_order() {
            if scaled.iter().any(|s| s == name)
                && let Some(spec) = specs.remove(name)
            {
                self.scale_service(name, spec).await?;
                report.services_scaled.push(name.to_owned());
                continue;
            }
            if let Some(spec) = specs.remove(name) {
                self.start_service_locked(&mut deployed.order, name, spec)
                    .await?;
                if diff.services.changed.iter().any(|c| c == name) {
                    report.services_restarted.push(name.to_owned());
                } else {
                    report.services_started.push(name.to_owned());
                }
            }
        }
        let executor = &self.inner.executor;
        for name in &diff.jobs.removed {
            executor.unregister(name).await?;
            report.jobs_removed.push(name.clone());
        }
        for name in diff.jobs.added.iter().chain(&diff.jobs.changed) {
            let job = deployment
                .job_spec(name)
                .unwrap_or_else(|| deployment.jobs[name].clone());
            executor.register(job).await?;
            report.jobs_registered.push(name.clone());
        }
        report.unchanged = diff
            .services
            .unchanged
            .iter()
            .chain(&diff.jobs.unchanged)
            .cloned()
            .collect();
        deployed.current = deployment.clone();
        tracing::info!(
            started = ?report.services_started,
            stopped = ?report.services_stopped,
            restarted = ?report.services_restarted,
            jobs_registered = ?report.jobs_registered,
            jobs_removed = ?report.jobs_removed,
            "deployment applied"
        );
        Ok(report)
    }

    /// The deployment applied last.
    pub async fn deployment(&self) -> Deployment {
        self.inner.services.lock().await.current.clone()
    }

    /// Stops a service (its replicas in reverse order, each with its grace)
    /// and forgets it.
    pub async fn stop_service(&self, name: &str) -> Result<(), Error> {
        let mut services = self.inner.services.lock().await;
        self.stop_service_locked(&mut services.order, name).await
    }

    /// Restarts every replica of a service (stop in reverse order, start again).
    pub async fn restart_service(&self, name: &str) -> Result<(), Error> {
        self.refuse_when_stopping()?;
        self.inner.root.restart_child(name).await?;
        Ok(())
    }

    /// Gives a running service the replicas of `spec`: the missing ones
    /// start, the extra ones stop (all at once, each with its grace) and
    /// go; the others are not touched. The service keeps `spec` for its
    /// later restarts.
    async fn scale_service(&self, name: &str, spec: SupervisorSpec) -> Result<(), Error> {
        if let Some(service) = self.inner.root.child_supervisor(name).await? {
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
        self.inner
            .root
            .replace_child_spec(service_child(name, spec))
            .await?;
        Ok(())
    }

    pub(crate) async fn start_service_locked(
        &self,
        services: &mut Vec<String>,
        name: &str,
        spec: SupervisorSpec,
    ) -> Result<(), Error> {
        self.inner
            .root
            .start_child(service_child(name, spec))
            .await?;
        services.retain(|s| s != name);
        services.push(name.to_owned());
        Ok(())
    }

    pub(crate) async fn stop_service_locked(
        &self,
        services: &mut Vec<String>,
        name: &str,
    ) -> Result<(), Error> {
        self.inner.root.terminate_child(name).await?;
        self.inner.root.delete_child(name).await?;
        services.retain(|s| s != name);
        Ok(())
    }

    /// The services, in start order.
    pub async fn services(&self) -> Result<Vec<ServiceInfo>, Error> {
        let tree = self.inner.root.snapshot().await?;
        Ok(tree.children.into_iter().map(service_info).collect())
    }

    /// One service.
    pub async fn service(&self, name: &str) -> Result<Option<ServiceInfo>, Error> {
        let tree = self.inner.root.snapshot().await?;
        Ok(tree
            .children
            .into_iter()
            .find(|c| c.name == name)
            .map(service_info))
    }

    /// The whole tree: the root with its services, and the executor's job
    /// supervisor with one child per running execution.
    pub async fn tree(&self) -> Result<TreeNode, Error> {
        let mut tree = self.inner.root.snapshot().await?;
        let jobs = self.inner.executor.job_supervisor().await?;
        let mut jobs = jobs.snapshot().await?;
        jobs.name = "executor/jobs".into();
        tree.children.push(jobs);
        Ok(tree)
    }

    /// Whether every part answers.
    pub async fn health(&self) -> Health {
        // A part busy for more than a second (a supervisor stopping a
        // child with a long grace answers nothing until it is done) counts
        // as not answering; health itself never hangs.
        const PATIENCE: Duration = Duration::from_secs(1);
        let (supervisor, executor, overlay) = tokio::join!(
            tokio::time::timeout(PATIENCE, self.inner.root.count_children()),
            tokio::time::timeout(PATIENCE, self.inner.executor.active_count()),
            tokio::time::timeout(PATIENCE, self.inner.overlay.list()),
        );
        let mut parts = BTreeMap::new();
        parts.insert("supervisor".into(), matches!(supervisor, Ok(Ok(_))));
        parts.insert("executor".into(), matches!(executor, Ok(Ok(_))));
        parts.insert("overlay".into(), matches!(overlay, Ok(Ok(_))));
        let shutting_down = *self.inner.shutting_down.borrow();
        Health {
            ok: !shutting_down && parts.values().all(|v| *v),
            shutting_down,
            parts,
        }
    }

    /// True once [`Node::shutdown`] began.
    pub fn is_shutting_down(&self) -> bool {
        *self.inner.shutting_down.borrow()
    }

    /// Refuses new work, lets running executions finish within `deadline`
    /// (then cancels them), stops the services in reverse start order with
    /// each replica's grace, then the overlay actor. Later calls wait for
    /// the first.
    pub async fn shutdown(&self, deadline: Duration) {
        let first = !self.inner.shutting_down.send_replace(true);
        if !first {
            self.inner.root.wait().await;
            return;
        }
        tracing::info!(node = %self.inner.name, "shutting down");
        let mut services = self.inner.services.lock().await;
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
        }
        // Services stop in waves: a service once every service that depends
        // on it has stopped, and the services of a wave all at once (the
        // root answers while their graces run).
        let mut left = services.order.clone();
        while !left.is_empty() {
            let wave = stop_wave(&left, &services.current);
            let stops = wave.iter().map(|name| async move {
                let result = match self.inner.root.terminate_child(name).await {
                    Ok(()) => self.inner.root.delete_child(name).await,
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    tracing::warn!(service = %name, error = %e, "failed to stop a service");
                }
            });
            futures::future::join_all(stops).await;
            left.retain(|s| !wave.contains(s));
            services.order.retain(|s| !wave.contains(s));
        }
        self.inner.root.shutdown().await;
        self.inner.overlay.shutdown().await;
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

/// A service's supervisor as the root's child: one that gives up ends
/// `failed` alone (panic action `fail`), never restarted by the root.
fn service_child(name: &str, spec: SupervisorSpec) -> ChildSpec {
    ChildSpec::supervisor(name, spec).on_panic(crate::spec::PanicAction::Fail)
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
    let restarts = tree.restarts + tree.children.iter().map(|c| c.restarts).sum::<u32>();
    let next_restart = tree.children.iter().filter_map(|c| c.next_restart).min();
    let backing_off = tree
        .children
        .iter()
        .any(|c| c.state == ChildState::CrashLoopBackOff);
    let status = match tree.state {
        ChildState::Running if backing_off => "crash_loop_back_off".to_owned(),
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
        other => other.to_string(),
    };
    let reason = match (tree.state, &tree.last_exit) {
        (ChildState::Failed, Some(crate::ChildExit::Failed { reason })) => Some(reason.clone()),
        (ChildState::Failed, exit) => exit.as_ref().map(ToString::to_string),
        _ => tree
            .children
            .iter()
            .filter(|c| c.state != ChildState::Running)
            .find_map(|c| c.last_exit.as_ref().map(|e| format!("{}: {e}", c.name))),
    };
    ServiceInfo {
        name: tree.name.clone(),
        state: tree.state,
        running,
        replicas,
        restarts,
        status,
        next_restart,
        reason,
        tree,
    }
}
