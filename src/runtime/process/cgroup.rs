//! cgroup v2 placement, so that nothing a container starts can escape a stop.
//!
//! A process group is not a container: a grandchild that calls `setsid`
//! leaves it and survives `killpg`. When the node runs as root and a cgroup v2
//! hierarchy is mounted (`/sys/fs/cgroup`, or `/sys/fs/cgroup/unified` on
//! hybrid machines), each container gets its own cgroup below the node's,
//! named `arbor-<node pid>-<n>/<container id>`. The child joins it before it
//! runs the program (a `pre_exec` write of `0` to `cgroup.procs`, so nothing
//! it forks is ever outside), and a stop ends with `cgroup.kill`. No
//! controllers are enabled: the cgroup is used for membership only.
//!
//! The `pre_exec` hook makes std fork instead of `posix_spawn` (about 20%
//! slower to spawn, measured); without root arbor uses process groups only
//! and keeps the fast path.

use std::{
    fs::{self, File, OpenOptions},
    io,
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

/// The node's cgroup directory for containers.
#[derive(Debug)]
pub(crate) struct Cgroups {
    base: PathBuf,
}

/// One container's cgroup.
#[derive(Debug)]
pub(crate) struct Cgroup {
    path: PathBuf,
    /// The end of its path as `/proc/<pid>/cgroup` shows it:
    /// `/arbor-<node pid>-<n>/<container id>`.
    suffix: String,
}

static NEXT: AtomicU32 = AtomicU32::new(0);

impl Cgroups {
    /// The cgroup v2 directory for this runtime, when running as root on a
    /// machine with cgroup v2; `Ok(None)` when either is missing.
    /// Cgroups in `keep` (of kept containers a previous node left, to be
    /// adopted) survive the sweep of what crashed nodes left.
    pub(crate) fn detect(keep: &[PathBuf]) -> io::Result<Option<Self>> {
        if !nix::unistd::geteuid().is_root() {
            return Ok(None);
        }
        let Some(own) = own_cgroup_dir() else {
            return Ok(None);
        };
        remove_stale(&own, keep);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = own.join(format!("arbor-{}-{n}", std::process::id()));
        fs::create_dir(&base)?;
        Ok(Some(Self { base }))
    }

    /// Creates the cgroup of container `id`.
    pub(crate) fn create(&self, id: &str) -> io::Result<Cgroup> {
        let path = self.base.join(id);
        fs::create_dir(&path)?;
        let base_name = self
            .base
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Cgroup {
            path,
            suffix: format!("/{base_name}/{id}"),
        })
    }

    /// Creates the cgroup of kept container `id` in `<node's cgroup>/<dir>`
    /// (created when missing): kept containers outlive the node, so they
    /// are not in its `arbor-<pid>-<n>` directory, which the next node to
    /// start on this machine would sweep as stale.
    pub(crate) fn create_kept(&self, dir: &str, id: &str) -> io::Result<Cgroup> {
        let parent = self.kept_dir(dir);
        fs::create_dir_all(&parent)?;
        let path = parent.join(id);
        fs::create_dir(&path)?;
        Ok(Cgroup {
            path,
            suffix: format!("/{dir}/{id}"),
        })
    }

    /// `<node's cgroup>/<dir>`, where kept containers' cgroups go.
    pub(crate) fn kept_dir(&self, dir: &str) -> PathBuf {
        self.base
            .parent()
            .map(|p| p.join(dir))
            .unwrap_or_else(|| self.base.join(dir))
    }

    /// Where the container cgroups live.
    pub(crate) fn base(&self) -> &Path {
        &self.base
    }
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // Container cgroups are removed as each container is drained; an
        // undrained one keeps the base busy, which is then left for the next
        // start-up's stale sweep.
        let _ = fs::remove_dir(&self.base);
    }
}

impl Cgroup {
    /// The existing cgroup at `path` (a kept container's, adopted).
    pub(crate) fn open(path: &Path) -> io::Result<Cgroup> {
        fs::metadata(path.join("cgroup.procs"))?;
        let name = |p: Option<&Path>| {
            p.and_then(|p| p.file_name())
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Ok(Cgroup {
            path: path.to_owned(),
            suffix: format!("/{}/{}", name(path.parent()), name(Some(path))),
        })
    }

    /// Its directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Its `cgroup.procs`, opened for the child to write `0` to before
    /// `exec`: opened for each spawn, not held, so a running container
    /// costs the node no descriptor for it.
    pub(crate) fn open_procs(&self) -> io::Result<File> {
        OpenOptions::new()
            .write(true)
            .open(self.path.join("cgroup.procs"))
    }

    /// Kills every process in the cgroup (`cgroup.kill`, which also catches
    /// processes forking while it runs).
    pub(crate) fn kill(&self) {
        if let Err(e) = fs::write(self.path.join("cgroup.kill"), "1") {
            tracing::warn!(cgroup = %self.path.display(), error = %e, "cgroup.kill failed");
        }
    }

    /// True while any process is in the cgroup.
    pub(crate) fn populated(&self) -> bool {
        self.events_flag("populated").unwrap_or(false)
    }

    /// True when `path`, a process's cgroup as `/proc/<pid>/cgroup` shows
    /// it, is this cgroup. A process keeps it until it is reaped, while it
    /// leaves `cgroup.procs` (and `populated`) early in `exit`.
    pub(crate) fn is_path(&self, path: &str) -> bool {
        path.ends_with(&self.suffix)
    }

    /// Pids in the cgroup now.
    pub(crate) fn pids(&self) -> Vec<i32> {
        fs::read_to_string(self.path.join("cgroup.procs"))
            .map(|s| s.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Removes the (empty) cgroup directory.
    pub(crate) fn remove(&self) {
        if let Err(e) = fs::remove_dir(&self.path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(cgroup = %self.path.display(), error = %e, "failed to remove cgroup");
        }
    }

    fn events_flag(&self, key: &str) -> Option<bool> {
        let text = fs::read_to_string(self.path.join("cgroup.events")).ok()?;
        text.lines().find_map(|l| {
            let (k, v) = l.split_once(' ')?;
            (k == key).then(|| v.trim() == "1")
        })
    }
}

/// This process's cgroup directory on the v2 hierarchy, if one is mounted.
fn own_cgroup_dir() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    let (root, mount) = mountinfo.lines().find_map(|line| {
        let (pre, post) = line.split_once(" - ")?;
        if post.split_whitespace().next()? != "cgroup2" {
            return None;
        }
        let fields: Vec<&str> = pre.split_whitespace().collect();
        Some((fields.get(3)?.to_string(), PathBuf::from(fields.get(4)?)))
    })?;
    let own = fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = own.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let rel = rel.strip_prefix(root.as_str()).unwrap_or(rel);
    let dir = mount.join(rel.trim_start_matches('/'));
    dir.join("cgroup.procs").exists().then_some(dir)
}

/// The `arbor-<pid>-<n>` directories in `parent` whose node process is
/// gone: what a crashed node left (here, or in a v1 hierarchy).
pub(crate) fn stale_dirs(parent: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|entry| {
            entry
                .file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("arbor-"))
                .and_then(|rest| rest.split('-').next())
                .and_then(|p| p.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists())
        })
        .map(|entry| entry.path())
        .collect()
}

/// Kills and removes what a crashed node left: `arbor-<pid>-<n>` directories
/// whose node process is gone.
fn remove_stale(parent: &Path, keep: &[PathBuf]) {
    for dir in stale_dirs(parent) {
        if let Ok(children) = fs::read_dir(&dir) {
            for child in children
                .flatten()
                .filter(|c| c.path().is_dir() && !keep.contains(&c.path()))
            {
                let _ = fs::write(child.path().join("cgroup.kill"), "1");
                let _ = fs::remove_dir(child.path());
            }
        }
        match fs::remove_dir(&dir) {
            Ok(()) => {
                tracing::info!(cgroup = %dir.display(), "removed a stale cgroup left by a crashed node")
            }
            Err(e) => {
                tracing::warn!(cgroup = %dir.display(), error = %e, "stale cgroup not removed yet")
            }
        }
    }
}
