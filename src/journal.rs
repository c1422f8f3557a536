//! An ordered, typed record of what the fakes and test actors did.
//!
//! The recording fakes (the mock runtime, the recording overlay backend,
//! the recording token sink) and the test actors of [`crate::testing`] all
//! write into one [`Journal`], so a test (or the chaos harness) can check
//! the order of everything that happened without timing anything. Entries
//! are typed ([`Entry`]): checks match on variants instead of parsing text
//! back. Each entry also has a one-line text form (`runtime remove c-1`,
//! `overlay detach c-1 store`, `start a`), which is what reports print and
//! what tests may compare against (`Entry == "start a"`).
//!
//! This is a leaf module: it depends on nothing else in the crate, so
//! production fakes can use it without pulling in the test helpers.

use std::{fmt, sync::Arc};

use tokio::sync::{Mutex, mpsc};

/// A runtime call, as the mock runtime records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RuntimeOp {
    /// `pull_image` (the subject is the container's name).
    Pull,
    /// `create` (the subject is the container's name).
    Create,
    /// `start`.
    Start,
    /// `stop`.
    Stop,
    /// `remove`.
    Remove,
    /// `wait`.
    Wait,
    /// `state`.
    State,
    /// `pid`.
    Pid,
    /// `signal` (the signal is the entry's argument).
    Signal,
    /// `logs`.
    Logs,
    /// `abandon`.
    Abandon,
}

impl RuntimeOp {
    /// The call's name (`remove`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Pull => "pull",
            Self::Create => "create",
            Self::Start => "start",
            Self::Stop => "stop",
            Self::Remove => "remove",
            Self::Wait => "wait",
            Self::State => "state",
            Self::Pid => "pid",
            Self::Signal => "signal",
            Self::Logs => "logs",
            Self::Abandon => "abandon",
        }
    }
}

/// An overlay backend call, as the recording backend records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OverlayOp {
    /// A segment's bridge set up (the subject is the segment).
    Setup,
    /// A segment's bridge torn down (the subject is the segment).
    Teardown,
    /// A network namespace created (the subject is its name).
    NetnsAdd,
    /// A network namespace deleted (the subject is its name).
    NetnsDel,
    /// A container attached to a segment.
    Attach,
    /// A container detached from a segment.
    Detach,
    /// Leftovers with a prefix swept (the subject is the prefix).
    Sweep,
}

impl OverlayOp {
    /// The call's words (`netns add`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Setup => "setup",
            Self::Teardown => "teardown",
            Self::NetnsAdd => "netns add",
            Self::NetnsDel => "netns del",
            Self::Attach => "attach",
            Self::Detach => "detach",
            Self::Sweep => "sweep",
        }
    }
}

/// One thing that happened.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Entry {
    /// A test actor started: `start ID`.
    Started(String),
    /// A test actor refused to start: `failed start ID`.
    FailedStart(String),
    /// A test actor stopped (its `post_stop` ran): `stop ID`.
    Stopped(String),
    /// A runtime call: `runtime OP SUBJECT [ARG]`.
    Runtime {
        /// The call.
        op: RuntimeOp,
        /// The container id (its name for `pull` and `create`).
        subject: String,
        /// The signal of a `signal` call.
        arg: Option<String>,
    },
    /// An overlay backend call: `overlay OP SUBJECT [SEGMENT]`.
    Overlay {
        /// The call.
        op: OverlayOp,
        /// The container, segment, namespace or prefix.
        subject: String,
        /// The segment of an attach or detach.
        segment: Option<String>,
    },
    /// An overlay call the fake failed on purpose: `overlay failed OP SUBJECT [SEGMENT]`.
    OverlayFailed {
        /// The call.
        op: OverlayOp,
        /// As in [`Entry::Overlay`].
        subject: String,
        /// As in [`Entry::Overlay`].
        segment: Option<String>,
    },
    /// A container's token revoked: `token revoke CONTAINER`.
    TokenRevoked(String),
    /// Free text a test wrote.
    Note(String),
}

impl Entry {
    /// A runtime call without an argument.
    pub fn runtime(op: RuntimeOp, subject: impl Into<String>) -> Self {
        Self::Runtime {
            op,
            subject: subject.into(),
            arg: None,
        }
    }

    /// An overlay call on `subject` (and a segment for attach and detach).
    pub fn overlay(op: OverlayOp, subject: impl Into<String>, segment: Option<&str>) -> Self {
        Self::Overlay {
            op,
            subject: subject.into(),
            segment: segment.map(str::to_owned),
        }
    }

    /// True when the entry is about `id` (a container, segment, namespace
    /// or actor id).
    pub fn mentions(&self, id: &str) -> bool {
        match self {
            Self::Started(s)
            | Self::FailedStart(s)
            | Self::Stopped(s)
            | Self::TokenRevoked(s)
            | Self::Runtime { subject: s, .. } => s == id,
            Self::Overlay {
                subject, segment, ..
            }
            | Self::OverlayFailed {
                subject, segment, ..
            } => subject == id || segment.as_deref() == Some(id),
            Self::Note(text) => text.split(' ').any(|w| w == id),
        }
    }
}

impl fmt::Display for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tail = |f: &mut fmt::Formatter<'_>, extra: &Option<String>| match extra {
            Some(x) => write!(f, " {x}"),
            None => Ok(()),
        };
        match self {
            Self::Started(id) => write!(f, "start {id}"),
            Self::FailedStart(id) => write!(f, "failed start {id}"),
            Self::Stopped(id) => write!(f, "stop {id}"),
            Self::Runtime { op, subject, arg } => {
                write!(f, "runtime {} {subject}", op.name())?;
                tail(f, arg)
            }
            Self::Overlay {
                op,
                subject,
                segment,
            } => {
                write!(f, "overlay {} {subject}", op.name())?;
                tail(f, segment)
            }
            Self::OverlayFailed {
                op,
                subject,
                segment,
            } => {
                write!(f, "overlay failed {} {subject}", op.name())?;
                tail(f, segment)
            }
            Self::TokenRevoked(c) => write!(f, "token revoke {c}"),
            Self::Note(text) => f.write_str(text),
        }
    }
}

impl From<String> for Entry {
    fn from(text: String) -> Self {
        Self::Note(text)
    }
}

impl From<&str> for Entry {
    fn from(text: &str) -> Self {
        Self::Note(text.to_owned())
    }
}

impl PartialEq<str> for Entry {
    fn eq(&self, other: &str) -> bool {
        displays_as(self, other)
    }
}

impl PartialEq<&str> for Entry {
    fn eq(&self, other: &&str) -> bool {
        displays_as(self, other)
    }
}

/// Whether `value` displays as exactly `text` (compared as it is written,
/// without building the string).
fn displays_as(value: &impl fmt::Display, text: &str) -> bool {
    struct Rest<'a>(&'a str);
    impl fmt::Write for Rest<'_> {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            self.0 = self.0.strip_prefix(s).ok_or(fmt::Error)?;
            Ok(())
        }
    }
    let mut rest = Rest(text);
    fmt::write(&mut rest, format_args!("{value}")).is_ok() && rest.0.is_empty()
}

/// An ordered record of [`Entry`]s. Cheap to clone; clones write to and
/// read from the same record.
#[derive(Debug, Clone)]
pub struct Journal {
    tx: mpsc::UnboundedSender<Entry>,
    rx: Arc<Mutex<mpsc::UnboundedReceiver<Entry>>>,
}

impl Default for Journal {
    fn default() -> Self {
        Self::new()
    }
}

impl Journal {
    /// An empty journal.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Arc::new(Mutex::new(rx)),
        }
    }

    /// Appends an entry (text becomes an [`Entry::Note`]).
    pub fn write(&self, entry: impl Into<Entry>) {
        let _ = self.tx.send(entry.into());
    }

    /// Takes every entry written so far.
    pub async fn take(&self) -> Vec<Entry> {
        let mut rx = self.rx.lock().await;
        let mut out = Vec::new();
        while let Ok(e) = rx.try_recv() {
            out.push(e);
        }
        out
    }

    /// Waits for the next entry.
    pub async fn next(&self) -> Option<Entry> {
        self.rx.lock().await.recv().await
    }

    /// Waits until an entry whose text is `entry` is written, returning the
    /// entries before it.
    pub async fn wait_for(&self, entry: &str) -> Vec<Entry> {
        let mut before = Vec::new();
        while let Some(e) = self.next().await {
            if e == entry {
                return before;
            }
            before.push(e);
        }
        before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_read_as_the_lines_reports_print() {
        let cases = [
            (Entry::Started("a".into()), "start a"),
            (Entry::FailedStart("a".into()), "failed start a"),
            (
                Entry::runtime(RuntimeOp::Remove, "c-1"),
                "runtime remove c-1",
            ),
            (
                Entry::Runtime {
                    op: RuntimeOp::Signal,
                    subject: "c-1".into(),
                    arg: Some("SIGTERM".into()),
                },
                "runtime signal c-1 SIGTERM",
            ),
            (
                Entry::overlay(OverlayOp::Detach, "c-1", Some("store")),
                "overlay detach c-1 store",
            ),
            (
                Entry::overlay(OverlayOp::NetnsAdd, "arb-1", None),
                "overlay netns add arb-1",
            ),
            (
                Entry::OverlayFailed {
                    op: OverlayOp::Attach,
                    subject: "c-1".into(),
                    segment: Some("s".into()),
                },
                "overlay failed attach c-1 s",
            ),
            (Entry::TokenRevoked("c-1".into()), "token revoke c-1"),
        ];
        for (entry, text) in cases {
            assert_eq!(entry.to_string(), text);
            assert!(entry == text);
        }
    }

    #[test]
    fn mentions_matches_whole_ids_only() {
        let e = Entry::overlay(OverlayOp::Attach, "c-1", Some("store"));
        assert!(e.mentions("c-1") && e.mentions("store"));
        assert!(!e.mentions("c-"));
    }
}
