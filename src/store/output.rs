//! Capture of an execution's output: `stdout.log`, `stderr.log`, `full.log`
//! and a bounded live tail of each in memory.
//!
//! Built for throughput. Measured on a shared 2-core machine
//! (`tests/store_throughput.rs`): 1 GiB of ~80-byte lines in 64 KiB chunks
//! is captured at ~600-840 MB/s of output, ~7-10 M lines/s (writing it to
//! `stdout.log` plus ~1.5 GiB of `full.log`), where a plain `std::fs::File`
//! copy of the same bytes runs at ~2.3-3.7 GB/s. How:
//!
//! - writes go straight to `std::fs::File` (one `write` call per chunk and
//!   file, no async file I/O and its blocking-pool hop per write, no
//!   buffering that would keep `tail -f` of a log behind);
//! - `full.log` lines are found with `memchr` and all lines completed by one
//!   chunk share one timestamp, formatted once per chunk; the chunk's lines
//!   are assembled in a reused buffer and written with one call;
//! - each stream has its own lock, so the stdout and stderr readers only
//!   meet on the short write to `full.log`.

use std::{
    fmt,
    fs::File,
    io::{self, Write},
    path::PathBuf,
    sync::{Mutex, MutexGuard, PoisonError},
};

use chrono::{SecondsFormat, Utc};
use tokio::sync::watch;

use super::{
    StoreError,
    snapshot::{LogSnapshot, LogSnapshotQuery, SnapshotStream, select},
};
use crate::runtime::{LogStream, OutputSink};

/// A partial line longer than this is written to `full.log` as a line of
/// its own (the rest follows on the next line, same label): a stream
/// without newlines never grows memory without bound.
const MAX_PARTIAL: usize = 64 * 1024;

const STDOUT_BIT: u8 = 1;
const STDERR_BIT: u8 = 2;
const BOTH: u8 = STDOUT_BIT | STDERR_BIT;

/// The output of one execution: the sink its runtime writes to (through
/// [`crate::Output`]), the log files and the live tail.
///
/// Cheap to clone; every clone is the same output. Chunks of each stream
/// are appended raw to `stdout.log` / `stderr.log` and as labelled,
/// timestamped lines to `full.log`, where a partial last line is held until
/// its newline arrives, the stream closes or [`ExecutionOutput::finish`]
/// runs (then it is written with a newline added). Writes never fail or
/// panic: the first I/O error is recorded (see [`ExecutionOutput::error`]),
/// the failed file is no longer written, and the live tail goes on.
///
/// Writes are blocking file writes on the caller's thread (page-cache
/// writes, not synced), as the runtime's readers expect of a sink.
#[derive(Clone)]
pub struct ExecutionOutput {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    streams: [Mutex<StreamState>; 2],
    full: Mutex<FullState>,
    /// Bits of the streams closed.
    closed: watch::Sender<u8>,
    /// Every file whose writing stopped, first failure first.
    error: Mutex<Vec<WriteError>>,
}

struct LogFile {
    file: File,
    path: PathBuf,
}

struct StreamState {
    label: &'static str,
    file: Option<LogFile>,
    ring: Ring,
    observed: u64,
    /// The start of a line whose newline has not arrived.
    partial: Vec<u8>,
    /// `full.log` bytes of the chunk being written.
    scratch: Vec<u8>,
    closed: bool,
}

struct FullState {
    file: Option<LogFile>,
    ring: Ring,
    observed: u64,
}

struct WriteError {
    path: PathBuf,
    kind: io::ErrorKind,
    message: String,
    /// The file's size when its writing stopped: what it keeps.
    kept: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn index(stream: LogStream) -> usize {
    match stream {
        LogStream::Stdout => 0,
        LogStream::Stderr => 1,
    }
}

fn bit(stream: LogStream) -> u8 {
    match stream {
        LogStream::Stdout => STDOUT_BIT,
        LogStream::Stderr => STDERR_BIT,
    }
}

/// `<RFC 3339 time> [LABEL] `: what starts every `full.log` line of a chunk.
fn line_prefix(label: &str) -> String {
    let mut prefix = Utc::now().to_rfc3339_opts(SecondsFormat::Micros, true);
    prefix.push_str(label);
    prefix
}

impl ExecutionOutput {
    /// An output with no files: only the live tail (tests, in-process jobs
    /// that need no durable log).
    pub fn in_memory(max_log_size: u64) -> Self {
        Self::with_files(max_log_size, None)
    }

    /// `files`: stdout, stderr and full log, opened for appending.
    pub(crate) fn with_files(max_log_size: u64, files: Option<[(File, PathBuf); 3]>) -> Self {
        let cap = usize::try_from(max_log_size).unwrap_or(usize::MAX);
        let [out, err, full] = match files {
            Some(f) => f.map(|(file, path)| Some(LogFile { file, path })),
            None => [None, None, None],
        };
        let stream = |label, file| {
            Mutex::new(StreamState {
                label,
                file,
                ring: Ring::new(cap),
                observed: 0,
                partial: Vec::new(),
                scratch: Vec::new(),
                closed: false,
            })
        };
        Self {
            inner: std::sync::Arc::new(Inner {
                streams: [stream(" [STDOUT] ", out), stream(" [STDERR] ", err)],
                full: Mutex::new(FullState {
                    file: full,
                    ring: Ring::new(cap),
                    observed: 0,
                }),
                closed: watch::Sender::new(0),
                error: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Appends a chunk of `stream` (any bytes, any split into chunks).
    pub fn write(&self, stream: LogStream, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut guard = lock(&self.inner.streams[index(stream)]);
        let s = &mut *guard;
        s.observed += bytes.len() as u64;
        s.ring.push(bytes);
        if let Some(f) = &mut s.file
            && let Err(e) = f.file.write_all(bytes)
        {
            self.record_error(f, &e);
            s.file = None;
        }

        // full.log: every line this chunk completes, with one timestamp.
        let Some(first_nl) = memchr::memchr(b'\n', bytes) else {
            s.partial.extend_from_slice(bytes);
            if s.partial.len() >= MAX_PARTIAL {
                self.flush_partial(s);
            }
            return;
        };
        let prefix = line_prefix(s.label);
        let prefix = prefix.as_bytes();
        let scratch = &mut s.scratch;
        scratch.clear();
        scratch.extend_from_slice(prefix);
        scratch.extend_from_slice(&s.partial);
        s.partial.clear();
        scratch.extend_from_slice(&bytes[..=first_nl]);
        let rest = &bytes[first_nl + 1..];
        let mut line = 0;
        for nl in memchr::memchr_iter(b'\n', rest) {
            scratch.extend_from_slice(prefix);
            scratch.extend_from_slice(&rest[line..=nl]);
            line = nl + 1;
        }
        s.partial.extend_from_slice(&rest[line..]);
        self.write_full(&s.scratch);
        if s.partial.len() >= MAX_PARTIAL {
            self.flush_partial(s);
        }
    }

    /// Writes `line` and a newline (when it has none) to `stream`: for
    /// in-process jobs.
    pub fn write_line(&self, stream: LogStream, line: &str) {
        if line.ends_with('\n') {
            self.write(stream, line.as_bytes());
        } else {
            let mut bytes = Vec::with_capacity(line.len() + 1);
            bytes.extend_from_slice(line.as_bytes());
            bytes.push(b'\n');
            self.write(stream, &bytes);
        }
    }

    /// Marks `stream` ended: its partial last line goes to `full.log`. A
    /// second close of a stream does nothing.
    pub fn close(&self, stream: LogStream) {
        {
            let mut s = lock(&self.inner.streams[index(stream)]);
            if s.closed {
                return;
            }
            s.closed = true;
            self.flush_partial(&mut s);
        }
        self.inner.closed.send_modify(|m| *m |= bit(stream));
    }

    /// True once both streams were closed.
    pub fn closed(&self) -> bool {
        *self.inner.closed.borrow() == BOTH
    }

    /// Resolves once both streams were closed (at once if they are). Bound
    /// it with a timeout: a descendant that keeps the pipes open keeps the
    /// streams open.
    pub async fn wait_closed(&self) {
        let mut rx = self.inner.closed.subscribe();
        // The sender lives in `self`, so this only returns when closed.
        let _ = rx.wait_for(|m| *m == BOTH).await;
    }

    /// Writes the partial last lines held for `full.log` (whether or not
    /// the streams were closed) and reports the first write error of this
    /// output, if any. Can be called more than once; output written after
    /// it is still captured.
    pub fn finish(&self) -> Result<(), StoreError> {
        for stream in &self.inner.streams {
            self.flush_partial(&mut lock(stream));
        }
        match lock(&self.inner.error).first() {
            None => Ok(()),
            Some(e) => Err(StoreError::Write {
                path: e.path.clone(),
                source: io::Error::new(e.kind, e.message.clone()),
            }),
        }
    }

    /// The first write error, as a message naming the file.
    pub fn error(&self) -> Option<String> {
        lock(&self.inner.error)
            .first()
            .map(|e| format!("failed to write {}: {}", e.path.display(), e.message))
    }

    /// Which log files stopped being written, and how much each kept, as
    /// the record says it (`stdout.log: kept 53248 of 1200000 bytes (No
    /// space left on device)`); `None` when every byte reached its file.
    pub fn incomplete(&self) -> Option<String> {
        let errors = lock(&self.inner.error);
        if errors.is_empty() {
            return None;
        }
        let observed = |path: &std::path::Path| match path.file_name().and_then(|n| n.to_str()) {
            Some(crate::store::STDOUT_FILE) => lock(&self.inner.streams[0]).observed,
            Some(crate::store::STDERR_FILE) => lock(&self.inner.streams[1]).observed,
            _ => lock(&self.inner.full).observed,
        };
        let parts: Vec<String> = errors
            .iter()
            .map(|e| {
                let name = e.path.file_name().map_or_else(
                    || e.path.display().to_string(),
                    |n| n.to_string_lossy().into_owned(),
                );
                let why = if e.kind == io::ErrorKind::StorageFull {
                    "the state dir is full".to_owned()
                } else {
                    e.message.clone()
                };
                format!(
                    "{name}: kept {} of {} bytes ({why})",
                    e.kept,
                    observed(&e.path).max(e.kept)
                )
            })
            .collect();
        Some(parts.join("; "))
    }

    /// Bytes `stream` received so far (for `full`: bytes of `full.log`).
    pub fn observed_bytes(&self, stream: SnapshotStream) -> u64 {
        match stream {
            SnapshotStream::Stdout => lock(&self.inner.streams[0]).observed,
            SnapshotStream::Stderr => lock(&self.inner.streams[1]).observed,
            SnapshotStream::Full => lock(&self.inner.full).observed,
        }
    }

    /// The tail of a log from memory: at most the last `max_log_size` bytes
    /// of it, trimmed by the query. The `full` tail holds complete lines
    /// only (a partial last line shows once it is written).
    pub fn snapshot(&self, query: LogSnapshotQuery) -> LogSnapshot {
        let shape = |ring: &mut Ring, observed: u64| {
            let at_line_start = ring.at_line_start();
            let data = ring.contiguous();
            let from = select(data, at_line_start, query.tail_lines, query.max_bytes);
            LogSnapshot::of(&data[from..], observed)
        };
        match query.stream {
            SnapshotStream::Stdout | SnapshotStream::Stderr => {
                let i = usize::from(query.stream == SnapshotStream::Stderr);
                let mut s = lock(&self.inner.streams[i]);
                let observed = s.observed;
                shape(&mut s.ring, observed)
            }
            SnapshotStream::Full => {
                let mut f = lock(&self.inner.full);
                let observed = f.observed;
                shape(&mut f.ring, observed)
            }
        }
    }

    /// Writes the held partial line of a stream (locked by the caller) to
    /// `full.log` with a newline.
    fn flush_partial(&self, s: &mut StreamState) {
        if s.partial.is_empty() {
            return;
        }
        let prefix = line_prefix(s.label);
        s.scratch.clear();
        s.scratch.extend_from_slice(prefix.as_bytes());
        s.scratch.extend_from_slice(&s.partial);
        s.scratch.push(b'\n');
        s.partial.clear();
        self.write_full(&s.scratch);
    }

    /// Appends complete lines to `full.log` and its tail (the caller holds
    /// the stream's lock, then this takes the full log's: always that order).
    fn write_full(&self, bytes: &[u8]) {
        let mut f = lock(&self.inner.full);
        f.observed += bytes.len() as u64;
        f.ring.push(bytes);
        if let Some(file) = &mut f.file
            && let Err(e) = file.file.write_all(bytes)
        {
            self.record_error(file, &e);
            f.file = None;
        }
    }

    fn record_error(&self, file: &LogFile, e: &io::Error) {
        let kept = file.file.metadata().map_or(0, |m| m.len());
        tracing::warn!(path = %file.path.display(), error = %e, kept_bytes = kept, "log write failed; the file is no longer written");
        lock(&self.inner.error).push(WriteError {
            path: file.path.clone(),
            kind: e.kind(),
            message: e.to_string(),
            kept,
        });
    }
}

impl OutputSink for ExecutionOutput {
    fn write(&self, stream: LogStream, bytes: &[u8]) {
        ExecutionOutput::write(self, stream, bytes);
    }

    fn close(&self, stream: LogStream) {
        ExecutionOutput::close(self, stream);
    }
}

impl Default for ExecutionOutput {
    /// An in-memory output with a 1 MiB tail.
    fn default() -> Self {
        Self::in_memory(1 << 20)
    }
}

impl fmt::Debug for ExecutionOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ExecutionOutput")
            .field("stdout_bytes", &self.observed_bytes(SnapshotStream::Stdout))
            .field("stderr_bytes", &self.observed_bytes(SnapshotStream::Stderr))
            .field("closed", &self.closed())
            .finish_non_exhaustive()
    }
}

/// The last `cap` bytes written, in a buffer that grows up to `cap` and
/// then wraps.
struct Ring {
    buf: Vec<u8>,
    cap: usize,
    /// Index of the oldest byte once the buffer is full (0 before).
    head: usize,
    /// Bytes dropped from the front.
    evicted: u64,
    /// The last byte dropped, to tell whether the oldest kept byte starts
    /// a line.
    last_evicted: u8,
}

impl Ring {
    fn new(cap: usize) -> Self {
        Self {
            buf: Vec::new(),
            cap,
            head: 0,
            evicted: 0,
            last_evicted: b'\n',
        }
    }

    /// True when the oldest byte kept starts a line.
    fn at_line_start(&self) -> bool {
        self.evicted == 0 || self.last_evicted == b'\n'
    }

    fn last_byte(&self) -> Option<u8> {
        let len = self.buf.len();
        (len > 0).then(|| self.buf[(self.head + len - 1) % len])
    }

    /// Reserves room for `n` bytes in all, growing geometrically up to `cap`.
    fn grow_to(&mut self, n: usize) {
        if self.buf.capacity() < n {
            let target = n.max(self.buf.len() * 2).min(self.cap).max(n);
            self.buf.reserve_exact(target - self.buf.len());
        }
    }

    fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        if data.len() >= self.cap {
            let drop = data.len() - self.cap;
            if drop > 0 {
                self.last_evicted = data[drop - 1];
            } else if let Some(b) = self.last_byte() {
                self.last_evicted = b;
            }
            self.evicted += (self.buf.len() + drop) as u64;
            self.buf.clear();
            self.head = 0;
            self.grow_to(self.cap);
            self.buf.extend_from_slice(&data[drop..]);
            return;
        }
        let room = self.cap - self.buf.len();
        let (fill, over) = data.split_at(data.len().min(room));
        if !fill.is_empty() {
            self.grow_to(self.buf.len() + fill.len());
            self.buf.extend_from_slice(fill);
        }
        if over.is_empty() {
            return;
        }
        // Full: overwrite the oldest `n` bytes (n < cap).
        let n = over.len();
        self.last_evicted = self.buf[(self.head + n - 1) % self.cap];
        self.evicted += n as u64;
        let first = (self.cap - self.head).min(n);
        self.buf[self.head..self.head + first].copy_from_slice(&over[..first]);
        self.buf[..n - first].copy_from_slice(&over[first..]);
        self.head = (self.head + n) % self.cap;
    }

    /// The bytes kept, oldest first.
    fn contiguous(&mut self) -> &[u8] {
        if self.head != 0 {
            self.buf.rotate_left(self.head);
            self.head = 0;
        }
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kept(r: &mut Ring) -> Vec<u8> {
        r.contiguous().to_vec()
    }

    #[test]
    fn ring_keeps_the_last_cap_bytes_of_any_sequence_of_pushes() {
        let mut all = Vec::new();
        let mut r = Ring::new(10);
        for (i, len) in [3, 4, 5, 1, 9, 10, 11, 2, 0, 7, 25, 1]
            .into_iter()
            .enumerate()
        {
            let chunk: Vec<u8> = (0..len).map(|j| b'a' + ((i * 7 + j) % 26) as u8).collect();
            r.push(&chunk);
            all.extend_from_slice(&chunk);
            let start = all.len().saturating_sub(10);
            assert_eq!(kept(&mut r), all[start..], "after push {i}");
            assert_eq!(r.evicted, start as u64);
            if start > 0 {
                assert_eq!(r.last_evicted, all[start - 1]);
            }
        }
    }

    #[test]
    fn ring_of_zero_bytes_keeps_nothing() {
        let mut r = Ring::new(0);
        r.push(b"abc\n");
        assert!(kept(&mut r).is_empty());
        assert!(r.at_line_start());
    }

    #[test]
    fn lines_split_across_chunks_are_joined_in_the_full_tail() {
        let out = ExecutionOutput::in_memory(1024);
        out.write(LogStream::Stdout, b"hel");
        out.write(LogStream::Stdout, b"lo\nwor");
        out.write(LogStream::Stdout, b"ld");
        out.close(LogStream::Stdout);
        let full = out
            .snapshot(LogSnapshotQuery::all(SnapshotStream::Full))
            .text;
        let lines: Vec<&str> = full.lines().map(|l| l.split_once(' ').unwrap().1).collect();
        assert_eq!(lines, ["[STDOUT] hello", "[STDOUT] world"]);
    }
}
