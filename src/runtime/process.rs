//! Host processes as containers: the embedded default runtime, no root needed.
//!
//! An "image" is a command: argv, environment and working directory. Each
//! container is one process group (`process_group(0)`, which keeps std's
//! fast `posix_spawn` path), so a signal reaches everything the command
//! started:
//! - **stop** sends SIGTERM to the group and waits up to the grace period for
//!   the whole group to end, then sends SIGKILL to the group;
//! - **exit detection is event-driven**: tokio waits on the main process
//!   through a pidfd, so an exit is seen within a fraction of a millisecond;
//!   no loop polls for it;
//! - **nothing outlives its container**: when the main process exits on its
//!   own, what it left in its group is killed (as a container's processes die
//!   with its init), and every orphan is reaped by the reaper (`process/reaper.rs`) (the node
//!   makes itself a child subreaper), so no zombie is left;
//! - **as root**, each container also gets its own cgroup v2 (`process/cgroup.rs`), and
//!   stops end with `cgroup.kill`, so even a grandchild that called `setsid`
//!   is killed. Without root such a grandchild escapes the group: it survives
//!   the stop and is not reaped (run as root, or do not daemonize).
//!
//! stdout and stderr are read line by line into a bounded [`LogBuffer`].
//!
//! The container table is owned by one task (`owned.rs`); each container's
//! lifecycle is a `watch` channel that `wait`, `stop` and `remove` subscribe
//! to.

mod cgroup;
mod entry;
mod exec;
mod kept;
pub mod limits;
pub mod procfs;
mod reaper;
mod resources;
mod spawn;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::watch;

use self::{
    cgroup::Cgroups,
    entry::{Entry, ProcState},
    reaper::Reaper,
    spawn::{image_refused, missing_cwd, resolve_program},
};
pub use super::keeper::Keepers;
use super::{
    Cause, ContainerId, ContainerSpec, ContainerState, ExecOutput, ExitStatus, LogBuffer, LogQuery,
    Logs, Op, Runtime, RuntimeError, Signal, StopOutcome, check_spec,
};
use crate::owned::Owned;

/// How long `remove` waits for a container's last processes to be reaped
/// before it gives up on them (they are then held by a process outside the
/// container, which arbor cannot reap).
const DRAIN_LIMIT: Duration = Duration::from_secs(10);

/// How long reading the logs of an exited container waits for its pipes to
/// be read to the end.
const LOG_SETTLE: Duration = Duration::from_millis(500);

/// Runs containers as host processes. Cheap to clone; clones share the table.
#[derive(Clone)]
pub struct ProcessRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    table: Owned<BTreeMap<ContainerId, Arc<Entry>>>,
    reaper: Reaper,
    cgroups: Option<Cgroups>,
    /// Where `resources` limits go (root only).
    limiter: Option<resources::Limiter>,
    log_lines: usize,
    log_bytes: usize,
    echo_output: bool,
    keepers: Option<Keepers>,
    left: kept::LeftTable,
}

/// Options of a [`ProcessRuntime`].
#[derive(Debug, Clone)]
pub struct ProcessRuntimeBuilder {
    cgroups: bool,
    log_lines: usize,
    log_bytes: usize,
    echo_output: bool,
    keepers: Option<Keepers>,
}

impl Default for ProcessRuntimeBuilder {
    fn default() -> Self {
        Self {
            cgroups: true,
            log_lines: 1000,
            log_bytes: 256 * 1024,
            echo_output: false,
            keepers: None,
        }
    }
}

impl ProcessRuntimeBuilder {
    /// Whether to put containers in cgroups when running as root (default true).
    pub fn cgroups(mut self, enabled: bool) -> Self {
        self.cgroups = enabled;
        self
    }

    /// How many lines and bytes of output to keep per container.
    pub fn log_limits(mut self, lines: usize, bytes: usize) -> Self {
        self.log_lines = lines;
        self.log_bytes = bytes;
        self
    }

    /// Also copies every line the containers write to the node's own stdout
    /// and stderr, behind `<container name> | ` (for foreground tools and
    /// examples; default false: output is only kept in the log tail).
    pub fn echo_output(mut self, enabled: bool) -> Self {
        self.echo_output = enabled;
        self
    }

    /// Starts containers whose spec asks for it (`live_restore`, set for
    /// service replicas) through keepers, so that they outlive this
    /// runtime's process and the next one on the same keepers directory
    /// adopts them ([`Runtime::adopt`]); see `runtime/process/keeper.rs`.
    /// Default: none (every container ends with the runtime).
    pub fn keepers(mut self, keepers: Keepers) -> Self {
        self.keepers = Some(keepers);
        self
    }

    /// Builds the runtime: makes the node a child subreaper, creates its
    /// cgroup directory when root, and starts its tasks. Must be called
    /// inside a tokio runtime.
    pub fn build(self) -> Result<ProcessRuntime, RuntimeError> {
        let setup = |context: &str, e: std::io::Error| {
            RuntimeError::new(Op::Create, "<runtime>", Cause::io(context, e))
        };
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "could not become a child subreaper; orphans of containers will be reaped by PID 1");
        }
        let cgroups = if self.cgroups {
            match Cgroups::detect(&super::keeper::kept_cgroups(self.keepers.as_ref())) {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cgroup v2 unavailable; containers use process groups only");
                    None
                }
            }
        } else {
            None
        };
        let limiter = (self.cgroups && nix::unistd::geteuid().is_root())
            .then(|| {
                resources::Limiter::detect(
                    cgroups
                        .as_ref()
                        .and_then(|c| Some((c.base().parent()?, c.base()))),
                )
            })
            .flatten();
        let reaper = Reaper::spawn(cgroups.as_ref().map(|c| c.base().to_path_buf()))
            .map_err(|e| setup("failed to listen for SIGCHLD", e))?;
        Ok(ProcessRuntime {
            shared: Arc::new(Shared {
                table: Owned::spawn(BTreeMap::new()),
                reaper,
                cgroups,
                limiter,
                log_lines: self.log_lines,
                log_bytes: self.log_bytes,
                echo_output: self.echo_output,
                keepers: self.keepers,
                left: kept::LeftTable::new(),
            }),
        })
    }
}

impl ProcessRuntime {
    /// A runtime with the default options (see [`ProcessRuntimeBuilder::build`]).
    pub fn new() -> Result<Self, RuntimeError> {
        ProcessRuntimeBuilder::default().build()
    }

    /// Options.
    pub fn builder() -> ProcessRuntimeBuilder {
        ProcessRuntimeBuilder::default()
    }

    /// True when containers are placed in cgroups (running as root on cgroup v2).
    pub fn uses_cgroups(&self) -> bool {
        self.shared.cgroups.is_some()
    }

    /// Every container the runtime holds, with its state.
    pub async fn containers(&self) -> Vec<(ContainerId, ContainerState)> {
        self.shared
            .table
            .call(|t| {
                t.values()
                    .map(|e| (e.id.clone(), e.container_state()))
                    .collect()
            })
            .await
            .unwrap_or_default()
    }

    /// Stops every running container (with `grace`) and removes every
    /// container, and stops what previous agents left that nobody adopted;
    /// returns how many it removed.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.release_unadopted().await;
        let ids: Vec<ContainerId> = self
            .shared
            .table
            .call(|t| t.keys().cloned().collect())
            .await
            .unwrap_or_default();
        super::stop_and_remove_all(self, &ids, grace).await
    }

    async fn entry(&self, op: Op, id: &ContainerId) -> Result<Arc<Entry>, RuntimeError> {
        let key = id.clone();
        self.shared
            .table
            .call(move |t| t.get(&key).cloned())
            .await
            .ok_or_else(|| RuntimeError::new(op, id, Cause::Closed))?
            .ok_or_else(|| RuntimeError::new(op, id, Cause::NotFound))
    }
}

/// What the service manager (systemd) tells the agent alone: never
/// inherited by a container, which gets its own `NOTIFY_SOCKET` when it
/// asks for one (`notify: true`).
const SERVICE_MANAGER_VARS: [&str; 6] = [
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
    "LISTEN_FDS",
    "LISTEN_PID",
    "LISTEN_FDNAMES",
];

/// The first limit set in `r` (field, value), if any.
fn limited_field(r: &crate::spec::Resources) -> Option<(&'static str, String)> {
    if let Some(m) = r.memory {
        return Some(("memory", m.to_string()));
    }
    if let Some(c) = r.cpus {
        return Some(("cpus", c.to_string()));
    }
    r.pids.map(|p| ("pids", p.to_string()))
}

fn new_id(name: &str) -> ContainerId {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(48)
        .collect();
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    ContainerId(format!("{clean}-{}", &uuid[..12]))
}

#[async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    async fn pull_image(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        let fail = |cause| RuntimeError::new(Op::Pull, &spec.name, cause);
        if let Some(image) = &spec.image {
            return Err(fail(image_refused(image)));
        }
        check_spec(spec).map_err(|e| fail(e.cause))?;
        resolve_program(spec).map(|_| ()).map_err(fail)
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        if let Some(image) = &spec.image {
            // Without this an image spec with no argv would be accepted and
            // only fail (or worse) at `start`.
            return Err(RuntimeError::new(
                Op::Create,
                &spec.name,
                image_refused(image),
            ));
        }
        check_spec(spec)?;
        if let Some(dir) = &spec.cwd
            && !dir.is_dir()
        {
            return Err(RuntimeError::new(Op::Create, &spec.name, missing_cwd(dir)));
        }
        if let Some(ns) = &spec.netns {
            spawn::check_netns(ns).map_err(|c| RuntimeError::new(Op::Create, &spec.name, c))?;
        }
        if self.shared.limiter.is_none()
            && let Some(field) = limited_field(&spec.resources)
        {
            return Err(RuntimeError::new(
                Op::Create,
                &spec.name,
                Cause::Spec(crate::spec::SpecErrors::from(crate::spec::SpecError::new(
                    format!("resources.{}", field.0),
                    field.1,
                    "the process runtime sets limits through cgroups, which needs root (run the agent as root, or use the oci runtime)",
                ))),
            ));
        }
        let id = new_id(&spec.name);
        let entry = Arc::new(Entry {
            id: id.clone(),
            program: resolve_program(spec).ok(),
            spec: spec.clone(),
            state: watch::Sender::new(ProcState::Created),
            drained: watch::Sender::new(false),
            stopping: AtomicBool::new(false),
            logs: LogBuffer::new(self.shared.log_lines, self.shared.log_bytes),
            run: OnceLock::new(),
        });
        let key = id.clone();
        self.shared
            .table
            .call(move |t| t.insert(key, entry))
            .await
            .ok_or_else(|| RuntimeError::new(Op::Create, &spec.name, Cause::Closed))?;
        Ok(id)
    }

    async fn start(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let entry = self.entry(Op::Start, id).await?;
        let claimed = entry.state.send_if_modified(|s| {
            let created = *s == ProcState::Created;
            if created {
                *s = ProcState::Starting;
            }
            created
        });
        if !claimed {
            return Err(RuntimeError::new(
                Op::Start,
                id,
                Cause::InvalidState {
                    state: entry.state_name(),
                    expected: "only a created container can be started",
                },
            ));
        }
        let result = match &self.shared.keepers {
            _ if let Err(e) = limits::check_headroom() => Err(RuntimeError::new(
                Op::Start,
                id,
                Cause::io(
                    "not started: the agent keeps its last open files for itself",
                    e,
                ),
            )),
            Some(k) if entry.spec.live_restore && k.fits() => self.spawn_kept(&entry, k).await,
            _ => self.spawn_command(&entry),
        };
        if result.is_err() {
            entry.state.send_replace(ProcState::Created);
        }
        result
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        let entry = self.entry(Op::Stop, id).await?;
        match entry.settled().await {
            ProcState::Created | ProcState::Starting => Err(RuntimeError::new(
                Op::Stop,
                id,
                Cause::InvalidState {
                    state: entry.state_name(),
                    expected: "it was never started",
                },
            )),
            ProcState::Exited { status } => {
                entry.wait_drained(DRAIN_LIMIT).await;
                Ok(StopOutcome {
                    status,
                    killed: false,
                })
            }
            ProcState::Running { .. } => {
                entry.stopping.store(true, Ordering::Release);
                if entry.run.get().is_none() {
                    return Err(RuntimeError::new(Op::Stop, id, Cause::NotFound));
                }
                // No grace (`brutal_kill`): kill at once. A SIGTERM sent
                // first would decide the exit status (a pending fatal signal
                // ends the process with that signal) and start shutdown
                // handlers that SIGKILL then cuts short.
                if !grace.is_zero() {
                    entry.kill(Signal::SIGTERM);
                    // A stopped process (SIGSTOP, SIGTSTP) acts on TERM only
                    // once continued; without this it could only be killed.
                    entry.kill(Signal::SIGCONT);
                }
                let mut killed = false;
                if grace.is_zero() || !entry.wait_drained(grace).await {
                    entry.kill(Signal::SIGKILL);
                    killed = true;
                    if !entry.wait_drained(DRAIN_LIMIT).await {
                        tracing::warn!(container = %id, "processes of the container outlived SIGKILL by {DRAIN_LIMIT:?}");
                    }
                }
                let status = entry
                    .exited()
                    .await
                    .ok_or_else(|| RuntimeError::new(Op::Stop, id, Cause::Closed))?;
                Ok(StopOutcome { status, killed })
            }
        }
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let entry = self.entry(Op::Remove, id).await?;
        match entry.settled().await {
            ProcState::Running { .. } | ProcState::Starting => {
                return Err(RuntimeError::new(
                    Op::Remove,
                    id,
                    Cause::InvalidState {
                        state: entry.state_name(),
                        expected: "stop it first",
                    },
                ));
            }
            ProcState::Exited { .. } => {
                if !entry.wait_drained(DRAIN_LIMIT).await {
                    tracing::warn!(container = %id, "removing a container whose processes are not all reaped (held outside it)");
                }
            }
            ProcState::Created => {}
        }
        if let Some(run) = entry.run.get() {
            // What the process wrote before it ended may still be in its
            // pipes (the readers may not have run yet on a busy node): let
            // them reach the end first, unless something outside the
            // container holds the pipes open.
            let mut eof = run.eof.clone();
            let _ = tokio::time::timeout(LOG_SETTLE, eof.wait_for(|n| *n >= 2)).await;
            for reader in &run.readers {
                reader.abort();
            }
            if let Some(files) = &run.keeper {
                files.remove();
            }
        }
        let key = id.clone();
        self.shared
            .table
            .call(move |t| t.remove(&key))
            .await
            .ok_or_else(|| RuntimeError::new(Op::Remove, id, Cause::Closed))?;
        Ok(())
    }

    async fn wait(&self, id: &ContainerId) -> Result<ExitStatus, RuntimeError> {
        let entry = self.entry(Op::Wait, id).await?;
        if entry.settled().await == ProcState::Created {
            return Err(RuntimeError::new(
                Op::Wait,
                id,
                Cause::InvalidState {
                    state: "created".into(),
                    expected: "it was never started",
                },
            ));
        }
        entry
            .exited()
            .await
            .ok_or_else(|| RuntimeError::new(Op::Wait, id, Cause::Closed))
    }

    async fn state(&self, id: &ContainerId) -> Result<ContainerState, RuntimeError> {
        Ok(self.entry(Op::State, id).await?.container_state())
    }

    async fn pid(&self, id: &ContainerId) -> Result<Option<u32>, RuntimeError> {
        let entry = self.entry(Op::Pid, id).await?;
        let pid = match *entry.state.borrow() {
            ProcState::Running { pid } => Some(pid),
            _ => None,
        };
        Ok(pid)
    }

    async fn signal(&self, id: &ContainerId, signal: Signal) -> Result<(), RuntimeError> {
        let entry = self.entry(Op::Signal, id).await?;
        // Copy the state out first: a `borrow()` in the match scrutinee would
        // hold the read lock through the arms, and `state_name` takes it
        // again, which deadlocks if a writer queued in between.
        let state = *entry.state.borrow();
        match (state, entry.run.get()) {
            (ProcState::Running { .. }, Some(_)) => {
                entry.kill(signal);
                Ok(())
            }
            _ => Err(RuntimeError::new(
                Op::Signal,
                id,
                Cause::InvalidState {
                    state: entry.state_name(),
                    expected: "only a running container can be signalled",
                },
            )),
        }
    }

    async fn adopt(&self, spec: &ContainerSpec) -> Result<Option<ContainerId>, RuntimeError> {
        match &self.shared.keepers {
            Some(k) => self.adopt_kept(spec, k).await,
            None => Ok(None),
        }
    }

    async fn is_kept(&self, id: &ContainerId) -> bool {
        match self.entry(Op::State, id).await {
            Ok(entry) => entry.run.get().is_some_and(|r| r.keeper.is_some()),
            Err(_) => false,
        }
    }

    async fn exec(
        &self,
        id: &ContainerId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let entry = self.entry(Op::Exec, id).await?;
        exec::exec(id, &entry.spec, argv, timeout).await
    }

    async fn oom_killed(&self, id: &ContainerId) -> Result<bool, RuntimeError> {
        let entry = self.entry(Op::State, id).await?;
        Ok(entry
            .run
            .get()
            .and_then(|r| r.limited.as_ref())
            .is_some_and(|l| l.oom_kills() > 0))
    }

    async fn logs(&self, id: &ContainerId, query: LogQuery) -> Result<Logs, RuntimeError> {
        let entry = self.entry(Op::Logs, id).await?;
        let exited = matches!(*entry.state.borrow(), ProcState::Exited { .. });
        if exited && let Some(run) = entry.run.get() {
            // Let the readers drain what the process wrote before it exited.
            let mut eof = run.eof.clone();
            let _ = tokio::time::timeout(LOG_SETTLE, eof.wait_for(|n| *n >= 2)).await;
        }
        Ok(entry.logs.query(query))
    }

    fn abandon(&self, id: &ContainerId) {
        let key = id.clone();
        let table = self.shared.table.clone();
        self.shared.table.cast(move |t| {
            let Some(entry) = t.get(&key).cloned() else {
                return;
            };
            entry.kill_now();
            tokio::spawn(async move {
                // A start in progress finishes first, and what it started is
                // killed too; a container that never ran has nothing to drain
                // (waiting for it would keep it for the whole drain limit).
                if matches!(
                    entry.settled().await,
                    ProcState::Running { .. } | ProcState::Exited { .. }
                ) {
                    entry.kill_now();
                    entry.wait_drained(DRAIN_LIMIT).await;
                }
                if let Some(run) = entry.run.get() {
                    for reader in &run.readers {
                        reader.abort();
                    }
                    if let Some(files) = &run.keeper {
                        files.remove();
                    }
                }
                table.cast(move |t| {
                    t.remove(&key);
                });
            });
        });
    }
}
