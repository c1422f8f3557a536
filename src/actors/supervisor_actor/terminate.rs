//! Stopping one child with its shutdown policy.
//!
//! The supervisor waits on the child's own stop notification (ractor signals
//! it after `post_stop`), not on its mailbox, so it can wait inside its
//! handler. A stop that overruns is turned into a kill, and a kill is always
//! waited for, so when this returns the child is gone.

use std::time::Duration;

use ractor::ActorCell;

use crate::spec::Shutdown;

/// Stops `cell`: `brutal_kill` kills it (for containers: stops them with no
/// grace, within `margin`), `timeout(d)` asks it to stop and kills it after
/// `d + margin`, `infinity` asks and waits.
pub(crate) async fn terminate(cell: &ActorCell, policy: Shutdown, margin: Duration, reason: &str) {
    match policy {
        Shutdown::BrutalKill if margin.is_zero() => kill(cell).await,
        Shutdown::BrutalKill => stop_within(cell, margin, reason).await,
        Shutdown::Timeout(d) => stop_within(cell, d.saturating_add(margin), reason).await,
        Shutdown::Infinity => {
            cell.stop(Some(reason.to_owned()));
            let _ = cell.wait(None).await;
        }
    }
}

async fn stop_within(cell: &ActorCell, limit: Duration, reason: &str) {
    cell.stop(Some(reason.to_owned()));
    if cell.wait(Some(limit)).await.is_err() {
        tracing::warn!(actor = %cell.get_id(), ?limit, "child did not stop in time; killing it");
        kill(cell).await;
    }
}

async fn kill(cell: &ActorCell) {
    cell.kill();
    let _ = cell.wait(None).await;
}
