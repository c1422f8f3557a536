//! Tail snapshots of a log, from the live in-memory tail or from the files
//! on disk, with what they leave out.

use std::{fs::File, io, os::unix::fs::FileExt, path::Path};

use serde::{Deserialize, Serialize};

use super::{FULL_LOG_FILE, STDERR_FILE, STDOUT_FILE, StoreError};
use crate::runtime::LogStream;

/// Most bytes a snapshot read from disk holds when the query sets no
/// `max_bytes` (1 MiB): a snapshot never loads a whole big log.
pub const DEFAULT_DISK_SNAPSHOT_BYTES: usize = 1 << 20;

/// Which log a snapshot shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SnapshotStream {
    /// `stdout.log`: standard output as the process wrote it.
    Stdout,
    /// `stderr.log`: standard error as the process wrote it.
    Stderr,
    /// `full.log`: both, line by line, timestamped and labelled (default).
    #[default]
    Full,
}

impl SnapshotStream {
    /// The file of this log in an execution's directory.
    pub fn file_name(self) -> &'static str {
        match self {
            Self::Stdout => STDOUT_FILE,
            Self::Stderr => STDERR_FILE,
            Self::Full => FULL_LOG_FILE,
        }
    }
}

impl From<LogStream> for SnapshotStream {
    fn from(s: LogStream) -> Self {
        match s {
            LogStream::Stdout => Self::Stdout,
            LogStream::Stderr => Self::Stderr,
        }
    }
}

/// What part of a log to show: the newest lines, at most so many bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogSnapshotQuery {
    /// The log.
    #[serde(default)]
    pub stream: SnapshotStream,
    /// At most this many of the newest lines (`None`: all that is at hand).
    #[serde(default)]
    pub tail_lines: Option<usize>,
    /// At most this many bytes (`None`: the whole live tail; from disk,
    /// [`DEFAULT_DISK_SNAPSHOT_BYTES`]).
    #[serde(default)]
    pub max_bytes: Option<usize>,
}

impl LogSnapshotQuery {
    /// The last `n` lines of `stream`.
    pub fn tail(stream: SnapshotStream, n: usize) -> Self {
        Self {
            stream,
            tail_lines: Some(n),
            max_bytes: None,
        }
    }

    /// Everything at hand of `stream`.
    pub fn all(stream: SnapshotStream) -> Self {
        Self {
            stream,
            tail_lines: None,
            max_bytes: None,
        }
    }
}

/// The tail of a log and what it leaves out.
///
/// The text starts at a line start whenever it can (a line cut by the
/// byte budget is dropped unless it is the only one) and ends where the log
/// ends (a last line without its newline included).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogSnapshot {
    /// The bytes shown, as UTF-8 (invalid sequences replaced by U+FFFD).
    pub text: String,
    /// Every byte the log received so far.
    pub observed_bytes: u64,
    /// The bytes of the log `text` was made from.
    pub included_bytes: u64,
    /// True when `text` is not the whole log (`included < observed`).
    pub truncated: bool,
    /// Lines in `text` (a last line without a newline counts).
    pub lines: usize,
}

impl LogSnapshot {
    /// The snapshot of `data[start..]`, of a log that received `observed`
    /// bytes.
    pub(crate) fn of(data: &[u8], observed: u64) -> Self {
        let included = data.len() as u64;
        let mut lines = memchr::memchr_iter(b'\n', data).count();
        if data.last().is_some_and(|&b| b != b'\n') {
            lines += 1;
        }
        Self {
            text: String::from_utf8_lossy(data).into_owned(),
            observed_bytes: observed,
            included_bytes: included,
            truncated: included < observed,
            lines,
        }
    }
}

/// Where the part of `data` (the end of a log) a query shows starts.
/// `at_line_start` says whether `data[0]` starts a line (false when the
/// bytes before it were dropped mid-line).
pub(crate) fn select(
    data: &[u8],
    at_line_start: bool,
    tail_lines: Option<usize>,
    max_bytes: Option<usize>,
) -> usize {
    let end = data.len();
    let mut start = 0;
    if !at_line_start {
        start = next_line_start(data, 0).unwrap_or(0);
    }
    if let Some(n) = tail_lines {
        start = start.max(tail_start(data, start, n));
    }
    if let Some(m) = max_bytes
        && end - start > m
    {
        start = end - m;
        if start > 0 && data[start - 1] != b'\n' {
            start = next_line_start(data, start).unwrap_or(start);
        }
    }
    start
}

/// The start of the first line after `from` that has content, if any.
fn next_line_start(data: &[u8], from: usize) -> Option<usize> {
    let i = from + memchr::memchr(b'\n', &data[from..])?;
    (i + 1 < data.len()).then_some(i + 1)
}

/// Where the last `n` lines of `data[from..]` start.
fn tail_start(data: &[u8], from: usize, n: usize) -> usize {
    if n == 0 {
        return data.len();
    }
    let body = &data[from..];
    // A final newline ends the last line; it does not start another.
    let body = body.strip_suffix(b"\n").unwrap_or(body);
    match memchr::memrchr_iter(b'\n', body).nth(n - 1) {
        Some(p) => from + p + 1,
        None => from,
    }
}

/// Newlines in `data` that end a line other than the last one of the log.
fn inner_newlines(data: &[u8], is_end: bool) -> usize {
    let data = if is_end {
        data.strip_suffix(b"\n").unwrap_or(data)
    } else {
        data
    };
    memchr::memchr_iter(b'\n', data).count()
}

/// A snapshot of a log of the execution in `dir`, read from its file.
///
/// Only the end of the file is read (at most `max_bytes`, by default
/// [`DEFAULT_DISK_SNAPSHOT_BYTES`], and with `tail_lines` only as far back
/// as those lines go): a 100-line tail of a 1 GiB log reads a few KiB. A
/// log that does not exist (no output yet) gives an empty snapshot.
/// Blocking.
pub fn read_snapshot(dir: &Path, query: LogSnapshotQuery) -> Result<LogSnapshot, StoreError> {
    let path = dir.join(query.stream.file_name());
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(LogSnapshot::default()),
        Err(e) => return Err(StoreError::read(path, e)),
    };
    read_tail(&file, query).map_err(|e| StoreError::read(path, e))
}

fn read_tail(file: &File, query: LogSnapshotQuery) -> io::Result<LogSnapshot> {
    let size = file.metadata()?.len();
    let cap = query.max_bytes.unwrap_or(DEFAULT_DISK_SNAPSHOT_BYTES);
    // Blocks read from the end backwards, newest first.
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    let mut total = 0usize;
    let mut newlines = 0usize;
    let mut start = size;
    let mut block = 64 * 1024usize;
    while start > 0 && total < cap {
        if let Some(n) = query.tail_lines
            && newlines >= n
        {
            break;
        }
        let len = block
            .min(cap - total)
            .min(start.try_into().unwrap_or(usize::MAX));
        let at = start - len as u64;
        let mut buf = vec![0; len];
        file.read_exact_at(&mut buf, at)?;
        newlines += inner_newlines(&buf, start == size);
        total += len;
        start = at;
        blocks.push(buf);
        block = (block * 2).min(4 << 20);
    }
    let mut data = Vec::with_capacity(total);
    for b in blocks.iter().rev() {
        data.extend_from_slice(b);
    }
    let at_line_start = start == 0 || {
        let mut before = [0u8];
        file.read_exact_at(&mut before, start - 1)?;
        before[0] == b'\n'
    };
    let from = select(&data, at_line_start, query.tail_lines, Some(cap));
    Ok(LogSnapshot::of(&data[from..], size))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(data: &str, at_line_start: bool, tail: Option<usize>, max: Option<usize>) -> &str {
        &data[select(data.as_bytes(), at_line_start, tail, max)..]
    }

    #[test]
    fn select_keeps_everything_without_limits() {
        assert_eq!(shown("a\nb\nc\n", true, None, None), "a\nb\nc\n");
        assert_eq!(shown("a\nb\nc", true, None, None), "a\nb\nc");
    }

    #[test]
    fn select_drops_a_line_cut_at_the_front() {
        assert_eq!(shown("xa\nb\nc\n", false, None, None), "b\nc\n");
        // A single cut line is kept rather than showing nothing.
        assert_eq!(shown("xabc\n", false, None, None), "xabc\n");
        assert_eq!(shown("xabc", false, None, None), "xabc");
    }

    #[test]
    fn select_takes_the_last_lines_with_or_without_a_final_newline() {
        assert_eq!(shown("a\nb\nc\n", true, Some(2), None), "b\nc\n");
        assert_eq!(shown("a\nb\nc", true, Some(2), None), "b\nc");
        assert_eq!(shown("a\nb\nc\n", true, Some(5), None), "a\nb\nc\n");
        assert_eq!(shown("a\nb\nc\n", true, Some(0), None), "");
    }

    #[test]
    fn select_cuts_to_max_bytes_at_a_line_start() {
        assert_eq!(shown("aaaa\nbb\ncc\n", true, None, Some(6)), "bb\ncc\n");
        assert_eq!(shown("aaaa\nbb\ncc\n", true, None, Some(5)), "cc\n");
        assert_eq!(shown("aaaa\nbb\ncc\n", true, None, Some(2)), "c\n");
        assert_eq!(shown("aaaa\nbb\ncc\n", true, Some(1), Some(100)), "cc\n");
    }

    #[test]
    fn snapshot_counts_lines_and_truncation() {
        let s = LogSnapshot::of(b"b\nc", 10);
        assert_eq!(
            (s.lines, s.included_bytes, s.observed_bytes, s.truncated),
            (2, 3, 10, true)
        );
        let s = LogSnapshot::of(b"", 0);
        assert_eq!((s.lines, s.truncated), (0, false));
    }
}
