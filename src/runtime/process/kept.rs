//! Kept containers of the process runtime (live restore): started through
//! a keeper, adopted from a previous agent, or stopped when no replica
//! claims them. The keeper protocol and files are in `keeper.rs`.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::OsString,
    os::{
        fd::OwnedFd,
        unix::{
            ffi::{OsStrExt, OsStringExt},
            net::UnixStream as StdUnixStream,
        },
    },
    process::Stdio,
    sync::{Arc, OnceLock, atomic::Ordering},
    time::Duration,
};

use tokio::{net::unix::pipe, sync::watch};

use super::{
    DRAIN_LIMIT, ProcessRuntime,
    cgroup::Cgroup,
    entry::{Entry, ProcState, Run, kill_group},
    resources::Limited,
    spawn::open_netns,
    spawn::remove_cgroups,
};
use crate::owned::Owned;
use crate::runtime::{
    Cause, ContainerId, ContainerSpec, ExitStatus, LogBuffer, Op, RuntimeError, Signal,
    keeper::{
        Conn, Hello, KeeperFiles, KeeperProcess, Keepers, Left, Meta, adopt_key, same_spec, scan,
    },
    logs::AsyncReadSend,
};

/// How long a kept container nobody adopted gets to stop on `SIGTERM` when
/// its record has no grace.
pub(super) const LEFT_GRACE: Duration = Duration::from_secs(10);

/// What previous agents left, by container name (scanned once), owned by
/// one task.
pub(super) type LeftTable = tokio::sync::OnceCell<Owned<HashMap<String, Left>>>;

impl ProcessRuntime {
    /// Starts `entry` through a keeper.
    pub(super) async fn spawn_kept(
        &self,
        entry: &Arc<Entry>,
        keepers: &Keepers,
    ) -> Result<(), RuntimeError> {
        let id = &entry.id;
        let spec = &entry.spec;
        let fail = |cause| RuntimeError::new(Op::Start, id, cause);
        let program = spec.command.first().cloned().unwrap_or_default();
        let path = match &entry.program {
            Some(p) => p.clone(),
            None => super::spawn::resolve_program(spec).map_err(fail)?,
        };
        let netns = match &spec.netns {
            Some(ns) => {
                open_netns(ns).map_err(fail)?;
                Some(ns.clone())
            }
            None => None,
        };
        let (cgroup, limited) = self.container_cgroups(entry, Some(&keepers.cgroup_dir()))?;
        let files = keepers.files(id);
        if let Err(cause) = keepers.create_dir() {
            remove_cgroups(&cgroup, &limited);
            return Err(fail(cause));
        }
        let (ours, theirs) = match StdUnixStream::pair() {
            Ok(p) => p,
            Err(e) => {
                remove_cgroups(&cgroup, &limited);
                return Err(fail(Cause::io("failed to create a socket pair", e)));
            }
        };
        let mut cmd = keepers.command();
        cmd.arg(&files.socket)
            .arg(&files.exit)
            .args(keepers.options());
        if let Some(cg) = &cgroup {
            cmd.arg("--join").arg(cg.path().join("cgroup.procs"));
        }
        for p in limited
            .as_ref()
            .map(|l| l.procs_paths())
            .unwrap_or_default()
        {
            cmd.arg("--join").arg(p);
        }
        if let Some(ns) = &netns {
            cmd.arg("--netns").arg(ns);
        }
        // What to run goes over the socket: the keeper's own command line
        // and environment stay its own.
        cmd.stdin(Stdio::from(OwnedFd::from(theirs)))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .env_clear();
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        let launch = crate::keeper::launch_message(
            path.as_os_str().as_bytes(),
            spec.command.iter().map(|a| a.as_bytes()),
            environment_of(spec).into_iter().map(|(k, v)| {
                let mut kv = k.into_vec();
                kv.push(b'=');
                kv.extend(v.into_vec());
                kv
            }),
        );
        // No `pre_exec`: the keeper takes its session and limit itself, so
        // this spawn is a posix_spawn (vfork), not a fork of the agent.
        let spawned = KeeperProcess::spawn(&mut cmd);
        // The keeper's end of the pair must not stay open here.
        drop(cmd);
        let mut keeper = match spawned {
            Ok(k) => k,
            Err(e) => {
                remove_cgroups(&cgroup, &limited);
                return Err(fail(Cause::io("failed to spawn the container's keeper", e)));
            }
        };
        let hello = match Conn::new(ours) {
            Ok(mut conn) => match conn.send(&launch).await {
                Ok(()) => conn.hello(&program).await.map(|h| (h, conn)),
                Err(e) => Err(e),
            },
            Err(e) => Err(e),
        };
        let (pid, pipes, conn) = match hello {
            Ok((Hello::Running { pid, pipes }, conn)) => (pid, pipes, conn),
            Ok((Hello::Failed(cause), _)) => {
                keeper.reaped().await;
                remove_cgroups(&cgroup, &limited);
                return Err(fail(cause));
            }
            Ok((Hello::SetUpFailed(status), _)) => {
                // Only a keeper given `--pid-file` says this.
                keeper.reaped().await;
                remove_cgroups(&cgroup, &limited);
                return Err(fail(Cause::io(
                    format!("the keeper of {program:?} reported a failed set-up ({status})"),
                    std::io::Error::other("unexpected keeper answer"),
                )));
            }
            Err(e) => {
                // The program may run already: in the cgroup, if any, and
                // in the keeper's session.
                if let Some(cg) = &cgroup {
                    cg.kill();
                }
                keeper.kill_session();
                keeper.reaped().await;
                remove_cgroups(&cgroup, &limited);
                return Err(fail(Cause::io("the container's keeper failed", e)));
            }
        };
        let meta = Meta {
            id: id.clone(),
            pid,
            spec: spec.clone(),
            cgroup: cgroup.as_ref().map(|c| c.path().to_owned()),
            limit_dirs: limited
                .as_ref()
                .map(|l| l.dirs().to_vec())
                .unwrap_or_default(),
            oom_file: limited
                .as_ref()
                .and_then(|l| l.oom_file().map(ToOwned::to_owned)),
            grace_ms: spec.stop_grace.map(|g| g.as_millis() as u64),
        };
        if let Err(e) = meta.write(&files.meta) {
            tracing::warn!(container = %id, error = %e, "failed to record a kept container; the next agent cannot adopt it");
        }
        self.run_kept(
            entry,
            Some(pipes),
            pid,
            cgroup,
            limited,
            files,
            Some(conn),
            Some(keeper),
        );
        Ok(())
    }

    /// `entry` runs as `pid` under a keeper: read its output, and watch its
    /// keeper for the exit and the drain.
    #[allow(clippy::too_many_arguments)]
    fn run_kept(
        &self,
        entry: &Arc<Entry>,
        pipes: Option<[OwnedFd; 2]>,
        pid: u32,
        cgroup: Option<Arc<Cgroup>>,
        limited: Option<Arc<Limited>>,
        files: KeeperFiles,
        conn: Option<Conn>,
        keeper: Option<KeeperProcess>,
    ) {
        let (readers, eof) = match pipes {
            Some([out, err]) => {
                let open = |fd: OwnedFd| {
                    pipe::Receiver::from_owned_fd(fd)
                        .ok()
                        .map(|r| Box::new(r) as Box<dyn AsyncReadSend>)
                };
                self.pump(entry, [open(out), open(err)])
            }
            None => (Vec::new(), watch::channel(2u8).1),
        };
        let _ = entry.run.set(Run {
            pgid: pid as i32,
            cgroup: cgroup.clone(),
            limited: limited.clone(),
            readers,
            eof,
            keeper: Some(files.clone()),
        });
        entry.state.send_replace(ProcState::Running { pid });
        let entry = entry.clone();
        tokio::spawn(async move {
            let status = match conn {
                Some(mut conn) => {
                    let status = conn.exit().await;
                    (status, Some(conn))
                }
                None => (None, None),
            };
            let (status, conn) = status;
            let status = status.unwrap_or_else(|| {
                tracing::warn!(container = %entry.id, "the keeper of the container ended without its exit status; reported killed");
                ExitStatus::Signal(Signal::SIGKILL as i32)
            });
            if !entry.stopping.load(Ordering::Acquire) {
                // The container ends with its main process.
                kill_group(Some(pid as i32), cgroup.as_deref(), Signal::SIGKILL);
            }
            entry.state.send_replace(ProcState::Exited { status });
            // The keeper leaves once nothing of the container is left.
            if let Some(mut conn) = conn {
                conn.closed().await;
            }
            if let Some(k) = keeper {
                k.reaped().await;
            }
            if let Some(l) = &limited {
                l.remember_oom_kills();
            }
            if let Some(cg) = &cgroup {
                cg.remove();
            }
            if let Some(l) = &limited {
                l.remove();
            }
            entry.drained.send_replace(true);
        });
    }

    /// Adopts the kept container a previous agent left for `spec` (see
    /// [`crate::runtime::Runtime::adopt`]).
    pub(super) async fn adopt_kept(
        &self,
        spec: &ContainerSpec,
        keepers: &Keepers,
    ) -> Result<Option<ContainerId>, RuntimeError> {
        let left = self
            .shared
            .left
            .get_or_init(|| async { Owned::spawn(scan(keepers).await) })
            .await;
        let key = adopt_key(spec);
        let Some(found) = left.call(move |t| t.remove(&key)).await.flatten() else {
            return Ok(None);
        };
        let Some(meta) = found.meta.clone() else {
            stop_left(found).await;
            return Ok(None);
        };
        // A job's container is its execution's (the key names it): what
        // runs is what that execution started, whatever the job says now.
        let execution = spec.labels.contains_key("execution");
        if !spec.live_restore || (!execution && !same_spec(&meta.spec, spec)) {
            tracing::info!(container = %meta.id, "the spec of a container the previous agent left changed: stopping it to start the new one");
            stop_left(found).await;
            return Ok(None);
        }
        let cgroup = meta
            .cgroup
            .as_deref()
            .and_then(|p| Cgroup::open(p).ok())
            .map(Arc::new);
        let limited = (meta.oom_file.is_some() || !meta.limit_dirs.is_empty()).then(|| {
            Arc::new(Limited::reopen(
                meta.limit_dirs.clone(),
                meta.oom_file.clone(),
            ))
        });
        let entry = Arc::new(Entry {
            id: meta.id.clone(),
            spec: spec.clone(),
            program: None,
            state: watch::Sender::new(ProcState::Starting),
            drained: watch::Sender::new(false),
            stopping: Default::default(),
            logs: LogBuffer::new(self.shared.log_lines, self.shared.log_bytes),
            run: OnceLock::new(),
        });
        match found.keeper {
            Some((conn, pid, pipes)) => {
                tracing::info!(container = %meta.id, pid, "re-adopted a container the previous agent left running");
                self.run_kept(
                    &entry,
                    Some(pipes),
                    pid,
                    cgroup,
                    limited,
                    found.files,
                    Some(conn),
                    None,
                );
            }
            None => {
                let status = found
                    .exit
                    .unwrap_or(ExitStatus::Signal(Signal::SIGKILL as i32));
                tracing::info!(container = %meta.id, %status, "a container the previous agent left ended while no agent watched");
                // Its OOM kills are read before its cgroups go.
                if let Some(l) = &limited {
                    l.remember_oom_kills();
                }
                if let Some(cg) = &cgroup {
                    cg.remove();
                }
                if let Some(l) = &limited {
                    l.remove();
                }
                let _ = entry.run.set(Run {
                    pgid: meta.pid as i32,
                    cgroup: None,
                    limited,
                    readers: Vec::new(),
                    eof: watch::channel(2u8).1,
                    keeper: Some(found.files),
                });
                entry.state.send_replace(ProcState::Exited { status });
                entry.drained.send_replace(true);
            }
        }
        let key = meta.id.clone();
        let inserted = entry.clone();
        self.shared
            .table
            .call(move |t| t.insert(key, inserted))
            .await
            .ok_or_else(|| RuntimeError::new(Op::Create, &spec.name, Cause::Closed))?;
        Ok(Some(meta.id))
    }

    /// Stops every kept container a previous agent left that no replica
    /// adopted (each with its recorded grace, else [`LEFT_GRACE`]); returns
    /// how many.
    pub async fn release_unadopted(&self) -> usize {
        let Some(keepers) = &self.shared.keepers else {
            return 0;
        };
        let left = self
            .shared
            .left
            .get_or_init(|| async { Owned::spawn(scan(keepers).await) })
            .await;
        let all: Vec<Left> = left
            .call(|t| t.drain().map(|(_, l)| l).collect())
            .await
            .unwrap_or_default();
        let n = all.len();
        for l in &all {
            if let Some(m) = &l.meta {
                tracing::info!(container = %m.id, name = %m.spec.name, "stopping a container the previous agent left: no replica claims it");
            }
        }
        futures::future::join_all(all.into_iter().map(stop_left)).await;
        // Cgroups of kept containers no record speaks of (a start cut
        // short): killed and removed. Listed before the table is read: a
        // container is in the table before its cgroup exists, so a start
        // running meanwhile is never taken for one cut short (reading the
        // table first once removed the cgroup of a replica restarting at
        // that moment, and its keeper failed to open it).
        if let Some(cgroups) = &self.shared.cgroups {
            let dir = cgroups.kept_dir(&keepers.cgroup_dir());
            let found: Vec<_> = std::fs::read_dir(&dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter(|c| c.path().is_dir())
                .collect();
            let live: std::collections::HashSet<String> = self
                .shared
                .table
                .call(|t| t.keys().map(|k| k.0.clone()).collect())
                .await
                .unwrap_or_default();
            for child in found {
                let name = child.file_name().to_string_lossy().into_owned();
                if !live.contains(&name) {
                    let _ = std::fs::write(child.path().join("cgroup.kill"), "1");
                    let _ = std::fs::remove_dir(child.path());
                }
            }
        }
        n
    }
}

/// Stops a kept container nobody adopts: `SIGTERM`, then `SIGKILL` after
/// its grace; its output is read and dropped meanwhile.
async fn stop_left(left: Left) {
    let grace = left.grace(LEFT_GRACE);
    if let Some((mut conn, pid, pipes)) = left.keeper {
        for fd in pipes {
            if let Ok(mut r) = pipe::Receiver::from_owned_fd(fd) {
                tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut r, &mut tokio::io::sink()).await;
                });
            }
        }
        let cgroup = left
            .meta
            .as_ref()
            .and_then(|m| m.cgroup.as_deref())
            .and_then(|p| Cgroup::open(p).ok());
        kill_group(Some(pid as i32), None, Signal::SIGTERM);
        kill_group(Some(pid as i32), None, Signal::SIGCONT);
        if tokio::time::timeout(grace, conn.closed()).await.is_err() {
            kill_group(Some(pid as i32), cgroup.as_ref(), Signal::SIGKILL);
            if tokio::time::timeout(DRAIN_LIMIT, conn.closed())
                .await
                .is_err()
            {
                tracing::warn!(pid, "a container the previous agent left outlived SIGKILL");
            }
        }
        if let Some(cg) = &cgroup {
            cg.remove();
        }
    }
    // Its limit cgroups (v1), empty now.
    if let Some(m) = &left.meta {
        Limited::reopen(m.limit_dirs.clone(), None).remove();
    }
    left.files.remove();
}

/// The environment of `spec`'s program: the node's unless `inherit_env` is
/// off (never the service manager's), then `env` (as `environment` sets it
/// on a command).
fn environment_of(spec: &ContainerSpec) -> BTreeMap<OsString, OsString> {
    let mut env: BTreeMap<OsString, OsString> = if spec.inherit_env {
        std::env::vars_os().collect()
    } else {
        BTreeMap::new()
    };
    for var in super::SERVICE_MANAGER_VARS {
        env.remove(std::ffi::OsStr::new(var));
    }
    for (k, v) in &spec.env {
        env.insert(k.into(), v.into());
    }
    env
}
