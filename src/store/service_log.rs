//! Durable output of a service's replicas: per replica
//! `<state-dir>/services/<service>/<replica>/` holds `stdout.log`,
//! `stderr.log` and `full.log` (each line `<RFC 3339 time> [STDOUT] ...`, as
//! job logs), appended across restarts of the replica, with a
//! `[ARBOR]` marker line in `full.log` at each start and exit. Each file is
//! rotated by size: past `max_size` it becomes `NAME.1` (older ones shift
//! to `.2` ... `.<max_files - 1>`, the oldest dropped), so a replica keeps
//! at most `max_files` files of about `max_size` per log.
//!
//! Like job capture, writes are plain blocking `write` calls on the
//! runtime's reader thread (page cache, not synced), one per chunk and
//! file; `full.log` lines of one chunk share one timestamp.
//!
//! Files are open only while a stream of the replica is: a stream's file
//! opens at its first chunk and closes when the stream ends, `full.log`
//! stays open while either stream is, and a marker line written between
//! runs opens, appends and closes it. A replica that is not running (in
//! back-off, failing to start) holds no file, so replicas that cannot
//! start for lack of open files do not keep the others from starting. A
//! file that cannot be opened or written is logged and skipped until the
//! replica's next run; the service runs on.

use std::{
    fs::{self, File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{Mutex, MutexGuard, PoisonError},
};

use chrono::{SecondsFormat, Utc};

mod follow;
pub use follow::follow;

use crate::{
    runtime::{LogStream, Output, OutputSink},
    spec::LogLimits,
};

/// A partial line longer than this goes to `full.log` as a line of its own.
const MAX_PARTIAL: usize = 64 * 1024;

/// The log files of one replica (the sink its runtime writes to).
pub struct ServiceLog {
    streams: [Mutex<Stream>; 2],
    full: Mutex<Full>,
}

/// `full.log`, the lines held back until the next marker, and which
/// streams are open (output seen, end not yet).
struct Full {
    file: Lazy,
    held: Option<Vec<u8>>,
    open: [bool; 2],
}

/// Held lines are written anyway past this size.
const MAX_HELD: usize = 1 << 20;

struct Stream {
    label: &'static str,
    /// Output seen and the end not yet.
    open: bool,
    file: Lazy,
    partial: Vec<u8>,
    scratch: Vec<u8>,
}

/// A log file opened on first use and closed by [`Lazy::release`]; one
/// that failed stays unused until then.
struct Lazy {
    path: PathBuf,
    limits: LogLimits,
    file: Option<Rotating>,
    failed: bool,
}

impl Lazy {
    fn new(path: PathBuf, limits: LogLimits) -> Self {
        Self {
            path,
            limits,
            file: None,
            failed: false,
        }
    }

    /// Appends `bytes`, opening the file first if needed. A failure is
    /// logged once; the file is then skipped until it is released.
    fn write(&mut self, bytes: &[u8]) {
        if self.failed {
            return;
        }
        let result = match &mut self.file {
            Some(f) => f.write(bytes),
            None => Rotating::open(self.path.clone(), self.limits).and_then(|f| {
                let f = self.file.insert(f);
                f.write(bytes)
            }),
        };
        if let Err(e) = result {
            tracing::warn!(file = %self.path.display(), error = %e, "failed to write a service log; it is not written until the replica's next run");
            self.file = None;
            self.failed = true;
        }
    }

    /// Closes the file (it opens again at the next write).
    fn release(&mut self) {
        self.file = None;
        self.failed = false;
    }
}

/// A log file that rotates by size.
struct Rotating {
    path: PathBuf,
    file: File,
    size: u64,
    limits: LogLimits,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

impl Rotating {
    fn open(path: PathBuf, limits: LogLimits) -> io::Result<Self> {
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(Self {
            path,
            file,
            size,
            limits,
        })
    }

    /// Appends `bytes`, rotating whenever the file would pass `max_size`:
    /// a chunk is split at its last newline that fits (or where the file
    /// is full, for a line longer than `max_size`).
    fn write(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        let max = self.limits.max_size.as_u64();
        loop {
            let room = usize::try_from(max.saturating_sub(self.size)).unwrap_or(usize::MAX);
            if bytes.len() <= room {
                self.file.write_all(bytes)?;
                self.size += bytes.len() as u64;
                return Ok(());
            }
            let cut = match memchr::memrchr(b'\n', &bytes[..room]) {
                Some(nl) => nl + 1,
                None if self.size == 0 => room.max(1),
                None => 0,
            };
            self.file.write_all(&bytes[..cut])?;
            self.size += cut as u64;
            bytes = &bytes[cut..];
            self.rotate()?;
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.limits.max_files.max(1);
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        if keep == 1 {
            // Only the live file: start it over.
            self.file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .mode(0o600)
                .open(&self.path)?;
            self.size = 0;
            return Ok(());
        }
        let _ = fs::remove_file(numbered(keep - 1));
        for n in (1..keep - 1).rev() {
            let _ = fs::rename(numbered(n), numbered(n + 1));
        }
        fs::rename(&self.path, numbered(1))?;
        self.file = open_append(&self.path)?;
        self.size = 0;
        Ok(())
    }
}

/// `<RFC 3339 time> [LABEL] `.
fn line_prefix(label: &str) -> String {
    let mut prefix = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    prefix.push_str(label);
    prefix
}

impl ServiceLog {
    /// Opens (appending) the logs of one replica in `dir`, creating it.
    pub fn open(dir: &Path, limits: LogLimits) -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let file = |name: &str| Lazy::new(dir.join(name), limits);
        let stream = |label, file| {
            Mutex::new(Stream {
                label,
                open: false,
                file,
                partial: Vec::new(),
                scratch: Vec::new(),
            })
        };
        Ok(Self {
            streams: [
                stream(" [STDOUT] ", file("stdout.log")),
                stream(" [STDERR] ", file("stderr.log")),
            ],
            full: Mutex::new(Full {
                file: file("full.log"),
                held: None,
                open: [false; 2],
            }),
        })
    }

    /// As a sink for a container spec.
    pub fn output(self) -> Output {
        Output::new(self)
    }

    fn write_full(&self, bytes: &[u8]) {
        let mut full = lock(&self.full);
        if let Some(held) = full.held.as_mut()
            && held.len() + bytes.len() <= MAX_HELD
        {
            held.extend_from_slice(bytes);
            return;
        }
        if let Some(held) = full.held.take() {
            Self::write_file(&mut full, &held);
        }
        Self::write_file(&mut full, bytes);
    }

    fn write_file(full: &mut Full, bytes: &[u8]) {
        full.file.write(bytes);
    }

    /// Closes `full.log` unless a stream is open.
    fn release_idle(full: &mut Full) {
        if full.open == [false; 2] {
            full.file.release();
        }
    }

    fn flush_partial(&self, s: &mut Stream) {
        if s.partial.is_empty() {
            return;
        }
        let mut line = line_prefix(s.label).into_bytes();
        line.extend_from_slice(&s.partial);
        line.push(b'\n');
        s.partial.clear();
        self.write_full(&line);
    }
}

impl Drop for ServiceLog {
    /// Lines still held (a start that never reported) are not lost.
    fn drop(&mut self) {
        let full = self
            .full
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(held) = full.held.take() {
            Self::write_file(full, &held);
        }
        full.file.release();
    }
}

impl OutputSink for ServiceLog {
    fn write(&self, stream: LogStream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let i = match stream {
            LogStream::Stdout => 0,
            LogStream::Stderr => 1,
        };
        let mut guard = lock(&self.streams[i]);
        let s = &mut *guard;
        if !s.open {
            s.open = true;
            lock(&self.full).open[i] = true;
        }
        s.file.write(bytes);
        let Some(first_nl) = memchr::memchr(b'\n', bytes) else {
            s.partial.extend_from_slice(bytes);
            if s.partial.len() >= MAX_PARTIAL {
                self.flush_partial(s);
            }
            return;
        };
        let prefix = line_prefix(s.label);
        let prefix = prefix.as_bytes();
        let mut scratch = std::mem::take(&mut s.scratch);
        scratch.clear();
        scratch.extend_from_slice(prefix);
        scratch.extend_from_slice(&s.partial);
        s.partial.clear();
        scratch.extend_from_slice(&bytes[..=first_nl]);
        let rest = &bytes[first_nl + 1..];
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', rest) {
            scratch.extend_from_slice(prefix);
            scratch.extend_from_slice(&rest[start..=nl]);
            start = nl + 1;
        }
        s.partial.extend_from_slice(&rest[start..]);
        self.write_full(&scratch);
        s.scratch = scratch;
    }

    fn close(&self, stream: LogStream) {
        let i = match stream {
            LogStream::Stdout => 0,
            LogStream::Stderr => 1,
        };
        let mut guard = lock(&self.streams[i]);
        self.flush_partial(&mut guard);
        guard.file.release();
        guard.open = false;
        let mut full = lock(&self.full);
        full.open[i] = false;
        Self::release_idle(&mut full);
    }

    fn mark(&self, line: &str) {
        let mut text = line_prefix(" [ARBOR] ");
        text.push_str(line);
        text.push('\n');
        let mut full = lock(&self.full);
        let held = full.held.take();
        Self::write_file(&mut full, text.as_bytes());
        if let Some(held) = held {
            Self::write_file(&mut full, &held);
        }
        Self::release_idle(&mut full);
    }

    fn hold(&self) {
        lock(&self.full).held.get_or_insert_with(Vec::new);
    }
}

/// The directory of `replica` of `service` under a node's state dir.
pub fn replica_dir(state_dir: &Path, service: &str, replica: &str) -> PathBuf {
    state_dir.join("services").join(service).join(replica)
}

/// The last `n` lines of log `name` (`full.log`, `stdout.log`,
/// `stderr.log`) in `dir`, oldest first, reading back into rotated files
/// (`name.1`, `name.2`, ...) when the live one has fewer. A missing file
/// has no lines.
pub fn tail(dir: &Path, name: &str, n: usize) -> io::Result<Vec<String>> {
    let mut lines: Vec<String> = Vec::new();
    let mut files = vec![dir.join(name)];
    files.extend((1..1000).map(|i| dir.join(format!("{name}.{i}"))));
    for path in files {
        if lines.len() >= n {
            break;
        }
        let text = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => break,
            Err(e) => return Err(e),
        };
        let want = n - lines.len();
        let mut older: Vec<String> = String::from_utf8_lossy(&text)
            .lines()
            .rev()
            .take(want)
            .map(str::to_owned)
            .collect();
        older.reverse();
        older.append(&mut lines);
        lines = older;
    }
    Ok(lines)
}
