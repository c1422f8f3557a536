//! The one way out of an execution: output drained, cleanup run once,
//! final record written and reported, completion sinks told; and the drop
//! guard for an actor that died without it.

use std::time::Duration;

use chrono::Utc;

use super::{Execution, OUTPUT_DRAIN};
use crate::{
    actors::executor_actor::ExecutorMsg,
    execution::{FailReason, JobState},
    runtime::{LogStream, OutputSink},
    store::{CompletionEvent, ExecutionOutput, deliver},
};

impl Execution {
    /// The one way out: output, cleanup, final record, report, sinks.
    pub(super) async fn finish(&mut self, state: JobState) {
        if self.finished {
            return;
        }
        tracing::debug!(execution = %self.meta.id, ?state, "finishing");
        self.finished = true;
        if let Some(t) = self.deadline.take() {
            t.abort();
        }
        if self.main_started && !self.is_task {
            let _ = tokio::time::timeout(OUTPUT_DRAIN, self.output.wait_closed()).await;
        }
        if let Err(e) = self.output.finish() {
            tracing::warn!(execution = %self.meta.id, error = %e, "failed to write the execution's logs");
        }
        self.status.logs_incomplete = self.output.incomplete();
        self.cleanup().await;
        self.status.paused = false;
        self.status.finished_at = Some(Utc::now());
        self.status.state = state;
        self.publish().await;
        if self.kept
            && let Some(files) = &self.files
        {
            files.remove_kept();
        }
        let _ = self.executor.cast(ExecutorMsg::JobFinished {
            id: self.meta.id,
            status: self.status.clone(),
        });
        self.notify().await;
    }

    /// Detach, release the segment, remove the containers, revoke the token:
    /// each at most once, whatever was reached.
    async fn cleanup(&mut self) {
        let rt = self.services.runtime.clone();
        if let Some(id) = self.init.take() {
            let _ = rt.stop(&id, Duration::ZERO).await;
            if let Err(e) = rt.remove(&id).await {
                tracing::warn!(container = %id, error = %e, "failed to remove an init container; abandoning it");
                rt.abandon(&id);
            }
        }
        // A failed detach or teardown is retried by the overlay actor until
        // it succeeds (the address stays held); it is reported here.
        if let Some(id) = self.attached.take() {
            self.netns = None;
            if let Err(e) = self.services.overlay.detach(&id).await {
                self.overlay_warning(e.to_string());
            }
        }
        if let Some(path) = self.netns.take()
            && let Err(e) = self.services.overlay.discard(&path).await
        {
            self.overlay_warning(e.to_string());
        }
        if let Some(segment) = self.segment.take()
            && let Err(e) = self.services.overlay.release(&segment).await
        {
            self.overlay_warning(e.to_string());
        }
        if let Some(id) = self.main.take() {
            if self.main_started
                && let Ok(crate::runtime::ContainerState::Running { .. }) = rt.state(&id).await
            {
                let _ = rt.stop(&id, Duration::ZERO).await;
            }
            if let Err(e) = rt.remove(&id).await {
                // Kill it now and remove it in the background: a failed
                // remove must not leak the container.
                tracing::warn!(container = %id, error = %e, "failed to remove a job container; abandoning it");
                rt.abandon(&id);
            }
            self.services.tokens.revoke(self.meta.id, &id);
        }
    }

    /// Completion event to `completion_event.json` and the job's sinks.
    async fn notify(&mut self) {
        let Some(files) = self.files.clone() else {
            return;
        };
        let record = crate::execution::ExecutionRecord {
            meta: self.meta.clone(),
            status: self.status.clone(),
        };
        let event = CompletionEvent::new(&record, &files);
        // `deliver` writes completion_event.json itself, with the results.
        deliver(
            &self.spec.notify,
            &event,
            &files,
            self.services.notify_timeout,
        )
        .await;
    }
}

impl Drop for Execution {
    /// The actor died without finishing (a panic): kill the container now,
    /// give the segment back, and report the execution failed.
    fn drop(&mut self) {
        if self.finished || self.left {
            return;
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
        for id in [self.init.take(), self.main.take()].into_iter().flatten() {
            self.services.runtime.abandon(&id);
            self.services.tokens.revoke(self.meta.id, &id);
        }
        if let Some(c) = self.attached.take() {
            let (tx, _) = tokio::sync::oneshot::channel();
            self.services
                .overlay
                .cast(crate::actors::overlay_actor::OverlayMsg::Detach(
                    c,
                    tx.into(),
                ));
        }
        if let Some(p) = self.netns.take() {
            let (tx, _) = tokio::sync::oneshot::channel();
            self.services
                .overlay
                .cast(crate::actors::overlay_actor::OverlayMsg::Discard(
                    p,
                    tx.into(),
                ));
        }
        if let Some(s) = self.segment.take() {
            let (tx, _) = tokio::sync::oneshot::channel();
            self.services
                .overlay
                .cast(crate::actors::overlay_actor::OverlayMsg::Release(
                    s,
                    tx.into(),
                ));
        }
        self.status.state = JobState::Failed {
            reason: FailReason::Task {
                message: "the job actor died".into(),
            },
            exit_code: None,
        };
        self.status.finished_at = Some(Utc::now());
        if let Some(files) = &self.files {
            let _ = files.write_state(&self.status);
        }
        let _ = self.executor.cast(ExecutorMsg::JobFinished {
            id: self.meta.id,
            status: self.status.clone(),
        });
    }
}

/// Forwards an init container's output but not its end: the execution's
/// streams close when the main command's do.
pub(super) struct Unclosed(pub(super) ExecutionOutput);

impl OutputSink for Unclosed {
    fn write(&self, stream: LogStream, bytes: &[u8]) {
        self.0.write(stream, bytes);
    }
    fn close(&self, _: LogStream) {}
}
