//! Applying a layer onto a root filesystem, whiteouts included.
//!
//! A layer is a tar (plain or gzip) of the files it adds or changes, plus
//! markers for what it deletes from the layers below: `.wh.NAME` deletes
//! `NAME`, and `.wh..wh..opq` in a directory hides everything the lower
//! layers put there (OCI image spec, "Whiteouts"). The layers are applied
//! bottom first into one tree, so a whiteout is a deletion here; entries of
//! the same layer are never deleted by its own opaque marker.

use std::{
    collections::HashSet,
    fs,
    io::{self, BufRead, BufReader, Read},
    path::{Component, Path, PathBuf},
};

use super::digest::Hashing;

const WHITEOUT: &str = ".wh.";
const OPAQUE: &str = ".wh..wh..opq";

/// Applies the layer read from `input` onto `root`; returns the digest and
/// size of the uncompressed tar (its diff id).
pub(crate) fn apply_layer(input: impl Read, root: &Path) -> io::Result<(String, u64)> {
    let mut input = BufReader::new(input);
    let gzip = input.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    let tar: Box<dyn Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut hashing = Hashing::new(tar);
    apply_tar(&mut hashing, root)?;
    hashing.finish()
}

fn apply_tar(input: &mut impl Read, root: &Path) -> io::Result<()> {
    let root_user = nix::unistd::geteuid().is_root();
    let mut archive = tar::Archive::new(input);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(root_user);
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    // Paths this layer wrote: an opaque marker hides only what lies below.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = clean(&entry.path()?)?;
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            // The root directory itself.
            continue;
        };
        let parent = path.parent().unwrap_or(Path::new("")).to_path_buf();
        if name == OPAQUE {
            let dir = root.join(&parent);
            if let Ok(children) = fs::read_dir(&dir) {
                for child in children.flatten() {
                    let rel = parent.join(child.file_name());
                    if !written.contains(&rel) {
                        remove_any(&child.path())?;
                    }
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            remove_any(&root.join(&parent).join(hidden))?;
            continue;
        }
        let target = root.join(&path);
        // A file replacing a directory (or the other way round), or a
        // symlink over anything, needs the old entry gone first.
        if let Ok(meta) = fs::symlink_metadata(&target) {
            let replacing_dir = entry.header().entry_type().is_dir();
            if !(replacing_dir && meta.is_dir()) {
                remove_any(&target)?;
            }
        }
        if !entry.unpack_in(root)? {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("layer entry {} escapes the root", path.display()),
            ));
        }
        written.insert(path);
    }
    Ok(())
}

/// The entry's path made relative, refusing `..` and absolute escapes.
fn clean(path: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("layer entry {} escapes the root", path.display()),
                ));
            }
        }
    }
    Ok(out)
}

fn remove_any(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

/// Total bytes of the regular files below `dir`.
pub(crate) fn tree_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => stack.push(e.path()),
                Ok(t) if t.is_file() => total += e.metadata().map(|m| m.len()).unwrap_or(0),
                _ => {}
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    b.append_data(&mut h, path, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_delete_lower_files_and_opaque_dirs_hide_lower_contents() {
        let root = tempfile::tempdir().unwrap();
        let lower = layer(&[
            ("etc/", None),
            ("etc/a", Some(b"a")),
            ("etc/b", Some(b"b")),
            ("data/", None),
            ("data/old", Some(b"old")),
        ]);
        apply_layer(&lower[..], root.path()).unwrap();
        let upper = layer(&[
            ("etc/.wh.a", Some(b"")),
            ("data/", None),
            ("data/new", Some(b"new")),
            ("data/.wh..wh..opq", Some(b"")),
        ]);
        let (diff, _) = apply_layer(&upper[..], root.path()).unwrap();
        assert_eq!(diff, super::super::digest::of_bytes(&upper));
        assert!(!root.path().join("etc/a").exists());
        assert!(root.path().join("etc/b").exists());
        assert!(!root.path().join("data/old").exists());
        assert_eq!(fs::read(root.path().join("data/new")).unwrap(), b"new");
    }

    #[test]
    fn gzip_layers_are_read_and_paths_cannot_escape() {
        use std::io::Write;
        let root = tempfile::tempdir().unwrap();
        let plain = layer(&[("f", Some(b"x"))]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let (diff, _) = apply_layer(&gz.finish().unwrap()[..], root.path()).unwrap();
        assert_eq!(diff, super::super::digest::of_bytes(&plain));
        assert!(clean(Path::new("a/../../etc")).is_err());
    }
}
