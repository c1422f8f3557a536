//! Reaps everything a container leaves behind, driven by `SIGCHLD`.
//!
//! tokio reaps each container's main process (the leader) itself, through a
//! pidfd, so an exit is seen within a fraction of a millisecond. What is left
//! are the leader's descendants. The node is a child subreaper
//! (`PR_SET_CHILD_SUBREAPER`), so orphans are re-parented to it rather than to
//! PID 1 (which reaps late on these machines), and this task reaps them, while
//! the container runs and after it exits, so a service that keeps forking
//! short-lived helpers never piles up zombies.
//!
//! It never calls `waitpid(-1)`, which would steal the statuses tokio and the
//! embedding application wait for. It reaps a zombie only when it belongs to
//! a container:
//! - its process group is a container's and it is not the group leader
//!   (leaders are tokio's): on each `SIGCHLD`, for each container's group,
//!   `waitid(P_PGID, WNOWAIT)` names a zombie child of the node in that group
//!   without reaping it, and `waitpid` reaps it by pid unless it is the
//!   leader. That costs a system call or two per container and nothing per
//!   thread of the node (the sweep of `/proc/self/task/*/children` this
//!   replaced opened one file per thread on every `SIGCHLD`, about 40 opens
//!   per short job);
//! - when running as root, its cgroup is below the runtime's cgroup directory
//!   and it is not a live leader. This catches processes that left the group
//!   with `setsid`. Finding them needs the node's children from `/proc`, so
//!   that sweep runs at most every [`FULL_SWEEP_EVERY`] (a zombie that left
//!   its group waits that long at most); without root they are not
//!   attributable and are left alone.
//!
//! A container is drained when no process with its pgid exists any more
//! (`kill(-pgid, 0)` fails with `ESRCH`; a pgid cannot be reused while any
//! member, even a zombie, holds it) and, with a cgroup, when the cgroup is
//! empty and no child of the node (exiting or zombie) is in it. A member whose
//! parent is outside the group exits without signalling the node, so while
//! anything is draining a check also runs every 200 ms as a safety net;
//! nothing polls when nothing drains.

use std::{
    collections::HashSet,
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use nix::{
    errno::Errno,
    sys::{
        signal::killpg,
        wait::{WaitPidFlag, waitpid},
    },
    unistd::Pid,
};
use tokio::{
    signal::unix::{SignalKind, signal},
    sync::{mpsc, oneshot},
};

use super::{
    cgroup::Cgroup,
    procfs::{cgroup_path, own_children, stat},
};

const SAFETY_TICK: Duration = Duration::from_millis(200);

/// The shortest time between two sweeps of `/proc` for zombies that left
/// their container's group (root only).
pub(crate) const FULL_SWEEP_EVERY: Duration = Duration::from_millis(50);

/// Handle to the reaper task of one process runtime.
#[derive(Debug, Clone)]
pub(crate) struct Reaper {
    tx: mpsc::UnboundedSender<Cmd>,
    spawning: Arc<AtomicUsize>,
}

#[derive(Debug)]
enum Cmd {
    /// A leader runs: tokio owns its status.
    Started { pid: i32 },
    /// tokio reaped the leader; drain its group (and cgroup) now.
    Drain(Drain),
}

#[derive(Debug)]
struct Drain {
    pgid: i32,
    cgroup: Option<Arc<Cgroup>>,
    done: oneshot::Sender<()>,
}

impl Drain {
    /// True when nothing of the container is left, not even a zombie.
    ///
    /// A process leaves its cgroup's task list (so `populated` drops to 0)
    /// early in `exit`, before it becomes a zombie and long before it is
    /// reaped, so an empty cgroup does not mean that its processes are gone:
    /// one that left the process group (`setsid`) could still be exiting or
    /// wait to be reaped. Every container process that still exists has an
    /// ancestor chain of container processes up to a child of the node (the
    /// leader is reaped, and orphans are re-parented to the node), so none
    /// exists once no child of the node is in the cgroup.
    fn finished(&self, children: &mut ChildCgroups) -> bool {
        group_gone(self.pgid)
            && self.cgroup.as_ref().is_none_or(|c| {
                !c.populated() && !children.get().iter().any(|path| c.is_path(path))
            })
    }
}

/// The cgroup paths of the node's children, read once per sweep and only
/// when a drain needs them.
#[derive(Default)]
struct ChildCgroups(Option<Vec<String>>);

impl ChildCgroups {
    fn get(&mut self) -> &[String] {
        self.0
            .get_or_insert_with(|| own_children().into_iter().filter_map(cgroup_path).collect())
    }
}

/// Marks a spawn in progress: until it is dropped, a zombie that leads its
/// own group could be a leader tokio has not registered yet, so it is left.
pub(crate) struct SpawnGuard {
    spawning: Arc<AtomicUsize>,
}

impl Drop for SpawnGuard {
    fn drop(&mut self) {
        self.spawning.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Task {
    /// Live leaders (tokio reaps them).
    leaders: HashSet<i32>,
    /// Process groups of containers that run or drain.
    groups: HashSet<i32>,
    draining: Vec<Drain>,
    /// The runtime's cgroup directory, when running as root.
    cgroup_base: Option<PathBuf>,
    spawning: Arc<AtomicUsize>,
    /// A zombie was left by the last sweep because a spawn was in progress.
    deferred: bool,
    /// When `/proc` was last swept, and whether a sweep waits for
    /// [`FULL_SWEEP_EVERY`] to pass.
    last_full: Option<tokio::time::Instant>,
    full_due: bool,
    me: i32,
}

impl Reaper {
    /// Starts the reaper task. Must be called inside a tokio runtime.
    pub(crate) fn spawn(cgroup_base: Option<PathBuf>) -> std::io::Result<Self> {
        let mut sigchld = signal(SignalKind::child())?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Cmd>();
        let spawning = Arc::new(AtomicUsize::new(0));
        let mut task = Task {
            leaders: HashSet::new(),
            groups: HashSet::new(),
            draining: Vec::new(),
            cgroup_base,
            spawning: spawning.clone(),
            deferred: false,
            last_full: None,
            full_due: false,
            me: std::process::id() as i32,
        };
        tokio::spawn(async move {
            loop {
                let tick = !task.draining.is_empty() || task.deferred;
                let full_at = task.full_sweep_at();
                let sweep = tokio::select! {
                    cmd = rx.recv() => match cmd {
                        Some(cmd) => task.apply(cmd),
                        None => break,
                    },
                    _ = sigchld.recv() => true,
                    _ = tokio::time::sleep(SAFETY_TICK), if tick => {
                        // The safety net looks everywhere.
                        task.full_due = task.cgroup_base.is_some();
                        true
                    }
                    _ = tokio::time::sleep_until(full_at.unwrap_or_else(tokio::time::Instant::now)), if full_at.is_some() => true,
                };
                if sweep {
                    task.sweep(&mut rx);
                }
            }
            task.full_due = task.cgroup_base.is_some();
            task.last_full = None;
            task.sweep(&mut rx);
        });
        Ok(Self { tx, spawning })
    }

    /// Call before spawning a leader; drop the guard after [`Reaper::started`].
    pub(crate) fn spawning(&self) -> SpawnGuard {
        self.spawning.fetch_add(1, Ordering::AcqRel);
        SpawnGuard {
            spawning: self.spawning.clone(),
        }
    }

    /// A leader with this pid (= its pgid) runs.
    pub(crate) fn started(&self, pid: i32) {
        let _ = self.tx.send(Cmd::Started { pid });
    }

    /// tokio reaped leader `pgid`: reap the rest of its group (and cgroup)
    /// until nothing is left; the receiver completes then.
    pub(crate) fn drain(&self, pgid: i32, cgroup: Option<Arc<Cgroup>>) -> oneshot::Receiver<()> {
        let (done, rx) = oneshot::channel();
        let drain = Drain { pgid, cgroup, done };
        if let Err(mpsc::error::SendError(Cmd::Drain(drain))) = self.tx.send(Cmd::Drain(drain)) {
            // The reaper is gone (tokio is shutting down): report what is true now.
            if drain.finished(&mut ChildCgroups::default()) {
                let _ = drain.done.send(());
            }
        }
        rx
    }
}

impl Task {
    /// Applies a command; true when a sweep is due (a start reaps nothing).
    fn apply(&mut self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Started { pid } => {
                self.leaders.insert(pid);
                self.groups.insert(pid);
                false
            }
            Cmd::Drain(drain) => {
                self.leaders.remove(&drain.pgid);
                self.draining.push(drain);
                true
            }
        }
    }

    /// When the next sweep of `/proc` may run, while one is due.
    fn full_sweep_at(&self) -> Option<tokio::time::Instant> {
        if !self.full_due {
            return None;
        }
        Some(match self.last_full {
            Some(at) => at + FULL_SWEEP_EVERY,
            None => tokio::time::Instant::now(),
        })
    }

    /// Reaps the zombies that belong to containers, then completes the
    /// drains that are finished.
    fn sweep(&mut self, rx: &mut mpsc::UnboundedReceiver<Cmd>) {
        for &pgid in &self.groups {
            reap_group(pgid);
        }
        if self.cgroup_base.is_some() {
            // Zombies that left their group are found in `/proc`, at most
            // every FULL_SWEEP_EVERY.
            self.full_due = true;
            let now = tokio::time::Instant::now();
            if self.last_full.is_none_or(|at| now >= at + FULL_SWEEP_EVERY) {
                self.full_due = false;
                self.last_full = Some(now);
                self.sweep_proc(rx);
            }
        }
        self.finish_drains();
    }

    /// Reaps zombie children of the node that belong to containers by
    /// group or by cgroup, found in `/proc`.
    fn sweep_proc(&mut self, rx: &mut mpsc::UnboundedReceiver<Cmd>) {
        self.deferred = false;
        let mut caught_up = false;
        for pid in own_children() {
            if self.leaders.contains(&pid) {
                continue;
            }
            let Some(p) = stat(pid) else {
                continue;
            };
            if !p.is_zombie() || p.ppid != self.me {
                continue;
            }
            let pgrp = p.pgrp;
            let leads_group = pid == pgrp;
            let ours = (!leads_group && self.groups.contains(&pgrp))
                || self
                    .cgroup_base
                    .as_ref()
                    .is_some_and(|base| in_cgroup_below(pid, base));
            if !ours {
                continue;
            }
            if leads_group {
                // A zombie leading its group may be a leader whose `Started`
                // is still queued. Spawners send it before they drop their
                // guard, so once no spawn is in progress, reading the queue
                // settles it.
                if self.spawning.load(Ordering::Acquire) > 0 {
                    self.deferred = true;
                    continue;
                }
                if !caught_up {
                    while let Ok(cmd) = rx.try_recv() {
                        self.apply(cmd);
                    }
                    caught_up = true;
                }
                if self.leaders.contains(&pid) {
                    continue;
                }
            }
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG));
        }
    }

    /// Completes the drains that are finished.
    fn finish_drains(&mut self) {
        let mut children = ChildCgroups::default();
        let mut i = 0;
        while i < self.draining.len() {
            if self.draining[i].finished(&mut children) {
                let drain = self.draining.swap_remove(i);
                self.groups.remove(&drain.pgid);
                if let Some(c) = &drain.cgroup {
                    c.remove();
                }
                let _ = drain.done.send(());
            } else {
                i += 1;
            }
        }
    }
}

/// Reaps the zombie children of the node in process group `pgid`, but not
/// its leader (tokio's, and the group's own pid): `waitid(P_PGID, WNOWAIT)`
/// names one without reaping it, `waitpid` reaps it by pid. A zombie leader
/// hides the others until tokio reaped it (its drain sweeps again).
fn reap_group(pgid: i32) {
    loop {
        // SAFETY: waitid fills the zeroed siginfo we own; WNOWAIT leaves
        // the child waitable.
        let pid = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let r = libc::waitid(
                libc::P_PGID,
                pgid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
            );
            if r != 0 {
                return;
            }
            info.si_pid()
        };
        if pid <= 0 || pid == pgid {
            return;
        }
        if waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_err() {
            return;
        }
    }
}

/// True when no process (not even a zombie) is left in process group `pgid`.
pub(crate) fn group_gone(pgid: i32) -> bool {
    matches!(killpg(Pid::from_raw(pgid), None), Err(Errno::ESRCH))
}

/// True when `pid`'s cgroup v2 path lies below `base` (zombies keep theirs).
fn in_cgroup_below(pid: i32, base: &std::path::Path) -> bool {
    let Some(rel) = cgroup_path(pid) else {
        return false;
    };
    // `base` is an absolute path under the cgroup2 mount; compare by its
    // last component, which is unique to this runtime (arbor-<pid>-<n>).
    let Some(name) = base.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    rel.split('/').any(|part| part == name)
}
