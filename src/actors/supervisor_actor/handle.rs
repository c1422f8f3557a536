//! A typed handle to a running supervisor: the programmatic API.

use std::sync::Arc;

use ractor::{
    Actor, ActorCell, ActorRef, Message, RpcReplyPort, concurrency::JoinHandle, rpc::CallResult,
};

use super::{
    ChildCounts, ChildInfo, ChildSpec, Msg, Supervisor, SupervisorArgs, SupervisorError,
    SupervisorMsg, SupervisorSpec, TreeNode, child::spawn_reason,
};
use crate::events::{EventBus, EventStream};

/// A running supervisor. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SupervisorRef {
    actor: ActorRef<SupervisorMsg>,
    events: EventBus,
    name: Arc<str>,
}

impl SupervisorRef {
    /// Validates `spec` and starts it as the root of a new tree with its own
    /// event bus. The join handle completes when the supervisor exits.
    pub async fn start(spec: SupervisorSpec) -> Result<(Self, JoinHandle<()>), SupervisorError> {
        Self::start_with_events(spec, EventBus::new()).await
    }

    /// Like [`SupervisorRef::start`], publishing into `events`.
    pub async fn start_with_events(
        spec: SupervisorSpec,
        events: EventBus,
    ) -> Result<(Self, JoinHandle<()>), SupervisorError> {
        let name: Arc<str> = Arc::from(spec.name.as_str());
        check(&spec)?;
        let (actor, join) = Supervisor::spawn(
            None,
            Supervisor,
            SupervisorArgs {
                spec,
                events: events.clone(),
            },
        )
        .await
        .map_err(|e| spawn_error(&name, e))?;
        Ok((
            Self {
                actor,
                events,
                name,
            },
            join,
        ))
    }

    /// Like [`SupervisorRef::start_with_events`], linked to `parent`: the
    /// parent receives the supervisor's exit as a supervision event.
    pub async fn start_linked(
        spec: SupervisorSpec,
        events: EventBus,
        parent: ActorCell,
    ) -> Result<Self, SupervisorError> {
        let name: Arc<str> = Arc::from(spec.name.as_str());
        check(&spec)?;
        let (actor, _) = Supervisor::spawn_linked(
            None,
            Supervisor,
            SupervisorArgs {
                spec,
                events: events.clone(),
            },
            parent,
        )
        .await
        .map_err(|e| spawn_error(&name, e))?;
        Ok(Self {
            actor,
            events,
            name,
        })
    }

    /// A handle to a supervisor cell (e.g. a nested supervisor found with
    /// `which_children`) publishing into `events`.
    pub fn from_cell(cell: ActorCell, name: impl Into<String>, events: EventBus) -> Self {
        Self {
            actor: cell.into(),
            events,
            name: Arc::from(name.into()),
        }
    }

    /// Fault injection for tests: the supervisor panics in its handler
    /// (its children are stopped, then it fails and its parent decides).
    #[doc(hidden)]
    pub fn inject_panic(&self) {
        let _ = self.actor.cast(SupervisorMsg(Msg::InjectPanic));
    }

    /// Fault injection for tests: the supervisor's handler sleeps for
    /// `d`, answering nothing meanwhile (a wedged supervisor).
    #[doc(hidden)]
    pub fn inject_stall(&self, d: std::time::Duration) {
        let _ = self.actor.cast(SupervisorMsg(Msg::InjectStall(d)));
    }

    /// The supervisor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its actor.
    pub fn actor(&self) -> &ActorRef<SupervisorMsg> {
        &self.actor
    }

    /// Its cell (to link user actors to it).
    pub fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// The tree's event bus.
    pub fn event_bus(&self) -> &EventBus {
        &self.events
    }

    /// Every event of the tree from now on.
    pub fn events(&self) -> EventStream {
        self.events.subscribe()
    }

    async fn ask<R: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<R>) -> Msg,
    ) -> Result<R, SupervisorError> {
        match self.actor.call(|r| SupervisorMsg(build(r)), None).await {
            Ok(CallResult::Success(r)) => Ok(r),
            _ => Err(SupervisorError::Unavailable(self.name.to_string())),
        }
    }

    /// Adds a child at the end and starts it; answers once it started. If
    /// it fails to start it is not added (no retry, no restart counted).
    /// The supervisor keeps answering other calls while the child starts.
    pub async fn start_child(&self, spec: ChildSpec) -> Result<(), SupervisorError> {
        self.ask(|r| Msg::StartChild(spec, Some(r))).await?
    }

    /// Adds and starts many children with one message (the fastest way to
    /// add thousands); one result per child, in order.
    pub async fn start_children(
        &self,
        specs: Vec<ChildSpec>,
    ) -> Result<Vec<Result<(), SupervisorError>>, SupervisorError> {
        self.ask(|r| Msg::StartChildren(specs, r)).await
    }

    /// Like [`SupervisorRef::start_child`] without waiting for the result
    /// (a failure is logged); for adding many children fast.
    pub fn start_child_nowait(&self, spec: ChildSpec) -> Result<(), SupervisorError> {
        self.actor
            .cast(SupervisorMsg(Msg::StartChild(spec, None)))
            .map_err(|_| SupervisorError::Unavailable(self.name.to_string()))
    }

    /// Stops a child with its shutdown policy; it stays stopped until
    /// [`SupervisorRef::restart_child`] (temporary children are removed).
    /// Answers once the child is gone; the supervisor answers other calls
    /// meanwhile, and a second call on the same child waits for the first.
    pub async fn terminate_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_owned();
        self.ask(|r| Msg::TerminateChild(id, r)).await?
    }

    /// Restarts a child now (stopping it first if it runs; skipping the rest
    /// of a back-off delay). Refused with [`SupervisorError::Restarting`]
    /// while the child's automatic restarts fail and are retried.
    pub async fn restart_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_owned();
        self.ask(|r| Msg::RestartChild(id, r)).await?
    }

    /// Removes a child that is not running (refused while it runs or its
    /// restart is under way).
    pub async fn delete_child(&self, id: &str) -> Result<(), SupervisorError> {
        let id = id.to_owned();
        self.ask(|r| Msg::DeleteChild(id, r)).await?
    }

    /// Replaces the spec of child `spec.id` (same id) for its next starts,
    /// without stopping or restarting it. For nested supervisors whose own
    /// children the caller changed in place.
    pub async fn replace_child_spec(&self, spec: ChildSpec) -> Result<(), SupervisorError> {
        self.ask(|r| Msg::ReplaceChildSpec(spec, r)).await?
    }

    /// The children in start order.
    pub async fn which_children(&self) -> Result<Vec<ChildInfo>, SupervisorError> {
        self.ask(Msg::WhichChildren).await
    }

    /// Child counts.
    pub async fn count_children(&self) -> Result<ChildCounts, SupervisorError> {
        self.ask(Msg::CountChildren).await
    }

    /// The whole tree below this supervisor.
    pub async fn snapshot(&self) -> Result<TreeNode, SupervisorError> {
        self.ask(Msg::Snapshot).await
    }

    /// The current actor of child `id` as an `ActorRef<M>` (`None` while it
    /// does not run). Restarts replace the actor: ask again after one.
    pub async fn child<M: Message>(
        &self,
        id: &str,
    ) -> Result<Option<ActorRef<M>>, SupervisorError> {
        Ok(self
            .which_children()
            .await?
            .into_iter()
            .find(|c| c.id == id)
            .and_then(|c| c.actor)
            .map(ActorRef::from))
    }

    /// The nested supervisor `id`, while it runs.
    pub async fn child_supervisor(
        &self,
        id: &str,
    ) -> Result<Option<SupervisorRef>, SupervisorError> {
        Ok(self
            .child::<SupervisorMsg>(id)
            .await?
            .map(|actor| Self::from_cell(actor.get_cell(), id, self.events.clone())))
    }

    /// Stops the supervisor: its children are stopped in reverse start order
    /// with their shutdown policies first. Returns when it is gone.
    pub async fn shutdown(&self) {
        self.actor.stop(Some("shutdown".to_owned()));
        let _ = self.actor.get_cell().wait(None).await;
    }

    /// Waits until the supervisor exits (shut down, or escalated).
    pub async fn wait(&self) {
        let _ = self.actor.get_cell().wait(None).await;
    }
}

fn check(spec: &SupervisorSpec) -> Result<(), SupervisorError> {
    spec.validate()
        .map_err(|errors| SupervisorError::InvalidSpec {
            name: spec.name.clone(),
            errors,
        })
}

/// Why a supervisor did not start: its own error when it gave up while
/// starting its children (it names the child and the cause), or the spawn
/// failure.
fn spawn_error(name: &str, e: ractor::SpawnErr) -> SupervisorError {
    match spawn_reason(e).downcast::<SupervisorError>() {
        Ok(own) => *own,
        Err(other) => SupervisorError::Spawn {
            name: name.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// Spawns `spec` as a child of `parent` (for nested supervisors).
pub(crate) async fn spawn_linked(
    spec: SupervisorSpec,
    parent: ActorCell,
    events: EventBus,
) -> Result<ActorCell, SupervisorError> {
    check(&spec)?;
    let name = spec.name.clone();
    let (actor, _) =
        Supervisor::spawn_linked(None, Supervisor, SupervisorArgs { spec, events }, parent)
            .await
            .map_err(|e| spawn_error(&name, e))?;
    Ok(actor.get_cell())
}
