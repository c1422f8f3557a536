//! The open files limit: a node with many replicas needs more than the
//! usual soft limit of 1024 (a running replica holds about three
//! descriptors: two pipes and its keeper's socket, or a pidfd without a
//! keeper; three log files more while it writes output), so the agent raises its soft limit
//! to the hard one at start, as systemd does for itself. Its children get
//! the limit they would have had: many programs still use `select(2)`,
//! which breaks past 1024.

use std::sync::OnceLock;

/// The limit the process had before [`raise_nofile`] (`None`: not raised).
static BEFORE: OnceLock<libc::rlimit> = OnceLock::new();

/// What [`raise_nofile`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raised {
    /// The soft limit before.
    pub from: u64,
    /// The soft limit now.
    pub to: u64,
}

/// Raises the soft `RLIMIT_NOFILE` of this process to its hard limit
/// (once; later calls report the first). Children spawned by the process
/// runtime get the soft limit from before.
pub fn raise_nofile() -> std::io::Result<Raised> {
    let mut now = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if let Some(before) = BEFORE.get() {
        return Ok(Raised {
            from: before.rlim_cur,
            to: now.rlim_cur,
        });
    }
    let before = now;
    if now.rlim_cur < now.rlim_max {
        now.rlim_cur = now.rlim_max;
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &now) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    let _ = BEFORE.set(before);
    Ok(Raised {
        from: before.rlim_cur,
        to: now.rlim_cur,
    })
}

/// The limit children should get back, when it was raised.
pub(crate) fn inherited_nofile() -> Option<libc::rlimit> {
    BEFORE.get().copied().filter(|b| b.rlim_cur < b.rlim_max)
}
