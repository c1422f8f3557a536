//! Where a service's replicas run: on this node (the default), or spread
//! over the live members of a cluster.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::service::MAX_REPLICAS;
use crate::spec::SpecError;

/// `placement: {scope: cluster, replicas: 3, spread: node, constraints:
/// {zone: a}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// `node` (default: every replica here, as without `placement`) or
    /// `cluster` (the replicas are spread over the cluster's live
    /// members; each node runs its share).
    #[serde(default)]
    pub scope: PlacementScope,
    /// How many replicas run in the whole cluster (1 to 1000; with scope
    /// `cluster`).
    #[serde(default = "one")]
    pub replicas: usize,
    /// How replicas are spread: `node` (the only choice: as evenly as the
    /// members allow, at most one per node while there are enough).
    #[serde(default)]
    pub spread: Spread,
    /// Node labels a member must have (`--node-label KEY=VALUE`) to run
    /// replicas of this service.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub constraints: BTreeMap<String, String>,
}

/// Where the replicas are placed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlacementScope {
    /// On this node.
    #[default]
    Node,
    /// Over the cluster.
    Cluster,
}

/// How replicas are spread over nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Spread {
    /// As evenly as possible over the eligible nodes.
    #[default]
    Node,
}

fn one() -> usize {
    1
}

impl Placement {
    /// Whether the cluster places this service.
    pub fn is_cluster(&self) -> bool {
        self.scope == PlacementScope::Cluster
    }

    /// Problems, with fields relative to `placement`.
    pub(crate) fn validate(&self, service_replicas: usize) -> Vec<SpecError> {
        let mut found = Vec::new();
        if self.replicas == 0 || self.replicas > MAX_REPLICAS {
            found.push(SpecError::new(
                "placement.replicas",
                self.replicas,
                format!("must be 1 to {MAX_REPLICAS}"),
            ));
        }
        if self.scope == PlacementScope::Cluster && service_replicas != 1 {
            found.push(SpecError::new(
                "replicas",
                service_replicas,
                "with placement.scope cluster, placement.replicas says how many run in the cluster: remove replicas",
            ));
        }
        if self.scope == PlacementScope::Node && self.replicas != 1 {
            found.push(SpecError::new(
                "placement.replicas",
                self.replicas,
                "is for placement.scope cluster; on one node, use the service's replicas",
            ));
        }
        for (k, v) in &self.constraints {
            if k.is_empty() || v.is_empty() {
                found.push(SpecError::new(
                    format!("placement.constraints.{k}"),
                    format!("{v:?}"),
                    "a constraint needs a key and a value",
                ));
            }
        }
        found
    }
}
