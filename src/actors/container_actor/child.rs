//! How a container becomes a supervised child: the child spec whose start
//! spawns a container actor and has it start the container, a service as a
//! supervisor of replicas, and a deployment's service as such a supervisor.
//!
//! These live beside the container actor so the supervisor stays generic:
//! it only sees a spawn closure, a child kind and a kill margin.

use std::{sync::Arc, time::Duration};

use ractor::{Actor, ActorCell, ActorProcessingErr, rpc::CallResult};

use super::{ContainerActor, ContainerArgs, ContainerMsg, HealthSink, Msg, Probes};
use crate::{
    actors::supervisor_actor::{ChildContext, ChildKind, ChildSpec, SupervisorSpec, spawn_reason},
    runtime::{ContainerSpec, Runtime},
    spec::{PanicAction, ServiceSpec, Shutdown, SpecError},
};

/// Time a container actor gets, past its grace period, to kill, reap and
/// remove its processes before the supervisor kills the actor.
const CONTAINER_KILL_MARGIN: Duration = Duration::from_secs(5);

impl ChildSpec {
    /// A container (or host process) run through `runtime`, owned by a
    /// container actor. Its start pulls, creates and starts the container
    /// (in the supervisor's start task, never its handler); a failure there
    /// is a failed start. Its shutdown timeout is the container's grace
    /// period (SIGTERM, then SIGKILL); `brutal_kill` kills it at once.
    pub fn container(
        id: impl Into<String>,
        runtime: Arc<dyn Runtime>,
        spec: ContainerSpec,
    ) -> Self {
        Self::probed_container(id, runtime, spec, Arc::default())
    }

    /// A container (see [`ChildSpec::container`]) whose health `probes`
    /// check: a failing liveness or startup probe fails the child; with a
    /// readiness or startup probe it is ready only once they pass.
    pub fn probed_container(
        id: impl Into<String>,
        runtime: Arc<dyn Runtime>,
        spec: ContainerSpec,
        probes: Arc<Probes>,
    ) -> Self {
        let spec = Arc::new(spec);
        let checked = spec.clone();
        let gated = probes.gate_readiness();
        let mut child = Self::new(id, move |ctx: ChildContext| {
            let runtime = runtime.clone();
            let spec = (*spec).clone();
            let probes = probes.clone();
            async move { start(ctx, runtime, spec, probes).await }
        });
        child.kind = ChildKind::Container;
        child.gated = gated;
        child.kill_margin = CONTAINER_KILL_MARGIN;
        child.checks = Some(Arc::new(move || {
            checked
                .validate()
                .into_iter()
                .map(|e| e.within("container"))
                .collect()
        }));
        child
    }
}

impl SupervisorSpec {
    /// A service: `replicas` copies of `container`, named `<name>-<i>`, as
    /// container children of a supervisor named `name`. The replicas are
    /// independent: they start and stop concurrently.
    pub fn service(
        name: impl Into<String>,
        runtime: Arc<dyn Runtime>,
        container: ContainerSpec,
        replicas: usize,
    ) -> Self {
        Self::probed_service(name, runtime, container, replicas, Arc::default())
    }

    /// A service (see [`SupervisorSpec::service`]) whose replicas `probes` check.
    pub fn probed_service(
        name: impl Into<String>,
        runtime: Arc<dyn Runtime>,
        container: ContainerSpec,
        replicas: usize,
        probes: Arc<Probes>,
    ) -> Self {
        Self::service_replicas(name, runtime, container, replicas, probes, |_| None)
    }

    /// A service whose replica `id` writes its output to `output(id)`.
    pub(crate) fn service_replicas(
        name: impl Into<String>,
        runtime: Arc<dyn Runtime>,
        container: ContainerSpec,
        replicas: usize,
        probes: Arc<Probes>,
        output: impl Fn(&str) -> Option<crate::runtime::Output>,
    ) -> Self {
        let name = name.into();
        let children = (0..replicas).map(|i| {
            let id = format!("{name}-{i}");
            let mut spec = container.clone();
            if let Some(o) = output(&id) {
                spec.output = Some(o);
            }
            spec.name = id.clone();
            spec.labels.insert("service".into(), name.clone());
            spec.labels.insert("replica".into(), i.to_string());
            ChildSpec::probed_container(id, runtime.clone(), spec, probes.clone())
        });
        Self::new(name.clone()).children(children).concurrent(true)
    }
}

impl ServiceSpec {
    /// The probes of every replica.
    pub fn probes(&self) -> Probes {
        Probes {
            liveness: self.liveness.clone(),
            readiness: self.readiness.clone(),
            startup: self.startup.clone(),
            notify: self.notify,
            watchdog: self.watchdog,
            notify_dir: None,
        }
    }

    /// The container every replica of service `name` runs. Reads the env
    /// files now (see [`ServiceSpec::resolved_env`]).
    pub fn container_spec(&self, name: &str) -> Result<ContainerSpec, SpecError> {
        Ok(ContainerSpec {
            name: name.to_owned(),
            image: self.image.clone(),
            command: self.command.clone(),
            env: self.resolved_env(name)?,
            inherit_env: self.inherit_env,
            cwd: self.cwd.clone(),
            labels: self.labels.clone(),
            netns: None,
            dns_search: Vec::new(),
            pull_policy: self.pull_policy,
            runtime: self.runtime,
            resources: self.resources,
            user: self.user.clone(),
            hostname: self.hostname.clone(),
            mounts: self.mounts.clone(),
            output: None,
            live_restore: true,
            stop_grace: Some(self.stop_timeout),
        })
    }

    /// The supervisor of service `name`: `replicas` containers (see
    /// [`SupervisorSpec::service`]) with this service's flags, and each
    /// replica's restart type, panic action, exit rules and shutdown. Reads
    /// the env files now (see [`container_spec`](Self::container_spec)).
    pub fn supervisor_spec(
        &self,
        name: &str,
        runtime: Arc<dyn Runtime>,
    ) -> Result<SupervisorSpec, SpecError> {
        self.supervisor_spec_in(name, runtime, None)
    }

    /// [`supervisor_spec`](Self::supervisor_spec) whose replicas keep their
    /// output under `state_dir` (see [`crate::store::service_log`]); a log
    /// directory that cannot be made is logged, and that replica's output
    /// is then kept in memory only.
    pub fn supervisor_spec_in(
        &self,
        name: &str,
        runtime: Arc<dyn Runtime>,
        state_dir: Option<&std::path::Path>,
    ) -> Result<SupervisorSpec, SpecError> {
        let container = self.container_spec(name)?;
        let limits = self.logs;
        let secrets: Vec<String> = self
            .mask
            .iter()
            .filter_map(|k| container.env.get(k).cloned())
            .collect();
        let output = |replica: &str| {
            let dir = crate::store::service_log::replica_dir(state_dir?, name, replica);
            match crate::store::service_log::ServiceLog::open(&dir, limits) {
                Ok(log) if secrets.is_empty() => Some(log.output()),
                Ok(log) => Some(crate::runtime::Output::new(crate::store::Redacting::new(
                    log,
                    secrets.clone(),
                ))),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "failed to open a replica's log files; its output is kept in memory only");
                    None
                }
            }
        };
        let (restart, on_panic, rules, shutdown) = (
            self.restart,
            self.on_panic,
            self.exit_rules(),
            self.shutdown(),
        );
        let mut probes = self.probes();
        probes.notify_dir = state_dir.map(|d| d.join("notify"));
        let spec = SupervisorSpec::service_replicas(
            name,
            runtime,
            container,
            self.replicas,
            Arc::new(probes),
            output,
        )
        .flags(self.flags())
        .concurrent(true)
        .map_children(|child| {
            child
                .restart(restart)
                .on_panic(on_panic)
                .exit_rules(rules.clone())
                .shutdown(shutdown)
        });
        Ok(if self.on_failure.is_empty() {
            spec
        } else {
            let argv = self.on_failure.clone();
            spec.on_fail(move |g| {
                crate::hooks::spawn_failure_hook(argv.clone(), crate::hooks::ServiceFailed::from(g))
            })
        })
    }
}

/// Starts a container child: spawns its actor linked to the supervisor
/// (no I/O), then has it pull, create and start the container. On a
/// failure the actor is unlinked first (its end is no exit of a running
/// child) and stopped, which removes whatever was created.
async fn start(
    ctx: ChildContext,
    runtime: Arc<dyn Runtime>,
    mut spec: ContainerSpec,
    probes: Arc<Probes>,
) -> Result<ActorCell, ActorProcessingErr> {
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
        probes,
        health_sink: Some(HealthSink {
            supervisor: ctx.supervisor.clone(),
            service: ctx.service.clone(),
            child: ctx.id.clone(),
            events: ctx.events.clone(),
        }),
    };
    let (actor, _) =
        ContainerActor::spawn_linked(None, ContainerActor, args, ctx.supervisor.clone())
            .await
            .map_err(spawn_reason)?;
    let failed = match actor.call(|r| ContainerMsg(Msg::Start(r)), None).await {
        Ok(CallResult::Success(Ok(()))) => return Ok(actor.get_cell()),
        Ok(CallResult::Success(Err(e))) => e,
        Ok(_) | Err(_) => format!("the container actor of {} ended while starting", ctx.id),
    };
    actor.unlink(ctx.supervisor);
    actor.stop(Some("failed to start".into()));
    let _ = actor.get_cell().wait(None).await;
    Err(failed.into())
}
