//! Cron schedules -> triggers.
//!
//! The cron actor owns every schedule of a node (nothing else holds that
//! table) and calls its [`CronTarget`] with a [`CronFire`] for each run.
//! Read it through [`CronRef`](crate::cron::CronRef) or plain `call`s.
//!
//! **One timer for all schedules.** The schedules are kept ordered by when
//! each is due next (a `BTreeSet` of `(due, job)`); exactly one tokio timer
//! is pending, for the earliest. It is re-armed only when the earliest
//! changes; each arming gets a new generation number and aborts the
//! previous timer task, and a tick whose generation is not the current one
//! is ignored. There is no polling and no periodic tick: with nothing due,
//! the actor costs nothing (a far-off earliest is waited for in steps of at
//! most a day, tokio's timer limit being about two years).
//!
//! **Missed runs.** When the actor wakes up late (the clock jumped, the
//! node was down and the schedule came back with an old `last_run`, or a
//! suspended schedule was resumed), only the most recent missed run is
//! started, if it is within `starting_deadline` (always, without one); the
//! older ones are counted as skipped and reported in the next fire's
//! `skipped`. A schedule added without `last_run` starts from now.
//!
//! **Time.** Timers run on tokio time; the [`Clock`] gives the wall time
//! they are computed from. A wall-clock step (NTP, a suspended machine) is
//! noticed when the pending timer fires: everything is then recomputed
//! from the clock. Forward, the runs passed over are settled by the
//! missed-run rule; backward, nothing is due yet and the timer is re-armed
//! for the time left (a run never fires twice).
//!
//! On failure, hook by hook:
//! - `pre_start`: cannot fail; the actor starts with no schedules.
//! - `handle`: never returns an error. A bad spec (expression, zone,
//!   duration) is answered with a [`CronError`] and changes nothing; a
//!   closed reply port is ignored; a panicking [`CronTarget`] is caught and
//!   logged, and the other schedules keep firing.
//! - `post_stop`: aborts the pending timer; there is nothing else to
//!   release. The schedules are state: if the actor is restarted, its owner
//!   (the executor) upserts them again, with `last_run` from its durable
//!   history so that missed runs are settled.
//! - A panic in this actor is a bug; ractor reports it to the supervisor,
//!   which restarts it empty, as above.

use std::{panic::AssertUnwindSafe, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use serde::{Deserialize, Serialize};
use tokio::task::AbortHandle;

use crate::{
    actors::supervisor_actor::ChildSpec,
    cron::{
        Clock, CronError, CronFire, CronTarget, ScheduleInfo, ScheduleSpec,
        table::{Settled, Table},
    },
};

/// Messages the cron actor handles.
pub enum CronMsg {
    /// Adds or replaces the schedule of `spec.job`; replies with its next
    /// scheduled time (`None` if suspended or never again). An invalid spec
    /// is an error and changes nothing.
    Upsert(
        ScheduleSpec,
        RpcReplyPort<Result<Option<DateTime<Utc>>, CronError>>,
    ),
    /// Removes the schedule of a job; replies whether there was one.
    Remove(String, RpcReplyPort<bool>),
    /// Stops a schedule from firing (idempotent).
    Suspend(String, RpcReplyPort<Result<(), CronError>>),
    /// Lets a suspended schedule fire again; replies with its next
    /// scheduled time. Of the runs missed meanwhile, only the most recent
    /// may start (within `starting_deadline`).
    Resume(
        String,
        RpcReplyPort<Result<Option<DateTime<Utc>>, CronError>>,
    ),
    /// Every schedule, sorted by job.
    List(RpcReplyPort<Vec<ScheduleInfo>>),
    /// One schedule.
    Get(String, RpcReplyPort<Option<ScheduleInfo>>),
    /// Counters of the actor and its timer.
    Stats(RpcReplyPort<CronStats>),
    /// Sent by the actor to itself (opaque: it cannot be built outside).
    Internal(InternalMsg),
}

// Local only: never sent to another node (the `cluster` feature of
// ractor asks every message type to say so).
impl ractor::Message for CronMsg {}

/// A message the cron actor sends to itself.
pub struct InternalMsg(Internal);

enum Internal {
    /// The timer of this generation fired. Stale generations are
    /// Ignored.
    Tick(u64),
    /// Fault injection: panic in the handler.
    InjectPanic,
}

impl InternalMsg {
    /// Fault injection for tests: the actor panics when it handles this.
    #[doc(hidden)]
    pub fn inject_panic() -> Self {
        Self(Internal::InjectPanic)
    }
}

/// Counters of the cron actor, for introspection and tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronStats {
    /// Schedules held.
    pub schedules: usize,
    /// Schedules waiting to fire (not suspended, firing again).
    pub queued: usize,
    /// Whether a timer is pending (at most one ever is).
    pub timer_pending: bool,
    /// Timers armed since start.
    pub timers_armed: u64,
    /// Timer ticks handled.
    pub ticks: u64,
    /// Ticks of replaced timers, ignored.
    pub stale_ticks: u64,
    /// Runs started (calls to the target).
    pub fires: u64,
    /// Runs skipped past their starting deadline (settlements that fired
    /// nothing).
    pub deadline_skips: u64,
}

/// What the cron actor is spawned with.
pub struct CronArgs {
    /// Receives every run.
    pub target: Arc<dyn CronTarget>,
    /// The wall clock schedules are read against.
    pub clock: Arc<dyn Clock>,
}

/// The cron actor.
pub struct CronActor;

/// Everything the cron actor knows. Owned by the actor alone.
pub struct CronState {
    target: Arc<dyn CronTarget>,
    clock: Arc<dyn Clock>,
    table: Table,
    timer: Option<Timer>,
    generation: u64,
    stats: CronStats,
}

/// The one pending timer.
struct Timer {
    generation: u64,
    due: DateTime<Utc>,
    task: AbortHandle,
}

/// The longest single sleep; a farther earliest is waited for in steps.
const MAX_SLEEP: Duration = Duration::from_secs(24 * 3600);

impl Actor for CronActor {
    type Msg = CronMsg;
    type State = CronState;
    type Arguments = CronArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: CronArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(CronState {
            target: args.target,
            clock: args.clock,
            table: Table::default(),
            timer: None,
            generation: 0,
            stats: CronStats::default(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            CronMsg::Upsert(spec, reply) => {
                let job = spec.job.clone();
                let result = state.table.upsert(spec, state.clock.now());
                state.run_due();
                let result = result.map(|()| state.table.next_run(&job));
                match &result {
                    Ok(next) => tracing::info!(job = %job, next_run = ?next, "cron: schedule set"),
                    Err(e) => tracing::warn!(job = %job, error = %e, "cron: schedule refused"),
                }
                let _ = reply.send(result);
            }
            CronMsg::Remove(job, reply) => {
                let removed = state.table.remove(&job);
                if removed {
                    tracing::info!(job = %job, "cron: schedule removed");
                }
                let _ = reply.send(removed);
            }
            CronMsg::Suspend(job, reply) => {
                let result = state.table.suspend(&job);
                if result.is_ok() {
                    tracing::info!(job = %job, "cron: schedule suspended");
                }
                let _ = reply.send(result);
            }
            CronMsg::Resume(job, reply) => {
                let result = state.table.resume(&job);
                state.run_due();
                let result = result.map(|()| state.table.next_run(&job));
                if let Ok(next) = &result {
                    tracing::info!(job = %job, next_run = ?next, "cron: schedule resumed");
                }
                let _ = reply.send(result);
            }
            CronMsg::List(reply) => {
                let _ = reply.send(state.table.list());
            }
            CronMsg::Get(job, reply) => {
                let _ = reply.send(state.table.info(&job));
            }
            CronMsg::Stats(reply) => {
                let _ = reply.send(state.stats());
            }
            CronMsg::Internal(InternalMsg(Internal::InjectPanic)) => {
                panic!("injected fault in the cron actor")
            }
            CronMsg::Internal(InternalMsg(Internal::Tick(generation))) => {
                if state.timer.as_ref().map(|t| t.generation) != Some(generation) {
                    state.stats.stale_ticks += 1;
                    return Ok(());
                }
                state.timer = None;
                state.stats.ticks += 1;
                state.run_due();
            }
        }
        state.arm(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(timer) = state.timer.take() {
            timer.task.abort();
        }
        Ok(())
    }
}

impl CronActor {
    /// A child spec for a supervisor: each start spawns a cron actor with
    /// `target` and `clock` and no schedules.
    pub fn child_spec(
        id: impl Into<String>,
        target: Arc<dyn CronTarget>,
        clock: Arc<dyn Clock>,
    ) -> ChildSpec {
        ChildSpec::actor(
            id,
            || CronActor,
            move || CronArgs {
                target: target.clone(),
                clock: clock.clone(),
            },
        )
    }
}

impl CronState {
    /// Settles every schedule due now, firing the target for each run that
    /// starts, earliest first.
    fn run_due(&mut self) {
        while let Some(settled) = self.table.settle_next(self.clock.now()) {
            match settled {
                Settled::Fire(mut fire) => {
                    fire.fired_at = self.clock.now();
                    self.stats.fires += 1;
                    self.deliver(fire);
                }
                Settled::Skipped { job, count } => {
                    self.stats.deadline_skips += 1;
                    tracing::warn!(
                        job = %job,
                        skipped = count,
                        "cron: run missed its starting deadline; skipped"
                    );
                }
            }
        }
    }

    /// Hands one run to the target; a panic there is logged, not spread.
    fn deliver(&self, fire: CronFire) {
        tracing::debug!(
            job = %fire.job,
            scheduled_for = %fire.scheduled_for,
            skipped = fire.skipped,
            "cron: fire"
        );
        if fire.skipped > 0 {
            tracing::info!(
                job = %fire.job,
                skipped = fire.skipped,
                "cron: starting the most recent missed run; older ones skipped"
            );
        }
        let job = fire.job.clone();
        let target = &self.target;
        if let Err(panic) = std::panic::catch_unwind(AssertUnwindSafe(|| target.fire(fire))) {
            tracing::error!(job = %job, panic = %crate::panics::message(panic.as_ref()), "cron: target panicked");
        }
    }

    /// Keeps exactly one timer pending, for the earliest due schedule.
    fn arm(&mut self, myself: &ActorRef<CronMsg>) {
        let Some(due) = self.table.earliest() else {
            if let Some(timer) = self.timer.take() {
                timer.task.abort();
            }
            return;
        };
        if self.timer.as_ref().is_some_and(|t| t.due == due) {
            return;
        }
        if let Some(timer) = self.timer.take() {
            timer.task.abort();
        }
        self.generation += 1;
        let generation = self.generation;
        let wait = (due - self.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_SLEEP);
        let deadline = tokio::time::Instant::now() + wait;
        let actor = myself.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(deadline).await;
            let _ = actor.cast(CronMsg::Internal(InternalMsg(Internal::Tick(generation))));
        })
        .abort_handle();
        self.timer = Some(Timer {
            generation,
            due,
            task,
        });
        self.stats.timers_armed += 1;
    }

    fn stats(&self) -> CronStats {
        CronStats {
            schedules: self.table.len(),
            queued: self.table.queued(),
            timer_pending: self.timer.is_some(),
            ..self.stats
        }
    }
}
