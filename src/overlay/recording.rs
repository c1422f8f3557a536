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
use crate::journal::{Entry, Journal, OverlayOp};

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

    /// Fails on purpose when `op` was told to fail; otherwise records the call.
    fn call(
        &self,
        op: FaultOp,
        entry: OverlayOp,
        subject: &str,
        segment: Option<&str>,
    ) -> Result<(), String> {
        let left = &self.fail[op as usize];
        if left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            let failed = Entry::OverlayFailed {
                op: entry,
                subject: subject.to_owned(),
                segment: segment.map(str::to_owned),
            };
            let what = failed.to_string();
            self.journal.write(failed);
            Err(format!(
                "injected fault: {}",
                what.trim_start_matches("overlay failed ")
            ))
        } else {
            self.journal.write(Entry::overlay(entry, subject, segment));
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
        self.call(FaultOp::Setup, OverlayOp::Setup, &s.name, None)
    }
    async fn teardown_segment(&self, s: &SegmentPlan) -> Result<(), String> {
        self.call(FaultOp::Teardown, OverlayOp::Teardown, &s.name, None)
    }
    async fn prepare_netns(&self, path: &Path) -> Result<(), String> {
        self.call(
            FaultOp::Prepare,
            OverlayOp::NetnsAdd,
            &file_name(path),
            None,
        )
    }
    async fn remove_netns(&self, path: &Path) -> Result<(), String> {
        self.journal
            .write(Entry::overlay(OverlayOp::NetnsDel, file_name(path), None));
        Ok(())
    }
    async fn attach(&self, p: &AttachPlan) -> Result<(), String> {
        self.call(
            FaultOp::Attach,
            OverlayOp::Attach,
            &p.container.to_string(),
            Some(p.segment.as_str()),
        )
    }
    async fn detach(&self, p: &AttachPlan) -> Result<(), String> {
        self.call(
            FaultOp::Detach,
            OverlayOp::Detach,
            &p.container.to_string(),
            Some(p.segment.as_str()),
        )
    }
    async fn sweep(&self, prefix: &str, _: &Path, _: &Keep) -> Result<Vec<String>, String> {
        self.journal
            .write(Entry::overlay(OverlayOp::Sweep, prefix, None));
        Ok(Vec::new())
    }
}
