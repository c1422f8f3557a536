//! The execution table: every retained execution, indexed per job, with
//! history limits and retention. Plain data owned by the executor actor.
//!
//! Lookups are O(1) by id; "latest of a job" is O(1) (the newest id of the
//! job's deque); "list a job" is O(k) in that job's executions. Retention
//! keeps finished executions in expiry order, so pruning costs what it
//! removes.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use tokio::time::Instant;

use crate::{
    actors::job_actor::JobMsg,
    execution::{ExecutionId, ExecutionRecord, JobState},
    spec::History,
    store::ExecutionOutput,
};

use ractor::ActorRef;

/// One execution as the executor holds it.
pub(super) struct Exec {
    pub record: ExecutionRecord,
    pub actor: Option<ActorRef<JobMsg>>,
    pub output: Option<ExecutionOutput>,
    /// A cancel asked before the actor reported in.
    pub cancel_pending: Option<Option<std::time::Duration>>,
    /// Replaced by a newer run (`concurrency: replace`): no longer counted.
    pub replaced: bool,
    /// Tells the job actor a cancel was asked, even before it reported in.
    pub cancel: tokio::sync::watch::Sender<bool>,
}

/// The executions of one job.
#[derive(Default)]
pub(super) struct JobIndex {
    /// Every retained execution, oldest first.
    pub all: VecDeque<ExecutionId>,
    /// Active ones (pending, initializing, running), counted against the limit.
    pub active: Vec<ExecutionId>,
    /// Finished ones by outcome, oldest first (history limits).
    pub succeeded: VecDeque<ExecutionId>,
    pub failed: VecDeque<ExecutionId>,
    /// Retries waiting for their back-off.
    pub pending_retries: usize,
}

#[derive(Default)]
pub(super) struct Table {
    pub execs: HashMap<ExecutionId, Exec>,
    pub jobs: BTreeMap<String, JobIndex>,
    expiry: BTreeSet<(Instant, ExecutionId)>,
}

impl Table {
    pub fn insert(&mut self, record: ExecutionRecord) -> tokio::sync::watch::Receiver<bool> {
        let id = record.meta.id;
        let cancel = tokio::sync::watch::Sender::new(false);
        let index = self.jobs.entry(record.meta.job.clone()).or_default();
        index.all.push_back(id);
        if record.status.state.is_active() {
            index.active.push(id);
        }
        self.execs.insert(
            id,
            Exec {
                record,
                actor: None,
                output: None,
                cancel_pending: None,
                replaced: false,
                cancel: cancel.clone(),
            },
        );
        cancel.subscribe()
    }

    /// Records a finished execution (loaded or just ended): history bucket
    /// and expiry. Returns the ids the history limit pushed out.
    pub fn finished(
        &mut self,
        id: ExecutionId,
        expires: Instant,
        history: History,
    ) -> Vec<ExecutionId> {
        let Some(exec) = self.execs.get_mut(&id) else {
            return Vec::new();
        };
        exec.actor = None;
        let job = exec.record.meta.job.clone();
        let ok = matches!(exec.record.status.state, JobState::Completed { .. });
        self.expiry.insert((expires, id));
        let index = self.jobs.entry(job.clone()).or_default();
        index.active.retain(|a| *a != id);
        if ok {
            index.succeeded.push_back(id);
        } else {
            index.failed.push_back(id);
        }
        self.enforce_history(&job, history)
    }

    /// Drops the oldest finished executions of `job` past its limits.
    pub fn enforce_history(&mut self, job: &str, history: History) -> Vec<ExecutionId> {
        let Some(index) = self.jobs.get_mut(job) else {
            return Vec::new();
        };
        let mut dropped = Vec::new();
        while index.succeeded.len() > history.successful {
            dropped.extend(index.succeeded.pop_front());
        }
        while index.failed.len() > history.failed {
            dropped.extend(index.failed.pop_front());
        }
        for id in &dropped {
            self.forget(*id);
        }
        dropped
    }

    /// Removes finished executions whose retention ran out by `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<ExecutionId> {
        let mut gone = Vec::new();
        while let Some(&(at, id)) = self.expiry.first() {
            if at > now {
                break;
            }
            self.expiry.pop_first();
            if let Some(job) = self.execs.get(&id).map(|e| e.record.meta.job.clone())
                && let Some(index) = self.jobs.get_mut(&job)
            {
                index.succeeded.retain(|x| *x != id);
                index.failed.retain(|x| *x != id);
            }
            self.forget(id);
            gone.push(id);
        }
        gone
    }

    /// The next retention expiry, if any.
    pub fn next_expiry(&self) -> Option<Instant> {
        self.expiry.first().map(|(at, _)| *at)
    }

    fn forget(&mut self, id: ExecutionId) {
        let Some(exec) = self.execs.remove(&id) else {
            return;
        };
        if let Some(index) = self.jobs.get_mut(&exec.record.meta.job) {
            // Retained executions are dropped oldest first: usually the front.
            if index.all.front() == Some(&id) {
                index.all.pop_front();
            } else {
                index.all.retain(|x| *x != id);
            }
        }
    }

    /// The newest execution of `job`.
    pub fn latest(&self, job: &str) -> Option<&ExecutionRecord> {
        let id = self.jobs.get(job)?.all.back()?;
        self.execs.get(id).map(|e| &e.record)
    }

    /// Active executions of `job` that still count against its limit.
    pub fn counted_active(&self, job: &str) -> Vec<ExecutionId> {
        self.jobs
            .get(job)
            .map(|i| {
                i.active
                    .iter()
                    .copied()
                    .filter(|id| self.execs.get(id).is_some_and(|e| !e.replaced))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// An execution left running for the next agent: still recorded
    /// active, no longer counted (nothing here will end it).
    pub fn left(&mut self, id: ExecutionId) {
        let Some(exec) = self.execs.get_mut(&id) else {
            return;
        };
        exec.actor = None;
        if let Some(index) = self.jobs.get_mut(&exec.record.meta.job) {
            index.active.retain(|a| *a != id);
        }
    }

    pub fn active_count(&self) -> usize {
        self.jobs.values().map(|i| i.active.len()).sum()
    }
}
