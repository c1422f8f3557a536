//! What the cron actor triggers: a [`CronTarget`] receives one [`CronFire`]
//! per run.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

/// One run of a schedule, handed to the [`CronTarget`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CronFire {
    /// The job the schedule belongs to.
    pub job: String,
    /// The scheduled time of this run (without jitter).
    pub scheduled_for: DateTime<Utc>,
    /// When the actor fired it (the clock's time at the call).
    pub fired_at: DateTime<Utc>,
    /// Runs of this schedule skipped since the previous fire: missed during
    /// downtime or suspension, or later than `starting_deadline`.
    pub skipped: u64,
}

/// Receives the runs of every schedule. Called inside the cron actor: keep
/// it short (send a message, do not run the job). A panic is caught and
/// logged; the actor keeps running.
///
/// The executor implements it to trigger a job with `JobTrigger::Scheduler`.
/// Closures `Fn(CronFire)` implement it, and so does [`FireRecorder`].
pub trait CronTarget: Send + Sync + 'static {
    /// Starts one run.
    fn fire(&self, fire: CronFire);
}

impl<F> CronTarget for F
where
    F: Fn(CronFire) + Send + Sync + 'static,
{
    fn fire(&self, fire: CronFire) {
        self(fire)
    }
}

/// A target that records every fire in a channel, for tests and examples.
#[derive(Debug)]
pub struct FireRecorder {
    tx: mpsc::UnboundedSender<CronFire>,
    rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<CronFire>>,
}

impl Default for FireRecorder {
    fn default() -> Self {
        Self::new()
    }
}

impl FireRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: tokio::sync::Mutex::new(rx),
        }
    }

    /// Waits for the next fire.
    pub async fn next(&self) -> Option<CronFire> {
        self.rx.lock().await.recv().await
    }

    /// Waits for the next `n` fires.
    pub async fn next_n(&self, n: usize) -> Vec<CronFire> {
        let mut rx = self.rx.lock().await;
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            match rx.recv().await {
                Some(f) => out.push(f),
                None => break,
            }
        }
        out
    }

    /// Every fire recorded so far and not yet taken.
    pub async fn take(&self) -> Vec<CronFire> {
        let mut rx = self.rx.lock().await;
        let mut out = Vec::new();
        while let Ok(f) = rx.try_recv() {
            out.push(f);
        }
        out
    }
}

impl CronTarget for FireRecorder {
    fn fire(&self, fire: CronFire) {
        let _ = self.tx.send(fire);
    }
}
