//! Named network namespaces: an nsfs bind mount on a file, so a namespace
//! outlives the thread that made it and a container can join it by path
//! (`ip netns add` does the same under `/run/netns`).
//!
//! `unshare(CLONE_NEWNET)` and `setns` change the calling *thread*; they run
//! on a fresh OS thread that exits afterwards, never on a tokio worker or a
//! `spawn_blocking` thread (those are reused and would stay in the
//! namespace).

use std::{
    fs::File,
    future::Future,
    io,
    path::{Path, PathBuf},
};

use nix::{
    mount::{MntFlags, MsFlags, mount, umount2},
    sched::{CloneFlags, setns, unshare},
};

/// A failed namespace operation, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    /// A system call failed.
    #[error("failed to {op} network namespace {path}")]
    Sys {
        /// What was being done.
        op: &'static str,
        /// The namespace file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The helper thread died.
    #[error("failed to {op} network namespace {path}: its thread panicked")]
    Thread {
        /// What was being done.
        op: &'static str,
        /// The namespace file.
        path: PathBuf,
    },
}

fn sys<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NetnsError + 'a {
    move |source| NetnsError::Sys {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Runs `f` on a fresh OS thread and waits for it without blocking the
/// executor.
async fn on_thread<T: Send + 'static>(
    op: &'static str,
    path: &Path,
    f: impl FnOnce() -> Result<T, NetnsError> + Send + 'static,
) -> Result<T, NetnsError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("arbor-netns".into())
        .spawn(move || {
            let _ = tx.send(f());
        });
    if let Err(e) = spawned {
        return Err(sys(op, path)(e));
    }
    rx.await.map_err(|_| NetnsError::Thread {
        op,
        path: path.to_owned(),
    })?
}

/// Creates a new, empty network namespace bound at `path` (the parent
/// directory is created). Fails when `path` exists.
pub async fn create(path: &Path) -> Result<(), NetnsError> {
    let p = path.to_owned();
    on_thread("create", path, move || {
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).map_err(sys("create the directory of", &p))?;
        }
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&p)
            .map_err(sys("create the file of", &p))?;
        let made = unshare(CloneFlags::CLONE_NEWNET)
            .map_err(io::Error::from)
            .map_err(sys("unshare", &p))
            .and_then(|()| {
                mount(
                    Some("/proc/thread-self/ns/net"),
                    &p,
                    None::<&str>,
                    MsFlags::MS_BIND,
                    None::<&str>,
                )
                .map_err(io::Error::from)
                .map_err(sys("bind-mount", &p))
            });
        if made.is_err() {
            let _ = std::fs::remove_file(&p);
        }
        made
    })
    .await
}

/// Unmounts and deletes the namespace file at `path`; the namespace goes
/// when nothing else holds it. A missing file is not an error.
pub async fn remove(path: &Path) -> Result<(), NetnsError> {
    let p = path.to_owned();
    tokio::task::spawn_blocking(move || remove_now(&p))
        .await
        .map_err(|_| NetnsError::Thread {
            op: "remove",
            path: path.to_owned(),
        })?
}

/// [`remove`], synchronously.
pub fn remove_now(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => return Err(sys("unmount", path)(e.into())),
    }
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(sys("delete the file of", path)(e)),
    }
}

/// Opens the namespace at `path` (for `setns`, or to move a link into it).
pub fn open(path: &Path) -> Result<File, NetnsError> {
    File::open(path).map_err(sys("open", path))
}

/// Runs the future `f` makes on a fresh thread inside the namespace at
/// `path`, with a current-thread runtime: netlink sockets it opens belong
/// to that namespace.
pub async fn run_in<T, F, Fut>(path: &Path, f: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = Result<T, String>>,
{
    let p = path.to_owned();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("arbor-netns".into())
        .spawn(move || {
            let run = || -> Result<T, String> {
                let file = open(&p).map_err(|e| e.to_string())?;
                setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                    format!("failed to enter network namespace {}: {e}", p.display())
                })?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| format!("failed to start a runtime in {}: {e}", p.display()))?;
                rt.block_on(f())
            };
            let _ = tx.send(run());
        });
    if let Err(e) = spawned {
        return Err(format!(
            "failed to spawn a thread for {}: {e}",
            path.display()
        ));
    }
    rx.await
        .map_err(|_| format!("the thread inside {} panicked", path.display()))?
}
