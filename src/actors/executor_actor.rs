//! The executor: the job registry and the table of executions, owned by one
//! actor (no shared locks), and the job supervisor under which every
//! execution runs as a temporary child.
//!
//! A trigger checks the job's overlap policy and `max_concurrent`, records
//! the execution as `Pending` (so its id is queryable the moment the
//! trigger returns) and asks the job supervisor to start a job actor for it
//! without waiting. Job actors report every transition back here; a failed
//! execution is retried up to `backoff_limit` times after a capped
//! exponential back-off; finished executions are kept within the job's
//! history limits and retention (and deleted from disk past them). On start
//! the executor reloads the durable history: an execution that was running
//! when the node died comes back as failed "node restarted", unless its
//! command ran under a keeper and is adopted (it then goes on under a new
//! job actor and ends with its own exit; see `job_actor/resume.rs`).
//!
//! Shutdown refuses new triggers, lets running executions finish within a
//! deadline, cancels what is left (each with its grace), stops the job
//! supervisor, then stops.
//!
//! Failure, hook by hook:
//! - `pre_start`: fails if the job supervisor cannot start or the store
//!   cannot be read (the node cannot keep its records: better not to start).
//!   Unreadable execution directories are logged and skipped, not fatal.
//! - `handle`: never returns an error; refusals go back to the caller as
//!   [`ExecutorError`].
//! - `handle_supervisor_evt`: the job supervisor dying outside a shutdown is
//!   a bug; the executor then fails so its own supervisor restarts it.
//! - `post_stop`: stops the job supervisor (each job actor cancels its run).

mod error;
mod handle;
mod operations;
mod recover;
mod table;

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::{sync::watch, time::Instant};

pub use error::ExecutorError;
pub(crate) use handle::job_services;
pub use handle::{Executor, ExecutorConfig};

use self::table::Table;
use crate::{
    actors::{
        job_actor::{JobActor, JobArgs, JobMsg, JobServices, Work, once},
        supervisor_actor::{ChildSpec, SupervisorMsg, SupervisorRef, SupervisorSpec},
    },
    cron::{CronFire, CronRef, CronSchedule, ScheduleSpec},
    events::EventBus,
    execution::{
        ExecutionId, ExecutionMeta, ExecutionRecord, ExecutionStatus, FailReason, JobState,
        JobTrigger,
    },
    part::Part,
    runtime::Signal,
    spec::{JobSpec, Overlap, RestartType, Shutdown, SpecError, SpecErrors},
    store::{
        ExecutionOutput, LogSnapshot, LogSnapshotQuery, mask_env, read_env_files, read_snapshot,
    },
};

/// Extra time a job actor gets, past its job's grace, to clean up before
/// the job supervisor kills it.
const CLEANUP_MARGIN: Duration = Duration::from_secs(10);

/// Requests to the executor (use [`Executor`] rather than these).
pub enum ExecutorMsg {
    /// Adds or replaces a job.
    Register(Box<JobSpec>, RpcReplyPort<Result<(), ExecutorError>>),
    /// Removes a job (its executions and history stay until retention).
    Unregister(String, RpcReplyPort<Result<(), ExecutorError>>),
    /// A job's spec.
    Spec(String, RpcReplyPort<Option<JobSpec>>),
    /// Registered job names, sorted.
    Jobs(RpcReplyPort<Vec<String>>),
    /// Starts an execution of a registered job.
    Trigger(
        String,
        JobTrigger,
        RpcReplyPort<Result<ExecutionId, ExecutorError>>,
    ),
    /// Starts an execution of an unregistered spec (ad-hoc runs) or an
    /// in-process task.
    Run(
        Box<JobSpec>,
        JobTrigger,
        Work,
        RpcReplyPort<Result<ExecutionId, ExecutorError>>,
    ),
    /// One execution.
    Get(ExecutionId, RpcReplyPort<Option<ExecutionRecord>>),
    /// Executions of a job (`None`: all), oldest first.
    List(Option<String>, RpcReplyPort<Vec<ExecutionRecord>>),
    /// The newest execution of a job.
    Latest(String, RpcReplyPort<Option<ExecutionRecord>>),
    /// How many executions are active.
    ActiveCount(RpcReplyPort<usize>),
    /// Cancels an execution (grace: the job's `stop_timeout` by default).
    Cancel(
        ExecutionId,
        Option<Duration>,
        RpcReplyPort<Result<(), ExecutorError>>,
    ),
    /// Signals an execution's process group.
    Signal(ExecutionId, Signal, RpcReplyPort<Result<(), ExecutorError>>),
    /// Pauses (true) or resumes (false) an execution.
    Pause(ExecutionId, bool, RpcReplyPort<Result<(), ExecutorError>>),
    /// A snapshot of an execution's output.
    Logs(
        ExecutionId,
        LogSnapshotQuery,
        RpcReplyPort<Result<LogSnapshot, ExecutorError>>,
    ),
    /// Replies when the execution has ended.
    Wait(
        ExecutionId,
        RpcReplyPort<Result<ExecutionRecord, ExecutorError>>,
    ),
    /// Replies when no execution is active.
    WaitAll(RpcReplyPort<()>),
    /// Replies once the execution's records are on disk (it left
    /// `pending`), at once without a state dir or for an unknown id.
    WaitRecorded(ExecutionId, RpcReplyPort<()>),
    /// Refuses new work, drains within the deadline, cancels the rest, stops.
    Shutdown(Duration, RpcReplyPort<()>),
    /// Leaves the executions a keeper keeps to the next agent; replies how
    /// many (see [`Executor::leave`]).
    Leave(RpcReplyPort<usize>),

    /// From a job actor: where to reach it.
    JobAttached {
        /// The execution.
        id: ExecutionId,
        /// Its actor.
        actor: ActorRef<JobMsg>,
    },
    /// From a job actor: a new status.
    JobUpdate {
        /// The execution.
        id: ExecutionId,
        /// Its status.
        status: ExecutionStatus,
        /// Its live output.
        output: Option<ExecutionOutput>,
    },
    /// From a job actor asked to report in by a restarted executor.
    JobReattached {
        /// The execution as the job actor knows it.
        record: Box<ExecutionRecord>,
        /// Its live output (`None` once it finished).
        output: Option<ExecutionOutput>,
        /// Its actor.
        actor: ActorRef<JobMsg>,
    },
    /// From a job actor: the terminal status.
    JobFinished {
        /// The execution.
        id: ExecutionId,
        /// Its final status.
        status: ExecutionStatus,
    },
    /// Sent by the actor to itself (opaque: it cannot be built outside).
    Internal(InternalMsg),
    /// The job supervisor (for tree snapshots); `None` while it restarts.
    JobSupervisor(RpcReplyPort<Option<SupervisorRef>>),
    /// The schedules (next runs) of every scheduled job.
    Schedules(RpcReplyPort<Vec<crate::cron::ScheduleInfo>>),
    /// The cron actor to keep schedules in (set once at start).
    SetCron(CronRef, RpcReplyPort<()>),
    /// From the cron actor: a scheduled run is due.
    Scheduled(CronFire),
    /// The cron actor was restarted (empty): put the schedules back.
    CronRestarted,
}

// Local only: never sent to another node (the `cluster` feature of
// ractor asks every message type to say so).
impl ractor::Message for ExecutorMsg {}

/// A message the executor sends to itself.
pub struct InternalMsg(Internal);

enum Internal {
    /// A retry's back-off is over.
    Retry(Box<RetryOf>),
    /// The drain deadline of a shutdown passed.
    DrainDeadline,
    /// Retention may have expired something.
    Expire,
    /// Fault injection: panic in the handler.
    InjectPanic,
    /// Start the job actors of the executions adopted at start (once the
    /// job supervisor is up).
    StartAdopted,
}

impl InternalMsg {
    /// Fault injection for tests: the executor panics when it handles this.
    #[doc(hidden)]
    pub fn inject_panic() -> Self {
        Self(Internal::InjectPanic)
    }
}

/// A failed execution to run again.
pub struct RetryOf {
    meta: ExecutionMeta,
    spec: Arc<JobSpec>,
}

/// What the executor starts with.
pub struct ExecutorArgs {
    /// Shared with every job actor.
    pub services: JobServices,
    /// The tree's event bus (the job supervisor publishes into it).
    pub events: EventBus,
    /// The handle to this executor that job actors report through; the
    /// executor points it at itself as it starts.
    pub me: Part<ExecutorMsg>,
    /// The job supervisor.
    pub jobs: Part<SupervisorMsg>,
    /// True: the executor starts the job supervisor (linked to itself) and
    /// fills `jobs`. False: `jobs` is a sibling part started by the node's
    /// root, which outlives an executor restart.
    pub own_jobs: bool,
    /// The cron actor schedules go to (set later with `SetCron` if `None`).
    pub cron: Option<CronRef>,
    /// What a restarted executor recovers from.
    pub memory: ExecutorMemory,
}

/// The registered jobs by name.
type Registry = BTreeMap<String, Arc<JobSpec>>;

/// What outlives one executor actor: whether one ran before (a restart,
/// not a node boot) and the registered jobs, published on every change.
/// Kept by whoever restarts the executor.
#[derive(Clone)]
pub struct ExecutorMemory {
    started: Arc<AtomicBool>,
    specs: Arc<watch::Sender<Arc<Registry>>>,
}

impl Default for ExecutorMemory {
    fn default() -> Self {
        Self {
            started: Arc::new(AtomicBool::new(false)),
            specs: Arc::new(watch::Sender::new(Arc::new(BTreeMap::new()))),
        }
    }
}

/// The executor's state.
pub struct ExecutorState {
    services: JobServices,
    me: Part<ExecutorMsg>,
    jobs: Part<SupervisorMsg>,
    own_jobs: bool,
    memory: ExecutorMemory,
    specs: BTreeMap<String, Arc<JobSpec>>,
    table: Table,
    shutdown: Option<Vec<RpcReplyPort<()>>>,
    waiters: BTreeMap<ExecutionId, Vec<RpcReplyPort<Result<ExecutionRecord, ExecutorError>>>>,
    idle_waiters: Vec<RpcReplyPort<()>>,
    /// Waiting for an execution's records to be written.
    recorded_waiters: BTreeMap<ExecutionId, Vec<RpcReplyPort<()>>>,
    expiry_timer: Option<(Instant, tokio::task::JoinHandle<()>)>,
    /// Retention of jobs no longer (or not yet) registered.
    default_spec: Arc<JobSpec>,
    cron: Option<CronRef>,
    events: EventBus,
    /// Executions adopted at start, waiting for their job actors.
    adopted: Vec<Adopted>,
}

/// An execution adopted at start ([`job_actor::resume`]).
struct Adopted {
    meta: ExecutionMeta,
    spec: Arc<JobSpec>,
    env: BTreeMap<String, String>,
    resumed: crate::actors::job_actor::Resumed,
    cancelled: watch::Receiver<bool>,
}

/// The executor actor.
pub struct ExecutorActor;

impl Actor for ExecutorActor {
    type Msg = ExecutorMsg;
    type State = ExecutorState;
    type Arguments = ExecutorArgs;

    /// Starts the job supervisor (when it owns it) and reloads the durable
    /// history. A restarted executor (the node kept running) takes its
    /// registered jobs from its memory, reads the records as they are
    /// (active ones stay active) and asks every job actor still running
    /// under the job supervisor to report in.
    async fn pre_start(
        &self,
        myself: ActorRef<ExecutorMsg>,
        args: ExecutorArgs,
    ) -> Result<ExecutorState, ActorProcessingErr> {
        let restarted = args.memory.started.swap(true, Ordering::SeqCst);
        args.me.set(myself.clone());
        let events = args.events.clone();
        if args.own_jobs {
            let supervisor = SupervisorRef::start_linked(
                SupervisorSpec::dynamic("jobs"),
                args.events,
                myself.get_cell(),
            )
            .await?;
            args.jobs.set(supervisor.actor().clone());
        }
        let specs = if restarted {
            (**args.memory.specs.borrow()).clone()
        } else {
            args.memory.specs.send_replace(Arc::default());
            BTreeMap::new()
        };
        let mut state = ExecutorState {
            services: args.services,
            me: args.me,
            jobs: args.jobs,
            own_jobs: args.own_jobs,
            memory: args.memory,
            specs,
            table: Table::default(),
            shutdown: None,
            waiters: BTreeMap::new(),
            idle_waiters: Vec::new(),
            recorded_waiters: BTreeMap::new(),
            expiry_timer: None,
            default_spec: Arc::new(JobSpec::command("-", ["-"])),
            cron: args.cron,
            events,
            adopted: Vec::new(),
        };
        if let Some(store) = state.services.store.clone() {
            let loaded = tokio::task::spawn_blocking(move || {
                if restarted {
                    store.load_all_as_recorded()
                } else {
                    store.load_all_keeping()
                }
            })
            .await??;
            for (path, why) in &loaded.skipped {
                tracing::warn!(path = %path.display(), reason = %why, "skipped an unreadable execution record");
            }
            let now = Utc::now();
            let count = loaded.records.len();
            let kept: std::collections::HashSet<ExecutionId> = loaded.kept.into_iter().collect();
            for mut record in loaded.records {
                let id = record.meta.id;
                if kept.contains(&id) {
                    match state.adopt(&record).await {
                        Ok(adopted) => {
                            state.adopted.push(adopted);
                            continue;
                        }
                        Err(status) => record.status = status,
                    }
                }
                let active = record.status.state.is_active();
                let age = record
                    .status
                    .finished_at
                    .map(|f| (now - f).to_std().unwrap_or_default())
                    .unwrap_or_default();
                let retention = state.default_spec.retention;
                let expires = Instant::now() + retention.saturating_sub(age);
                state.table.insert(record);
                if !active {
                    let history = crate::spec::History {
                        successful: usize::MAX,
                        failed: usize::MAX,
                    };
                    state.table.finished(id, expires, history);
                }
            }
            tracing::info!(executions = count, "reloaded execution history");
            state.arm_expiry(&myself);
            if !state.adopted.is_empty() {
                let _ = myself.cast(ExecutorMsg::Internal(InternalMsg(Internal::StartAdopted)));
            }
        }
        if restarted {
            state.reattach(&myself).await;
        }
        Ok(state)
    }

    /// Answers every request; refusals are errors to the caller, never to the actor.
    async fn handle(
        &self,
        myself: ActorRef<ExecutorMsg>,
        msg: ExecutorMsg,
        state: &mut ExecutorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ExecutorMsg::Register(spec, reply) => {
                let _ = reply.send(state.register(*spec).await);
            }
            ExecutorMsg::Unregister(name, reply) => {
                let result = match state.specs.remove(&name) {
                    Some(spec) => {
                        state.remember_specs();
                        if spec.schedule.is_some()
                            && let Some(cron) = &state.cron
                        {
                            let _ = cron.remove(&name).await;
                        }
                        Ok(())
                    }
                    None => Err(ExecutorError::UnknownJob(name)),
                };
                let _ = reply.send(result);
            }
            ExecutorMsg::JobSupervisor(reply) => {
                let _ = reply.send(state.job_supervisor().ok());
            }
            ExecutorMsg::Schedules(reply) => {
                let list = match &state.cron {
                    Some(cron) => cron.list().await.unwrap_or_default(),
                    None => Vec::new(),
                };
                let _ = reply.send(list);
            }
            ExecutorMsg::SetCron(cron, reply) => {
                state.cron = Some(cron);
                let _ = reply.send(());
            }
            ExecutorMsg::Scheduled(fire) => {
                let trigger = JobTrigger::Scheduler {
                    scheduled_for: Some(fire.scheduled_for),
                };
                let result = match state.specs.get(&fire.job) {
                    Some(spec) => {
                        let spec = spec.clone();
                        state.trigger(&myself, spec, trigger, Work::Command)
                    }
                    None => Err(ExecutorError::UnknownJob(fire.job.clone())),
                };
                match result {
                    Ok(id) => {
                        tracing::info!(job = %fire.job, execution = %id, scheduled_for = %fire.scheduled_for.to_rfc3339(), skipped = fire.skipped, "scheduled run started")
                    }
                    Err(e) => {
                        tracing::warn!(job = %fire.job, scheduled_for = %fire.scheduled_for.to_rfc3339(), error = %e, "scheduled run not started")
                    }
                }
            }
            ExecutorMsg::Spec(name, reply) => {
                let _ = reply.send(state.specs.get(&name).map(|s| (**s).clone()));
            }
            ExecutorMsg::Jobs(reply) => {
                let _ = reply.send(state.specs.keys().cloned().collect());
            }
            ExecutorMsg::Trigger(job, trigger, reply) => {
                let result = match state.specs.get(&job) {
                    Some(spec) => {
                        let spec = spec.clone();
                        state.trigger(&myself, spec, trigger, Work::Command)
                    }
                    None => Err(ExecutorError::UnknownJob(job)),
                };
                let _ = reply.send(result);
            }
            ExecutorMsg::Run(spec, trigger, work, reply) => {
                let result = match spec.validate() {
                    Ok(()) => state.trigger(&myself, Arc::new(*spec), trigger, work),
                    Err(e) => Err(ExecutorError::Invalid(e)),
                };
                let _ = reply.send(result);
            }
            ExecutorMsg::Get(id, reply) => {
                let _ = reply.send(state.table.execs.get(&id).map(|e| e.record.clone()));
            }
            ExecutorMsg::List(job, reply) => {
                let _ = reply.send(state.list(job.as_deref()));
            }
            ExecutorMsg::Latest(job, reply) => {
                let _ = reply.send(state.table.latest(&job).cloned());
            }
            ExecutorMsg::ActiveCount(reply) => {
                let _ = reply.send(state.table.active_count());
            }
            ExecutorMsg::Cancel(id, grace, reply) => {
                let _ = reply.send(state.cancel(id, grace));
            }
            ExecutorMsg::Signal(id, signal, reply) => {
                state.control(id, reply, move |r| JobMsg::Signal(signal, r));
            }
            ExecutorMsg::Pause(id, pause, reply) => {
                state.control(id, reply, move |r| JobMsg::Pause(pause, r));
            }
            ExecutorMsg::Logs(id, query, reply) => state.logs(id, query, reply),
            ExecutorMsg::Wait(id, reply) => match state.table.execs.get(&id) {
                None => {
                    let _ = reply.send(Err(ExecutorError::UnknownExecution(id)));
                }
                Some(e) if e.record.status.state.is_terminal() => {
                    let _ = reply.send(Ok(e.record.clone()));
                }
                Some(_) => state.waiters.entry(id).or_default().push(reply),
            },
            ExecutorMsg::WaitRecorded(id, reply) => match state.table.execs.get(&id) {
                Some(e)
                    if state.services.store.is_some()
                        && matches!(e.record.status.state, JobState::Pending) =>
                {
                    state.recorded_waiters.entry(id).or_default().push(reply);
                }
                _ => {
                    let _ = reply.send(());
                }
            },
            ExecutorMsg::WaitAll(reply) => {
                if state.table.active_count() == 0 && state.pending_retries() == 0 {
                    let _ = reply.send(());
                } else {
                    state.idle_waiters.push(reply);
                }
            }
            ExecutorMsg::Shutdown(deadline, reply) => {
                match &mut state.shutdown {
                    Some(waiters) => waiters.push(reply),
                    None => {
                        tracing::info!(
                            active = state.table.active_count(),
                            "executor shutting down"
                        );
                        state.shutdown = Some(vec![reply]);
                        let me = myself.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(deadline).await;
                            let _ = me
                                .cast(ExecutorMsg::Internal(InternalMsg(Internal::DrainDeadline)));
                        });
                    }
                }
                state.maybe_stopped(&myself).await;
            }
            ExecutorMsg::Leave(reply) => {
                let n = state.leave().await;
                let _ = reply.send(n);
            }
            ExecutorMsg::Internal(InternalMsg(Internal::DrainDeadline)) => {
                let active: Vec<ExecutionId> = state
                    .table
                    .jobs
                    .values()
                    .flat_map(|i| i.active.iter().copied())
                    .collect();
                for id in active {
                    let _ = state.cancel(id, None);
                }
            }
            ExecutorMsg::JobReattached {
                record,
                output,
                actor,
            } => {
                state.reattached(&myself, *record, output, actor);
                state.maybe_stopped(&myself).await;
            }
            ExecutorMsg::CronRestarted => state.resync_schedules().await,
            ExecutorMsg::JobAttached { id, actor } => {
                if let Some(exec) = state.table.execs.get_mut(&id) {
                    if let Some(grace) = exec.cancel_pending.take() {
                        let _ = actor.cast(JobMsg::Cancel { grace });
                    }
                    exec.actor = Some(actor);
                }
            }
            ExecutorMsg::JobUpdate { id, status, output } => {
                // A terminal status comes with JobFinished, which also
                // wakes waiters and applies retries and history.
                if let Some(exec) = state.table.execs.get_mut(&id)
                    && exec.record.status.state.is_active()
                    && status.state.is_active()
                {
                    exec.record.status = status;
                    if output.is_some() {
                        exec.output = output;
                    }
                    if !matches!(exec.record.status.state, JobState::Pending) {
                        for w in state.recorded_waiters.remove(&id).unwrap_or_default() {
                            let _ = w.send(());
                        }
                    }
                }
            }
            ExecutorMsg::JobFinished { id, status } => {
                state.job_finished(&myself, id, status);
                state.maybe_stopped(&myself).await;
            }
            ExecutorMsg::Internal(InternalMsg(Internal::Retry(retry))) => {
                let RetryOf { meta, spec } = *retry;
                if let Some(index) = state.table.jobs.get_mut(&meta.job) {
                    index.pending_retries = index.pending_retries.saturating_sub(1);
                }
                if state.shutdown.is_none() {
                    let first = meta.retry_of.unwrap_or(meta.id);
                    if let Err(e) = state.start(
                        &myself,
                        spec,
                        meta.trigger.clone(),
                        Work::Command,
                        meta.attempt + 1,
                        Some(first),
                    ) {
                        tracing::warn!(job = %meta.job, error = %e, "failed to start a retry");
                    }
                }
                state.maybe_idle();
                state.maybe_stopped(&myself).await;
            }
            ExecutorMsg::Internal(InternalMsg(Internal::InjectPanic)) => {
                panic!("injected fault in the executor")
            }
            ExecutorMsg::Internal(InternalMsg(Internal::StartAdopted)) => {
                state.start_adopted(&myself).await;
            }
            ExecutorMsg::Internal(InternalMsg(Internal::Expire)) => {
                state.expiry_timer = None;
                state.expire();
                state.arm_expiry(&myself);
            }
        }
        Ok(())
    }

    /// The job supervisor it owns exiting outside a shutdown fails the
    /// executor (its own supervisor then restarts it).
    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<ExecutorMsg>,
        evt: SupervisionEvent,
        state: &mut ExecutorState,
    ) -> Result<(), ActorProcessingErr> {
        let ours = |cell: &ractor::ActorCell| {
            state.own_jobs
                && state
                    .jobs
                    .last()
                    .is_some_and(|j| j.get_id() == cell.get_id())
        };
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason)
                if ours(&cell) && state.shutdown.is_none() =>
            {
                Err(format!("the job supervisor stopped: {}", reason.unwrap_or_default()).into())
            }
            SupervisionEvent::ActorFailed(cell, err) if ours(&cell) => {
                Err(format!("the job supervisor failed: {err}").into())
            }
            _ => Ok(()),
        }
    }

    /// Stops the job supervisor: each job actor cancels its run and cleans up.
    async fn post_stop(
        &self,
        _: ActorRef<ExecutorMsg>,
        state: &mut ExecutorState,
    ) -> Result<(), ActorProcessingErr> {
        if let Some((_, t)) = state.expiry_timer.take() {
            t.abort();
        }
        if state.own_jobs
            && let Some(cron) = state.cron.take()
        {
            cron.stop();
        }
        if let Ok(jobs) = state.job_supervisor() {
            jobs.shutdown().await;
        }
        Ok(())
    }
}
