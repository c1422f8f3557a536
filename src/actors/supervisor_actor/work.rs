//! Work: what the supervisor is doing to its children, in order.
//!
//! Each operation is a [`Work`]: what it is for ([`Subject`]), the *lanes*
//! (children) it holds, and its steps as phases of [`Action`]s. The actions
//! of one phase run at once (in tasks, see `ops`); the next phase begins
//! when they all reported. A work begins only when it is first in line on
//! every lane it needs, and holds them until it ends: a second call on a
//! busy child waits its turn instead of racing the first, while work on
//! other children goes on. Works are appended to all their lanes in one
//! step, so any two of them are in the same order on every lane they
//! share: no cycle, no deadlock.
//!
//! What a work does is decided when it begins (`begin`), from the state at
//! that moment, not when it was queued: a restart decision queued behind an
//! operator's `terminate_child` sees the child stopped and does nothing.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
};

use ractor::{ActorRef, RpcReplyPort};

use super::{
    ChildReply, ChildState, SupervisorError, SupervisorMsg, SupervisorState, child::Retained,
    slots::Key,
};
use crate::{events::Event, spec::RestartType};

/// A work's identity.
pub(super) type WorkId = u64;

/// How a start treats its child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StartMode {
    /// A new child (`start_child`): removed if the start fails.
    New,
    /// An automatic restart: counted; a failure is retried.
    Restart {
        /// The exit code that caused it (the failed child only).
        exit_code: Option<i32>,
    },
    /// An operator's `restart_child`: not counted; a failure leaves the
    /// child stopped.
    Operator,
}

/// What a stopped child becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterStop {
    /// Waits to be started again by a group restart (temporary: removed).
    Restart,
    /// Stopped by an operator (temporary: removed).
    Stopped,
    /// Stopped with its service.
    Shutdown,
    /// About to be started again by an operator.
    Start,
}

/// One step.
pub(super) enum Action {
    /// Start a child (if it still wants starting when the step comes).
    Start { key: Key, mode: StartMode },
    /// Stop a child with its shutdown policy (if it still runs).
    Stop {
        key: Key,
        reason: &'static str,
        then: AfterStop,
    },
    /// Remove what an isolated child kept.
    Release(Box<dyn Retained>),
    /// A release in flight.
    Released,
}

/// What a work is for.
#[derive(Clone)]
pub(super) enum Subject {
    /// A child exited: decide and act (restart, back off, isolate, ...).
    Decide { key: Key, incarnation: u64 },
    /// A failed restart is retried, or a back-off delay ended.
    Retry { key: Key },
    /// New children start (`start_child`, `start_children`).
    Start { keys: Vec<Key> },
    /// `terminate_child` of the child named `id`.
    Terminate { key: Key, id: Arc<str> },
    /// `restart_child`.
    Restart { key: Key, id: Arc<str> },
    /// `delete_child`.
    Delete { key: Key, id: Arc<str> },
}

/// Who waits for a work's end.
pub(super) enum Reply {
    None,
    One(ChildReply),
    /// `start_child` without a reply port: failures are logged.
    Log,
    Many(RpcReplyPort<Vec<Result<(), SupervisorError>>>),
}

/// One operation.
pub(super) struct Work {
    lanes: Vec<Key>,
    pub(super) subject: Subject,
    phases: VecDeque<Vec<Action>>,
    /// Actions of the current phase still running.
    running: usize,
    started: bool,
    reply: Reply,
    /// The result per child, for the reply.
    results: Vec<(Key, Result<(), SupervisorError>)>,
    /// Children of a `start_children` refused before they were added, by
    /// their place in the call.
    refused: Vec<(usize, SupervisorError)>,
    /// Published when the work ends.
    on_done: Option<Event>,
}

/// Every work, and the lanes they wait on.
#[derive(Default)]
pub(super) struct Works {
    works: HashMap<WorkId, Work>,
    /// Per child, the works that need it: the first holds it.
    lanes: HashMap<Key, VecDeque<WorkId>>,
    /// Works that may be able to begin.
    ready: VecDeque<WorkId>,
    next: WorkId,
}

impl Works {
    /// Queues a work on `lanes`; it begins when it is first on all of them.
    pub(super) fn enqueue(&mut self, lanes: Vec<Key>, subject: Subject) -> WorkId {
        self.enqueue_with(lanes, subject, Reply::None)
    }

    pub(super) fn enqueue_with(
        &mut self,
        lanes: Vec<Key>,
        subject: Subject,
        reply: Reply,
    ) -> WorkId {
        self.next += 1;
        let id = self.next;
        for &key in &lanes {
            self.lanes.entry(key).or_default().push_back(id);
        }
        self.works.insert(
            id,
            Work {
                lanes,
                subject,
                phases: VecDeque::new(),
                running: 0,
                started: false,
                reply,
                results: Vec::new(),
                refused: Vec::new(),
                on_done: None,
            },
        );
        self.ready.push_back(id);
        id
    }

    fn can_begin(&self, id: WorkId) -> bool {
        self.works.get(&id).is_some_and(|w| {
            !w.started
                && w.lanes
                    .iter()
                    .all(|k| self.lanes.get(k).and_then(|q| q.front()) == Some(&id))
        })
    }

    pub(super) fn get_mut(&mut self, id: WorkId) -> Option<&mut Work> {
        self.works.get_mut(&id)
    }

    /// An action of `id` reported.
    pub(super) fn action_done(&mut self, id: WorkId) {
        if let Some(w) = self.works.get_mut(&id) {
            w.running = w.running.saturating_sub(1);
        }
    }

    /// Records the result of the work for child `key`.
    pub(super) fn set_result(&mut self, id: WorkId, key: Key, result: Result<(), SupervisorError>) {
        if let Some(w) = self.works.get_mut(&id) {
            match w.results.iter_mut().find(|(k, _)| *k == key) {
                Some((_, r)) => *r = result,
                None => w.results.push((key, result)),
            }
        }
    }

    /// Drops the steps of `id` not begun yet.
    pub(super) fn abort(&mut self, id: WorkId) {
        if let Some(w) = self.works.get_mut(&id) {
            w.phases.clear();
        }
    }

    /// Appends steps to `id`.
    pub(super) fn push_phases(&mut self, id: WorkId, phases: VecDeque<Vec<Action>>) {
        if let Some(w) = self.works.get_mut(&id) {
            w.phases.extend(phases);
        }
    }

    /// Adds the answers of children refused before they were added.
    pub(super) fn refuse(&mut self, id: WorkId, refused: Vec<(usize, SupervisorError)>) {
        if let Some(w) = self.works.get_mut(&id) {
            w.refused = refused;
        }
    }

    /// Publishes `event` when `id` ends.
    pub(super) fn on_done(&mut self, id: WorkId, event: Event) {
        if let Some(w) = self.works.get_mut(&id) {
            w.on_done = Some(event);
        }
    }

    /// Every work, for the final answers when the supervisor stops.
    pub(super) fn drain(&mut self) -> impl Iterator<Item = Work> + '_ {
        self.lanes.clear();
        self.ready.clear();
        self.works.drain().map(|(_, w)| w)
    }
}

impl Work {
    /// Answers whoever waits: with the results recorded and `Ok` for
    /// children without one, or, when the supervisor stops before the work
    /// could end, that it is shutting down (a terminate is then done all the
    /// same).
    pub(super) fn answer(self, name: &str, stopping: bool) {
        let Work {
            reply,
            results,
            refused,
            subject,
            ..
        } = self;
        let terminate = matches!(subject, Subject::Terminate { .. });
        let keys = match subject {
            Subject::Start { keys } => keys,
            Subject::Terminate { key, .. }
            | Subject::Restart { key, .. }
            | Subject::Delete { key, .. }
            | Subject::Decide { key, .. }
            | Subject::Retry { key } => vec![key],
        };
        let mut results: HashMap<Key, Result<(), SupervisorError>> = results.into_iter().collect();
        let mut result_of = |k: &Key| match results.remove(k) {
            Some(r) => r,
            None if stopping && !terminate => Err(SupervisorError::ShuttingDown(name.to_owned())),
            None => Ok(()),
        };
        match reply {
            Reply::None => {}
            Reply::One(port) => {
                let _ = port.send(keys.first().map_or(Ok(()), &mut result_of));
            }
            Reply::Log => {
                if let Some(Err(e)) = keys.first().map(&mut result_of) {
                    tracing::warn!(supervisor = %name, error = %e, "start_child failed");
                }
            }
            Reply::Many(port) => {
                let mut all: Vec<_> = keys.iter().map(result_of).collect();
                for (i, e) in refused {
                    all.insert(i.min(all.len()), Err(e));
                }
                let _ = port.send(all);
            }
        }
    }
}

impl SupervisorState {
    /// Begins every work that can (call after anything that queued or
    /// ended a work).
    pub(super) fn pump(&mut self, myself: &ActorRef<SupervisorMsg>) {
        while let Some(id) = self.works.ready.pop_front() {
            if self.escalating.is_some() {
                // The supervisor is giving up: `post_stop` answers the rest.
                self.works.ready.clear();
                return;
            }
            if !self.works.can_begin(id) {
                continue;
            }
            if let Some(w) = self.works.get_mut(id) {
                w.started = true;
            }
            self.begin(myself, id);
            self.advance(myself, id);
        }
    }

    /// Runs the next phase of `id` once the current one is done; ends the
    /// work after its last phase.
    pub(super) fn advance(&mut self, myself: &ActorRef<SupervisorMsg>, id: WorkId) {
        loop {
            let Some(w) = self.works.get_mut(id) else {
                return;
            };
            if w.running > 0 {
                return;
            }
            let Some(phase) = w.phases.pop_front() else {
                self.finish(id);
                return;
            };
            let mut running = 0;
            for action in phase {
                if self.launch(myself, id, action) {
                    running += 1;
                }
            }
            if let Some(w) = self.works.get_mut(id) {
                w.running += running;
            }
        }
    }

    /// Ends `id`: answers, publishes, and frees its lanes for the next works.
    fn finish(&mut self, id: WorkId) {
        let Some(work) = self.works.works.remove(&id) else {
            return;
        };
        for key in &work.lanes {
            if let Some(queue) = self.works.lanes.get_mut(key) {
                if queue.front() == Some(&id) {
                    queue.pop_front();
                } else {
                    queue.retain(|w| *w != id);
                }
                match queue.front() {
                    Some(&next) => self.works.ready.push_back(next),
                    None => {
                        self.works.lanes.remove(key);
                    }
                }
            }
        }
        if let Some(event) = &work.on_done {
            self.publish(event.clone());
        }
        work.answer(&self.name, false);
    }

    /// Decides what `id` does, from the state now, and plans its phases.
    fn begin(&mut self, myself: &ActorRef<SupervisorMsg>, id: WorkId) {
        let Some(work) = self.works.get_mut(id) else {
            return;
        };
        let subject = work.subject.clone();
        let phases = match subject {
            Subject::Decide { key, incarnation } => self.decide_exit(myself, id, key, incarnation),
            Subject::Retry { key } => match self.slot(key).map(|s| s.state) {
                Some(ChildState::Restarting | ChildState::CrashLoopBackOff) => {
                    self.restart_phases(key)
                }
                _ => VecDeque::new(),
            },
            Subject::Start { keys } => {
                let starts = keys.into_iter().map(|key| Action::Start {
                    key,
                    mode: StartMode::New,
                });
                self.in_order(starts.collect())
            }
            Subject::Terminate { key, id: name } => self.plan_terminate(id, key, &name),
            Subject::Restart { key, id: name } => self.plan_restart(id, key, &name),
            Subject::Delete { key, id: name } => self.plan_delete(id, key, &name),
        };
        if let Some(w) = self.works.get_mut(id) {
            w.phases = phases;
        }
    }

    /// `actions` as phases: one at a time in order, or all at once for a
    /// concurrent supervisor.
    pub(super) fn in_order(&self, actions: Vec<Action>) -> VecDeque<Vec<Action>> {
        if actions.is_empty() {
            VecDeque::new()
        } else if self.concurrent {
            VecDeque::from([actions])
        } else {
            actions.into_iter().map(|a| vec![a]).collect()
        }
    }

    /// Stops of `keys` (given in the order they must stop) as phases.
    pub(super) fn stop_phases(&self, stops: Vec<(Key, AfterStop)>) -> VecDeque<Vec<Action>> {
        self.in_order(
            stops
                .into_iter()
                .map(|(key, then)| Action::Stop {
                    key,
                    reason: match then {
                        AfterStop::Shutdown => "service shutdown",
                        AfterStop::Stopped => "terminated by operator",
                        AfterStop::Start => "restarted by operator",
                        AfterStop::Restart => "restart",
                    },
                    then,
                })
                .collect(),
        )
    }

    /// The lanes a decision about `key` holds: the children a restart of it
    /// touches (its scope), or all of them when its failure can shut the
    /// service down.
    pub(super) fn decision_lanes(&self, key: Key) -> Vec<Key> {
        let shuts_down = self
            .slot(key)
            .is_some_and(|s| s.spec.on_panic == crate::spec::PanicAction::Shutdown);
        if shuts_down {
            self.children.keys().collect()
        } else {
            self.scope(key)
        }
    }

    fn plan_terminate(&mut self, id: WorkId, key: Key, name: &str) -> VecDeque<Vec<Action>> {
        let Some(slot) = self.slot_mut(key) else {
            let err = SupervisorError::NotFound(name.to_owned());
            self.works.set_result(id, key, Err(err));
            return VecDeque::new();
        };
        slot.retry = None;
        let temporary = slot.spec.restart == RestartType::Temporary;
        match slot.state {
            ChildState::Running => self.stop_phases(vec![(key, AfterStop::Stopped)]),
            ChildState::Restarting | ChildState::CrashLoopBackOff if !temporary => {
                slot.state = ChildState::Stopped;
                slot.pending = None;
                VecDeque::new()
            }
            _ if temporary => {
                let retained = self.remove(key).and_then(|s| s.retained);
                retained
                    .map(|r| VecDeque::from([vec![Action::Release(r)]]))
                    .unwrap_or_default()
            }
            _ => VecDeque::new(),
        }
    }

    fn plan_restart(&mut self, id: WorkId, key: Key, name: &str) -> VecDeque<Vec<Action>> {
        let Some(slot) = self.slot_mut(key) else {
            let err = SupervisorError::NotFound(name.to_owned());
            self.works.set_result(id, key, Err(err));
            return VecDeque::new();
        };
        if slot.state == ChildState::Restarting {
            // OTP: a child whose restarts are failing answers `restarting`;
            // its retries go on.
            let err = SupervisorError::Restarting(slot.spec.id.to_string());
            self.works.set_result(id, key, Err(err));
            return VecDeque::new();
        }
        slot.retry = None;
        slot.backoff_step = 0;
        slot.pending = None;
        let mut phases = VecDeque::new();
        if slot.actor.is_some() {
            phases.extend(self.stop_phases(vec![(key, AfterStop::Start)]));
        } else if let Some(r) = self.slot_mut(key).and_then(|s| s.retained.take()) {
            phases.push_back(vec![Action::Release(r)]);
        }
        phases.push_back(vec![Action::Start {
            key,
            mode: StartMode::Operator,
        }]);
        phases
    }

    fn plan_delete(&mut self, id: WorkId, key: Key, name: &str) -> VecDeque<Vec<Action>> {
        let Some(slot) = self.slot(key) else {
            let err = SupervisorError::NotFound(name.to_owned());
            self.works.set_result(id, key, Err(err));
            return VecDeque::new();
        };
        let id_text = slot.spec.id.to_string();
        let refused = if slot.actor.is_some() {
            Some(SupervisorError::Running(id_text))
        } else if matches!(
            slot.state,
            ChildState::Restarting | ChildState::CrashLoopBackOff
        ) {
            Some(SupervisorError::Restarting(id_text))
        } else {
            None
        };
        if let Some(err) = refused {
            self.works.set_result(id, key, Err(err));
            return VecDeque::new();
        }
        match self.remove(key).and_then(|s| s.retained) {
            Some(r) => VecDeque::from([vec![Action::Release(r)]]),
            None => VecDeque::new(),
        }
    }
}
