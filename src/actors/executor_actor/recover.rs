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
