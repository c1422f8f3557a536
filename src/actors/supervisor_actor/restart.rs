//! Restarts: deciding what an exit leads to and carrying it out (restart
//! scopes, back-off, retries of failed starts, escalation).

use std::panic::AssertUnwindSafe;

use ractor::{ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use tracing::Level;

use super::{
    ChildExit, ChildState, Isolated, SupervisorError, SupervisorMsg, SupervisorState,
    child::ObservedExit,
    decision::{
        self, ChildPolicy, Decision, ExitClass, History, classify, decide, prune, restart_scope,
    },
    panic_message,
};
use crate::{
    events::Event,
    spec::{OnLimit, RestartType},
};

impl SupervisorState {
    pub(super) fn history(&self, seq: u64) -> History<'_> {
        let slot = &self.children[seq];
        History {
            restarts: match self.flags.on_limit {
                OnLimit::Escalate => &self.restarts,
                OnLimit::Backoff => &slot.restarts,
            },
            backoff_step: slot.backoff_step,
            started_at: slot.started_at,
        }
    }

    pub(super) fn decide(&self, seq: u64, exit: &ChildExit) -> Decision {
        let slot = &self.children[seq];
        let policy = ChildPolicy {
            id: &slot.spec.id,
            restart: slot.spec.restart,
            on_panic: slot.spec.on_panic,
            exit_rules: &slot.spec.exit_rules,
        };
        decide(
            &self.flags,
            &policy,
            exit,
            &self.history(seq),
            Instant::now(),
        )
    }

    /// Counts one restart in the window that applies.
    pub(super) fn record_restart(&mut self, seq: u64) {
        let now = Instant::now();
        let window = self.flags.restart_window;
        let restarts = match self.flags.on_limit {
            OnLimit::Escalate => &mut self.restarts,
            OnLimit::Backoff => &mut self.children.get_mut(seq).expect("slot").restarts,
        };
        restarts.push_back(now);
        prune(restarts, window, now);
    }

    /// A child exited by itself: decide and act.
    pub(super) async fn on_exit(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        seq: u64,
        observed: ObservedExit,
    ) -> Result<(), ActorProcessingErr> {
        let ObservedExit { exit, retained } = observed;
        let slot = self.slot(seq);
        slot.actor = None;
        slot.last_exit = Some(exit.clone());
        let id = slot.spec.id.clone();
        self.events
            .publish_lazy(Level::INFO, || Event::ChildExited {
                supervisor: self.name.to_string(),
                child: id.to_string(),
                exit: exit.to_string(),
                exit_code: exit.exit_code(),
            });
        let decision = self.decide(seq, &exit);
        let service = self.name.to_string();
        match decision {
            Decision::Complete => {
                self.slot(seq).state = ChildState::Completed;
                self.publish(Event::ContainerCompleted {
                    id: id.to_string(),
                    service,
                    exit_code: exit.exit_code(),
                });
            }
            Decision::Drop => {
                let class = classify(&exit, &self.children[seq].spec.exit_rules);
                self.remove(seq);
                if class != ExitClass::Abnormal {
                    self.publish(Event::ContainerCompleted {
                        id: id.to_string(),
                        service,
                        exit_code: exit.exit_code(),
                    });
                }
            }
            Decision::Isolate => {
                let slot = self.slot(seq);
                slot.state = ChildState::Isolated;
                slot.retained = retained;
                let container = match &exit {
                    ChildExit::Exited { container, .. } => container.clone(),
                    _ => None,
                };
                if let Some(hook) = &self.on_isolate {
                    let isolated = Isolated {
                        supervisor: service.clone(),
                        child: id.to_string(),
                        exit: exit.clone(),
                        container: container.clone(),
                    };
                    if let Err(p) = std::panic::catch_unwind(AssertUnwindSafe(|| hook(&isolated))) {
                        tracing::error!(supervisor = %service, child = %id, panic = %panic_message(p), "isolate hook panicked");
                    }
                }
                self.publish(Event::ContainerIsolated {
                    id: id.to_string(),
                    service,
                    exit_code: exit.exit_code(),
                    container: container.map(|c| c.0),
                });
            }
            Decision::ShutdownService => {
                self.stop_all("service shutdown", Some(ChildState::Shutdown))
                    .await;
                self.publish(Event::ServiceShutdown {
                    service,
                    reason: format!("child {id} {exit}"),
                });
            }
            Decision::Escalate => return Err(self.escalate(&id).await),
            Decision::Restart => {
                self.record_restart(seq);
                self.reset_step_if_stable(seq);
                self.restart_scope(myself, seq).await?;
            }
            Decision::Backoff { delay, next_step } => {
                self.record_restart(seq);
                self.back_off(myself, seq, delay, next_step).await;
            }
        }
        Ok(())
    }

    /// A stable run resets the back-off step even when no back-off applied.
    pub(super) fn reset_step_if_stable(&mut self, seq: u64) {
        let now = Instant::now();
        let step = decision::effective_step(&self.flags, &self.history(seq), now);
        self.slot(seq).backoff_step = step;
    }

    /// Puts the child in `CrashLoopBackOff` and schedules its restart; the
    /// siblings in its restart scope are stopped now (they depend on it).
    pub(super) async fn back_off(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        seq: u64,
        delay: std::time::Duration,
        next_step: u32,
    ) {
        self.stop_scope_siblings(seq).await;
        let token = self.next_token();
        let slot = self.slot(seq);
        slot.state = ChildState::CrashLoopBackOff;
        slot.backoff_step = next_step;
        slot.retry = Some(token);
        let (id, restart_count) = (slot.spec.id.clone(), slot.restart_count);
        self.publish(Event::CrashLoopBackOff {
            id: id.to_string(),
            service: self.name.to_string(),
            restart_count,
            delay,
        });
        myself.send_after(delay, move || SupervisorMsg::Retry { child: id, token });
    }

    pub(super) fn next_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// The children restarted with `seq`, in start order.
    pub(super) fn scope(&self, seq: u64) -> Vec<u64> {
        restart_scope(self.flags.strategy, self.children.seqs(), seq)
    }

    /// Stops the running siblings in `seq`'s restart scope (reverse start
    /// order); they wait in `Restarting`, temporary ones are dropped.
    pub(super) async fn stop_scope_siblings(&mut self, seq: u64) {
        for s in self.scope(seq).into_iter().rev().filter(|&s| s != seq) {
            let slot = self.slot(s);
            let waiting = matches!(
                slot.state,
                ChildState::Restarting | ChildState::CrashLoopBackOff
            );
            if slot.state != ChildState::Running && !waiting {
                continue; // stopped, completed, isolated or shut down: not restarted by a group restart
            }
            slot.retry = None;
            let temporary = slot.spec.restart == RestartType::Temporary;
            self.stop_child(s, "restart").await;
            if temporary {
                self.remove(s);
            } else {
                self.slot(s).state = ChildState::Restarting;
            }
        }
    }

    /// Restarts `seq` with its strategy's scope: stops the running siblings
    /// in the scope, then starts every waiting member in order. A member
    /// that fails to start ends the attempt (the rest wait) and is retried.
    pub(super) async fn restart_scope(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        seq: u64,
    ) -> Result<(), ActorProcessingErr> {
        self.stop_scope_siblings(seq).await;
        self.slot(seq).state = ChildState::Restarting;
        for s in self.scope(seq) {
            let Some(slot) = self.children.get(s) else {
                continue;
            };
            if !matches!(
                slot.state,
                ChildState::Restarting | ChildState::CrashLoopBackOff
            ) {
                continue;
            }
            let exit_code = if s == seq {
                slot.last_exit.as_ref().and_then(ChildExit::exit_code)
            } else {
                None
            };
            // Every restart attempt counts, whether or not the start works
            // (a failed one is reported by `on_start_failure` with the count).
            self.slot(s).restart_count += 1;
            match self.start(myself, s).await {
                Ok(()) => {
                    let slot = self.children.get_mut(s).expect("slot of a restarted child");
                    let (name, id, restart_count) = (&self.name, &slot.spec.id, slot.restart_count);
                    self.events
                        .publish_lazy(Level::INFO, || Event::ContainerRestarted {
                            id: id.to_string(),
                            service: name.to_string(),
                            exit_code,
                            restart_count,
                        });
                }
                Err(reason) => return self.on_start_failure(myself, s, reason).await,
            }
        }
        Ok(())
    }

    /// A (re)start attempt failed: it counts as a restart; retry through the
    /// mailbox (after a back-off delay past the limit under `backoff`), or
    /// escalate past the limit under `escalate`.
    pub(super) async fn on_start_failure(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        seq: u64,
        reason: String,
    ) -> Result<(), ActorProcessingErr> {
        let exit = ChildExit::StartFailed {
            reason: reason.clone(),
        };
        let slot = self.slot(seq);
        slot.state = ChildState::Restarting;
        slot.last_exit = Some(exit.clone());
        let (id, restart_count) = (slot.spec.id.clone(), slot.restart_count);
        self.publish(Event::ChildStartFailed {
            supervisor: self.name.to_string(),
            child: id.to_string(),
            error: reason,
            restart_count,
        });
        match self.decide(seq, &exit) {
            Decision::Restart => {
                self.record_restart(seq);
                let token = self.next_token();
                self.slot(seq).retry = Some(token);
                let _ = myself.cast(SupervisorMsg::Retry { child: id, token });
            }
            Decision::Backoff { delay, next_step } => {
                self.record_restart(seq);
                self.back_off(myself, seq, delay, next_step).await;
            }
            Decision::Escalate => return Err(self.escalate(&id).await),
            Decision::Drop => {
                self.remove(seq);
            }
            Decision::Complete | Decision::Isolate | Decision::ShutdownService => {
                self.slot(seq).state = ChildState::Stopped;
            }
        }
        Ok(())
    }

    /// Gives up: stops every child in reverse order and returns the error
    /// this supervisor fails with.
    pub(super) async fn escalate(&mut self, child: &str) -> ActorProcessingErr {
        let error = SupervisorError::IntensityExceeded {
            name: self.name.to_string(),
            child: child.to_owned(),
            max_restarts: self.flags.max_restarts,
            window: self.flags.restart_window,
        };
        self.publish(Event::SupervisorEscalated {
            supervisor: self.name.to_string(),
            reason: error.to_string(),
        });
        self.stop_everything("escalate").await;
        Box::new(error)
    }
}
