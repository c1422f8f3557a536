//! Following an execution: where it runs ([`Target`]: an agent, or an
//! executor in this process), waiting for its end, and reading its logs
//! as they grow ([`Follower`]: only the output not printed yet).
//!
//! The logs API answers tails, not ranges. A follower keeps the number of
//! bytes of the log it has printed (`observed_bytes` at its last read); a
//! poll asks for the size alone (`tail=0`), then for a tail a little
//! larger than what is new, and prints the last new bytes of it. Output
//! that is no longer at hand (past the live tail of a running execution)
//! is reported as skipped.

use std::time::Duration;

use arbor::{
    ExecutionId, ExecutionRecord, Executor, LogSnapshot, LogSnapshotQuery, SnapshotStream,
    api::LogsResponse,
};

use super::{
    client::{Client, REQUEST_TIMEOUT},
    common::Fail,
};

/// The longest an agent holds a `/wait` request.
const MAX_AGENT_WAIT: Duration = Duration::from_secs(600);

/// Where an execution runs.
pub enum Target {
    /// On the agent, through its API.
    Agent(Client),
    /// In this process.
    Local(Executor),
}

impl Target {
    /// Its record.
    pub async fn get(&self, id: ExecutionId) -> Result<ExecutionRecord, Fail> {
        match self {
            Self::Agent(c) => Ok(c.get(&format!("/v1/executions/{id}")).await?),
            Self::Local(ex) => ex
                .get(id)
                .await
                .map_err(|e| Fail::failed(e.to_string()))?
                .ok_or_else(|| Fail::failed(format!("no execution with id {id}"))),
        }
    }

    /// Its record once it ended, or as it is after `timeout`.
    pub async fn wait(&self, id: ExecutionId, timeout: Duration) -> Result<ExecutionRecord, Fail> {
        match self {
            Self::Agent(c) => {
                let t = timeout.min(MAX_AGENT_WAIT);
                Ok(c.get_within(
                    &format!("/v1/executions/{id}/wait?timeout={}ms", t.as_millis()),
                    t + REQUEST_TIMEOUT,
                )
                .await?)
            }
            Self::Local(ex) => match tokio::time::timeout(timeout, ex.wait(id)).await {
                Ok(r) => r.map_err(|e| Fail::failed(e.to_string())),
                Err(_) => self.get(id).await,
            },
        }
    }

    /// Its record once it ended.
    pub async fn wait_end(&self, id: ExecutionId) -> Result<ExecutionRecord, Fail> {
        loop {
            let r = self.wait(id, MAX_AGENT_WAIT).await?;
            if r.status.state.is_terminal() {
                return Ok(r);
            }
        }
    }

    /// A tail of one of its logs.
    pub async fn logs(&self, id: ExecutionId, q: LogSnapshotQuery) -> Result<LogSnapshot, Fail> {
        match self {
            Self::Agent(c) => {
                let mut path = format!("/v1/executions/{id}/logs?stream={}", stream_name(q.stream));
                if let Some(n) = q.tail_lines {
                    path.push_str(&format!("&tail={n}"));
                }
                if let Some(n) = q.max_bytes {
                    path.push_str(&format!("&max_bytes={n}"));
                }
                let r: LogsResponse = c.get(&path).await?;
                Ok(r.snapshot)
            }
            Self::Local(ex) => ex
                .logs(id, q)
                .await
                .map_err(|e| Fail::failed(e.to_string())),
        }
    }
}

pub fn stream_name(s: SnapshotStream) -> &'static str {
    match s {
        SnapshotStream::Stdout => "stdout",
        SnapshotStream::Stderr => "stderr",
        SnapshotStream::Full => "full",
    }
}

/// New output of one log.
#[derive(Debug, Default)]
pub struct Chunk {
    /// The text not printed before.
    pub text: String,
    /// Bytes written since the last read that are no longer at hand.
    pub skipped: u64,
    /// The log's size after this read.
    pub observed: u64,
}

/// Reads one log of one execution as it grows.
pub struct Follower {
    id: ExecutionId,
    stream: SnapshotStream,
    /// Bytes of the log printed (or skipped) so far.
    done: u64,
}

/// The most a single read asks for.
const MAX_READ: usize = 64 << 20;

impl Follower {
    /// A follower that has printed nothing.
    pub fn new(id: ExecutionId, stream: SnapshotStream) -> Self {
        Self {
            id,
            stream,
            done: 0,
        }
    }

    /// A follower that starts with `snapshot` (printed by the caller).
    pub fn after(id: ExecutionId, stream: SnapshotStream, snapshot: &LogSnapshot) -> Self {
        Self {
            id,
            stream,
            done: snapshot.observed_bytes,
        }
    }

    /// What the log received since the last read.
    pub async fn poll(&mut self, target: &Target) -> Result<Chunk, Fail> {
        let size = target
            .logs(
                self.id,
                LogSnapshotQuery {
                    stream: self.stream,
                    tail_lines: Some(0),
                    max_bytes: None,
                },
            )
            .await?
            .observed_bytes;
        if size <= self.done {
            return Ok(Chunk {
                observed: size,
                ..Chunk::default()
            });
        }
        // A little more than is new: the tail is cut at a line start, and
        // more may arrive between the two reads.
        let mut ask = usize::try_from(size - self.done).unwrap_or(MAX_READ);
        let mut attempt = 0;
        loop {
            attempt += 1;
            ask = ask.saturating_add(4096).min(MAX_READ);
            let snap = target
                .logs(
                    self.id,
                    LogSnapshotQuery {
                        stream: self.stream,
                        tail_lines: None,
                        max_bytes: Some(ask),
                    },
                )
                .await?;
            let new = snap.observed_bytes.saturating_sub(self.done);
            if snap.included_bytes >= new {
                self.done = snap.observed_bytes;
                return Ok(Chunk {
                    text: last_bytes(&snap, new),
                    skipped: 0,
                    observed: snap.observed_bytes,
                });
            }
            // More arrived than was asked for, and more is at hand: again.
            if attempt < 4
                && snap.truncated
                && ask < MAX_READ
                && usize::try_from(snap.included_bytes).unwrap_or(usize::MAX) >= ask / 2
            {
                ask = usize::try_from(new).unwrap_or(MAX_READ);
                continue;
            }
            self.done = snap.observed_bytes;
            return Ok(Chunk {
                skipped: new - snap.included_bytes,
                text: snap.text,
                observed: snap.observed_bytes,
            });
        }
    }
}

/// The text of the last `n` bytes of a snapshot.
fn last_bytes(snap: &LogSnapshot, n: u64) -> String {
    let text = &snap.text;
    let n = usize::try_from(n).unwrap_or(usize::MAX).min(text.len());
    let mut start = text.len() - n;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    text[start..].to_owned()
}
