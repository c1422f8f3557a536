//! A snapshot of a supervision tree: name, kind, state, restarts, last exit
//! and children, all the way down. Serializable for the API; `Display`
//! draws it for people.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::child::{ChildExit, ChildKind, ChildState};
use crate::spec::{RestartType, Strategy};

/// One node of a supervision tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TreeNode {
    /// The child id (the supervisor's name at the root).
    pub name: String,
    /// Worker, container or supervisor.
    pub kind: ChildKind,
    /// Its state.
    pub state: ChildState,
    /// The strategy, for supervisors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// Its restart type (`None` at the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<RestartType>,
    /// How many times its supervisor restarted it.
    pub restarts: u32,
    /// How it last ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<ChildExit>,
    /// While it backs off (`crash_loop_back_off`): when its next restart
    /// is due, on the wall clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_restart: Option<chrono::DateTime<chrono::Utc>>,
    /// For containers: whether it is ready (running, and its readiness
    /// probe, if any, passes). `None` for other kinds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<bool>,
    /// A one-line status (`waiting for db`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Its children, in start order (supervisors only).
    #[serde(default)]
    pub children: Vec<TreeNode>,
}

impl TreeNode {
    /// The node at `path` (names separated by `/`, relative to this node).
    pub fn find(&self, path: &str) -> Option<&TreeNode> {
        path.split('/')
            .filter(|p| !p.is_empty())
            .try_fold(self, |node, name| {
                node.children.iter().find(|c| c.name == name)
            })
    }

    /// This node and all below it.
    pub fn len(&self) -> usize {
        1 + self.children.iter().map(TreeNode::len).sum::<usize>()
    }

    /// Never true: a tree has at least its root.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn line(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}", self.name, self.kind)?;
        if let Some(s) = self.strategy {
            write!(f, " {s}")?;
        }
        write!(f, "] {}", self.state)?;
        match &self.status {
            Some(status) => write!(f, " ({status})")?,
            None if self.ready == Some(false) && self.state == ChildState::Running => {
                f.write_str(" (not ready)")?
            }
            None => {}
        }
        if self.restarts > 0 {
            let s = if self.restarts == 1 { "" } else { "s" };
            write!(f, ", {} restart{s}", self.restarts)?;
        }
        if let Some(exit) = &self.last_exit {
            write!(f, " (last exit: {exit})")?;
        }
        if let Some(at) = self.next_restart {
            write!(f, ", next restart at {}", at.format("%H:%M:%S%.3f UTC"))?;
        }
        Ok(())
    }

    fn draw(&self, f: &mut fmt::Formatter<'_>, prefix: &str) -> fmt::Result {
        let n = self.children.len();
        for (i, child) in self.children.iter().enumerate() {
            let last = i + 1 == n;
            write!(f, "\n{prefix}{}", if last { "└── " } else { "├── " })?;
            child.line(f)?;
            child.draw(
                f,
                &format!("{prefix}{}", if last { "    " } else { "│   " }),
            )?;
        }
        Ok(())
    }
}

impl fmt::Display for TreeNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.line(f)?;
        self.draw(f, "")
    }
}
