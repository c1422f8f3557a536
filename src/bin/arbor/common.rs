//! What the client commands share: the connection flags, the failure type
//! (its exit code and message), argument parsers and the pieces of
//! readable output (tables, durations, times, argv).

use std::{path::PathBuf, process::ExitCode, time::Duration};

use arbor::{ExecutionRecord, JobState};
use chrono::{DateTime, Local, Utc};
use clap::Args;

use super::client::{AgentUrl, Client, ClientError};

/// `--token-file`: how the client commands authenticate.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// File holding the agent's bearer token, for an agent reached over TCP
    /// (default: $ARBOR_TOKEN, else the api.token the agent made in
    /// $ARBOR_STATE_DIR when readable). The Unix socket needs none.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// PEM certificate(s) to trust for an https:// agent (default: the
    /// system's, /etc/ssl/certs/ca-certificates.crt).
    #[arg(long, value_name = "FILE", env = "ARBOR_CA_CERT")]
    pub ca_cert: Option<PathBuf>,
}

impl Conn {
    /// A client of the agent at `url` with this token.
    pub fn client(&self, url: &AgentUrl) -> Result<Client, Fail> {
        let token = super::client::token(self.token_file.as_ref(), url).map_err(Fail::usage)?;
        let client = Client::new(url.clone(), token);
        if url.is_tls() {
            return client.tls(self.ca_cert.as_deref()).map_err(Fail::usage);
        }
        Ok(client)
    }
}

/// A command that did not succeed: `arbor: MESSAGE` on stderr and the exit
/// code (1: the operation failed, 2: usage).
#[derive(Debug)]
pub struct Fail {
    pub code: u8,
    pub message: String,
}

impl Fail {
    /// Exit code 1.
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            code: 1,
            message: message.into(),
        }
    }

    /// Exit code 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Self {
            code: 2,
            message: message.into(),
        }
    }

    /// Prints the message and returns the exit code.
    pub fn report(self) -> ExitCode {
        eprintln!("arbor: {}", self.message);
        ExitCode::from(self.code)
    }
}

impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Self {
        Self::failed(e.to_string())
    }
}

pub type Outcome = Result<ExitCode, Fail>;

pub use arbor::args::{
    duration as parse_duration, execution_id as parse_id, signal as parse_signal,
};

/// Prints a value as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("\"{e}\""))
    );
}

/// Rows under a header, each column as wide as its widest cell, two
/// spaces apart, no trailing spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, cell) in cells.enumerate() {
            if i > 0 {
                out.push_str("  ");
            }
            out.push_str(cell);
            let width = widths.get(i).copied().unwrap_or(0);
            let pad = width.saturating_sub(cell.chars().count());
            out.extend(std::iter::repeat_n(' ', pad));
        }
        out.trim_end().to_owned()
    };
    let mut out = line(&mut header.iter().copied());
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
        out.push('\n');
    }
    out
}

/// `1.2s`, `350ms`, `3m 20s`, `2h 5m`.
pub fn duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else if ms < 3_600_000 {
        format!("{}m {}s", ms / 60_000, (ms / 1000) % 60)
    } else {
        format!("{}h {}m", ms / 3_600_000, (ms / 60_000) % 60)
    }
}

/// A time in the local zone, to the second.
pub fn time(t: DateTime<Utc>) -> String {
    t.with_timezone(&Local)
        .format("%Y-%m-%d %H:%M:%S")
        .to_string()
}

/// From start to end, or to now while it runs.
pub fn run_time(r: &ExecutionRecord) -> Option<Duration> {
    if let JobState::Completed { duration, .. } = &r.status.state {
        return Some(*duration);
    }
    let start = r.status.started_at?;
    let end = r.status.finished_at.unwrap_or_else(Utc::now);
    (end - start).to_std().ok()
}

/// The state in short: `running`, `running (paused)`, `failed`, ...
pub fn state_short(r: &ExecutionRecord) -> String {
    let name = r.status.state.name();
    if r.status.paused && r.status.state.is_active() {
        format!("{name} (paused)")
    } else {
        name.to_owned()
    }
}

/// How it ended: `0`, `3`, `SIGKILL`, or `-`.
pub fn exit_short(r: &ExecutionRecord) -> String {
    if let Some(sig) = r.status.signal {
        return signal_name(sig);
    }
    r.status
        .state
        .exit_code()
        .map_or_else(|| "-".into(), |c| c.to_string())
}

/// `SIGKILL` for 9, the number when unknown.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map_or_else(|_| sig.to_string(), |s| s.as_str().to_owned())
}

/// argv as a shell would read it back.
pub fn argv(words: &[String]) -> String {
    words
        .iter()
        .map(|w| {
            if !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
            {
                w.clone()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// `text` cut to `max` characters with `…`.
pub fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}
