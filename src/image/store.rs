//! The store on disk: import, list, look up, remove.

use std::{
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
};

use super::{
    ImageError, ImageName, ImageRecord, digest,
    import::{self, Source},
    unpack,
};

/// Images imported on this node, under one directory. Operations are plain
/// file operations (call them from a blocking task in async code); the
/// directory is the only state, so a CLI import and a running agent that
/// share a state dir see the same images.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// Removes a staging directory when dropped, whatever happened.
struct Staging(PathBuf);

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

impl ImageStore {
    /// Opens (creating it if needed) the store at `root`, and removes what
    /// imports that died mid-way left in its staging directory.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self, ImageError> {
        let root = root.into();
        for sub in ["images", "rootfs", "tmp"] {
            let dir = root.join(sub);
            fs::create_dir_all(&dir)
                .map_err(|e| ImageError::io(format!("failed to create {}", dir.display()), e))?;
        }
        let store = Self { root };
        store.clear_dead_staging();
        Ok(store)
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Staging directories are named `<pid>-<uuid>`; those of a process that
    /// is gone are leftovers.
    fn clear_dead_staging(&self) {
        let Ok(entries) = fs::read_dir(self.root.join("tmp")) else {
            return;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let alive = name
                .split_once('-')
                .and_then(|(pid, _)| pid.parse::<i32>().ok())
                .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
            if !alive {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }

    fn staging(&self, what: &str) -> Result<Staging, ImageError> {
        let dir = self.root.join("tmp").join(format!(
            "{}-{what}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ));
        fs::create_dir_all(&dir)
            .map_err(|e| ImageError::io(format!("failed to create {}", dir.display()), e))?;
        Ok(Staging(dir))
    }

    /// Imports the image at `path`: an OCI image layout directory, or a
    /// tarball of one (oci-archive) or a docker archive, plain or gzip.
    /// `name` (`name:tag`) names the image, or picks one when the input holds
    /// several; without it the input's own name is used.
    pub fn import(&self, path: &Path, name: Option<&str>) -> Result<ImageRecord, ImageError> {
        if let Some(n) = name {
            ImageName::parse(n)?;
        }
        let meta = fs::metadata(path).map_err(|e| {
            ImageError::io(
                format!("failed to import {}: cannot read it", path.display()),
                e,
            )
        })?;
        let work = self.staging("import")?;
        let dir = if meta.is_dir() {
            path.to_path_buf()
        } else {
            let dest = work.0.join("input");
            extract(path, &dest)?;
            dest
        };
        let source = import::read(&dir, name, path)?;
        let name = match (name, &source.name) {
            (Some(n), _) => ImageName::parse(n)?,
            (None, Some(n)) => ImageName::parse(n)?,
            (None, None) => {
                return Err(ImageError::Format {
                    path: path.to_path_buf(),
                    reason: "the image carries no name: give one with --name NAME:TAG".into(),
                });
            }
        };
        self.install(name, source, &work)
    }

    fn install(
        &self,
        name: ImageName,
        source: Source,
        work: &Staging,
    ) -> Result<ImageRecord, ImageError> {
        let diff_ids: Vec<String> = source.layers.iter().map(|l| l.diff_id.clone()).collect();
        let chain_id = digest::of_bytes(diff_ids.join("\n").as_bytes());
        let hex = digest::sha256_hex(&chain_id).expect("made by of_bytes");
        let rootfs = self.root.join("rootfs").join(hex);
        if !rootfs.is_dir() {
            let staged = work.0.join("rootfs");
            fs::create_dir_all(&staged)
                .map_err(|e| ImageError::io("failed to create the staging rootfs", e))?;
            for layer in &source.layers {
                let file = fs::File::open(&layer.path).map_err(|e| {
                    ImageError::io(format!("failed to open {}", layer.path.display()), e)
                })?;
                let (actual, _) = unpack::apply_layer(file, &staged)
                    .map_err(|e| ImageError::io(format!("failed to unpack {}", layer.what), e))?;
                if actual != layer.diff_id {
                    return Err(ImageError::DigestMismatch {
                        what: format!("{} (uncompressed)", layer.what),
                        expected: layer.diff_id.clone(),
                        actual,
                    });
                }
            }
            if let Err(e) = fs::rename(&staged, &rootfs) {
                // Another import of the same layers won the race: use its tree.
                if !rootfs.is_dir() {
                    return Err(ImageError::io(
                        format!("failed to move the rootfs into {}", rootfs.display()),
                        e,
                    ));
                }
            }
        }
        let record = ImageRecord {
            name: name.to_string(),
            digest: source.digest,
            chain_id,
            layers: diff_ids,
            size: unpack::tree_size(&rootfs),
            config: source.config,
            imported_at: chrono::Utc::now(),
        };
        let json = serde_json::to_vec_pretty(&record).expect("records serialize");
        let tmp = work.0.join("record.json");
        fs::write(&tmp, json).map_err(|e| ImageError::io("failed to write the image record", e))?;
        let dest = self.record_path(&name);
        fs::rename(&tmp, &dest)
            .map_err(|e| ImageError::io(format!("failed to write {}", dest.display()), e))?;
        Ok(record)
    }

    fn record_path(&self, name: &ImageName) -> PathBuf {
        self.root
            .join("images")
            .join(format!("{}.json", name.file_stem()))
    }

    /// The image named `name` (`name[:tag]`).
    pub fn get(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let parsed = ImageName::parse(name)?;
        let path = self.record_path(&parsed);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| ImageError::Parse {
                what: format!("the record of {parsed}"),
                path,
                reason: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(ImageError::NotFound(parsed.to_string()))
            }
            Err(e) => Err(ImageError::io(
                format!("failed to read {}", path.display()),
                e,
            )),
        }
    }

    /// Every image, by name.
    pub fn list(&self) -> Result<Vec<ImageRecord>, ImageError> {
        let dir = self.root.join("images");
        let entries = fs::read_dir(&dir)
            .map_err(|e| ImageError::io(format!("failed to list {}", dir.display()), e))?;
        let mut out = Vec::new();
        for e in entries.flatten() {
            if e.path().extension().is_some_and(|x| x == "json")
                && let Ok(bytes) = fs::read(e.path())
                && let Ok(record) = serde_json::from_slice::<ImageRecord>(&bytes)
            {
                out.push(record);
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// Removes the image `name`, and its unpacked tree when no other image
    /// uses it. Returns the removed record.
    pub fn remove(&self, name: &str) -> Result<ImageRecord, ImageError> {
        let record = self.get(name)?;
        let parsed = ImageName::parse(name)?;
        let path = self.record_path(&parsed);
        fs::remove_file(&path)
            .map_err(|e| ImageError::io(format!("failed to remove {}", path.display()), e))?;
        let shared = self.list()?.iter().any(|r| r.chain_id == record.chain_id);
        if !shared {
            let tree = self.rootfs(&record);
            // Move it aside first so a half-deleted tree is never in place.
            let trash = self.root.join("tmp").join(format!(
                "{}-rm-{}",
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ));
            if fs::rename(&tree, &trash).is_ok() {
                let _ = fs::remove_dir_all(&trash);
            }
        }
        Ok(record)
    }

    /// Where the unpacked root filesystem of `record` is.
    pub fn rootfs(&self, record: &ImageRecord) -> PathBuf {
        let hex = digest::sha256_hex(&record.chain_id).unwrap_or("invalid");
        self.root.join("rootfs").join(hex)
    }
}

/// Unpacks the tarball `path` (plain or gzip) into `dest`.
fn extract(path: &Path, dest: &Path) -> Result<(), ImageError> {
    let corrupt = |source| ImageError::Corrupt {
        path: path.to_path_buf(),
        source,
    };
    let file = fs::File::open(path)
        .map_err(|e| ImageError::io(format!("failed to open {}", path.display()), e))?;
    let mut input = BufReader::new(file);
    let head = input.fill_buf().map_err(corrupt)?;
    let gzip = head.starts_with(&[0x1f, 0x8b]);
    if head.is_empty() {
        return Err(corrupt(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the file is empty",
        )));
    }
    let reader: Box<dyn std::io::Read> = if gzip {
        Box::new(flate2::read::GzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(false);
    archive.set_unpack_xattrs(false);
    fs::create_dir_all(dest).map_err(|e| ImageError::io("failed to create the staging dir", e))?;
    // Read every entry: a tar reader that hits garbage or an early end says so.
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        entry.unpack_in(dest).map_err(corrupt)?;
    }
    Ok(())
}
