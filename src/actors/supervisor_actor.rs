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
mod operator;
mod restart;
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

use self::{child::observe, slots::Slots, terminate::terminate};
use crate::{
    events::{Event, EventBus},
    spec::{Strategy, SupervisorFlags},
};

/// Reply to an operator call on a child.
pub type ChildReply = RpcReplyPort<Result<(), SupervisorError>>;

/// Messages a supervisor handles.
pub enum SupervisorMsg {
    /// Adds a child at the end and starts it; with no reply port, a failure
    /// is only logged.
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
        state.stop_everything("shutdown").await;
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

    /// Before the supervisor exits (stopped, or escalating): stops every
    /// child and removes what isolated children kept.
    async fn stop_everything(&mut self, reason: &str) {
        self.stop_all(reason, None).await;
        let retained: Vec<_> = self
            .children
            .iter_mut()
            .filter_map(|s| s.retained.take())
            .collect();
        futures::future::join_all(retained.into_iter().map(|r| r.release())).await;
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
