//! Adopting an execution a previous agent left running under a keeper.
//!
//! The previous agent wrote `kept.json` (the job and its environment)
//! before it recorded the execution running. The next agent's executor
//! calls [`resume`] for each such record before anything else starts: the
//! logs are opened for appending, the container is adopted from its keeper
//! (its output goes to them from now on, and what it wrote while no agent
//! read waited in the pipe), and a job actor continues at the wait with
//! what is returned. Anything missing (the record, the keeper, the
//! container) is an error: the caller then recovers the execution as
//! before (`node restarted`).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use chrono::Utc;
use tokio::time::Instant;

use super::{Execution, JobServices, Phase, container_spec};
use crate::{
    execution::{ExecutionRecord, ExecutionStatus},
    runtime::{ContainerId, Output},
    spec::JobSpec,
    store::{ExecutionFiles, ExecutionOutput, Redacting},
};

/// An adopted execution, for [`super::JobArgs::resumed`] (opaque: only
/// the executor adopts executions).
pub struct Resumed {
    status: ExecutionStatus,
    files: ExecutionFiles,
    output: ExecutionOutput,
    container: ContainerId,
}

/// Adopts the running execution `record` left under a keeper: its job as
/// triggered, its environment, and where the job actor continues from.
pub(crate) async fn resume(
    services: &JobServices,
    record: &ExecutionRecord,
) -> Result<(Arc<JobSpec>, BTreeMap<String, String>, Resumed), String> {
    let store = services.store.clone().ok_or("the node keeps no records")?;
    let id = record.meta.id;
    let opened = tokio::task::spawn_blocking(move || {
        let files = store.files(id).map_err(|e| e.to_string())?;
        let kept = files.read_kept().map_err(|e| e.to_string())?;
        let output = files
            .output(kept.spec.max_log_size.as_u64())
            .map_err(|e| e.to_string())?;
        Ok::<_, String>((files, kept, output))
    })
    .await
    .map_err(|e| e.to_string())??;
    let (files, kept, output) = opened;
    let job = Arc::new(kept.spec);
    let secrets = job
        .mask
        .iter()
        .filter_map(|name| kept.env.get(name).cloned())
        .collect::<Vec<_>>();
    let mut spec = container_spec(&job, &kept.env, id, job.name.clone(), job.command.clone())
        .output(Output::new(Redacting::new(output.clone(), secrets)));
    spec.live_restore = true;
    let container = services
        .runtime
        .adopt(&spec)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("no keeper kept its command")?;
    let resumed = Resumed {
        status: record.status.clone(),
        files,
        output,
        container,
    };
    Ok((job, kept.env, resumed))
}

impl Resumed {
    /// The adopted container.
    pub(crate) fn container(&self) -> &ContainerId {
        &self.container
    }
}

impl Execution {
    /// Continues from an adopted execution: running, at the wait.
    pub(super) fn resumed(&mut self, r: Resumed) {
        let ran = r
            .status
            .started_at
            .and_then(|at| (Utc::now() - at).to_std().ok())
            .unwrap_or(Duration::ZERO);
        self.started = Some(Instant::now().checked_sub(ran).unwrap_or_else(Instant::now));
        self.status = r.status;
        self.files = Some(r.files);
        self.output = r.output;
        self.main = Some(r.container);
        self.main_started = true;
        self.kept = true;
        self.phase = Phase::Running;
    }
}
