//! [`Executor`]: the typed handle to the executor actor, for the API, the
//! CLI, the cron actor and programs embedding arbor.

use std::{future::Future, path::PathBuf, sync::Arc, time::Duration};

use ractor::{Actor, ActorRef, RpcReplyPort};

use super::{ExecutorActor, ExecutorArgs, ExecutorError, ExecutorMemory, ExecutorMsg};
use crate::{
    actors::{
        job_actor::{JobServices, TaskContext, Work},
        overlay_actor::{Disabled, Overlay},
    },
    cron::{Clock, CronRef, SystemClock},
    events::EventBus,
    execution::{ExecutionId, ExecutionRecord, JobTrigger},
    part::{Part, PartError},
    runtime::{Runtime, Signal},
    spec::JobSpec,
    store::{LogSnapshot, LogSnapshotQuery, Store},
    tokens::{NoTokens, TokenSink},
};

/// How to start an executor.
pub struct ExecutorConfig {
    /// Where job containers run.
    pub runtime: Arc<dyn Runtime>,
    /// The overlay actor (default: one with networking disabled).
    pub overlay: Option<Overlay>,
    /// Told when a job container is removed (default: nothing to revoke).
    pub tokens: Arc<dyn TokenSink>,
    /// Directory for durable records and logs (`None`: in memory only).
    pub state_dir: Option<PathBuf>,
    /// The tree's event bus (default: a new one).
    pub events: Option<EventBus>,
    /// Longest a completion sink may run (default 30 s).
    pub notify_timeout: Duration,
    /// The wall clock schedules are read on (default the system's; tests
    /// use [`TokioClock`](crate::cron::TokioClock) under a paused clock).
    pub clock: Arc<dyn Clock>,
}

impl ExecutorConfig {
    /// Defaults around `runtime`: no state dir, no networking, no tokens.
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        Self {
            runtime,
            overlay: None,
            tokens: Arc::new(NoTokens),
            state_dir: None,
            events: None,
            notify_timeout: Duration::from_secs(30),
            clock: Arc::new(SystemClock),
        }
    }

    /// Reads schedules on this clock.
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Keeps records and logs under `dir`.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// Uses this overlay actor.
    pub fn overlay(mut self, overlay: Overlay) -> Self {
        self.overlay = Some(overlay);
        self
    }

    /// Uses this token sink.
    pub fn tokens(mut self, tokens: impl TokenSink) -> Self {
        self.tokens = Arc::new(tokens);
        self
    }

    /// Publishes into this event bus.
    pub fn events(mut self, events: EventBus) -> Self {
        self.events = Some(events);
        self
    }
}

/// Longest a request waits for the executor's answer (waits for an
/// execution or for the executor to drain have no limit).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A cheap, cloneable handle to the executor actor. It follows the
/// executor's restarts when the executor is a node part.
#[derive(Clone)]
pub struct Executor {
    actor: Part<ExecutorMsg>,
}

impl From<PartError> for ExecutorError {
    fn from(e: PartError) -> Self {
        match e {
            PartError::Restarting(part) => ExecutorError::Restarting(part.into()),
            PartError::Timeout { after, .. } => ExecutorError::Timeout(after),
        }
    }
}

/// What an executor and its job actors are built from (the services
/// the job actors share).
pub(crate) async fn job_services(
    config: &ExecutorConfig,
    overlay: Overlay,
) -> Result<(JobServices, EventBus), crate::Error> {
    let store = match &config.state_dir {
        Some(dir) => Some(Store::open(dir.clone())?),
        None => None,
    };
    let events = config.events.clone().unwrap_or_default();
    Ok((
        JobServices {
            events: events.clone(),
            runtime: config.runtime.clone(),
            overlay,
            tokens: config.tokens.clone(),
            store,
            notify_timeout: config.notify_timeout,
        },
        events,
    ))
}

impl Executor {
    /// Starts an executor (and its job supervisor, and a cron actor),
    /// unsupervised, reloading the history kept in the state dir.
    pub async fn start(config: ExecutorConfig) -> Result<Self, crate::Error> {
        let overlay = match config.overlay.clone() {
            Some(o) => o,
            None => Overlay::start(Disabled).await.map_err(|e| {
                crate::Error::Start(format!("failed to start the overlay actor: {e}"))
            })?,
        };
        let (services, events) = job_services(&config, overlay).await?;
        let me = Part::new("executor");
        ExecutorActor::spawn(
            None,
            ExecutorActor,
            ExecutorArgs {
                services,
                events,
                me: me.clone(),
                jobs: Part::new("job supervisor"),
                own_jobs: true,
                cron: None,
                memory: ExecutorMemory::default(),
            },
        )
        .await
        .map_err(|e| crate::Error::Start(format!("failed to start the executor: {e}")))?;
        // Scheduled runs come back to the executor as messages.
        let target = me.clone();
        let (cron, _) = CronRef::start(
            Arc::new(move |fire| {
                let _ = target.cast(ExecutorMsg::Scheduled(fire));
            }),
            config.clock,
        )
        .await
        .map_err(|e| crate::Error::Start(format!("failed to start the cron actor: {e}")))?;
        let executor = Self { actor: me };
        executor
            .ask(|r| ExecutorMsg::SetCron(cron, r))
            .await
            .map_err(|e| crate::Error::Start(e.to_string()))?;
        Ok(executor)
    }

    /// A handle to a running executor actor.
    pub fn from_ref(actor: ActorRef<ExecutorMsg>) -> Self {
        Self {
            actor: Part::fixed("executor", actor),
        }
    }

    /// A handle that resolves the executor `part` holds now.
    pub fn from_part(part: Part<ExecutorMsg>) -> Self {
        Self { actor: part }
    }

    /// The actor (the newest one; it may have stopped).
    pub fn actor(&self) -> Option<ActorRef<ExecutorMsg>> {
        self.actor.last()
    }

    /// The handle that follows the executor's restarts.
    pub fn part(&self) -> &Part<ExecutorMsg> {
        &self.actor
    }

    /// Adds or replaces a job; an invalid spec is refused with every error.
    pub async fn register(&self, spec: JobSpec) -> Result<(), ExecutorError> {
        self.ask(|r| ExecutorMsg::Register(Box::new(spec), r))
            .await?
    }

    /// Removes a job; its history stays until retention.
    pub async fn unregister(&self, job: &str) -> Result<(), ExecutorError> {
        let job = job.to_owned();
        self.ask(|r| ExecutorMsg::Unregister(job, r)).await?
    }

    /// A registered job's spec.
    pub async fn spec(&self, job: &str) -> Result<Option<JobSpec>, ExecutorError> {
        let job = job.to_owned();
        self.ask(|r| ExecutorMsg::Spec(job, r)).await
    }

    /// Registered job names, sorted.
    pub async fn jobs(&self) -> Result<Vec<String>, ExecutorError> {
        self.ask(ExecutorMsg::Jobs).await
    }

    /// Starts an execution of `job`; the id is queryable as soon as this returns.
    pub async fn trigger(
        &self,
        job: &str,
        trigger: JobTrigger,
    ) -> Result<ExecutionId, ExecutorError> {
        let job = job.to_owned();
        self.ask(|r| ExecutorMsg::Trigger(job, trigger, r)).await?
    }

    /// Runs `spec` once without registering it (an ad-hoc run).
    pub async fn run(
        &self,
        spec: JobSpec,
        trigger: JobTrigger,
    ) -> Result<ExecutionId, ExecutorError> {
        self.ask(|r| ExecutorMsg::Run(Box::new(spec), trigger, Work::Command, r))
            .await?
    }

    /// Runs a future as a job named `name`: same ids, states, cancel, wait
    /// and live output as a command. Cancel resolves
    /// [`TaskContext::cancelled`]; a task still running after the grace
    /// (`stop_timeout`, 10 s by default) is aborted.
    pub async fn spawn<F, Fut, E>(&self, name: &str, body: F) -> Result<ExecutionId, ExecutorError>
    where
        F: FnOnce(TaskContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let spec = JobSpec::command(name, ["(in-process)"]);
        self.spawn_with(spec, body).await
    }

    /// Like [`Executor::spawn`] with a spec (deadline, stop_timeout, history...);
    /// the spec's command is not run.
    pub async fn spawn_with<F, Fut, E>(
        &self,
        mut spec: JobSpec,
        body: F,
    ) -> Result<ExecutionId, ExecutorError>
    where
        F: FnOnce(TaskContext) -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        spec.command = vec!["(in-process)".into()];
        spec.init.clear();
        let work = Work::Task(Box::new(move |ctx| {
            let fut = body(ctx);
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        }));
        let trigger = JobTrigger::Internal {
            reason: "in-process".into(),
        };
        self.ask(|r| ExecutorMsg::Run(Box::new(spec), trigger, work, r))
            .await?
    }

    /// One execution, if retained.
    pub async fn get(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, ExecutorError> {
        self.ask(|r| ExecutorMsg::Get(id, r)).await
    }

    /// Executions of `job`, oldest first.
    pub async fn list(&self, job: &str) -> Result<Vec<ExecutionRecord>, ExecutorError> {
        let job = job.to_owned();
        self.ask(|r| ExecutorMsg::List(Some(job), r)).await
    }

    /// Every retained execution, oldest first.
    pub async fn list_all(&self) -> Result<Vec<ExecutionRecord>, ExecutorError> {
        self.ask(|r| ExecutorMsg::List(None, r)).await
    }

    /// The newest execution of `job`.
    pub async fn latest(&self, job: &str) -> Result<Option<ExecutionRecord>, ExecutorError> {
        let job = job.to_owned();
        self.ask(|r| ExecutorMsg::Latest(job, r)).await
    }

    /// How many executions are pending, initializing or running.
    pub async fn active_count(&self) -> Result<usize, ExecutorError> {
        self.ask(ExecutorMsg::ActiveCount).await
    }

    /// Cancels an execution: graceful signal, kill after `grace` (default:
    /// the job's `stop_timeout`); it ends `Cancelled` after its cleanup.
    pub async fn cancel(
        &self,
        id: ExecutionId,
        grace: Option<Duration>,
    ) -> Result<(), ExecutorError> {
        self.ask(|r| ExecutorMsg::Cancel(id, grace, r)).await?
    }

    /// Sends `signal` to the execution's process group.
    pub async fn signal(&self, id: ExecutionId, signal: Signal) -> Result<(), ExecutorError> {
        self.ask(|r| ExecutorMsg::Signal(id, signal, r)).await?
    }

    /// Stops the execution's process group (SIGSTOP).
    pub async fn pause(&self, id: ExecutionId) -> Result<(), ExecutorError> {
        self.ask(|r| ExecutorMsg::Pause(id, true, r)).await?
    }

    /// Continues the execution's process group (SIGCONT).
    pub async fn resume(&self, id: ExecutionId) -> Result<(), ExecutorError> {
        self.ask(|r| ExecutorMsg::Pause(id, false, r)).await?
    }

    /// A snapshot of the output: live while it runs, from disk after.
    pub async fn logs(
        &self,
        id: ExecutionId,
        query: LogSnapshotQuery,
    ) -> Result<LogSnapshot, ExecutorError> {
        self.ask(|r| ExecutorMsg::Logs(id, query, r)).await?
    }

    /// Waits until the execution has ended and returns its record.
    pub async fn wait(&self, id: ExecutionId) -> Result<ExecutionRecord, ExecutorError> {
        // A restarted executor knows the execution again (from the store or
        // from its job actor): wait on it there. Each try first waits a
        // while for the executor to be back.
        let mut tries = 0;
        loop {
            match self.wait_for(|r| ExecutorMsg::Wait(id, r)).await {
                Err(ExecutorError::Restarting(_)) if tries < 3 => tries += 1,
                other => return other?,
            }
        }
    }

    /// Waits until the execution's records are on disk (its directory,
    /// `meta.json` and first `state.json`), so that an agent killed after
    /// this returns still knows it. Returns at once without a state dir, or
    /// when the executor does not know `id`.
    pub async fn recorded(&self, id: ExecutionId) -> Result<(), ExecutorError> {
        self.wait_for(|r| ExecutorMsg::WaitRecorded(id, r)).await
    }

    /// Waits until no execution is active and no retry is pending.
    pub async fn wait_all(&self) -> Result<(), ExecutorError> {
        self.wait_for(ExecutorMsg::WaitAll).await
    }

    /// The job supervisor, under which every execution runs.
    pub async fn job_supervisor(&self) -> Result<crate::SupervisorRef, ExecutorError> {
        self.ask(ExecutorMsg::JobSupervisor)
            .await?
            .ok_or_else(|| ExecutorError::Restarting("job supervisor".into()))
    }

    /// Every schedule with its next run.
    pub async fn schedules(&self) -> Result<Vec<crate::cron::ScheduleInfo>, ExecutorError> {
        self.ask(ExecutorMsg::Schedules).await
    }

    /// The agent exits leaving its work running: every running execution
    /// whose command runs under a keeper is left to the next agent (its job
    /// actor stops without ending it; its record stays `running`). Returns
    /// how many were left. Call [`Executor::shutdown`] next for the rest.
    pub async fn leave(&self) -> usize {
        self.actor
            .call(ExecutorMsg::Leave, Some(Duration::from_secs(10)))
            .await
            .unwrap_or(0)
    }

    /// Refuses new executions, lets active ones finish within `deadline`,
    /// cancels the rest (each with its grace), and stops the executor.
    pub async fn shutdown(&self, deadline: Duration) {
        let _ = self
            .actor
            .call(|r| ExecutorMsg::Shutdown(deadline, r), None)
            .await;
        if let Some(actor) = self.actor.last() {
            let _ = actor.get_cell().wait(None).await;
        }
    }

    /// Kills the executor at once: its job supervisor and job actors are
    /// killed with it (no cleanup hooks run; each job actor's drop guard
    /// abandons its containers). For a shutdown that ran out of time.
    pub async fn kill(&self) {
        if let Some(actor) = self.actor.last() {
            actor.kill();
            let _ = actor.get_cell().wait(None).await;
        }
    }

    /// A request answered at once: at most [`CALL_TIMEOUT`].
    async fn ask<T: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<T>) -> ExecutorMsg,
    ) -> Result<T, ExecutorError> {
        Ok(self.actor.call(msg, Some(CALL_TIMEOUT)).await?)
    }

    /// A request answered when something ends (an execution, all of
    /// them): no time limit while the executor lives.
    async fn wait_for<T: Send + 'static>(
        &self,
        msg: impl FnOnce(RpcReplyPort<T>) -> ExecutorMsg,
    ) -> Result<T, ExecutorError> {
        Ok(self.actor.call(msg, None).await?)
    }
}
