//! The OTP supervisor, built on ractor's linking and supervision events.
//!
//! A supervisor owns its children's specs and everything known about them;
//! nothing else holds that table. Children are any ractor actors, given as
//! spawn closures ([`ChildSpec`]), including container actors and nested
//! supervisors. What to do when a child exits is decided by a pure function
//! ([`decision::decide`]); this actor gathers the facts and carries it out.
//!
//! Semantics (DESIGN.md): `one_for_one`, `one_for_all`, `rest_for_one` and
//! `dynamic` strategies; `permanent`/`transient`/`temporary` restarts with
//! exit-code rules; panic actions `restart`/`isolate`/`shutdown`; a sliding
//! restart-intensity window, with `escalate` (fail to the parent) or
//! `backoff` (crash-loop back-off) past it; ordered start and reverse-order
//! shutdown with each child's `brutal_kill | timeout | infinity` policy;
//! failed restarts retried through the mailbox.
//!
//! ractor facts this is built around:
//! - the default `handle_supervisor_evt` stops the parent on any child exit;
//!   it is overridden here;
//! - an exiting actor has ractor KILL its still-linked children (no
//!   `post_stop` for them), so the supervisor stops its children itself,
//!   one by one in reverse start order, before it exits;
//! - a failing `pre_start` returns `SpawnErr` and sends no event: a spawn
//!   error is a failed start, counted like a restart;
//! - a child's `pre_start` runs inside the supervisor's task (ractor awaits it
//!   in `spawn_linked`): starts are ordered, and a child must not call its
//!   supervisor from `pre_start`.
//!
//! On failure, hook by hook:
//! - `pre_start`: starts the children in order; a child that fails to start
//!   is retried through the mailbox like a crashed one. Fails (the spawn
//!   returns an error) only if the restart limit is exceeded under
//!   `escalate`, after stopping the children it started.
//! - `handle` and `handle_supervisor_evt`: return an error only to escalate
//!   ("restart intensity exceeded"), after stopping every child in reverse
//!   order; the parent then applies its own policy to this supervisor.
//! - `post_stop`: stops the children in reverse order (concurrently for
//!   `dynamic`) and releases isolated containers; it does not fail.
//! - A panic in this actor is a bug: ractor then kills the children; each
//!   container actor's drop guard still kills its processes.

mod child;
pub mod decision;
mod error;
mod handle;
mod slots;
mod supervisor_spec;
mod terminate;
mod tree;

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasherDefault, Hasher},
    panic::AssertUnwindSafe,
    sync::Arc,
};

use futures::FutureExt;

use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent,
};
use tokio::time::Instant;
use tracing::Level;

pub(crate) use child::spawn_reason;
pub use child::{
    ChildContext, ChildCounts, ChildExit, ChildInfo, ChildKind, ChildSpec, ChildState,
    ContainerExit, Retained, StartFuture,
};
pub use error::SupervisorError;
pub use handle::SupervisorRef;
pub(crate) use handle::spawn_linked;
pub use supervisor_spec::{IsolateHook, Isolated, SupervisorSpec};
pub use tree::TreeNode;

use self::{
    child::{ObservedExit, observe},
    decision::{ChildPolicy, Decision, ExitClass, History, classify, decide, prune, restart_scope},
    slots::Slots,
    terminate::terminate,
};
use crate::{
    events::{Event, EventBus},
    spec::{OnLimit, RestartType, Strategy, SupervisorFlags},
};

/// Reply to an operator call on a child.
pub type ChildReply = RpcReplyPort<Result<(), SupervisorError>>;

/// Messages a supervisor handles.
pub enum SupervisorMsg {
    /// Adds a child at the end and starts it; with no reply port, a failure
    /// is only published as an event.
    StartChild(ChildSpec, Option<ChildReply>),
    /// Adds children at the end and starts them in order, replying with one
    /// result per child (in order).
    StartChildren(
        Vec<ChildSpec>,
        RpcReplyPort<Vec<Result<(), SupervisorError>>>,
    ),
    /// Stops a child with its shutdown policy; it stays stopped (temporary
    /// children are removed). Idempotent; never counts as a restart.
    TerminateChild(String, ChildReply),
    /// (Re)starts a child now, stopping it first if it runs.
    RestartChild(String, ChildReply),
    /// Removes a child that is not running.
    DeleteChild(String, ChildReply),
    /// Lists the children in start order.
    WhichChildren(RpcReplyPort<Vec<ChildInfo>>),
    /// Counts the children.
    CountChildren(RpcReplyPort<ChildCounts>),
    /// The tree below (and including) this supervisor.
    Snapshot(RpcReplyPort<TreeNode>),
    /// Internal: retry a failed restart, or restart after a back-off delay.
    /// Ignored unless `token` is still the child's pending one.
    Retry {
        /// The child.
        child: Arc<str>,
        /// Identifies the pending retry.
        token: u64,
    },
}

/// What a supervisor is spawned with.
pub struct SupervisorArgs {
    /// Its spec.
    pub spec: SupervisorSpec,
    /// The tree's event bus.
    pub events: EventBus,
}

/// The supervisor actor (stateless; its state is [`SupervisorState`]).
pub struct Supervisor;

/// Everything a supervisor knows. Owned by its actor alone.
pub struct SupervisorState {
    name: Arc<str>,
    flags: SupervisorFlags,
    on_isolate: Option<IsolateHook>,
    max_children: Option<usize>,
    events: EventBus,
    /// Children by start sequence: iteration order is start order.
    children: Slots<Slot>,
    by_id: HashMap<Arc<str>, u64>,
    by_actor: HashMap<ActorId, u64, BuildHasherDefault<ActorIdHasher>>,
    next_token: u64,
    /// Restart times of all children (counted under `escalate`).
    restarts: VecDeque<Instant>,
}

/// One child: its spec and what is known of it.
struct Slot {
    spec: ChildSpec,
    state: ChildState,
    actor: Option<ActorCell>,
    restart_count: u32,
    last_exit: Option<ChildExit>,
    started_at: Option<Instant>,
    /// This child's restart times (counted under `backoff`).
    restarts: VecDeque<Instant>,
    backoff_step: u32,
    /// The pending retry, if any (a stale `Retry` message is ignored).
    retry: Option<u64>,
    /// What an isolated child left for debugging.
    retained: Option<Box<dyn Retained>>,
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        crate::panics::install();
        let SupervisorArgs { spec, events } = args;
        let mut state = SupervisorState {
            name: Arc::from(spec.name),
            flags: spec.flags,
            on_isolate: spec.on_isolate,
            max_children: spec.max_children,
            events,
            children: Slots::default(),
            by_id: HashMap::with_capacity(spec.children.len()),
            by_actor: HashMap::with_capacity_and_hasher(spec.children.len(), Default::default()),
            next_token: 0,
            restarts: VecDeque::new(),
        };
        state.children.reserve(spec.children.len());
        for child in spec.children {
            state.insert(child);
        }
        let order: Vec<u64> = state.children.seqs().collect();
        let independent = matches!(
            state.flags.strategy,
            Strategy::OneForOne | Strategy::Dynamic
        );
        for seq in order {
            if let Err(reason) = state.start(&myself, seq).await {
                state.on_start_failure(&myself, seq, reason).await?;
                if !independent {
                    // Later siblings depend on this one: its retry starts them.
                    break;
                }
            }
        }
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::StartChild(spec, reply) => {
                let result = state.start_child(&myself, spec).await;
                match reply {
                    Some(reply) => {
                        let _ = reply.send(result);
                    }
                    None => {
                        if let Err(e) = result {
                            tracing::warn!(supervisor = %state.name, error = %e, "start_child failed");
                        }
                    }
                }
            }
            SupervisorMsg::StartChildren(specs, reply) => {
                let mut results = Vec::with_capacity(specs.len());
                for spec in specs {
                    results.push(state.start_child(&myself, spec).await);
                }
                let _ = reply.send(results);
            }
            SupervisorMsg::TerminateChild(id, reply) => {
                let _ = reply.send(state.terminate_child(&id).await);
            }
            SupervisorMsg::RestartChild(id, reply) => {
                let _ = reply.send(state.restart_child(&myself, &id).await);
            }
            SupervisorMsg::DeleteChild(id, reply) => {
                let _ = reply.send(state.delete_child(&id).await);
            }
            SupervisorMsg::WhichChildren(reply) => {
                let _ = reply.send(state.which_children());
            }
            SupervisorMsg::CountChildren(reply) => {
                let _ = reply.send(state.count_children());
            }
            SupervisorMsg::Snapshot(reply) => state.snapshot(reply),
            SupervisorMsg::Retry { child, token } => {
                let Some(&seq) = state.by_id.get(&child) else {
                    return Ok(());
                };
                let slot = state.slot(seq);
                if slot.retry != Some(token) {
                    return Ok(());
                }
                slot.retry = None;
                state.restart_scope(&myself, seq).await?;
            }
        }
        state.compact();
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Deliberately not ractor's default (which stops the supervisor on
        // any child exit): exits go through the restart decision.
        let Some((cell, observed)) = observe(event) else {
            return Ok(());
        };
        // Exits of children this supervisor stopped itself were unmapped
        // when it stopped them; so are stale events of replaced actors.
        let Some(seq) = state.by_actor.remove(&cell.get_id()) else {
            return Ok(());
        };
        state.on_exit(&myself, seq, observed).await?;
        state.compact();
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.stop_all("shutdown", None).await;
        let retained: Vec<_> = state
            .children
            .iter_mut()
            .filter_map(|s| s.retained.take())
            .collect();
        futures::future::join_all(retained.into_iter().map(|r| r.release())).await;
        Ok(())
    }
}

impl SupervisorState {
    fn slot(&mut self, seq: u64) -> &mut Slot {
        self.children
            .get_mut(seq)
            .expect("supervisor slot vanished")
    }

    fn publish(&self, event: Event) {
        self.events.publish(event);
    }

    /// Adds a child at the end, not started.
    fn insert(&mut self, spec: ChildSpec) -> u64 {
        let id = spec.id.clone();
        let seq = self.children.push(Slot {
            spec,
            state: ChildState::Restarting,
            actor: None,
            restart_count: 0,
            last_exit: None,
            started_at: None,
            restarts: VecDeque::new(),
            backoff_step: 0,
            retry: None,
            retained: None,
        });
        self.by_id.insert(id, seq);
        seq
    }

    /// Squeezes removed children out of the slab once they are the majority
    /// (a dynamic supervisor with churn); renumbers and re-indexes the rest.
    /// Only called between operations, when no sequence number is held.
    fn compact(&mut self) {
        if !self.children.needs_compaction() {
            return;
        }
        let (by_id, by_actor) = (&mut self.by_id, &mut self.by_actor);
        by_id.clear();
        by_actor.clear();
        self.children.compact(|slot, seq| {
            by_id.insert(slot.spec.id.clone(), seq);
            if let Some(cell) = &slot.actor {
                by_actor.insert(cell.get_id(), seq);
            }
        });
    }

    fn remove(&mut self, seq: u64) -> Option<Slot> {
        let slot = self.children.remove(seq)?;
        self.by_id.remove(&slot.spec.id);
        if let Some(cell) = &slot.actor {
            self.by_actor.remove(&cell.get_id());
        }
        Some(slot)
    }

    /// Spawns the child; on success it is running and mapped. A spawn
    /// closure that panics is a failed start, not a crash of the supervisor.
    async fn start(&mut self, myself: &ActorRef<SupervisorMsg>, seq: u64) -> Result<(), String> {
        let start = {
            let slot = &self.children[seq];
            let ctx = ChildContext {
                supervisor: myself.get_cell(),
                events: self.events.clone(),
                id: slot.spec.id.clone(),
                service: self.name.clone(),
                shutdown: slot.spec.shutdown,
                on_panic: slot.spec.on_panic,
                exit_rules: slot.spec.exit_rules.clone(),
            };
            std::panic::catch_unwind(AssertUnwindSafe(|| slot.spec.start(ctx)))
                .map_err(panic_message)?
        };
        let cell = AssertUnwindSafe(start)
            .catch_unwind()
            .await
            .map_err(panic_message)?
            .map_err(|e| e.to_string())?;
        // A closure that spawned its actor unlinked still gets supervised.
        if cell.try_get_supervisor().map(|s| s.get_id()) != Some(myself.get_id()) {
            cell.link(myself.get_cell());
        }
        self.by_actor.insert(cell.get_id(), seq);
        let slot = self
            .children
            .get_mut(seq)
            .expect("slot of a starting child");
        slot.actor = Some(cell);
        slot.state = ChildState::Running;
        slot.started_at = Some(Instant::now());
        let (name, id) = (&self.name, &slot.spec.id);
        self.events
            .publish_lazy(Level::DEBUG, || Event::ChildStarted {
                supervisor: name.to_string(),
                child: id.to_string(),
            });
        Ok(())
    }

    /// Stops a running child with its shutdown policy and unmaps it, so its
    /// exit event is ignored. Returns false if it was not running.
    async fn stop_child(&mut self, seq: u64, reason: &str) -> bool {
        let slot = self.slot(seq);
        let Some(cell) = slot.actor.take() else {
            return false;
        };
        let (policy, margin, id) = (
            slot.spec.shutdown,
            slot.spec.kill_margin,
            slot.spec.id.clone(),
        );
        self.by_actor.remove(&cell.get_id());
        terminate(&cell, policy, margin, reason).await;
        self.events
            .publish_lazy(Level::DEBUG, || Event::ChildStopped {
                supervisor: self.name.to_string(),
                child: id.to_string(),
                reason: reason.to_owned(),
            });
        true
    }

    /// Stops every running child: in reverse start order, or all at once
    /// for `dynamic`. Each stopped child's state becomes `to` (unchanged if `None`).
    async fn stop_all(&mut self, reason: &str, to: Option<ChildState>) {
        let order: Vec<u64> = self.children.seqs().rev().collect();
        for &seq in &order {
            let slot = self.slot(seq);
            slot.retry = None;
            if let Some(state) = to {
                slot.state = state;
            }
        }
        if self.flags.strategy == Strategy::Dynamic {
            let mut stopping = Vec::new();
            for &seq in &order {
                let slot = self.slot(seq);
                if let Some(cell) = slot.actor.take() {
                    stopping.push((
                        cell,
                        slot.spec.shutdown,
                        slot.spec.kill_margin,
                        slot.spec.id.clone(),
                    ));
                }
            }
            for (cell, ..) in &stopping {
                self.by_actor.remove(&cell.get_id());
            }
            futures::future::join_all(
                stopping
                    .iter()
                    .map(|(cell, policy, margin, _)| terminate(cell, *policy, *margin, reason)),
            )
            .await;
            for (.., id) in stopping {
                self.events
                    .publish_lazy(Level::DEBUG, || Event::ChildStopped {
                        supervisor: self.name.to_string(),
                        child: id.to_string(),
                        reason: reason.to_owned(),
                    });
            }
        } else {
            for seq in order {
                self.stop_child(seq, reason).await;
            }
        }
    }

    fn history(&self, seq: u64) -> History<'_> {
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

    fn decide(&self, seq: u64, exit: &ChildExit) -> Decision {
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
    fn record_restart(&mut self, seq: u64) {
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
    async fn on_exit(
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
    fn reset_step_if_stable(&mut self, seq: u64) {
        let now = Instant::now();
        let step = decision::effective_step(&self.flags, &self.history(seq), now);
        self.slot(seq).backoff_step = step;
    }

    /// Puts the child in `CrashLoopBackOff` and schedules its restart; the
    /// siblings in its restart scope are stopped now (they depend on it).
    async fn back_off(
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

    fn next_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
    }

    /// The children restarted with `seq`, in start order.
    fn scope(&self, seq: u64) -> Vec<u64> {
        match self.flags.strategy {
            // No need to list every child (a dynamic supervisor may have 100k).
            Strategy::OneForOne | Strategy::Dynamic => vec![seq],
            strategy => {
                let order: Vec<u64> = self.children.seqs().collect();
                restart_scope(strategy, &order, seq)
            }
        }
    }

    /// Stops the running siblings in `seq`'s restart scope (reverse start
    /// order); they wait in `Restarting`, temporary ones are dropped.
    async fn stop_scope_siblings(&mut self, seq: u64) {
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
    async fn restart_scope(
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
            match self.start(myself, s).await {
                Ok(()) => {
                    let slot = self.children.get_mut(s).expect("slot of a restarted child");
                    slot.restart_count += 1;
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
    async fn on_start_failure(
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
        let id = slot.spec.id.clone();
        self.publish(Event::ChildStartFailed {
            supervisor: self.name.to_string(),
            child: id.to_string(),
            error: reason,
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
    async fn escalate(&mut self, child: &str) -> ActorProcessingErr {
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
        self.stop_all("escalate", None).await;
        let retained: Vec<_> = self
            .children
            .iter_mut()
            .filter_map(|s| s.retained.take())
            .collect();
        futures::future::join_all(retained.into_iter().map(|r| r.release())).await;
        Box::new(error)
    }

    async fn start_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        spec: ChildSpec,
    ) -> Result<(), SupervisorError> {
        if self.by_id.contains_key(&spec.id) {
            return Err(SupervisorError::AlreadyPresent(spec.id.to_string()));
        }
        if let Some(max) = self.max_children
            && self.children.len() >= max
        {
            return Err(SupervisorError::MaxChildren(max));
        }
        let errors = spec.validate();
        if !errors.is_empty() {
            return Err(SupervisorError::InvalidSpec {
                name: self.name.to_string(),
                errors: crate::spec::SpecErrors(errors),
            });
        }
        let id = spec.id.to_string();
        let seq = self.insert(spec);
        if let Err(reason) = self.start(myself, seq).await {
            self.remove(seq);
            return Err(SupervisorError::StartFailed { id, reason });
        }
        Ok(())
    }

    fn find(&self, id: &str) -> Result<u64, SupervisorError> {
        self.by_id
            .get(id)
            .copied()
            .ok_or_else(|| SupervisorError::NotFound(id.to_owned()))
    }

    async fn terminate_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let seq = self.find(id)?;
        let slot = self.slot(seq);
        slot.retry = None;
        let waiting = matches!(
            slot.state,
            ChildState::Restarting | ChildState::CrashLoopBackOff
        );
        let temporary = slot.spec.restart == RestartType::Temporary;
        let was_running = self.stop_child(seq, "terminated by operator").await;
        if temporary {
            if let Some(slot) = self.remove(seq)
                && let Some(r) = slot.retained
            {
                r.release().await;
            }
        } else if was_running || waiting {
            self.slot(seq).state = ChildState::Stopped;
        }
        Ok(())
    }

    async fn restart_child(
        &mut self,
        myself: &ActorRef<SupervisorMsg>,
        id: &str,
    ) -> Result<(), SupervisorError> {
        let seq = self.find(id)?;
        self.stop_child(seq, "restarted by operator").await;
        let slot = self.slot(seq);
        slot.retry = None;
        slot.backoff_step = 0;
        if let Some(r) = slot.retained.take() {
            r.release().await;
        }
        self.start(myself, seq).await.map_err(|reason| {
            let slot = self.slot(seq);
            slot.state = ChildState::Stopped;
            slot.last_exit = Some(ChildExit::StartFailed {
                reason: reason.clone(),
            });
            SupervisorError::StartFailed {
                id: id.to_owned(),
                reason,
            }
        })
    }

    async fn delete_child(&mut self, id: &str) -> Result<(), SupervisorError> {
        let seq = self.find(id)?;
        if self.children[seq].actor.is_some() {
            return Err(SupervisorError::Running(id.to_owned()));
        }
        if let Some(slot) = self.remove(seq)
            && let Some(r) = slot.retained
        {
            r.release().await;
        }
        Ok(())
    }

    fn which_children(&self) -> Vec<ChildInfo> {
        self.children
            .iter()
            .map(|s| ChildInfo {
                id: s.spec.id.to_string(),
                kind: s.spec.kind,
                state: s.state,
                restart: s.spec.restart,
                restart_count: s.restart_count,
                last_exit: s.last_exit.clone(),
                actor: s.actor.clone(),
            })
            .collect()
    }

    fn count_children(&self) -> ChildCounts {
        let mut counts = ChildCounts {
            specs: self.children.len(),
            ..ChildCounts::default()
        };
        for s in self.children.iter() {
            if s.actor.is_some() {
                counts.active += 1;
            }
            if s.spec.kind == ChildKind::Supervisor {
                counts.supervisors += 1;
            } else {
                counts.workers += 1;
            }
        }
        counts
    }

    /// Replies with this supervisor's node; nested supervisors are asked for
    /// theirs from a separate task, so this one keeps serving meanwhile.
    fn snapshot(&self, reply: RpcReplyPort<TreeNode>) {
        let mut node = TreeNode {
            name: self.name.to_string(),
            kind: ChildKind::Supervisor,
            state: ChildState::Running,
            strategy: Some(self.flags.strategy),
            restarts: 0,
            last_exit: None,
            children: Vec::new(),
        };
        let mut nested = Vec::new();
        for (i, s) in self.children.iter().enumerate() {
            node.children.push(TreeNode {
                name: s.spec.id.to_string(),
                kind: s.spec.kind,
                state: s.state,
                strategy: None,
                restarts: s.restart_count,
                last_exit: s.last_exit.clone(),
                children: Vec::new(),
            });
            if s.spec.kind == ChildKind::Supervisor
                && let Some(cell) = &s.actor
            {
                nested.push((i, cell.clone()));
            }
        }
        if nested.is_empty() {
            let _ = reply.send(node);
            return;
        }
        tokio::spawn(async move {
            for (i, cell) in nested {
                let child: ActorRef<SupervisorMsg> = cell.into();
                if let Ok(ractor::rpc::CallResult::Success(sub)) = child
                    .call(
                        SupervisorMsg::Snapshot,
                        Some(std::time::Duration::from_secs(5)),
                    )
                    .await
                {
                    let entry = &mut node.children[i];
                    entry.strategy = sub.strategy;
                    entry.children = sub.children;
                }
            }
            let _ = reply.send(node);
        });
    }
}

/// Hashes actor ids (small integers ractor hands out, never chosen by users)
/// with one multiply instead of SipHash: the supervisor looks one up for
/// every child start and exit.
#[derive(Default)]
struct ActorIdHasher(u64);

impl Hasher for ActorIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x517c_c1b7_2722_0a95);
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

/// The message of a caught panic.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    let text = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    format!("panicked: {text}")
}
