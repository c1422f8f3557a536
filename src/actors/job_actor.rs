//! One job execution as an actor, from `Pending` to exactly one terminal
//! state, with its cleanup run exactly once on every path.
//!
//! The steps are messages the actor sends itself (`Next`), so a cancel, a
//! deadline or a signal is handled between any two steps; the only long
//! waits (an init step or the main command running) happen in small waiter
//! tasks that report the exit back as a message. The order is the OCI one:
//! pull, create, acquire the segment and attach the container, run the init
//! steps to completion, start, wait (with the run's deadline), collect the
//! output, then clean up: detach, release the segment, remove the
//! container, revoke its token. Every transition is reported to the
//! executor (which owns the table of executions) and written to
//! `state.json` before the next step.
//!
//! In-process jobs ([`Work::Task`]) skip the container steps: the future
//! runs in a task of its own with a [`TaskContext`] for output and
//! cancellation.
//!
//! A command that runs under a keeper (live restore: the node's process
//! runtime has keepers and the job asks for no network) outlives the
//! agent: its `kept.json` lets the next agent's executor adopt it
//! ([`resume`]) and start a job actor that continues at the wait, so the
//! execution ends once, with the command's own exit. On
//! [`JobMsg::Leave`] (the agent exits leaving its work running) such an
//! actor stops without ending the execution.
//!
//! Failure: no handler returns an error (every failure becomes the
//! execution's `Failed` state). If the actor dies anyway (a panic), its state
//! is dropped without `post_stop`; the drop abandons the container (kills it
//! synchronously), releases the segment and reports the execution failed,
//! so nothing leaks and the execution still ends exactly once. When its
//! supervisor stops it (node shutdown), `post_stop` stops what runs with the
//! job's grace and finishes the execution as `Cancelled`.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use chrono::Utc;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

mod finish;
mod resume;
mod task;

use finish::Unclosed;
pub use resume::Resumed;
pub(crate) use resume::resume;
pub use task::{TaskContext, TaskFn, Work};

use crate::{
    actors::{
        executor_actor::ExecutorMsg,
        overlay_actor::{AttachRequest, Overlay, SegmentKey},
    },
    execution::{ExecutionMeta, ExecutionRecord, ExecutionStatus, FailReason, JobState},
    part::Part,
    runtime::{
        ContainerId, ContainerSpec, ExitStatus, LogStream, Output, Runtime, Signal, process::procfs,
    },
    spec::JobSpec,
    store::{ExecutionFiles, ExecutionOutput, Store},
    tokens::TokenSink,
};

/// How long the output of an exited command may take to drain before the
/// execution finishes without the rest.
const OUTPUT_DRAIN: Duration = Duration::from_secs(5);

/// Messages to a job actor. The public ones come from the executor.
pub enum JobMsg {
    /// Stop what runs (graceful signal, then kill after `grace`, default the
    /// job's `stop_timeout`); the execution ends `Cancelled`.
    Cancel {
        /// Grace before the kill.
        grace: Option<Duration>,
    },
    /// Sends a signal to the main command's process group.
    Signal(Signal, RpcReplyPort<Result<(), String>>),
    /// Stops (SIGSTOP) or continues (SIGCONT) the process group.
    Pause(bool, RpcReplyPort<Result<(), String>>),
    /// From a restarted executor: send it this execution's record and
    /// live output ([`ExecutorMsg::JobReattached`]).
    Reattach(ActorRef<ExecutorMsg>),
    /// The agent exits leaving its work running: if the command runs under
    /// a keeper and is not being stopped, stop this actor without ending
    /// the execution (the next agent adopts it) and answer true; else
    /// answer false.
    Leave(RpcReplyPort<bool>),
    /// Sent by the actor to itself (opaque: it cannot be built outside).
    Internal(InternalMsg),
}

// Local only: never sent to another node (the `cluster` feature of
// ractor asks every message type to say so).
impl ractor::Message for JobMsg {}

/// A message the job actor sends to itself.
pub struct InternalMsg(Internal);

enum Internal {
    /// Run the next step.
    Next,
    /// A container this actor waits on exited.
    Exited(ContainerId, Result<ExitStatus, String>),
    /// The in-process task returned.
    TaskDone(Result<(), String>),
    /// The run's deadline passed.
    Deadline,
    /// A cancelled task did not stop within its grace.
    AbortTask,
}

/// What every job actor of a node shares.
#[derive(Clone)]
pub struct JobServices {
    /// Where containers run.
    pub runtime: Arc<dyn Runtime>,
    /// Where overlay warnings go.
    pub events: crate::events::EventBus,
    /// Network segments.
    pub overlay: Overlay,
    /// Told when a container is removed.
    pub tokens: Arc<dyn TokenSink>,
    /// Durable records and logs (`None`: in memory only).
    pub store: Option<Store>,
    /// Longest a completion sink may run.
    pub notify_timeout: Duration,
}

/// What a job actor starts with.
pub struct JobArgs {
    /// The execution's record (id, job, trigger, masked env).
    pub meta: ExecutionMeta,
    /// The job as registered when triggered.
    pub spec: Arc<JobSpec>,
    /// The environment with real values (env files applied).
    pub env: BTreeMap<String, String>,
    /// What to run.
    pub work: Work,
    /// Shared services.
    pub services: JobServices,
    /// Where to report transitions (the current executor, across its
    /// restarts).
    pub executor: Part<ExecutorMsg>,
    /// Set by the executor when a cancel is asked, even before this actor
    /// exists: checked before every step.
    pub cancelled: watch::Receiver<bool>,
    /// An execution a previous agent left running under a keeper, adopted:
    /// the actor continues at the wait.
    pub resumed: Option<Resumed>,
}

/// Why the run is being stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stopping {
    Cancel,
    Deadline,
}

/// Where the steps are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    Init(usize),
    Start,
    Running,
}

/// The state of one execution.
pub struct Execution {
    meta: ExecutionMeta,
    spec: Arc<JobSpec>,
    env: BTreeMap<String, String>,
    work: Option<TaskFn>,
    is_task: bool,
    services: JobServices,
    executor: Part<ExecutorMsg>,
    cancelled: watch::Receiver<bool>,
    myself: ActorRef<JobMsg>,
    status: ExecutionStatus,
    phase: Phase,
    files: Option<ExecutionFiles>,
    output: ExecutionOutput,
    main: Option<ContainerId>,
    main_started: bool,
    init: Option<ContainerId>,
    segment: Option<SegmentKey>,
    netns: Option<std::path::PathBuf>,
    attached: Option<ContainerId>,
    stopping: Option<Stopping>,
    grace: Duration,
    started: Option<Instant>,
    deadline: Option<JoinHandle<()>>,
    task: Option<JoinHandle<()>>,
    task_cancel: watch::Sender<bool>,
    finished: bool,
    /// The main command runs under a keeper (`kept.json` written).
    kept: bool,
    /// Left running for the next agent ([`JobMsg::Leave`]): nothing more
    /// is done or recorded here.
    left: bool,
}

/// The job actor.
pub struct JobActor;

impl Actor for JobActor {
    type Msg = JobMsg;
    type State = Execution;
    type Arguments = JobArgs;

    /// Never fails: the first step runs from `post_start`.
    async fn pre_start(
        &self,
        myself: ActorRef<JobMsg>,
        args: JobArgs,
    ) -> Result<Execution, ActorProcessingErr> {
        let JobArgs {
            meta,
            spec,
            env,
            work,
            services,
            executor,
            cancelled,
            resumed,
        } = args;
        let (is_task, work) = match work {
            Work::Command => (false, None),
            Work::Task(f) => (true, Some(f)),
        };
        let output = ExecutionOutput::in_memory(spec.max_log_size.as_u64());
        let mut execution = Execution {
            status: ExecutionStatus::pending(meta.created_at),
            grace: spec.stop_timeout,
            meta,
            spec,
            env,
            work,
            is_task,
            services,
            executor,
            cancelled,
            myself,
            phase: Phase::Setup,
            files: None,
            output,
            main: None,
            main_started: false,
            init: None,
            segment: None,
            netns: None,
            attached: None,
            stopping: None,
            started: None,
            deadline: None,
            task: None,
            task_cancel: watch::Sender::new(false),
            finished: false,
            kept: false,
            left: false,
        };
        if let Some(r) = resumed {
            execution.resumed(r);
        }
        Ok(execution)
    }

    /// Tells the executor where to reach this execution, then starts the steps.
    async fn post_start(
        &self,
        myself: ActorRef<JobMsg>,
        state: &mut Execution,
    ) -> Result<(), ActorProcessingErr> {
        let _ = state.executor.cast(ExecutorMsg::JobAttached {
            id: state.meta.id,
            actor: myself.clone(),
        });
        if state.phase == Phase::Running {
            // Adopted: it runs already.
            state.report();
            state.arm_deadline();
            if let Some(id) = state.main.clone() {
                state.watch(id);
            }
            return Ok(());
        }
        let _ = myself.cast(JobMsg::Internal(InternalMsg(Internal::Next)));
        Ok(())
    }

    /// Every outcome, failures included, becomes a state; never returns an error.
    async fn handle(
        &self,
        myself: ActorRef<JobMsg>,
        msg: JobMsg,
        state: &mut Execution,
    ) -> Result<(), ActorProcessingErr> {
        if let JobMsg::Reattach(executor) = msg {
            let _ = executor.cast(ExecutorMsg::JobReattached {
                record: Box::new(ExecutionRecord {
                    meta: state.meta.clone(),
                    status: state.status.clone(),
                }),
                output: (!state.finished).then(|| state.output.clone()),
                actor: myself,
            });
            return Ok(());
        }
        if let JobMsg::Leave(reply) = msg {
            // One being cancelled or past its deadline ends here: the next
            // agent would not know why it stopped.
            let leave = !state.finished
                && state.kept
                && state.phase == Phase::Running
                && state.stopping.is_none();
            if leave {
                state.left = true;
                if let Some(t) = state.deadline.take() {
                    t.abort();
                }
                myself.stop(Some("left running for the next agent".into()));
            }
            let _ = reply.send(leave);
            return Ok(());
        }
        if state.left {
            return Ok(());
        }
        if state.finished {
            match msg {
                JobMsg::Signal(_, reply) | JobMsg::Pause(_, reply) => {
                    let _ = reply.send(Err(format!("execution is {}", state.status.state)));
                }
                _ => {}
            }
            return Ok(());
        }
        match msg {
            // Answered above, finished or not.
            JobMsg::Reattach(_) | JobMsg::Leave(_) => {}
            JobMsg::Internal(InternalMsg(Internal::Next)) => {
                tracing::debug!(phase = ?state.phase, "next");
                state.next().await
            }
            JobMsg::Cancel { grace } => {
                if let Some(g) = grace {
                    state.grace = g;
                }
                state.stop(Stopping::Cancel).await;
            }
            JobMsg::Internal(InternalMsg(Internal::Deadline)) => {
                state.stop(Stopping::Deadline).await
            }
            JobMsg::Internal(InternalMsg(Internal::Exited(id, status))) => {
                state.exited(id, status).await
            }
            JobMsg::Internal(InternalMsg(Internal::TaskDone(result))) => {
                state.task_done(result).await
            }
            JobMsg::Internal(InternalMsg(Internal::AbortTask)) => {
                if let Some(t) = state.task.take() {
                    t.abort();
                }
                state.task_done(Err("aborted".into())).await;
            }
            JobMsg::Signal(signal, reply) => {
                let _ = reply.send(state.signal(signal).await);
            }
            JobMsg::Pause(pause, reply) => {
                let signal = if pause {
                    Signal::SIGSTOP
                } else {
                    Signal::SIGCONT
                };
                let result = state.signal(signal).await;
                if result.is_ok() && state.status.paused != pause {
                    state.status.paused = pause;
                    state.publish().await;
                }
                let _ = reply.send(result);
            }
        }
        if state.finished {
            myself.stop(None);
        }
        Ok(())
    }

    /// Stopped by its supervisor before the end (node shutdown): stops what
    /// runs with the job's grace and finishes as `Cancelled`.
    async fn post_stop(
        &self,
        _: ActorRef<JobMsg>,
        state: &mut Execution,
    ) -> Result<(), ActorProcessingErr> {
        if !state.finished && !state.left {
            state.stopping = Some(Stopping::Cancel);
            let _ = state.task_cancel.send(true);
            if let Some(t) = state.task.take() {
                t.abort();
            }
            let rt = state.services.runtime.clone();
            for id in [state.init.clone(), state.main.clone()]
                .into_iter()
                .flatten()
            {
                let _ = rt.stop(&id, state.grace).await;
            }
            state.finish(JobState::Cancelled).await;
        }
        Ok(())
    }
}

impl Execution {
    /// Runs the step the phase is at.
    async fn next(&mut self) {
        if *self.cancelled.borrow() && self.stopping.is_none() {
            return self.stop(Stopping::Cancel).await;
        }
        match self.phase {
            Phase::Setup => self.setup().await,
            Phase::Init(i) => self.run_init(i).await,
            Phase::Start => self.start_main().await,
            Phase::Running => {}
        }
    }

    /// Records, output, then (for commands) pull, create, segment, attach.
    async fn setup(&mut self) {
        // The records start out Initializing: one synced write fewer.
        self.status.state = JobState::Initializing;
        self.status.updated_at = Utc::now();
        if let Some(store) = &self.services.store {
            let (store, meta, status) = (store.clone(), self.meta.clone(), self.status.clone());
            let max = self.spec.max_log_size.as_u64();
            let made = tokio::task::spawn_blocking(move || {
                let files = store.create(&meta, &status)?;
                let output = files.output(max)?;
                Ok::<_, crate::store::StoreError>((files, output))
            })
            .await;
            match made {
                Ok(Ok((files, output))) => {
                    self.files = Some(files);
                    self.output = output;
                }
                Ok(Err(e)) => {
                    return self
                        .fail(FailReason::ContainerCreate {
                            message: format!("failed to create the execution's records: {e}"),
                        })
                        .await;
                }
                Err(e) => {
                    return self
                        .fail(FailReason::ContainerCreate {
                            message: format!("failed to create the execution's records: {e}"),
                        })
                        .await;
                }
            }
        }
        if self.files.is_some() {
            self.report();
        } else {
            self.set(JobState::Initializing).await;
        }
        if self.is_task {
            return self.start_task().await;
        }
        let rt = self.services.runtime.clone();
        let mut spec = self.container_spec(self.container_name(None), self.spec.command.clone());
        // The main command outlives the agent where the runtime can keep
        // it; not with a network (the overlay's attachments are the
        // agent's).
        spec.live_restore = self.spec.network.is_none();
        spec.stop_grace = Some(self.spec.stop_timeout);
        if let Err(e) = rt.pull_image(&spec).await {
            // For a host command, "pull" is finding its program: a missing
            // one is a failed start, not an image problem.
            let reason = match self.spec.image {
                Some(_) => FailReason::ImagePull {
                    message: e.to_string(),
                },
                None => FailReason::Start {
                    message: e.cause.to_string(),
                },
            };
            return self.fail(reason).await;
        }
        // A job that asks for networking runs in a namespace the overlay
        // prepares now: the container is created in it.
        let network = self.spec.network.clone();
        if let Some(net) = &network {
            match self.services.overlay.prepare().await {
                Ok(path) => {
                    self.netns = path.clone();
                    spec.netns = path;
                    spec.dns_search = net.dns_search.clone();
                }
                Err(e) => {
                    if let Err(()) = self.overlay_failed(e.to_string()).await {
                        return;
                    }
                }
            }
        }
        let spec = spec.output(Output::new(self.redacting(self.output.clone())));
        match rt.create(&spec).await {
            Ok(id) => self.main = Some(id),
            Err(e) => {
                return self
                    .fail(FailReason::ContainerCreate {
                        message: e.to_string(),
                    })
                    .await;
            }
        }
        let key = self.spec.segment_key();
        let networked = self.netns.is_some();
        if let Err(e) = self.services.overlay.acquire_for(&key, networked).await {
            if let Err(()) = self.overlay_failed(e.to_string()).await {
                return;
            }
            return self.without_overlay(spec).await;
        }
        self.segment = Some(key.clone());
        let main = self.main.clone().expect("created above");
        let request = AttachRequest {
            container: main.clone(),
            segment: key,
            netns: self.netns.clone(),
            dns_search: spec.dns_search.clone(),
        };
        match self.services.overlay.attach_with(request).await {
            Ok(_) => self.attached = Some(main),
            Err(e) => {
                if let Err(()) = self.overlay_failed(e.to_string()).await {
                    return;
                }
                if let Some(segment) = self.segment.take()
                    && let Err(e) = self.services.overlay.release(&segment).await
                {
                    self.overlay_warning(e.to_string());
                }
                return self.without_overlay(spec).await;
            }
        }
        self.advance(Phase::Init(0));
    }

    /// Best effort after an overlay failure: a container created in a
    /// namespace that got no network is created again on the node's
    /// network (the namespace goes), so the run goes on as it would on a
    /// node without networking.
    async fn without_overlay(&mut self, mut spec: ContainerSpec) {
        if let Some(path) = self.netns.take() {
            let rt = self.services.runtime.clone();
            if let Some(id) = self.main.take() {
                if let Err(e) = rt.remove(&id).await {
                    tracing::warn!(container = %id, error = %e, "failed to remove a job container");
                }
                self.services.tokens.revoke(self.meta.id, &id);
            }
            if let Err(e) = self.services.overlay.discard(&path).await {
                self.overlay_warning(e.to_string());
            }
            spec.netns = None;
            spec.dns_search.clear();
            match rt.create(&spec).await {
                Ok(id) => self.main = Some(id),
                Err(e) => {
                    return self
                        .fail(FailReason::ContainerCreate {
                            message: e.to_string(),
                        })
                        .await;
                }
            }
        }
        self.advance(Phase::Init(0));
    }

    /// An overlay step failed: with `network.required` the execution fails
    /// (`Err`); otherwise it goes on without the overlay, with a warning
    /// event (`Ok`).
    async fn overlay_failed(&mut self, message: String) -> Result<(), ()> {
        let required = self.spec.network.as_ref().is_some_and(|n| n.required);
        if required {
            self.fail(FailReason::OverlayAttach { message }).await;
            return Err(());
        }
        self.overlay_warning(format!("{message}; running without the overlay"));
        Ok(())
    }

    /// Publishes an `overlay_warning` event for this execution.
    pub(crate) fn overlay_warning(&self, message: String) {
        tracing::warn!(execution = %self.meta.id, job = %self.spec.name, %message, "overlay");
        self.services
            .events
            .publish(crate::events::Event::OverlayWarning {
                id: self.meta.id.to_string(),
                job: self.spec.name.clone(),
                message,
            });
    }

    /// Starts init step `i` (or the main command after the last one).
    async fn run_init(&mut self, i: usize) {
        let Some(step) = self.spec.init.get(i) else {
            return self.advance(Phase::Start);
        };
        let rt = self.services.runtime.clone();
        let spec = self
            .container_spec(self.container_name(Some(i + 1)), step.command.clone())
            .output(Output::new(self.redacting(Unclosed(self.output.clone()))));
        let fail = |message: String| FailReason::InitStep {
            step: i + 1,
            message,
        };
        if let Err(e) = rt.pull_image(&spec).await {
            return self.fail(fail(e.to_string())).await;
        }
        let id = match rt.create(&spec).await {
            Ok(id) => id,
            Err(e) => return self.fail(fail(e.to_string())).await,
        };
        self.init = Some(id.clone());
        if let Err(e) = rt.start(&id).await {
            return self.fail(fail(e.to_string())).await;
        }
        self.watch(id);
    }

    /// Starts the main command and arms the deadline.
    async fn start_main(&mut self) {
        let Some(id) = self.main.clone() else {
            return;
        };
        let rt = self.services.runtime.clone();
        if let Err(e) = rt.start(&id).await {
            return self
                .fail(FailReason::Start {
                    message: e.to_string(),
                })
                .await;
        }
        self.main_started = true;
        self.started = Some(Instant::now());
        self.status.started_at = Some(Utc::now());
        if let Ok(Some(pid)) = rt.pid(&id).await {
            self.status.pid = Some(pid);
            self.status.pid_start_ticks = procfs::stat(pid as i32).map(|s| s.start);
        }
        if let Some(files) = self.files.clone()
            && rt.is_kept(&id).await
        {
            // Before the record says running: a running record with a
            // kept.json is what the next agent adopts.
            let job = crate::store::KeptJob {
                spec: (*self.spec).clone(),
                env: self.env.clone(),
            };
            match tokio::task::spawn_blocking(move || files.write_kept(&job)).await {
                Ok(Ok(())) => self.kept = true,
                Ok(Err(e)) => {
                    tracing::warn!(execution = %self.meta.id, error = %e, "failed to write kept.json: the next agent cannot adopt this execution")
                }
                Err(e) => {
                    tracing::warn!(execution = %self.meta.id, error = %e, "failed to write kept.json: the next agent cannot adopt this execution")
                }
            }
        }
        self.phase = Phase::Running;
        self.arm_deadline();
        self.set(JobState::Running).await;
        self.watch(id);
    }

    /// Runs the in-process task.
    async fn start_task(&mut self) {
        let Some(work) = self.work.take() else {
            return;
        };
        let ctx = TaskContext {
            id: self.meta.id,
            output: self.output.clone(),
            cancelled: self.task_cancel.subscribe(),
        };
        let me = self.myself.clone();
        let fut = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(ctx)));
        let fut = match fut {
            Ok(f) => f,
            Err(p) => {
                return self
                    .fail(FailReason::Task {
                        message: crate::panics::message(&*p),
                    })
                    .await;
            }
        };
        self.main_started = true;
        self.started = Some(Instant::now());
        self.status.started_at = Some(Utc::now());
        self.phase = Phase::Running;
        let inner = tokio::spawn(fut);
        self.task = Some(tokio::spawn(async move {
            let result = match inner.await {
                Ok(r) => r,
                Err(e) if e.is_panic() => Err(format!(
                    "panicked: {}",
                    crate::panics::message(&*e.into_panic())
                )),
                Err(_) => Err("aborted".into()),
            };
            let _ = me.cast(JobMsg::Internal(InternalMsg(Internal::TaskDone(result))));
        }));
        self.arm_deadline();
        self.set(JobState::Running).await;
    }

    /// A watched container exited.
    async fn exited(&mut self, id: ContainerId, status: Result<ExitStatus, String>) {
        if self.init.as_ref() == Some(&id) {
            self.init = None;
            let rt = self.services.runtime.clone();
            if status.is_err() {
                // Waiting failed, so the step may still run: a running
                // container cannot be removed, and would be leaked.
                let _ = rt.stop(&id, Duration::ZERO).await;
            }
            if let Err(e) = rt.remove(&id).await {
                // Kill and remove it in the background rather than leak it.
                tracing::warn!(container = %id, error = %e, "failed to remove an init container; abandoning it");
                rt.abandon(&id);
            }
            let Phase::Init(i) = self.phase else { return };
            if self.stopping.is_some() {
                return self.finish_stopped(None).await;
            }
            return match status {
                Ok(ExitStatus::Code(0)) => self.advance(Phase::Init(i + 1)),
                Ok(other) => {
                    self.fail(FailReason::InitStep {
                        step: i + 1,
                        message: other.to_string(),
                    })
                    .await
                }
                Err(message) => {
                    self.fail(FailReason::InitStep {
                        step: i + 1,
                        message,
                    })
                    .await
                }
            };
        }
        if self.main.as_ref() != Some(&id) {
            return;
        }
        let status = match status {
            Ok(s) => s,
            Err(message) => {
                // The command may still run: make sure it does not.
                let _ = self.services.runtime.stop(&id, Duration::ZERO).await;
                return self.fail(FailReason::Wait { message }).await;
            }
        };
        self.status.signal = status.signal();
        if self.stopping.is_some() {
            return self.finish_stopped(status.code()).await;
        }
        let oom = !status.success() && self.services.runtime.oom_killed(&id).await.unwrap_or(false);
        let state = match status {
            _ if oom => JobState::Failed {
                reason: FailReason::OutOfMemory {
                    limit: self.spec.resources.memory.map(|m| m.to_string()),
                },
                exit_code: status.code(),
            },
            ExitStatus::Code(0) => JobState::Completed {
                exit_code: 0,
                duration: self.elapsed(),
            },
            ExitStatus::Code(code) => JobState::Failed {
                reason: FailReason::NonZeroExit { code },
                exit_code: Some(code),
            },
            ExitStatus::Signal(signal) => JobState::Failed {
                reason: FailReason::KilledBySignal { signal },
                exit_code: None,
            },
        };
        self.finish(state).await;
    }

    async fn task_done(&mut self, result: Result<(), String>) {
        self.task = None;
        self.output.close(LogStream::Stdout);
        self.output.close(LogStream::Stderr);
        if self.stopping.is_some() {
            return self.finish_stopped(None).await;
        }
        let state = match result {
            Ok(()) => JobState::Completed {
                exit_code: 0,
                duration: self.elapsed(),
            },
            Err(message) => JobState::Failed {
                reason: FailReason::Task { message },
                exit_code: None,
            },
        };
        self.finish(state).await;
    }

    /// Cancel or deadline: stop whatever runs; finish now if nothing does.
    async fn stop(&mut self, why: Stopping) {
        if self.stopping.is_some() {
            return;
        }
        self.stopping = Some(why);
        if self.is_task {
            if self.task.is_some() {
                let _ = self.task_cancel.send(true);
                let me = self.myself.clone();
                let grace = self.grace;
                tokio::spawn(async move {
                    tokio::time::sleep(grace).await;
                    let _ = me.cast(JobMsg::Internal(InternalMsg(Internal::AbortTask)));
                });
                return;
            }
            return self.finish_stopped(None).await;
        }
        let running = match self.phase {
            Phase::Running => self.main.clone(),
            Phase::Init(_) => self.init.clone(),
            _ => None,
        };
        match running {
            Some(id) => {
                let rt = self.services.runtime.clone();
                let grace = self.grace;
                tokio::spawn(stop_or_abandon(rt, id, grace));
            }
            None => self.finish_stopped(None).await,
        }
    }

    /// The end of a cancelled or timed-out run.
    async fn finish_stopped(&mut self, exit_code: Option<i32>) {
        let state = match self.stopping {
            Some(Stopping::Deadline) => JobState::Failed {
                reason: FailReason::DeadlineExceeded {
                    deadline: self.spec.deadline.unwrap_or_default(),
                },
                exit_code,
            },
            _ => JobState::Cancelled,
        };
        self.finish(state).await;
    }

    async fn signal(&mut self, signal: Signal) -> Result<(), String> {
        if self.is_task {
            return Err("an in-process job cannot be signalled".into());
        }
        let id = match self.phase {
            Phase::Running => self.main.clone(),
            Phase::Init(_) => self.init.clone(),
            _ => None,
        }
        .ok_or_else(|| format!("execution is {}: nothing runs yet", self.status.state))?;
        self.services
            .runtime
            .signal(&id, signal)
            .await
            .map_err(|e| e.to_string())
    }

    async fn fail(&mut self, reason: FailReason) {
        self.finish(JobState::Failed {
            reason,
            exit_code: None,
        })
        .await;
    }

    /// Moves to `state`, reports it and writes it down.
    async fn set(&mut self, state: JobState) {
        self.status.state = state;
        self.publish().await;
    }

    /// Reports the status to the executor and writes `state.json`.
    async fn publish(&mut self) {
        self.status.updated_at = Utc::now();
        // A terminal state is reported once it is on disk: what the API
        // calls finished is what the next agent reads back.
        let terminal = self.status.state.is_terminal();
        if !terminal {
            self.report();
        }
        if let Some(files) = self.files.clone() {
            let status = self.status.clone();
            match tokio::task::spawn_blocking(move || files.write_state(&status)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::warn!(execution = %self.meta.id, error = %e, "failed to write state.json")
                }
                Err(e) => {
                    tracing::warn!(execution = %self.meta.id, error = %e, "failed to write state.json")
                }
            }
        }
        if terminal {
            self.report();
        }
    }

    /// Tells the executor the current status (and where the live output is).
    fn report(&self) {
        let _ = self.executor.cast(ExecutorMsg::JobUpdate {
            id: self.meta.id,
            status: self.status.clone(),
            output: Some(self.output.clone()),
        });
    }

    /// `sink` with the values of the job's `mask` variables replaced by
    /// `***`: they never reach the logs or the live tail.
    fn redacting<S: crate::runtime::OutputSink>(&self, sink: S) -> crate::store::Redacting<S> {
        let secrets = self
            .spec
            .mask
            .iter()
            .filter_map(|name| self.env.get(name).cloned());
        crate::store::Redacting::new(sink, secrets)
    }

    fn advance(&mut self, phase: Phase) {
        self.phase = phase;
        let _ = self
            .myself
            .cast(JobMsg::Internal(InternalMsg(Internal::Next)));
    }

    /// Waits for `id` to exit in a task that reports back.
    fn watch(&self, id: ContainerId) {
        let rt = self.services.runtime.clone();
        let me = self.myself.clone();
        tokio::spawn(async move {
            let status = rt.wait(&id).await.map_err(|e| e.to_string());
            let _ = me.cast(JobMsg::Internal(InternalMsg(Internal::Exited(id, status))));
        });
    }

    fn arm_deadline(&mut self) {
        if let Some(d) = self.spec.deadline {
            let me = self.myself.clone();
            // What is left of it (an adopted execution ran already).
            let d = d.saturating_sub(self.started.map(|s| s.elapsed()).unwrap_or_default());
            self.deadline = Some(tokio::spawn(async move {
                tokio::time::sleep(d).await;
                let _ = me.cast(JobMsg::Internal(InternalMsg(Internal::Deadline)));
            }));
        }
    }

    /// Run time in whole milliseconds (records show `2s 10ms`, not nanoseconds).
    fn elapsed(&self) -> Duration {
        let d = self.started.map(|s| s.elapsed()).unwrap_or_default();
        Duration::from_millis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    /// Containers are named after the job (`backup`, `backup-init-1`); the
    /// runtime's ids tell executions apart, the `execution` label says which.
    fn container_name(&self, init: Option<usize>) -> String {
        match init {
            Some(n) => format!("{}-init-{n}", self.spec.name),
            None => self.spec.name.clone(),
        }
    }

    fn container_spec(&self, name: String, command: Vec<String>) -> ContainerSpec {
        container_spec(&self.spec, &self.env, self.meta.id, name, command)
    }
}

/// The container of one of `job`'s commands for execution `id`.
fn container_spec(
    job: &JobSpec,
    env: &BTreeMap<String, String>,
    id: crate::execution::ExecutionId,
    name: String,
    command: Vec<String>,
) -> ContainerSpec {
    let mut spec = ContainerSpec::command(name, command);
    spec.image = job.image.clone();
    spec.env = env.clone();
    spec.inherit_env = job.inherit_env;
    spec.cwd = job.cwd.clone();
    spec.pull_policy = job.pull_policy;
    spec.runtime = job.runtime;
    spec.resources = job.resources;
    spec.user = job.user.clone();
    spec.hostname = job.hostname.clone();
    spec.mounts = job.mounts.clone();
    spec.labels = job.labels.clone();
    spec.labels.insert("job".into(), job.name.clone());
    spec.labels.insert("execution".into(), id.to_string());
    spec
}

/// Stops a job container; a failed stop is retried at once without grace
/// (1 s, 2 s, 4 s apart), and a container that cannot be stopped is
/// abandoned (killed now, removed in the background). Either way its exit
/// reaches the waiter, so a failed stop never leaves the execution hanging.
async fn stop_or_abandon(rt: std::sync::Arc<dyn Runtime>, id: ContainerId, grace: Duration) {
    let Err(e) = rt.stop(&id, grace).await else {
        return;
    };
    tracing::warn!(container = %id, error = %e, "failed to stop a job container; retrying");
    for delay in [1, 2, 4] {
        tokio::time::sleep(Duration::from_secs(delay)).await;
        match rt.stop(&id, Duration::ZERO).await {
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "failed to stop a job container")
            }
        }
    }
    tracing::warn!(container = %id, "could not stop a job container; abandoning it");
    rt.abandon(&id);
}

/// Hands `args` to the first start only (job actors are temporary children:
/// never restarted).
pub(crate) fn once<T>(value: T) -> impl Fn() -> Option<T> + Send + Sync + 'static
where
    T: Send + 'static,
{
    let cell = Mutex::new(Some(value));
    move || cell.lock().unwrap_or_else(|e| e.into_inner()).take()
}
