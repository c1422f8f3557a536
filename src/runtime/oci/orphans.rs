//! What a crashed node left: containers in its runc root, bundles (with
//! their overlay mounts) in its bundle directory. Found and removed when the
//! next OCI runtime on the same state dir starts, except what runs under a
//! keeper for the next agent to adopt (live restore).

use std::{collections::HashSet, path::Path};

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
/// every bundle, except those of `spared` (containers kept for the next
/// agent); returns how many containers and bundles it removed.
pub(crate) async fn clean(runc: &Runc, bundles: &Path, spared: &HashSet<String>) -> usize {
    let mut removed = 0;
    match list(runc).await {
        Ok(ids) => {
            for id in ids.into_iter().filter(|id| !spared.contains(id)) {
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
        .map(|rd| {
            rd.flatten()
                .filter(|e| !spared.contains(&*e.file_name().to_string_lossy()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default();
    for dir in dirs {
        let _ = tokio::task::spawn_blocking(move || bundle::teardown_dir(&dir)).await;
        removed += 1;
    }
    removed
}
