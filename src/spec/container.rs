//! What to run and with which options, as plain data: which runtime, image
//! pull policy, resource limits, user, hostname and bind mounts, and the
//! checks of a container's fields.
//!
//! They are runtime-agnostic fields of services, jobs and
//! [`ContainerSpec`](crate::ContainerSpec) (the runtime imports
//! them from here, never the other way round): the OCI runtime applies all
//! of them; the process runtime runs host commands and ignores what only a
//! container can have (user, hostname, mounts, limits) and refuses images.

use std::{collections::BTreeMap, fmt, path::PathBuf};

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use super::{SpecError, check};

/// Which runtime runs a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    /// Host processes ([`ProcessRuntime`](crate::ProcessRuntime)).
    Process,
    /// OCI containers through runc (the OCI runtime).
    Oci,
}

impl fmt::Display for RuntimeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Process => "process",
            Self::Oci => "oci",
        })
    }
}

impl std::str::FromStr for RuntimeKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "process" => Ok(Self::Process),
            "oci" => Ok(Self::Oci),
            other => Err(format!("unknown runtime {other:?}: use oci or process")),
        }
    }
}

/// When an image is fetched. No registry is reachable, so both use the
/// local store; they differ in what they promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PullPolicy {
    /// Use the local image; fetching it when missing is not possible here,
    /// so a missing image is an error that says how to import it.
    #[default]
    IfNotPresent,
    /// Only ever use the local image.
    Never,
}

impl PullPolicy {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Resource limits of a container.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory limit (`32Mi`, `1GiB`); past it the kernel OOM-kills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<ByteSize>,
    /// CPU time as a number of CPUs (`0.5` = half of one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Most processes (tasks) at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<i64>,
}

// `cpus` is checked finite by `validate`; a NaN never reaches a comparison
// that matters.
impl Eq for Resources {}

impl Resources {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.cpus.is_none() && self.pids.is_none()
    }

    pub(crate) fn validate(&self, prefix: &str, errors: &mut Vec<SpecError>) {
        if let Some(m) = self.memory
            && m.as_u64() < 1024 * 1024
        {
            errors.push(SpecError::new(
                format!("{prefix}resources.memory"),
                m.to_string(),
                "must be at least 1MiB",
            ));
        }
        if let Some(c) = self.cpus
            && !(c.is_finite() && c > 0.0 && c <= 1024.0)
        {
            errors.push(SpecError::new(
                format!("{prefix}resources.cpus"),
                c.to_string(),
                "must be a number of CPUs above 0 (0.5 = half of one)",
            ));
        }
        if let Some(p) = self.pids
            && p < 1
        {
            errors.push(SpecError::new(
                format!("{prefix}resources.pids"),
                p.to_string(),
                "must be at least 1",
            ));
        }
    }
}

/// A host directory or file bound into the container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BindMount {
    /// Absolute path on the host.
    pub source: PathBuf,
    /// Absolute path inside the container.
    pub target: PathBuf,
    /// Mount it read-only (default false).
    #[serde(default)]
    pub read_only: bool,
}

/// The options, checked together (field names relative: `resources.memory`).
pub(crate) fn validate(
    prefix: &str,
    resources: &Resources,
    user: Option<&str>,
    hostname: Option<&str>,
    mounts: &[BindMount],
    errors: &mut Vec<SpecError>,
) {
    resources.validate(prefix, errors);
    if let Some(u) = user {
        let ok = !u.is_empty()
            && u.split(':').count() <= 2
            && u.split(':').all(|p| {
                !p.is_empty()
                    && p.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            });
        if !ok {
            errors.push(SpecError::new(
                format!("{prefix}user"),
                format!("{u:?}"),
                "must be user[:group], by name or number",
            ));
        }
    }
    if let Some(h) = hostname {
        let ok = !h.is_empty()
            && h.len() <= 63
            && h.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
            && !h.starts_with('-');
        if !ok {
            errors.push(SpecError::new(
                format!("{prefix}hostname"),
                format!("{h:?}"),
                "must be 1-63 letters, digits, '-' or '.', not starting with '-'",
            ));
        }
    }
    for (i, m) in mounts.iter().enumerate() {
        for (field, path) in [("source", &m.source), ("target", &m.target)] {
            if !path.is_absolute()
                || path
                    .components()
                    .any(|c| matches!(c, std::path::Component::ParentDir))
            {
                errors.push(SpecError::new(
                    format!("{prefix}mounts[{i}].{field}"),
                    format!("{:?}", path.display().to_string()),
                    "must be an absolute path without '..'",
                ));
            }
        }
    }
}

pub(crate) fn pull_policy_is_default(p: &PullPolicy) -> bool {
    p.is_default()
}

/// The fields every container has, borrowed from a service, a job or a
/// container spec, to be checked the same way wherever they come from.
pub(crate) struct Fields<'a> {
    pub(crate) image: Option<&'a str>,
    pub(crate) command: &'a [String],
    pub(crate) env: &'a BTreeMap<String, String>,
    pub(crate) resources: &'a Resources,
    pub(crate) user: Option<&'a str>,
    pub(crate) hostname: Option<&'a str>,
    pub(crate) mounts: &'a [BindMount],
}

impl Fields<'_> {
    /// Checks argv (or the image), env and the options; field names are
    /// relative (`command`, `env.KEY`, `resources.memory`).
    pub(crate) fn check(&self, errors: &mut Vec<SpecError>) {
        if self.image.is_none() && self.command.is_empty() {
            errors.push(SpecError::new(
                "command",
                "[]",
                "must not be empty: give the program and its arguments (argv)",
            ));
        }
        check::argv(errors, "command", self.command);
        check::env(errors, self.env);
        if let Some(image) = self.image
            && let Err(e) = crate::image::ImageName::parse(image)
        {
            errors.push(SpecError::new("image", format!("{image:?}"), e.to_string()));
        }
        validate(
            "",
            self.resources,
            self.user,
            self.hostname,
            self.mounts,
            errors,
        );
    }
}
