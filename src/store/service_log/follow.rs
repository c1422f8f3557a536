//! Following a service's log files as they grow: the last lines first,
//! then every new complete line of every replica (and of replicas added
//! later), each once, until the reader leaves.
//!
//! Driven by inotify on the replica directories (and on the service's, for
//! new replicas): nothing polls. Each followed file is read from the open
//! handle at its offset; when the file is rotated (renamed to `.1`, a new
//! one created), the rest of the old one is read through the handle, then
//! the new file from its start.

use std::{
    collections::HashMap,
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};
use tokio::{io::unix::AsyncFd, sync::mpsc};

use crate::node::ServiceLogLine;

/// The inotify instance, as tokio's reactor wants it.
struct Watches(Inotify);

impl std::os::fd::AsRawFd for Watches {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

/// A file's identity: its inode and, where the file system keeps it, its
/// birth time (ext4 hands a removed rotated file's inode to the next file
/// it creates: the inode alone would take a new file for one already read).
type FileId = (u64, Option<std::time::SystemTime>);

fn file_id(m: &std::fs::Metadata) -> FileId {
    (m.ino(), m.created().ok())
}

/// One followed file.
struct Tailed {
    replica: String,
    path: PathBuf,
    file: Option<File>,
    id: FileId,
    partial: Vec<u8>,
    /// Rotated files (by inode) that were there when the follow began, or
    /// that it read to their end: never read (again).
    done: std::collections::VecDeque<FileId>,
}

impl Tailed {
    /// Opens `path` at `offset` (a missing file is opened when it appears).
    fn new(replica: String, path: PathBuf, at_end: bool) -> (Self, Vec<u8>) {
        let mut t = Self {
            replica,
            path,
            file: None,
            id: (0, None),
            partial: Vec::new(),
            done: Default::default(),
        };
        t.done = t.rotated().into_iter().collect();
        let mut existing = Vec::new();
        if let Ok(mut f) = File::open(&t.path) {
            if at_end {
                let _ = f.read_to_end(&mut existing);
            }
            t.id = f.metadata().map_or((0, None), |m| file_id(&m));
            t.file = Some(f);
        }
        (t, existing)
    }

    /// Every new complete line: the rest of the open file, then, when the
    /// path now names another file (rotated), that one from its start.
    fn drain(&mut self) -> Vec<String> {
        let mut bytes = Vec::new();
        if let Some(f) = &mut self.file {
            let _ = f.read_to_end(&mut bytes);
        }
        if let Ok(meta) = std::fs::metadata(&self.path)
            && (self.file.is_none() || file_id(&meta) != self.id)
            && let Ok(mut f) = File::open(&self.path)
        {
            let current = f.metadata().map_or(file_id(&meta), |m| file_id(&m));
            // Rotated, maybe more than once since the last read. What was
            // appended to ours before it was rotated comes first (it is
            // complete now), then every rotated file not read yet, oldest
            // first (those already removed, past `max_files`, are lost),
            // then the live file from its start.
            if let Some(old) = &mut self.file {
                let _ = old.read_to_end(&mut bytes);
                self.read(self.id);
            }
            // The writer may be renaming `.1` to `.2` and so on right now:
            // a name can stand for another file by the time it is opened,
            // and a listing can miss or repeat a file. So each file is
            // known by what was opened (never read twice), and the listing
            // is taken again until it shows nothing unread.
            for _ in 0..8 {
                let mut rotated = self.rotated_paths();
                rotated.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
                let mut read_any = false;
                for (_, path) in rotated {
                    let Ok(mut r) = File::open(&path) else {
                        continue;
                    };
                    let Ok(id) = r.metadata().map(|m| file_id(&m)) else {
                        continue;
                    };
                    if id == current || self.done.contains(&id) {
                        continue;
                    }
                    let _ = r.read_to_end(&mut bytes);
                    self.read(id);
                    read_any = true;
                }
                if !read_any {
                    break;
                }
            }
            let _ = f.seek(SeekFrom::Start(0));
            let _ = f.read_to_end(&mut bytes);
            self.id = current;
            self.file = Some(f);
        }
        self.partial.extend_from_slice(&bytes);
        let Some(last_nl) = memchr::memrchr(b'\n', &self.partial) else {
            return Vec::new();
        };
        let rest = self.partial.split_off(last_nl + 1);
        let done = std::mem::replace(&mut self.partial, rest);
        String::from_utf8_lossy(&done)
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

/// Identities of files read kept at most (a directory listing taken
/// during a rename may miss a file, so they are not pruned by listing).
const MAX_DONE: usize = 4096;

impl Tailed {
    /// Remembers that file `id` was read to its end.
    fn read(&mut self, id: FileId) {
        if self.done.len() >= MAX_DONE {
            self.done.pop_front();
        }
        self.done.push_back(id);
    }

    /// The rotated files beside the followed one (`name.1`, `name.2`, ...):
    /// number and path.
    fn rotated_paths(&self) -> Vec<(u32, PathBuf)> {
        let (Some(dir), Some(name)) = (
            self.path.parent(),
            self.path.file_name().and_then(|n| n.to_str()),
        ) else {
            return Vec::new();
        };
        let prefix = format!("{name}.");
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name().into_string().ok()?;
                let n: u32 = file.strip_prefix(&prefix)?.parse().ok()?;
                Some((n, e.path()))
            })
            .collect()
    }

    /// The identities of the rotated files there now (opened, so that
    /// each is the file's own).
    fn rotated(&self) -> Vec<FileId> {
        self.rotated_paths()
            .into_iter()
            .filter_map(|(_, path)| File::open(path).ok()?.metadata().ok())
            .map(|m| file_id(&m))
            .collect()
    }
}

/// Follows log `name` (`full.log`, ...) of the replicas in `service_dir`
/// (or only `replica`): sends the last `tail` lines, then each new line,
/// until `tx` is closed.
pub async fn follow(
    service_dir: PathBuf,
    name: String,
    replica: Option<String>,
    tail: usize,
    tx: mpsc::Sender<ServiceLogLine>,
) -> io::Result<()> {
    let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?;
    std::fs::create_dir_all(&service_dir)?;
    let dir_wd = inotify.add_watch(
        &service_dir,
        AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ONLYDIR,
    )?;
    let file_flags = AddWatchFlags::IN_MODIFY
        | AddWatchFlags::IN_CREATE
        | AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE;
    let mut followed: HashMap<WatchDescriptor, Tailed> = HashMap::new();
    let mut first = Vec::new();
    let mut replicas: Vec<String> = std::fs::read_dir(&service_dir)?
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|r| replica.as_ref().is_none_or(|want| want == r))
        .collect();
    replicas.sort();
    for r in replicas {
        let dir = service_dir.join(&r);
        let wd = inotify.add_watch(&dir, file_flags)?;
        let (mut t, mut existing) = Tailed::new(r.clone(), dir.join(&name), true);
        let cut = memchr::memrchr(b'\n', &existing).map_or(0, |i| i + 1);
        t.partial = existing.split_off(cut);
        first.extend(
            String::from_utf8_lossy(&existing)
                .lines()
                .map(|l| ServiceLogLine {
                    replica: r.clone(),
                    text: l.to_owned(),
                }),
        );
        followed.insert(wd, t);
    }
    if name == "full.log" {
        first.sort_by(|a, b| a.text.get(..27).cmp(&b.text.get(..27)));
    }
    let skip = first.len().saturating_sub(tail);
    for line in first.into_iter().skip(skip) {
        if tx.send(line).await.is_err() {
            return Ok(());
        }
    }
    // SAFETY: the descriptor is owned by the `Inotify` inside, which the
    // `AsyncFd` owns: it stays open and the same until the `AsyncFd` drops.
    let fd =
        unsafe { AsyncFd::register_with_interest(Watches(inotify), tokio::io::Interest::READABLE) }
            .map_err(io::Error::from)?;
    loop {
        let mut ready = tokio::select! {
            r = fd.readable() => r?,
            () = tx.closed() => return Ok(()),
        };
        let events = match ready.get_inner().0.read_events() {
            Ok(e) => e,
            Err(nix::errno::Errno::EAGAIN) => {
                ready.clear_ready();
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        let mut lines = Vec::new();
        for event in events {
            if event.wd == dir_wd {
                let Some(r) = event.name.and_then(|n| n.into_string().ok()) else {
                    continue;
                };
                if replica.as_ref().is_some_and(|want| *want != r) {
                    continue;
                }
                let dir = service_dir.join(&r);
                if let Ok(wd) = fd.get_ref().0.add_watch(&dir, file_flags)
                    && !followed.contains_key(&wd)
                {
                    let (mut t, _) = Tailed::new(r, dir.join(&name), false);
                    lines.extend(t.drain().into_iter().map(|text| ServiceLogLine {
                        replica: t.replica.clone(),
                        text,
                    }));
                    followed.insert(wd, t);
                }
                continue;
            }
            let Some(t) = followed.get_mut(&event.wd) else {
                continue;
            };
            let about_it = event
                .name
                .as_ref()
                .is_some_and(|n| Path::new(n).to_string_lossy().starts_with(name.as_str()));
            if !about_it {
                continue;
            }
            let replica = t.replica.clone();
            lines.extend(t.drain().into_iter().map(|text| ServiceLogLine {
                replica: replica.clone(),
                text,
            }));
        }
        for line in lines {
            if tx.send(line).await.is_err() {
                return Ok(());
            }
        }
    }
}
