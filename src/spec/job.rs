//! Job specs: what a job runs, when, how many at once, how it retries, how
//! long its records and logs are kept, and whom to tell when it ends.
//!
//! Field names follow what a Kubernetes CronJob or a compose user already
//! knows (`concurrency`, `backoff_limit`, `starting_deadline`, `history`).

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::{
    backoff::{BackoffPolicy, fmt},
    check,
    error::{SpecError, SpecErrors},
    network::NetworkSpec,
};

/// What happens when a job is triggered while executions of it are active.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overlap {
    /// Run alongside them, up to `max_concurrent` (default).
    #[default]
    Allow,
    /// Skip the new run while one is active.
    Forbid,
    /// Cancel the active runs, then start the new one.
    Replace,
}

/// A command run to completion before the job's main command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitStep {
    /// argv of the step.
    pub command: Vec<String>,
}

/// How many finished executions of a job are kept (Kubernetes CronJob
/// defaults: 3 successful, 1 failed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct History {
    /// Completed executions kept.
    pub successful: usize,
    /// Failed or cancelled executions kept.
    pub failed: usize,
}

impl Default for History {
    fn default() -> Self {
        Self {
            successful: 3,
            failed: 1,
        }
    }
}

/// Where to report an execution's end. Each sink's failure is recorded and
/// never changes the execution's state.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifySpec {
    /// argv of a command run with the completion event as JSON on stdin
    /// (never through a shell).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// A file the event is appended to as one JSON line.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
}

impl NotifySpec {
    /// True when there is nowhere to report.
    pub fn is_empty(&self) -> bool {
        self.command.is_none() && self.file.is_none()
    }
}

/// A job: a command (or image) run to completion on demand or on a schedule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The job's name, unique on the node.
    pub name: String,
    /// argv of the main command.
    #[serde(default)]
    pub command: Vec<String>,
    /// An image to run instead of a host command (OCI runtime).
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
    /// Variables for the command.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Files of `KEY=VALUE` lines read at each run; `env` wins over them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env_file: Vec<PathBuf>,
    /// Whether the command starts from the node's environment (default true).
    #[serde(default = "yes")]
    pub inherit_env: bool,
    /// Keys whose values are shown as `***` in records and API output (the
    /// process gets the real value).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mask: Vec<String>,
    /// Working directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<PathBuf>,
    /// Commands run to completion, in order, before the main one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub init: Vec<InitStep>,
    /// Cron expression (crontab, 6/7-field with seconds, or `@daily`...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// IANA zone the schedule is read in (default UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// A scheduled run missed by more than this is skipped.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub starting_deadline: Option<Duration>,
    /// No scheduled runs while true (manual triggers still run).
    #[serde(default)]
    pub suspend: bool,
    /// Spread scheduled runs of this job by a fixed offset below this.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub jitter: Option<Duration>,
    /// What a trigger does while executions are active.
    #[serde(default)]
    pub concurrency: Overlap,
    /// Most executions of this job active at once (`None`: no limit;
    /// `forbid` and `replace` imply 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_concurrent: Option<usize>,
    /// Retries after a failed execution (not after a cancel).
    #[serde(default)]
    pub backoff_limit: u32,
    /// Delay before each retry (capped exponential).
    #[serde(default = "retry_backoff")]
    pub retry_backoff: BackoffPolicy,
    /// A run still going after this is stopped and fails.
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub deadline: Option<Duration>,
    /// Grace between the graceful signal and the kill, on cancel and on
    /// deadline (default 10 s).
    #[serde(default = "stop_timeout", with = "humantime_serde")]
    pub stop_timeout: Duration,
    /// Finished executions kept per job.
    #[serde(default)]
    pub history: History,
    /// Finished executions older than this are deleted (default 1 h).
    #[serde(default = "retention", with = "humantime_serde")]
    pub retention: Duration,
    /// Live tail kept in memory per execution (default 1 MiB); the log files
    /// on disk keep everything.
    #[serde(default = "max_log_size")]
    pub max_log_size: ByteSize,
    /// Where to report each execution's end.
    #[serde(default, skip_serializing_if = "NotifySpec::is_empty")]
    pub notify: NotifySpec,
    /// The job's network: its own namespace on an overlay segment (default:
    /// none; the container runs on the node's network).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkSpec>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}

fn retry_backoff() -> BackoffPolicy {
    BackoffPolicy {
        initial: Duration::from_secs(10),
        multiplier: 2.0,
        max: Duration::from_secs(360),
        jitter: 0.0,
        reset_after: Duration::from_secs(600),
        give_up_after: None,
    }
}

fn stop_timeout() -> Duration {
    Duration::from_secs(10)
}

fn retention() -> Duration {
    Duration::from_secs(3600)
}

fn max_log_size() -> ByteSize {
    ByteSize::mib(1)
}

impl JobSpec {
    /// A job named `name` running `argv`, with every default.
    pub fn command<I, S>(name: impl Into<String>, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Self {
            name: name.into(),
            command: argv.into_iter().map(Into::into).collect(),
            image: None,
            pull_policy: Default::default(),
            runtime: None,
            resources: Default::default(),
            user: None,
            hostname: None,
            mounts: Vec::new(),
            env: BTreeMap::new(),
            env_file: Vec::new(),
            inherit_env: true,
            mask: Vec::new(),
            cwd: None,
            init: Vec::new(),
            schedule: None,
            time_zone: None,
            starting_deadline: None,
            suspend: false,
            jitter: None,
            concurrency: Overlap::Allow,
            max_concurrent: None,
            backoff_limit: 0,
            retry_backoff: retry_backoff(),
            deadline: None,
            stop_timeout: stop_timeout(),
            history: History::default(),
            retention: retention(),
            max_log_size: max_log_size(),
            notify: NotifySpec::default(),
            network: None,
            labels: BTreeMap::new(),
        }
    }

    /// The overlay segment its executions join: `network.segment` or the
    /// job's name, in `network.isolation` (default `default`).
    pub fn segment_key(&self) -> crate::actors::overlay_actor::SegmentKey {
        let net = self.network.as_ref();
        crate::actors::overlay_actor::SegmentKey::new(
            net.and_then(|n| n.segment.clone())
                .unwrap_or_else(|| self.name.clone()),
            net.map_or(crate::actors::overlay_actor::DEFAULT_ISOLATION, |n| {
                n.isolation.as_str()
            }),
        )
    }

    /// `sh -c script`.
    pub fn shell(name: impl Into<String>, script: impl Into<String>) -> Self {
        Self::command(name, ["sh".to_owned(), "-c".to_owned(), script.into()])
    }

    /// The most executions active at once under this spec.
    pub fn concurrency_limit(&self) -> usize {
        match self.concurrency {
            Overlap::Forbid | Overlap::Replace => 1,
            Overlap::Allow => self.max_concurrent.unwrap_or(usize::MAX),
        }
    }

    /// Checks the spec; field names are relative (`command`, `init[1].command`).
    /// The schedule's syntax is checked by the cron parser when registered.
    pub fn validate(&self) -> Result<(), SpecErrors> {
        let mut errors = SpecErrors::default();
        if self.name.trim().is_empty() {
            errors.push(SpecError::new("name", "\"\"", "must not be empty"));
        } else if self.name.contains('/') || self.name.chars().any(char::is_control) {
            errors.push(SpecError::new(
                "name",
                format!("{:?}", self.name),
                "must not contain '/' or control characters",
            ));
        }
        if self.command.is_empty() && self.image.is_none() {
            errors.push(SpecError::new(
                "command",
                "[]",
                "must not be empty: give the program and its arguments (argv) or an image",
            ));
        }
        check::argv(&mut errors.0, "command", &self.command);
        for (i, step) in self.init.iter().enumerate() {
            let field = format!("init[{i}].command");
            if step.command.is_empty() {
                errors.push(SpecError::new(&field, "[]", "must not be empty"));
            }
            check::argv(&mut errors.0, &field, &step.command);
        }
        check::env(&mut errors.0, &self.env);
        if let Some(net) = &self.network {
            net.validate("network", &mut errors.0);
        }
        crate::spec::container::validate(
            "",
            &self.resources,
            self.user.as_deref(),
            self.hostname.as_deref(),
            &self.mounts,
            &mut errors.0,
        );
        if let Some(image) = &self.image
            && let Err(e) = crate::image::ImageName::parse(image)
        {
            errors.push(SpecError::new("image", format!("{image:?}"), e.to_string()));
        }
        if self.max_concurrent == Some(0) {
            errors.push(SpecError::new("max_concurrent", 0, "must be >= 1"));
        }
        if self.concurrency != Overlap::Allow && self.max_concurrent.is_some_and(|m| m > 1) {
            errors.push(SpecError::new(
                "max_concurrent",
                self.max_concurrent.unwrap_or_default(),
                format!(
                    "must be 1 with concurrency {:?} (only allow runs several at once)",
                    self.concurrency
                ),
            ));
        }
        if self.deadline.is_some_and(|d| d.is_zero()) {
            errors.push(SpecError::new("deadline", "0s", "must be > 0"));
        }
        for (field, d) in [
            ("deadline", self.deadline),
            ("stop_timeout", Some(self.stop_timeout)),
            ("starting_deadline", self.starting_deadline),
            ("jitter", self.jitter),
            ("retention", Some(self.retention)),
        ] {
            if let Some(d) = d {
                check::duration(&mut errors.0, field, d);
            }
        }
        if self.jitter.is_some_and(|d| d.is_zero()) {
            errors.push(SpecError::new("jitter", "0s", "must be > 0"));
        }
        if self.retention.is_zero() {
            errors.push(SpecError::new(
                "retention",
                fmt(self.retention),
                "must be > 0",
            ));
        }
        if self.max_log_size.as_u64() < 1024 {
            errors.push(SpecError::new(
                "max_log_size",
                self.max_log_size,
                "must be >= 1 KiB",
            ));
        }
        if self.max_log_size.as_u64() > 1 << 30 {
            errors.push(SpecError::new(
                "max_log_size",
                self.max_log_size,
                "must be <= 1 GiB (it is held in memory per execution)",
            ));
        }
        if self.backoff_limit > 0 {
            errors.extend_within("retry_backoff", self.retry_backoff.validate());
        }
        if let Some(argv) = &self.notify.command {
            if argv.is_empty() {
                errors.push(SpecError::new("notify.command", "[]", "must not be empty"));
            }
            check::argv(&mut errors.0, "notify.command", argv);
        }
        if self.schedule.is_none() {
            for (field, set) in [
                ("time_zone", self.time_zone.is_some()),
                ("starting_deadline", self.starting_deadline.is_some()),
                ("jitter", self.jitter.is_some()),
            ] {
                if set {
                    errors.push(SpecError::new(
                        field,
                        "(set)",
                        "only applies to a job with a schedule",
                    ));
                }
            }
        }
        errors.into_result()
    }
}
