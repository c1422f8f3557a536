//! Supervision events, delivered to every subscriber and to `tracing`.
//!
//! Supervisors publish into an [`EventBus`] shared by a whole tree. The bus is
//! a task that owns the list of subscribers and forwards each event to each
//! of them through its own bounded channel: every subscriber that keeps up
//! gets every event, in publish order; one that stalls holds at most its
//! capacity, loses newer events (counted, and shown by `/metrics` as
//! `arbor_events_dropped_total`) and never blocks a supervisor or the other
//! subscribers. With no subscriber, publishing costs one
//! atomic load (plus the `tracing` event, filtered as usual).
//!
//! Every event is also emitted as a `tracing` event with the target
//! `arbor::events` and fixed fields (`event`, `supervisor`/`service`,
//! `child`/`id`, `exit_code`, `restart_count`, ...), so logs and metrics can
//! be built on either.

mod recent;

pub(crate) use recent::RecentEvents;
pub use recent::{RECENT, RecentEvent};

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::spec::ChildKind;

/// Something a supervisor did or saw, or a job execution's progress.
///
/// Supervisor events name the supervisor, the child and the child's kind
/// (`worker`, `container`, `supervisor`); what a child runs is not the
/// supervisor's business.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A child started (first start, restart, or operator start).
    ChildStarted {
        /// The supervisor's name.
        supervisor: String,
        /// The child's id.
        child: String,
        /// What kind of child it is.
        child_kind: ChildKind,
    },
    /// A child exited by itself (crash, error, panic, or clean exit).
    ChildExited {
        /// The supervisor's name.
        supervisor: String,
        /// The child's id.
        child: String,
        /// What kind of child it is.
        child_kind: ChildKind,
        /// How it exited, as text.
        exit: String,
        /// Its exit code when it was a process that exited with one.
        exit_code: Option<i32>,
    },
    /// A child was stopped by its supervisor (shutdown, group restart, or operator).
    ChildStopped {
        /// The supervisor's name.
        supervisor: String,
        /// The child's id.
        child: String,
        /// What kind of child it is.
        child_kind: ChildKind,
        /// Why it was stopped.
        reason: String,
    },
    /// Starting a child failed; a failed restart attempt counts as a restart.
    ChildStartFailed {
        /// The supervisor's name.
        supervisor: String,
        /// The child's id.
        child: String,
        /// What kind of child it is.
        child_kind: ChildKind,
        /// What failed.
        error: String,
        /// Restarts of this child so far, this failed attempt included (0:
        /// its first start failed).
        #[serde(default)]
        restart_count: u32,
    },
    /// A child was restarted by its supervisor's policy.
    ChildRestarted {
        /// The supervisor's name.
        supervisor: String,
        /// The child's id.
        child: String,
        /// What kind of child it is.
        child_kind: ChildKind,
        /// The exit code that caused the restart, when there was one.
        exit_code: Option<i32>,
        /// Restarts of this child so far, this one included.
        restart_count: u32,
    },
    /// A child crashed too often and waits before its next restart.
    CrashLoopBackOff {
        /// The supervisor's name.
        supervisor: String,
        /// The child's id.
        child: String,
        /// What kind of child it is.
        child_kind: ChildKind,
        /// Restarts of this child so far.
        restart_count: u32,
        /// How long it waits.
        #[serde(with = "humantime_serde")]
        delay: Duration,
        /// True when this agent resumes a back-off an earlier agent on the
        /// same state directory began: `delay` is then what remained of it.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        resumed: bool,
    },
    /// A failed child was kept for debugging and will not be restarted.
    ChildIsolated {
        /// The supervisor's name.
        supervisor: String,
        /// The child's id.
        child: String,
        /// What kind of child it is.
        child_kind: ChildKind,
        /// Its exit code, when there was one.
        exit_code: Option<i32>,
        /// What it kept, when it names it (a container's id).
        retained: Option<String>,
    },
    /// A child failed and stays down (panic action `fail`; a service that
    /// gave up).
    ChildFailed {
        /// The supervisor's name.
        supervisor: String,
        /// The child's id.
        child: String,
        /// What kind of child it is.
        child_kind: ChildKind,
        /// Why it failed.
        reason: String,
    },
    /// A child's failure stopped every child of its supervisor (panic
    /// action `shutdown`).
    ServiceShutdown {
        /// The supervisor (service) name.
        supervisor: String,
        /// The child whose failure shut it down.
        child: String,
        /// Which child failed and how.
        reason: String,
    },
    /// A child finished and will not be restarted.
    ChildCompleted {
        /// The supervisor's name.
        supervisor: String,
        /// The child's id.
        child: String,
        /// What kind of child it is.
        child_kind: ChildKind,
        /// Its exit code, when there was one.
        exit_code: Option<i32>,
    },
    /// A supervisor exceeded its restart intensity and failed to its parent.
    SupervisorEscalated {
        /// The supervisor's name.
        supervisor: String,
        /// Why.
        reason: String,
    },
    /// A child said it is ready: its readiness probe passed (after its
    /// startup probe), or it sent `READY=1`.
    Ready {
        /// The supervisor's name (the service, for replicas).
        supervisor: String,
        /// The child's id.
        child: String,
    },
    /// A ready child is not ready any more: its readiness probe failed.
    NotReady {
        /// The supervisor's name.
        supervisor: String,
        /// The child's id.
        child: String,
        /// The last failed check's output or error.
        reason: String,
    },
    /// A probe of a child failed `failure_threshold` times in a row; for
    /// liveness and startup the child is then failed (and restarted by its
    /// policy).
    ProbeFailed {
        /// The supervisor's name.
        supervisor: String,
        /// The child's id.
        child: String,
        /// `liveness`, `readiness` or `startup`.
        probe: String,
        /// The last failed check's output or error.
        output: String,
    },
    /// A job execution was accepted.
    ExecutionStarted {
        /// The execution id.
        id: String,
        /// The job.
        job: String,
        /// What triggered it, as text.
        trigger: String,
        /// 1 for the first attempt.
        attempt: u32,
    },
    /// A job execution reached its terminal state.
    ExecutionFinished {
        /// The execution id.
        id: String,
        /// The job.
        job: String,
        /// `completed`, `failed` or `cancelled`.
        state: String,
        /// The terminal state, as text (`failed: non-zero exit: exit code 3`).
        detail: String,
        /// The main command's exit code, when it exited.
        exit_code: Option<i32>,
    },
    /// The overlay failed for an execution that goes on without it (its
    /// `network.required` is false), or a detach failed and is retried.
    OverlayWarning {
        /// The execution id.
        id: String,
        /// The job.
        job: String,
        /// What failed.
        message: String,
    },
    /// A cluster peer answered a heartbeat: first seen, or back from
    /// suspect or down.
    NodeUp {
        /// The peer's name.
        node: String,
        /// The address it advertises.
        addr: String,
    },
    /// A cluster peer has not answered for `suspect_after`.
    NodeSuspect {
        /// The peer's name.
        node: String,
        /// How long it has been silent, in milliseconds.
        silent_ms: u64,
    },
    /// A cluster peer has not answered for `suspect_after` plus the grace.
    NodeDown {
        /// The peer's name.
        node: String,
        /// How long it has been silent, in milliseconds.
        silent_ms: u64,
    },
    /// A cluster peer said it leaves (a graceful stop): it is forgotten,
    /// and its replicas are placed on the others at once.
    NodeLeft {
        /// The peer's name.
        node: String,
    },
    /// This node's share of the cluster-placed services changed.
    PlacementChanged {
        /// The placement's epoch.
        epoch: u64,
        /// Whether this node lost its majority (it runs none of them).
        fenced: bool,
        /// Replicas this node runs, per cluster-placed service.
        replicas: std::collections::BTreeMap<String, usize>,
    },
}

impl Event {
    /// The name of every kind of event, as [`Event::kind`] gives it.
    pub const KINDS: &'static [&'static str] = &[
        "child_started",
        "child_exited",
        "child_stopped",
        "child_start_failed",
        "child_restarted",
        "crash_loop_back_off",
        "child_isolated",
        "child_failed",
        "service_shutdown",
        "child_completed",
        "supervisor_escalated",
        "ready",
        "not_ready",
        "probe_failed",
        "execution_started",
        "execution_finished",
        "overlay_warning",
        "node_up",
        "node_suspect",
        "node_down",
        "node_left",
        "placement_changed",
    ];

    /// The event's name as in its serialized `event` field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::ChildStarted { .. } => "child_started",
            Self::ChildExited { .. } => "child_exited",
            Self::ChildStopped { .. } => "child_stopped",
            Self::ChildStartFailed { .. } => "child_start_failed",
            Self::ChildRestarted { .. } => "child_restarted",
            Self::CrashLoopBackOff { .. } => "crash_loop_back_off",
            Self::ChildIsolated { .. } => "child_isolated",
            Self::ChildFailed { .. } => "child_failed",
            Self::ServiceShutdown { .. } => "service_shutdown",
            Self::ChildCompleted { .. } => "child_completed",
            Self::SupervisorEscalated { .. } => "supervisor_escalated",
            Self::Ready { .. } => "ready",
            Self::NotReady { .. } => "not_ready",
            Self::ProbeFailed { .. } => "probe_failed",
            Self::ExecutionStarted { .. } => "execution_started",
            Self::ExecutionFinished { .. } => "execution_finished",
            Self::OverlayWarning { .. } => "overlay_warning",
            Self::NodeUp { .. } => "node_up",
            Self::NodeSuspect { .. } => "node_suspect",
            Self::NodeDown { .. } => "node_down",
            Self::NodeLeft { .. } => "node_left",
            Self::PlacementChanged { .. } => "placement_changed",
        }
    }

    fn trace(&self) {
        const T: &str = "arbor::events";
        let event = self.kind();
        match self {
            Self::OverlayWarning { id, job, message } => {
                tracing::warn!(target: T, event, id, job, message, "overlay warning")
            }
            Self::NodeUp { node, addr } => {
                tracing::info!(target: T, event, node, addr, "cluster node up")
            }
            Self::NodeSuspect { node, silent_ms } => {
                tracing::warn!(target: T, event, node, silent_ms, "cluster node suspect")
            }
            Self::NodeDown { node, silent_ms } => {
                tracing::warn!(target: T, event, node, silent_ms, "cluster node down")
            }
            Self::NodeLeft { node } => {
                tracing::info!(target: T, event, node, "cluster node left")
            }
            Self::PlacementChanged {
                epoch,
                fenced,
                replicas,
            } => {
                let replicas = format!("{replicas:?}");
                if *fenced {
                    tracing::warn!(target: T, event, epoch, fenced, replicas, "fenced: this node does not see a majority of the cluster; its cluster-placed replicas stop")
                } else {
                    tracing::info!(target: T, event, epoch, fenced, replicas, "placement changed")
                }
            }
            Self::ChildStarted {
                supervisor,
                child,
                child_kind,
            } => {
                let kind = child_kind.to_string();
                tracing::debug!(target: T, event, supervisor, child, kind, "child started")
            }
            Self::ChildExited {
                supervisor,
                child,
                child_kind,
                exit,
                exit_code,
            } => {
                let kind = child_kind.to_string();
                tracing::info!(target: T, event, supervisor, child, kind, exit, exit_code, "child exited")
            }
            Self::ChildStopped {
                supervisor,
                child,
                child_kind,
                reason,
            } => {
                let kind = child_kind.to_string();
                tracing::debug!(target: T, event, supervisor, child, kind, reason, "child stopped")
            }
            Self::ChildStartFailed {
                supervisor,
                child,
                child_kind,
                error,
                restart_count,
            } => {
                let kind = child_kind.to_string();
                tracing::warn!(target: T, event, supervisor, child, kind, error, restart_count, "child failed to start")
            }
            Self::ChildRestarted {
                supervisor,
                child,
                child_kind,
                exit_code,
                restart_count,
            } => {
                let kind = child_kind.to_string();
                tracing::info!(target: T, event, supervisor, child, kind, exit_code, restart_count, "restarted")
            }
            Self::CrashLoopBackOff {
                supervisor,
                child,
                child_kind,
                restart_count,
                delay,
                resumed,
            } => {
                let kind = child_kind.to_string();
                tracing::warn!(
                    target: T, event, supervisor, child, kind, restart_count,
                    delay_ms = delay.as_millis() as u64, resumed = *resumed, "crash loop: backing off"
                )
            }
            Self::ChildIsolated {
                supervisor,
                child,
                child_kind,
                exit_code,
                retained,
            } => {
                let kind = child_kind.to_string();
                tracing::warn!(target: T, event, supervisor, child, kind, exit_code, retained, "isolated")
            }
            Self::ChildFailed {
                supervisor,
                child,
                child_kind,
                reason,
            } => {
                let kind = child_kind.to_string();
                tracing::error!(target: T, event, supervisor, child, kind, reason, "failed")
            }
            Self::ServiceShutdown {
                supervisor,
                child,
                reason,
            } => {
                tracing::warn!(target: T, event, supervisor, child, reason, "service shut down")
            }
            Self::ChildCompleted {
                supervisor,
                child,
                child_kind,
                exit_code,
            } => {
                let kind = child_kind.to_string();
                tracing::info!(target: T, event, supervisor, child, kind, exit_code, "completed")
            }
            Self::SupervisorEscalated { supervisor, reason } => {
                tracing::error!(target: T, event, supervisor, reason, "escalated to parent")
            }
            Self::Ready { supervisor, child } => {
                tracing::info!(target: T, event, supervisor, child, "ready")
            }
            Self::NotReady {
                supervisor,
                child,
                reason,
            } => tracing::warn!(target: T, event, supervisor, child, reason, "not ready"),
            Self::ProbeFailed {
                supervisor,
                child,
                probe,
                output,
            } => tracing::warn!(target: T, event, supervisor, child, probe, output, "probe failed"),
            Self::ExecutionStarted {
                id,
                job,
                trigger,
                attempt,
            } => tracing::debug!(target: T, event, id, job, trigger, attempt, "execution started"),
            Self::ExecutionFinished {
                id,
                job,
                state,
                detail,
                exit_code,
            } => {
                tracing::info!(target: T, event, id, job, state, exit_code, detail, "execution finished")
            }
        }
    }
}

enum BusCmd {
    Publish(Event),
    Subscribe(Subscriber),
}

/// The bus's end of one subscriber.
struct Subscriber {
    tx: mpsc::Sender<Event>,
    dropped: Arc<AtomicU64>,
}

/// How many events a subscriber may have queued before newer ones are
/// dropped for it ([`EventBus::subscribe_with_capacity`] sets another).
pub const SUBSCRIBER_CAPACITY: usize = 8192;

/// Fan-out of events to any number of subscribers. Cheap to clone; clones
/// share the subscribers.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: mpsc::UnboundedSender<BusCmd>,
    subscribers: Arc<AtomicUsize>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for BusCmd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Publish(e) => write!(f, "Publish({})", e.kind()),
            Self::Subscribe(_) => f.write_str("Subscribe"),
        }
    }
}

impl EventBus {
    /// A bus with no subscribers. Must be called inside a tokio runtime.
    pub fn new() -> Self {
        let (tx, mut rx) = mpsc::unbounded_channel::<BusCmd>();
        let subscribers = Arc::new(AtomicUsize::new(0));
        let dropped = Arc::new(AtomicU64::new(0));
        let (count, total_dropped) = (subscribers.clone(), dropped.clone());
        tokio::spawn(async move {
            let mut subs: Vec<Subscriber> = Vec::new();
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    BusCmd::Subscribe(s) => subs.push(s),
                    BusCmd::Publish(event) => {
                        let before = subs.len();
                        subs.retain(|s| match s.tx.try_send(event.clone()) {
                            Ok(()) => true,
                            Err(mpsc::error::TrySendError::Full(_)) => {
                                // A stalled subscriber: it loses this event,
                                // nobody waits for it.
                                s.dropped.fetch_add(1, Ordering::Relaxed);
                                total_dropped.fetch_add(1, Ordering::Relaxed);
                                true
                            }
                            Err(mpsc::error::TrySendError::Closed(_)) => false,
                        });
                        count.fetch_sub(before - subs.len(), Ordering::AcqRel);
                    }
                }
            }
        });
        Self {
            tx,
            subscribers,
            dropped,
        }
    }

    /// Publishes `event` to every subscriber and to `tracing`.
    pub fn publish(&self, event: Event) {
        event.trace();
        if self.subscribers.load(Ordering::Acquire) > 0 {
            let _ = self.tx.send(BusCmd::Publish(event));
        }
    }

    /// Publishes the event `make` builds, building it only when someone
    /// listens: a subscriber, or a `tracing` subscriber enabled for
    /// `arbor::events` at the event's `level`. For events on hot paths
    /// (every start, stop, exit and restart).
    pub fn publish_lazy(&self, level: tracing::Level, make: impl FnOnce() -> Event) {
        const T: &str = "arbor::events";
        let traced = match level {
            tracing::Level::TRACE | tracing::Level::DEBUG => {
                tracing::enabled!(target: T, tracing::Level::DEBUG)
            }
            tracing::Level::INFO => tracing::enabled!(target: T, tracing::Level::INFO),
            _ => true,
        };
        if traced || self.subscribers.load(Ordering::Acquire) > 0 {
            self.publish(make());
        }
    }

    /// A stream of every event published from now on, holding up to
    /// [`SUBSCRIBER_CAPACITY`] unread events.
    pub fn subscribe(&self) -> EventStream {
        self.subscribe_with_capacity(SUBSCRIBER_CAPACITY)
    }

    /// A stream of every event published from now on. Once `capacity`
    /// events wait unread, newer ones are dropped for this stream alone and
    /// counted ([`EventStream::dropped`], [`EventBus::dropped`]): a stalled
    /// subscriber costs bounded memory and never slows the others.
    pub fn subscribe_with_capacity(&self, capacity: usize) -> EventStream {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let dropped = Arc::new(AtomicU64::new(0));
        // Counted before the bus task sees it, so nothing published after
        // this call returns is skipped.
        self.subscribers.fetch_add(1, Ordering::AcqRel);
        let sub = Subscriber {
            tx,
            dropped: dropped.clone(),
        };
        if self.tx.send(BusCmd::Subscribe(sub)).is_err() {
            self.subscribers.fetch_sub(1, Ordering::AcqRel);
        }
        EventStream { rx, dropped }
    }

    /// Events dropped so far for subscribers that did not keep up, all
    /// subscribers together.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Default for EventBus {
    fn default() -> Self {
        Self::new()
    }
}

/// The events one subscriber receives.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::Receiver<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventStream {
    /// Events this stream lost because it held its capacity unread.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The next event; `None` when the bus is gone.
    pub async fn recv(&mut self) -> Option<Event> {
        self.rx.recv().await
    }

    /// The next event if one is queued.
    pub fn try_recv(&mut self) -> Option<Event> {
        self.rx.try_recv().ok()
    }

    /// Waits for the first event matching `pred` and returns it, discarding
    /// the events before it; `None` when the bus is gone.
    pub async fn wait_for(&mut self, mut pred: impl FnMut(&Event) -> bool) -> Option<Event> {
        while let Some(e) = self.rx.recv().await {
            if pred(&e) {
                return Some(e);
            }
        }
        None
    }
}

impl futures::Stream for EventStream {
    type Item = Event;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Event>> {
        self.rx.poll_recv(cx)
    }
}
