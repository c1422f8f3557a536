//! One execution's directory: its paths, atomic JSON writes of its state
//! and completion record, and the opening of its logs.

use std::{
    fs::{self, File, OpenOptions},
    io::Write,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
};

use serde::{Serialize, de::DeserializeOwned};

use super::{
    COMPLETION_FILE, CompletionRecord, ExecutionOutput, FULL_LOG_FILE, KEPT_FILE, META_FILE,
    STATE_FILE, STDERR_FILE, STDOUT_FILE, StoreError,
    commit::{Committer, Entry},
};
use crate::{
    execution::{ExecutionId, ExecutionMeta, ExecutionStatus},
    spec::JobSpec,
};

/// What the next agent needs to adopt an execution whose command a keeper
/// kept: the job as it was triggered and the environment it got (env files
/// read then). Owner-only, like every file of the execution, and removed
/// when the execution ends.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct KeptJob {
    /// The job.
    pub spec: JobSpec,
    /// The environment with real values.
    pub env: std::collections::BTreeMap<String, String>,
}

/// Suffix of the temporary files of atomic writes (`state.json.tmp-...`);
/// leftovers of a crash are removed by `load_all`.
pub(crate) const TMP_MARK: &str = ".tmp-";

/// The directory of one execution. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ExecutionFiles {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    id: ExecutionId,
    dir: PathBuf,
    /// The directory was synced after a rename into it.
    dir_synced: AtomicBool,
    /// Room to free when a record finds the disk full.
    reserve: Option<Arc<super::reserve::Reserve>>,
    /// The group commit of terminal records (see [`super::commit`]).
    committer: Option<Arc<Committer>>,
    /// What `meta.json` holds, once known.
    meta: OnceLock<ExecutionMeta>,
}

impl ExecutionFiles {
    pub(crate) fn new(id: ExecutionId, dir: PathBuf) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                dir,
                dir_synced: AtomicBool::new(false),
                reserve: None,
                committer: None,
                meta: OnceLock::new(),
            }),
        }
    }

    /// The files of `id` in `dir`, freeing `reserve` when a record finds
    /// the disk full (see [`super::reserve`]) and committing terminal
    /// records through `committer` (see [`super::commit`]).
    pub(crate) fn in_store(
        id: ExecutionId,
        dir: PathBuf,
        reserve: Arc<super::reserve::Reserve>,
        committer: Option<Arc<Committer>>,
        meta: Option<ExecutionMeta>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                dir,
                dir_synced: AtomicBool::new(false),
                reserve: Some(reserve),
                committer,
                meta: meta.map(OnceLock::from).unwrap_or_default(),
            }),
        }
    }

    /// The execution's id.
    pub fn id(&self) -> ExecutionId {
        self.inner.id
    }

    /// `<state_dir>/executions/<id>`.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// `meta.json`.
    pub fn meta_path(&self) -> PathBuf {
        self.inner.dir.join(META_FILE)
    }

    /// `state.json`.
    pub fn state_path(&self) -> PathBuf {
        self.inner.dir.join(STATE_FILE)
    }

    /// `stdout.log`.
    pub fn stdout_path(&self) -> PathBuf {
        self.inner.dir.join(STDOUT_FILE)
    }

    /// `stderr.log`.
    pub fn stderr_path(&self) -> PathBuf {
        self.inner.dir.join(STDERR_FILE)
    }

    /// `full.log`.
    pub fn full_log_path(&self) -> PathBuf {
        self.inner.dir.join(FULL_LOG_FILE)
    }

    /// `completion_event.json`.
    pub fn completion_path(&self) -> PathBuf {
        self.inner.dir.join(COMPLETION_FILE)
    }

    /// `kept.json`.
    pub fn kept_path(&self) -> PathBuf {
        self.inner.dir.join(KEPT_FILE)
    }

    /// Writes `kept.json` (atomically, without fsync: after a power loss
    /// the keeper is gone too). Blocking.
    pub fn write_kept(&self, job: &KeptJob) -> Result<(), StoreError> {
        write_json_atomic(&self.kept_path(), job, false)
    }

    /// Reads `kept.json`.
    pub fn read_kept(&self) -> Result<KeptJob, StoreError> {
        read_json(&self.kept_path())
    }

    /// Removes `kept.json` if there is one. Blocking.
    pub fn remove_kept(&self) {
        match fs::remove_file(self.kept_path()) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(execution = %self.id(), error = %e, "failed to remove kept.json")
            }
        }
    }

    /// Replaces `state.json` atomically: a reader (or a node restarted at any
    /// instant) sees the old status or the new one, never a mix.
    ///
    /// A terminal status is made durable before this returns, so a
    /// finished execution survives a power loss. In a store, it goes
    /// through the group commit (see [`super::commit`]): `state.json` is
    /// written without fsync and the record is appended to `records.log`,
    /// made durable with the records of every execution finishing at the
    /// same time (one `fdatasync`). Without one (or when the log cannot be
    /// written, e.g. a full disk), the file, `meta.json`, this directory and
    /// its parent are fsynced. Active statuses are written and renamed
    /// without fsync: a crash of the node process loses nothing that
    /// reached the page cache, and after a power loss the processes are
    /// gone too, so an older active status is recovered the same way
    /// ("node restarted").
    ///
    /// Blocking: from async code, call it from `spawn_blocking`, or accept a
    /// stall of the worker thread (one group commit, or up to four fsyncs).
    pub fn write_state(&self, status: &ExecutionStatus) -> Result<(), StoreError> {
        let terminal = status.state.is_terminal();
        let committer = self.inner.committer.as_ref().filter(|_| terminal);
        let sync_file = terminal && committer.is_none();
        match write_json_atomic(&self.state_path(), status, sync_file) {
            // The disk is full: free the room kept for records, once, and
            // try again, so that the record tells what happened.
            Err(StoreError::Write { source, .. })
                if super::reserve::is_full(&source)
                    && self.inner.reserve.as_ref().is_some_and(|r| r.release()) =>
            {
                write_json_atomic(&self.state_path(), status, sync_file)?;
            }
            result => result?,
        }
        if !terminal {
            return Ok(());
        }
        if let Some(committer) = committer {
            let committed = self.meta().and_then(|meta| {
                committer
                    .commit(&Entry::Record {
                        meta: Box::new(meta),
                        status: Box::new(status.clone()),
                    })
                    .map_err(|e| StoreError::write(committer.path(), std::io::Error::other(e)))
            });
            match committed {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(execution = %self.id(), error = %e, "terminal record not logged: syncing state.json instead");
                    let state = self.state_path();
                    File::open(&state)
                        .and_then(|f| f.sync_all())
                        .map_err(|e| StoreError::write(state, e))?;
                }
            }
        }
        if !self.inner.dir_synced.swap(true, Ordering::AcqRel) {
            let meta = self.meta_path();
            File::open(&meta)
                .and_then(|f| f.sync_all())
                .map_err(|e| StoreError::write(meta, e))?;
            sync_dir(&self.inner.dir)?;
            if let Some(parent) = self.inner.dir.parent() {
                sync_dir(parent)?;
            }
        }
        Ok(())
    }

    /// `meta.json`'s contents (read once).
    fn meta(&self) -> Result<ExecutionMeta, StoreError> {
        if let Some(meta) = self.inner.meta.get() {
            return Ok(meta.clone());
        }
        let meta: ExecutionMeta = read_json(&self.meta_path())?;
        Ok(self.inner.meta.get_or_init(|| meta).clone())
    }

    /// Reads `state.json`.
    pub fn read_state(&self) -> Result<ExecutionStatus, StoreError> {
        read_json(&self.state_path())
    }

    /// Opens (creating, appending to) the three logs for capture, with a
    /// live tail of `max_log_size` bytes per stream in memory.
    pub fn output(&self, max_log_size: u64) -> Result<ExecutionOutput, StoreError> {
        let open = |path: PathBuf| {
            OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o600)
                .open(&path)
                .map(|f| (f, path.clone()))
                .map_err(|e| StoreError::write(path, e))
        };
        let stdout = open(self.stdout_path())?;
        let stderr = open(self.stderr_path())?;
        let full = open(self.full_log_path())?;
        Ok(ExecutionOutput::with_files(
            max_log_size,
            Some([stdout, stderr, full]),
        ))
    }

    /// Writes `completion_event.json` atomically (blocking, like
    /// [`ExecutionFiles::write_state`]).
    pub fn write_completion(&self, record: &CompletionRecord) -> Result<(), StoreError> {
        // A delivery log: atomic, not worth an fsync per run.
        write_json_atomic(&self.completion_path(), record, false)
    }

    /// Reads `completion_event.json`, `None` when there is none yet.
    pub fn read_completion(&self) -> Result<Option<CompletionRecord>, StoreError> {
        let path = self.completion_path();
        if !path.exists() {
            return Ok(None);
        }
        read_json(&path).map(Some)
    }
}

/// Reads and parses a JSON file.
pub(crate) fn read_json<T: DeserializeOwned>(path: &Path) -> Result<T, StoreError> {
    let bytes = fs::read(path).map_err(|e| StoreError::read(path, e))?;
    serde_json::from_slice(&bytes).map_err(|source| StoreError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Writes `value` as JSON to a temporary file beside `path`, syncs it and
/// renames it over `path`.
pub(crate) fn write_json_atomic<T: Serialize>(
    path: &Path,
    value: &T,
    sync: bool,
) -> Result<(), StoreError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let mut bytes = serde_json::to_vec_pretty(value).map_err(|source| StoreError::Serialize {
        path: path.to_owned(),
        source,
    })?;
    bytes.push(b'\n');
    let name = path
        .file_name()
        .map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    // Unique per call, so that concurrent writers never share a temp file.
    let tmp = path.with_file_name(format!(
        "{name}{TMP_MARK}{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(&bytes)?;
        if sync {
            file.sync_all()?;
        }
        fs::rename(&tmp, path)
    })();
    result.map_err(|e| {
        let _ = fs::remove_file(&tmp);
        StoreError::write(path, e)
    })
}

/// fsyncs a directory, so that a rename or create in it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::write(dir, e))
}
