//! What the executor does for each request: register, trigger (overlap
//! policy and limits), start, finish (retries, history, retention),
//! cancel and control, logs, listing, shutdown completion.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::events::Event;

impl ExecutorState {
    pub(super) async fn register(&mut self, spec: JobSpec) -> Result<(), ExecutorError> {
        spec.validate().map_err(ExecutorError::Invalid)?;
        let history = spec.history;
        let name = spec.name.clone();
        let had_schedule = self.specs.get(&name).is_some_and(|s| s.schedule.is_some());
        match (&spec.schedule, &self.cron) {
            (Some(expr), Some(cron)) => {
                CronSchedule::parse(expr, spec.time_zone.as_deref()).map_err(|e| {
                    ExecutorError::Invalid(SpecErrors::from(SpecError::new(
                        "schedule",
                        format!("{expr:?}"),
                        e.to_string(),
                    )))
                })?;
                if let Some(schedule) = self.schedule_of(&spec) {
                    match cron.upsert(schedule).await {
                        Ok(_) => {}
                        // Kept: a restarted cron actor gets every schedule back.
                        Err(crate::cron::CronError::Unavailable) => {
                            tracing::warn!(job = %name, "the cron actor is restarting; the schedule is applied when it is back");
                        }
                        Err(e) => {
                            return Err(ExecutorError::Invalid(SpecErrors::from(SpecError::new(
                                "schedule",
                                format!("{expr:?}"),
                                e.to_string(),
                            ))));
                        }
                    }
                }
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
        self.remember_specs();
        for id in self.table.enforce_history(&name, history) {
            self.delete_files(id);
        }
        Ok(())
    }

    /// Applies the overlap policy, then starts an execution.
    pub(super) fn trigger(
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
    pub(super) fn start(
        &mut self,
        myself: &ActorRef<ExecutorMsg>,
        spec: Arc<JobSpec>,
        trigger: JobTrigger,
        work: Work,
        attempt: u32,
        retry_of: Option<ExecutionId>,
    ) -> Result<ExecutionId, ExecutorError> {
        let jobs = self.job_supervisor()?;
        let mut env = read_env_files(&spec.env_file).map_err(|e| ExecutorError::EnvFile {
            job: spec.name.clone(),
            message: e.to_string(),
        })?;
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        let now = Utc::now();
        let id = ExecutionId::new();
        let trigger_text = trigger.to_string();
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
            executor: self.me.clone(),
            cancelled,
            resumed: None,
        });
        let child = job_child(id, args, spec.stop_timeout);
        if let Err(e) = jobs.start_child_nowait(child) {
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
        self.events
            .publish_lazy(tracing::Level::DEBUG, || Event::ExecutionStarted {
                id: id.to_string(),
                job: spec.name.clone(),
                trigger: trigger_text,
                attempt,
            });
        Ok(id)
    }

    pub(super) fn job_finished(
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
        self.events
            .publish_lazy(tracing::Level::INFO, || Event::ExecutionFinished {
                id: id.to_string(),
                job: record.meta.job.clone(),
                state: record.status.state.name().to_owned(),
                detail: record.status.state.to_string(),
                exit_code: record.status.state.exit_code(),
            });
        for w in self.waiters.remove(&id).unwrap_or_default() {
            let _ = w.send(Ok(record.clone()));
        }
        for w in self.recorded_waiters.remove(&id).unwrap_or_default() {
            let _ = w.send(());
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
            // Through the part: a restarted executor still gets the retry.
            let me = self.me.clone();
            let retry = RetryOf {
                meta: record.meta.clone(),
                spec: spec.clone(),
            };
            tokio::spawn(async move {
                tokio::time::sleep(delay).await;
                let _ = me.cast(ExecutorMsg::Internal(InternalMsg(Internal::Retry(
                    Box::new(retry),
                ))));
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
    /// The cron schedule of a job that has one.
    pub(super) fn schedule_of(&self, spec: &JobSpec) -> Option<ScheduleSpec> {
        let expr = spec.schedule.as_ref()?;
        let mut schedule = ScheduleSpec::new(&spec.name, expr);
        schedule.time_zone = spec.time_zone.clone();
        schedule.starting_deadline = spec.starting_deadline;
        schedule.jitter = spec.jitter;
        schedule.suspend = spec.suspend;
        schedule.last_run = self.last_scheduled(&spec.name);
        Some(schedule)
    }

    pub(super) fn last_scheduled(&self, job: &str) -> Option<chrono::DateTime<Utc>> {
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

    pub(super) fn pending_retries(&self) -> usize {
        self.table.jobs.values().map(|i| i.pending_retries).sum()
    }

    pub(super) fn maybe_idle(&mut self) {
        if self.table.active_count() == 0 && self.pending_retries() == 0 {
            for w in self.idle_waiters.drain(..) {
                let _ = w.send(());
            }
        }
    }

    /// Completes a shutdown once nothing is active.
    pub(super) async fn maybe_stopped(&mut self, myself: &ActorRef<ExecutorMsg>) {
        if self.shutdown.is_none() || self.table.active_count() > 0 {
            return;
        }
        if let Ok(jobs) = self.job_supervisor() {
            jobs.shutdown().await;
        }
        for w in self.shutdown.take().unwrap_or_default() {
            let _ = w.send(());
        }
        self.shutdown = Some(Vec::new());
        myself.stop(Some("shutdown".into()));
    }

    pub(super) fn cancel(
        &mut self,
        id: ExecutionId,
        grace: Option<Duration>,
    ) -> Result<(), ExecutorError> {
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
    pub(super) fn control(
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

    pub(super) fn logs(
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

    pub(super) fn list(&self, job: Option<&str>) -> Vec<ExecutionRecord> {
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

    pub(super) fn expire(&mut self) {
        for id in self.table.expire(Instant::now()) {
            self.delete_files(id);
        }
    }

    /// Keeps one timer, for the earliest retention expiry.
    pub(super) fn arm_expiry(&mut self, myself: &ActorRef<ExecutorMsg>) {
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
            let _ = me.cast(ExecutorMsg::Internal(InternalMsg(Internal::Expire)));
        });
        self.expiry_timer = Some((at, task));
    }

    pub(super) fn delete_files(&self, id: ExecutionId) {
        if let Some(store) = self.services.store.clone() {
            tokio::task::spawn_blocking(move || {
                if let Err(e) = store.remove(id) {
                    tracing::warn!(execution = %id, error = %e, "failed to delete an execution's files");
                }
            });
        }
    }
}

/// The job supervisor's temporary child for execution `id`.
pub(super) fn job_child(
    id: ExecutionId,
    args: impl Fn() -> Option<JobArgs> + Send + Sync + 'static,
    stop_timeout: Duration,
) -> ChildSpec {
    ChildSpec::new(id.to_string(), move |ctx| {
        let args = args();
        async move {
            let args = args.ok_or("a job actor is never restarted")?;
            let (actor, _) = JobActor::spawn_linked(None, JobActor, args, ctx.supervisor).await?;
            Ok(actor.get_cell())
        }
    })
    .restart(RestartType::Temporary)
    .shutdown(Shutdown::Timeout(stop_timeout + CLEANUP_MARGIN))
}
