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

/// Open files a container start never takes from the agent: its API, its
/// store and its own logs keep working at the limit (a start that would
/// take them fails saying "too many open files" instead). A quarter of
/// the limit when that is less.
pub const RESERVED_FILES: u64 = 64;

/// [`RESERVED_FILES`] under a soft limit of `soft`.
pub fn reserved_files(soft: u64) -> u64 {
    RESERVED_FILES.min(soft / 4)
}

/// About what one start opens at most (pipes, sockets, its keeper's).
const PER_START: u64 = 8;

/// `Err(EMFILE)` when starting one more container would leave the agent
/// fewer than [`reserved_files`] open files. Cheap while far from the
/// limit: the lowest free descriptor (every one below it is in use) is
/// probed with one `dup`, and only past half the limit are the open
/// descriptors counted.
pub(crate) fn check_headroom() -> std::io::Result<()> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0
        || limit.rlim_cur == libc::RLIM_INFINITY
    {
        return Ok(());
    }
    let soft = limit.rlim_cur;
    let need = reserved_files(soft) + PER_START;
    // SAFETY: dup of standard error; the copy is closed at once. An
    // EMFILE here is the answer itself.
    let lowest = unsafe { libc::fcntl(libc::STDERR_FILENO, libc::F_DUPFD_CLOEXEC, 0) };
    if lowest < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::EMFILE) => Err(e),
            // No standard error to copy: count instead.
            _ => counted(soft, need),
        };
    }
    // SAFETY: the descriptor just made, ours alone.
    unsafe { libc::close(lowest) };
    if (lowest as u64) + need <= soft / 2 {
        return Ok(());
    }
    counted(soft, need)
}

fn counted(soft: u64, need: u64) -> std::io::Result<()> {
    let open = match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => d.count() as u64,
        Err(e) if e.raw_os_error() == Some(libc::EMFILE) => return Err(e),
        Err(_) => return Ok(()),
    };
    if open + need > soft {
        Err(std::io::Error::from_raw_os_error(libc::EMFILE))
    } else {
        Ok(())
    }
}
