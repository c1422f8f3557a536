//! Where cluster-placed replicas run: rendezvous hashing over the live
//! members, computed by every node from its own membership view, without a
//! leader.
//!
//! For a service, each eligible member (one whose labels satisfy the
//! service's constraints) gets a score, a hash of (service, node name);
//! members are ranked by it and replica slot `i` goes to the member ranked
//! `i mod n`. With as many members as replicas or more, that is one per
//! node; with fewer, the first ranked take one more. A member that joins or
//! leaves moves only the slots that must move. Two nodes with the same view
//! compute the same placement; views converge as heartbeats do.
//!
//! **Quorum.** A node places replicas only while it sees a strict majority
//! of the members it knows (itself included, `down` ones counted): a node
//! cut off from the others stops its cluster-placed replicas once it has
//! seen them down, as they restart those replicas elsewhere at about the
//! same moment (both sides wait `suspect_after + down_grace`). A replica
//! may thus run twice during a partition for about the heartbeat jitter,
//! never for longer than one grace. With two members, losing one fences
//! both: run three nodes or more.
//!
//! **Coming back.** A node that regains its majority (or places for the
//! first time) first places over every member it knows, down ones
//! included, for `suspect_after + down_grace`: the members it does not
//! hear yet are most likely the majority that kept running, and taking
//! their share would run it twice. After that hold, members still down
//! are left out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::spec::Placement;

/// A live member that may run replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate<'a> {
    /// Its name.
    pub name: &'a str,
    /// Its labels (`--node-label`).
    pub labels: &'a BTreeMap<String, String>,
}

/// Where every cluster-placed service runs, as this node computed it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// Orders this node's placements; a newer one replaces an older one,
    /// an older one arriving late is refused.
    pub epoch: u64,
    /// Whether this node sees too few members to place anything (it runs
    /// none of the cluster-placed replicas).
    pub fenced: bool,
    /// Replicas per node, per service.
    pub services: BTreeMap<String, BTreeMap<String, usize>>,
}

impl Plan {
    /// What `node` runs: replicas per service (services it runs none of
    /// are listed with 0).
    pub fn share(&self, node: &str) -> BTreeMap<String, usize> {
        self.services
            .iter()
            .map(|(s, nodes)| (s.clone(), nodes.get(node).copied().unwrap_or(0)))
            .collect()
    }
}

/// Whether `live` members (this node included) are a strict majority of
/// the `known` ones.
pub fn quorum(live: usize, known: usize) -> bool {
    live * 2 > known
}

/// The placement of every service in `services` over `candidates`; all
/// empty (fenced) when `live` members are not a quorum of `known`.
pub fn plan<'a>(
    candidates: &[Candidate<'_>],
    live: usize,
    known: usize,
    services: impl IntoIterator<Item = (&'a str, &'a Placement)>,
    epoch: u64,
) -> Plan {
    let fenced = !quorum(live, known);
    let services = services
        .into_iter()
        .map(|(name, p)| {
            let nodes = if fenced {
                BTreeMap::new()
            } else {
                spread(name, p.replicas, &p.constraints, candidates)
            };
            (name.to_string(), nodes)
        })
        .collect();
    Plan {
        epoch,
        fenced,
        services,
    }
}

/// Replicas per node for one service (nodes with none left out).
pub fn spread(
    service: &str,
    replicas: usize,
    constraints: &BTreeMap<String, String>,
    members: &[Candidate<'_>],
) -> BTreeMap<String, usize> {
    let mut ranked: Vec<(u64, &str)> = members
        .iter()
        .filter(|m| constraints.iter().all(|(k, v)| m.labels.get(k) == Some(v)))
        .map(|m| (score(service, m.name), m.name))
        .collect();
    // Highest score first; the name breaks (improbable) ties.
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    ranked.dedup_by(|a, b| a.1 == b.1);
    let mut out = BTreeMap::new();
    if ranked.is_empty() {
        return out;
    }
    for slot in 0..replicas {
        *out.entry(ranked[slot % ranked.len()].1.to_string())
            .or_insert(0) += 1;
    }
    out
}

fn score(service: &str, node: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(service.as_bytes());
    h.update([0]);
    h.update(node.as_bytes());
    let d = h.finalize();
    u64::from_be_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PlacementScope, Spread};

    fn nodes<'a>(names: &[&'a str], labels: &'a BTreeMap<String, String>) -> Vec<Candidate<'a>> {
        names
            .iter()
            .map(|n| Candidate { name: n, labels })
            .collect()
    }

    fn cluster(replicas: usize) -> Placement {
        Placement {
            scope: PlacementScope::Cluster,
            replicas,
            spread: Spread::Node,
            constraints: BTreeMap::new(),
        }
    }

    #[test]
    fn three_replicas_over_three_nodes_run_one_per_node() {
        let none = BTreeMap::new();
        let s = spread("web", 3, &none, &nodes(&["a", "b", "c"], &none));
        assert_eq!(s.values().copied().collect::<Vec<_>>(), [1, 1, 1]);
        assert_eq!(s.len(), 3);
    }

    #[test]
    fn every_node_computes_the_same_placement_whatever_the_order_of_its_view() {
        let none = BTreeMap::new();
        let a = spread("web", 2, &none, &nodes(&["a", "b", "c", "d"], &none));
        let b = spread("web", 2, &none, &nodes(&["d", "c", "b", "a"], &none));
        assert_eq!(a, b);
        assert_eq!(a.values().sum::<usize>(), 2);
    }

    #[test]
    fn a_lost_node_moves_only_its_own_replicas() {
        let none = BTreeMap::new();
        let before = spread("web", 3, &none, &nodes(&["a", "b", "c", "d", "e"], &none));
        let lost = before.keys().next().unwrap().clone();
        let left: Vec<&str> = ["a", "b", "c", "d", "e"]
            .into_iter()
            .filter(|n| *n != lost)
            .collect();
        let after = spread("web", 3, &none, &nodes(&left, &none));
        for (node, n) in &before {
            if *node != lost {
                assert_eq!(after.get(node), Some(n), "{before:?} -> {after:?}");
            }
        }
        assert_eq!(after.values().sum::<usize>(), 3);
    }

    #[test]
    fn more_replicas_than_nodes_are_spread_as_evenly_as_possible() {
        let none = BTreeMap::new();
        let s = spread("web", 7, &none, &nodes(&["a", "b", "c"], &none));
        let mut counts: Vec<usize> = s.values().copied().collect();
        counts.sort();
        assert_eq!(counts, [2, 2, 3]);
    }

    #[test]
    fn services_are_spread_independently() {
        let none = BTreeMap::new();
        let names: Vec<String> = (0..50).map(|i| format!("n{i}")).collect();
        let members: Vec<Candidate> = names
            .iter()
            .map(|n| Candidate {
                name: n,
                labels: &none,
            })
            .collect();
        let firsts: std::collections::BTreeSet<String> = (0..40)
            .map(|i| {
                spread(&format!("svc{i}"), 1, &none, &members)
                    .into_keys()
                    .next()
                    .unwrap()
            })
            .collect();
        assert!(firsts.len() > 15, "one-replica services all on {firsts:?}");
    }

    #[test]
    fn constraints_keep_replicas_on_nodes_with_the_labels() {
        let none = BTreeMap::new();
        let zone_a: BTreeMap<String, String> = [("zone".into(), "a".into())].into();
        let members = vec![
            Candidate {
                name: "a1",
                labels: &zone_a,
            },
            Candidate {
                name: "b1",
                labels: &none,
            },
            Candidate {
                name: "a2",
                labels: &zone_a,
            },
        ];
        let s = spread("db", 4, &zone_a, &members);
        assert_eq!(s.keys().collect::<Vec<_>>(), ["a1", "a2"]);
        assert_eq!(s.values().sum::<usize>(), 4);
        let nowhere: BTreeMap<String, String> = [("zone".into(), "z".into())].into();
        assert!(spread("db", 4, &nowhere, &members).is_empty());
    }

    #[test]
    fn a_node_without_a_majority_is_fenced_and_places_nothing() {
        let none = BTreeMap::new();
        let p = cluster(3);
        let alone = plan(&nodes(&["c"], &none), 1, 3, [("web", &p)], 7);
        assert!(alone.fenced);
        assert_eq!(alone.share("c")["web"], 0);
        let two = plan(&nodes(&["a", "b"], &none), 2, 3, [("web", &p)], 8);
        assert!(!two.fenced);
        assert_eq!(two.share("a")["web"] + two.share("b")["web"], 3);
        assert_eq!(two.share("c")["web"], 0);
        // Half is not a majority.
        assert!(plan(&nodes(&["a"], &none), 1, 2, [("web", &p)], 9).fenced);
        assert!(!plan(&nodes(&["a"], &none), 1, 1, [("web", &p)], 9).fenced);
        // Placed over members it cannot see (a node back from a fence
        // assumes the others still run their share).
        let back = plan(&nodes(&["a", "b", "c"], &none), 2, 3, [("web", &p)], 10);
        assert_eq!(back.share("c")["web"], 1);
    }
}
