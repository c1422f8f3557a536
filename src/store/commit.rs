//! Group commit of terminal records: `<state-dir>/records.log`.
//!
//! Why: a finished execution must be on disk before the API calls it
//! finished. Making each `state.json` durable costs four fsyncs (the file,
//! `meta.json`, its directory and `executions/`), and on a disk the fsyncs
//! of many executions finishing at once queue behind each other: that was
//! most of a short job's cost. Here, a terminal record is written to its
//! `state.json` without fsync (a cache of the truth) and appended, with its
//! `meta.json`, as one JSON line to this log; one writer thread takes every
//! line that is waiting, appends them with one write and makes them durable
//! with one `fdatasync`, then acknowledges them all. Sixty-four executions
//! finishing together cost one fsync instead of 256.
//!
//! After a crash or a power cut, [`replay`] (run by the store's load, before
//! anything else reads the records) puts every logged terminal record back
//! where a lost `state.json`, `meta.json` or directory left a hole, or where
//! the file holds something older. A line cut short by the crash is not
//! valid JSON and is skipped: it was never acknowledged. Removals are logged
//! too (without waiting), so that a replay does not bring back an
//! execution the retention removed.
//!
//! The log is emptied at each checkpoint: `syncfs` of the state dir's file
//! system makes every `state.json` written so far durable, then the log is
//! truncated. A checkpoint runs after a replay and whenever the log passes
//! [`CHECKPOINT_BYTES`], in the writer thread, so it never races an append.
//!
//! One writer per state dir: it holds an exclusive `flock` on the log for
//! its life, so truncation never drops another writer's line. A second
//! store opened on the same dir while the first lives (the node opens one
//! and shares it with every executor restart, so only a program opening two
//! gets here) has no group commit: it fsyncs each terminal record alone.

use std::{
    collections::{HashMap, HashSet},
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::{DirBuilderExt, OpenOptionsExt},
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
};

use nix::fcntl::{Flock, FlockArg};

use serde::{Deserialize, Serialize};

use super::{
    META_FILE, STATE_FILE, StoreError,
    files::{read_json, write_json_atomic},
};
use crate::execution::{ExecutionId, ExecutionMeta, ExecutionStatus};

/// The log, under the state dir.
pub const RECORDS_LOG: &str = "records.log";

/// The log is emptied (after a `syncfs`) once it is this long (4 MiB,
/// about 4,000 records).
pub const CHECKPOINT_BYTES: u64 = 4 << 20;

/// One line of the log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Entry {
    /// A terminal record, whole.
    Record {
        /// What it ran.
        meta: Box<ExecutionMeta>,
        /// How it ended.
        status: Box<ExecutionStatus>,
    },
    /// The execution's directory was removed.
    Removed(ExecutionId),
}

enum Request {
    /// Append `line`; `done` (when given) hears once it is durable.
    Append {
        line: Vec<u8>,
        done: Option<mpsc::SyncSender<Result<(), String>>>,
    },
    /// Make every `state.json` durable and empty the log.
    Checkpoint {
        done: mpsc::SyncSender<Result<(), String>>,
    },
}

/// The writer of one state dir's log. Cheap to share; its thread ends
/// (and the lock goes) when the last handle goes.
#[derive(Debug)]
pub(crate) struct Committer {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
    path: PathBuf,
}

impl Drop for Committer {
    fn drop(&mut self) {
        // The thread ends once its channel closes: wait for it, so that the
        // lock is free for the next store on this dir when this returns.
        self.tx.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Committer {
    /// Starts the writer of `state_dir`; fails when another holds its log.
    pub(crate) fn for_dir(state_dir: &Path) -> Result<Arc<Committer>, StoreError> {
        let path = state_dir.join(RECORDS_LOG);
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| StoreError::write(&path, e))?;
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
            StoreError::write(
                &path,
                io::Error::other(format!("held by another store ({errno})")),
            )
        })?;
        let dir = File::open(state_dir).map_err(|e| StoreError::read(state_dir, e))?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::read(&path, e))?
            .len();
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("arbor-records".into())
            .spawn(move || run(&file, dir, len, rx))
            .map_err(|e| StoreError::write(&path, e))?;
        Ok(Arc::new(Committer {
            tx: Some(tx),
            thread: Some(thread),
            path,
        }))
    }

    /// `records.log`.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn send(&self, request: Request) -> Result<(), String> {
        self.tx
            .as_ref()
            .ok_or(())
            .and_then(|tx| tx.send(request).map_err(|_| ()))
            .map_err(|()| "the records writer has stopped".to_owned())
    }

    /// Appends `entry` and returns once it is durable. Blocking.
    pub(crate) fn commit(&self, entry: &Entry) -> Result<(), String> {
        let (done, heard) = mpsc::sync_channel(1);
        self.send(Request::Append {
            line: line(entry)?,
            done: Some(done),
        })?;
        heard
            .recv()
            .map_err(|_| "the records writer has stopped".to_owned())?
    }

    /// Appends `entry` without waiting (it is durable with the next
    /// commit).
    pub(crate) fn note(&self, entry: &Entry) {
        if let Err(e) = line(entry).and_then(|line| self.send(Request::Append { line, done: None }))
        {
            tracing::warn!(error = %e, "failed to log a removal in records.log");
        }
    }

    /// Makes every `state.json` written so far durable and empties the
    /// log. Blocking.
    pub(crate) fn checkpoint(&self) -> Result<(), String> {
        let (done, heard) = mpsc::sync_channel(1);
        self.send(Request::Checkpoint { done })?;
        heard
            .recv()
            .map_err(|_| "the records writer has stopped".to_owned())?
    }
}

fn line(entry: &Entry) -> Result<Vec<u8>, String> {
    let mut line =
        serde_json::to_vec(entry).map_err(|e| format!("failed to serialize a record: {e}"))?;
    line.push(b'\n');
    Ok(line)
}

/// The writer thread: takes what is waiting, appends it in one write, one
/// `fdatasync` when someone waits, acknowledges.
fn run(file: &File, dir: File, mut len: u64, rx: mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut bytes = Vec::new();
        let mut waiting = Vec::new();
        let mut checkpoints = Vec::new();
        for request in std::iter::once(first).chain(rx.try_iter()) {
            match request {
                Request::Append { line, done } => {
                    bytes.extend_from_slice(&line);
                    waiting.extend(done);
                }
                Request::Checkpoint { done } => checkpoints.push(done),
            }
        }
        if !bytes.is_empty() {
            let result = append(file, &bytes, &mut len, !waiting.is_empty())
                .map_err(|e| format!("failed to append to {RECORDS_LOG}: {e}"));
            for done in waiting {
                let _ = done.send(result.clone());
            }
        }
        if !checkpoints.is_empty() || len >= CHECKPOINT_BYTES {
            let result = checkpoint(file, &dir, &mut len)
                .map_err(|e| format!("failed to checkpoint {RECORDS_LOG}: {e}"));
            if let Err(e) = &result {
                tracing::warn!(error = %e, "records.log not emptied");
            }
            for done in checkpoints {
                let _ = done.send(result.clone());
            }
        }
    }
}

fn append(mut file: &File, bytes: &[u8], len: &mut u64, sync: bool) -> io::Result<()> {
    let result = file
        .write_all(bytes)
        .and_then(|()| if sync { file.sync_data() } else { Ok(()) });
    match result {
        Ok(()) => {
            *len += bytes.len() as u64;
            Ok(())
        }
        Err(e) => {
            // Never leave half a line for the next one to be glued to.
            let _ = file.set_len(*len);
            Err(e)
        }
    }
}

fn checkpoint(file: &File, dir: &File, len: &mut u64) -> io::Result<()> {
    nix::unistd::syncfs(dir).map_err(io::Error::from)?;
    file.set_len(0)?;
    file.sync_all()?;
    *len = 0;
    Ok(())
}

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Replayed {
    /// Valid lines read.
    pub lines: usize,
    /// Lines that are not a record (cut short by a crash): skipped.
    pub torn: usize,
    /// Executions whose files were written again from the log.
    pub restored: Vec<ExecutionId>,
}

/// Puts back every terminal record of `log` that `executions` lost or holds
/// older. Blocking; the caller checkpoints afterwards.
pub(crate) fn replay(log: &Path, executions: &Path) -> Result<Replayed, StoreError> {
    let bytes = match fs::read(log) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Replayed::default()),
        Err(e) => return Err(StoreError::read(log, e)),
    };
    let mut replayed = Replayed::default();
    let mut last: HashMap<ExecutionId, (Box<ExecutionMeta>, Box<ExecutionStatus>)> = HashMap::new();
    let mut order = Vec::new();
    let mut removed = HashSet::new();
    for raw in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        match serde_json::from_slice::<Entry>(raw) {
            Ok(Entry::Record { meta, status }) => {
                replayed.lines += 1;
                removed.remove(&meta.id);
                if !last.contains_key(&meta.id) {
                    order.push(meta.id);
                }
                last.insert(meta.id, (meta, status));
            }
            Ok(Entry::Removed(id)) => {
                replayed.lines += 1;
                removed.insert(id);
            }
            Err(_) => replayed.torn += 1,
        }
    }
    for id in order {
        if removed.contains(&id) {
            continue;
        }
        let Some((meta, status)) = last.remove(&id) else {
            continue;
        };
        if restore(&executions.join(id.to_string()), &meta, &status)? {
            replayed.restored.push(id);
        }
    }
    if replayed.torn > 0 {
        tracing::warn!(
            lines = replayed.torn,
            "records.log: skipped lines cut short by a crash (never acknowledged)"
        );
    }
    Ok(replayed)
}

/// Writes the files of one logged record where they are missing or older;
/// true when something was written.
fn restore(dir: &Path, meta: &ExecutionMeta, status: &ExecutionStatus) -> Result<bool, StoreError> {
    let mut wrote = false;
    if !dir.is_dir() {
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dir)
            .map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
    }
    let meta_path = dir.join(META_FILE);
    if read_json::<ExecutionMeta>(&meta_path).is_err() {
        write_json_atomic(&meta_path, meta, false)?;
        wrote = true;
    }
    let state_path = dir.join(STATE_FILE);
    let stale = match read_json::<ExecutionStatus>(&state_path) {
        Ok(found) => !found.state.is_terminal() || found.updated_at < status.updated_at,
        Err(_) => true,
    };
    if stale {
        write_json_atomic(&state_path, status, false)?;
        wrote = true;
    }
    Ok(wrote)
}
