//! A typed handle to a running cron actor.

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorRef, RpcReplyPort, concurrency::JoinHandle};

use super::{Clock, CronError, CronTarget, ScheduleInfo, ScheduleSpec};
use crate::{
    actors::cron_actor::{CronActor, CronArgs, CronMsg, CronStats},
    part::Part,
};

/// Longest a call to the cron actor waits for its answer.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A running cron actor. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CronRef {
    actor: Part<CronMsg>,
}

impl From<ActorRef<CronMsg>> for CronRef {
    fn from(actor: ActorRef<CronMsg>) -> Self {
        Self {
            actor: Part::fixed("cron actor", actor),
        }
    }
}

impl From<Part<CronMsg>> for CronRef {
    fn from(actor: Part<CronMsg>) -> Self {
        Self { actor }
    }
}

impl CronRef {
    /// Spawns a cron actor (unsupervised) firing `target`, reading `clock`.
    /// The join handle completes when it exits.
    pub async fn start(
        target: Arc<dyn CronTarget>,
        clock: Arc<dyn Clock>,
    ) -> Result<(Self, JoinHandle<()>), CronError> {
        let (actor, join) = CronActor::spawn(None, CronActor, CronArgs { target, clock })
            .await
            .map_err(|e| CronError::Spawn(e.to_string()))?;
        Ok((Self::from(actor), join))
    }

    /// Its actor (the newest one; it may have stopped).
    pub fn actor(&self) -> Option<ActorRef<CronMsg>> {
        self.actor.last()
    }

    async fn ask<R: Send + 'static>(
        &self,
        build: impl FnOnce(RpcReplyPort<R>) -> CronMsg,
    ) -> Result<R, CronError> {
        self.actor
            .call(build, Some(CALL_TIMEOUT))
            .await
            .map_err(|_| CronError::Unavailable)
    }

    /// Adds or replaces a schedule; returns its next scheduled time.
    pub async fn upsert(&self, spec: ScheduleSpec) -> Result<Option<DateTime<Utc>>, CronError> {
        self.ask(|r| CronMsg::Upsert(spec, r)).await?
    }

    /// Removes a schedule; false if there was none.
    pub async fn remove(&self, job: &str) -> Result<bool, CronError> {
        let job = job.to_owned();
        self.ask(|r| CronMsg::Remove(job, r)).await
    }

    /// Stops a schedule from firing.
    pub async fn suspend(&self, job: &str) -> Result<(), CronError> {
        let job = job.to_owned();
        self.ask(|r| CronMsg::Suspend(job, r)).await?
    }

    /// Lets a suspended schedule fire again; returns its next scheduled time.
    pub async fn resume(&self, job: &str) -> Result<Option<DateTime<Utc>>, CronError> {
        let job = job.to_owned();
        self.ask(|r| CronMsg::Resume(job, r)).await?
    }

    /// Every schedule, sorted by job.
    pub async fn list(&self) -> Result<Vec<ScheduleInfo>, CronError> {
        self.ask(CronMsg::List).await
    }

    /// One schedule.
    pub async fn get(&self, job: &str) -> Result<Option<ScheduleInfo>, CronError> {
        let job = job.to_owned();
        self.ask(|r| CronMsg::Get(job, r)).await
    }

    /// The actor's counters.
    pub async fn stats(&self) -> Result<CronStats, CronError> {
        self.ask(CronMsg::Stats).await
    }

    /// Stops the actor.
    pub fn stop(&self) {
        if let Some(actor) = self.actor.last() {
            actor.stop(None);
        }
    }
}
