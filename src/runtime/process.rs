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
//!   with its init), and every orphan is reaped by the [`reaper`] (the node
//!   makes itself a child subreaper), so no zombie is left;
//! - **as root**, each container also gets its own cgroup v2 ([`cgroup`]), and
//!   stops end with `cgroup.kill`, so even a grandchild that called `setsid`
//!   is killed. Without root such a grandchild escapes the group: it survives
//!   the stop and is not reaped (run as root, or do not daemonize).
//!
//! stdout and stderr are read line by line into a bounded [`LogBuffer`].
//!
//! The container table is owned by one task ([`Owned`]); each container's
//! lifecycle is a `watch` channel that `wait`, `stop` and `remove` subscribe
//! to.

mod cgroup;
pub mod procfs;
mod reaper;

use std::{
    collections::BTreeMap,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use nix::{errno::Errno, sys::signal::killpg, unistd::Pid};
use tokio::{process::Command, sync::watch, task::AbortHandle};

use self::{
    cgroup::{Cgroup, Cgroups},
    reaper::Reaper,
};
use super::{
    Cause, ContainerId, ContainerSpec, ContainerState, ExitStatus, LogBuffer, LogQuery, LogStream,
    Logs, Op, Runtime, RuntimeError, Signal, StopOutcome, check_spec,
};
use crate::{
    owned::Owned,
    spec::{SpecError, SpecErrors},
};

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
    log_lines: usize,
    log_bytes: usize,
    echo_output: bool,
}

/// Options of a [`ProcessRuntime`].
#[derive(Debug, Clone)]
pub struct ProcessRuntimeBuilder {
    cgroups: bool,
    log_lines: usize,
    log_bytes: usize,
    echo_output: bool,
}

impl Default for ProcessRuntimeBuilder {
    fn default() -> Self {
        Self {
            cgroups: true,
            log_lines: 1000,
            log_bytes: 256 * 1024,
            echo_output: false,
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
            match Cgroups::detect() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "cgroup v2 unavailable; containers use process groups only");
                    None
                }
            }
        } else {
            None
        };
        let reaper = Reaper::spawn(cgroups.as_ref().map(|c| c.base().to_path_buf()))
            .map_err(|e| setup("failed to listen for SIGCHLD", e))?;
        Ok(ProcessRuntime {
            shared: Arc::new(Shared {
                table: Owned::spawn(BTreeMap::new()),
                reaper,
                cgroups,
                log_lines: self.log_lines,
                log_bytes: self.log_bytes,
                echo_output: self.echo_output,
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
    /// container; returns how many it removed.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        let ids: Vec<ContainerId> = self
            .shared
            .table
            .call(|t| t.keys().cloned().collect())
            .await
            .unwrap_or_default();
        let stops = ids.iter().map(|id| async move {
            let _ = self.stop(id, grace).await;
            self.remove(id).await.is_ok()
        });
        futures::future::join_all(stops)
            .await
            .into_iter()
            .filter(|removed| *removed)
            .count()
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

    fn spawn_command(&self, entry: &Arc<Entry>) -> Result<(), RuntimeError> {
        let id = &entry.id;
        let spec = &entry.spec;
        let Some(program) = spec.command.first() else {
            // `create` rejects this; never index an empty argv.
            return Err(RuntimeError::new(
                Op::Start,
                id,
                Cause::Spec(SpecErrors::from(SpecError::new(
                    "command",
                    "[]",
                    "must not be empty: give the program and its arguments (argv)",
                ))),
            ));
        };
        let cgroup = match &self.shared.cgroups {
            Some(c) => Some(Arc::new(c.create(&id.0).map_err(|e| {
                RuntimeError::new(Op::Start, id, Cause::io("failed to create its cgroup", e))
            })?)),
            None => None,
        };
        // The program as resolved at `create`: exec'ing a path skips the
        // PATH search (one failed execve per PATH entry on every start).
        let mut cmd = match &entry.program {
            Some(path) => {
                let mut cmd = Command::new(path);
                cmd.arg0(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.args(&spec.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        if !spec.inherit_env {
            cmd.env_clear();
        }
        cmd.envs(&spec.env);
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        if let Some(cg) = &cgroup {
            let fd = cg.procs_fd();
            // SAFETY: runs in the forked child before exec; write(2) is
            // async-signal-safe and `fd` stays open (the parent holds it).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let guard = self.shared.reaper.spawning();
        let mut child = cmd.spawn().map_err(|e| {
            if let Some(cg) = &cgroup {
                cg.remove();
            }
            let cause = match &spec.cwd {
                // The working directory vanished after `create` checked it:
                // exec reports ENOENT, which is not about the program.
                Some(dir) if !dir.is_dir() => missing_cwd(dir),
                _ if e.kind() == std::io::ErrorKind::NotFound => {
                    Cause::CommandNotFound(program.clone())
                }
                _ => Cause::io(format!("failed to spawn {program:?}"), e),
            };
            RuntimeError::new(Op::Start, id, cause)
        })?;
        let Some(pid) = child.id() else {
            // Unreachable for a child that was not waited on; treat it as gone.
            return Err(RuntimeError::new(
                Op::Start,
                id,
                Cause::io("spawned process has no pid", Errno::ESRCH),
            ));
        };
        let pid = pid as i32;
        self.shared.reaper.started(pid);
        drop(guard);

        let (eof_tx, _) = watch::channel(0u8);
        let eof_tx = Arc::new(eof_tx);
        let mut readers = Vec::with_capacity(2);
        let streams = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncReadSend>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn AsyncReadSend>),
        ];
        for (pipe, stream) in streams
            .into_iter()
            .zip([LogStream::Stdout, LogStream::Stderr])
        {
            let logs = entry.logs.clone();
            let eof = eof_tx.clone();
            let echo = self
                .shared
                .echo_output
                .then(|| Arc::from(spec.name.as_str()));
            let task = tokio::spawn(async move {
                if let Some(pipe) = pipe {
                    logs.read_from(pipe, stream, echo).await;
                }
                eof.send_modify(|n| *n += 1);
            });
            readers.push(task.abort_handle());
        }
        let _ = entry.run.set(Run {
            pgid: pid,
            cgroup: cgroup.clone(),
            readers,
            eof: eof_tx.subscribe(),
        });
        entry
            .state
            .send_replace(ProcState::Running { pid: pid as u32 });

        let monitor_entry = entry.clone();
        let reaper = self.shared.reaper.clone();
        tokio::spawn(async move {
            let entry = monitor_entry;
            let status = match child.wait().await {
                Ok(s) => ExitStatus::from(s),
                Err(e) => {
                    tracing::warn!(container = %entry.id, error = %e, "failed to wait for the main process");
                    ExitStatus::Signal(Signal::SIGKILL as i32)
                }
            };
            if !entry.stopping.load(Ordering::Acquire) {
                // The container ends with its main process. The leader was
                // reaped a moment ago: its group id cannot have been reused.
                kill_group(Some(pid), cgroup.as_deref(), Signal::SIGKILL);
            }
            entry.state.send_replace(ProcState::Exited { status });
            let _ = reaper.drain(pid, cgroup).await;
            entry.drained.send_replace(true);
        });
        Ok(())
    }
}

trait AsyncReadSend: tokio::io::AsyncRead + Send + Unpin {}
impl<T: tokio::io::AsyncRead + Send + Unpin> AsyncReadSend for T {}

/// One container: its spec, its lifecycle, and its output.
struct Entry {
    id: ContainerId,
    spec: ContainerSpec,
    /// The program found at `create` (`None`: not found then; `start` then
    /// searches again and reports it missing).
    program: Option<PathBuf>,
    state: watch::Sender<ProcState>,
    /// True once the main process exited and nothing of the container is left.
    drained: watch::Sender<bool>,
    /// Set by `stop` and `abandon`: the exit is expected, the group is being
    /// stopped by them.
    stopping: AtomicBool,
    logs: LogBuffer,
    run: OnceLock<Run>,
}

struct Run {
    pgid: i32,
    cgroup: Option<Arc<Cgroup>>,
    readers: Vec<AbortHandle>,
    /// Counts pipes read to their end (2 when both are done).
    eof: watch::Receiver<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcState {
    Created,
    Starting,
    Running { pid: u32 },
    Exited { status: ExitStatus },
}

impl Entry {
    fn container_state(&self) -> ContainerState {
        match *self.state.borrow() {
            ProcState::Created | ProcState::Starting => ContainerState::Created,
            ProcState::Running { pid } => ContainerState::Running { pid },
            ProcState::Exited { status } => ContainerState::Exited { status },
        }
    }

    fn state_name(&self) -> String {
        match *self.state.borrow() {
            ProcState::Created => "created".into(),
            ProcState::Starting => "starting".into(),
            ProcState::Running { .. } => "running".into(),
            ProcState::Exited { status } => format!("exited ({status})"),
        }
    }

    /// The state once any start in progress has finished.
    async fn settled(&self) -> ProcState {
        let mut rx = self.state.subscribe();
        match rx.wait_for(|s| *s != ProcState::Starting).await {
            Ok(s) => *s,
            Err(_) => *self.state.borrow(),
        }
    }

    async fn exited(&self) -> Option<ExitStatus> {
        let mut rx = self.state.subscribe();
        match rx
            .wait_for(|s| matches!(s, ProcState::Exited { .. }))
            .await
            .ok()
            .map(|s| *s)
        {
            Some(ProcState::Exited { status }) => Some(status),
            _ => None,
        }
    }

    async fn wait_drained(&self, limit: Duration) -> bool {
        let mut rx = self.drained.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|d| *d))
            .await
            .is_ok()
    }

    /// Kills everything in the container now, without waiting.
    fn kill_now(&self) {
        self.stopping.store(true, Ordering::Release);
        let state = *self.state.borrow();
        let drained = *self.drained.borrow();
        if matches!(state, ProcState::Running { .. } | ProcState::Exited { .. }) && !drained {
            self.kill(Signal::SIGKILL);
        }
    }

    /// Sends `signal` to every process of the container.
    ///
    /// Once the leader is reaped, a container with a cgroup is signalled
    /// through the cgroup only: its process group may be empty by then, and
    /// an empty group's id is a free pid that may already lead an unrelated
    /// group (pids are reused once they wrap at `pid_max`), while the cgroup
    /// holds every member of the group anyway. Without a cgroup the group is
    /// all there is; the container is then drained (and no longer signalled)
    /// within a sweep of the group becoming empty.
    fn kill(&self, signal: Signal) {
        let Some(run) = self.run.get() else {
            return;
        };
        let leader_reaped = matches!(*self.state.borrow(), ProcState::Exited { .. });
        let pgid = (run.cgroup.is_none() || !leader_reaped).then_some(run.pgid);
        kill_group(pgid, run.cgroup.as_deref(), signal);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // Last line of defence when the tokio runtime is torn down with
        // containers still running: their processes must not outlive it.
        let drained = *self.drained.borrow();
        if !drained {
            self.kill(Signal::SIGKILL);
        }
    }
}

/// Sends `signal` to the process group (when given) and, with a cgroup, to
/// every process in it (SIGKILL through `cgroup.kill`).
fn kill_group(pgid: Option<i32>, cgroup: Option<&Cgroup>, signal: Signal) {
    if let Some(pgid) = pgid {
        match killpg(Pid::from_raw(pgid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(pgid, %signal, error = %e, "failed to signal process group")
            }
        }
    }
    if let Some(cg) = cgroup {
        if signal == Signal::SIGKILL {
            cg.kill();
        } else {
            for pid in cg.pids() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
            }
        }
    }
}

/// Finds `program` the way `execvp` would, or says where it looked.
fn resolve_program(spec: &ContainerSpec) -> Result<PathBuf, Cause> {
    let program = &spec.command[0];
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = match &spec.cwd {
            Some(dir) if Path::new(program).is_relative() => dir.join(program),
            _ => PathBuf::from(program),
        };
        return if executable(&path) {
            Ok(path)
        } else {
            Err(Cause::CommandNotFound(format!(
                "{program} (no executable file at {})",
                path.display()
            )))
        };
    }
    let search = spec
        .env
        .get("PATH")
        .cloned()
        .or_else(|| {
            spec.inherit_env
                .then(|| std::env::var("PATH").ok())
                .flatten()
        })
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
    search
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| executable(p))
        .ok_or_else(|| Cause::CommandNotFound(format!("{program} (searched PATH={search})")))
}

/// The process runtime runs host commands only.
fn image_refused(image: &str) -> Cause {
    Cause::Spec(SpecErrors::from(SpecError::new(
        "image",
        image,
        "the process runtime runs host commands; images need the OCI runtime",
    )))
}

/// The working directory does not exist (or is not a directory).
fn missing_cwd(dir: &Path) -> Cause {
    Cause::Spec(SpecErrors::from(SpecError::new(
        "cwd",
        dir.display(),
        "must be an existing directory",
    )))
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
        let result = self.spawn_command(&entry);
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
            for reader in &run.readers {
                reader.abort();
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
                }
                table.cast(move |t| {
                    t.remove(&key);
                });
            });
        });
    }
}
