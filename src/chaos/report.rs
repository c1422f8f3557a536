//! What a chaos run prints: totals, then every violation with the events
//! that led to it.

use std::{collections::BTreeMap, fmt};

use super::{
    invariants::{Observation, Violation, check_all},
    kind_name,
};
use crate::Event;

/// The outcome of a chaos run.
#[derive(Debug, Clone)]
pub struct ChaosReport {
    /// The seed of the run.
    pub seed: u64,
    /// The fault rate.
    pub rate: f64,
    /// Faults injected, by kind (`fail`, `slow`, ...).
    pub faults: BTreeMap<&'static str, usize>,
    /// Restart attempts (restarted, or failed to start on a restart).
    pub restarts: usize,
    /// Back-off delays entered.
    pub backoffs: usize,
    /// Supervisors that gave up and escalated.
    pub escalations: usize,
    /// Children isolated.
    pub isolations: usize,
    /// Job executions by terminal state (`completed`, `failed`, `cancelled`).
    pub executions: BTreeMap<String, usize>,
    /// On-demand triggers sent.
    pub triggers: u64,
    /// Service replicas the harness made exit (also counted in `faults`
    /// as `kill`).
    pub kills: u64,
    /// Virtual time the run took.
    pub elapsed: std::time::Duration,
    /// Every broken invariant.
    pub violations: Vec<Violation>,
    /// What was observed (for further checks).
    pub observation: Observation,
}

impl ChaosReport {
    /// Checks `observation` and counts.
    pub fn new(seed: u64, rate: f64, observation: Observation) -> Self {
        let mut faults = BTreeMap::new();
        for f in &observation.injected {
            *faults.entry(kind_name(f.kind)).or_default() += 1;
        }
        if observation.kills > 0 {
            faults.insert("kill", observation.kills as usize);
        }
        let (mut restarts, mut backoffs, mut escalations, mut isolations) = (0, 0, 0, 0);
        let mut executions = BTreeMap::new();
        for (_, e) in &observation.events {
            match e {
                Event::ChildRestarted { .. } => restarts += 1,
                Event::ChildStartFailed { restart_count, .. } if *restart_count > 0 => {
                    restarts += 1
                }
                Event::CrashLoopBackOff { .. } => backoffs += 1,
                Event::SupervisorEscalated { .. } => escalations += 1,
                Event::ChildIsolated { .. } => isolations += 1,
                Event::ExecutionFinished { state, .. } => {
                    *executions.entry(state.clone()).or_default() += 1
                }
                _ => {}
            }
        }
        Self {
            seed,
            rate,
            faults,
            restarts,
            backoffs,
            escalations,
            isolations,
            executions,
            triggers: observation.triggers,
            kills: observation.kills,
            elapsed: observation.elapsed,
            violations: check_all(&observation),
            observation,
        }
    }

    /// Faults injected in all.
    pub fn total_faults(&self) -> usize {
        self.faults.values().sum()
    }

    /// True when no invariant was broken.
    pub fn passed(&self) -> bool {
        self.violations.is_empty()
    }
}

impl fmt::Display for ChaosReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "chaos run: seed {}, fault rate {}, {} of virtual time",
            self.seed,
            self.rate,
            humantime::format_duration(std::time::Duration::from_millis(
                self.elapsed.as_millis() as u64
            ))
        )?;
        let kinds: Vec<String> = self
            .faults
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(
            f,
            "faults injected: {} ({})",
            self.total_faults(),
            if kinds.is_empty() {
                "none".to_owned()
            } else {
                kinds.join(", ")
            }
        )?;
        writeln!(
            f,
            "supervision: {} restarts, {} back-offs, {} escalations, {} isolations",
            self.restarts, self.backoffs, self.escalations, self.isolations
        )?;
        let o = &self.observation;
        if !o.agent_restarts.is_empty() {
            writeln!(
                f,
                "agent restarts: {} ({} containers adopted, {} left unclaimed and stopped)",
                o.agent_restarts.len(),
                o.adopted,
                o.released
            )?;
        }
        let states: Vec<String> = self
            .executions
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        writeln!(
            f,
            "executions: {} ({}); {} on-demand triggers",
            self.executions.values().sum::<usize>(),
            if states.is_empty() {
                "none".to_owned()
            } else {
                states.join(", ")
            },
            self.triggers
        )?;
        if self.violations.is_empty() {
            return write!(f, "invariants: all held");
        }
        write!(f, "invariants: {} violation(s)", self.violations.len())?;
        for v in &self.violations {
            write!(f, "\n- [{}] {}", v.invariant, v.detail)?;
            for e in &v.events {
                write!(f, "\n    {e}")?;
            }
        }
        Ok(())
    }
}
