//! A container's bundle: its root filesystem and its `config.json`.
//!
//! The root filesystem is an overlay: the image's unpacked tree (shared,
//! never written) as the lower layer, and an upper and a work directory in
//! the bundle for what the container writes. Where overlayfs cannot be
//! mounted (an old kernel, a state dir on a filesystem overlayfs refuses as
//! upper), the tree is copied instead: slower, same result.
//!
//! `config.json` is built with the `oci-spec` crate from runc's defaults
//! (namespaces, masked paths, device rules, the usual /proc, /dev and /sys
//! mounts) plus what the spec and the image say.

use std::{
    fs, io,
    path::{Path, PathBuf},
};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, MountBuilder, RootBuilder, Spec, UserBuilder,
};

use super::OciError;
use crate::{
    image::ImageRecord,
    runtime::{Cause, ContainerSpec},
    spec::{SpecError, SpecErrors},
};

/// One container's bundle directory.
#[derive(Debug)]
pub(crate) struct Bundle {
    pub(crate) dir: PathBuf,
    pub(crate) rootfs: PathBuf,
}

fn io(context: impl Into<String>) -> impl FnOnce(io::Error) -> OciError {
    let context = context.into();
    move |source| OciError::Io { context, source }
}

impl Bundle {
    /// Creates the bundle at `dir` with a root filesystem over `lower`.
    /// Blocking.
    pub(crate) fn prepare(dir: &Path, lower: &Path) -> Result<Self, OciError> {
        let rootfs = dir.join("rootfs");
        for sub in ["rootfs", "upper", "work"] {
            fs::create_dir_all(dir.join(sub))
                .map_err(io(format!("failed to create {}", dir.join(sub).display())))?;
        }
        let data = format!(
            "lowerdir={},upperdir={},workdir={}",
            lower.display(),
            dir.join("upper").display(),
            dir.join("work").display()
        );
        let bundle = Self {
            dir: dir.to_path_buf(),
            rootfs,
        };
        if let Err(e) = mount(
            Some("overlay"),
            &bundle.rootfs,
            Some("overlay"),
            MsFlags::empty(),
            Some(data.as_str()),
        ) {
            tracing::debug!(error = %e, bundle = %dir.display(), "overlayfs unavailable; copying the image tree");
            if let Err(e) = copy_tree(lower, &bundle.rootfs) {
                bundle.teardown();
                return Err(OciError::Io {
                    context: format!("failed to copy {} into the bundle", lower.display()),
                    source: e,
                });
            }
        }
        Ok(bundle)
    }

    /// Unmounts the root filesystem and deletes the bundle. Blocking; never
    /// fails (what it cannot remove is logged and found again at the next
    /// start-up).
    pub(crate) fn teardown(&self) {
        teardown_dir(&self.dir);
    }
}

/// Unmounts whatever is mounted at `dir/rootfs` and removes `dir`.
pub(crate) fn teardown_dir(dir: &Path) {
    let rootfs = dir.join("rootfs");
    if is_mount_point(&rootfs)
        && let Err(e) = umount2(&rootfs, MntFlags::MNT_DETACH)
    {
        tracing::warn!(error = %e, path = %rootfs.display(), "failed to unmount a container rootfs");
    }
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != io::ErrorKind::NotFound
    {
        tracing::warn!(error = %e, path = %dir.display(), "failed to remove a container bundle");
    }
}

/// Mount points of this mount namespace (`/proc/self/mountinfo`, field 5).
pub(crate) fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .collect()
}

fn is_mount_point(path: &Path) -> bool {
    mount_points().iter().any(|p| p == path)
}

/// Copies a tree, keeping modes, symlinks and (as root) owners.
fn copy_tree(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    fs::create_dir_all(to)?;
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        let dest = to.join(entry.file_name());
        let ft = meta.file_type();
        if ft.is_dir() {
            copy_tree(&entry.path(), &dest)?;
            fs::set_permissions(&dest, fs::Permissions::from_mode(meta.mode()))?;
        } else if ft.is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(entry.path())?, &dest)?;
            continue;
        } else if ft.is_file() {
            fs::copy(entry.path(), &dest)?;
        } else {
            continue;
        }
        let _ = std::os::unix::fs::chown(&dest, Some(meta.uid()), Some(meta.gid()));
    }
    Ok(())
}

fn spec_error(field: &str, value: impl std::fmt::Display, message: impl Into<String>) -> Cause {
    Cause::Spec(SpecErrors::from(SpecError::new(field, value, message)))
}

/// argv: the spec's `command` overrides the image's entrypoint + cmd.
pub fn resolve_argv(spec: &ContainerSpec, image: &ImageRecord) -> Result<Vec<String>, Cause> {
    if !spec.command.is_empty() {
        return Ok(spec.command.clone());
    }
    let argv = image.config.argv();
    if argv.is_empty() {
        return Err(spec_error(
            "command",
            "[]",
            format!(
                "image {} has no command (no entrypoint or cmd): give the command in the spec",
                image.name
            ),
        ));
    }
    Ok(argv)
}

/// `user[:group]` as uid and gid, names looked up in the image's
/// `/etc/passwd` and `/etc/group`.
fn resolve_user(user: &str, rootfs: &Path) -> Result<(u32, u32), Cause> {
    let lookup = |file: &str, name: &str| -> Option<(u32, u32)> {
        let text = fs::read_to_string(rootfs.join(file)).ok()?;
        text.lines().find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.first() == Some(&name)).then(|| {
                (
                    f.get(2).and_then(|s| s.parse().ok()).unwrap_or(0),
                    f.get(3).and_then(|s| s.parse().ok()).unwrap_or(0),
                )
            })
        })
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let (uid, primary) = match u.parse::<u32>() {
        Ok(n) => (n, lookup_uid_gid(rootfs, n).unwrap_or(n)),
        Err(_) => lookup("etc/passwd", u).ok_or_else(|| {
            spec_error(
                "user",
                format!("{user:?}"),
                "no such user in the image's /etc/passwd",
            )
        })?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => lookup("etc/group", g).map(|(gid, _)| gid).ok_or_else(|| {
                spec_error(
                    "user",
                    format!("{user:?}"),
                    "no such group in the image's /etc/group",
                )
            })?,
        },
    };
    Ok((uid, gid))
}

fn lookup_uid_gid(rootfs: &Path, uid: u32) -> Option<u32> {
    let text = fs::read_to_string(rootfs.join("etc/passwd")).ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.get(2).and_then(|s| s.parse::<u32>().ok()) == Some(uid))
            .then(|| f.get(3).and_then(|s| s.parse().ok()))
            .flatten()
    })
}

/// The container's `/etc/resolv.conf` when the overlay gave it DNS search
/// domains: `search` with them, then the host's nameserver and options
/// lines (the container resolves through the same servers as the node).
pub(crate) fn resolv_conf(search: &[String]) -> Option<String> {
    if search.is_empty() {
        return None;
    }
    let mut text = format!("search {}\n", search.join(" "));
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    for line in host.lines() {
        let line = line.trim();
        if line.starts_with("nameserver") || line.starts_with("options") {
            text.push_str(line);
            text.push('\n');
        }
    }
    Some(text)
}

/// Binds `file` (the bundle's resolv.conf) read-only over the container's
/// `/etc/resolv.conf`.
pub(crate) fn mount_resolv_conf(config: &mut Spec, file: &Path) -> Result<(), Cause> {
    let mut mounts = config.mounts().clone().unwrap_or_default();
    mounts.push(
        MountBuilder::default()
            .destination("/etc/resolv.conf")
            .typ("bind")
            .source(file)
            .options(vec![
                "rbind".to_owned(),
                "rprivate".to_owned(),
                "ro".to_owned(),
            ])
            .build()
            .map_err(|e| spec_error("dns_search", "", e.to_string()))?,
    );
    config.set_mounts(Some(mounts));
    Ok(())
}

/// The `config.json` of a container running `spec` from `image`, whose
/// unpacked tree is `image_root`, in cgroup `cgroups_path`.
pub(crate) fn config(
    spec: &ContainerSpec,
    image: &ImageRecord,
    image_root: &Path,
    cgroups_path: &str,
) -> Result<Spec, Cause> {
    let built = |e: oci_spec::OciSpecError| spec_error("<config.json>", "", e.to_string());
    let argv = resolve_argv(spec, image)?;
    let mut env = image.config.env_map();
    env.entry("PATH".into())
        .or_insert_with(|| "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into());
    env.extend(spec.env.clone());
    let cwd = spec
        .cwd
        .clone()
        .or_else(|| image.config.workdir.clone().map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/"));
    if !cwd.is_absolute() {
        return Err(spec_error(
            "cwd",
            cwd.display(),
            "must be an absolute path inside the container",
        ));
    }
    let (uid, gid) = match spec.user.as_deref().or(image.config.user.as_deref()) {
        Some(u) => resolve_user(u, image_root)?,
        None => (0, 0),
    };

    let mut s = Spec::default();
    s.set_root(Some(
        RootBuilder::default()
            .path("rootfs")
            .readonly(false)
            .build()
            .map_err(built)?,
    ));
    let mut process = s.process().clone().unwrap_or_default();
    process.set_terminal(Some(false));
    process.set_args(Some(argv));
    process.set_env(Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()));
    process.set_cwd(cwd);
    process.set_user(
        UserBuilder::default()
            .uid(uid)
            .gid(gid)
            .build()
            .map_err(built)?,
    );
    process.set_no_new_privileges(Some(true));
    s.set_process(Some(process));
    let hostname = spec.hostname.clone().unwrap_or_else(|| {
        let h: String = spec
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .take(63)
            .collect();
        h.trim_start_matches('-').to_owned()
    });
    s.set_hostname(Some(if hostname.is_empty() {
        "arbor".into()
    } else {
        hostname
    }));

    let mut mounts = s.mounts().clone().unwrap_or_default();
    for m in &spec.mounts {
        let mut options = vec!["rbind".to_owned(), "rprivate".to_owned()];
        if m.read_only {
            options.push("ro".into());
        }
        mounts.push(
            MountBuilder::default()
                .destination(m.target.clone())
                .typ("bind")
                .source(m.source.clone())
                .options(options)
                .build()
                .map_err(built)?,
        );
    }
    s.set_mounts(Some(mounts));

    let mut linux = s.linux().clone().unwrap_or_default();
    if let Some(path) = &spec.netns {
        let mut namespaces = linux.namespaces().clone().unwrap_or_default();
        namespaces.retain(|n| n.typ() != LinuxNamespaceType::Network);
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(LinuxNamespaceType::Network)
                .path(path.clone())
                .build()
                .map_err(built)?,
        );
        linux.set_namespaces(Some(namespaces));
    }
    linux.set_cgroups_path(Some(PathBuf::from(cgroups_path)));
    let mut resources = linux.resources().clone().unwrap_or_default();
    if let Some(m) = spec.resources.memory {
        let bytes = i64::try_from(m.as_u64()).unwrap_or(i64::MAX);
        let mut memory = LinuxMemoryBuilder::default().limit(bytes);
        // Swap equal to the limit (no swap on top) where swap is accounted;
        // runc refuses a swap limit the kernel cannot set.
        if Path::new("/sys/fs/cgroup/memory/memory.memsw.limit_in_bytes").exists()
            || Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
        {
            memory = memory.swap(bytes);
        }
        resources.set_memory(Some(memory.build().map_err(built)?));
    }
    if let Some(c) = spec.resources.cpus {
        let period: u64 = 100_000;
        resources.set_cpu(Some(
            LinuxCpuBuilder::default()
                .period(period)
                .quota((c * period as f64).round() as i64)
                .build()
                .map_err(built)?,
        ));
    }
    if let Some(p) = spec.resources.pids {
        resources.set_pids(Some(
            LinuxPidsBuilder::default()
                .limit(p)
                .build()
                .map_err(built)?,
        ));
    }
    linux.set_resources(Some(resources));
    s.set_linux(Some(linux));
    Ok(s)
}
