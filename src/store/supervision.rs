//! Supervision state that survives the agent: per service replica, its
//! restart count, the restarts still inside the intensity window, its
//! back-off step, when its pending back-off ends, its last exit, and
//! whether it was left failed.
//!
//! A crash-looping service must not hammer again from step 0 each time the
//! agent restarts (kubelet's back-off is memory-only; systemd keeps
//! `n-restarts` across a re-exec). Each service supervisor reports a child
//! here when it starts, begins a back-off or is left failed
//! ([`SupervisionStore::update`]); the first
//! supervisor of a service in an agent's life takes back what an earlier
//! agent left ([`SupervisionStore::take`]) before it starts anything.
//!
//! # Durability
//!
//! One file, `<state_dir>/supervision.json`, written atomically (temporary
//! file, fsync, rename, fsync of the directory) by one writer task that
//! coalesces: a change after a quiet [`BATCH`] is written within
//! [`QUIET_DELAY`], and the
//! changes that follow within a [`BATCH`] of a write go into one write when
//! it ends, so a restart storm costs one fsync per batch, not one per
//! restart, and a supervisor never waits for the disk (it only sends a
//! message). What a kill -9 can lose is what was not written yet: an
//! isolated transition for [`QUIET_DELAY`] and its write, in a storm at most
//! [`BATCH`] of transitions. A graceful stop writes what is pending
//! ([`SupervisionStore::flush`]).
//!
//! # Times
//!
//! Times are kept on the wall clock (an `Instant` means nothing to the next
//! process). A pending back-off resumes with what remains of it, at most
//! its whole delay (a clock that jumped backwards cannot stretch it) and at
//! least nothing (one that jumped forwards, or an agent down longer than the
//! delay, restarts at once). Time the agent was down does not count as
//! stable run time: a replica restored at step 4 stays at step 4 until it
//! runs `backoff.reset_after` under the new agent.

use std::{
    collections::BTreeMap,
    fs, io,
    io::Write,
    path::{Path, PathBuf},
    time::Duration,
};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::actors::supervisor_actor::ChildExit;

/// The file, under the state dir.
pub const SUPERVISION_FILE: &str = "supervision.json";

/// How long the writer gathers changes before it writes them.
pub const BATCH: Duration = Duration::from_millis(25);

/// How long a change after a quiet [`BATCH`] waits before it is written.
pub const QUIET_DELAY: Duration = Duration::from_millis(2);

/// What is kept of one child.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChildRecord {
    /// How many times its supervisor restarted it.
    pub restart_count: u32,
    /// Its restarts still inside the intensity window.
    #[serde(default)]
    pub restarts: Vec<DateTime<Utc>>,
    /// Its back-off step (the next back-off uses this step).
    #[serde(default)]
    pub backoff_step: u32,
    /// When its pending back-off ends, while it backs off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart: Option<DateTime<Utc>>,
    /// The whole delay of that back-off (bounds what a restored one waits).
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub backoff_delay: Option<Duration>,
    /// When it last started (it has run since, if it still runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// How it last ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ChildExit>,
    /// True when it was left down, `failed` (it gave up crash-looping, or
    /// its panic action is `fail`): the next agent leaves it down too.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub failed: bool,
    /// True when it ended for good (a transient child's normal exit, a
    /// temporary child's exit): the next agent does not start it again,
    /// unless the agent before it stopped gracefully or the machine
    /// rebooted since (then everything starts afresh, as systemd starts
    /// its units after a reboot).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub done: bool,
    /// Its one-line status (`gave up after 3 crash loops`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

/// The file's content: records by scope (a service) and child id.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct File {
    version: u32,
    scopes: BTreeMap<String, BTreeMap<String, ChildRecord>>,
    /// The kernel's boot id when it was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    boot_id: Option<String>,
    /// Written by an agent that stopped gracefully (its services stopped).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    stopped: bool,
}

/// The kernel's id of this boot (`/proc/sys/kernel/random/boot_id`).
fn boot_id() -> Option<String> {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|s| s.trim().to_owned())
}

/// What an earlier agent left, as this agent restores it: children that
/// ended for good stay done only if that agent did not stop gracefully and
/// the machine did not reboot since (`boot`: this boot's id); else they
/// start afresh.
fn restorable(mut file: File, boot: Option<&str>) -> File {
    let same_run = !file.stopped && boot.is_some() && file.boot_id.as_deref() == boot;
    if !same_run {
        for record in file.scopes.values_mut().flat_map(|s| s.values_mut()) {
            record.done = false;
        }
    }
    file.stopped = false;
    file.boot_id = boot.map(str::to_owned);
    file
}

/// The handle of the writer (cheap to clone).
#[derive(Clone, Debug)]
pub struct SupervisionStore {
    tx: mpsc::UnboundedSender<Op>,
}

#[derive(Debug)]
enum Op {
    Update(String, String, ChildRecord),
    Take(String, oneshot::Sender<BTreeMap<String, ChildRecord>>),
    Forget(String),
    Retain(Vec<String>),
    Stopped,
    Flush(oneshot::Sender<io::Result<()>>),
}

impl SupervisionStore {
    /// Reads `<dir>/supervision.json` (a missing file is an empty state; an
    /// unreadable one is logged and set aside as `.corrupt`) and starts the
    /// writer task. Must be called inside a tokio runtime.
    pub fn open(dir: &Path) -> Self {
        let path = dir.join(SUPERVISION_FILE);
        let file = restorable(load(&path), boot_id().as_deref());
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(writer(path, file, rx));
        Self { tx }
    }

    /// Records the state of child `id` of `scope` (written with the next
    /// batch).
    pub fn update(&self, scope: &str, id: &str, record: ChildRecord) {
        let _ = self
            .tx
            .send(Op::Update(scope.to_owned(), id.to_owned(), record));
    }

    /// What an earlier agent left for `scope`, once per agent: later calls
    /// (a supervisor restarted, or replaced by a reload) get nothing and
    /// start afresh. The scope's records are cleared: its supervisor
    /// reports its children again.
    pub async fn take(&self, scope: &str) -> BTreeMap<String, ChildRecord> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Take(scope.to_owned(), tx)).is_err() {
            return BTreeMap::new();
        }
        rx.await.unwrap_or_default()
    }

    /// Drops what is kept of `scope` (a service removed from the spec).
    pub fn forget(&self, scope: &str) {
        let _ = self.tx.send(Op::Forget(scope.to_owned()));
    }

    /// Drops every scope but `scopes` (the services of the spec applied).
    pub fn retain(&self, scopes: Vec<String>) {
        let _ = self.tx.send(Op::Retain(scopes));
    }

    /// The agent stopped its services gracefully: the next one starts
    /// every child afresh, done ones too (written with the next write).
    pub fn stopped(&self) {
        let _ = self.tx.send(Op::Stopped);
    }

    /// Writes what is pending now and waits for it.
    pub async fn flush(&self) -> io::Result<()> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Op::Flush(tx)).is_err() {
            return Ok(());
        }
        rx.await.unwrap_or(Ok(()))
    }
}

fn load(path: &Path) -> File {
    let text = match fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return File::default(),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "failed to read the supervision state; starting afresh");
            return File::default();
        }
    };
    match serde_json::from_slice::<File>(&text) {
        Ok(f) => f,
        Err(e) => {
            let aside = path.with_extension("json.corrupt");
            let _ = fs::rename(path, &aside);
            tracing::warn!(file = %path.display(), moved_to = %aside.display(), error = %e, "the supervision state is unreadable; starting afresh");
            File::default()
        }
    }
}

/// Owns the state: applies each change, writes in batches.
async fn writer(path: PathBuf, restorable: File, mut rx: mpsc::UnboundedReceiver<Op>) {
    let boot_id = restorable.boot_id.clone();
    let mut restorable = restorable.scopes;
    // What is written: the restorable scopes not taken yet, plus the live
    // ones (taken scopes are replaced by what their supervisor reports).
    let mut live = File {
        version: 1,
        scopes: restorable.clone(),
        boot_id,
        stopped: false,
    };
    let mut dirty = false;
    let mut due: Option<tokio::time::Instant> = None;
    let mut last_write: Option<tokio::time::Instant> = None;
    loop {
        let op = match due {
            Some(at) => tokio::select! {
                op = rx.recv() => op,
                () = tokio::time::sleep_until(at) => {
                    due = None;
                    if dirty {
                        dirty = false;
                        let _ = write(&path, &live).await;
                        last_write = Some(tokio::time::Instant::now());
                    }
                    continue;
                }
            },
            None => rx.recv().await,
        };
        let Some(op) = op else {
            if dirty {
                let _ = write(&path, &live).await;
            }
            return;
        };
        match op {
            Op::Update(scope, id, record) => {
                live.scopes.entry(scope).or_default().insert(id, record);
                dirty = true;
            }
            Op::Take(scope, reply) => {
                let taken = restorable.remove(&scope).unwrap_or_default();
                live.scopes.remove(&scope);
                dirty = true;
                let _ = reply.send(taken);
            }
            Op::Forget(scope) => {
                restorable.remove(&scope);
                dirty |= live.scopes.remove(&scope).is_some();
            }
            Op::Retain(scopes) => {
                restorable.retain(|s, _| scopes.contains(s));
                let before = live.scopes.len();
                live.scopes.retain(|s, _| scopes.contains(s));
                dirty |= live.scopes.len() != before;
            }
            Op::Stopped => {
                live.stopped = true;
                dirty = true;
            }
            Op::Flush(reply) => {
                let result = if dirty {
                    dirty = false;
                    write(&path, &live).await
                } else {
                    Ok(())
                };
                let _ = reply.send(result);
                continue;
            }
        }
        if dirty && due.is_none() {
            let now = tokio::time::Instant::now();
            due = Some(match last_write {
                // Within a batch of the last write: with the next one.
                Some(at) if now < at + BATCH => at + BATCH,
                // Quiet: written almost at once (after the restart that
                // caused it, not in its way).
                _ => now + QUIET_DELAY,
            });
        }
    }
}

async fn write(path: &Path, file: &File) -> io::Result<()> {
    let bytes = match serde_json::to_vec_pretty(file) {
        Ok(b) => b,
        Err(e) => return Err(io::Error::other(e)),
    };
    let path = path.to_owned();
    let result = tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)));
    if let Err(e) = &result {
        tracing::warn!(error = %e, "failed to write the supervision state");
    }
    result
}

fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("json.tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_done(boot: Option<&str>, stopped: bool) -> File {
        let record = ChildRecord {
            restart_count: 2,
            done: true,
            ..ChildRecord::default()
        };
        File {
            version: 1,
            scopes: BTreeMap::from([(
                "once".to_owned(),
                BTreeMap::from([("once-0".to_owned(), record)]),
            )]),
            boot_id: boot.map(str::to_owned),
            stopped,
        }
    }

    fn done(file: &File) -> bool {
        file.scopes["once"]["once-0"].done
    }

    #[test]
    fn a_done_child_stays_done_after_an_agent_that_did_not_stop_in_the_same_boot() {
        let f = restorable(file_with_done(Some("b1"), false), Some("b1"));
        assert!(done(&f));
        assert_eq!(f.scopes["once"]["once-0"].restart_count, 2);
    }

    #[test]
    fn a_done_child_starts_afresh_after_a_graceful_stop() {
        let f = restorable(file_with_done(Some("b1"), true), Some("b1"));
        assert!(!done(&f));
        assert!(!f.stopped, "the new agent's file starts as not stopped");
    }

    #[test]
    fn a_done_child_starts_afresh_after_a_reboot() {
        let f = restorable(file_with_done(Some("b1"), false), Some("b2"));
        assert!(!done(&f));
        assert_eq!(f.boot_id.as_deref(), Some("b2"));
        // Restart counts are history: they stay.
        assert_eq!(f.scopes["once"]["once-0"].restart_count, 2);
    }

    #[test]
    fn without_a_boot_id_a_done_child_starts_afresh() {
        let f = restorable(file_with_done(None, false), None);
        assert!(!done(&f));
    }
}
