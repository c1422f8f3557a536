//! Room kept aside for the records: `<state-dir>/reserve.bin`.
//!
//! A command that fills the disk with its output must not also make its
//! own record lie. When a record cannot be written for lack of space, the
//! store deletes this file (1/32 of the file system, between 8 KiB and
//! 1 MiB) and writes the record in the room it leaves, so that what the API
//! acknowledged as finished is what the next agent reads back. The file is
//! made again when a store is opened with room for it. (CockroachDB's
//! "ballast file" is the same idea.)

use std::{
    fs,
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::atomic::{AtomicBool, Ordering},
};

/// The file, under the state dir.
pub const RESERVE_FILE: &str = "reserve.bin";

const MIN: u64 = 8 * 1024;
const MAX: u64 = 1024 * 1024;

/// The reserve of one state dir.
#[derive(Debug)]
pub(crate) struct Reserve {
    path: PathBuf,
    held: AtomicBool,
}

impl Reserve {
    /// Makes (or finds) the reserve in `state_dir`. Without room for it,
    /// there is none (and a warning says so).
    pub(crate) fn open(state_dir: &Path) -> Reserve {
        let path = state_dir.join(RESERVE_FILE);
        let size = nix::sys::statvfs::statvfs(state_dir).map_or(MAX, |s| {
            s.blocks()
                .saturating_mul(s.fragment_size())
                .checked_div(32)
                .unwrap_or(MAX)
                .clamp(MIN, MAX)
        });
        let held = match fs::metadata(&path) {
            Ok(m) if m.len() >= size => true,
            _ => match fill(&path, size) {
                Ok(()) => true,
                Err(e) => {
                    let _ = fs::remove_file(&path);
                    tracing::warn!(file = %path.display(), error = %e, "failed to set aside room for the records: a full state dir may lose a terminal record");
                    false
                }
            },
        };
        Reserve {
            path,
            held: AtomicBool::new(held),
        }
    }

    /// Frees the room for a record that found the disk full: true when
    /// there was room to free (the write is then worth trying again).
    pub(crate) fn release(&self) -> bool {
        if !self.held.swap(false, Ordering::AcqRel) {
            return false;
        }
        let freed = fs::remove_file(&self.path).is_ok();
        tracing::warn!(file = %self.path.display(), "the state dir is full: released the room kept for records; free some space (it is set aside again at the next start)");
        freed
    }
}

fn fill(path: &Path, size: u64) -> io::Result<()> {
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // Written, not sparse: the blocks must really be taken.
    let chunk = vec![0u8; 64 * 1024];
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()
}

/// Whether `e` says the disk (or the quota) is full.
pub(crate) fn is_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}
