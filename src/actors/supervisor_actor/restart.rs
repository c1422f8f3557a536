//! Restarts: deciding what an exit leads to and planning it (restart
//! scopes, back-off, retries of failed starts, isolation, shutting the
//! service down, escalation).

use std::{collections::VecDeque, panic::AssertUnwindSafe, time::Duration};

use ractor::ActorRef;
use tokio::time::Instant;

use super::{
    ChildExit, ChildState, Isolated, Msg, SupervisorError, SupervisorMsg, SupervisorState,
    decision::{
        self, ChildPolicy, Decision, ExitClass, History, classify, decide, prune, restart_scope,
    },
    panic_message,
    slots::Key,
    work::{Action, AfterStop, StartMode, WorkId},
};
use crate::{
    events::Event,
    spec::{OnLimit, RestartType},
};

impl SupervisorState {
    pub(super) fn history(&self, key: Key) -> Option<History<'_>> {
        let slot = self.slot(key)?;
        Some(History {
            restarts: match self.flags.on_limit {
                OnLimit::Escalate => &self.restarts,
                OnLimit::Backoff => &slot.restarts,
            },
            backoff_step: slot.backoff_step,
            started_at: slot.started_at,
        })
    }

    pub(super) fn decide(&self, key: Key, exit: &ChildExit) -> Option<Decision> {
        let slot = self.slot(key)?;
        let policy = ChildPolicy {
            id: &slot.spec.id,
            restart: slot.spec.restart,
            on_panic: slot.spec.on_panic,
            exit_rules: &slot.spec.exit_rules,
        };
        Some(decide(
            &self.flags,
            &policy,
            exit,
            &self.history(key)?,
            Instant::now(),
        ))
    }

    /// Counts one restart in the window that applies.
    pub(super) fn record_restart(&mut self, key: Key) {
        let now = Instant::now();
        let window = self.flags.restart_window;
        let restarts = match self.flags.on_limit {
            OnLimit::Escalate => &mut self.restarts,
            OnLimit::Backoff => match self.children.get_mut(key) {
                Some(slot) => &mut slot.restarts,
                None => return,
            },
        };
        restarts.push_back(now);
        prune(restarts, window, now);
    }

    /// A stable run resets the back-off step even when no back-off applied.
    fn reset_step_if_stable(&mut self, key: Key) {
        let now = Instant::now();
        let Some(step) = self
            .history(key)
            .map(|h| decision::effective_step(&self.flags, &h, now))
        else {
            return;
        };
        if let Some(slot) = self.slot_mut(key) {
            slot.backoff_step = step;
        }
    }

    /// The children restarted with `key`, in start order.
    pub(super) fn scope(&self, key: Key) -> Vec<Key> {
        restart_scope(self.flags.strategy, self.children.keys(), key)
    }

    /// The decision about an exit whose turn came: acts on what needs no
    /// waiting and returns the steps of the rest.
    pub(super) fn decide_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        work: WorkId,
        key: Key,
        incarnation: u64,
    ) -> VecDeque<Vec<Action>> {
        let Some(slot) = self.slot_mut(key) else {
            return VecDeque::new();
        };
        // Overtaken (a group restart started it again) or superseded by a
        // later exit, whose own decision is queued: nothing to do here.
        if slot.pending.as_ref().map(|p| p.incarnation) != Some(incarnation) {
            return VecDeque::new();
        }
        let super::Pending { exit, retained, .. } = slot.pending.take().expect("checked above");
        let Some(decision) = self.decide(key, &exit) else {
            return VecDeque::new();
        };
        let supervisor = self.name.to_string();
        let slot = self.slot_mut(key).expect("decided about a present child");
        let (id, kind) = (slot.spec.id.to_string(), slot.spec.kind);
        match decision {
            Decision::Complete => {
                slot.state = ChildState::Completed;
                self.persist(key, None);
                self.publish(Event::ChildCompleted {
                    supervisor,
                    child: id,
                    child_kind: kind,
                    exit_code: exit.exit_code(),
                });
                VecDeque::new()
            }
            Decision::Drop => {
                let class = classify(&exit, &slot.spec.exit_rules);
                // Kept as done: the next agent does not start it again.
                slot.state = ChildState::Completed;
                self.persist(key, None);
                self.remove(key);
                if class != ExitClass::Abnormal {
                    self.publish(Event::ChildCompleted {
                        supervisor,
                        child: id,
                        child_kind: kind,
                        exit_code: exit.exit_code(),
                    });
                }
                VecDeque::new()
            }
            Decision::Isolate => {
                slot.state = ChildState::Isolated;
                slot.retained = retained;
                let container = match &exit {
                    ChildExit::Exited { container, .. } => container.clone(),
                    _ => None,
                };
                if let Some(hook) = &self.on_isolate {
                    let isolated = Isolated {
                        supervisor: supervisor.clone(),
                        child: id.clone(),
                        exit: exit.clone(),
                        retained: container.clone(),
                    };
                    if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| hook(&isolated))) {
                        tracing::error!(supervisor = %supervisor, child = %id, panic = %panic_message(p), "isolate hook panicked");
                    }
                }
                self.publish(Event::ChildIsolated {
                    supervisor,
                    child: id,
                    child_kind: kind,
                    exit_code: exit.exit_code(),
                    retained: container,
                });
                VecDeque::new()
            }
            Decision::Fail => {
                slot.state = ChildState::Failed;
                slot.retained = retained;
                self.failed(key, exit.to_string(), &exit);
                VecDeque::new()
            }
            Decision::GiveUp { crash_loops } => {
                slot.state = ChildState::Failed;
                slot.retained = retained;
                self.gave_up(key, crash_loops, &exit);
                VecDeque::new()
            }
            Decision::ShutdownService => {
                slot.state = ChildState::Shutdown;
                self.works.on_done(
                    work,
                    Event::ServiceShutdown {
                        supervisor,
                        child: id.clone(),
                        reason: format!("child {id} {exit}"),
                    },
                );
                self.shutdown_phases()
            }
            Decision::Escalate => {
                self.escalate(myself, key, &exit);
                VecDeque::new()
            }
            Decision::Restart => {
                self.record_restart(key);
                self.reset_step_if_stable(key);
                self.restart_phases(key)
            }
            Decision::Backoff { delay, next_step } => {
                self.record_restart(key);
                self.back_off(myself, key, delay, next_step);
                let stops = self.scope_sibling_stops(key);
                self.stop_phases(stops)
            }
        }
    }

    /// Restarts `key` with its strategy's scope: stops the running siblings
    /// in the scope (reverse start order), then starts every waiting member
    /// in order. A member that fails to start ends the attempt (the rest
    /// wait) and is retried.
    pub(super) fn restart_phases(&mut self, key: Key) -> VecDeque<Vec<Action>> {
        let stops = self.scope_sibling_stops(key);
        let mut phases = self.stop_phases(stops);
        let exit_code = self
            .slot(key)
            .and_then(|s| s.last_exit.as_ref())
            .and_then(ChildExit::exit_code);
        if let Some(slot) = self.slot_mut(key) {
            slot.state = ChildState::Restarting;
        }
        let starts = self
            .scope(key)
            .into_iter()
            .map(|s| {
                // A sibling held back at its first start (behind this child,
                // which failed its own) starts now for the first time.
                let first = s != key
                    && self
                        .slot(s)
                        .is_some_and(|c| c.state == ChildState::Starting && c.actor.is_none());
                let mode = if first {
                    StartMode::New
                } else {
                    StartMode::Restart {
                        exit_code: if s == key { exit_code } else { None },
                    }
                };
                Action::Start { key: s, mode }
            })
            .collect();
        phases.extend(self.in_order(starts));
        phases
    }

    /// The siblings in `key`'s restart scope a group restart stops, in
    /// reverse start order. Siblings that wait (restarting, backing off)
    /// join the group restart at once; temporary ones are dropped. A
    /// transient sibling that completed normally is restarted with the
    /// group, as OTP does; one stopped by an operator, isolated, shut down,
    /// or completed by a `done` exit code is not.
    pub(super) fn scope_sibling_stops(&mut self, key: Key) -> Vec<(Key, AfterStop)> {
        let mut stops = Vec::new();
        for s in self.scope(key).into_iter().rev().filter(|&s| s != key) {
            let Some(slot) = self.slot_mut(s) else {
                continue;
            };
            let temporary = slot.spec.restart == RestartType::Temporary;
            match slot.state {
                ChildState::Running => stops.push((s, AfterStop::Restart)),
                ChildState::Restarting | ChildState::CrashLoopBackOff if temporary => {
                    self.remove(s);
                }
                ChildState::Restarting | ChildState::CrashLoopBackOff => {
                    slot.retry = None;
                    slot.state = ChildState::Restarting;
                }
                ChildState::Completed => {
                    let done = slot
                        .last_exit
                        .as_ref()
                        .is_some_and(|e| classify(e, &slot.spec.exit_rules) == ExitClass::Done);
                    if !done {
                        slot.state = ChildState::Restarting;
                    }
                }
                _ => {}
            }
        }
        stops
    }

    /// Every child stops with its service: the running ones in reverse
    /// order (all at once when concurrent), the waiting ones at once.
    fn shutdown_phases(&mut self) -> VecDeque<Vec<Action>> {
        let mut stops = Vec::new();
        let keys: Vec<Key> = self.children.keys().rev().collect();
        for k in keys {
            let Some(slot) = self.slot_mut(k) else {
                continue;
            };
            slot.retry = None;
            match slot.state {
                ChildState::Running => stops.push((k, AfterStop::Shutdown)),
                ChildState::Isolated | ChildState::Failed => {}
                _ => slot.state = ChildState::Shutdown,
            }
        }
        self.stop_phases(stops)
    }

    /// Puts the child in `CrashLoopBackOff` and schedules its restart.
    pub(super) fn back_off(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        key: Key,
        delay: Duration,
        next_step: u32,
    ) {
        let token = self.next_token();
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        slot.state = ChildState::CrashLoopBackOff;
        slot.backoff_step = next_step;
        slot.retry = Some(token);
        slot.next_restart = chrono::Duration::from_std(delay)
            .ok()
            .and_then(|d| chrono::Utc::now().checked_add_signed(d));
        let (id, kind, restart_count) =
            (slot.spec.id.to_string(), slot.spec.kind, slot.restart_count);
        self.publish(Event::CrashLoopBackOff {
            supervisor: self.name.to_string(),
            child: id,
            child_kind: kind,
            restart_count,
            delay,
            resumed: false,
        });
        myself.send_after(delay, move || SupervisorMsg(Msg::Retry { key, token }));
        self.persist(key, Some(delay));
    }

    /// A `Retry` message: queues the restart if it is still the child's
    /// pending one (an operator call or a group restart may have overtaken it).
    pub(super) fn retry(&mut self, key: Key, token: u64) {
        let Some(slot) = self.slot_mut(key) else {
            return;
        };
        if slot.retry != Some(token) {
            return;
        }
        slot.retry = None;
        let lanes = self.scope(key);
        self.works
            .enqueue(lanes, super::work::Subject::Retry { key });
    }

    /// A (re)start attempt failed: it counts as a restart; it is retried
    /// through the mailbox (after a back-off delay past the limit under
    /// `backoff`), or the supervisor escalates past the limit under
    /// `escalate`. Returns the siblings to stop (a back-off stops the
    /// child's restart scope), in stop order.
    pub(super) fn fail_start(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        key: Key,
        reason: String,
    ) -> Vec<(Key, AfterStop)> {
        let exit = ChildExit::StartFailed {
            reason: reason.clone(),
        };
        let Some(slot) = self.slot_mut(key) else {
            return Vec::new();
        };
        slot.state = ChildState::Restarting;
        slot.last_exit = Some(exit.clone());
        let (id, kind, restart_count) = (slot.spec.id.clone(), slot.spec.kind, slot.restart_count);
        self.publish(Event::ChildStartFailed {
            supervisor: self.name.to_string(),
            child: id.to_string(),
            child_kind: kind,
            error: reason,
            restart_count,
        });
        match self.decide(key, &exit) {
            Some(Decision::Restart) => {
                self.record_restart(key);
                let token = self.next_token();
                if let Some(slot) = self.slot_mut(key) {
                    slot.retry = Some(token);
                }
                let _ = myself.cast(SupervisorMsg(Msg::Retry { key, token }));
                Vec::new()
            }
            Some(Decision::Backoff { delay, next_step }) => {
                self.record_restart(key);
                self.back_off(myself, key, delay, next_step);
                self.scope_sibling_stops(key)
            }
            Some(Decision::Escalate) => {
                self.escalate(myself, key, &exit);
                Vec::new()
            }
            Some(Decision::Drop) => {
                self.remove(key);
                Vec::new()
            }
            Some(Decision::GiveUp { crash_loops }) => {
                if let Some(slot) = self.slot_mut(key) {
                    slot.state = ChildState::Failed;
                }
                self.gave_up(key, crash_loops, &exit);
                Vec::new()
            }
            Some(
                Decision::Complete | Decision::Isolate | Decision::ShutdownService | Decision::Fail,
            ) => {
                if let Some(slot) = self.slot_mut(key) {
                    slot.state = ChildState::Stopped;
                }
                Vec::new()
            }
            None => Vec::new(),
        }
    }

    /// Child `key` stopped crash-looping for good (`give_up_after`): shown
    /// in its status, published and told to the failure hook.
    fn gave_up(&mut self, key: Key, crash_loops: u32, exit: &ChildExit) {
        let reason = format!(
            "gave up after {crash_loops} crash loops (backoff.give_up_after); last exit: {exit}"
        );
        if let Some(slot) = self.slot_mut(key) {
            slot.status = Some(format!("gave up after {crash_loops} crash loops"));
            slot.next_restart = None;
        }
        self.failed(key, reason, exit);
    }

    /// Child `key` stays down `failed` for `reason`: the event, then the
    /// failure hook.
    fn failed(&mut self, key: Key, reason: String, exit: &ChildExit) {
        let Some(slot) = self.slot(key) else {
            return;
        };
        let (child, kind, restarts) =
            (slot.spec.id.to_string(), slot.spec.kind, slot.restart_count);
        let supervisor = self.name.to_string();
        self.publish(Event::ChildFailed {
            supervisor: supervisor.clone(),
            child: child.clone(),
            child_kind: kind,
            reason: reason.clone(),
        });
        if let Some(hook) = &self.on_fail {
            let gave_up = super::GaveUp {
                supervisor: supervisor.clone(),
                child: child.clone(),
                reason,
                exit: exit.clone(),
                restarts,
            };
            if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| hook(&gave_up))) {
                tracing::error!(supervisor = %supervisor, child = %child, panic = %panic_message(p), "failure hook panicked");
            }
        }
        self.persist(key, None);
    }

    /// The error a supervisor gives up with, naming the child whose
    /// restart went over the limit and why it needed one; published.
    pub(super) fn give_up(&mut self, key: Key, exit: &ChildExit) -> SupervisorError {
        let child = self
            .slot(key)
            .map(|s| s.spec.id.to_string())
            .unwrap_or_default();
        let error = SupervisorError::IntensityExceeded {
            name: self.name.to_string(),
            child,
            max_restarts: self.flags.max_restarts,
            window: self.flags.restart_window,
            cause: exit.to_string(),
        };
        self.publish(Event::SupervisorEscalated {
            supervisor: self.name.to_string(),
            reason: error.to_string(),
        });
        error
    }

    /// Gives up: no more work begins; the actor stops, and `post_stop`
    /// stops every child in reverse order and fails to the parent.
    fn escalate(&mut self, myself: &ActorRef<SupervisorMsg>, key: Key, exit: &ChildExit) {
        if self.escalating.is_some() {
            return;
        }
        let error = self.give_up(key, exit);
        self.escalating = Some(error);
        myself.stop(Some("restart intensity exceeded".to_owned()));
    }
}
