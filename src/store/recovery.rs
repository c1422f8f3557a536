//! Reading the store back at start-up, and recovering the executions that
//! were active when the node died.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use chrono::{DateTime, Utc};
use nix::{
    sys::signal::{Signal, kill, killpg},
    unistd::{Pid, getpgrp},
};

use super::{
    ExecutionFiles, META_FILE, STATE_FILE, Store, StoreError,
    files::{TMP_MARK, read_json},
};
use crate::{
    execution::{
        ExecutionId, ExecutionMeta, ExecutionRecord, ExecutionStatus, FailReason, JobState,
    },
    runtime::process::procfs,
};

/// What [`Store::load_all`] found.
#[derive(Debug, Default)]
pub struct Loaded {
    /// Every readable execution, oldest `created_at` first (after recovery).
    pub records: Vec<ExecutionRecord>,
    /// Directories that could not be read, with why (the message names the
    /// file); they are left on disk untouched.
    pub skipped: Vec<(PathBuf, String)>,
    /// Executions that were active and are now `failed: node restarted`.
    pub recovered: Vec<Recovered>,
    /// Running executions a keeper kept, returned as recorded (only from
    /// [`Store::load_all_keeping`](super::Store::load_all_keeping)).
    pub kept: Vec<ExecutionId>,
}

/// What loading does to the executions recorded active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Leaves them as recorded.
    AsRecorded,
    /// Marks them failed (`node restarted`), killing what is left.
    Recover,
    /// Like `Recover`, except running ones with a `kept.json`, left as
    /// recorded for the caller to adopt.
    Keep,
}

/// An execution found active at start-up and marked failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The execution.
    pub id: ExecutionId,
    /// The state it was left in.
    pub previous: JobState,
    /// What became of its process.
    pub kill: KillOutcome,
    /// Writing its new `state.json` failed (the record returned is failed
    /// all the same; the next start recovers it again).
    pub write_error: Option<String>,
}

/// What recovery did to the recorded process of an execution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KillOutcome {
    /// No pid was recorded (it had not started).
    NoPid,
    /// The pid cannot be checked (no start time recorded, or an impossible
    /// pid), so it was not touched.
    Unverified {
        /// The recorded pid.
        pid: u32,
        /// Why it was not checked.
        reason: &'static str,
    },
    /// No process has that pid any more.
    Gone {
        /// The recorded pid.
        pid: u32,
    },
    /// A process has the pid but started at another time: a reused pid,
    /// left alone.
    PidReused {
        /// The recorded pid.
        pid: u32,
        /// The recorded start time (clock ticks since boot).
        recorded_ticks: u64,
        /// The start time of the process that has the pid now.
        found_ticks: u64,
    },
    /// The very process recorded was still there and got SIGKILL.
    Killed {
        /// Its pid.
        pid: u32,
        /// True when its whole process group got it (the pid led its own
        /// group); false when only the process did.
        group: bool,
    },
    /// The kill failed.
    Failed {
        /// The pid.
        pid: u32,
        /// The OS error.
        error: String,
    },
}

impl fmt::Display for KillOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoPid => f.write_str("no process recorded"),
            Self::Unverified { pid, reason } => write!(f, "pid {pid} not touched: {reason}"),
            Self::Gone { pid } => write!(f, "pid {pid} already gone"),
            Self::PidReused {
                pid,
                recorded_ticks,
                found_ticks,
            } => write!(
                f,
                "pid {pid} not touched: reused (started at tick {found_ticks}, recorded {recorded_ticks})"
            ),
            Self::Killed { pid, group: true } => write!(f, "killed process group {pid}"),
            Self::Killed { pid, group: false } => write!(f, "killed pid {pid}"),
            Self::Failed { pid, error } => write!(f, "failed to kill pid {pid}: {error}"),
        }
    }
}

/// Reads `meta.json` and `state.json` of the execution in `dir`.
pub(crate) fn read_record(dir: &Path) -> Result<ExecutionRecord, StoreError> {
    let meta: ExecutionMeta = read_json(&dir.join(META_FILE))?;
    let status: ExecutionStatus = read_json(&dir.join(STATE_FILE))?;
    Ok(ExecutionRecord { meta, status })
}

/// Reads every execution; with `recover`, an active one is marked failed
/// (`node restarted`) and its leftover process killed, else it is returned
/// as recorded (a restarted executor: its job actors still run).
pub(crate) fn load_all(store: &Store, recover: bool) -> Result<Loaded, StoreError> {
    load_all_with(
        store,
        if recover {
            Mode::Recover
        } else {
            Mode::AsRecorded
        },
    )
}

/// Reads every execution, doing `mode` to the active ones.
pub(crate) fn load_all_with(store: &Store, mode: Mode) -> Result<Loaded, StoreError> {
    // What a crash took from the files, the log gives back.
    if let Err(e) = store.replay() {
        tracing::warn!(error = %e, "failed to replay records.log");
    }
    let root = store.executions_dir();
    let entries = fs::read_dir(root).map_err(|e| StoreError::read(root, e))?;
    let now = Utc::now();
    let mut loaded = Loaded::default();
    for entry in entries {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let err = StoreError::read(root, e);
                loaded.skipped.push((root.to_owned(), err.to_string()));
                continue;
            }
        };
        let path = entry.path();
        match load_one(&path, now, mode) {
            Ok((record, recovered)) => {
                match recovered {
                    Some(Some(r)) => loaded.recovered.push(r),
                    Some(None) => loaded.kept.push(record.meta.id),
                    None => {}
                }
                loaded.records.push(record);
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "skipping an execution directory");
                loaded.skipped.push((path, e.to_string()));
            }
        }
    }
    loaded
        .records
        .sort_by_key(|r| (r.meta.created_at, r.meta.id));
    Ok(loaded)
}

/// The record in `path`, with what recovery did to it: `None` for a
/// record left as it was, `Some(None)` for a kept one, `Some(Some(_))` for
/// a recovered one.
#[allow(clippy::type_complexity)]
fn load_one(
    path: &Path,
    now: DateTime<Utc>,
    mode: Mode,
) -> Result<(ExecutionRecord, Option<Option<Recovered>>), StoreError> {
    let recover_active = mode != Mode::AsRecorded;
    let invalid = |reason: &str| StoreError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    if !path.is_dir() {
        return Err(invalid("not a directory"));
    }
    let id: ExecutionId = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| invalid("the directory name is not an execution id"))?;
    if recover_active {
        remove_temp_files(path);
    }
    let mut record = read_record(path)?;
    if record.meta.id != id {
        return Err(invalid(&format!(
            "{META_FILE} is of execution {}",
            record.meta.id
        )));
    }
    if record.status.state.is_terminal() || !recover_active {
        return Ok((record, None));
    }
    let files = ExecutionFiles::new(id, path.to_owned());
    if mode == Mode::Keep
        && matches!(record.status.state, JobState::Running)
        && files.kept_path().is_file()
    {
        return Ok((record, Some(None)));
    }
    let recovered = recover(&files, &mut record.status, now);
    Ok((record, Some(Some(recovered))))
}

/// Removes the temporary files of atomic writes a crash left behind.
fn remove_temp_files(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().contains(TMP_MARK) {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// Marks an active execution failed (`node restarted`) and kills what is
/// left of its process.
fn recover(files: &ExecutionFiles, status: &mut ExecutionStatus, now: DateTime<Utc>) -> Recovered {
    let kill = kill_leftover(status.pid, status.pid_start_ticks);
    let previous = std::mem::replace(
        &mut status.state,
        JobState::Failed {
            reason: FailReason::NodeRestarted,
            exit_code: None,
        },
    );
    status.paused = false;
    status.finished_at = Some(now);
    status.updated_at = now;
    let write_error = files.write_state(status).err().map(|e| e.to_string());
    files.remove_kept();
    tracing::warn!(
        execution = %files.id(),
        previous = previous.name(),
        process = %kill,
        "execution was active when the node stopped: marked failed (node restarted)"
    );
    Recovered {
        id: files.id(),
        previous,
        kill,
        write_error,
    }
}

/// SIGKILLs the process group led by `pid` if `pid` is still the process
/// that started at `start_ticks`; anything else is left alone.
fn kill_leftover(pid: Option<u32>, start_ticks: Option<u64>) -> KillOutcome {
    let Some(pid) = pid else {
        return KillOutcome::NoPid;
    };
    let Some(raw) = i32::try_from(pid).ok().filter(|&p| p > 1) else {
        return KillOutcome::Unverified {
            pid,
            reason: "not a pid that can be signalled",
        };
    };
    let Some(recorded_ticks) = start_ticks else {
        return KillOutcome::Unverified {
            pid,
            reason: "no start time recorded",
        };
    };
    if raw == std::process::id() as i32 {
        return KillOutcome::Unverified {
            pid,
            reason: "it is this node's own pid",
        };
    }
    let Some(stat) = procfs::stat(raw) else {
        return KillOutcome::Gone { pid };
    };
    if stat.start != recorded_ticks {
        return KillOutcome::PidReused {
            pid,
            recorded_ticks,
            found_ticks: stat.start,
        };
    }
    // The group it leads; never the node's own group.
    let group = stat.pgrp == raw && getpgrp().as_raw() != raw;
    let result = if group {
        killpg(Pid::from_raw(raw), Signal::SIGKILL)
    } else {
        kill(Pid::from_raw(raw), Signal::SIGKILL)
    };
    match result {
        Ok(()) => KillOutcome::Killed { pid, group },
        Err(nix::errno::Errno::ESRCH) => KillOutcome::Gone { pid },
        Err(e) => KillOutcome::Failed {
            pid,
            error: e.to_string(),
        },
    }
}

/// Recovers one active execution (marked failed `node restarted`, its
/// leftover process killed): one whose job actor is gone while the node
/// ran on.
pub(crate) fn recover_one(store: &Store, id: ExecutionId) -> Result<ExecutionRecord, StoreError> {
    let dir = store.dir(id);
    let mut record = read_record(&dir)?;
    if !record.status.state.is_terminal() {
        let files = ExecutionFiles::new(id, dir);
        recover(&files, &mut record.status, Utc::now());
    }
    Ok(record)
}
