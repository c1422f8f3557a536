//! What a crashed node left: containers in its runc root, bundles (with
//! their overlay mounts) in its bundle directory. Found and removed when the
//! next OCI runtime on the same state dir starts.

use std::path::Path;

use super::{OciError, bundle, runc::Runc};

/// Container ids in runc's root.
pub(crate) async fn list(runc: &Runc) -> Result<Vec<String>, OciError> {
    let out = runc.run(&["list", "--quiet"]).await?;
    Ok(String::from_utf8_lossy(&out)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// Deletes every container in runc's root (killing what still runs) and
/// every bundle; returns how many containers and bundles it removed.
pub(crate) async fn clean(runc: &Runc, bundles: &Path) -> usize {
    let mut removed = 0;
    match list(runc).await {
        Ok(ids) => {
            for id in ids {
                match runc.run(&["delete", "--force", &id]).await {
                    Ok(_) => removed += 1,
                    Err(e) => {
                        tracing::warn!(error = %e, container = %id, "failed to delete an orphaned container")
                    }
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "failed to list orphaned containers"),
    }
    let dirs: Vec<_> = std::fs::read_dir(bundles)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    for dir in dirs {
        let _ = tokio::task::spawn_blocking(move || bundle::teardown_dir(&dir)).await;
        removed += 1;
    }
    removed
}
