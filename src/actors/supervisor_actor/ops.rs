//! Starts and stops run in tasks, never in the supervisor's handler.
//!
//! A task runs a child's spawn closure (which may pull an image and start a
//! container) or its shutdown policy (which may wait out a grace period),
//! then pushes a [`Completion`] into the supervisor's channel and wakes it
//! with one `Wake` message (coalesced: a burst of completions costs one
//! message). The supervisor applies completions in the order they were
//! pushed; each carries the tag of the operation it ends, so a report of
//! something the supervisor no longer waits for is dropped.
//!
//! Supervision events are served before messages (ractor's select is
//! biased), so a child that dies right after starting is seen dying before
//! its start report: the exit waits in the orphans until the report claims
//! it. An actor already ending when its report is read, and no longer
//! linked, is checked once more after the events queued by then
//! ([`SupervisorState::verify`]): no exit by then means it never was linked,
//! and its start failed.

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use futures::FutureExt;
use ractor::{ActorCell, ActorId, ActorRef};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Level;

use super::{
    ChildState, Msg, ObservedExit, SupervisorMsg, SupervisorState, Tracked,
    child::{ChildContext, ChildExit, StartFuture},
    panic_message,
    slots::Key,
    terminate::terminate,
    work::{Action, AfterStop, StartMode, WorkId},
};
use crate::{events::Event, spec::RestartType};

/// Readiness reports of not-yet-started actors kept at most.
const MAX_EARLY_READY: usize = 1024;

/// What ended.
pub(super) enum Outcome {
    /// A start, with the new actor or why it failed.
    Started(Result<Started, String>),
    /// A stop or a release.
    Done,
}

/// A child that started.
pub(super) struct Started {
    pub(super) cell: ActorCell,
    /// False when the actor was spawned unlinked and could not be linked.
    pub(super) linked: bool,
}

/// A report from a task.
pub(super) struct Completion {
    tag: u64,
    outcome: Outcome,
}

/// A start held until `Verify` tells whether its actor was ever linked.
pub(super) struct Unverified {
    work: WorkId,
    key: Key,
    mode: StartMode,
    started: Started,
}

/// What an operation in flight is for.
pub(super) struct InFlight {
    pub(super) work: WorkId,
    pub(super) action: Action,
}

/// The supervisor's end of the report channel.
pub(super) struct Completions {
    rx: mpsc::UnboundedReceiver<Completion>,
    tx: Completer,
    pub(super) inflight: HashMap<u64, InFlight>,
    next_tag: u64,
}

/// A task's end: pushes a report, and wakes the supervisor once per burst.
#[derive(Clone)]
struct Completer {
    tx: mpsc::UnboundedSender<Completion>,
    woken: Arc<AtomicBool>,
    supervisor: ActorRef<SupervisorMsg>,
}

impl Completer {
    fn send(&self, tag: u64, outcome: Outcome) {
        if let Err(mpsc::error::SendError(c)) = self.tx.send(Completion { tag, outcome }) {
            // The supervisor is gone (killed): a child started for it must not outlive it.
            if let Outcome::Started(Ok(s)) = c.outcome {
                s.cell.kill();
            }
            return;
        }
        if !self.woken.swap(true, Ordering::AcqRel) {
            let _ = self.supervisor.cast(SupervisorMsg(Msg::Wake));
        }
    }
}

impl Completions {
    pub(super) fn new(supervisor: &ActorRef<SupervisorMsg>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            rx,
            tx: Completer {
                tx,
                woken: Arc::new(AtomicBool::new(false)),
                supervisor: supervisor.clone(),
            },
            inflight: HashMap::new(),
            next_tag: 0,
        }
    }

    fn register(&mut self, work: WorkId, action: Action) -> u64 {
        self.next_tag += 1;
        self.inflight
            .insert(self.next_tag, InFlight { work, action });
        self.next_tag
    }

    /// The next report, waiting for it (only from `post_stop`, when nothing
    /// else is served any more).
    pub(super) async fn next(&mut self) -> Option<(InFlight, Outcome)> {
        loop {
            let c = self.rx.recv().await?;
            if let Some(f) = self.inflight.remove(&c.tag) {
                return Some((f, c.outcome));
            }
        }
    }
}

/// Calls the spawn closure, catching a panic of the closure itself.
pub(super) fn prepare(spec: &super::ChildSpec, ctx: ChildContext) -> Result<StartFuture, String> {
    std::panic::catch_unwind(AssertUnwindSafe(|| (spec.start)(ctx))).map_err(panic_message)
}

/// Runs a start to its end: the child's cell, linked to `supervisor`.
pub(super) async fn run_start(
    start: Result<StartFuture, String>,
    supervisor: ActorCell,
) -> Result<Started, String> {
    let cell = AssertUnwindSafe(start?)
        .catch_unwind()
        .await
        .map_err(panic_message)?
        .map_err(|e| e.to_string())?;
    let linked_here =
        |c: &ActorCell| c.try_get_supervisor().map(|s| s.get_id()) == Some(supervisor.get_id());
    let linked = linked_here(&cell) || {
        // A closure that spawned its actor unlinked still gets supervised.
        cell.link(supervisor.clone());
        linked_here(&cell)
    };
    Ok(Started { cell, linked })
}

impl SupervisorState {
    /// The context a child's spawn closure gets.
    pub(super) fn context(&self, myself: &ActorCell, key: Key) -> Option<ChildContext> {
        let slot = self.slot(key)?;
        Some(ChildContext {
            supervisor: myself.clone(),
            events: self.events.clone(),
            id: slot.spec.id.clone(),
            service: self.name.clone(),
            shutdown: slot.spec.shutdown,
            on_panic: slot.spec.on_panic,
            exit_rules: slot.spec.exit_rules.clone(),
        })
    }

    /// Starts one action of `work`. Returns true when it runs in a task
    /// (its completion will follow), false when it was done at once (or
    /// had nothing to do).
    pub(super) fn launch(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        work: WorkId,
        action: Action,
    ) -> bool {
        match action {
            Action::Start { key, mode } => self.launch_start(myself, work, key, mode),
            Action::Stop { key, reason, then } => self.launch_stop(work, key, reason, then),
            Action::Release(retained) => {
                let tag = self.completions.register(work, Action::Released);
                let done = self.completions.tx.clone();
                tokio::spawn(async move {
                    retained.release().await;
                    done.send(tag, Outcome::Done);
                });
                true
            }
            Action::Released => false,
        }
    }

    fn launch_start(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        work: WorkId,
        key: Key,
        mode: StartMode,
    ) -> bool {
        let cell = myself.get_cell();
        let Some(ctx) = self.context(&cell, key) else {
            return false;
        };
        let slot = self.slot_mut(key).expect("slot of a child with a context");
        let eligible = match mode {
            StartMode::New => slot.state == ChildState::Starting,
            StartMode::Restart { .. } => matches!(
                slot.state,
                ChildState::Restarting | ChildState::CrashLoopBackOff
            ),
            StartMode::Operator => slot.actor.is_none(),
        };
        if !eligible {
            return false;
        }
        if let StartMode::Restart { .. } = mode {
            // Every restart attempt counts, whether or not the start works.
            slot.restart_count += 1;
            slot.state = ChildState::Restarting;
        } else {
            slot.state = ChildState::Starting;
        }
        slot.retry = None;
        // An exit still waiting for its decision is overtaken by this start.
        slot.pending = None;
        let start = prepare(&slot.spec, ctx);
        let tag = self.completions.register(work, Action::Start { key, mode });
        let done = self.completions.tx.clone();
        tokio::spawn(async move {
            let result = run_start(start, cell).await;
            done.send(tag, Outcome::Started(result));
        });
        true
    }

    fn launch_stop(
        &mut self,
        work: WorkId,
        key: Key,
        reason: &'static str,
        then: AfterStop,
    ) -> bool {
        let Some(slot) = self.slot_mut(key) else {
            return false;
        };
        slot.retry = None;
        let Some(cell) = slot.actor.take() else {
            self.after_stop(key, reason, then, false);
            return false;
        };
        slot.state = ChildState::Stopping;
        let (policy, margin) = (slot.spec.shutdown, slot.spec.kill_margin);
        if let Some(t) = self.by_actor.get_mut(&cell.get_id()) {
            t.stopping = true;
        }
        let tag = self
            .completions
            .register(work, Action::Stop { key, reason, then });
        let done = self.completions.tx.clone();
        tokio::spawn(async move {
            terminate(&cell, policy, margin, reason).await;
            done.send(tag, Outcome::Done);
        });
        true
    }

    /// Collects the reports of finished tasks (the `Wake` message).
    pub(super) fn collect(&mut self, myself: &ActorRef<SupervisorMsg>) {
        self.completions.tx.woken.store(false, Ordering::Release);
        while let Ok(c) = self.completions.rx.try_recv() {
            let Some(f) = self.completions.inflight.remove(&c.tag) else {
                continue;
            };
            let ended = match (f.action, c.outcome) {
                (Action::Start { key, mode }, Outcome::Started(result)) => {
                    self.started(myself, f.work, key, mode, result)
                }
                (Action::Stop { key, reason, then }, _) => {
                    self.after_stop(key, reason, then, true);
                    true
                }
                _ => true,
            };
            if !ended {
                // Held for `Verify`, which ends the action.
                continue;
            }
            self.works.action_done(f.work);
            self.advance(myself, f.work);
        }
    }

    /// A start ended: the child runs, or the start failed. False when the
    /// report is held for a `Verify` (see [`SupervisorState::verify`]).
    fn started(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        work: WorkId,
        key: Key,
        mode: StartMode,
        result: Result<Started, String>,
    ) -> bool {
        match result {
            Ok(started) => {
                if self.slot(key).is_none() {
                    // Removed meanwhile (cannot happen while the work holds
                    // its lane): do not leave the actor behind.
                    started.cell.kill();
                    return true;
                }
                let id = started.cell.get_id();
                if !started.linked && !self.orphans.contains(&id) {
                    self.unverified.insert(
                        id,
                        Unverified {
                            work,
                            key,
                            mode,
                            started,
                        },
                    );
                    let _ = myself.cast(SupervisorMsg(Msg::Verify(id)));
                    return false;
                }
                self.adopt(myself, key, started, mode);
            }
            Err(reason) => self.start_failed(myself, work, key, mode, reason),
        }
        true
    }

    /// Takes a started child's actor as running. Its exit may already be
    /// among the orphans (seen before the report): it is applied at once.
    /// An actor of a first start (awaited in `pre_start`, where no event is
    /// served) that could not be linked is taken as running and checked by
    /// a `Verify` once the events queued by then are served.
    pub(super) fn adopt(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        key: Key,
        started: Started,
        mode: StartMode,
    ) {
        let Started { cell, linked } = started;
        let id = cell.get_id();
        let exit = self.orphans.take(&id);
        self.running(key, cell, mode);
        match exit {
            Some(exit) => {
                self.by_actor.remove(&id);
                self.record_exit(key, exit);
            }
            None if !linked => {
                let _ = myself.cast(SupervisorMsg(Msg::Verify(id)));
            }
            None => {}
        }
    }

    /// An actor that had ended, unlinked, when its start was reported was
    /// either linked by its closure (then its exit was queued before the
    /// report, so it has been served before this message: it is an orphan
    /// now, and the child started and ended) or never linked (no exit will
    /// ever come: the start failed). Supervision events are served before
    /// messages, which is what makes the answer exact.
    pub(super) fn verify(&mut self, myself: &ActorRef<SupervisorMsg>, id: ActorId) {
        const UNLINKED: &str = "its actor exited before the supervisor could link it";
        if let Some(u) = self.unverified.remove(&id) {
            if self.orphans.contains(&id) {
                self.adopt(myself, u.key, u.started, u.mode);
            } else {
                self.start_failed(myself, u.work, u.key, u.mode, UNLINKED.to_owned());
            }
            self.works.action_done(u.work);
            self.advance(myself, u.work);
            return;
        }
        // A first start's actor, taken as running by `adopt`.
        if let Some(Tracked { key, .. }) = self.by_actor.remove(&id) {
            self.record_exit(
                key,
                ObservedExit {
                    exit: ChildExit::StartFailed {
                        reason: UNLINKED.to_owned(),
                    },
                    retained: None,
                },
            );
        }
    }

    /// A running child's actor reports its readiness: recorded, shown (a
    /// failing check's output as the child's status) and published, unless
    /// the actor is not the child's current one or is being stopped.
    pub(super) fn set_ready(&mut self, actor: ActorId, ready: bool, reason: Option<String>) {
        let Some(tracked) = self.by_actor.get(&actor).copied() else {
            // Its start report is still on its way (bounded: an actor that
            // never starts leaves at most this many behind).
            if self.early_ready.len() < MAX_EARLY_READY {
                self.early_ready.insert(actor, (ready, reason));
            }
            return;
        };
        if tracked.stopping {
            return;
        }
        let name = self.name.clone();
        let Some(slot) = self.children.get_mut(tracked.key) else {
            return;
        };
        if slot.state != ChildState::Running {
            return;
        }
        // Reports come only when the verdict changes (the first failing
        // one included, so that a replica never ready says why).
        slot.ready = ready;
        slot.status = match (&reason, ready) {
            (Some(r), false) if !r.is_empty() => Some(format!("not ready: {r}")),
            _ => None,
        };
        let child = slot.spec.id.to_string();
        self.events.publish(if ready {
            Event::Ready {
                supervisor: name.to_string(),
                child,
            }
        } else {
            Event::NotReady {
                supervisor: name.to_string(),
                child,
                reason: reason.unwrap_or_default(),
            }
        });
    }

    /// Records a started child's actor.
    pub(super) fn running(&mut self, key: Key, cell: ActorCell, mode: StartMode) {
        let cell_id = cell.get_id();
        self.by_actor.insert(
            cell.get_id(),
            Tracked {
                key,
                stopping: false,
            },
        );
        let Some(slot) = self.children.get_mut(key) else {
            return;
        };
        slot.actor = Some(cell);
        slot.state = ChildState::Running;
        slot.started_at = Some(Instant::now());
        slot.incarnation += 1;
        slot.pending = None;
        slot.ready = !slot.spec.gated;
        slot.status = None;
        let early = self.early_ready.remove(&cell_id);
        let (name, id, kind, restart_count) = (
            &self.name,
            &slot.spec.id,
            slot.spec.kind,
            slot.restart_count,
        );
        self.events
            .publish_lazy(Level::DEBUG, || Event::ChildStarted {
                supervisor: name.to_string(),
                child: id.to_string(),
                child_kind: kind,
            });
        if let StartMode::Restart { exit_code } = mode {
            self.events
                .publish_lazy(Level::INFO, || Event::ChildRestarted {
                    supervisor: name.to_string(),
                    child: id.to_string(),
                    child_kind: kind,
                    exit_code,
                    restart_count,
                });
        }
        if let Some((ready, reason)) = early {
            self.set_ready(cell_id, ready, reason);
        }
        self.persist(key, None);
    }

    /// A child's stop ended (or it was not running): it takes the state the
    /// stop was for.
    pub(super) fn after_stop(
        &mut self,
        key: Key,
        reason: &str,
        then: AfterStop,
        was_running: bool,
    ) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        let temporary = slot.spec.restart == RestartType::Temporary;
        let (id, kind) = (slot.spec.id.clone(), slot.spec.kind);
        match then {
            AfterStop::Restart | AfterStop::Stopped if temporary => {
                self.remove(key);
            }
            AfterStop::Restart => slot.state = ChildState::Restarting,
            AfterStop::Stopped => slot.state = ChildState::Stopped,
            AfterStop::Shutdown => slot.state = ChildState::Shutdown,
            AfterStop::Start => slot.state = ChildState::Starting,
        }
        if was_running {
            self.publish_stopped(&id, kind, reason);
        }
    }

    /// Publishes that child `id` stopped (for `reason`).
    pub(super) fn publish_stopped(&self, id: &str, kind: crate::spec::ChildKind, reason: &str) {
        let name = &self.name;
        self.events
            .publish_lazy(Level::DEBUG, || Event::ChildStopped {
                supervisor: name.to_string(),
                child: id.to_owned(),
                child_kind: kind,
                reason: reason.to_owned(),
            });
    }

    /// A child's actor ended: a child that runs is decided about; one being
    /// stopped was expected to end; an unknown one waits for its start
    /// report.
    pub(super) fn on_exit_event(&mut self, cell: ActorCell, observed: ObservedExit) {
        let id = cell.get_id();
        match self.by_actor.remove(&id) {
            Some(Tracked { stopping: true, .. }) => {}
            Some(Tracked { key, .. }) => self.record_exit(key, observed),
            None => self.orphans.insert(id, observed),
        }
    }

    /// Records how a running child ended and queues the decision on its
    /// lane (at once when the lane is free).
    pub(super) fn record_exit(&mut self, key: Key, observed: ObservedExit) {
        let ObservedExit { exit, retained } = observed;
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        slot.actor = None;
        slot.state = ChildState::Restarting;
        slot.last_exit = Some(exit.clone());
        let incarnation = slot.incarnation;
        let (id, kind) = (slot.spec.id.clone(), slot.spec.kind);
        let name = &self.name;
        self.events
            .publish_lazy(Level::INFO, || Event::ChildExited {
                supervisor: name.to_string(),
                child: id.to_string(),
                child_kind: kind,
                exit: exit.to_string(),
                exit_code: exit.exit_code(),
            });
        if let Some(slot) = self.slot_mut(key) {
            slot.pending = Some(super::Pending {
                incarnation,
                exit,
                retained,
            });
        }
        let lanes = self.decision_lanes(key);
        self.works
            .enqueue(lanes, super::work::Subject::Decide { key, incarnation });
    }

    /// A start failed.
    fn start_failed(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        work: WorkId,
        key: Key,
        mode: StartMode,
        reason: String,
    ) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        let id = slot.spec.id.to_string();
        match mode {
            StartMode::New => {
                self.remove(key);
                self.works.set_result(
                    work,
                    key,
                    Err(super::SupervisorError::StartFailed { id, reason }),
                );
            }
            StartMode::Operator => {
                slot.state = ChildState::Stopped;
                slot.last_exit = Some(ChildExit::StartFailed {
                    reason: reason.clone(),
                });
                self.works.set_result(
                    work,
                    key,
                    Err(super::SupervisorError::StartFailed { id, reason }),
                );
            }
            StartMode::Restart { .. } => {
                // The rest of a group restart waits: the retry of this child
                // restarts its scope again.
                self.works.abort(work);
                let stop = self.fail_start(myself, key, reason);
                if !stop.is_empty() {
                    self.works.push_phases(work, self.stop_phases(stop));
                }
            }
        }
    }
}
