//! PLACEHOLDER until the store branch lands: the API the job actor and the
//! executor are written against.
#![allow(missing_docs, dead_code, unused_variables)]

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    execution::{ExecutionId, ExecutionMeta, ExecutionRecord, ExecutionStatus, JobState, JobTrigger},
    runtime::{LogStream, OutputSink},
    spec::NotifySpec,
};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("failed to {0}")]
    Io(String),
}

#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

#[derive(Debug, Default)]
pub struct Loaded {
    pub records: Vec<ExecutionRecord>,
    pub skipped: Vec<(PathBuf, String)>,
}

impl Store {
    pub fn open(dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        Ok(Store { root: dir.into() })
    }
    pub fn create(&self, meta: &ExecutionMeta, status: &ExecutionStatus) -> Result<ExecutionFiles, StoreError> {
        Ok(ExecutionFiles { dir: self.root.join(meta.id.to_string()) })
    }
    pub fn load_all(&self) -> Result<Loaded, StoreError> {
        Ok(Loaded::default())
    }
    pub fn remove(&self, id: ExecutionId) -> Result<(), StoreError> {
        Ok(())
    }
    pub fn dir(&self, id: ExecutionId) -> PathBuf {
        self.root.join(id.to_string())
    }
}

#[derive(Debug, Clone)]
pub struct ExecutionFiles {
    dir: PathBuf,
}

impl ExecutionFiles {
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }
    pub fn write_state(&self, status: &ExecutionStatus) -> Result<(), StoreError> {
        Ok(())
    }
    pub fn output(&self, max_log_size: u64) -> Result<ExecutionOutput, StoreError> {
        Ok(ExecutionOutput::default())
    }
    pub fn write_completion(&self, record: &CompletionRecord) -> Result<(), StoreError> {
        Ok(())
    }
}

#[derive(Clone, Default)]
pub struct ExecutionOutput {
    closed: Arc<tokio::sync::watch::Sender<u8>>,
}

impl OutputSink for ExecutionOutput {
    fn write(&self, stream: LogStream, bytes: &[u8]) {}
    fn close(&self, stream: LogStream) {
        self.closed.send_modify(|n| *n += 1);
    }
}

impl ExecutionOutput {
    pub fn in_memory(max_log_size: u64) -> Self {
        Self::default()
    }
    pub fn write_line(&self, stream: LogStream, line: &str) {}
    pub fn closed(&self) -> bool {
        *self.closed.borrow() >= 2
    }
    pub async fn wait_closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|n| *n >= 2).await;
    }
    pub fn finish(&self) -> Result<(), StoreError> {
        Ok(())
    }
    pub fn snapshot(&self, query: LogSnapshotQuery) -> LogSnapshot {
        LogSnapshot::default()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotStream {
    Stdout,
    Stderr,
    #[default]
    Full,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LogSnapshotQuery {
    pub stream: SnapshotStream,
    pub tail_lines: Option<usize>,
    pub max_bytes: Option<usize>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LogSnapshot {
    pub text: String,
    pub observed_bytes: u64,
    pub included_bytes: u64,
    pub truncated: bool,
    pub lines: usize,
}

pub fn read_snapshot(dir: &std::path::Path, query: LogSnapshotQuery) -> Result<LogSnapshot, StoreError> {
    Ok(LogSnapshot::default())
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionEvent {
    pub event_type: String,
    pub execution_id: ExecutionId,
    pub job: String,
    pub attempt: u32,
    pub trigger: JobTrigger,
    pub state: JobState,
    pub exit_code: Option<i32>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<u64>,
    pub stdout_path: PathBuf,
    pub stderr_path: PathBuf,
}

impl CompletionEvent {
    pub fn new(meta: &ExecutionMeta, status: &ExecutionStatus, dir: &std::path::Path) -> Self {
        Self {
            event_type: status.state.name().into(),
            execution_id: meta.id,
            job: meta.job.clone(),
            attempt: meta.attempt,
            trigger: meta.trigger.clone(),
            state: status.state.clone(),
            exit_code: status.state.exit_code(),
            started_at: status.started_at,
            finished_at: status.finished_at,
            duration_ms: None,
            stdout_path: dir.join("stdout.log"),
            stderr_path: dir.join("stderr.log"),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompletionRecord {
    pub event: CompletionEvent,
    pub deliveries: Vec<serde_json::Value>,
}

pub async fn deliver(notify: &NotifySpec, event: &CompletionEvent, files: &ExecutionFiles, timeout: Duration) -> CompletionRecord {
    CompletionRecord { event: event.clone(), deliveries: vec![] }
}

pub fn read_env_files(paths: &[PathBuf]) -> Result<BTreeMap<String, String>, StoreError> {
    Ok(BTreeMap::new())
}

pub fn mask_env(env: &BTreeMap<String, String>, mask: &[String]) -> BTreeMap<String, String> {
    env.iter()
        .map(|(k, v)| (k.clone(), if mask.contains(k) { "***".into() } else { v.clone() }))
        .collect()
}
