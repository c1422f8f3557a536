//! One container of the process runtime: its spec, its lifecycle (a `watch`
//! channel that `wait`, `stop` and `remove` subscribe to), its output, and
//! how its processes are signalled.

use std::{
    path::PathBuf,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use nix::{errno::Errno, sys::signal::killpg, unistd::Pid};
use tokio::{sync::watch, task::AbortHandle};

use super::cgroup::Cgroup;
use crate::runtime::{ContainerId, ContainerSpec, ContainerState, ExitStatus, LogBuffer, Signal};

/// One container: its spec, its lifecycle, and its output.
pub(super) struct Entry {
    pub(super) id: ContainerId,
    pub(super) spec: ContainerSpec,
    /// The program found at `create` (`None`: not found then; `start` then
    /// searches again and reports it missing).
    pub(super) program: Option<PathBuf>,
    pub(super) state: watch::Sender<ProcState>,
    /// True once the main process exited and nothing of the container is left.
    pub(super) drained: watch::Sender<bool>,
    /// Set by `stop` and `abandon`: the exit is expected, the group is being
    /// stopped by them.
    pub(super) stopping: AtomicBool,
    pub(super) logs: LogBuffer,
    pub(super) run: OnceLock<Run>,
}

pub(super) struct Run {
    pub(super) pgid: i32,
    pub(super) cgroup: Option<Arc<Cgroup>>,
    /// Its resource-limit cgroups, when it has limits.
    pub(super) limited: Option<Arc<super::resources::Limited>>,
    pub(super) readers: Vec<AbortHandle>,
    /// Counts pipes read to their end (2 when both are done).
    pub(super) eof: watch::Receiver<u8>,
    /// The files of its keeper, when it is kept (live restore).
    pub(super) keeper: Option<crate::runtime::keeper::KeeperFiles>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ProcState {
    Created,
    Starting,
    Running { pid: u32 },
    Exited { status: ExitStatus },
}

impl Entry {
    pub(super) fn container_state(&self) -> ContainerState {
        match *self.state.borrow() {
            ProcState::Created | ProcState::Starting => ContainerState::Created,
            ProcState::Running { pid } => ContainerState::Running { pid },
            ProcState::Exited { status } => ContainerState::Exited { status },
        }
    }

    pub(super) fn state_name(&self) -> String {
        match *self.state.borrow() {
            ProcState::Created => "created".into(),
            ProcState::Starting => "starting".into(),
            ProcState::Running { .. } => "running".into(),
            ProcState::Exited { status } => format!("exited ({status})"),
        }
    }

    /// The state once any start in progress has finished.
    pub(super) async fn settled(&self) -> ProcState {
        let mut rx = self.state.subscribe();
        match rx.wait_for(|s| *s != ProcState::Starting).await {
            Ok(s) => *s,
            Err(_) => *self.state.borrow(),
        }
    }

    pub(super) async fn exited(&self) -> Option<ExitStatus> {
        let mut rx = self.state.subscribe();
        match rx
            .wait_for(|s| matches!(s, ProcState::Exited { .. }))
            .await
            .ok()
            .map(|s| *s)
        {
            Some(ProcState::Exited { status }) => Some(status),
            _ => None,
        }
    }

    pub(super) async fn wait_drained(&self, limit: Duration) -> bool {
        let mut rx = self.drained.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|d| *d))
            .await
            .is_ok()
    }

    /// Kills everything in the container now, without waiting.
    pub(super) fn kill_now(&self) {
        self.stopping.store(true, Ordering::Release);
        let state = *self.state.borrow();
        let drained = *self.drained.borrow();
        if matches!(state, ProcState::Running { .. } | ProcState::Exited { .. }) && !drained {
            self.kill(Signal::SIGKILL);
        }
    }

    /// Sends `signal` to every process of the container.
    ///
    /// Once the leader is reaped, a container with a cgroup is signalled
    /// through the cgroup only: its process group may be empty by then, and
    /// an empty group's id is a free pid that may already lead an unrelated
    /// group (pids are reused once they wrap at `pid_max`), while the cgroup
    /// holds every member of the group anyway. Without a cgroup the group is
    /// all there is; the container is then drained (and no longer signalled)
    /// within a sweep of the group becoming empty.
    pub(super) fn kill(&self, signal: Signal) {
        let Some(run) = self.run.get() else {
            return;
        };
        let leader_reaped = matches!(*self.state.borrow(), ProcState::Exited { .. });
        let pgid = (run.cgroup.is_none() || !leader_reaped).then_some(run.pgid);
        kill_group(pgid, run.cgroup.as_deref(), signal);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        // Last line of defence when the tokio runtime is torn down with
        // containers still running: their processes must not outlive it.
        let drained = *self.drained.borrow();
        if !drained {
            self.kill(Signal::SIGKILL);
        }
    }
}

/// Sends `signal` to the process group (when given) and, with a cgroup, to
/// every process in it (SIGKILL through `cgroup.kill`).
pub(super) fn kill_group(pgid: Option<i32>, cgroup: Option<&Cgroup>, signal: Signal) {
    if let Some(pgid) = pgid {
        match killpg(Pid::from_raw(pgid), signal) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => {
                tracing::warn!(pgid, %signal, error = %e, "failed to signal process group")
            }
        }
    }
    if let Some(cg) = cgroup {
        if signal == Signal::SIGKILL {
            cg.kill();
        } else {
            for pid in cg.pids() {
                let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
            }
        }
    }
}
