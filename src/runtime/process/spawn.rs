//! Starting a container's main process: the command, its process group and
//! cgroup, its output readers, and the task that sees it exit.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, atomic::Ordering},
};

use nix::errno::Errno;
use tokio::{process::Command, sync::watch};

use super::{
    ProcessRuntime,
    cgroup::Cgroup,
    entry::{Entry, ProcState, Run, kill_group},
    resources::Limited,
};
use crate::{
    runtime::{
        Cause, ContainerSpec, ExitStatus, LogStream, Op, RuntimeError, Signal,
        logs::{AsyncReadSend, pump_output},
    },
    spec::{SpecError, SpecErrors},
};

impl ProcessRuntime {
    pub(super) fn spawn_command(&self, entry: &Arc<Entry>) -> Result<(), RuntimeError> {
        let id = &entry.id;
        let spec = &entry.spec;
        let Some(program) = spec.command.first() else {
            // `create` rejects this; never index an empty argv.
            return Err(RuntimeError::new(
                Op::Start,
                id,
                Cause::Spec(SpecErrors::from(SpecError::new(
                    "command",
                    "[]",
                    "must not be empty: give the program and its arguments (argv)",
                ))),
            ));
        };
        let (cgroup, limited) = self.container_cgroups(entry, None)?;
        // The program as resolved at `create`: exec'ing a path skips the
        // PATH search (one failed execve per PATH entry on every start).
        let mut cmd = match &entry.program {
            Some(path) => {
                let mut cmd = Command::new(path);
                cmd.arg0(program);
                cmd
            }
            None => Command::new(program),
        };
        cmd.args(&spec.command[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(false);
        environment(&mut cmd, spec);
        inherit_nofile(&mut cmd);
        // Open until the spawn returned (the child writes to it).
        let procs = match cgroup.as_ref().map(|cg| cg.open_procs()).transpose() {
            Ok(p) => p,
            Err(e) => {
                remove_cgroups(&cgroup, &limited);
                return Err(RuntimeError::new(
                    Op::Start,
                    id,
                    Cause::io("failed to open its cgroup", e),
                ));
            }
        };
        // The child joins its cgroup (and the resource controllers' ones)
        // by writing `0` to each `cgroup.procs`.
        let joins = procs
            .iter()
            .map(std::os::fd::AsRawFd::as_raw_fd)
            .chain(limited.as_ref().map(|l| l.procs_fds()).unwrap_or_default());
        for fd in joins {
            // SAFETY: runs in the forked child before exec; write(2) is
            // async-signal-safe and `fd` stays open (the parent holds it).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::write(fd, b"0".as_ptr().cast(), 1) == 1 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        // The namespace is opened before the fork (the child only calls
        // setns, which is async-signal-safe) and closed after it.
        let netns = match &spec.netns {
            Some(path) => Some(open_netns(path).map_err(|c| {
                remove_cgroups(&cgroup, &limited);
                RuntimeError::new(Op::Start, id, c)
            })?),
            None => None,
        };
        if let Some(ns) = &netns {
            use std::os::fd::AsRawFd;
            let fd = ns.as_raw_fd();
            // SAFETY: runs in the forked child before exec; setns(2) is a
            // plain system call and `fd` stays open (the parent holds it).
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setns(fd, libc::CLONE_NEWNET) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let guard = self.shared.reaper.spawning();
        let mut child = cmd.spawn().map_err(|e| {
            remove_cgroups(&cgroup, &limited);
            let cause = match &spec.cwd {
                // The working directory vanished after `create` checked it:
                // exec reports ENOENT, which is not about the program.
                Some(dir) if !dir.is_dir() => missing_cwd(dir),
                _ if e.kind() == std::io::ErrorKind::NotFound => {
                    Cause::CommandNotFound(program.clone())
                }
                _ => Cause::io(format!("failed to spawn {program:?}"), e),
            };
            RuntimeError::new(Op::Start, id, cause)
        })?;
        drop(procs);
        let Some(pid) = child.id() else {
            // Unreachable for a child that was not waited on; treat it as gone.
            return Err(RuntimeError::new(
                Op::Start,
                id,
                Cause::io("spawned process has no pid", Errno::ESRCH),
            ));
        };
        let pid = pid as i32;
        self.shared.reaper.started(pid);
        drop(guard);

        let (readers, eof) = self.pump(
            entry,
            [
                child
                    .stdout
                    .take()
                    .map(|s| Box::new(s) as Box<dyn AsyncReadSend>),
                child
                    .stderr
                    .take()
                    .map(|s| Box::new(s) as Box<dyn AsyncReadSend>),
            ],
        );
        let _ = entry.run.set(Run {
            pgid: pid,
            cgroup: cgroup.clone(),
            limited: limited.clone(),
            readers,
            eof,
            keeper: None,
        });
        entry
            .state
            .send_replace(ProcState::Running { pid: pid as u32 });

        let monitor_entry = entry.clone();
        let reaper = self.shared.reaper.clone();
        tokio::spawn(async move {
            let entry = monitor_entry;
            let status = match child.wait().await {
                Ok(s) => ExitStatus::from(s),
                Err(e) => {
                    tracing::warn!(container = %entry.id, error = %e, "failed to wait for the main process");
                    ExitStatus::Signal(Signal::SIGKILL as i32)
                }
            };
            if !entry.stopping.load(Ordering::Acquire) {
                // The container ends with its main process. The leader was
                // reaped a moment ago: its group id cannot have been reused.
                kill_group(Some(pid), cgroup.as_deref(), Signal::SIGKILL);
            }
            entry.state.send_replace(ProcState::Exited { status });
            let _ = reaper.drain(pid, cgroup).await;
            if let Some(l) = &limited {
                l.remove();
            }
            entry.drained.send_replace(true);
        });
        Ok(())
    }
}

/// A container's cgroup and its resource-limit cgroups.
pub(super) type ContainerCgroups = (Option<Arc<Cgroup>>, Option<Arc<Limited>>);

/// Removes the cgroups of a start that failed.
pub(super) fn remove_cgroups(cgroup: &Option<Arc<Cgroup>>, limited: &Option<Arc<Limited>>) {
    if let Some(cg) = cgroup {
        cg.remove();
    }
    if let Some(l) = limited {
        l.remove();
    }
}

impl ProcessRuntime {
    /// The container's cgroup and its resource-limit cgroups (root only).
    /// A kept container's go in `kept` (see `Cgroups::create_kept`).
    pub(super) fn container_cgroups(
        &self,
        entry: &Entry,
        kept: Option<&str>,
    ) -> Result<ContainerCgroups, RuntimeError> {
        let id = &entry.id;
        let cgroup = match (&self.shared.cgroups, kept) {
            (Some(c), None) => Some(c.create(&id.0)),
            (Some(c), Some(dir)) => Some(c.create_kept(dir, &id.0).and_then(|cg| {
                if let Some(limiter) = &self.shared.limiter
                    && !entry.spec.resources.is_empty()
                {
                    limiter.enable_in(&c.kept_dir(dir))?;
                }
                Ok(cg)
            })),
            (None, _) => None,
        }
        .transpose()
        .map_err(|e| RuntimeError::new(Op::Start, id, Cause::io("failed to create its cgroup", e)))?
        .map(Arc::new);
        let limited = match (&self.shared.limiter, entry.spec.resources.is_empty()) {
            (Some(limiter), false) => match limiter.apply(
                &id.0,
                &entry.spec.resources,
                cgroup.as_deref().map(|c| c.path()),
                kept,
            ) {
                Ok(l) => Some(Arc::new(l)),
                Err(e) => {
                    if let Some(cg) = &cgroup {
                        cg.remove();
                    }
                    return Err(RuntimeError::new(
                        Op::Start,
                        id,
                        Cause::io("failed to set its resource limits", e),
                    ));
                }
            },
            _ => None,
        };
        Ok((cgroup, limited))
    }

    /// Reads the container's stdout and stderr (in this order) into its
    /// log tail and its sink, each in a task; the receiver counts the
    /// streams read to their end.
    pub(super) fn pump(
        &self,
        entry: &Entry,
        streams: [Option<Box<dyn AsyncReadSend>>; 2],
    ) -> (Vec<tokio::task::AbortHandle>, watch::Receiver<u8>) {
        let (eof_tx, eof_rx) = watch::channel(0u8);
        let eof_tx = Arc::new(eof_tx);
        let mut readers = Vec::with_capacity(2);
        for (pipe, stream) in streams
            .into_iter()
            .zip([LogStream::Stdout, LogStream::Stderr])
        {
            let logs = entry.logs.clone();
            let eof = eof_tx.clone();
            let echo = self
                .shared
                .echo_output
                .then(|| Arc::from(entry.spec.name.as_str()));
            let sink = entry.spec.output.clone();
            let task = tokio::spawn(async move {
                pump_output(pipe, sink, logs, stream, echo).await;
                eof.send_modify(|n| *n += 1);
            });
            readers.push(task.abort_handle());
        }
        (readers, eof_rx)
    }
}

/// The node's open-files limit as it was before the agent raised it, for
/// the child (set in the forked child before exec).
pub(super) fn inherit_nofile(cmd: &mut Command) {
    if let Some(limit) = super::limits::inherited_nofile() {
        // SAFETY: runs in the forked child before exec; setrlimit(2) is
        // a plain system call on a value computed before the fork.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
    }
}

/// The container's environment and working directory on `cmd`: the
/// node's variables unless `inherit_env` is off (never the service
/// manager's), then `env`.
pub(super) fn environment(cmd: &mut Command, spec: &ContainerSpec) {
    if !spec.inherit_env {
        cmd.env_clear();
    }
    for var in super::SERVICE_MANAGER_VARS {
        cmd.env_remove(var);
    }
    cmd.envs(&spec.env);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
}

/// Finds `program` the way `execvp` would, or says where it looked.
pub(super) fn resolve_program(spec: &ContainerSpec) -> Result<PathBuf, Cause> {
    let program = &spec.command[0];
    let executable = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let path = match &spec.cwd {
            Some(dir) if Path::new(program).is_relative() => dir.join(program),
            _ => PathBuf::from(program),
        };
        return if executable(&path) {
            Ok(path)
        } else {
            Err(Cause::CommandNotFound(format!(
                "{program} (no executable file at {})",
                path.display()
            )))
        };
    }
    let search = spec
        .env
        .get("PATH")
        .cloned()
        .or_else(|| {
            spec.inherit_env
                .then(|| std::env::var("PATH").ok())
                .flatten()
        })
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".to_owned());
    search
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| Path::new(d).join(program))
        .find(|p| executable(p))
        .ok_or_else(|| Cause::CommandNotFound(format!("{program} (searched PATH={search})")))
}

/// The network namespace at `path` must be an nsfs file (a bound
/// namespace such as `/run/netns/NAME`), checked at `create`.
pub(super) fn check_netns(path: &Path) -> Result<(), Cause> {
    open_netns(path).map(drop)
}

/// Opens the namespace at `path`, checking that it is one.
pub(super) fn open_netns(path: &Path) -> Result<std::fs::File, Cause> {
    let bad = |reason: String| {
        Cause::Spec(SpecErrors::from(SpecError::new(
            "netns",
            path.display(),
            reason,
        )))
    };
    let file = std::fs::File::open(path)
        .map_err(|e| bad(format!("must be a network namespace file: {e}")))?;
    let fs = nix::sys::statfs::fstatfs(&file)
        .map_err(|e| bad(format!("failed to stat the namespace file: {e}")))?;
    if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(bad(
            "is not a namespace file (bind a namespace there, as `ip netns add` does)".into(),
        ));
    }
    Ok(file)
}

/// The process runtime runs host commands only.
pub(super) fn image_refused(image: &str) -> Cause {
    Cause::Spec(SpecErrors::from(SpecError::new(
        "image",
        image,
        "the process runtime runs host commands; images need the OCI runtime",
    )))
}

/// The working directory does not exist (or is not a directory).
pub(super) fn missing_cwd(dir: &Path) -> Cause {
    Cause::Spec(SpecErrors::from(SpecError::new(
        "cwd",
        dir.display(),
        "must be an existing directory",
    )))
}
