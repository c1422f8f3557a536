//! Kept containers: started through a keeper process that outlives the
//! agent, and adopted by the next agent on the same state directory (live
//! restore).
//!
//! The keeper (`arbor::keeper`, the `arbor-keeper` binary) is the parent of
//! the container's main process, holds its output pipes and its exit
//! status, and talks to one agent at a time over a Unix socket in the
//! keepers directory. This module is the agent's side:
//! - [`Keepers`]: where the keeper program and its files are;
//! - starting: the runtime runs the keeper with the container's
//!   environment, working directory and limits, and receives the program's
//!   pid and the read ends of its pipes on a socket pair (`SCM_RIGHTS`);
//! - a `<short id>.json` record per container (its id, spec, pid and cgroup)
//!   says what a keeper holds, so the next agent can match it to a replica;
//! - [`scan`]: at start-up, every kept container is connected to again (or,
//!   when its keeper is gone, its exit is read from its `.exit` file) and
//!   waits to be adopted (`Runtime::adopt`) or stopped.
//!
//! Both runtimes use it: the process runtime (`process/kept.rs`: the keeper
//! starts the program) and the OCI runtime (`oci/kept.rs`: the keeper runs
//! `runc create` and keeps the container's init).
//!
//! Exit and drain: the keeper sends `exit <raw status>` when the program
//! ends and exits itself once nothing of the container is left, so the end
//! of its connection means "drained".

use std::{
    collections::HashMap,
    ffi::OsString,
    io::IoSliceMut,
    os::{
        fd::{AsRawFd, FromRawFd, OwnedFd},
        unix::{net::UnixStream as StdUnixStream, process::ExitStatusExt},
    },
    path::{Path, PathBuf},
    time::Duration,
};

use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
use serde::{Deserialize, Serialize};
use tokio::{io::Interest, net::UnixStream};

use crate::runtime::{Cause, ContainerId, ContainerSpec, ExitStatus};

/// How long a keeper may take to answer (it answers at once).
const HELLO_LIMIT: Duration = Duration::from_secs(5);

/// Where keepers come from and where their files go.
#[derive(Debug, Clone)]
pub struct Keepers {
    program: PathBuf,
    args: Vec<OsString>,
    dir: PathBuf,
    orphan_timeout: Option<Duration>,
}

impl Keepers {
    /// Keepers run as `program args...` with their files in `dir` (made
    /// absolute: a keeper runs in its container's working directory).
    pub fn new(program: impl Into<PathBuf>, args: Vec<OsString>, dir: impl Into<PathBuf>) -> Self {
        let dir: PathBuf = dir.into();
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        Self {
            program: program.into(),
            args,
            dir,
            orphan_timeout: None,
        }
    }

    /// A kept container left without an agent for `timeout` is stopped by
    /// its keeper (`SIGTERM`, then `SIGKILL` 10 s later); its exit is
    /// reported to the next agent. Default: never (it runs until an agent
    /// adopts or stops it).
    pub fn orphan_timeout(mut self, timeout: Duration) -> Self {
        self.orphan_timeout = Some(timeout);
        self
    }

    /// The `arbor-keeper` binary beside the running executable, else the
    /// running executable itself in keeper mode (`arbor __keeper`), with
    /// files in `dir`.
    pub fn beside_current_exe(dir: impl Into<PathBuf>) -> std::io::Result<Self> {
        let exe = std::env::current_exe()?;
        let beside = exe.with_file_name("arbor-keeper");
        Ok(if beside.is_file() {
            Self::new(beside, Vec::new(), dir)
        } else {
            Self::new(exe, vec![crate::keeper::ARG.into()], dir)
        })
    }

    /// False when the keepers' socket paths would not fit in a Unix
    /// socket address (107 bytes): the directory's path is too long for
    /// keepers (at most 89 bytes), and containers then start without one.
    pub fn fits(&self) -> bool {
        self.dir.join("0123456789ab.sock").as_os_str().len() < 108
    }

    /// The keepers' directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Creates the keepers' directory (owner only: the records hold the
    /// containers' environment); the error names it.
    pub(crate) fn create_dir(&self) -> Result<(), Cause> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)
            .map_err(|e| {
                Cause::io(
                    format!(
                        "failed to create the keepers directory {}",
                        self.dir.display()
                    ),
                    e,
                )
            })
    }

    /// The cgroup directory (beside the node's per-process ones) of the
    /// containers kept in this directory: `arbor-kept-<hash of the path>`.
    pub(crate) fn cgroup_dir(&self) -> String {
        use sha2::Digest;
        let hash = sha2::Sha256::digest(self.dir.as_os_str().as_encoded_bytes());
        let hex: String = hash.iter().take(6).map(|b| format!("{b:02x}")).collect();
        format!("arbor-kept-{hex}")
    }

    /// The keeper's command. Callers add no `pre_exec` (the keeper takes
    /// its session and limit itself), so std spawns it with posix_spawn,
    /// whose cost does not grow with the agent's memory as a fork's does.
    pub(crate) fn command(&self) -> std::process::Command {
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args);
        cmd
    }

    /// The keeper's options after its two paths: its orphan timeout, and
    /// the open files limit its program gets (the agent's before it raised
    /// its own, see [`crate::runtime::process::limits::raise_nofile`]).
    pub(crate) fn options(&self) -> Vec<OsString> {
        let mut options: Vec<OsString> = Vec::new();
        if let Some(t) = self.orphan_timeout {
            options.push("--orphan-timeout-ms".into());
            options.push(t.as_millis().max(1).to_string().into());
        }
        if let Some(limit) = crate::runtime::process::limits::inherited_nofile() {
            options.push("--nofile".into());
            options.push(limit.rlim_cur.to_string().into());
        }
        options
    }

    /// The files of container `id` (named by the end of its id, to keep the
    /// socket path short: Unix socket paths hold 107 bytes).
    pub(crate) fn files(&self, id: &ContainerId) -> KeeperFiles {
        let short: String =
            id.0.chars()
                .rev()
                .take(12)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
        KeeperFiles {
            meta: self.dir.join(format!("{short}.json")),
            exit: self.dir.join(format!("{short}.exit")),
            socket: self.dir.join(format!("{short}.sock")),
        }
    }
}

/// A keeper this agent spawned: a plain child, without the pidfd a tokio
/// child holds (a running replica so costs the agent one descriptor
/// fewer). Its exit is not watched: it is reaped once it is known to be
/// leaving (it closed its socket, reported a failure, or was killed).
pub(crate) struct KeeperProcess(std::process::Child);

impl KeeperProcess {
    /// Spawns `cmd` (a posix_spawn: see [`Keepers::command`]).
    pub(crate) fn spawn(cmd: &mut std::process::Command) -> std::io::Result<Self> {
        cmd.spawn().map(Self)
    }

    /// Sends it SIGKILL.
    pub(crate) fn kill(&mut self) {
        let _ = self.0.kill();
    }

    /// Sends SIGKILL to it and to every process of its session: a keeper
    /// that failed to answer may have started the program already (in its
    /// session, which the keeper made), and killing the keeper alone
    /// would leave that running with nobody to stop it.
    pub(crate) fn kill_session(&mut self) {
        let sid = self.0.id() as i32;
        for p in crate::runtime::process::procfs::all() {
            if p.session == sid && p.pid != sid {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p.pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        self.kill();
    }

    /// Reaps it, on the blocking pool: call it only once it is leaving.
    /// One already reaped (by the reaper's sweep of a cgroup) is fine.
    pub(crate) async fn reaped(self) {
        let mut child = self.0;
        let _ = tokio::task::spawn_blocking(move || child.wait()).await;
    }
}

/// The files of one kept container.
#[derive(Debug, Clone)]
pub(crate) struct KeeperFiles {
    pub(crate) meta: PathBuf,
    pub(crate) exit: PathBuf,
    pub(crate) socket: PathBuf,
}

impl KeeperFiles {
    /// Removes them (the container is gone).
    pub(crate) fn remove(&self) {
        for path in [&self.meta, &self.exit, &self.socket] {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// What the record of a kept container says.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub(crate) id: ContainerId,
    pub(crate) pid: u32,
    pub(crate) spec: ContainerSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cgroup: Option<PathBuf>,
    /// Its v1 limit cgroups (process runtime, as root).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) limit_dirs: Vec<PathBuf>,
    /// Where its memory controller counts OOM kills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) oom_file: Option<PathBuf>,
    /// The stop grace of the container (its spec's `stop_grace`), in ms.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) grace_ms: Option<u64>,
}

impl Meta {
    /// Writes the record atomically.
    pub(crate) fn write(&self, path: &Path) -> std::io::Result<()> {
        use std::{io::Write, os::unix::fs::OpenOptionsExt};
        let tmp = path.with_extension("json.tmp");
        // Owner only: the spec holds the environment (secrets included).
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?
            .write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        std::fs::rename(&tmp, path)
    }
}

/// True when `a` and `b` describe the same container (output and the
/// live-restore flag aside).
/// What a kept container is found by: its name, and for a job's
/// container the execution it runs (`name@execution`), since executions
/// of one job run at once under one name.
pub(crate) fn adopt_key(spec: &ContainerSpec) -> String {
    match spec.labels.get("execution") {
        Some(execution) => format!("{}@{execution}", spec.name),
        None => spec.name.clone(),
    }
}

pub(crate) fn same_spec(a: &ContainerSpec, b: &ContainerSpec) -> bool {
    serde_json::to_value(a).ok() == serde_json::to_value(b).ok()
}

/// A connection to a keeper: its messages are lines.
pub(crate) struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

/// What a keeper says first.
pub(crate) enum Hello {
    /// The program runs (or ran) as `pid`; its stdout and stderr.
    Running { pid: u32, pipes: [OwnedFd; 2] },
    /// The program could not be started.
    Failed(Cause),
    /// The set-up program (`runc create`, with `--pid-file`) ended with
    /// this status: there is no container.
    SetUpFailed(ExitStatus),
}

impl Conn {
    pub(crate) fn new(stream: StdUnixStream) -> std::io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Self {
            stream: UnixStream::from_std(stream)?,
            buf: Vec::new(),
        })
    }

    /// Sends `bytes` to the keeper.
    pub(crate) async fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await
    }

    /// Reads the keeper's first message, with the pipes it attaches.
    pub(crate) async fn hello(&mut self, program: &str) -> std::io::Result<Hello> {
        self.hello_within(program, HELLO_LIMIT).await
    }

    /// [`Conn::hello`], waiting at most `limit` (a set-up program such as
    /// `runc create` takes its time).
    pub(crate) async fn hello_within(
        &mut self,
        program: &str,
        limit: Duration,
    ) -> std::io::Result<Hello> {
        let mut received: Vec<OwnedFd> = Vec::new();
        let read = async {
            loop {
                self.stream.readable().await?;
                let fd = self.stream.as_raw_fd();
                let got = self.stream.try_io(Interest::READABLE, || {
                    let mut data = [0u8; 512];
                    let mut iov = [IoSliceMut::new(&mut data)];
                    let mut space = nix::cmsg_space!([std::os::fd::RawFd; 2]);
                    let msg =
                        recvmsg::<()>(fd, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)
                            .map_err(std::io::Error::from)?;
                    let mut fds = Vec::new();
                    for c in msg.cmsgs().map_err(std::io::Error::from)? {
                        if let ControlMessageOwned::ScmRights(raw) = c {
                            // SAFETY: descriptors just received are ours alone.
                            fds.extend(raw.into_iter().map(|f| unsafe { OwnedFd::from_raw_fd(f) }));
                        }
                    }
                    let n = msg.bytes;
                    Ok((data[..n].to_vec(), fds))
                });
                match got {
                    Ok((bytes, fds)) => {
                        received.extend(fds);
                        if bytes.is_empty() {
                            return Err(std::io::Error::new(
                                std::io::ErrorKind::UnexpectedEof,
                                "the keeper closed its connection before it said anything",
                            ));
                        }
                        self.buf.extend_from_slice(&bytes);
                        if let Some(line) = self.take_line() {
                            return Ok(line);
                        }
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                    Err(e) => return Err(e),
                }
            }
        };
        let line = tokio::time::timeout(limit, read).await.map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::TimedOut, "the keeper did not answer")
        })??;
        let mut words = line.split_whitespace();
        match (words.next(), words.next(), words.next()) {
            (Some("pid"), Some(pid), None) => {
                let pid = pid
                    .parse()
                    .map_err(|_| std::io::Error::other(format!("the keeper said {line:?}")))?;
                let pipes: [OwnedFd; 2] = received.try_into().map_err(|v: Vec<OwnedFd>| {
                    std::io::Error::other(format!("the keeper sent {} pipes, not 2", v.len()))
                })?;
                Ok(Hello::Running { pid, pipes })
            }
            (Some("failed"), Some(raw), None) => match raw.parse() {
                Ok(raw) => Ok(Hello::SetUpFailed(raw_status(raw))),
                Err(_) => Err(std::io::Error::other(format!("the keeper said {line:?}"))),
            },
            (Some("error"), Some(errno), stage) => {
                let errno = errno.parse().unwrap_or(0);
                let stage: Vec<&str> = stage.into_iter().chain(words).collect();
                let stage = stage.join(" ");
                let e = std::io::Error::from_raw_os_error(errno);
                Ok(Hello::Failed(if stage == "exec" && errno == libc::ENOENT {
                    Cause::CommandNotFound(program.to_owned())
                } else if stage == "exec" {
                    Cause::io(format!("failed to spawn {program:?}"), e)
                } else {
                    Cause::io(format!("failed to start {program:?}: {stage}"), e)
                }))
            }
            _ => Err(std::io::Error::other(format!("the keeper said {line:?}"))),
        }
    }

    /// The next line, or `None` when the keeper is gone.
    pub(crate) async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(line) = self.take_line() {
                return Some(line);
            }
            if self.stream.readable().await.is_err() {
                return None;
            }
            let mut chunk = [0u8; 256];
            match self.stream.try_read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(_) => return None,
            }
        }
    }

    /// The exit the keeper reports, or `None` if it is gone without one.
    pub(crate) async fn exit(&mut self) -> Option<ExitStatus> {
        while let Some(line) = self.line().await {
            if let Some(raw) = line
                .strip_prefix("exit ")
                .and_then(|r| r.trim().parse().ok())
            {
                return Some(raw_status(raw));
            }
        }
        None
    }

    /// Waits until the keeper is gone (the container is drained).
    pub(crate) async fn closed(&mut self) {
        while self.line().await.is_some() {}
    }

    fn take_line(&mut self) -> Option<String> {
        let end = self.buf.iter().position(|b| *b == b'\n')?;
        let line: Vec<u8> = self.buf.drain(..=end).collect();
        Some(String::from_utf8_lossy(&line[..end]).into_owned())
    }
}

/// A raw wait status as an [`ExitStatus`].
pub(crate) fn raw_status(raw: i32) -> ExitStatus {
    ExitStatus::from(std::process::ExitStatus::from_raw(raw))
}

/// The exit a keeper wrote to `path` before it went away.
fn read_exit(path: &Path) -> Option<ExitStatus> {
    std::fs::read_to_string(path)
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(raw_status)
}

/// A kept container a previous agent left, waiting to be adopted.
pub(crate) struct Left {
    pub(crate) meta: Option<Meta>,
    pub(crate) files: KeeperFiles,
    /// `None` when its keeper is gone (the container ended while no agent
    /// watched, or its keeper was killed).
    pub(crate) keeper: Option<(Conn, u32, [OwnedFd; 2])>,
    pub(crate) exit: Option<ExitStatus>,
}

impl Left {
    pub(crate) fn key(&self) -> Option<String> {
        self.meta.as_ref().map(|m| adopt_key(&m.spec))
    }

    /// How long a stop of it waits before SIGKILL: its recorded grace,
    /// else `default`.
    pub(crate) fn grace(&self, default: Duration) -> Duration {
        self.meta
            .as_ref()
            .and_then(|m| m.grace_ms)
            .map_or(default, Duration::from_millis)
    }
}

/// Finds what previous agents left in the keepers directory: every kept
/// container by name (a record whose spec cannot be read is listed under
/// its file name, to be stopped).
pub(crate) async fn scan(keepers: &Keepers) -> HashMap<String, Left> {
    let mut found = HashMap::new();
    let Ok(entries) = std::fs::read_dir(&keepers.dir) else {
        return found;
    };
    let mut shorts: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let (short, ext) = name.rsplit_once('.')?;
            matches!(ext, "json" | "sock" | "exit").then(|| short.to_owned())
        })
        .collect();
    shorts.sort();
    shorts.dedup();
    for short in shorts {
        let files = KeeperFiles {
            meta: keepers.dir.join(format!("{short}.json")),
            exit: keepers.dir.join(format!("{short}.exit")),
            socket: keepers.dir.join(format!("{short}.sock")),
        };
        let meta: Option<Meta> = std::fs::read(&files.meta)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let keeper = match StdUnixStream::connect(&files.socket) {
            Ok(s) => match Conn::new(s) {
                Ok(mut conn) => {
                    let program = meta
                        .as_ref()
                        .and_then(|m| m.spec.command.first().cloned())
                        .unwrap_or_default();
                    match conn.hello(&program).await {
                        Ok(Hello::Running { pid, pipes }) => Some((conn, pid, pipes)),
                        Ok(Hello::Failed(c)) => {
                            tracing::warn!(keeper = %files.socket.display(), error = %c, "a keeper reported a failed start");
                            None
                        }
                        Ok(Hello::SetUpFailed(status)) => {
                            tracing::warn!(keeper = %files.socket.display(), %status, "a keeper reported a failed set-up");
                            None
                        }
                        Err(e) => {
                            tracing::warn!(keeper = %files.socket.display(), error = %e, "a keeper did not answer");
                            None
                        }
                    }
                }
                Err(_) => None,
            },
            Err(_) => None,
        };
        let exit = if keeper.is_none() {
            read_exit(&files.exit)
        } else {
            None
        };
        let left = Left {
            meta,
            files,
            keeper,
            exit,
        };
        if left.keeper.is_none() && left.exit.is_none() {
            if let Some(m) = &left.meta {
                tracing::warn!(container = %m.id, pid = m.pid, "the keeper of a container is gone and left no exit status; its process, if it still runs, is not supervised");
            }
            left.files.remove();
            continue;
        }
        let key = left.key().unwrap_or_else(|| format!("<{short}>"));
        found.insert(key, left);
    }
    found
}

/// The cgroups of the kept containers recorded in the keepers directory
/// (spared by the start-up sweep of what crashed nodes left).
pub(crate) fn kept_cgroups(keepers: Option<&Keepers>) -> Vec<PathBuf> {
    let Some(Ok(entries)) = keepers.map(|k| std::fs::read_dir(&k.dir)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .filter_map(|e| serde_json::from_slice::<Meta>(&std::fs::read(e.path()).ok()?).ok())
        .filter_map(|m| m.cgroup)
        .collect()
}
