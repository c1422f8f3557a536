//! Real OCI containers through the `runc` binary, from the local image store.
//!
//! Per container: a bundle under `<state-dir>/oci/bundles/<id>` (an overlay
//! root filesystem over the image's unpacked tree and a `config.json` built
//! with `oci-spec`, `oci/bundle.rs`), then `runc create` (with our pipes as
//! the init's stdout and stderr, read into the same output pipeline as the
//! process runtime) and `runc start`. runc's state root is private to the
//! node (`<state-dir>/oci/runc`), so `runc --root` that directory lists only
//! this node's containers, and the start-up cleanup (`oci/orphans.rs`) can
//! delete whatever a crashed node left there without touching anyone else's.
//!
//! The exit is seen through a pidfd on the container's init (our child once
//! runc exits, `oci/entry.rs`), or, for a container under a keeper (live
//! restore, `oci/kept.rs`), reported by the keeper, which is then the
//! init's parent; stop is SIGTERM, then SIGKILL after the
//! grace (a PID 1 that does not handle SIGTERM ignores it, so a plain
//! `sleep` needs the kill); remove is `runc delete`, unmount, delete the
//! bundle. The OOM kills of the container's memory cgroup are read when the
//! init exits, before `runc delete` removes the cgroup.
//!
//! crun is not used: on this project's machines (hybrid cgroup layout) crun
//! 1.8 refuses to run unless hugetlb is rebound to cgroup v1; [`crun_status`]
//! says whether it is present and usable.

mod bundle;
mod entry;
mod kept;
mod orphans;
mod runc;

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use tokio::sync::watch;

pub use self::bundle::resolve_argv;
use self::{
    bundle::Bundle,
    entry::{Entry, OciState},
    runc::Runc,
};
use super::{
    Cause, ContainerId, ContainerSpec, ContainerState, ExitStatus, LogBuffer, LogQuery, LogStream,
    Logs, Op, Runtime, RuntimeError, Signal, StopOutcome, check_spec,
    keeper::{self, Keepers, Left},
    logs::{AsyncReadSend, pump_output},
};
use crate::{
    image::{ImageError, ImageRecord, ImageStore},
    owned::Owned,
};

/// How long `remove` waits for an init that `runc delete` killed.
const REAP_LIMIT: Duration = Duration::from_secs(10);
/// How long reading the logs of an exited container waits for its pipes.
const LOG_SETTLE: Duration = Duration::from_millis(500);

/// A failure of the OCI machinery (runc, bundles, images), as carried in
/// [`Cause::Oci`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// Containers need root.
    #[error("the OCI runtime needs root (runc creates namespaces, cgroups and mounts)")]
    NotRoot,
    /// runc is not installed.
    #[error("runc not found on PATH (install it: apt-get install runc)")]
    RuncMissing,
    /// runc could not be run at all.
    #[error("failed to run {binary}")]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A runc command failed.
    #[error("{command} failed ({status}): {stderr}")]
    Runc {
        /// The command, as `runc create ...`.
        command: String,
        /// Its exit status.
        status: String,
        /// What it said.
        stderr: String,
    },
    /// The image could not be used.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// A file or system operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl From<OciError> for Cause {
    fn from(e: OciError) -> Self {
        Cause::Oci(Box::new(e))
    }
}

/// Options of an [`OciRuntime`].
#[derive(Debug, Clone, Default)]
pub struct OciRuntimeBuilder {
    state_dir: Option<PathBuf>,
    runc: Option<PathBuf>,
    log_lines: Option<usize>,
    log_bytes: Option<usize>,
    keepers: Option<Keepers>,
}

impl OciRuntimeBuilder {
    /// Starts containers whose spec asks for it (`live_restore`, set for
    /// service replicas and most job executions) under a keeper, so they
    /// keep running when the agent is killed or leaves, and the next agent
    /// on the same state dir adopts them ([`Runtime::adopt`]); see
    /// `oci/kept.rs`. Give it its own directory (the agent uses
    /// `<state-dir>/oci/keepers`), not the process runtime's.
    pub fn keepers(mut self, keepers: Keepers) -> Self {
        self.keepers = Some(keepers);
        self
    }

    /// The node's state dir: images in `<dir>/images`, bundles and runc's
    /// root in `<dir>/oci` (default `/run/arbor`).
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = Some(dir.into());
        self
    }

    /// The runc binary (default: `runc` on PATH).
    pub fn runc(mut self, binary: impl Into<PathBuf>) -> Self {
        self.runc = Some(binary.into());
        self
    }

    /// How many lines and bytes of output to keep per container.
    pub fn log_limits(mut self, lines: usize, bytes: usize) -> Self {
        self.log_lines = Some(lines);
        self.log_bytes = Some(bytes);
        self
    }

    /// Checks root and runc, opens the image store, and removes what a
    /// crashed node left (containers in runc's root, bundles, mounts).
    /// Must be called inside a tokio runtime.
    pub async fn build(self) -> Result<OciRuntime, OciError> {
        if !nix::unistd::geteuid().is_root() {
            return Err(OciError::NotRoot);
        }
        let binary = match self.runc {
            Some(b) => b,
            None => runc::find_binary("runc").ok_or(OciError::RuncMissing)?,
        };
        if let Err(e) = nix::sys::prctl::set_child_subreaper(true) {
            tracing::warn!(error = %e, "could not become a child subreaper; container exit codes may be lost");
        }
        let state = self
            .state_dir
            .unwrap_or_else(|| PathBuf::from("/run/arbor"));
        let images = ImageStore::open(state.join("images"))?;
        let oci = state.join("oci");
        let root = oci.join("runc");
        let bundles = oci.join("bundles");
        for dir in [&root, &bundles] {
            std::fs::create_dir_all(dir).map_err(|source| OciError::Io {
                context: format!("failed to create {}", dir.display()),
                source,
            })?;
        }
        let runc = Runc { binary, root };
        // One parent cgroup for every node's containers (container ids are
        // unique), so nothing per node is left in the cgroup trees.
        let cgroup_parent = "/arbor-oci".to_owned();
        let keepers = self.keepers.filter(|k| {
            let fits = k.fits();
            if !fits {
                tracing::warn!(dir = %k.dir().display(), "live restore of containers is off: the keepers' directory path is too long for Unix sockets");
            }
            fits
        });
        // What previous agents left under keepers is spared by the clean-up
        // below and waits to be adopted; without keepers, their sockets are
        // removed so that keepers left waiting exit.
        let left = match &keepers {
            Some(k) => keeper::scan(k).await,
            None => {
                kept::forget_keepers(&oci.join("keepers"));
                HashMap::new()
            }
        };
        let spared: HashSet<String> = left
            .values()
            .filter_map(|l| l.meta.as_ref().map(|m| m.id.0.clone()))
            .collect();
        let removed = orphans::clean(&runc, &bundles, &spared).await;
        if removed > 0 {
            tracing::info!(
                removed,
                "removed containers and bundles left by a previous node"
            );
        }
        Ok(OciRuntime {
            shared: Arc::new(Shared {
                table: Owned::spawn(BTreeMap::new()),
                runc,
                images,
                bundles,
                cgroup_parent,
                log_lines: self.log_lines.unwrap_or(1000),
                log_bytes: self.log_bytes.unwrap_or(256 * 1024),
                orphans_removed: AtomicU64::new(removed as u64),
                keepers,
                left: Owned::spawn(left),
            }),
        })
    }
}

/// Whether crun is installed and can run containers here.
pub fn crun_status() -> String {
    let Some(crun) = runc::find_binary("crun") else {
        return "crun: not installed (optional; arbor uses runc)".into();
    };
    let hybrid = Path::new("/sys/fs/cgroup/unified").is_dir()
        && !Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if hybrid {
        format!(
            "crun: {} present but not used: crun 1.8 refuses the hybrid cgroup layout of this machine unless hugetlb is rebound to cgroup v1; arbor uses runc",
            crun.display()
        )
    } else {
        format!("crun: {} present (arbor uses runc)", crun.display())
    }
}

/// Runs containers with runc. Cheap to clone; clones share the table.
#[derive(Clone)]
pub struct OciRuntime {
    shared: Arc<Shared>,
}

struct Shared {
    table: Owned<BTreeMap<ContainerId, Arc<Entry>>>,
    runc: Runc,
    images: ImageStore,
    bundles: PathBuf,
    cgroup_parent: String,
    log_lines: usize,
    log_bytes: usize,
    orphans_removed: AtomicU64,
    keepers: Option<Keepers>,
    /// What previous agents left under keepers, by adoption key, until it
    /// is adopted or released.
    left: Owned<HashMap<String, Left>>,
}

fn new_id(name: &str) -> ContainerId {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    let uuid = uuid::Uuid::new_v4().simple().to_string();
    ContainerId(format!("{clean}-{}", &uuid[..12]))
}

impl OciRuntime {
    /// Options.
    pub fn builder() -> OciRuntimeBuilder {
        OciRuntimeBuilder::default()
    }

    /// The image store the runtime runs images from.
    pub fn images(&self) -> &ImageStore {
        &self.shared.images
    }

    /// runc's state root (`runc --root THIS list` shows this node's containers).
    pub fn runc_root(&self) -> &Path {
        &self.shared.runc.root
    }

    /// Where bundles are created.
    pub fn bundles_dir(&self) -> &Path {
        &self.shared.bundles
    }

    /// How many orphans (containers and bundles) the start-up removed.
    pub fn orphans_removed(&self) -> u64 {
        self.shared.orphans_removed.load(Ordering::Relaxed)
    }

    /// Ids runc knows in this node's root (`runc list`).
    pub async fn runc_list(&self) -> Result<Vec<String>, OciError> {
        orphans::list(&self.shared.runc).await
    }

    /// Freezes every process of the container (`runc pause`).
    pub async fn pause(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let entry = self.entry(Op::Signal, id).await?;
        self.shared
            .runc
            .run(&["pause", &id.0])
            .await
            .map_err(|e| RuntimeError::new(Op::Signal, id, e.into()))?;
        entry.paused.store(true, Ordering::Release);
        Ok(())
    }

    /// Thaws a paused container (`runc resume`).
    pub async fn resume(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let entry = self.entry(Op::Signal, id).await?;
        self.shared
            .runc
            .run(&["resume", &id.0])
            .await
            .map_err(|e| RuntimeError::new(Op::Signal, id, e.into()))?;
        entry.paused.store(false, Ordering::Release);
        Ok(())
    }

    /// Stops every container (with `grace`) and removes it, and stops what
    /// previous agents left that nobody adopted; returns how many it
    /// removed.
    pub async fn shutdown(&self, grace: Duration) -> usize {
        self.release_unadopted().await;
        let ids: Vec<ContainerId> = self
            .shared
            .table
            .call(|t| t.keys().cloned().collect())
            .await
            .unwrap_or_default();
        super::stop_and_remove_all(self, &ids, grace).await
    }

    async fn entry(&self, op: Op, id: &ContainerId) -> Result<Arc<Entry>, RuntimeError> {
        let key = id.clone();
        self.shared
            .table
            .call(move |t| t.get(&key).cloned())
            .await
            .ok_or_else(|| RuntimeError::new(op, id, Cause::Closed))?
            .ok_or_else(|| RuntimeError::new(op, id, Cause::NotFound))
    }

    async fn image(&self, op: Op, spec: &ContainerSpec) -> Result<ImageRecord, RuntimeError> {
        let fail = |cause| RuntimeError::new(op, &spec.name, cause);
        let Some(name) = spec.image.clone() else {
            return Err(fail(Cause::Spec(crate::spec::SpecErrors::from(
                crate::spec::SpecError::new(
                    "image",
                    "null",
                    "the OCI runtime runs images: give image NAME:TAG",
                ),
            ))));
        };
        let images = self.shared.images.clone();
        tokio::task::spawn_blocking(move || images.get(&name))
            .await
            .map_err(|e| fail(Cause::io("image lookup panicked", std::io::Error::other(e))))?
            .map_err(|e| fail(OciError::Image(e).into()))
    }

    /// Makes the pipes, runs `runc create`, opens the init's pidfd and
    /// starts the readers and the exit watcher.
    async fn create_container(
        &self,
        id: &ContainerId,
        spec: &ContainerSpec,
        bundle: Bundle,
        cgroup: String,
    ) -> Result<Arc<Entry>, (Bundle, RuntimeError)> {
        if let Some(keepers) = &self.shared.keepers
            && spec.live_restore
        {
            return self.create_kept(id, spec, bundle, cgroup, keepers).await;
        }
        let fail = |cause: Cause| RuntimeError::new(Op::Create, id, cause);
        let pipes = match (pipe(), pipe()) {
            (Ok(o), Ok(e)) => (o, e),
            (Err(e), _) | (_, Err(e)) => {
                return Err((bundle, fail(Cause::io("failed to create output pipes", e))));
            }
        };
        let ((out_r, out_w), (err_r, err_w)) = pipes;
        let pid_file = bundle.dir.join("init.pid");
        if let Err(e) = self
            .shared
            .runc
            .create(
                &id.0,
                &bundle.dir,
                &pid_file,
                &bundle.dir.join("runc.log"),
                out_w,
                err_w,
            )
            .await
        {
            // A half-created container may be in runc's state: delete it.
            let _ = self.shared.runc.run(&["delete", "--force", &id.0]).await;
            return Err((bundle, fail(e.into())));
        }
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok());
        let pidfd = match pid.map(entry::pidfd_open) {
            Some(Ok(fd)) => Arc::new(fd),
            other => {
                let _ = self.shared.runc.run(&["delete", "--force", &id.0]).await;
                let e = match other {
                    Some(Err(e)) => e,
                    _ => std::io::Error::other(format!("no pid in {}", pid_file.display())),
                };
                return Err((
                    bundle,
                    fail(Cause::io("failed to watch the container's init", e)),
                ));
            }
        };
        let pid = pid.unwrap_or_default();

        let (logs, readers, eof) = self.pump(spec, out_r, err_r);
        let entry = Arc::new(Entry {
            bundle,
            pidfd: Some(pidfd.clone()),
            state: watch::Sender::new(OciState::Created { pid }),
            logs,
            readers,
            eof,
            oom_kills: AtomicU64::new(0),
            paused: AtomicBool::new(false),
            cgroup,
            keeper: None,
        });
        let watcher = entry.clone();
        tokio::spawn(async move {
            let status = entry::wait_exit(pidfd).await;
            watcher.record_exit(status);
        });
        Ok(entry)
    }

    /// Reads the container's stdout and stderr into `spec.output` (else an
    /// in-memory tail); the counter reaches 2 when both ended.
    fn pump(
        &self,
        spec: &ContainerSpec,
        out: OwnedFd,
        err: OwnedFd,
    ) -> (
        LogBuffer,
        Vec<tokio::task::AbortHandle>,
        watch::Receiver<u8>,
    ) {
        let (eof_tx, eof_rx) = watch::channel(0u8);
        let eof_tx = Arc::new(eof_tx);
        let logs = LogBuffer::new(self.shared.log_lines, self.shared.log_bytes);
        let mut readers = Vec::with_capacity(2);
        for (fd, stream) in [(out, LogStream::Stdout), (err, LogStream::Stderr)] {
            let pipe = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)
                .ok()
                .map(|p| Box::new(p) as Box<dyn AsyncReadSend>);
            let (logs, eof, sink) = (logs.clone(), eof_tx.clone(), spec.output.clone());
            let task = tokio::spawn(async move {
                pump_output(pipe, sink, logs, stream, None).await;
                eof.send_modify(|n| *n += 1);
            });
            readers.push(task.abort_handle());
        }
        (logs, readers, eof_rx)
    }

    async fn teardown(&self, entry: &Arc<Entry>) {
        let dir = entry.bundle.dir.clone();
        let _ = tokio::task::spawn_blocking(move || bundle::teardown_dir(&dir)).await;
    }
}

/// A pipe: (read end, non-blocking, for us; write end, blocking, for the
/// container). Both close on exec; runc dups the write end onto the init's
/// stdout or stderr.
fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
    // SAFETY: fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(r.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    Ok((r, w))
}

#[async_trait]
impl Runtime for OciRuntime {
    fn name(&self) -> &'static str {
        "oci"
    }

    async fn pull_image(&self, spec: &ContainerSpec) -> Result<(), RuntimeError> {
        // No registry: `if_not_present` and `never` both resolve locally.
        let record = self.image(Op::Pull, spec).await?;
        resolve_argv(spec, &record).map_err(|c| RuntimeError::new(Op::Pull, &spec.name, c))?;
        Ok(())
    }

    async fn create(&self, spec: &ContainerSpec) -> Result<ContainerId, RuntimeError> {
        check_spec(spec)?;
        if let Err(e) = crate::runtime::process::limits::check_headroom() {
            return Err(RuntimeError::new(
                Op::Create,
                &spec.name,
                Cause::io(
                    "not created: the agent keeps its last open files for itself",
                    e,
                ),
            ));
        }
        let record = self.image(Op::Create, spec).await?;
        let image_root = self.shared.images.rootfs(&record);
        let id = new_id(&spec.name);
        let cgroup = format!("{}/{}", self.shared.cgroup_parent, id.0);
        let mut config = bundle::config(spec, &record, &image_root, &cgroup)
            .map_err(|c| RuntimeError::new(Op::Create, &spec.name, c))?;
        let dir = self.shared.bundles.join(&id.0);
        let resolv = bundle::resolv_conf(&spec.dns_search);
        if resolv.is_some() {
            bundle::mount_resolv_conf(&mut config, &dir.join("resolv.conf"))
                .map_err(|c| RuntimeError::new(Op::Create, &spec.name, c))?;
        }
        let prepared = tokio::task::spawn_blocking(move || -> Result<Bundle, OciError> {
            let bundle = Bundle::prepare(&dir, &image_root)?;
            if let Some(text) = resolv
                && let Err(e) = std::fs::write(bundle.dir.join("resolv.conf"), text)
            {
                bundle.teardown();
                return Err(OciError::Io {
                    context: "failed to write resolv.conf".into(),
                    source: e,
                });
            }
            if let Err(e) = config.save(bundle.dir.join("config.json")) {
                bundle.teardown();
                return Err(OciError::Io {
                    context: "failed to write config.json".into(),
                    source: std::io::Error::other(e.to_string()),
                });
            }
            Ok(bundle)
        })
        .await
        .map_err(|e| {
            RuntimeError::new(
                Op::Create,
                &id,
                Cause::io("bundle task panicked", std::io::Error::other(e)),
            )
        })?
        .map_err(|e| RuntimeError::new(Op::Create, &id, e.into()))?;
        match self.create_container(&id, spec, prepared, cgroup).await {
            Ok(entry) => {
                let key = id.clone();
                if self
                    .shared
                    .table
                    .call(move |t| t.insert(key, entry))
                    .await
                    .is_none()
                {
                    return Err(RuntimeError::new(Op::Create, &id, Cause::Closed));
                }
                Ok(id)
            }
            Err((bundle, e)) => {
                let _ = tokio::task::spawn_blocking(move || bundle.teardown()).await;
                Err(e)
            }
        }
    }

    async fn start(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let entry = self.entry(Op::Start, id).await?;
        let pid = match *entry.state.borrow() {
            OciState::Created { pid } => pid,
            _ => {
                return Err(RuntimeError::new(
                    Op::Start,
                    id,
                    Cause::InvalidState {
                        state: entry.state_name(),
                        expected: "only a created container can be started",
                    },
                ));
            }
        };
        self.shared
            .runc
            .run(&["start", &id.0])
            .await
            .map_err(|e| RuntimeError::new(Op::Start, id, e.into()))?;
        entry.state.send_if_modified(|s| {
            let created = matches!(s, OciState::Created { .. });
            if created {
                *s = OciState::Running { pid };
            }
            created
        });
        Ok(())
    }

    async fn stop(&self, id: &ContainerId, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        let entry = self.entry(Op::Stop, id).await?;
        let state = *entry.state.borrow();
        match state {
            OciState::Created { .. } => Err(RuntimeError::new(
                Op::Stop,
                id,
                Cause::InvalidState {
                    state: entry.state_name(),
                    expected: "it was never started",
                },
            )),
            OciState::Exited { status } => Ok(StopOutcome {
                status,
                killed: false,
            }),
            OciState::Running { .. } => {
                if entry.paused.swap(false, Ordering::AcqRel) {
                    // A frozen init acts on no signal until thawed.
                    let _ = self.shared.runc.run(&["resume", &id.0]).await;
                }
                let mut killed = false;
                let status = if grace.is_zero() {
                    None
                } else {
                    entry.kill(Signal::SIGTERM);
                    entry.exited_within(grace).await
                };
                let status = match status {
                    Some(s) => s,
                    None => {
                        killed = true;
                        entry.kill(Signal::SIGKILL);
                        entry.exited_within(REAP_LIMIT).await.ok_or_else(|| {
                            RuntimeError::new(
                                Op::Stop,
                                id,
                                Cause::io(
                                    "the container's init outlived SIGKILL",
                                    std::io::Error::from(std::io::ErrorKind::TimedOut),
                                ),
                            )
                        })?
                    }
                };
                Ok(StopOutcome { status, killed })
            }
        }
    }

    async fn remove(&self, id: &ContainerId) -> Result<(), RuntimeError> {
        let entry = self.entry(Op::Remove, id).await?;
        if matches!(*entry.state.borrow(), OciState::Running { .. }) {
            return Err(RuntimeError::new(
                Op::Remove,
                id,
                Cause::InvalidState {
                    state: entry.state_name(),
                    expected: "stop it first",
                },
            ));
        }
        // `--force` also kills an init still waiting for `start`.
        let deleted = self.shared.runc.run(&["delete", "--force", &id.0]).await;
        if entry.exited_within(REAP_LIMIT).await.is_none() {
            entry.kill(Signal::SIGKILL);
            let _ = entry.exited_within(REAP_LIMIT).await;
        }
        let mut eof = entry.eof.clone();
        let _ = tokio::time::timeout(LOG_SETTLE, eof.wait_for(|n| *n >= 2)).await;
        for r in &entry.readers {
            r.abort();
        }
        self.teardown(&entry).await;
        if let Some(files) = &entry.keeper {
            files.remove();
        }
        let key = id.clone();
        self.shared.table.call(move |t| t.remove(&key)).await;
        deleted
            .map(|_| ())
            .map_err(|e| RuntimeError::new(Op::Remove, id, e.into()))
    }

    async fn wait(&self, id: &ContainerId) -> Result<ExitStatus, RuntimeError> {
        let entry = self.entry(Op::Wait, id).await?;
        if matches!(*entry.state.borrow(), OciState::Created { .. }) {
            return Err(RuntimeError::new(
                Op::Wait,
                id,
                Cause::InvalidState {
                    state: "created".into(),
                    expected: "it was never started",
                },
            ));
        }
        let mut rx = entry.state.subscribe();
        let state = *rx
            .wait_for(|s| matches!(s, OciState::Exited { .. }))
            .await
            .map_err(|_| RuntimeError::new(Op::Wait, id, Cause::Closed))?;
        match state {
            OciState::Exited { status } => Ok(status),
            _ => Err(RuntimeError::new(Op::Wait, id, Cause::Closed)),
        }
    }

    async fn state(&self, id: &ContainerId) -> Result<ContainerState, RuntimeError> {
        Ok(self.entry(Op::State, id).await?.container_state())
    }

    async fn pid(&self, id: &ContainerId) -> Result<Option<u32>, RuntimeError> {
        let entry = self.entry(Op::Pid, id).await?;
        let pid = match *entry.state.borrow() {
            OciState::Running { pid } => Some(pid),
            _ => None,
        };
        Ok(pid)
    }

    async fn signal(&self, id: &ContainerId, signal: Signal) -> Result<(), RuntimeError> {
        let entry = self.entry(Op::Signal, id).await?;
        if !matches!(*entry.state.borrow(), OciState::Running { .. }) {
            return Err(RuntimeError::new(
                Op::Signal,
                id,
                Cause::InvalidState {
                    state: entry.state_name(),
                    expected: "only a running container can be signalled",
                },
            ));
        }
        entry.kill(signal);
        Ok(())
    }

    async fn logs(&self, id: &ContainerId, query: LogQuery) -> Result<Logs, RuntimeError> {
        let entry = self.entry(Op::Logs, id).await?;
        if entry.exit_status().is_some() {
            let mut eof = entry.eof.clone();
            let _ = tokio::time::timeout(LOG_SETTLE, eof.wait_for(|n| *n >= 2)).await;
        }
        Ok(entry.logs.query(query))
    }

    async fn exec(
        &self,
        id: &ContainerId,
        argv: &[String],
        timeout: Duration,
    ) -> Result<super::ExecOutput, RuntimeError> {
        self.entry(Op::Exec, id).await?;
        match self.shared.runc.exec(&id.0, argv, timeout).await {
            Ok(Some((status, output))) => Ok(super::ExecOutput {
                status: status.into(),
                output: String::from_utf8_lossy(&output).trim_end().to_owned(),
            }),
            Ok(None) => Err(RuntimeError::new(Op::Exec, id, Cause::TimedOut(timeout))),
            Err(e) => Err(RuntimeError::new(Op::Exec, id, e.into())),
        }
    }

    async fn adopt(&self, spec: &ContainerSpec) -> Result<Option<ContainerId>, RuntimeError> {
        self.adopt_kept(spec).await
    }

    async fn is_kept(&self, id: &ContainerId) -> bool {
        match self.entry(Op::State, id).await {
            Ok(entry) => entry.keeper.is_some(),
            Err(_) => false,
        }
    }

    async fn oom_killed(&self, id: &ContainerId) -> Result<bool, RuntimeError> {
        let entry = self.entry(Op::State, id).await?;
        Ok(entry.oom_kills.load(Ordering::Acquire) > 0)
    }

    fn abandon(&self, id: &ContainerId) {
        let this = self.clone();
        let key = id.clone();
        self.shared.table.cast(move |t| {
            let Some(entry) = t.get(&key).cloned() else {
                return;
            };
            entry.kill(Signal::SIGKILL);
            tokio::spawn(async move {
                let _ = entry.exited_within(REAP_LIMIT).await;
                let _ = this.remove(&key).await;
            });
        });
    }
}
