//! What changed between two deployments (for a reload: apply only that).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Names of one section (services or jobs) sorted by what happened to them.
/// Every list is sorted by name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    /// Only in the new deployment: start them.
    pub added: Vec<String>,
    /// Only in the old deployment: stop them.
    pub removed: Vec<String>,
    /// In both, with any field different: replace them.
    pub changed: Vec<String>,
    /// In both, equal: leave them alone.
    pub unchanged: Vec<String>,
}

impl Changes {
    /// Compares two maps of specs by key, then structurally.
    pub fn between<T: PartialEq>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> Self {
        let mut changes = Self::default();
        for (name, spec) in old {
            match new.get(name) {
                None => changes.removed.push(name.clone()),
                Some(n) if n == spec => changes.unchanged.push(name.clone()),
                Some(_) => changes.changed.push(name.clone()),
            }
        }
        changes.added = new
            .keys()
            .filter(|k| !old.contains_key(*k))
            .cloned()
            .collect();
        changes
    }

    /// True when nothing was added, removed or changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }
}

/// The difference between a running deployment and a new one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeploymentDiff {
    /// Services by what happened to them.
    pub services: Changes,
    /// Jobs by what happened to them.
    pub jobs: Changes,
    /// The root supervisor's flags differ.
    pub supervisor_changed: bool,
    /// The deployment's name differs.
    pub name_changed: bool,
}

impl DeploymentDiff {
    /// True when the two deployments are equal.
    pub fn is_empty(&self) -> bool {
        self.services.is_empty()
            && self.jobs.is_empty()
            && !self.supervisor_changed
            && !self.name_changed
    }
}
