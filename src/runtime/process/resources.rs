//! Resource limits of host processes (`resources: {memory, cpus, pids}`),
//! through cgroup controllers, as root.
//!
//! Two layouts exist in the wild, chosen once when the runtime is built:
//! - **cgroup v2 with controllers**: the container's own cgroup (the one it
//!   already gets for membership, `cgroup.rs`) receives `memory.max`,
//!   `cpu.max` and `pids.max`. The controllers must be enabled on the way
//!   down (`cgroup.subtree_control` of the node's cgroup and of the runtime's
//!   base); the kernel refuses that while the node's own cgroup holds
//!   processes ("no internal processes"), which is the case of an agent run
//!   from a shell: the error then says to run it in a cgroup of its own
//!   (systemd: `Delegate=yes`).
//! - **hybrid (v1 controllers)**: when the unified hierarchy has no memory
//!   controller but the v1 hierarchies `memory`, `cpu` and `pids` are
//!   mounted, each limited container gets a cgroup in each of them, below
//!   the node's own (`<hierarchy>/<node's path>/arbor-<pid>-<n>/<id>`), with
//!   `memory.limit_in_bytes`, `cpu.cfs_quota_us` and `pids.max`.
//!
//! The process joins every cgroup before it runs the program (a `pre_exec`
//! write of `0` to each `cgroup.procs`), so nothing it forks escapes a
//! limit. An OOM kill is read from the memory controller's `oom_kill`
//! counter (`memory.events` on v2, `memory.oom_control` on v1).

use std::{
    fs::{self, File, OpenOptions},
    io,
    os::fd::{AsRawFd, RawFd},
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
};

use crate::spec::Resources;

/// The period `cpus` is measured over (100 ms, the kernel's default).
const CPU_PERIOD_US: u64 = 100_000;

/// Where limits go, for a runtime running as root.
#[derive(Debug)]
pub(crate) enum Limiter {
    /// Controllers on the v2 membership cgroups, below `base` (enabled
    /// from `own` down on first use).
    V2 { own: PathBuf, base: PathBuf },
    /// v1 hierarchies: the runtime's base directory in each.
    V1 {
        memory: PathBuf,
        cpu: PathBuf,
        pids: PathBuf,
    },
}

/// The cgroups that hold one limited container.
#[derive(Debug)]
pub(crate) struct Limited {
    /// Directories created for it (v1; removed when it is drained).
    dirs: Vec<PathBuf>,
    /// The `cgroup.procs` files it joins (v1; v2 joins the membership one).
    procs: Vec<File>,
    /// Where the memory controller's OOM counter is.
    oom_file: Option<PathBuf>,
    /// The counter as last read before its cgroup went away.
    remembered: AtomicU64,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

const CONTROLLERS: [&str; 3] = ["memory", "cpu", "pids"];

impl Limiter {
    /// The layout of this machine, given the v2 membership base (if any).
    pub(crate) fn detect(v2: Option<(&Path, &Path)>) -> Option<Self> {
        if let Some((own, base)) = v2 {
            let available = fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
            let have: Vec<&str> = available.split_whitespace().collect();
            if CONTROLLERS.iter().all(|c| have.contains(c)) {
                return Some(Self::V2 {
                    own: own.to_path_buf(),
                    base: base.to_path_buf(),
                });
            }
        }
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("arbor-{}-{n}", std::process::id());
        let dir = |controller: &str| -> Option<PathBuf> {
            let own = v1_own_dir(controller)?;
            remove_stale(&own);
            Some(own.join(&name))
        };
        Some(Self::V1 {
            memory: dir("memory")?,
            cpu: dir("cpu")?,
            pids: dir("pids")?,
        })
    }

    /// Sets `limits` on container `id`. On v2, `membership` is the
    /// container's own cgroup directory. On v1, a kept container's cgroups
    /// go in directory `kept` beside this runtime's own (which the next
    /// agent's sweep of a dead agent's `arbor-<pid>-<n>` would remove once
    /// empty, with the OOM count of a container that ended while no agent
    /// ran).
    pub(crate) fn apply(
        &self,
        id: &str,
        limits: &Resources,
        membership: Option<&Path>,
        kept: Option<&str>,
    ) -> io::Result<Limited> {
        match self {
            Self::V2 { own, base } => {
                let Some(dir) = membership else {
                    return Err(io::Error::other("the container has no cgroup"));
                };
                enable_v2(own, base)?;
                if let Some(m) = limits.memory {
                    write(dir, "memory.max", &m.as_u64().to_string())?;
                    // No swap past the limit, as OCI's `memory` means.
                    let _ = fs::write(dir.join("memory.swap.max"), "0");
                }
                if let Some(c) = limits.cpus {
                    write(dir, "cpu.max", &format!("{} {CPU_PERIOD_US}", quota(c)))?;
                }
                if let Some(p) = limits.pids {
                    write(dir, "pids.max", &p.to_string())?;
                }
                Ok(Limited {
                    dirs: Vec::new(),
                    procs: Vec::new(),
                    oom_file: Some(dir.join("memory.events")),
                    remembered: AtomicU64::new(0),
                })
            }
            Self::V1 { memory, cpu, pids } => {
                let beside = |base: &PathBuf| match kept {
                    Some(k) => base.parent().map_or_else(|| base.join(k), |p| p.join(k)),
                    None => base.clone(),
                };
                let (memory, cpu, pids) = (&beside(memory), &beside(cpu), &beside(pids));
                let mut limited = Limited {
                    dirs: Vec::new(),
                    procs: Vec::new(),
                    oom_file: None,
                    remembered: AtomicU64::new(0),
                };
                let mut join = |base: &Path, files: &[(&str, String)]| -> io::Result<PathBuf> {
                    fs::create_dir_all(base)?;
                    let dir = base.join(id);
                    fs::create_dir(&dir)?;
                    limited.dirs.push(dir.clone());
                    for (file, value) in files {
                        write(&dir, file, value)?;
                    }
                    limited.procs.push(
                        OpenOptions::new()
                            .write(true)
                            .open(dir.join("cgroup.procs"))?,
                    );
                    Ok(dir)
                };
                let result = (|| {
                    if let Some(m) = limits.memory {
                        let dir =
                            join(memory, &[("memory.limit_in_bytes", m.as_u64().to_string())])?;
                        // Swap limit = memory limit, where swap accounting exists.
                        let _ = fs::write(
                            dir.join("memory.memsw.limit_in_bytes"),
                            m.as_u64().to_string(),
                        );
                        limited.oom_file = Some(dir.join("memory.oom_control"));
                    }
                    if let Some(c) = limits.cpus {
                        join(
                            cpu,
                            &[
                                ("cpu.cfs_period_us", CPU_PERIOD_US.to_string()),
                                ("cpu.cfs_quota_us", quota(c).to_string()),
                            ],
                        )?;
                    }
                    if let Some(p) = limits.pids {
                        join(pids, &[("pids.max", p.to_string())])?;
                    }
                    Ok(())
                })();
                match result {
                    Ok(()) => Ok(limited),
                    Err(e) => {
                        limited.remove();
                        Err(e)
                    }
                }
            }
        }
    }
}

impl Drop for Limiter {
    /// Removes the runtime's v1 base directories (when empty; a container
    /// not drained keeps its base, left for an operator).
    fn drop(&mut self) {
        if let Self::V1 { memory, cpu, pids } = self {
            for dir in [memory, cpu, pids] {
                let _ = fs::remove_dir(dir);
            }
        }
    }
}

impl Limited {
    /// A kept container's limit cgroups as its record names them, for the
    /// agent that adopts it: read for OOM kills, removed once it is drained.
    pub(crate) fn reopen(dirs: Vec<PathBuf>, oom_file: Option<PathBuf>) -> Self {
        Self {
            dirs,
            procs: Vec::new(),
            oom_file,
            remembered: AtomicU64::new(0),
        }
    }

    /// The v1 directories created for it.
    pub(crate) fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// Where its OOM counter is.
    pub(crate) fn oom_file(&self) -> Option<&Path> {
        self.oom_file.as_deref()
    }

    /// The `cgroup.procs` files the child writes `0` to before `exec`.
    pub(crate) fn procs_fds(&self) -> Vec<RawFd> {
        self.procs.iter().map(AsRawFd::as_raw_fd).collect()
    }

    /// The paths of those files (a keeper opens them itself).
    pub(crate) fn procs_paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// How many times the kernel OOM-killed a process of the container
    /// (as remembered once its cgroups are gone).
    pub(crate) fn oom_kills(&self) -> u64 {
        self.read_oom_kills()
            .max(self.remembered.load(Ordering::Acquire))
    }

    /// Reads the counter now, before the cgroup holding it is removed.
    pub(crate) fn remember_oom_kills(&self) {
        self.remembered
            .fetch_max(self.read_oom_kills(), Ordering::AcqRel);
    }

    fn read_oom_kills(&self) -> u64 {
        let Some(file) = &self.oom_file else {
            return 0;
        };
        fs::read_to_string(file)
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    let (k, v) = l.split_once(' ')?;
                    (k == "oom_kill").then(|| v.trim().parse().ok())?
                })
            })
            .unwrap_or(0)
    }

    /// Removes the v1 cgroups (once the container is drained).
    pub(crate) fn remove(&self) {
        self.remember_oom_kills();
        for dir in &self.dirs {
            if let Err(e) = fs::remove_dir(dir)
                && e.kind() != io::ErrorKind::NotFound
            {
                tracing::warn!(cgroup = %dir.display(), error = %e, "failed to remove a limit cgroup");
            }
        }
    }
}

/// `cpus` as a quota per [`CPU_PERIOD_US`] (at least 1 ms, as the kernel requires).
fn quota(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000)
}

fn write(dir: &Path, file: &str, value: &str) -> io::Result<()> {
    fs::write(dir.join(file), value).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "failed to write {value:?} to {}: {e}",
                dir.join(file).display()
            ),
        )
    })
}

/// Enables the memory, cpu and pids controllers from the node's cgroup
/// down to the runtime's base.
fn enable_v2(own: &Path, base: &Path) -> io::Result<()> {
    enable(own)?;
    enable(base)
}

impl Limiter {
    /// On v2, enables the controllers in `dir` too (the kept containers'
    /// directory beside the runtime's base).
    pub(crate) fn enable_in(&self, dir: &Path) -> io::Result<()> {
        match self {
            Self::V2 { own, .. } => {
                enable(own)?;
                enable(dir)
            }
            Self::V1 { .. } => Ok(()),
        }
    }
}

/// Enables the memory, cpu and pids controllers for the children of `dir`.
fn enable(dir: &Path) -> io::Result<()> {
    {
        let on = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
        if CONTROLLERS
            .iter()
            .all(|c| on.split_whitespace().any(|o| o == *c))
        {
            return Ok(());
        }
        fs::write(dir.join("cgroup.subtree_control"), "+memory +cpu +pids").map_err(|e| {
            let hint = if e.raw_os_error() == Some(libc::EBUSY) {
                " (the agent's cgroup holds other processes; run it in a cgroup of its own, e.g. a systemd service with Delegate=yes)"
            } else {
                ""
            };
            io::Error::new(
                e.kind(),
                format!(
                    "failed to enable the memory, cpu and pids controllers in {}: {e}{hint}",
                    dir.display()
                ),
            )
        })
    }
}

/// This process's cgroup directory in the v1 hierarchy of `controller`.
fn v1_own_dir(controller: &str) -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (root, mount) = mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        let mut post = post.split_whitespace();
        if post.next()? != "cgroup" {
            return None;
        }
        let options = post.nth(1)?;
        if !options.split(',').any(|o| o == controller) {
            return None;
        }
        let fields: Vec<&str> = pre.split_whitespace().collect();
        Some((fields.get(3)?.to_string(), PathBuf::from(fields.get(4)?)))
    })?;
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_owned())
    })?;
    let rel = rel.strip_prefix(root.as_str()).unwrap_or(&rel).to_owned();
    let dir = mount.join(rel.trim_start_matches('/'));
    dir.join("cgroup.procs").exists().then_some(dir)
}

/// Removes the empty v1 cgroups a crashed node left (`arbor-<pid>-<n>`
/// whose node process is gone); one still holding processes stays.
fn remove_stale(parent: &Path) {
    for dir in super::cgroup::stale_dirs(parent) {
        if let Ok(children) = fs::read_dir(&dir) {
            for child in children.flatten().filter(|c| c.path().is_dir()) {
                let _ = fs::remove_dir(child.path());
            }
        }
        let _ = fs::remove_dir(&dir);
    }
}
