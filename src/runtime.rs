//! The `Runtime` trait: the one boundary between arbor and the operating system.
//!
//! Everything arbor does to a container or a process goes through this trait,
//! so the same supervisor, job and cron code runs unchanged on host processes
//! ([`ProcessRuntime`], the embedded default), on OCI containers (a later
//! runtime), on an in-memory recording fake ([`MockRuntime`]) and on a
//! fault-injecting wrapper around any of them. It is object safe: actors hold
//! an `Arc<dyn Runtime>` that the caller passes in explicitly, never one
//! chosen by `cfg!(test)`.
//!
//! The lifecycle is the OCI one: `pull_image` -> `create` -> `start` ->
//! (`wait` | `stop`) -> `remove`. Every error says which step failed, on which
//! container, and why ([`RuntimeError`]).

pub mod fault;
mod keeper;
pub mod mock;
pub mod oci;
pub mod process;
pub mod router;

pub(crate) mod logs;

use std::{collections::BTreeMap, fmt, path::PathBuf, time::Duration};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

pub use crate::exit::ExitStatus;
pub use crate::spec::{BindMount, PullPolicy, Resources, RuntimeKind};
pub use fault::FaultRuntime;
pub use logs::{LogBuffer, LogLine, LogQuery, LogStream, Logs};
pub use mock::MockRuntime;
pub use nix::sys::signal::Signal;
pub use oci::{OciRuntime, OciRuntimeBuilder};
pub use process::ProcessRuntime;
pub use router::RuntimeRouter;

use crate::spec::{SpecError, SpecErrors};

/// The identifier a runtime gives a container when it creates it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ContainerId(pub String);

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for ContainerId {
    fn from(s: &str) -> Self {
        Self(s.to_owned())
    }
}

/// What to run. For the process runtime the "image" is the command itself.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerSpec {
    /// Human name, unique among live containers of a service (`web-0`).
    pub name: String,
    /// OCI image reference (`name:tag`); `None` for a host command.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// argv: the program and its arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// Variables added to (or, with `inherit_env: false`, replacing) the node's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Whether the process starts from the node's environment (default true).
    #[serde(default = "yes")]
    pub inherit_env: bool,
    /// Working directory (default: the node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Free-form labels (service, job, replica) used for targeting and listing.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A network namespace to run in (an nsfs path such as
    /// `/run/netns/NAME`), prepared by the overlay actor before `create`.
    /// `None`: the runtime's default: the node's own network for a process,
    /// a private namespace with only loopback for an OCI container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub netns: Option<PathBuf>,
    /// DNS search domains for the container's resolv.conf (`<deployment>.<zone>
    /// <zone>`, from the overlay). The OCI runtime writes them; the process
    /// runtime ignores them (a host process uses the host's resolv.conf).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// When the image is fetched (images only).
    #[serde(
        default,
        skip_serializing_if = "crate::spec::container::pull_policy_is_default"
    )]
    pub pull_policy: PullPolicy,
    /// The runtime that must run it (`None`: the node's default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeKind>,
    /// Resource limits (containers only).
    #[serde(default, skip_serializing_if = "Resources::is_empty")]
    pub resources: Resources,
    /// `user[:group]` the main process runs as (containers only; default:
    /// the image's, else root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Hostname inside the container (default: its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Host paths bound into the container.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<BindMount>,
    /// Where the output goes instead of the runtime's in-memory tail (a job
    /// execution's log files). Not part of the serialized spec.
    #[serde(skip)]
    pub output: Option<Output>,
    /// Keep it running when the agent exits, for the next agent to adopt
    /// ([`Runtime::adopt`]): the process and OCI runtimes then start it
    /// through a keeper process when they have keepers (see
    /// `ProcessRuntimeBuilder::keepers`, `OciRuntimeBuilder::keepers`);
    /// ignored otherwise. Set for service replicas and job executions
    /// without a network. Not part of the serialized spec.
    #[serde(skip)]
    pub live_restore: bool,
    /// How long a stop waits between SIGTERM and SIGKILL when a later agent
    /// stops this kept container without adopting it (its replica was
    /// removed or changed); recorded beside it by the keeper's record.
    /// `None`: 10 s. Not part of the serialized spec.
    #[serde(skip)]
    pub stop_grace: Option<std::time::Duration>,
}

/// Receives a container's output as the runtime reads it.
///
/// Chunks arrive as read from the pipes (not split into lines), from one
/// reader per stream, possibly concurrently; `close` is called once per
/// stream when it reaches its end. Implementations must be quick (they run on
/// the reader's task) and must not fail: a sink that cannot write records
/// that itself.
pub trait OutputSink: Send + Sync + 'static {
    /// A chunk of `stream`.
    fn write(&self, stream: LogStream, bytes: &[u8]);
    /// `stream` ended (the process and everything that held the pipe exited).
    fn close(&self, stream: LogStream);
    /// A line about the container itself (started, exited), for sinks
    /// that keep a combined log across restarts; ignored by default.
    fn mark(&self, line: &str) {
        let _ = line;
    }
    /// Holds the combined log's lines until the next [`mark`](Self::mark),
    /// which writes its line first: called just before a container starts,
    /// so that its first output follows its `started` line. Ignored by
    /// default.
    fn hold(&self) {}
}

/// A shared [`OutputSink`] attached to a [`ContainerSpec`]; two are equal
/// when they are the same sink.
#[derive(Clone)]
pub struct Output(pub std::sync::Arc<dyn OutputSink>);

impl Output {
    /// Wraps a sink.
    pub fn new(sink: impl OutputSink) -> Self {
        Self(std::sync::Arc::new(sink))
    }
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Output(..)")
    }
}

impl PartialEq for Output {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Output {}

fn yes() -> bool {
    true
}

impl ContainerSpec {
    /// A host command named `name` running `argv`.
    pub fn command<I, S>(name: impl Into<String>, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            name: name.into(),
            command: argv.into_iter().map(Into::into).collect(),
            inherit_env: true,
            ..Self::default()
        }
    }

    /// `sh -c script`, a convenience for tests and examples.
    pub fn shell(name: impl Into<String>, script: impl Into<String>) -> Self {
        Self::command(name, ["sh".to_owned(), "-c".to_owned(), script.into()])
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the working directory.
    pub fn cwd(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cwd = Some(dir.into());
        self
    }

    /// Runs the container in the network namespace at `path`.
    pub fn netns(mut self, path: impl Into<PathBuf>) -> Self {
        self.netns = Some(path.into());
        self
    }

    /// Sends the output to `sink` instead of the in-memory tail.
    pub fn output(mut self, sink: Output) -> Self {
        self.output = Some(sink);
        self
    }

    /// Adds a label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Checks the spec; field names are relative (`command`, `env.KEY`).
    pub fn validate(&self) -> Vec<SpecError> {
        let mut errors = Vec::new();
        if self.name.trim().is_empty() {
            errors.push(SpecError::new(
                "name",
                format!("{:?}", self.name),
                "must not be empty",
            ));
        }
        crate::spec::container::Fields {
            image: self.image.as_deref(),
            command: &self.command,
            env: &self.env,
            resources: &self.resources,
            user: self.user.as_deref(),
            hostname: self.hostname.as_deref(),
            mounts: &self.mounts,
        }
        .check(&mut errors);
        errors
    }
}

/// Where a container is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "state")]
#[non_exhaustive]
pub enum ContainerState {
    /// Created, not started.
    Created,
    /// Its main process runs with this pid.
    Running {
        /// Pid of the main process.
        pid: u32,
    },
    /// Its main process ended.
    Exited {
        /// How it ended.
        status: ExitStatus,
    },
}

impl fmt::Display for ContainerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Created => f.write_str("created"),
            Self::Running { pid } => write!(f, "running (pid {pid})"),
            Self::Exited { status } => write!(f, "exited ({status})"),
        }
    }
}

/// The result of a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StopOutcome {
    /// How the main process ended.
    pub status: ExitStatus,
    /// True when the grace period ran out and the container was killed.
    pub killed: bool,
}

/// A step of the container lifecycle, as named in errors and call records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// Resolve the image (for processes: the program).
    Pull,
    /// Prepare a container.
    Create,
    /// Run its main process.
    Start,
    /// Stop it gracefully, then kill.
    Stop,
    /// Delete it and everything it left.
    Remove,
    /// Wait for the main process to end.
    Wait,
    /// Read its state.
    State,
    /// Read its main pid.
    Pid,
    /// Send it a signal.
    Signal,
    /// Read its logs.
    Logs,
    /// Run a command in it (a probe).
    Exec,
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Pull => "pull image for",
            Self::Create => "create",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Remove => "remove",
            Self::Wait => "wait for",
            Self::State => "read the state of",
            Self::Pid => "read the pid of",
            Self::Signal => "signal",
            Self::Logs => "read the logs of",
            Self::Exec => "run a command in",
        })
    }
}

/// A failed runtime step: which one, on which container, and why.
#[derive(Debug, thiserror::Error)]
#[error("failed to {op} container {target}: {cause}")]
pub struct RuntimeError {
    /// The step that failed.
    pub op: Op,
    /// The container id, or its name when it has no id yet.
    pub target: String,
    /// Why it failed.
    #[source]
    pub cause: Cause,
}

impl RuntimeError {
    /// An error of `op` on `target`.
    pub fn new(op: Op, target: impl fmt::Display, cause: Cause) -> Self {
        Self {
            op,
            target: target.to_string(),
            cause,
        }
    }
}

/// Why a runtime step failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Cause {
    /// The runtime has no container with this id.
    #[error("no such container")]
    NotFound,
    /// The container is not in a state that allows the step.
    #[error("container is {state}; {expected}")]
    InvalidState {
        /// Its current state.
        state: String,
        /// What the step needs.
        expected: &'static str,
    },
    /// The program of a host command could not be found.
    #[error("command not found: {0}")]
    CommandNotFound(String),
    /// The spec was rejected.
    #[error("{0}")]
    Spec(SpecErrors),
    /// A system call or file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The container's overlay network could not be set up.
    #[error("overlay: {0}")]
    Network(String),
    /// The OCI machinery failed (runc, a bundle, an image).
    #[error("{0}")]
    Oci(#[source] Box<oci::OciError>),
    /// The runtime cannot do this.
    #[error("{0}")]
    Unsupported(String),
    /// A command run in the container did not end in time (it was killed).
    #[error("timed out after {}", crate::spec::fmt_duration(*.0))]
    TimedOut(Duration),
    /// A failure injected on purpose (mock and fault runtimes).
    #[error("injected fault: {0}")]
    Injected(String),
    /// The runtime was shut down.
    #[error("the runtime is shut down")]
    Closed,
}

impl Cause {
    /// An I/O failure with what was being done. The text says what was
    /// being done and the OS error; for "too many open files" also the
    /// limit and how to raise it, since that is what a user must change.
    pub fn io(context: impl Into<String>, source: impl Into<std::io::Error>) -> Self {
        let source = source.into();
        let context = format!("{}: {}", context.into(), os_error_text(&source));
        Self::Io { context, source }
    }
}

/// What an OS error says to a user: its text, or for EMFILE the limit of
/// open files and how to raise it.
fn os_error_text(e: &std::io::Error) -> String {
    if e.raw_os_error() == Some(libc::EMFILE) {
        let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
            .map(|(soft, _)| soft.to_string())
            .unwrap_or_else(|_| "unknown".into());
        format!(
            "too many open files (the limit is {limit}; a running replica holds about 3, 3 more while it writes output: raise it with `ulimit -n` or LimitNOFILE=)"
        )
    } else {
        e.to_string()
    }
}

/// The boundary to the operating system (or a fake of it).
///
/// Implementations must be cheap to call concurrently from many actors, must
/// not block the async executor, and must make `wait` event-driven (no
/// polling loop): a supervisor sees an exit as soon as the OS reports it.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// A short name for logs (`process`, `mock`, `oci`).
    fn name(&self) -> &'static str;

    /// Makes the image available (for host commands: resolves the program).
    async fn pull_image(&self, spec: &ContainerSpec) -> Result<(), RuntimeError>;

    /// Prepares a container from `spec` without running it.
    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError>;

    /// Runs the container's main process.
    async fn start(&self, id: &ContainerId) -> Result<(), RuntimeError>;

    /// Sends the graceful signal (SIGTERM) to everything in the container,
    /// then kills it (SIGKILL) if it has not exited after `grace`
    /// (`Duration::MAX` waits forever). Returns when the main process has
    /// exited; stopping an exited container returns its status.
    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<StopOutcome, RuntimeError>;

    /// Deletes an exited container and waits until nothing it started is
    /// left (no process, no zombie). Removing a running container is an error.
    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError>;

    /// Waits for the main process to end; any number of callers may wait.
    async fn wait(&self, id: &ContainerId) -> Result<ExitStatus, RuntimeError>;

    /// The container's state.
    async fn state(&self, id: &ContainerId) -> Result<ContainerState, RuntimeError>;

    /// The pid of the main process while it runs.
    async fn pid(&self, id: &ContainerId) -> Result<Option<u32>, RuntimeError>;

    /// Sends `signal` to every process of the container.
    async fn signal(&self, id: &ContainerId, signal: Signal) -> Result<(), RuntimeError>;

    /// A bounded tail of the container's output.
    async fn logs(&self, id: &ContainerId, query: LogQuery) -> Result<Logs, RuntimeError>;

    /// True when the kernel OOM-killed a process of the container (its
    /// memory limit was reached). Runtimes without limits say false.
    async fn oom_killed(&self, id: &ContainerId) -> Result<bool, RuntimeError> {
        let _ = id;
        Ok(false)
    }

    /// Runs `argv` beside the container's main process, in its
    /// environment (a health probe): for a host process with the
    /// container's env, working directory and network namespace, for an
    /// OCI container through `runc exec`. Killed (with everything it
    /// started) after `timeout`, which is then an error. Output is kept up
    /// to [`EXEC_OUTPUT_LIMIT`] bytes.
    async fn exec(
        &self,
        id: &ContainerId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let _ = (argv, timeout);
        Err(RuntimeError::new(
            Op::Exec,
            id,
            Cause::Unsupported(format!(
                "the {} runtime cannot run commands in a container",
                self.name()
            )),
        ))
    }

    /// The container's address on its overlay network, if it has one
    /// (where HTTP and TCP probes connect by default).
    async fn address(&self, id: &ContainerId) -> Result<Option<std::net::IpAddr>, RuntimeError> {
        let _ = id;
        Ok(None)
    }

    /// A container a previous agent started from an equal `spec` (same
    /// name; a job's container: same name and `execution` label, whatever
    /// the rest) and left running (live restore), now owned by the caller as if
    /// it had just created and started it: `Some(id)` of a running (or, if
    /// it ended while no agent watched, exited) container whose output goes
    /// to `spec.output` from now on. A kept container of that name with a
    /// different spec is stopped first and `None` returned; runtimes
    /// without keepers return `None`.
    async fn adopt(&self, spec: &ContainerSpec) -> Result<Option<ContainerId>, RuntimeError> {
        let _ = spec;
        Ok(None)
    }

    /// True when container `id` runs under a keeper, so it outlives this
    /// process and the next agent can [`Runtime::adopt`] it. Runtimes
    /// without keepers say false.
    async fn is_kept(&self, id: &ContainerId) -> bool {
        let _ = id;
        false
    }

    /// The owner of this container vanished without stopping it (its actor
    /// was killed): kill everything in it now, synchronously, and remove it
    /// in the background. Never blocks and never fails.
    fn abandon(&self, id: &ContainerId);
}

/// How much of a command's output [`Runtime::exec`] keeps.
pub const EXEC_OUTPUT_LIMIT: usize = 4096;

/// What a command run in a container ([`Runtime::exec`]) did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecOutput {
    /// How it ended.
    pub status: ExitStatus,
    /// Its stdout then its stderr, at most [`EXEC_OUTPUT_LIMIT`] bytes
    /// (lossy UTF-8).
    pub output: String,
}

/// Reads a pipe to its end, keeping the first [`EXEC_OUTPUT_LIMIT`] bytes
/// (the rest is read and dropped, so a chatty command never blocks on a
/// full pipe).
pub(crate) async fn read_capped(pipe: Option<&mut (impl tokio::io::AsyncRead + Unpin)>) -> Vec<u8> {
    let mut kept = Vec::new();
    let Some(pipe) = pipe else {
        return kept;
    };
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 8192];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => return kept,
            Ok(n) => {
                let room = EXEC_OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

/// Stops `ids` (with `grace`) and removes them, all at once; returns how
/// many were removed. A runtime's own `shutdown`.
pub(crate) async fn stop_and_remove_all(
    rt: &impl Runtime,
    ids: &[ContainerId],
    grace: Duration,
) -> usize {
    let stops = ids.iter().map(|id| async move {
        let _ = rt.stop(id, grace).await;
        rt.remove(id).await.is_ok()
    });
    futures::future::join_all(stops)
        .await
        .into_iter()
        .filter(|removed| *removed)
        .count()
}

/// Validates `spec` for `create`, naming the container in the error.
pub(crate) fn check_spec(spec: &ContainerSpec) -> Result<(), RuntimeError> {
    let errors = spec.validate();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(RuntimeError::new(
            Op::Create,
            if spec.name.is_empty() {
                "<unnamed>"
            } else {
                &spec.name
            },
            Cause::Spec(SpecErrors(errors)),
        ))
    }
}
