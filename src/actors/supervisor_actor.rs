//! The OTP supervisor, built on ractor's linking and supervision events.
//!
//! A supervisor owns its children's specs and everything known about them;
//! nothing else holds that table. Children are any ractor actors, given as
//! spawn closures ([`ChildSpec`]), including nested supervisors; nothing
//! here knows what a child runs (containers come in through
//! `ChildSpec::container`, next to the container actor). What to do when a
//! child exits is decided by a pure function ([`decision::decide`]); this
//! actor gathers the facts and carries it out.
//!
//! Semantics (DESIGN.md): `one_for_one`, `one_for_all`, `rest_for_one` and
//! `dynamic` strategies; `permanent`/`transient`/`temporary` restarts with
//! exit-code rules; panic actions `restart`/`isolate`/`shutdown`; a sliding
//! restart-intensity window, with `escalate` (fail to the parent) or
//! `backoff` (crash-loop back-off) past it; ordered start and reverse-order
//! shutdown with each child's `brutal_kill | timeout | infinity` policy;
//! failed restarts retried through the mailbox.
//!
//! # The mailbox never waits on a child
//!
//! Starting a child (its spawn closure, which may pull an image) and
//! stopping one (its grace period) run in tasks that report back through a
//! channel and a `Wake` message ([`ops`]). Meanwhile the supervisor answers
//! every call. Order is kept by *work* ([`work`]): each operation (a
//! restart decision, a group restart, an operator call) holds the *lanes*
//! of the children it touches and runs its steps one phase at a time; work
//! on other children goes on beside it, and a call on a child that is busy
//! waits its turn on that child's lane. `one_for_all` and `rest_for_one`
//! restarts hold every child of their scope, so a group restart still
//! stops in reverse order and starts in order, step by step, as OTP does.
//! Children of a supervisor marked `concurrent` (a service's replicas, a
//! dynamic supervisor's children) start and stop all at once instead.
//!
//! ractor facts this is built around:
//! - the default `handle_supervisor_evt` stops the parent on any child exit;
//!   it is overridden here;
//! - an exiting actor has ractor KILL its still-linked children (no
//!   `post_stop` for them), so the supervisor stops its children itself,
//!   one by one in reverse start order, before it exits (`post_stop`
//!   awaits whatever is still in flight first);
//! - a failing `pre_start` returns `SpawnErr` and sends no event: a spawn
//!   error is a failed start, counted like a restart;
//! - a child is linked only after its `pre_start`, and supervision events
//!   are served before messages: a child can die before its start report
//!   arrives; its exit is kept until the report claims it;
//! - an error returned from `post_stop` becomes the actor's failure: that
//!   is how an escalating supervisor fails to its parent after an orderly
//!   stop of its children.
//!
//! On failure, hook by hook:
//! - `pre_start`: takes back the children's restart state an earlier agent
//!   kept (with [`SupervisorSpec::persist`]: counts, window, a pending
//!   back-off, whose child then waits for the rest of it), then starts the
//!   children (in order, or all at once when `concurrent`); nobody holds
//!   the supervisor's address yet, so it awaits them. A child that fails to start is retried through the mailbox like
//!   a crashed one. Fails (the spawn returns an error naming the child and
//!   its cause) only if the restart limit is exceeded under `escalate`,
//!   after stopping the children it started.
//! - `handle` and `handle_supervisor_evt`: never wait on a child and never
//!   fail; past the restart limit under `escalate` they stop the actor,
//!   whose `post_stop` then fails it.
//! - `post_stop`: waits for the starts and stops in flight, answers every
//!   queued call, stops the children in reverse order (concurrently when
//!   `concurrent`), releases what isolated children kept, and fails with
//!   "restart intensity exceeded" when escalating.
//! - A panic in this actor is a bug: ractor then kills the children; each
//!   container actor's drop guard still kills its processes.

pub mod decision;
mod error;
mod handle;
mod lifecycle;
mod operator;
mod ops;
mod persist;
mod restart;
mod slots;
mod supervisor_spec;
mod terminate;
mod tree;
mod work;

mod child;

use std::{
    collections::{HashMap, VecDeque},
    hash::{BuildHasherDefault, Hasher},
    sync::Arc,
};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::time::Instant;

pub use child::{
    ChildContext, ChildCounts, ChildExit, ChildInfo, ChildKind, ChildSpec, ChildState, ExitReport,
    Retained, StartFuture,
};
pub(crate) use child::{report_ready, report_status, spawn_reason};
pub use error::SupervisorError;
pub use handle::SupervisorRef;
pub(crate) use handle::spawn_linked;
pub use supervisor_spec::{FailHook, GaveUp, IsolateHook, Isolated, SupervisorSpec};
pub use tree::TreeNode;

use self::{
    child::ObservedExit,
    ops::Completions,
    slots::{Key, Slots},
    work::Works,
};
use crate::{
    events::{Event, EventBus},
    spec::SupervisorFlags,
};

/// Reply to an operator call on a child.
pub(crate) type ChildReply = RpcReplyPort<Result<(), SupervisorError>>;

/// A message to a supervisor. Built only by [`SupervisorRef`] (and by the
/// supervisor itself): nothing outside can forge a retry or a start report.
pub struct SupervisorMsg(pub(crate) Msg);

// Local only: never sent to another node (the `cluster` feature of
// ractor asks every message type to say so).
impl ractor::Message for SupervisorMsg {}

/// What a supervisor handles.
pub(crate) enum Msg {
    /// Adds a child at the end and starts it; with no reply port, a failure
    /// is only logged.
    StartChild(ChildSpec, Option<ChildReply>),
    /// Adds children at the end and starts them, replying with one result
    /// per child (in order).
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
    /// Replaces the spec of a child for its next starts; its actor (if it
    /// runs) is not touched.
    ReplaceChildSpec(ChildSpec, ChildReply),
    /// Lists the children in start order.
    WhichChildren(RpcReplyPort<Vec<ChildInfo>>),
    /// Counts the children.
    CountChildren(RpcReplyPort<ChildCounts>),
    /// The tree below (and including) this supervisor.
    Snapshot(RpcReplyPort<TreeNode>),
    /// Retry a failed restart, or restart after a back-off delay. Ignored
    /// unless `token` is still the child's pending one.
    Retry { key: Key, token: u64 },
    /// Starts or stops finished in their tasks: collect the reports.
    Wake,
    /// A started actor that could not be linked: has its exit come?
    Verify(ractor::ActorId),
    /// A running child's actor says whether it is ready (its readiness
    /// probe). Ignored unless `actor` is the child's current actor.
    Ready {
        actor: ActorId,
        ready: bool,
        reason: Option<String>,
    },
    /// A one-line status of child `id` (a start waiting for a dependency,
    /// a process's `STATUS=`); `None` clears it.
    Status {
        id: Arc<str>,
        status: Option<String>,
    },
    /// Fault injection: panic in the handler (see [`SupervisorRef::inject_panic`]).
    InjectPanic,
    /// Fault injection: sleep in the handler (see [`SupervisorRef::inject_stall`]).
    InjectStall(std::time::Duration),
}

impl From<Msg> for SupervisorMsg {
    fn from(m: Msg) -> Self {
        Self(m)
    }
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
    on_fail: Option<supervisor_spec::FailHook>,
    max_children: Option<usize>,
    /// Children are independent: start and stop them all at once.
    concurrent: bool,
    events: EventBus,
    /// Children by key, in start order.
    children: Slots<Slot>,
    by_id: HashMap<Arc<str>, Key>,
    /// The actors of children that run or are being stopped.
    by_actor: HashMap<ActorId, Tracked, BuildHasherDefault<ActorIdHasher>>,
    /// Exits of actors whose start report has not arrived yet.
    orphans: Orphans,
    /// Starts whose actor had ended, unlinked, when their report was read:
    /// held until the events queued by then are served (`Msg::Verify`).
    unverified: HashMap<ActorId, ops::Unverified, BuildHasherDefault<ActorIdHasher>>,
    /// Readiness reported by actors whose start report has not arrived
    /// yet (a probe can pass before it): applied when it does.
    early_ready: HashMap<ActorId, (bool, Option<String>), BuildHasherDefault<ActorIdHasher>>,
    next_token: u64,
    /// Restart times of all children (counted under `escalate`).
    restarts: VecDeque<Instant>,
    /// Operations under way and queued, with the lanes they hold.
    works: Works,
    /// Reports of the starts and stops running in tasks.
    completions: Completions,
    /// Set when the supervisor gave up: `post_stop` fails with it.
    escalating: Option<SupervisorError>,
    /// Where its children's restart state is kept, if anywhere.
    persist: Option<persist::Persist>,
}

/// An actor the supervisor knows.
#[derive(Debug, Clone, Copy)]
struct Tracked {
    key: Key,
    /// True once the supervisor began stopping it: its exit is expected.
    stopping: bool,
}

/// One child: its spec and what is known of it.
struct Slot {
    spec: ChildSpec,
    state: ChildState,
    actor: Option<ActorCell>,
    /// How many actors this child has had; tells a stale exit from a new one.
    incarnation: u64,
    restart_count: u32,
    last_exit: Option<ChildExit>,
    started_at: Option<Instant>,
    /// This child's restart times (counted under `backoff`).
    restarts: VecDeque<Instant>,
    backoff_step: u32,
    /// The pending retry, if any (a stale `Retry` message is ignored).
    retry: Option<u64>,
    /// When a back-off ends, on the wall clock (shown while backing off).
    next_restart: Option<chrono::DateTime<chrono::Utc>>,
    /// What an isolated child left for debugging.
    retained: Option<Box<dyn Retained>>,
    /// An exit whose decision waits for the child's lane.
    pending: Option<Pending>,
    /// Whether the current actor said it is ready (children whose spec is
    /// not `gated` are ready once started).
    ready: bool,
    /// A one-line status, shown in the tree.
    status: Option<String>,
}

/// An exit not decided yet.
struct Pending {
    incarnation: u64,
    exit: ChildExit,
    retained: Option<Box<dyn Retained>>,
}

/// Exits of actors not known yet, bounded (an actor a spawn closure linked
/// but never returned would otherwise stay forever).
#[derive(Default)]
struct Orphans {
    exits: HashMap<ActorId, ObservedExit, BuildHasherDefault<ActorIdHasher>>,
    order: VecDeque<ActorId>,
}

/// Orphan exits kept at most.
const MAX_ORPHANS: usize = 4096;

impl Orphans {
    fn insert(&mut self, id: ActorId, exit: ObservedExit) {
        if self.order.len() >= MAX_ORPHANS
            && let Some(old) = self.order.pop_front()
        {
            self.exits.remove(&old);
        }
        self.order.push_back(id);
        self.exits.insert(id, exit);
    }

    fn contains(&self, id: &ActorId) -> bool {
        self.exits.contains_key(id)
    }

    fn take(&mut self, id: &ActorId) -> Option<ObservedExit> {
        let exit = self.exits.remove(id)?;
        self.order.retain(|o| o != id);
        Some(exit)
    }
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
        let SupervisorArgs { spec, events } = args;
        let mut state = SupervisorState {
            name: Arc::from(spec.name),
            flags: spec.flags,
            on_isolate: spec.on_isolate,
            on_fail: spec.on_fail,
            max_children: spec.max_children,
            concurrent: spec.concurrent,
            events,
            children: Slots::default(),
            by_id: HashMap::with_capacity(spec.children.len()),
            by_actor: HashMap::with_capacity_and_hasher(spec.children.len(), Default::default()),
            orphans: Orphans::default(),
            unverified: HashMap::default(),
            early_ready: HashMap::default(),
            next_token: 0,
            restarts: VecDeque::new(),
            works: Works::default(),
            completions: Completions::new(&myself),
            escalating: None,
            persist: spec.persist,
        };
        state.children.reserve(spec.children.len());
        for child in spec.children {
            state.insert(child, ChildState::Starting);
        }
        state.restore(&myself).await;
        state.start_initial(&myself).await?;
        Ok(state)
    }

    /// A panic here (a bug, or an injected fault) ends the supervisor as
    /// OTP's does: its children are stopped first, each with its shutdown
    /// policy, then it fails and its parent decides.
    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        SupervisorMsg(message): Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let handled = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(async {
            match message {
                Msg::StartChild(spec, reply) => state.start_child(spec, reply),
                Msg::StartChildren(specs, reply) => state.start_children(specs, reply),
                Msg::TerminateChild(id, reply) => state.terminate_child(&id, reply),
                Msg::RestartChild(id, reply) => state.restart_child(&id, reply),
                Msg::DeleteChild(id, reply) => state.delete_child(&id, reply),
                Msg::ReplaceChildSpec(spec, reply) => {
                    let _ = reply.send(state.replace_child_spec(spec));
                }
                Msg::WhichChildren(reply) => {
                    let _ = reply.send(state.which_children());
                }
                Msg::CountChildren(reply) => {
                    let _ = reply.send(state.count_children());
                }
                Msg::Snapshot(reply) => state.snapshot(reply),
                Msg::Retry { key, token } => state.retry(key, token),
                Msg::Wake => state.collect(&myself),
                Msg::Verify(id) => state.verify(&myself, id),
                Msg::Ready {
                    actor,
                    ready,
                    reason,
                } => state.set_ready(actor, ready, reason),
                Msg::Status { id, status } => {
                    if let Some(slot) = state
                        .by_id
                        .get(&id)
                        .and_then(|k| state.children.get_mut(*k))
                    {
                        slot.status = status;
                    }
                }
                Msg::InjectPanic => panic!("injected fault in supervisor {}", state.name),
                Msg::InjectStall(d) => {
                    tracing::warn!(supervisor = %state.name, stall = ?d, "injected fault: the supervisor stalls");
                    tokio::time::sleep(d).await;
                }
            }
            state.pump(&myself);
        }))
        .await;
        if let Err(panic) = handled {
            let text = crate::panics::message(panic.as_ref());
            tracing::error!(supervisor = %state.name, panic = %text, "supervisor panicked: stopping its children");
            state.stop_everything("shutdown").await;
            return Err(format!("supervisor {} panicked: {text}", state.name).into());
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: ractor::SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Deliberately not ractor's default (which stops the supervisor on
        // any child exit): exits go through the restart decision.
        if let Some((cell, observed)) = child::observe(event) {
            state.on_exit_event(cell, observed);
            state.pump(&myself);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let reason = if state.escalating.is_some() {
            "escalate"
        } else {
            "shutdown"
        };
        state.stop_everything(reason).await;
        match state.escalating.take() {
            Some(error) => Err(Box::new(error)),
            None => Ok(()),
        }
    }
}

impl SupervisorState {
    fn slot(&self, key: Key) -> Option<&Slot> {
        self.children.get(key)
    }

    fn slot_mut(&mut self, key: Key) -> Option<&mut Slot> {
        self.children.get_mut(key)
    }

    fn publish(&self, event: Event) {
        self.events.publish(event);
    }

    /// Adds a child at the end, not started.
    fn insert(&mut self, spec: ChildSpec, state: ChildState) -> Key {
        let id = spec.id.clone();
        let key = self.children.push(Slot {
            spec,
            state,
            actor: None,
            incarnation: 0,
            restart_count: 0,
            last_exit: None,
            started_at: None,
            restarts: VecDeque::new(),
            backoff_step: 0,
            retry: None,
            next_restart: None,
            retained: None,
            pending: None,
            ready: false,
            status: None,
        });
        self.by_id.insert(id, key);
        key
    }

    /// Removes a child (its actor, if any, is no longer tracked).
    fn remove(&mut self, key: Key) -> Option<Slot> {
        let slot = self.children.remove(key)?;
        if self.by_id.get(&slot.spec.id) == Some(&key) {
            self.by_id.remove(&slot.spec.id);
        }
        if let Some(cell) = &slot.actor {
            self.by_actor.remove(&cell.get_id());
        }
        Some(slot)
    }

    fn next_token(&mut self) -> u64 {
        self.next_token += 1;
        self.next_token
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
    format!("panicked: {}", crate::panics::message(&*payload))
}
