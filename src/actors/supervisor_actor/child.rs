//! Children of a supervisor: how to start them (a spawn closure, so any
//! ractor actor can be supervised), their policies, and what is known of
//! them.
//!
//! Nothing here knows what a child runs. A child that knows more about its
//! own end than "stopped" or "failed" (a container whose process exited
//! with a status, a child that kept something for debugging) fails with an
//! [`ExitReport`], which the supervisor reads instead of the error's text.

use std::{fmt, future::Future, pin::Pin, sync::Arc, time::Duration};

use futures::future::BoxFuture;
use ractor::{Actor, ActorCell, ActorProcessingErr, SpawnErr, SupervisionEvent};
use serde::{Deserialize, Serialize};

use super::SupervisorSpec;
pub use crate::spec::ChildKind;
use crate::{
    events::EventBus,
    exit::ExitStatus,
    spec::{ExitRules, PanicAction, RestartType, Shutdown, SpecError},
};

/// What a spawn closure gets: where to link the child, and its policies.
#[derive(Clone)]
pub struct ChildContext {
    /// The supervisor: spawn the child linked to it (`spawn_linked(.., ctx.supervisor)`).
    pub supervisor: ActorCell,
    /// The tree's event bus (nested supervisors publish into it).
    pub events: EventBus,
    /// The child's id.
    pub id: Arc<str>,
    /// The supervisor's name (the service, for container children).
    pub service: Arc<str>,
    /// How the supervisor will stop the child.
    pub shutdown: Shutdown,
    /// What an abnormal exit of the child leads to.
    pub on_panic: PanicAction,
    /// How exit codes are treated.
    pub exit_rules: ExitRules,
}

impl ChildContext {
    /// Shows `status` beside the child in its supervisor's tree (a start
    /// that waits for something says what); `None` clears it. Cleared
    /// when the child starts.
    pub fn set_status(&self, status: Option<String>) {
        let supervisor: ractor::ActorRef<super::SupervisorMsg> = self.supervisor.clone().into();
        let _ = supervisor.cast(super::SupervisorMsg(super::Msg::Status {
            id: self.id.clone(),
            status,
        }));
    }
}

/// Shows `status` beside child `id` in `supervisor`'s tree (`None` clears it).
pub(crate) fn report_status(supervisor: &ActorCell, id: Arc<str>, status: Option<String>) {
    let supervisor: ractor::ActorRef<super::SupervisorMsg> = supervisor.clone().into();
    let _ = supervisor.cast(super::SupervisorMsg(super::Msg::Status { id, status }));
}

/// Tells `supervisor` whether its child `actor` is ready. Ignored unless
/// `actor` is the current actor of one of its running children.
pub(crate) fn report_ready(
    supervisor: &ActorCell,
    actor: ractor::ActorId,
    ready: bool,
    reason: Option<String>,
) {
    let supervisor: ractor::ActorRef<super::SupervisorMsg> = supervisor.clone().into();
    let _ = supervisor.cast(super::SupervisorMsg(super::Msg::Ready {
        actor,
        ready,
        reason,
    }));
}

/// The future a spawn closure returns: the new child's cell, once the child
/// has started (for a container: once its process runs).
pub type StartFuture = Pin<Box<dyn Future<Output = Result<ActorCell, ActorProcessingErr>> + Send>>;

type StartFn = Arc<dyn Fn(ChildContext) -> StartFuture + Send + Sync>;

/// Extra checks of a kind of child (a container's spec), field names
/// relative to the child.
pub(crate) type ChecksFn = Arc<dyn Fn() -> Vec<SpecError> + Send + Sync>;

/// How to start a child and how to treat it. Restartable children are spawn
/// closures because ractor consumes an actor's arguments when it spawns it.
#[derive(Clone)]
pub struct ChildSpec {
    pub(crate) id: Arc<str>,
    pub(crate) start: StartFn,
    pub(crate) kind: ChildKind,
    pub(crate) restart: RestartType,
    pub(crate) shutdown: Shutdown,
    pub(crate) on_panic: PanicAction,
    pub(crate) exit_rules: ExitRules,
    /// Extra time the supervisor waits beyond the shutdown timeout before it
    /// kills the actor: a container actor kills its own processes when the
    /// grace period ends and needs a moment to reap and remove them.
    pub(crate) kill_margin: Duration,
    pub(crate) checks: Option<ChecksFn>,
    pub(crate) nested: Option<Arc<SupervisorSpec>>,
    /// Not ready when started: ready once its actor says so (a replica
    /// with a readiness or startup probe).
    pub(crate) gated: bool,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("on_panic", &self.on_panic)
            .finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A child started by `start`, which must spawn an actor linked to
    /// `ctx.supervisor` and return its cell once the child has started. A
    /// worker: permanent, stopped with a 5 s timeout.
    ///
    /// The closure runs in a task of its own, never in the supervisor's
    /// handler, so a slow start holds neither the supervisor nor its other
    /// children. An actor spawned unlinked is linked to the supervisor when
    /// the closure returns; if it already died by then, the start failed.
    pub fn new<F, Fut>(id: impl Into<String>, start: F) -> Self
    where
        F: Fn(ChildContext) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<ActorCell, ActorProcessingErr>> + Send + 'static,
    {
        Self {
            id: Arc::from(id.into()),
            start: Arc::new(move |ctx| Box::pin(start(ctx))),
            kind: ChildKind::Worker,
            restart: RestartType::Permanent,
            shutdown: Shutdown::WORKER_DEFAULT,
            on_panic: PanicAction::Restart,
            exit_rules: ExitRules::none(),
            kill_margin: Duration::ZERO,
            checks: None,
            nested: None,
            gated: false,
        }
    }

    /// A ractor actor: each start builds the handler with `handler()` and its
    /// arguments with `args()`, then spawns it linked to the supervisor.
    /// Its panics are reported through arbor's panic hook when one is
    /// installed ([`crate::panics`]).
    pub fn actor<A, H, G>(id: impl Into<String>, handler: H, args: G) -> Self
    where
        A: Actor,
        H: Fn() -> A + Send + Sync + 'static,
        G: Fn() -> A::Arguments + Send + Sync + 'static,
    {
        Self::new(id, move |ctx: ChildContext| {
            let (handler, args) = (crate::panics::Supervised(handler()), args());
            async move {
                let (actor, _) = Actor::spawn_linked(None, handler, args, ctx.supervisor)
                    .await
                    .map_err(spawn_reason)?;
                Ok(actor.get_cell())
            }
        })
    }

    /// A nested supervisor: permanent, stopped with `infinity` (it stops its
    /// own children first, however long that takes).
    pub fn supervisor(id: impl Into<String>, spec: SupervisorSpec) -> Self {
        let spec = Arc::new(spec);
        let nested = spec.clone();
        let mut child = Self::new(id, move |ctx: ChildContext| {
            let spec = (*spec).clone();
            async move {
                let cell = super::spawn_linked(spec, ctx.supervisor, ctx.events)
                    .await
                    .map_err(|e| -> ActorProcessingErr { Box::new(e) })?;
                Ok(cell)
            }
        });
        child.kind = ChildKind::Supervisor;
        child.shutdown = Shutdown::Infinity;
        child.nested = Some(nested);
        child
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: RestartType) -> Self {
        self.restart = restart;
        self
    }

    /// Sets how the supervisor stops the child.
    pub fn shutdown(mut self, shutdown: Shutdown) -> Self {
        self.shutdown = shutdown;
        self
    }

    /// Sets what an abnormal exit leads to.
    pub fn on_panic(mut self, action: PanicAction) -> Self {
        self.on_panic = action;
        self
    }

    /// Sets the exit-code rules.
    pub fn exit_rules(mut self, rules: ExitRules) -> Self {
        self.exit_rules = rules;
        self
    }

    /// The child's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The child's kind.
    pub fn kind(&self) -> ChildKind {
        self.kind
    }

    /// Checks the child; field names are relative to it (`id`, `container.command`).
    pub fn validate(&self) -> Vec<SpecError> {
        let mut errors = Vec::new();
        if self.id.trim().is_empty() {
            errors.push(SpecError::new(
                "id",
                format!("{:?}", &*self.id),
                "must not be empty",
            ));
        }
        errors.extend(
            self.exit_rules
                .validate()
                .into_iter()
                .map(|e| e.within("exit_codes")),
        );
        if let Some(checks) = &self.checks {
            errors.extend(checks());
        }
        if let Some(n) = &self.nested {
            errors.extend(n.errors().into_iter().map(|e| e.within("supervisor")));
        }
        errors
    }
}

/// The reason a spawn failed, without ractor's wrapper text.
pub(crate) fn spawn_reason(e: SpawnErr) -> ActorProcessingErr {
    match e {
        SpawnErr::StartupFailed(inner) => inner,
        other => Box::new(other),
    }
}

/// Where a child is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChildState {
    /// Its actor runs.
    Running,
    /// It is being started for the first time (`start_child`) or by an
    /// operator's `restart_child`.
    Starting,
    /// It exited or failed to start, and its restart is under way or will be
    /// retried through the supervisor's mailbox.
    Restarting,
    /// It crashed too often and waits out a back-off delay before restarting.
    CrashLoopBackOff,
    /// Its supervisor is stopping it (its shutdown policy runs).
    Stopping,
    /// It failed and was kept for debugging; never restarted automatically.
    Isolated,
    /// It failed (a supervisor that gave up, or panic action `fail`) and
    /// stays down until an operator restarts it; `last_exit` says why.
    Failed,
    /// Its service was shut down by a sibling's failure.
    Shutdown,
    /// It finished and is not restarted.
    Completed,
    /// An operator stopped it; it stays stopped until `restart_child`.
    Stopped,
}

impl fmt::Display for ChildState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Running => "running",
            Self::Starting => "starting",
            Self::Restarting => "restarting",
            Self::CrashLoopBackOff => "crash_loop_back_off",
            Self::Stopping => "stopping",
            Self::Isolated => "isolated",
            Self::Failed => "failed",
            Self::Shutdown => "shutdown",
            Self::Completed => "completed",
            Self::Stopped => "stopped",
        })
    }
}

/// How a child's actor ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum ChildExit {
    /// It stopped normally.
    Normal {
        /// The stop reason, if one was given.
        reason: Option<String>,
    },
    /// Its process (a container's main process, a host command) ended, with
    /// any code including 0. Reported by the child ([`ExitReport`]).
    Exited {
        /// How it ended.
        status: ExitStatus,
        /// The container that ran it, when the child names one.
        container: Option<String>,
        /// The kernel OOM-killed a process of it at its memory limit.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        oom_killed: bool,
    },
    /// It returned an error or panicked.
    Failed {
        /// The error or panic message.
        reason: String,
    },
    /// Something other than its supervisor killed it.
    Killed,
    /// It could not be started.
    StartFailed {
        /// Why.
        reason: String,
    },
}

impl ChildExit {
    /// The exit code, for a process that exited with one.
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            Self::Exited { status, .. } => status.code(),
            _ => None,
        }
    }

    /// True for exits that are failures before exit-code rules apply.
    pub fn is_abnormal(&self) -> bool {
        match self {
            Self::Normal { .. } => false,
            Self::Exited { status, .. } => !status.success(),
            Self::Failed { .. } | Self::Killed | Self::StartFailed { .. } => true,
        }
    }
}

impl fmt::Display for ChildExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Normal { reason: None } => f.write_str("stopped normally"),
            Self::Normal { reason: Some(r) } => write!(f, "stopped normally ({r})"),
            Self::Exited {
                status,
                oom_killed: true,
                ..
            } => write!(
                f,
                "{status} (out of memory: OOM-killed at its memory limit)"
            ),
            Self::Exited { status, .. } => write!(f, "{status}"),
            Self::Failed { reason } => write!(f, "failed: {reason}"),
            Self::Killed => f.write_str("killed"),
            Self::StartFailed { reason } => write!(f, "failed to start: {reason}"),
        }
    }
}

/// Something a failed child leaves for debugging (an isolated container).
/// Released (removed) when the child is restarted, terminated or deleted,
/// or when its supervisor stops; dropping it releases it in the background.
pub trait Retained: Send + Sync {
    /// Removes what was kept.
    fn release(self: Box<Self>) -> BoxFuture<'static, ()>;
}

/// How a child ended, as the child itself reports it: a child actor fails
/// with this error (from a handler) to give its supervisor an exact exit
/// (a process's status, even 0) and, when the child is isolated, what it
/// kept. Any other error is a [`ChildExit::Failed`] with the error's text.
pub struct ExitReport {
    /// How the child ended.
    pub exit: ChildExit,
    /// What it kept for debugging (isolate).
    pub retained: Option<Box<dyn Retained>>,
}

impl fmt::Debug for ExitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExitReport")
            .field("exit", &self.exit)
            .field("retained", &self.retained.is_some())
            .finish()
    }
}

impl fmt::Display for ExitReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.exit.fmt(f)
    }
}

impl std::error::Error for ExitReport {}

/// A child's exit as read from a supervision event, with what it kept.
pub(crate) struct ObservedExit {
    pub(crate) exit: ChildExit,
    pub(crate) retained: Option<Box<dyn Retained>>,
}

/// Reads the exit out of a termination or failure event.
pub(crate) fn observe(event: SupervisionEvent) -> Option<(ActorCell, ObservedExit)> {
    let (cell, exit, retained) = match event {
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            let exit = if reason.as_deref() == Some("killed") {
                ChildExit::Killed
            } else {
                ChildExit::Normal { reason }
            };
            (cell, exit, None)
        }
        SupervisionEvent::ActorFailed(cell, err) => match err.downcast::<ExitReport>() {
            Ok(report) => {
                let ExitReport { exit, retained } = *report;
                (cell, exit, retained)
            }
            Err(err) => (
                cell,
                ChildExit::Failed {
                    reason: err.to_string(),
                },
                None,
            ),
        },
        _ => return None,
    };
    Some((cell, ObservedExit { exit, retained }))
}

/// A child as `which_children` reports it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ChildInfo {
    /// Its id.
    pub id: String,
    /// Its kind.
    pub kind: ChildKind,
    /// Its state.
    pub state: ChildState,
    /// Its restart type.
    pub restart: RestartType,
    /// How many times the supervisor restarted it.
    pub restart_count: u32,
    /// How it last ended.
    pub last_exit: Option<ChildExit>,
    /// Its actor while it runs.
    pub actor: Option<ActorCell>,
}

/// Counts as OTP's `count_children` gives them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChildCounts {
    /// Children with a spec (running or not).
    pub specs: usize,
    /// Children whose actor is alive.
    pub active: usize,
    /// Children that are supervisors.
    pub supervisors: usize,
    /// Children that are workers or containers.
    pub workers: usize,
}
