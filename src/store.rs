//! The durable store: every execution's record and logs on disk, so that
//! they survive a restart of the node.
//!
//! Layout, one directory per execution under `<state_dir>/executions/<id>/`:
//!
//! | file | what | written |
//! | --- | --- | --- |
//! | `meta.json` | [`ExecutionMeta`] | once, at create |
//! | `state.json` | [`ExecutionStatus`] | atomically (temp file, rename) on every change |
//! | `stdout.log`, `stderr.log` | the raw bytes of each stream | as they are read |
//! | `full.log` | both streams line by line, `<RFC 3339 time> [STDOUT] line` | as lines complete |
//! | `completion_event.json` | the [`CompletionEvent`] and each sink's [`Delivery`] | at the end |
//!
//! Terminal statuses are made durable by a group commit: `state.json`
//! without fsync, plus one line in `<state_dir>/records.log`, fsynced once
//! for every execution finishing at the same time; the load replays it
//! (see `store/commit.rs`).
//!
//! A full disk: a log that cannot be written stops (the first error of
//! each file is kept, with the bytes it kept, and the terminal status says
//! so in `logs_incomplete`); the terminal status itself is written in the
//! room `<state_dir>/reserve.bin` keeps for it (see `store/reserve.rs`),
//! and only then reported, so what the API called finished is on disk.
//!
//! [`Store::load_all`] reads everything back at start-up. An execution that
//! was still active when the node died is marked failed (`node restarted`),
//! and its process group is killed when the recorded pid is still the very
//! process that was recorded (same start time), never a reused pid.

use std::{
    fs, io,
    os::unix::fs::DirBuilderExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use crate::execution::{ExecutionId, ExecutionMeta, ExecutionRecord, ExecutionStatus};

mod commit;
mod completion;
mod env;
mod files;
mod output;
mod recovery;
mod redact;
mod reserve;
pub mod service_log;
mod snapshot;
pub mod supervision;

pub use commit::{CHECKPOINT_BYTES, RECORDS_LOG, Replayed};
pub use completion::{
    CompletionEvent, CompletionRecord, DEFAULT_NOTIFY_TIMEOUT, Delivery, DeliverySink, deliver,
};
pub use env::{MASK, mask_env, parse_env, read_env_files};
pub use files::{ExecutionFiles, KeptJob};
pub use output::ExecutionOutput;
pub use recovery::{KillOutcome, Loaded, Recovered};
pub use redact::Redacting;
pub use reserve::RESERVE_FILE;
pub use snapshot::{
    DEFAULT_DISK_SNAPSHOT_BYTES, LogSnapshot, LogSnapshotQuery, SnapshotStream, read_snapshot,
};

/// `meta.json`.
pub const META_FILE: &str = "meta.json";
/// `state.json`.
pub const STATE_FILE: &str = "state.json";
/// `stdout.log`.
pub const STDOUT_FILE: &str = "stdout.log";
/// `stderr.log`.
pub const STDERR_FILE: &str = "stderr.log";
/// `full.log`.
pub const FULL_LOG_FILE: &str = "full.log";
/// `completion_event.json`.
pub const COMPLETION_FILE: &str = "completion_event.json";
/// `kept.json`: the job and environment of an execution whose command
/// runs under a keeper, so that the next agent can adopt it (removed when
/// the execution ends).
pub const KEPT_FILE: &str = "kept.json";

/// A failed store operation, naming the file or directory.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// A directory could not be created.
    #[error("failed to create directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file or directory could not be read (or opened).
    #[error("failed to read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file could not be written (or opened for writing, or synced).
    #[error("failed to write {}: {source}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A file or directory could not be removed.
    #[error("failed to remove {}: {source}", path.display())]
    Remove {
        /// The path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A JSON file does not hold what it should.
    #[error("failed to parse {}: {source}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be turned into JSON.
    #[error("failed to serialize {}: {source}", path.display())]
    Serialize {
        /// The file it was meant for.
        path: PathBuf,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// A line of an env file is not `KEY=VALUE`.
    #[error("failed to parse env file {}: line {line}: {message}", path.display())]
    EnvFile {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
    /// An execution directory is not what the store writes (a name that is
    /// no execution id, a `meta.json` of another execution).
    #[error("failed to load {}: {reason}", path.display())]
    Invalid {
        /// The directory or file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An execution has no directory.
    #[error("failed to find execution {id}: no directory {}", path.display())]
    NotFound {
        /// The execution.
        id: ExecutionId,
        /// Where it was looked for.
        path: PathBuf,
    },
}

impl StoreError {
    pub(crate) fn read(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Read {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn write(path: impl Into<PathBuf>, source: io::Error) -> Self {
        Self::Write {
            path: path.into(),
            source,
        }
    }
}

/// The store: a directory of execution directories. Cheap to clone.
///
/// Its methods do blocking file I/O (small files, except [`Store::remove`]
/// of a big log); async callers on a busy executor may wrap them in
/// `spawn_blocking`.
#[derive(Debug, Clone)]
pub struct Store {
    root: Arc<StoreRoot>,
}

#[derive(Debug)]
struct StoreRoot {
    state_dir: PathBuf,
    executions: PathBuf,
    /// Room kept for records when the disk fills.
    reserve: Arc<reserve::Reserve>,
    /// The group commit of terminal records; `None` when `records.log`
    /// cannot be opened (each terminal record is then fsynced alone).
    committer: Option<Arc<commit::Committer>>,
}

impl Store {
    /// Opens (creating it when missing) the store under `state_dir`: its
    /// executions live in `state_dir/executions/`.
    pub fn open(state_dir: impl Into<PathBuf>) -> Result<Store, StoreError> {
        let state_dir = state_dir.into();
        let executions = state_dir.join("executions");
        // Records and logs can hold what only the operator may read:
        // directories 0700, files 0600 (whatever the umask).
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&executions)
            .map_err(|source| StoreError::CreateDir {
                path: executions.clone(),
                source,
            })?;
        let reserve = Arc::new(reserve::Reserve::open(&state_dir));
        let committer = match commit::Committer::for_dir(&state_dir) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(error = %e, "no group commit: each terminal record is fsynced alone");
                None
            }
        };
        Ok(Store {
            root: Arc::new(StoreRoot {
                state_dir,
                executions,
                reserve,
                committer,
            }),
        })
    }

    /// The state directory the store was opened on.
    pub fn state_dir(&self) -> &Path {
        &self.root.state_dir
    }

    /// `state_dir/executions`.
    pub fn executions_dir(&self) -> &Path {
        &self.root.executions
    }

    /// The directory of execution `id` (whether or not it exists).
    pub fn dir(&self, id: ExecutionId) -> PathBuf {
        self.root.executions.join(id.to_string())
    }

    /// Creates the directory of a new execution with its `meta.json` and
    /// first `state.json` (both written atomically and synced).
    pub fn create(
        &self,
        meta: &ExecutionMeta,
        status: &ExecutionStatus,
    ) -> Result<ExecutionFiles, StoreError> {
        let dir = self.dir(meta.id);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|source| StoreError::CreateDir {
                path: dir.clone(),
                source,
            })?;
        let files = self.files_in(meta.id, dir, Some(meta.clone()));
        // Made durable with the terminal status (see `write_state`).
        files::write_json_atomic(&files.meta_path(), meta, false)?;
        files.write_state(status)?;
        Ok(files)
    }

    /// The files of an existing execution (after [`Store::load_all`]).
    pub fn files(&self, id: ExecutionId) -> Result<ExecutionFiles, StoreError> {
        let dir = self.dir(id);
        if !dir.is_dir() {
            return Err(StoreError::NotFound { id, path: dir });
        }
        Ok(self.files_in(id, dir, None))
    }

    fn files_in(
        &self,
        id: ExecutionId,
        dir: PathBuf,
        meta: Option<ExecutionMeta>,
    ) -> ExecutionFiles {
        ExecutionFiles::in_store(
            id,
            dir,
            self.root.reserve.clone(),
            self.root.committer.clone(),
            meta,
        )
    }

    /// Puts back the terminal records `records.log` holds where a crash
    /// lost them (see [`commit`](self)), then empties it. [`Store::load_all`]
    /// and its variants do this first; blocking.
    pub fn replay(&self) -> Result<Replayed, StoreError> {
        let log = self.root.state_dir.join(RECORDS_LOG);
        let replayed = commit::replay(&log, &self.root.executions)?;
        if let Some(c) = &self.root.committer {
            c.checkpoint()
                .map_err(|e| StoreError::write(log, io::Error::other(e)))?;
        }
        Ok(replayed)
    }

    /// Reads one execution's record back, as is (no recovery).
    pub fn load(&self, id: ExecutionId) -> Result<ExecutionRecord, StoreError> {
        let dir = self.dir(id);
        if !dir.is_dir() {
            return Err(StoreError::NotFound { id, path: dir });
        }
        recovery::read_record(&dir)
    }

    /// Reads every execution back, sorted by `created_at`, recovering the
    /// ones that were active when the node died; see [`Loaded`].
    ///
    /// A directory that cannot be read is skipped and reported in
    /// [`Loaded::skipped`]; only an unreadable `executions/` fails the call.
    pub fn load_all(&self) -> Result<Loaded, StoreError> {
        recovery::load_all(self, true)
    }

    /// Like [`Store::load_all`] without recovery: active executions come
    /// back as recorded and nothing is killed. For an executor restarted
    /// while the node (and its job actors) kept running.
    pub fn load_all_as_recorded(&self) -> Result<Loaded, StoreError> {
        recovery::load_all(self, false)
    }

    /// Like [`Store::load_all`], except that a running execution whose
    /// command a keeper kept (it has a `kept.json`) comes back as recorded
    /// and is listed in [`Loaded::kept`]: the caller adopts it, or
    /// recovers it with [`Store::recover_execution`].
    pub fn load_all_keeping(&self) -> Result<Loaded, StoreError> {
        recovery::load_all_with(self, recovery::Mode::Keep)
    }

    /// Marks execution `id` failed (`node restarted`) unless it ended, and
    /// kills what is left of its recorded process.
    pub fn recover_execution(&self, id: ExecutionId) -> Result<ExecutionRecord, StoreError> {
        recovery::recover_one(self, id)
    }

    /// A snapshot of a log of execution `id` read from its files.
    pub fn read_snapshot(
        &self,
        id: ExecutionId,
        query: LogSnapshotQuery,
    ) -> Result<LogSnapshot, StoreError> {
        let dir = self.dir(id);
        if !dir.is_dir() {
            return Err(StoreError::NotFound { id, path: dir });
        }
        read_snapshot(&dir, query)
    }

    /// Deletes the directory of execution `id` and everything in it (a
    /// missing directory is not an error).
    pub fn remove(&self, id: ExecutionId) -> Result<(), StoreError> {
        if let Some(c) = &self.root.committer {
            c.note(&commit::Entry::Removed(id));
        }
        let dir = self.dir(id);
        match fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(StoreError::Remove { path: dir, source }),
        }
    }
}
