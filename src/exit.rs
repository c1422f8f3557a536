//! How a process ended: its exit code or the signal that killed it.
//!
//! A leaf data type shared by the runtimes (which observe exits) and the
//! supervisor (which classifies a child's exit), so neither has to import
//! the other.

use std::fmt;

use nix::sys::signal::Signal;
use serde::{Deserialize, Serialize};

/// How a process (a container's main process, a host command) ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ExitStatus {
    /// It exited with this code.
    Code(i32),
    /// It was terminated by this signal number.
    Signal(i32),
}

impl ExitStatus {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        matches!(self, Self::Code(0))
    }

    /// The exit code, if it exited rather than being killed by a signal.
    pub fn code(&self) -> Option<i32> {
        match self {
            Self::Code(c) => Some(*c),
            Self::Signal(_) => None,
        }
    }

    /// The terminating signal, if any.
    pub fn signal(&self) -> Option<i32> {
        match self {
            Self::Signal(s) => Some(*s),
            Self::Code(_) => None,
        }
    }
}

impl From<std::process::ExitStatus> for ExitStatus {
    fn from(s: std::process::ExitStatus) -> Self {
        use std::os::unix::process::ExitStatusExt;
        match (s.code(), s.signal()) {
            (Some(c), _) => Self::Code(c),
            (None, Some(sig)) => Self::Signal(sig),
            (None, None) => Self::Code(-1),
        }
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Code(c) => write!(f, "exit code {c}"),
            Self::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "killed by {sig}"),
                Err(_) => write!(f, "killed by signal {s}"),
            },
        }
    }
}
