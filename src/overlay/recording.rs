//! A fake backend for tests: journals every call and fails on demand.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
};

use async_trait::async_trait;

use super::{AttachPlan, Keep, OverlayBackend, SegmentPlan};
use crate::testing::Journal;

/// A backend call that can be made to fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FaultOp {
    /// `setup_segment`.
    Setup,
    /// `attach`.
    Attach,
    /// `detach`.
    Detach,
    /// `teardown_segment`.
    Teardown,
    /// `prepare_netns`.
    Prepare,
}

const OPS: usize = 5;

/// A fake backend that writes every call to a [`Journal`]
/// (`overlay setup SEG`, `overlay attach CONTAINER SEG`, `overlay detach
/// CONTAINER SEG`, `overlay teardown SEG`, `overlay netns add|del NAME`)
/// and fails the next N calls of an operation on demand. It counts as
/// networked: the overlay actor hands out real addresses from its pool, so
/// the allocation is tested without root.
#[derive(Debug, Clone, Default)]
pub struct RecordingOverlay {
    journal: Journal,
    fail: Arc<[AtomicU32; OPS]>,
}

impl RecordingOverlay {
    /// A fake writing into `journal`.
    pub fn new(journal: Journal) -> Self {
        Self {
            journal,
            fail: Arc::new(Default::default()),
        }
    }

    /// The next `n` calls of `op` fail (clones share this).
    pub fn fail_next(&self, op: FaultOp, n: u32) {
        self.fail[op as usize].store(n, Ordering::SeqCst);
    }

    fn check(&self, op: FaultOp, what: &str) -> Result<(), String> {
        let left = &self.fail[op as usize];
        if left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.journal.write(format!("overlay failed {what}"));
            Err(format!("injected fault: {what}"))
        } else {
            Ok(())
        }
    }
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[async_trait]
impl OverlayBackend for RecordingOverlay {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn networked(&self) -> bool {
        true
    }
    async fn setup_segment(&self, s: &SegmentPlan) -> Result<(), String> {
        self.check(FaultOp::Setup, &format!("setup {}", s.name))?;
        self.journal.write(format!("overlay setup {}", s.name));
        Ok(())
    }
    async fn teardown_segment(&self, s: &SegmentPlan) -> Result<(), String> {
        self.check(FaultOp::Teardown, &format!("teardown {}", s.name))?;
        self.journal.write(format!("overlay teardown {}", s.name));
        Ok(())
    }
    async fn prepare_netns(&self, path: &Path) -> Result<(), String> {
        let name = file_name(path);
        self.check(FaultOp::Prepare, &format!("netns add {name}"))?;
        self.journal.write(format!("overlay netns add {name}"));
        Ok(())
    }
    async fn remove_netns(&self, path: &Path) -> Result<(), String> {
        self.journal
            .write(format!("overlay netns del {}", file_name(path)));
        Ok(())
    }
    async fn attach(&self, p: &AttachPlan) -> Result<(), String> {
        self.check(
            FaultOp::Attach,
            &format!("attach {} {}", p.container, p.segment),
        )?;
        self.journal
            .write(format!("overlay attach {} {}", p.container, p.segment));
        Ok(())
    }
    async fn detach(&self, p: &AttachPlan) -> Result<(), String> {
        self.check(
            FaultOp::Detach,
            &format!("detach {} {}", p.container, p.segment),
        )?;
        self.journal
            .write(format!("overlay detach {} {}", p.container, p.segment));
        Ok(())
    }
    async fn sweep(&self, prefix: &str, _: &Path, _: &Keep) -> Result<Vec<String>, String> {
        self.journal.write(format!("overlay sweep {prefix}"));
        Ok(Vec::new())
    }
}
