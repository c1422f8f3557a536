//! The overlay actor's state on disk: what a node that crashed left behind.
//!
//! The actor is the only writer. Every change rewrites the file whole
//! (write to a temporary file, then rename: a reader sees the old state or
//! the new one, never half of one). It is not fsynced: it guards against a
//! crashed *process*, whose kernel objects (links, namespaces) survive it;
//! a crashed *machine* loses those too.

use std::{
    io,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::overlay::{AttachPlan, SegmentPlan};

/// Everything a restarted node must clean up or keep reserved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Persisted {
    /// The next number for link and namespace names.
    pub next_id: u64,
    /// Segments set up (or waiting for teardown).
    pub segments: Vec<SegmentPlan>,
    /// Attachments made (or waiting for detach).
    pub attachments: Vec<AttachPlan>,
    /// Namespaces prepared and not attached yet.
    pub prepared: Vec<PathBuf>,
}

/// A state file that could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// Reading or writing failed.
    #[error("failed to {op} overlay state {path}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is not valid state.
    #[error("failed to parse overlay state {path}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
}

/// Reads `path`; a missing file is an empty state.
pub fn load(path: &Path) -> Result<Persisted, PersistError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Persisted::default()),
        Err(source) => {
            return Err(PersistError::Io {
                op: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_slice(&text).map_err(|source| PersistError::Parse {
        path: path.to_owned(),
        source,
    })
}

/// Replaces `path` with `state`, atomically.
pub fn save(path: &Path, state: &Persisted) -> Result<(), PersistError> {
    let io = |op| {
        move |source| PersistError::Io {
            op,
            path: path.to_owned(),
            source,
        }
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io("create the directory of"))?;
    }
    let tmp = path.with_extension("json.tmp");
    let text = serde_json::to_vec_pretty(state).map_err(|e| PersistError::Io {
        op: "serialize",
        path: path.to_owned(),
        source: e.into(),
    })?;
    std::fs::write(&tmp, text).map_err(io("write"))?;
    std::fs::rename(&tmp, path).map_err(io("replace"))
}
