//! One service of a deployment: what it runs, how many replicas, and how
//! its supervisor restarts them. (What it becomes at run time, a supervisor
//! of container children, is built next to the container actor.)

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use serde::{Deserialize, Serialize};

use crate::{
    spec::{
        BackoffPolicy, ExitAction, ExitRules, NetworkSpec, OnLimit, PanicAction, RestartType,
        Shutdown, SpecError, Strategy, SupervisorFlags,
    },
    store::read_env_files,
};

/// The most replicas one service may ask for.
pub const MAX_REPLICAS: usize = 10_000;

/// A long-running service: `replicas` copies of one command (or image),
/// under a supervisor of their own.
///
/// Field names follow compose and Kubernetes where they have one
/// (`command`, `image`, `env`, `env_file`, `replicas`, `depends_on`,
/// `restart`); the supervisor flags (`strategy`, `max_restarts`,
/// `restart_window`, `on_limit`) are those of [`SupervisorFlags`], written
/// flat in the service.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// argv: the program and its arguments (never run through a shell).
    /// With `image`, overrides the image's command.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub command: Vec<String>,
    /// An image to run (OCI runtime); the process runtime refuses images
    /// when it starts the service, not when the spec is validated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// When the image is fetched: `if_not_present` (default) or `never`;
    /// both use the local store (`arbor image import`).
    #[serde(
        default,
        skip_serializing_if = "crate::spec::container::pull_policy_is_default"
    )]
    pub pull_policy: crate::spec::PullPolicy,
    /// The runtime that runs it: `oci` or `process` (default: the agent's
    /// `--runtime`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<crate::spec::RuntimeKind>,
    /// Limits: `{memory: 32Mi, cpus: 0.5, pids: 64}`: OCI containers, and
    /// host processes when the agent runs as root (cgroups; refused
    /// without).
    #[serde(default, skip_serializing_if = "crate::spec::Resources::is_empty")]
    pub resources: crate::spec::Resources,
    /// `user[:group]` inside the container (OCI runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Hostname inside the container (OCI runtime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Bind mounts `{source, target, read_only}` (OCI runtime).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<crate::spec::BindMount>,
    /// Variables for the command; they win over `env_file`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Files of `KEY=VALUE` lines, read when the service is converted into
    /// a supervisor spec (at deploy and at each reload), a later file
    /// winning over an earlier one. [`Deployment::load`](super::Deployment::load)
    /// resolves relative paths against the spec file's directory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_file: Vec<PathBuf>,
    /// Keys of `env` (or of the env files) whose values are secrets: shown
    /// as `***` in the replicas' log files and in `GET /v1/deployment`
    /// (the process gets the real values).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mask: Vec<String>,
    /// Whether the command starts from the node's environment (default true).
    #[serde(default = "yes")]
    pub inherit_env: bool,
    /// Working directory (default: the node's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// How many copies run, named `<service>-0`, `<service>-1`, ... (default 1,
    /// at most [`MAX_REPLICAS`]).
    #[serde(default = "one")]
    pub replicas: usize,
    /// When a replica that exited is restarted (default `permanent`).
    #[serde(default)]
    pub restart: RestartType,
    /// What an abnormal exit leads to (default `restart`).
    #[serde(default)]
    pub on_panic: PanicAction,
    /// How exit codes are treated: `{0: done, 75: retry}`. Codes not named
    /// here: 0 is normal, anything else a failure.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub exit_codes: BTreeMap<i32, ExitAction>,
    /// Back-off of crash-looping replicas (used with `on_limit: backoff`).
    #[serde(default)]
    pub backoff: BackoffPolicy,
    /// Grace between the graceful stop (SIGTERM) and the kill (default 5 s);
    /// `0s` kills at once.
    #[serde(default = "stop_timeout", with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// Services started before this one (and stopped after it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Which replicas restart together (default `one_for_one`).
    #[serde(default)]
    pub strategy: Strategy,
    /// Restarts allowed inside `restart_window` (default 5).
    #[serde(default = "max_restarts")]
    pub max_restarts: u32,
    /// The sliding window restarts are counted in (default 5 m).
    #[serde(default = "restart_window", with = "humantime_serde")]
    pub restart_window: Duration,
    /// What happens past the limit: `backoff` (default, as kubelet: the
    /// replica waits a growing delay, every other service runs on) or
    /// `escalate` (the service gives up and ends `failed`; the node and
    /// the other services run on).
    #[serde(default = "service_on_limit")]
    pub on_limit: OnLimit,
    /// Restarts a replica that fails this probe `failure_threshold` times
    /// in a row (see [`ProbeSpec`](crate::spec::ProbeSpec)).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub liveness: Option<crate::spec::ProbeSpec>,
    /// A replica is `ready` while this probe passes; services that depend
    /// on this one start once every replica is ready.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readiness: Option<crate::spec::ProbeSpec>,
    /// Holds liveness and readiness back until it passes once; failing
    /// `failure_threshold` times in a row fails the replica.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub startup: Option<crate::spec::ProbeSpec>,
    /// The process speaks sd_notify: each replica gets its own
    /// `NOTIFY_SOCKET`, is ready once it sends `READY=1`, and its
    /// `STATUS=` shows in the tree (`arbor notify` sends them from a
    /// script).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub notify: bool,
    /// With `notify`: `WATCHDOG=1` expected at least this often (given to
    /// the process as `WATCHDOG_USEC`); a replica that misses it failed.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "humantime_serde"
    )]
    pub watchdog: Option<Duration>,
    /// Rotation of the replicas' log files under
    /// `<state-dir>/services/<service>/<replica>/` (default
    /// `{max_size: 10MiB, max_files: 5}`).
    #[serde(default, skip_serializing_if = "LogLimits::is_default")]
    pub logs: LogLimits,
    /// argv of a command run when a replica stays down `failed` (it gave
    /// up after `backoff.give_up_after` crash loops), with the event as
    /// JSON on stdin (`service`, `replica`, `reason`, `last_exit`,
    /// `exit_code`, `restarts`, `at`); never through a shell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on_failure: Vec<String>,
    /// How long this service waits for the services it depends on to be
    /// ready (default 5m); then `start_timeout_action` applies.
    #[serde(default = "start_timeout", with = "humantime_serde")]
    pub start_timeout: Duration,
    /// `start` (default: start anyway, with a warning) or `fail` (the
    /// service is not started and shows `failed`).
    #[serde(default)]
    pub start_timeout_action: StartTimeoutAction,
    /// Free-form labels, added to every replica's container.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The replicas' network: each in a namespace of its own on an overlay
    /// segment (default segment: the service's name), as for jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
    /// Where the replicas run: here (default), or spread over a cluster
    /// (`{scope: cluster, replicas: 3, spread: node}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub placement: Option<super::placement::Placement>,
}

/// How much of each replica's output is kept on disk, per log file
/// (`stdout.log`, `stderr.log`, `full.log`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogLimits {
    /// A file past this size is rotated (default 10MiB).
    pub max_size: bytesize::ByteSize,
    /// Files kept per log, the live one included (default 5).
    pub max_files: u32,
}

impl Default for LogLimits {
    fn default() -> Self {
        Self {
            max_size: bytesize::ByteSize::mib(10),
            max_files: 5,
        }
    }
}

impl LogLimits {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// What a service does when its dependencies are not ready in time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartTimeoutAction {
    /// Start anyway (a warning says which dependency was not ready).
    #[default]
    Start,
    /// Do not start: the service ends `failed`.
    Fail,
}

fn start_timeout() -> Duration {
    Duration::from_secs(300)
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

fn stop_timeout() -> Duration {
    match Shutdown::WORKER_DEFAULT {
        Shutdown::Timeout(d) => d,
        _ => Duration::from_secs(5),
    }
}

fn max_restarts() -> u32 {
    SupervisorFlags::default().max_restarts
}

fn restart_window() -> Duration {
    SupervisorFlags::default().restart_window
}

impl Default for ServiceSpec {
    fn default() -> Self {
        Self {
            command: Vec::new(),
            image: None,
            pull_policy: Default::default(),
            runtime: None,
            resources: Default::default(),
            user: None,
            hostname: None,
            mounts: Vec::new(),
            env: BTreeMap::new(),
            env_file: Vec::new(),
            mask: Vec::new(),
            inherit_env: true,
            cwd: None,
            replicas: 1,
            restart: RestartType::default(),
            on_panic: PanicAction::default(),
            exit_codes: BTreeMap::new(),
            backoff: BackoffPolicy::default(),
            stop_timeout: stop_timeout(),
            depends_on: Vec::new(),
            strategy: Strategy::default(),
            max_restarts: max_restarts(),
            restart_window: restart_window(),
            on_limit: service_on_limit(),
            labels: BTreeMap::new(),
            network: None,
            placement: None,
            liveness: None,
            readiness: None,
            startup: None,
            notify: false,
            watchdog: None,
            on_failure: Vec::new(),
            logs: LogLimits::default(),
            start_timeout: start_timeout(),
            start_timeout_action: StartTimeoutAction::default(),
        }
    }
}

impl ServiceSpec {
    /// A service running `argv`, one replica, every default.
    pub fn command<I, S>(argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            command: argv.into_iter().map(Into::into).collect(),
            ..Self::default()
        }
    }

    /// Whether a cluster places this service's replicas.
    pub fn is_cluster_placed(&self) -> bool {
        self.placement.as_ref().is_some_and(|p| p.is_cluster())
    }

    /// `sh -c script`.
    pub fn shell(script: impl Into<String>) -> Self {
        Self::command(["sh".to_owned(), "-c".to_owned(), script.into()])
    }

    /// Sets the number of replicas.
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Adds a service this one starts after.
    pub fn depends_on(mut self, service: impl Into<String>) -> Self {
        self.depends_on.push(service.into());
        self
    }

    /// The supervisor flags of this service's supervisor.
    pub fn flags(&self) -> SupervisorFlags {
        SupervisorFlags {
            strategy: self.strategy,
            max_restarts: self.max_restarts,
            restart_window: self.restart_window,
            on_limit: self.on_limit,
            backoff: self.backoff,
        }
    }

    /// `exit_codes` as supervisor exit rules (one rule per code, in code order).
    pub fn exit_rules(&self) -> ExitRules {
        self.exit_codes
            .iter()
            .fold(ExitRules::none(), |rules, (code, action)| {
                rules.with([*code], *action)
            })
    }

    /// How the supervisor stops a replica: `stop_timeout`, or a kill at
    /// once when it is zero.
    pub fn shutdown(&self) -> Shutdown {
        if self.stop_timeout.is_zero() {
            Shutdown::BrutalKill
        } else {
            Shutdown::Timeout(self.stop_timeout)
        }
    }

    /// The environment of service `name`'s replicas: the env files read
    /// now (in order, a later file winning), then `env` over them. A file
    /// that cannot be read or parsed is an error naming the field
    /// (`services.NAME.env_file[I]`) and the file.
    pub fn resolved_env(&self, name: &str) -> Result<BTreeMap<String, String>, SpecError> {
        let mut env = BTreeMap::new();
        for (i, file) in self.env_file.iter().enumerate() {
            let read = read_env_files(std::slice::from_ref(file)).map_err(|e| {
                SpecError::new(
                    format!("{}.env_file[{i}]", super::key_path("services", name)),
                    format!("{:?}", file.display().to_string()),
                    e.to_string(),
                )
            })?;
            env.extend(read);
        }
        env.extend(self.env.clone());
        Ok(env)
    }

    /// The overlay segment of service `name`'s replicas.
    pub fn segment_key(&self, name: &str) -> crate::actors::overlay_actor::SegmentKey {
        let net = self.network.as_ref();
        crate::actors::overlay_actor::SegmentKey::new(
            net.and_then(|n| n.segment.clone())
                .unwrap_or_else(|| name.to_owned()),
            net.map_or(crate::actors::overlay_actor::DEFAULT_ISOLATION, |n| {
                n.isolation.as_str()
            }),
        )
    }
}

/// Services back off by default: one crash-looping service never takes
/// anything else down.
fn service_on_limit() -> OnLimit {
    OnLimit::Backoff
}
