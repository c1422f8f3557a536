//! A bounded in-memory tail of a container's output.
//!
//! Each container keeps its last lines (both streams, in arrival order) up to
//! a line and a byte budget; older lines are evicted and counted, so a tail
//! says how much it does not show. Durable logs on disk come with the store.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::SystemTime,
};

use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt};

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogStream {
    /// Standard output.
    Stdout,
    /// Standard error.
    Stderr,
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// The stream it came from.
    pub stream: LogStream,
    /// When arbor read it.
    pub at: SystemTime,
    /// The text, without the newline (invalid UTF-8 replaced).
    pub line: String,
}

/// Which lines to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LogQuery {
    /// Only this stream (`None`: both, interleaved as they arrived).
    pub stream: Option<LogStream>,
    /// At most this many of the newest lines (`None`: everything buffered).
    pub tail: Option<usize>,
}

impl LogQuery {
    /// The last `n` lines of both streams.
    pub fn tail(n: usize) -> Self {
        Self {
            stream: None,
            tail: Some(n),
        }
    }
}

/// A tail of output with what it leaves out.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Logs {
    /// The lines, oldest first.
    pub lines: Vec<LogLine>,
    /// Lines of the queried streams seen since the container started.
    pub total_lines: u64,
    /// Lines (of any stream) evicted from the buffer by its budget.
    pub evicted_lines: u64,
}

impl Logs {
    /// The text of the lines, one per line.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for l in &self.lines {
            s.push_str(&l.line);
            s.push('\n');
        }
        s
    }
}

/// Longest line kept; the rest of a longer line is cut and marked.
const MAX_LINE: usize = 16 * 1024;

/// A bounded ring of output lines, shared by the readers of one container's
/// pipes and whoever asks for its logs.
#[derive(Debug, Clone)]
pub struct LogBuffer {
    ring: Arc<Mutex<Ring>>,
}

#[derive(Debug)]
struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
    max_lines: usize,
    max_bytes: usize,
    evicted: u64,
    seen: [u64; 2],
}

impl Default for LogBuffer {
    fn default() -> Self {
        Self::new(1000, 256 * 1024)
    }
}

impl LogBuffer {
    /// A buffer keeping at most `max_lines` lines and `max_bytes` bytes.
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        Self {
            ring: Arc::new(Mutex::new(Ring {
                lines: VecDeque::new(),
                bytes: 0,
                max_lines: max_lines.max(1),
                max_bytes: max_bytes.max(1),
                evicted: 0,
                seen: [0, 0],
            })),
        }
    }

    /// Appends a line, evicting the oldest past the budget.
    pub fn push(&self, stream: LogStream, line: String) {
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.seen[stream as usize] += 1;
        ring.bytes += line.len();
        ring.lines.push_back(LogLine {
            stream,
            at: SystemTime::now(),
            line,
        });
        while ring.lines.len() > ring.max_lines
            || (ring.bytes > ring.max_bytes && ring.lines.len() > 1)
        {
            if let Some(old) = ring.lines.pop_front() {
                ring.bytes -= old.line.len();
                ring.evicted += 1;
            }
        }
    }

    /// The lines `query` asks for.
    pub fn query(&self, query: LogQuery) -> Logs {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let wanted = |l: &&LogLine| query.stream.is_none_or(|s| s == l.stream);
        let matching = ring.lines.iter().filter(wanted).count();
        let skip = query.tail.map_or(0, |n| matching.saturating_sub(n));
        Logs {
            lines: ring
                .lines
                .iter()
                .filter(wanted)
                .skip(skip)
                .cloned()
                .collect(),
            total_lines: match query.stream {
                Some(s) => ring.seen[s as usize],
                None => ring.seen[0] + ring.seen[1],
            },
            evicted_lines: ring.evicted,
        }
    }

    /// Reads `reader` to its end, one line at a time, into this buffer; with
    /// `echo`, also writes each line to the node's own stdout or stderr
    /// (matching `stream`) behind that prefix.
    pub async fn read_from(
        self,
        mut reader: impl AsyncRead + Unpin,
        stream: LogStream,
        echo: Option<Arc<str>>,
    ) {
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = ReadBuf::new(8192);
        let mut cut = false;
        loop {
            let chunk = match buf.read(&mut reader).await {
                Ok([]) | Err(_) => break,
                Ok(chunk) => chunk,
            };
            for &b in chunk {
                if b == b'\n' {
                    self.push_bytes(stream, &pending, cut, echo.as_deref());
                    pending.clear();
                    cut = false;
                } else if pending.len() < MAX_LINE {
                    pending.push(b);
                } else {
                    cut = true;
                }
            }
        }
        if !pending.is_empty() {
            self.push_bytes(stream, &pending, cut, echo.as_deref());
        }
    }

    fn push_bytes(&self, stream: LogStream, bytes: &[u8], cut: bool, echo: Option<&str>) {
        let mut line = String::from_utf8_lossy(bytes).into_owned();
        if cut {
            line.push_str(" [line truncated]");
        }
        if let Some(prefix) = echo {
            use std::io::Write;
            let _ = match stream {
                LogStream::Stdout => writeln!(std::io::stdout().lock(), "{prefix} | {line}"),
                LogStream::Stderr => writeln!(std::io::stderr().lock(), "{prefix} | {line}"),
            };
        }
        self.push(stream, line);
    }
}

/// A readable pipe end that can move between tasks.
pub(crate) trait AsyncReadSend: AsyncRead + Send + Unpin {}
impl<T: AsyncRead + Send + Unpin> AsyncReadSend for T {}

/// Reads one output stream of a container to its end: into `sink` when the
/// spec gives one (chunks as read, then `close`), else line by line into
/// the runtime's bounded tail `logs`. Shared by every runtime that reads
/// pipes (process, OCI), so output looks the same whatever runs it.
pub(crate) async fn pump_output(
    pipe: Option<Box<dyn AsyncReadSend>>,
    sink: Option<super::Output>,
    logs: LogBuffer,
    stream: LogStream,
    echo: Option<Arc<str>>,
) {
    match (pipe, sink) {
        (Some(mut pipe), Some(sink)) => {
            // A pipe holds 64 KiB by default: one read can drain it.
            let mut buf = ReadBuf::new(64 * 1024);
            loop {
                match buf.read(&mut pipe).await {
                    Ok([]) | Err(_) => break,
                    Ok(chunk) => sink.0.write(stream, chunk),
                }
            }
            sink.0.close(stream);
        }
        (Some(pipe), None) => logs.read_from(pipe, stream, echo).await,
        (None, Some(sink)) => sink.0.close(stream),
        (None, None) => {}
    }
}

/// A read buffer that costs little while its stream is quiet: reads go to
/// a small inline buffer until one fills it, then to a large one on the
/// heap, which is dropped again after [`SHRINK_AFTER`] reads in a row that
/// the small one would have held (not after one: a fast writer's reads
/// alternate between full and short ones). Ten thousand idle replicas so
/// hold 2 KiB each for their two streams, not two large buffers.
struct ReadBuf {
    small: [u8; 1024],
    large: Vec<u8>,
    large_len: usize,
    /// Reads in a row the small buffer would have held.
    short: u32,
}

/// See [`ReadBuf`].
const SHRINK_AFTER: u32 = 64;

impl ReadBuf {
    fn new(large_len: usize) -> Self {
        Self {
            small: [0; 1024],
            large: Vec::new(),
            large_len,
            short: 0,
        }
    }

    /// The next chunk of `reader` (empty at its end).
    async fn read<R: AsyncRead + Unpin + ?Sized>(
        &mut self,
        reader: &mut R,
    ) -> std::io::Result<&[u8]> {
        if self.short >= SHRINK_AFTER {
            self.large = Vec::new();
            self.short = 0;
        }
        if self.large.is_empty() {
            let n = reader.read(&mut self.small).await?;
            if n == self.small.len() {
                self.large = vec![0; self.large_len];
            }
            Ok(&self.small[..n])
        } else {
            let n = reader.read(&mut self.large).await?;
            if n < self.small.len() {
                self.short += 1;
            } else {
                self.short = 0;
            }
            Ok(&self.large[..n])
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_read_buffer_grows_for_a_burst_and_shrinks_when_it_is_quiet_again() {
        let input: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut reader = &input[..];
        let mut buf = ReadBuf::new(64 * 1024);
        let mut out = Vec::new();
        let mut sizes = Vec::new();
        loop {
            let chunk = buf.read(&mut reader).await.unwrap();
            if chunk.is_empty() {
                break;
            }
            sizes.push(chunk.len());
            out.extend_from_slice(chunk);
        }
        assert_eq!(out, input, "every byte once, in order");
        assert_eq!(sizes[0], 1024, "a quiet stream reads into the small buffer");
        assert_eq!(
            sizes[1],
            64 * 1024,
            "a full small read brings the large one"
        );
        // 200,000 = 1,024 + 3 x 65,536 + 2,368: the last read is short but
        // larger than the small buffer, then the end.
        assert_eq!(&sizes[2..], [65536, 65536, 2368]);
        // Short reads in a row (a quiet stream): the large buffer goes, and
        // the small one serves the next read.
        for _ in 1..SHRINK_AFTER {
            let mut quiet = &b"x"[..];
            assert_eq!(buf.read(&mut quiet).await.unwrap(), b"x");
            assert!(!buf.large.is_empty(), "one short read keeps it");
        }
        let mut rest = &b"tail"[..];
        assert_eq!(buf.read(&mut rest).await.unwrap(), b"tail");
        assert!(buf.large.is_empty());
    }

    #[test]
    fn tail_keeps_the_newest_lines_and_counts_evictions() {
        let buf = LogBuffer::new(3, 1 << 20);
        for i in 0..5 {
            buf.push(LogStream::Stdout, format!("out {i}"));
        }
        buf.push(LogStream::Stderr, "err".into());
        let all = buf.query(LogQuery::default());
        let text: Vec<_> = all.lines.iter().map(|l| l.line.as_str()).collect();
        assert_eq!(text, ["out 3", "out 4", "err"]);
        assert_eq!(all.evicted_lines, 3);
        assert_eq!(all.total_lines, 6);
        let out = buf.query(LogQuery {
            stream: Some(LogStream::Stdout),
            tail: Some(1),
        });
        assert_eq!(out.lines.len(), 1);
        assert_eq!(out.lines[0].line, "out 4");
        assert_eq!(out.total_lines, 5);
    }

    #[tokio::test]
    async fn reader_splits_lines_and_cuts_long_ones() {
        let buf = LogBuffer::default();
        let mut input = b"a\nb\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        input.extend(b"\ntail");
        buf.clone()
            .read_from(&input[..], LogStream::Stdout, None)
            .await;
        let logs = buf.query(LogQuery::default());
        assert_eq!(logs.lines.len(), 4);
        assert!(logs.lines[2].line.ends_with("[line truncated]"));
        assert_eq!(logs.lines[3].line, "tail");
    }
}
