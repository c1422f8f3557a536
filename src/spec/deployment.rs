//! A node's deployment: the spec file (`arbor agent --spec node.yaml`).
//!
//! ```yaml
//! name: demo
//! supervisor: {max_restarts: 10, restart_window: 1m}
//! services:
//!   web:
//!     command: ["python3", "-m", "http.server", "8080"]
//!     replicas: 2
//!     depends_on: [db]
//!   db:
//!     command: ["sh", "-c", "exec sleep infinity"]
//! jobs:
//!   backup:
//!     command: ["sh", "-c", "echo backing up"]
//!     schedule: "*/5 * * * *"
//! ```
//!
//! Services are [`ServiceSpec`]s; jobs are [`JobSpec`]s named by their key
//! (a `name` inside a job is refused). Unknown fields are errors everywhere,
//! durations are written like `30s` or `5m`. Reading reports the first
//! syntax or type error with its field path and line; [`Deployment::validate`]
//! then reports every remaining error, each with its path.

mod diff;
mod host;
mod parse;
mod placement;
mod service;
mod validate;

use std::{collections::BTreeMap, fmt::Write as _, path::Path};

use serde::{Deserialize, Serialize};

pub use diff::{Changes, DeploymentDiff};
pub use placement::{Placement, PlacementScope, Spread};
pub use service::{LogLimits, MAX_REPLICAS, ServiceSpec, StartTimeoutAction};
pub use validate::MAX_NAME_LEN;

use super::{JobSpec, OnLimit, SpecError, SpecErrors, SupervisorFlags};

/// The largest spec file [`Deployment::load`] reads.
pub const MAX_SPEC_FILE: u64 = 4 * 1024 * 1024;

/// Everything a node runs: services (long-running, supervised) and jobs
/// (run to completion, on demand or on a schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Deployment {
    /// The deployment's name (default `default`).
    #[serde(default = "default_name", deserialize_with = "parse::name")]
    pub name: String,
    /// DNS zone of the deployment: networked jobs get the search domains
    /// `<deployment>.<zone> <zone>` in their resolv.conf (OCI runtime).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "parse::optional_name"
    )]
    pub zone: Option<String>,
    /// Flags of the node's root supervisor.
    #[serde(default)]
    pub supervisor: SupervisorFlags,
    /// Services by name.
    #[serde(default)]
    pub services: BTreeMap<String, ServiceSpec>,
    /// Jobs by name (each `JobSpec::name` equals its key).
    #[serde(
        default,
        deserialize_with = "parse::deserialize_jobs",
        serialize_with = "parse::serialize_jobs"
    )]
    pub jobs: BTreeMap<String, JobSpec>,
}

fn default_name() -> String {
    "default".into()
}

impl Default for Deployment {
    fn default() -> Self {
        Self {
            name: default_name(),
            zone: None,
            supervisor: SupervisorFlags::default(),
            services: BTreeMap::new(),
            jobs: BTreeMap::new(),
        }
    }
}

impl Deployment {
    /// An empty deployment named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Adds (or replaces) service `name`.
    pub fn service(mut self, name: impl Into<String>, spec: ServiceSpec) -> Self {
        self.services.insert(name.into(), spec);
        self
    }

    /// Adds (or replaces) a job, keyed by its name.
    pub fn job(mut self, job: JobSpec) -> Self {
        self.jobs.insert(job.name.clone(), job);
        self
    }

    /// Reads a deployment from YAML. A syntax or type error (the parser
    /// stops at the first) names the field path, the value and the line.
    /// The result is not validated: call [`validate`](Self::validate).
    pub fn from_yaml(text: &str) -> Result<Deployment, SpecErrors> {
        if is_blank(text) {
            return Err(SpecError::new("spec", "(empty)", EMPTY).into());
        }
        parse::from_yaml(text, None).map_err(SpecErrors::from)
    }

    /// Reads a deployment file (at most [`MAX_SPEC_FILE`] bytes). Errors
    /// name the file. Relative `env_file` paths of services and jobs are
    /// resolved against the file's directory (as compose does). The result
    /// is not validated: call [`validate`](Self::validate).
    pub fn load(path: impl AsRef<Path>) -> Result<Deployment, SpecErrors> {
        let path = path.as_ref();
        let shown = format!("{:?}", path.display().to_string());
        let file_error = |message: String| SpecError::new("file", &shown, message);
        let text = read_limited(path).map_err(file_error)?;
        let text =
            String::from_utf8(text).map_err(|e| file_error(format!("is not UTF-8 text ({e})")))?;
        if is_blank(&text) {
            return Err(file_error(EMPTY.to_owned()).into());
        }
        let source = path.display().to_string();
        let mut deployment = parse::from_yaml::<Deployment>(&text, Some(&source))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            deployment.resolve_env_files(dir);
        }
        Ok(deployment)
    }

    /// Makes relative `env_file` paths relative to `dir`.
    pub fn resolve_env_files(&mut self, dir: &Path) {
        let files = self
            .services
            .values_mut()
            .flat_map(|s| s.env_file.iter_mut())
            .chain(self.jobs.values_mut().flat_map(|j| j.env_file.iter_mut()));
        for file in files {
            if file.is_relative() && !file.as_os_str().is_empty() {
                *file = dir.join(&*file);
            }
        }
    }

    /// The deployment as YAML (job fields in alphabetical order); reading
    /// it back gives an equal deployment.
    pub fn to_yaml(&self) -> Result<String, SpecError> {
        parse::to_yaml(self).map_err(|e| SpecError::new("spec", &self.name, e))
    }

    /// Job `name` as the node registers it: with the zone's DNS search
    /// domains when it is networked and names none of its own.
    pub fn job_spec(&self, name: &str) -> Option<JobSpec> {
        let mut job = self.jobs.get(name)?.clone();
        if let (Some(zone), Some(net)) = (&self.zone, job.network.as_mut())
            && net.dns_search.is_empty()
        {
            net.dns_search = vec![format!("{}.{zone}", self.name), zone.clone()];
        }
        Some(job)
    }

    fn applied_services(&self) -> BTreeMap<String, ServiceSpec> {
        self.services
            .iter()
            .map(|(name, s)| {
                let mut s = s.clone();
                s.network = self.service_network(name);
                (name.clone(), s)
            })
            .collect()
    }

    fn applied_jobs(&self) -> BTreeMap<String, JobSpec> {
        self.jobs
            .keys()
            .filter_map(|name| Some((name.clone(), self.job_spec(name)?)))
            .collect()
    }

    /// Service `name`'s network as the node applies it: with the zone's DNS
    /// search domains when it names none of its own.
    pub fn service_network(&self, name: &str) -> Option<crate::spec::NetworkSpec> {
        let mut net = self.services.get(name)?.network.clone()?;
        if let Some(zone) = &self.zone
            && net.dns_search.is_empty()
        {
            net.dns_search = vec![format!("{}.{zone}", self.name), zone.clone()];
        }
        Some(net)
    }

    /// Checks everything and returns every error, each with its path
    /// (`services.web.backoff.max`, `jobs.backup.schedule`, ...).
    pub fn validate(&self) -> Result<(), SpecErrors> {
        SpecErrors(validate::errors(self)).into_result()
    }

    /// Services in the order they start: each after the services it depends
    /// on, ties by name. Services in a dependency cycle (refused by
    /// `validate`) come last, by name.
    pub fn start_order(&self) -> Vec<&str> {
        let mut waiting: BTreeMap<&str, usize> = BTreeMap::new();
        let mut dependents: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (name, spec) in &self.services {
            let deps: std::collections::BTreeSet<&str> = spec
                .depends_on
                .iter()
                .map(String::as_str)
                .filter(|d| *d != name && self.services.contains_key(*d))
                .collect();
            waiting.insert(name, deps.len());
            for dep in deps {
                dependents.entry(dep).or_default().push(name);
            }
        }
        let mut ready: std::collections::BTreeSet<&str> = waiting
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(name, _)| *name)
            .collect();
        let mut order = Vec::with_capacity(self.services.len());
        while let Some(next) = ready.pop_first() {
            order.push(next);
            waiting.remove(next);
            for dependent in dependents.get(next).into_iter().flatten() {
                if let Some(n) = waiting.get_mut(dependent) {
                    *n -= 1;
                    if *n == 0 {
                        ready.insert(dependent);
                    }
                }
            }
        }
        order.extend(waiting.keys());
        order
    }

    /// What changed from `self` to `new`, service by service and job by job
    /// (structurally: any field that differs makes it `changed`). Env files
    /// are compared by path, not content.
    pub fn diff(&self, new: &Deployment) -> DeploymentDiff {
        // Compared as applied: a new zone (or name) changes the DNS search
        // domains of networked services and jobs.
        DeploymentDiff {
            services: Changes::between(&self.applied_services(), &new.applied_services()),
            jobs: Changes::between(&self.applied_jobs(), &new.applied_jobs()),
            supervisor_changed: self.supervisor != new.supervisor,
            name_changed: self.name != new.name,
        }
    }

    /// What is valid but probably not wanted, one line each naming the
    /// field: a service with `on_limit: escalate` gives up for good.
    pub fn warnings(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .services
            .iter()
            .filter(|(_, s)| s.on_limit == OnLimit::Escalate)
            .map(|(name, s)| {
                format!(
                    "services.{name}.on_limit: escalate: after more than {} restarts in {} the service gives up and stays `failed` until restarted by hand; `backoff` (the default) keeps retrying with a growing delay",
                    s.max_restarts,
                    crate::spec::fmt_duration(s.restart_window)
                )
            })
            .collect();
        // What this host lacks (checked without running anything): the
        // spec may be meant for another machine, so these are warnings.
        for (name, s) in &self.services {
            if s.image.is_none() {
                out.extend(host::check(
                    &format!("services.{name}"),
                    &s.command,
                    s.cwd.as_deref(),
                    &s.env,
                ));
            }
        }
        for (name, j) in &self.jobs {
            if j.image.is_none() {
                out.extend(host::check(
                    &format!("jobs.{name}"),
                    &j.command,
                    j.cwd.as_deref(),
                    &j.env,
                ));
            }
        }
        out
    }

    /// A one-line summary for people:
    /// `deployment demo: 2 services (db, web x2), 1 job (backup @ */5 * * * *)`.
    /// Services are listed in start order.
    pub fn summary(&self) -> String {
        let mut out = format!("deployment {}: ", self.name);
        let services: Vec<String> = self
            .start_order()
            .into_iter()
            .map(|name| match self.services.get(name) {
                Some(s) if s.replicas != 1 => format!("{name} x{}", s.replicas),
                _ => name.to_owned(),
            })
            .collect();
        let jobs: Vec<String> = self
            .jobs
            .iter()
            .map(|(name, job)| match (&job.schedule, &job.time_zone) {
                (Some(s), Some(tz)) => format!("{name} @ {s} ({tz})"),
                (Some(s), None) => format!("{name} @ {s}"),
                (None, _) => name.clone(),
            })
            .collect();
        for (i, (noun, items)) in [("service", services), ("job", jobs)]
            .into_iter()
            .enumerate()
        {
            if i > 0 {
                out.push_str(", ");
            }
            let plural = if items.len() == 1 { "" } else { "s" };
            let _ = write!(out, "{} {noun}{plural}", items.len());
            // A long list is cut: the line stays readable in a log.
            const SHOWN: usize = 12;
            if items.len() > SHOWN {
                let _ = write!(
                    out,
                    " ({}, and {} more)",
                    items[..SHOWN].join(", "),
                    items.len() - SHOWN
                );
            } else if !items.is_empty() {
                let _ = write!(out, " ({})", items.join(", "));
            }
        }
        out
    }
}

/// Reads at most [`MAX_SPEC_FILE`] bytes of `path`.
fn read_limited(path: &Path) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let file = std::fs::File::open(path).map_err(|e| format!("cannot open: {e}"))?;
    if file.metadata().is_ok_and(|m| m.is_dir()) {
        return Err("is a directory, not a spec file".into());
    }
    let mut text = Vec::new();
    file.take(MAX_SPEC_FILE + 1)
        .read_to_end(&mut text)
        .map_err(|e| format!("cannot read: {e}"))?;
    if text.len() as u64 > MAX_SPEC_FILE {
        return Err(format!(
            "is larger than {} bytes: not a spec file",
            MAX_SPEC_FILE
        ));
    }
    Ok(text)
}

/// The path of entry `key` of map `section`: `services.web`, or
/// `services["a b"]` when the key is not a valid name.
fn key_path(section: &str, key: &str) -> String {
    if validate::name_problem(key).is_none() {
        format!("{section}.{key}")
    } else {
        format!("{section}[{key:?}]")
    }
}

const EMPTY: &str = "is empty: a spec names its services and jobs (an empty spec would remove everything, so it is refused)";

/// No YAML content at all: only blank lines and comments.
fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let l = l.trim();
        l.is_empty() || l.starts_with('#') || l == "---" || l == "..."
    })
}
