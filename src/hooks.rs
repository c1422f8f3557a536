//! Operator hooks run on the node's own events: a service's `on_failure`
//! command, run when one of its replicas gives up (or fails for good),
//! with the event as JSON on stdin, as the job completion sinks are.
//!
//! The hook runs in a task of its own, never inside the supervisor that
//! saw the failure: a slow or hanging hook holds nothing, and is killed
//! (with everything it started) after [`HOOK_TIMEOUT`].

use std::{process::Stdio, time::Duration};

use nix::{
    sys::signal::{Signal, killpg},
    unistd::Pid,
};
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::actors::supervisor_actor::GaveUp;

/// How long a hook may run before it is killed.
pub const HOOK_TIMEOUT: Duration = Duration::from_secs(60);

/// What an `on_failure` hook reads on stdin.
#[derive(Debug, Clone, Serialize)]
pub struct ServiceFailed {
    /// Always `service_failed`.
    pub event: &'static str,
    /// The service.
    pub service: String,
    /// The replica that stays down.
    pub replica: String,
    /// Why.
    pub reason: String,
    /// How it last ended, as text.
    pub last_exit: String,
    /// Its exit code, when it exited with one.
    pub exit_code: Option<i32>,
    /// Restarts it had.
    pub restarts: u32,
    /// When (RFC 3339).
    pub at: chrono::DateTime<chrono::Utc>,
}

impl From<&GaveUp> for ServiceFailed {
    fn from(g: &GaveUp) -> Self {
        Self {
            event: "service_failed",
            service: g.supervisor.clone(),
            replica: g.child.clone(),
            reason: g.reason.clone(),
            last_exit: g.exit.to_string(),
            exit_code: g.exit.exit_code(),
            restarts: g.restarts,
            at: chrono::Utc::now(),
        }
    }
}

/// Runs `argv` with `event` as JSON on stdin, in a task; its outcome is logged.
pub fn spawn_failure_hook(argv: Vec<String>, event: ServiceFailed) {
    tokio::spawn(async move {
        let what = argv.join(" ");
        match run(&argv, &event).await {
            Ok(status) if status.success() => {
                tracing::info!(service = %event.service, replica = %event.replica, hook = %what, "on_failure hook ran")
            }
            Ok(status) => {
                tracing::warn!(service = %event.service, replica = %event.replica, hook = %what, %status, "on_failure hook failed")
            }
            Err(e) => {
                tracing::warn!(service = %event.service, replica = %event.replica, hook = %what, error = %e, "on_failure hook failed")
            }
        }
    });
}

async fn run(argv: &[String], event: &ServiceFailed) -> Result<std::process::ExitStatus, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("empty command".into());
    };
    let json = serde_json::to_vec(event).map_err(|e| e.to_string())?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("ARBOR_EVENT_TYPE", event.event)
        .env("ARBOR_SERVICE", &event.service)
        .env("ARBOR_REPLICA", &event.replica)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("failed to run {program:?}: {e}"))?;
    let pid = child.id();
    let stdin = child.stdin.take();
    let ran = tokio::time::timeout(HOOK_TIMEOUT, async {
        if let Some(mut stdin) = stdin {
            // A hook that does not read its stdin is fine (EPIPE).
            let _ = stdin.write_all(&json).await;
        }
        child.wait().await
    })
    .await;
    match ran {
        Ok(status) => status.map_err(|e| format!("failed to wait for {program:?}: {e}")),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = killpg(Pid::from_raw(pid), Signal::SIGKILL);
            }
            Err(format!(
                "timed out after {}; killed",
                crate::spec::fmt_duration(HOOK_TIMEOUT)
            ))
        }
    }
}
