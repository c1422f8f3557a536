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
//! when the node died comes back as failed "node restarted".
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
mod table;

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};
use tokio::time::Instant;

pub use error::ExecutorError;
pub use handle::{Executor, ExecutorConfig};

use self::table::Table;
use crate::{
    actors::{
        job_actor::{JobActor, JobArgs, JobMsg, JobServices, Work, once},
        supervisor_actor::{ChildSpec, SupervisorRef, SupervisorSpec},
    },
    cron::{CronFire, CronRef, CronSchedule, ScheduleSpec},
    events::EventBus,
    execution::{
        ExecutionId, ExecutionMeta, ExecutionRecord, ExecutionStatus, FailReason, JobState,
        JobTrigger,
    },
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
    /// Refuses new work, drains within the deadline, cancels the rest, stops.
    Shutdown(Duration, RpcReplyPort<()>),

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
    /// From a job actor: the terminal status.
    JobFinished {
        /// The execution.
        id: ExecutionId,
        /// Its final status.
        status: ExecutionStatus,
    },
    /// Internal: a retry's back-off is over.
    Retry(Box<RetryOf>),
    /// Internal: the drain deadline of a shutdown passed.
    DrainDeadline,
    /// Internal: retention may have expired something.
    Expire,
    /// The cron actor to keep schedules in (set once at start).
    SetCron(CronRef, RpcReplyPort<()>),
    /// From the cron actor: a scheduled run is due.
    Scheduled(CronFire),
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
}

/// The executor's state.
pub struct ExecutorState {
    services: JobServices,
    supervisor: SupervisorRef,
    specs: BTreeMap<String, Arc<JobSpec>>,
    table: Table,
    shutdown: Option<Vec<RpcReplyPort<()>>>,
    waiters: BTreeMap<ExecutionId, Vec<RpcReplyPort<Result<ExecutionRecord, ExecutorError>>>>,
    idle_waiters: Vec<RpcReplyPort<()>>,
    expiry_timer: Option<(Instant, tokio::task::JoinHandle<()>)>,
    /// Retention of jobs no longer (or not yet) registered.
    default_spec: Arc<JobSpec>,
    cron: Option<CronRef>,
}

/// The executor actor.
pub struct ExecutorActor;

impl Actor for ExecutorActor {
    type Msg = ExecutorMsg;
    type State = ExecutorState;
    type Arguments = ExecutorArgs;

    /// Starts the job supervisor and reloads the durable history.
    async fn pre_start(
        &self,
        myself: ActorRef<ExecutorMsg>,
        args: ExecutorArgs,
    ) -> Result<ExecutorState, ActorProcessingErr> {
        let supervisor = SupervisorRef::start_linked(
            SupervisorSpec::dynamic("jobs"),
            args.events,
            myself.get_cell(),
        )
        .await?;
        let mut state = ExecutorState {
            services: args.services,
            supervisor,
            specs: BTreeMap::new(),
            table: Table::default(),
            shutdown: None,
            waiters: BTreeMap::new(),
            idle_waiters: Vec::new(),
            expiry_timer: None,
            default_spec: Arc::new(JobSpec::command("-", ["-"])),
            cron: None,
        };
        if let Some(store) = state.services.store.clone() {
            let loaded = tokio::task::spawn_blocking(move || store.load_all()).await??;
            for (path, why) in &loaded.skipped {
                tracing::warn!(path = %path.display(), reason = %why, "skipped an unreadable execution record");
            }
            let now = Utc::now();
            let count = loaded.records.len();
            for record in loaded.records {
                let id = record.meta.id;
                let age = record
                    .status
                    .finished_at
                    .map(|f| (now - f).to_std().unwrap_or_default())
                    .unwrap_or_default();
                let retention = state.default_spec.retention;
                let expires = Instant::now() + retention.saturating_sub(age);
                state.table.insert(record);
                let history = crate::spec::History {
                    successful: usize::MAX,
                    failed: usize::MAX,
                };
                state.table.finished(id, expires, history);
            }
            tracing::info!(executions = count, "reloaded execution history");
            state.arm_expiry(&myself);
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
                            let _ = me.cast(ExecutorMsg::DrainDeadline);
                        });
                    }
                }
                state.maybe_stopped(&myself).await;
            }
            ExecutorMsg::DrainDeadline => {
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
                }
            }
            ExecutorMsg::JobFinished { id, status } => {
                state.job_finished(&myself, id, status);
                state.maybe_stopped(&myself).await;
            }
            ExecutorMsg::Retry(retry) => {
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
            ExecutorMsg::Expire => {
                state.expiry_timer = None;
                state.expire();
                state.arm_expiry(&myself);
            }
        }
        Ok(())
    }

    /// The job supervisor exiting outside a shutdown fails the executor.
    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<ExecutorMsg>,
        evt: SupervisionEvent,
        state: &mut ExecutorState,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(cell, _, reason)
                if cell.get_id() == state.supervisor.cell().get_id()
                    && state.shutdown.is_none() =>
            {
                Err(format!("the job supervisor stopped: {}", reason.unwrap_or_default()).into())
            }
            SupervisionEvent::ActorFailed(cell, err)
                if cell.get_id() == state.supervisor.cell().get_id() =>
            {
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
        if let Some(cron) = state.cron.take() {
            cron.stop();
        }
        state.supervisor.shutdown().await;
        Ok(())
    }
}

impl ExecutorState {
    async fn register(&mut self, spec: JobSpec) -> Result<(), ExecutorError> {
        spec.validate().map_err(ExecutorError::Invalid)?;
        let history = spec.history;
        let name = spec.name.clone();
        let had_schedule = self.specs.get(&name).is_some_and(|s| s.schedule.is_some());
        match (&spec.schedule, &self.cron) {
            (Some(expr), Some(cron)) => {
                let mut schedule = ScheduleSpec::new(&name, expr);
                schedule.time_zone = spec.time_zone.clone();
                schedule.starting_deadline = spec.starting_deadline;
                schedule.jitter = spec.jitter;
                schedule.suspend = spec.suspend;
                schedule.last_run = self.last_scheduled(&name);
                cron.upsert(schedule).await.map_err(|e| {
                    ExecutorError::Invalid(SpecErrors::from(SpecError::new(
                        "schedule",
                        format!("{expr:?}"),
                        e.to_string(),
                    )))
                })?;
            }
            (Some(expr), None) => {
                CronSchedule::parse(expr, spec.time_zone.as_deref()).map_err(|e| {
                    ExecutorError::Invalid(SpecErrors::from(SpecError::new(
                        "schedule",
                        format!("{expr:?}"),
                        e.to_string(),
                    )))
                })?;
            }
            (None, Some(cron)) if had_schedule => {
                let _ = cron.remove(&name).await;
            }
            (None, _) => {}
        }
        self.specs.insert(name.clone(), Arc::new(spec));
        for id in self.table.enforce_history(&name, history) {
            self.delete_files(id);
        }
        Ok(())
    }

    /// Applies the overlap policy, then starts an execution.
    fn trigger(
        &mut self,
        myself: &ActorRef<ExecutorMsg>,
        spec: Arc<JobSpec>,
        trigger: JobTrigger,
        work: Work,
    ) -> Result<ExecutionId, ExecutorError> {
        if self.shutdown.is_some() {
            return Err(ExecutorError::ShuttingDown);
        }
        let active = self.table.counted_active(&spec.name);
        let retries = self
            .table
            .jobs
            .get(&spec.name)
            .map_or(0, |i| i.pending_retries);
        match spec.concurrency {
            Overlap::Forbid => {
                if let Some(&first) = active.first() {
                    return Err(ExecutorError::Forbidden {
                        job: spec.name.clone(),
                        active: first,
                    });
                }
            }
            Overlap::Replace => {
                for id in active {
                    if let Some(exec) = self.table.execs.get_mut(&id) {
                        exec.replaced = true;
                    }
                    let _ = self.cancel(id, None);
                }
            }
            Overlap::Allow => {
                let limit = spec.concurrency_limit();
                if active.len() + retries >= limit {
                    return Err(ExecutorError::ConcurrencyLimit {
                        job: spec.name.clone(),
                        limit,
                    });
                }
            }
        }
        self.start(myself, spec, trigger, work, 1, None)
    }

    /// Records a new execution as pending and asks the job supervisor for its actor.
    fn start(
        &mut self,
        myself: &ActorRef<ExecutorMsg>,
        spec: Arc<JobSpec>,
        trigger: JobTrigger,
        work: Work,
        attempt: u32,
        retry_of: Option<ExecutionId>,
    ) -> Result<ExecutionId, ExecutorError> {
        let mut env = read_env_files(&spec.env_file).map_err(|e| ExecutorError::EnvFile {
            job: spec.name.clone(),
            message: e.to_string(),
        })?;
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let now = Utc::now();
        let id = ExecutionId::new();
        let meta = ExecutionMeta {
            id,
            job: spec.name.clone(),
            attempt,
            retry_of,
            command: spec.command.clone(),
            image: spec.image.clone(),
            trigger,
            env: mask_env(&env, &spec.mask),
            cwd: spec.cwd.clone(),
            created_at: now,
        };
        let record = ExecutionRecord {
            meta: meta.clone(),
            status: ExecutionStatus::pending(now),
        };
        let cancelled = self.table.insert(record);
        let args = once(JobArgs {
            meta,
            spec: spec.clone(),
            env,
            work,
            services: self.services.clone(),
            executor: myself.clone(),
            cancelled,
        });
        let child = ChildSpec::new(id.to_string(), move |ctx| {
            let args = args();
            async move {
                let args = args.ok_or("a job actor is never restarted")?;
                let (actor, _) =
                    JobActor::spawn_linked(None, JobActor, args, ctx.supervisor).await?;
                Ok(actor.get_cell())
            }
        })
        .restart(RestartType::Temporary)
        .shutdown(Shutdown::Timeout(spec.stop_timeout + CLEANUP_MARGIN));
        if let Err(e) = self.supervisor.start_child_nowait(child) {
            let mut status = ExecutionStatus::pending(now);
            status.state = JobState::Failed {
                reason: FailReason::Start {
                    message: e.to_string(),
                },
                exit_code: None,
            };
            status.finished_at = Some(now);
            self.job_finished(myself, id, status);
        }
        tracing::debug!(execution = %id, job = %spec.name, attempt, "execution accepted");
        Ok(id)
    }

    fn job_finished(
        &mut self,
        myself: &ActorRef<ExecutorMsg>,
        id: ExecutionId,
        status: ExecutionStatus,
    ) {
        let Some(exec) = self.table.execs.get_mut(&id) else {
            return;
        };
        if exec.record.status.state.is_terminal() {
            return;
        }
        exec.record.status = status;
        if self.services.store.is_some() {
            // The files keep the output; the live tail is not needed any more.
            exec.output = None;
        }
        let record = exec.record.clone();
        let spec = self
            .specs
            .get(&record.meta.job)
            .cloned()
            .unwrap_or_else(|| self.default_spec.clone());
        tracing::info!(execution = %id, job = %record.meta.job, state = %record.status.state, "execution ended");
        for w in self.waiters.remove(&id).unwrap_or_default() {
            let _ = w.send(Ok(record.clone()));
        }
        // Retry a failure (not a cancel, not a replaced run) within the limit.
        let retry = matches!(record.status.state, JobState::Failed { .. })
            && !matches!(
                record.status.state,
                JobState::Failed {
                    reason: FailReason::NodeRestarted,
                    ..
                }
            )
            && record.meta.attempt <= spec.backoff_limit
            && self.shutdown.is_none()
            && self.specs.contains_key(&record.meta.job);
        if retry {
            if let Some(index) = self.table.jobs.get_mut(&record.meta.job) {
                index.pending_retries += 1;
            }
            let delay = spec
                .retry_backoff
                .delay(record.meta.attempt.saturating_sub(1), &record.meta.job);
            tracing::info!(execution = %id, job = %record.meta.job, delay = %crate::spec::fmt_duration(delay), "retrying after back-off");
            let me = myself.clone();
            let retry = RetryOf {
                meta: record.meta.clone(),
                spec: spec.clone(),
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = me.cast(ExecutorMsg::Retry(Box::new(retry)));
            });
        }
        let expires = Instant::now() + spec.retention;
        for dropped in self.table.finished(id, expires, spec.history) {
            self.delete_files(dropped);
        }
        self.arm_expiry(myself);
        self.maybe_idle();
    }

    /// The scheduled time of the newest scheduled run of `job`, so a
    /// restarted node knows what it missed.
    fn last_scheduled(&self, job: &str) -> Option<chrono::DateTime<Utc>> {
        let index = self.table.jobs.get(job)?;
        index
            .all
            .iter()
            .rev()
            .find_map(|id| match &self.table.execs.get(id)?.record.meta.trigger {
                JobTrigger::Scheduler { scheduled_for } => *scheduled_for,
                _ => None,
            })
    }

    fn pending_retries(&self) -> usize {
        self.table.jobs.values().map(|i| i.pending_retries).sum()
    }

    fn maybe_idle(&mut self) {
        if self.table.active_count() == 0 && self.pending_retries() == 0 {
            for w in self.idle_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Completes a shutdown once nothing is active.
    async fn maybe_stopped(&mut self, myself: &ActorRef<ExecutorMsg>) {
        if self.shutdown.is_none() || self.table.active_count() > 0 {
            return;
        }
        self.supervisor.shutdown().await;
        for w in self.shutdown.take().unwrap_or_default() {
            let _ = w.send(());
        }
        self.shutdown = Some(Vec::new());
        myself.stop(Some("shutdown".into()));
    }

    fn cancel(&mut self, id: ExecutionId, grace: Option<Duration>) -> Result<(), ExecutorError> {
        let exec = self
            .table
            .execs
            .get_mut(&id)
            .ok_or(ExecutorError::UnknownExecution(id))?;
        if exec.record.status.state.is_terminal() {
            return Err(ExecutorError::Finished {
                id,
                state: exec.record.status.state.to_string(),
            });
        }
        exec.cancel.send_replace(true);
        match &exec.actor {
            Some(actor) => {
                let _ = actor.cast(JobMsg::Cancel { grace });
            }
            None => exec.cancel_pending = Some(grace),
        }
        Ok(())
    }

    /// Forwards a control request to the execution's actor without waiting here.
    fn control(
        &mut self,
        id: ExecutionId,
        reply: RpcReplyPort<Result<(), ExecutorError>>,
        msg: impl FnOnce(RpcReplyPort<Result<(), String>>) -> JobMsg + Send + 'static,
    ) {
        let actor = match self.table.execs.get(&id) {
            None => Err(ExecutorError::UnknownExecution(id)),
            Some(e) if e.record.status.state.is_terminal() => Err(ExecutorError::Finished {
                id,
                state: e.record.status.state.to_string(),
            }),
            Some(e) => e.actor.clone().ok_or_else(|| ExecutorError::Control {
                id,
                message: "execution is pending: nothing runs yet".into(),
            }),
        };
        let actor = match actor {
            Ok(a) => a,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        tokio::spawn(async move {
            let result = match actor.call(msg, None).await {
                Ok(ractor::rpc::CallResult::Success(Ok(()))) => Ok(()),
                Ok(ractor::rpc::CallResult::Success(Err(message))) => {
                    Err(ExecutorError::Control { id, message })
                }
                _ => Err(ExecutorError::Control {
                    id,
                    message: "the execution ended".into(),
                }),
            };
            let _ = reply.send(result);
        });
    }

    fn logs(
        &self,
        id: ExecutionId,
        query: LogSnapshotQuery,
        reply: RpcReplyPort<Result<LogSnapshot, ExecutorError>>,
    ) {
        let Some(exec) = self.table.execs.get(&id) else {
            let _ = reply.send(Err(ExecutorError::UnknownExecution(id)));
            return;
        };
        if let Some(out) = &exec.output {
            let _ = reply.send(Ok(out.snapshot(query)));
            return;
        }
        let Some(store) = &self.services.store else {
            let _ = reply.send(Ok(LogSnapshot::default()));
            return;
        };
        let dir: PathBuf = store.dir(id);
        tokio::task::spawn_blocking(move || {
            let _ = reply.send(read_snapshot(&dir, query).map_err(|e| ExecutorError::Logs {
                id,
                message: e.to_string(),
            }));
        });
    }

    fn list(&self, job: Option<&str>) -> Vec<ExecutionRecord> {
        match job {
            Some(job) => self
                .table
                .jobs
                .get(job)
                .map(|i| {
                    i.all
                        .iter()
                        .filter_map(|id| self.table.execs.get(id))
                        .map(|e| e.record.clone())
                        .collect()
                })
                .unwrap_or_default(),
            None => {
                let mut all: Vec<ExecutionRecord> = self
                    .table
                    .execs
                    .values()
                    .map(|e| e.record.clone())
                    .collect();
                all.sort_by_key(|r| r.meta.created_at);
                all
            }
        }
    }

    fn expire(&mut self) {
        for id in self.table.expire(Instant::now()) {
            self.delete_files(id);
        }
    }

    /// Keeps one timer, for the earliest retention expiry.
    fn arm_expiry(&mut self, myself: &ActorRef<ExecutorMsg>) {
        let Some(at) = self.table.next_expiry() else {
            return;
        };
        if let Some((armed, _)) = &self.expiry_timer
            && *armed <= at
        {
            return;
        }
        if let Some((_, t)) = self.expiry_timer.take() {
            t.abort();
        }
        let me = myself.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep_until(at).await;
            let _ = me.cast(ExecutorMsg::Expire);
        });
        self.expiry_timer = Some((at, task));
    }

    fn delete_files(&self, id: ExecutionId) {
        if let Some(store) = self.services.store.clone() {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.remove(id) {
                    tracing::warn!(execution = %id, error = %e, "failed to delete an execution's files");
                }
            });
        }
    }
}
