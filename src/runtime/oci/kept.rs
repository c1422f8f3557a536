//! Kept containers of the OCI runtime (live restore): created through a
//! keeper, adopted from a previous agent, or stopped when no replica claims
//! them.
//!
//! The keeper (`arbor-keeper --pid-file`) runs `runc create` with the
//! output pipes it made, and becomes the container init's parent once runc
//! exits (it is a child subreaper, as the agent is without keepers). From
//! then on it holds the init as it holds a process runtime's program: it
//! keeps copies of the pipes' read ends for the next agent, reaps the init
//! and keeps its exit status. The agent still runs `runc start`, signals the
//! init through a pidfd, and runs `runc delete` once the init exited; runc's
//! state root and the bundle of a kept container are spared by the start-up
//! clean-up (`orphans.rs`) of the next agent, which adopts it by its
//! record (`<short id>.json`, the spec it was created from).
//!
//! A container the previous agent created but never started (`runc state`
//! says `created`) is not adopted: it is deleted.

use std::{
    os::{fd::OwnedFd, unix::net::UnixStream as StdUnixStream},
    path::Path,
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64},
    },
    time::Duration,
};

use tokio::sync::watch;

use super::{
    OciRuntime, REAP_LIMIT,
    bundle::{self, Bundle},
    entry::{self, Entry, OciState},
    runc::Runc,
};
use crate::runtime::{
    Cause, ContainerId, ContainerSpec, ExitStatus, LogBuffer, Op, RuntimeError, Signal,
    keeper::{Conn, Hello, KeeperProcess, Keepers, Left, Meta, adopt_key, same_spec},
};

/// How long a kept container nobody adopted gets to stop on `SIGTERM` when
/// its record has no grace.
const LEFT_GRACE: Duration = Duration::from_secs(10);

/// How long `runc create` under a keeper may take.
const CREATE_LIMIT: Duration = Duration::from_secs(120);

impl OciRuntime {
    /// `runc create` of `id` through a keeper; the entry of the created
    /// container (its init waits for `runc start`).
    pub(super) async fn create_kept(
        &self,
        id: &ContainerId,
        spec: &ContainerSpec,
        bundle: Bundle,
        cgroup: String,
        keepers: &Keepers,
    ) -> Result<Arc<Entry>, (Bundle, RuntimeError)> {
        let fail = |cause: Cause| RuntimeError::new(Op::Create, id, cause);
        let runc = &self.shared.runc;
        let files = keepers.files(id);
        if let Err(cause) = keepers.create_dir() {
            return Err((bundle, fail(cause)));
        }
        let (ours, theirs) = match StdUnixStream::pair() {
            Ok(p) => p,
            Err(e) => return Err((bundle, fail(Cause::io("failed to create a socket pair", e)))),
        };
        let pid_file = bundle.dir.join("init.pid");
        let log = bundle.dir.join("runc.log");
        let mut cmd = keepers.command();
        cmd.arg(&files.socket)
            .arg(&files.exit)
            .args(keepers.options())
            .arg("--pid-file")
            .arg(&pid_file)
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env_clear();
        // No `pre_exec`: the keeper takes its own session, so this spawn is
        // a posix_spawn (vfork), not a fork of the agent.
        let argv = runc.create_argv(&id.0, &bundle.dir, &pid_file, &log);
        let launch = crate::keeper::launch_message(
            runc.binary.as_os_str().as_encoded_bytes(),
            argv.iter().map(|a| a.as_encoded_bytes()),
            std::env::vars_os().map(|(k, v)| {
                let mut kv = k.into_encoded_bytes();
                kv.push(b'=');
                kv.extend(v.into_encoded_bytes());
                kv
            }),
        );
        let spawned = KeeperProcess::spawn(&mut cmd);
        // The keeper's end of the pair must not stay open here.
        drop(cmd);
        let mut keeper = match spawned {
            Ok(k) => k,
            Err(e) => {
                return Err((
                    bundle,
                    fail(Cause::io("failed to spawn the container's keeper", e)),
                ));
            }
        };
        let hello = match Conn::new(ours) {
            Ok(mut conn) => match conn.send(&launch).await {
                Ok(()) => conn
                    .hello_within("runc", CREATE_LIMIT)
                    .await
                    .map(|h| (h, conn)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let (pid, [out, err], conn) = match hello {
            Ok((Hello::Running { pid, pipes }, conn)) => (pid, pipes, conn),
            other => {
                let cause = match other {
                    Ok((Hello::SetUpFailed(status), _)) => {
                        Runc::create_failed(&id.0, &bundle.dir, &log, status.to_string()).into()
                    }
                    Ok((Hello::Failed(cause), _)) => cause,
                    Err(e) => {
                        keeper.kill();
                        Cause::io("the container's keeper failed", e)
                    }
                    Ok((Hello::Running { .. }, _)) => unreachable!("matched above"),
                };
                keeper.reaped().await;
                // A half-created container may be in runc's state: delete it.
                let _ = runc.run(&["delete", "--force", &id.0]).await;
                files.remove();
                return Err((bundle, fail(cause)));
            }
        };
        let pidfd = match entry::pidfd_open(pid) {
            Ok(fd) => Arc::new(fd),
            Err(e) => {
                let _ = runc.run(&["delete", "--force", &id.0]).await;
                keeper.reaped().await;
                files.remove();
                return Err((
                    bundle,
                    fail(Cause::io("failed to watch the container's init", e)),
                ));
            }
        };
        let meta = Meta {
            id: id.clone(),
            pid,
            spec: spec.clone(),
            cgroup: None,
            limit_dirs: Vec::new(),
            oom_file: None,
            grace_ms: spec.stop_grace.map(|g| g.as_millis() as u64),
        };
        if let Err(e) = meta.write(&files.meta) {
            tracing::warn!(container = %id, error = %e, "failed to record a kept container; the next agent cannot adopt it");
        }
        let (logs, readers, eof) = self.pump(spec, out, err);
        let entry = Arc::new(Entry {
            bundle,
            pidfd: Some(pidfd),
            state: watch::Sender::new(OciState::Created { pid }),
            logs,
            readers,
            eof,
            oom_kills: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            cgroup,
            keeper: Some(files),
        });
        watch_kept(entry.clone(), conn, Some(keeper));
        Ok(entry)
    }

    /// Adopts the kept container a previous agent left for `spec` (see
    /// [`crate::runtime::Runtime::adopt`]).
    pub(super) async fn adopt_kept(
        &self,
        spec: &ContainerSpec,
    ) -> Result<Option<ContainerId>, RuntimeError> {
        if self.shared.keepers.is_none() {
            return Ok(None);
        }
        let key = adopt_key(spec);
        let Some(found) = self
            .shared
            .left
            .call(move |t| t.remove(&key))
            .await
            .flatten()
        else {
            return Ok(None);
        };
        let Some(meta) = found.meta.clone() else {
            self.stop_left(found).await;
            return Ok(None);
        };
        // A job's container is its execution's (the key names it): what
        // runs is what that execution started, whatever the job says now.
        let execution = spec.labels.contains_key("execution");
        if !spec.live_restore || (!execution && !same_spec(&meta.spec, spec)) {
            tracing::info!(container = %meta.id, "the spec of a container the previous agent left changed: stopping it to start the new one");
            self.stop_left(found).await;
            return Ok(None);
        }
        let id = meta.id.clone();
        let status = self.shared.runc.status(&id.0).await;
        let pidfd = match &found.keeper {
            Some((_, pid, _)) => match status.as_deref() {
                Some("created") => {
                    tracing::info!(container = %id, "a container the previous agent left was never started: deleting it");
                    self.stop_left(found).await;
                    return Ok(None);
                }
                // Ended: its keeper reports the exit, and its pid may be
                // another process's by now.
                Some("stopped") => None,
                _ => match entry::pidfd_open(*pid) {
                    Ok(fd) => Some(Arc::new(fd)),
                    Err(e) => {
                        tracing::info!(container = %id, error = %e, "the init of a container the previous agent left is gone; its keeper reports its exit");
                        None
                    }
                },
            },
            None => None,
        };
        let dir = self.shared.bundles.join(&id.0);
        let bundle = Bundle {
            rootfs: dir.join("rootfs"),
            dir,
        };
        let cgroup = format!("{}/{}", self.shared.cgroup_parent, id.0);
        let entry = match found.keeper {
            Some((conn, pid, [out, err])) => {
                tracing::info!(container = %id, pid, "re-adopted a container the previous agent left running");
                let (logs, readers, eof) = self.pump(spec, out, err);
                let entry = Arc::new(Entry {
                    bundle,
                    pidfd,
                    state: watch::Sender::new(OciState::Running { pid }),
                    logs,
                    readers,
                    eof,
                    oom_kills: AtomicU64::new(0),
                    paused: AtomicBool::new(status.as_deref() == Some("paused")),
                    cgroup,
                    keeper: Some(found.files),
                });
                watch_kept(entry.clone(), conn, None);
                entry
            }
            None => {
                let exit = found
                    .exit
                    .unwrap_or(ExitStatus::Signal(Signal::SIGKILL as i32));
                tracing::info!(container = %id, status = %exit, "a container the previous agent left ended while no agent watched");
                let entry = Arc::new(Entry {
                    bundle,
                    pidfd: None,
                    state: watch::Sender::new(OciState::Running { pid: meta.pid }),
                    logs: LogBuffer::new(self.shared.log_lines, self.shared.log_bytes),
                    readers: Vec::new(),
                    eof: watch::channel(2u8).1,
                    oom_kills: AtomicU64::new(0),
                    paused: AtomicBool::new(false),
                    cgroup,
                    keeper: Some(found.files),
                });
                // Its cgroup (and its OOM count) lives until `runc delete`.
                entry.record_exit(exit);
                entry
            }
        };
        let key = id.clone();
        self.shared
            .table
            .call(move |t| t.insert(key, entry))
            .await
            .ok_or_else(|| RuntimeError::new(Op::Create, &spec.name, Cause::Closed))?;
        Ok(Some(id))
    }

    /// Stops every kept container a previous agent left that no replica
    /// adopted (each with a 10 s grace); returns how many.
    pub async fn release_unadopted(&self) -> usize {
        let all: Vec<Left> = self
            .shared
            .left
            .call(|t| t.drain().map(|(_, l)| l).collect())
            .await
            .unwrap_or_default();
        let n = all.len();
        for l in &all {
            if let Some(m) = &l.meta {
                tracing::info!(container = %m.id, name = %m.spec.name, "stopping a container the previous agent left: no replica claims it");
            }
        }
        futures::future::join_all(all.into_iter().map(|l| self.stop_left(l))).await;
        n
    }

    /// The agent leaves its kept containers to the next one: every other
    /// container is stopped and removed now. Returns how many it removed.
    pub async fn leave(&self) -> usize {
        let ids: Vec<ContainerId> = self
            .shared
            .table
            .call(|t| {
                t.iter()
                    .filter(|(_, e)| e.keeper.is_none())
                    .map(|(id, _)| id.clone())
                    .collect()
            })
            .await
            .unwrap_or_default();
        crate::runtime::stop_and_remove_all(self, &ids, Duration::ZERO).await
    }

    /// Stops a kept container nobody adopts (`SIGTERM`, then `SIGKILL`
    /// after `grace`; its output is read and dropped meanwhile), deletes it
    /// from runc's state and removes its bundle and keeper files.
    async fn stop_left(&self, left: Left) {
        let grace = left.grace(LEFT_GRACE);
        let id = left.meta.as_ref().map(|m| m.id.0.clone());
        if let Some((mut conn, pid, pipes)) = left.keeper {
            drain(pipes);
            let created = match &id {
                Some(id) => self.shared.runc.status(id).await.as_deref() == Some("created"),
                None => false,
            };
            // An init waiting for `start` is killed by `runc delete --force`.
            if !created && let Ok(fd) = entry::pidfd_open(pid) {
                entry::pidfd_send_signal(&fd, Signal::SIGCONT);
                entry::pidfd_send_signal(&fd, Signal::SIGTERM);
                if tokio::time::timeout(grace, conn.exit()).await.is_err() {
                    entry::pidfd_send_signal(&fd, Signal::SIGKILL);
                    if tokio::time::timeout(REAP_LIMIT, conn.exit()).await.is_err() {
                        tracing::warn!(pid, "a container the previous agent left outlived SIGKILL");
                    }
                }
            }
        }
        if let Some(id) = id {
            if let Err(e) = self.shared.runc.run(&["delete", "--force", &id]).await {
                tracing::warn!(container = %id, error = %e, "failed to delete a container the previous agent left");
            }
            let dir = self.shared.bundles.join(&id);
            let _ = tokio::task::spawn_blocking(move || bundle::teardown_dir(&dir)).await;
        }
        left.files.remove();
    }
}

/// Watches a kept container's keeper: its exit, then (for a keeper this
/// agent started) the keeper's own end.
fn watch_kept(entry: Arc<Entry>, mut conn: Conn, keeper: Option<KeeperProcess>) {
    tokio::spawn(async move {
        let status = conn.exit().await.unwrap_or_else(|| {
            tracing::warn!(cgroup = %entry.cgroup, "the keeper of a container ended without its exit status; reported killed");
            ExitStatus::Signal(Signal::SIGKILL as i32)
        });
        entry.record_exit(status);
        conn.closed().await;
        if let Some(k) = keeper {
            k.reaped().await;
        }
    });
}

/// Reads and drops what is left in a container's pipes.
fn drain(pipes: [OwnedFd; 2]) {
    for fd in pipes {
        if let Ok(mut r) = tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
            });
        }
    }
}

/// Removes the sockets of the keepers in `dir` (live restore is off): a
/// keeper whose container ended and whose socket is gone exits.
pub(super) fn forget_keepers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.path().extension().is_some_and(|x| x == "sock") {
            let _ = std::fs::remove_file(e.path());
        }
    }
}
