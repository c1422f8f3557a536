//! One container: its state, its init's pidfd, and the task that sees the
//! init exit.
//!
//! After `runc create` exits, the container's init is re-parented to the
//! node (a child subreaper), so it is our child: a pidfd becomes readable
//! when it exits and `waitid(P_PIDFD)` reaps it and reads its status. That
//! is the only wait on it; the process runtime's reaper leaves it alone (it
//! reaps only members of its own process groups and cgroups, and the init
//! leads its own session in the container's cgroup). Signals go through the
//! pidfd too, so a recycled pid can never be hit.
//!
//! A kept container's init (live restore, `oci/kept.rs`) is its keeper's
//! child instead: the keeper reports its exit over its connection, and the
//! pidfd serves only to signal it.

use std::{
    os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use tokio::{io::unix::AsyncFd, sync::watch, task::AbortHandle};

use super::bundle::Bundle;
use crate::runtime::{ContainerState, ExitStatus, LogBuffer, Signal, keeper::KeeperFiles};

/// Where a container is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OciState {
    /// `runc create` done: the init waits for `start`.
    Created { pid: u32 },
    /// Started.
    Running { pid: u32 },
    /// The init exited (and was reaped).
    Exited { status: ExitStatus },
}

pub(crate) struct Entry {
    pub(crate) bundle: Bundle,
    /// `None` for an adopted container that ended while no agent watched.
    pub(crate) pidfd: Option<Arc<OwnedFd>>,
    pub(crate) state: watch::Sender<OciState>,
    pub(crate) logs: LogBuffer,
    pub(crate) readers: Vec<AbortHandle>,
    /// Counts streams that reached their end (2 = all output read).
    pub(crate) eof: watch::Receiver<u8>,
    /// OOM kills in the container's cgroup, read when the init exited.
    pub(crate) oom_kills: AtomicU64,
    pub(crate) paused: AtomicBool,
    pub(crate) cgroup: String,
    /// The keeper's files, when the init runs under a keeper (live restore).
    pub(crate) keeper: Option<KeeperFiles>,
}

impl Entry {
    pub(crate) fn container_state(&self) -> ContainerState {
        match *self.state.borrow() {
            OciState::Created { .. } => ContainerState::Created,
            OciState::Running { pid } => ContainerState::Running { pid },
            OciState::Exited { status } => ContainerState::Exited { status },
        }
    }

    pub(crate) fn state_name(&self) -> String {
        self.container_state().to_string()
    }

    pub(crate) fn exit_status(&self) -> Option<ExitStatus> {
        match *self.state.borrow() {
            OciState::Exited { status } => Some(status),
            _ => None,
        }
    }

    /// Waits for the init to exit; `None` if it exceeds `limit`.
    pub(crate) async fn exited_within(&self, limit: Duration) -> Option<ExitStatus> {
        let mut rx = self.state.subscribe();
        let wait = rx.wait_for(|s| matches!(s, OciState::Exited { .. }));
        match tokio::time::timeout(limit, wait).await {
            Ok(Ok(s)) => match *s {
                OciState::Exited { status } => Some(status),
                _ => None,
            },
            _ => None,
        }
    }

    /// Sends `signal` to the init through its pidfd (a no-op once it exited).
    pub(crate) fn kill(&self, signal: Signal) {
        if let Some(fd) = &self.pidfd {
            pidfd_send_signal(fd, signal);
        }
    }
}

pub(crate) fn pidfd_send_signal(fd: &OwnedFd, signal: Signal) {
    // SAFETY: a plain syscall on a pidfd we own, no pointers passed but null.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            signal as libc::c_int,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        );
    }
}

/// A pidfd for `pid`.
pub(crate) fn pidfd_open(pid: u32) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits (event-driven) for the process behind `pidfd` to exit and reaps it.
pub(crate) async fn wait_exit(pidfd: Arc<OwnedFd>) -> ExitStatus {
    let dup = match pidfd.try_clone() {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "failed to duplicate a pidfd");
            return ExitStatus::Code(-1);
        }
    };
    // SAFETY: `dup` is an OwnedFd moved into the AsyncFd, which owns it
    // (open, same description) until it is dropped.
    let registered = unsafe { AsyncFd::register_with_interest(dup, tokio::io::Interest::READABLE) };
    let afd = match registered {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = ?e, "failed to watch a pidfd");
            return blocking_wait(pidfd).await;
        }
    };
    loop {
        let mut guard = match afd.readable().await {
            Ok(g) => g,
            Err(_) => return blocking_wait(pidfd).await,
        };
        match waitid(
            Id::PIDFd(afd.get_ref().as_fd()),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOHANG,
        ) {
            Ok(WaitStatus::Exited(_, code)) => return ExitStatus::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return ExitStatus::Signal(sig as i32),
            Ok(WaitStatus::StillAlive) => guard.clear_ready(),
            Ok(_) => guard.clear_ready(),
            Err(e) => {
                // Not our child (runc did not hand it over): it exited, but
                // its status is not ours to read.
                tracing::warn!(error = %e, "failed to reap a container init");
                return ExitStatus::Code(-1);
            }
        }
    }
}

async fn blocking_wait(pidfd: Arc<OwnedFd>) -> ExitStatus {
    tokio::task::spawn_blocking(move || {
        match waitid(Id::PIDFd(pidfd.as_fd()), WaitPidFlag::WEXITED) {
            Ok(WaitStatus::Exited(_, code)) => ExitStatus::Code(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => ExitStatus::Signal(sig as i32),
            _ => ExitStatus::Code(-1),
        }
    })
    .await
    .unwrap_or(ExitStatus::Code(-1))
}

/// OOM kills recorded in the container's memory cgroup (`cgroup` as given
/// to runc, e.g. `/arbor-oci/ID`): cgroup v2 `memory.events`, else v1
/// `memory.oom_control`; 0 when neither can be read.
pub(crate) fn oom_kills(cgroup: &str) -> u64 {
    let rel = cgroup.trim_start_matches('/');
    let candidates: [PathBuf; 2] =
        if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
            [
                PathBuf::from("/sys/fs/cgroup")
                    .join(rel)
                    .join("memory.events"),
                PathBuf::new(),
            ]
        } else {
            [
                PathBuf::from("/sys/fs/cgroup/memory")
                    .join(rel)
                    .join("memory.oom_control"),
                PathBuf::from("/sys/fs/cgroup/unified")
                    .join(rel)
                    .join("memory.events"),
            ]
        };
    for path in candidates {
        if let Ok(text) = std::fs::read_to_string(&path)
            && let Some(n) = text.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse::<u64>().ok())
            })
        {
            return n;
        }
    }
    0
}

impl Entry {
    pub(crate) fn record_exit(&self, status: ExitStatus) {
        self.oom_kills
            .store(oom_kills(&self.cgroup), Ordering::Release);
        self.state.send_replace(OciState::Exited { status });
    }
}
