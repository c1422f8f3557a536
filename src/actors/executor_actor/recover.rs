//! What a restarted executor does to pick up where the last one was: find
//! the job actors still running under the job supervisor (a sibling in the
//! node's tree, so it outlived the executor), hear their records, and put
//! the schedules back into the cron actor.

#[allow(clippy::wildcard_imports)]
use super::*;
use crate::part::RESTART_PATIENCE;

impl ExecutorState {
    /// The job supervisor while it runs.
    pub(super) fn job_supervisor(&self) -> Result<SupervisorRef, ExecutorError> {
        let actor = self
            .jobs
            .current()
            .ok_or_else(|| ExecutorError::Restarting("job supervisor".into()))?;
        Ok(SupervisorRef::from_cell(
            actor.get_cell(),
            "jobs",
            self.events.clone(),
        ))
    }

    /// Publishes the registered jobs for the next executor, should this
    /// one fail.
    pub(super) fn remember_specs(&self) {
        self.memory.specs.send_replace(Arc::new(self.specs.clone()));
    }

    /// Asks every job actor under the job supervisor to report in
    /// ([`ExecutorMsg::JobReattached`]); an execution recorded active
    /// whose job actor is gone is recovered as failed (`node restarted`)
    /// and its leftover process killed.
    pub(super) async fn reattach(&mut self, myself: &ActorRef<ExecutorMsg>) {
        let children = match self.jobs.resolve(RESTART_PATIENCE).await {
            Ok(actor) => SupervisorRef::from_cell(actor.get_cell(), "jobs", self.events.clone())
                .which_children()
                .await
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let mut live = std::collections::HashSet::new();
        for child in children {
            live.insert(child.id.clone());
            if let Some(cell) = child.actor {
                let actor: ActorRef<JobMsg> = cell.into();
                let _ = actor.cast(JobMsg::Reattach(myself.clone()));
            }
        }
        let lost: Vec<ExecutionId> = self
            .table
            .execs
            .iter()
            .filter(|(id, e)| e.record.status.state.is_active() && !live.contains(&id.to_string()))
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            let status = match self.services.store.clone() {
                Some(store) => {
                    match tokio::task::spawn_blocking(move || store.recover_execution(id)).await {
                        Ok(Ok(record)) => record.status,
                        _ => continue,
                    }
                }
                None => continue,
            };
            self.job_finished(myself, id, status);
        }
        tracing::info!(
            registered = self.specs.len(),
            running = live.len(),
            "executor restarted: reattaching running executions"
        );
        self.resync_schedules().await;
    }

    /// Puts the schedule of every registered job into the cron actor (a
    /// restarted cron actor starts empty; upserting is idempotent).
    pub(super) async fn resync_schedules(&mut self) {
        let Some(cron) = self.cron.clone() else {
            return;
        };
        let scheduled: Vec<Arc<JobSpec>> = self
            .specs
            .values()
            .filter(|s| s.schedule.is_some())
            .cloned()
            .collect();
        for spec in scheduled {
            let Some(schedule) = self.schedule_of(&spec) else {
                continue;
            };
            if let Err(e) = cron.upsert(schedule).await {
                tracing::warn!(job = %spec.name, error = %e, "failed to restore a schedule");
            }
        }
    }

    /// A job actor reporting in to a restarted executor.
    pub(super) fn reattached(
        &mut self,
        myself: &ActorRef<ExecutorMsg>,
        record: ExecutionRecord,
        output: Option<ExecutionOutput>,
        actor: ActorRef<JobMsg>,
    ) {
        let id = record.meta.id;
        let status = record.status.clone();
        if !self.table.execs.contains_key(&id) {
            let mut pending = record;
            pending.status.state = JobState::Running;
            self.table.insert(pending);
        }
        if let Some(exec) = self.table.execs.get_mut(&id)
            && status.state.is_active()
        {
            exec.record.status = status.clone();
            exec.actor = Some(actor);
            exec.output = output;
            return;
        }
        self.job_finished(myself, id, status);
    }
}

impl ExecutorState {
    /// Adopts the running execution `record` whose command a keeper kept
    /// (see [`crate::actors::job_actor::resume`]); its job actor starts
    /// with [`ExecutorState::start_adopted`]. If it cannot be adopted, it
    /// is recovered as before and its failed status returned.
    pub(super) async fn adopt(
        &mut self,
        record: &ExecutionRecord,
    ) -> Result<Adopted, ExecutionStatus> {
        let id = record.meta.id;
        match crate::actors::job_actor::resume(&self.services, record).await {
            Ok((spec, env, resumed)) => {
                tracing::info!(execution = %id, job = %record.meta.job, container = %resumed.container(), "adopted an execution the previous agent left running");
                let cancelled = self.table.insert(record.clone());
                Ok(Adopted {
                    meta: record.meta.clone(),
                    spec,
                    env,
                    resumed,
                    cancelled,
                })
            }
            Err(e) => {
                tracing::warn!(execution = %id, error = %e, "could not adopt an execution the previous agent left running");
                let recovered = match self.services.store.clone() {
                    Some(store) => tokio::task::spawn_blocking(move || store.recover_execution(id))
                        .await
                        .ok()
                        .and_then(Result::ok),
                    None => None,
                };
                Err(match recovered {
                    Some(r) => r.status,
                    None => {
                        let mut status = record.status.clone();
                        status.state = JobState::Failed {
                            reason: FailReason::NodeRestarted,
                            exit_code: None,
                        };
                        status.finished_at = Some(Utc::now());
                        status
                    }
                })
            }
        }
    }

    /// Starts a job actor for each execution adopted at start, under the
    /// job supervisor (which starts after the executor).
    pub(super) async fn start_adopted(&mut self, myself: &ActorRef<ExecutorMsg>) {
        let jobs = match self.jobs.resolve(RESTART_PATIENCE).await {
            Ok(actor) => Ok(SupervisorRef::from_cell(
                actor.get_cell(),
                "jobs",
                self.events.clone(),
            )),
            Err(e) => Err(e.to_string()),
        };
        for a in std::mem::take(&mut self.adopted) {
            let id = a.meta.id;
            let container = a.resumed.container().clone();
            let stop_timeout = a.spec.stop_timeout;
            let args = once(JobArgs {
                meta: a.meta,
                spec: a.spec,
                env: a.env,
                work: Work::Command,
                services: self.services.clone(),
                executor: self.me.clone(),
                cancelled: a.cancelled,
                resumed: Some(a.resumed),
            });
            let started = match &jobs {
                Ok(jobs) => jobs
                    .start_child_nowait(operations::job_child(id, args, stop_timeout))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e.clone()),
            };
            if let Err(message) = started {
                // Nothing watches it: stop it rather than leave it.
                let rt = self.services.runtime.clone();
                tokio::spawn(async move {
                    let _ = rt.stop(&container, stop_timeout).await;
                    let _ = rt.remove(&container).await;
                });
                let mut status = self
                    .table
                    .execs
                    .get(&id)
                    .map(|e| e.record.status.clone())
                    .unwrap_or_else(|| ExecutionStatus::pending(Utc::now()));
                status.state = JobState::Failed {
                    reason: FailReason::Start { message },
                    exit_code: None,
                };
                status.finished_at = Some(Utc::now());
                self.job_finished(myself, id, status);
            }
        }
    }

    /// Asks every running execution's job actor to leave its kept command
    /// to the next agent; those that do are no longer counted active here.
    pub(super) async fn leave(&mut self) -> usize {
        let actors: Vec<(ExecutionId, ActorRef<JobMsg>)> = self
            .table
            .execs
            .iter()
            .filter(|(_, e)| e.record.status.state.is_active())
            .filter_map(|(id, e)| e.actor.clone().map(|a| (*id, a)))
            .collect();
        let asks = actors.into_iter().map(|(id, actor)| async move {
            let answer = actor
                .call(JobMsg::Leave, Some(Duration::from_secs(2)))
                .await;
            (
                id,
                matches!(answer, Ok(ractor::rpc::CallResult::Success(true))),
            )
        });
        let mut left = 0;
        for (id, leaves) in futures::future::join_all(asks).await {
            if leaves {
                self.table.left(id);
                left += 1;
            }
        }
        if left > 0 {
            tracing::info!(
                executions = left,
                "left running executions to the next agent"
            );
        }
        left
    }
}
