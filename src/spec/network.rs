//! The `network` field of a job: which overlay segment its container joins,
//! in which isolation network, and whether an overlay failure fails it.

use serde::{Deserialize, Serialize};

use super::error::SpecError;

/// A job's network: with this field its container runs in a network
/// namespace of its own, connected to its segment (when the node has
/// networking; on a node without it the field changes nothing).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    /// The segment (default: the job's name). Executions on one segment
    /// reach each other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// The isolation network (default `default`): segments of different
    /// isolation networks are separate bridges that cannot reach each
    /// other; `isolated` reaches only its own segment, not even the node.
    #[serde(default = "default_isolation")]
    pub isolation: String,
    /// True: an overlay failure fails the execution. False (default): it
    /// runs without the overlay, with an `overlay_warning` event.
    #[serde(default)]
    pub required: bool,
    /// DNS search domains for the container's resolv.conf (OCI runtime;
    /// the process runtime ignores them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
}

fn default_isolation() -> String {
    crate::actors::overlay_actor::DEFAULT_ISOLATION.into()
}

impl NetworkSpec {
    /// Checks the names; `field` is where the spec sits (`network`).
    pub fn validate(&self, field: &str, errors: &mut Vec<SpecError>) {
        if let Some(s) = &self.segment {
            name(errors, &format!("{field}.segment"), s);
        }
        name(errors, &format!("{field}.isolation"), &self.isolation);
        for (i, d) in self.dns_search.iter().enumerate() {
            domain(errors, &format!("{field}.dns_search[{i}]"), d);
        }
    }
}

/// A DNS name: labels of 1-63 letters, digits or `-`, joined by `.`.
pub(crate) fn domain(errors: &mut Vec<SpecError>, field: &str, d: &str) {
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !ok {
        errors.push(SpecError::new(
            field,
            format!("{d:?}"),
            "must be a domain name (labels of a-z, 0-9, '-', joined by '.')",
        ));
    }
}

/// Segment and isolation names: 1-64 of ASCII letters, digits, `.`, `_`, `-`.
fn name(errors: &mut Vec<SpecError>, field: &str, value: &str) {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !ok {
        errors.push(SpecError::new(
            field,
            format!("{value:?}"),
            "must be 1-64 characters of ASCII letters, digits, '.', '_' or '-'",
        ));
    }
}
