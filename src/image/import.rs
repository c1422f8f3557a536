//! Reading an import's input: an OCI image layout (directory) or a docker
//! archive (`docker save`), already unpacked into a directory.
//!
//! The result is a [`Source`]: which layer files to apply, in order, with
//! the digests each must have, and the config. Every blob the manifest names
//! is checked here (present, right digest) before anything is unpacked; the
//! uncompressed digests (diff ids) are checked while the layers are applied.

use std::{
    collections::HashMap,
    fs,
    path::{Path, PathBuf},
};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use serde::Deserialize;

use super::{ImageConfig, ImageError, digest};

/// The annotation that names an image in an OCI layout's index.
pub(crate) const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// An image found in the input, verified up to its layers' content.
#[derive(Debug)]
pub(crate) struct Source {
    /// The name the input gives it, if any.
    pub name: Option<String>,
    /// Manifest digest (OCI) or config digest (docker).
    pub digest: String,
    pub config: ImageConfig,
    pub layers: Vec<LayerSource>,
}

/// One layer to apply.
#[derive(Debug)]
pub(crate) struct LayerSource {
    pub path: PathBuf,
    /// The digest its uncompressed tar must have.
    pub diff_id: String,
    /// `layer N` for messages.
    pub what: String,
}

/// Reads the image in `dir` (the input's top directory). `wanted` picks one
/// image when the input holds several; `shown` is the path named in errors.
pub(crate) fn read(dir: &Path, wanted: Option<&str>, shown: &Path) -> Result<Source, ImageError> {
    if dir.join("index.json").is_file() {
        read_oci(dir, wanted, shown)
    } else if dir.join("manifest.json").is_file() {
        read_docker(dir, wanted, shown)
    } else {
        Err(ImageError::Format {
            path: shown.to_path_buf(),
            reason: "neither an OCI image layout (no index.json) nor a docker archive (no manifest.json)".into(),
        })
    }
}

fn parse_error(what: &str, path: &Path, e: impl std::fmt::Display) -> ImageError {
    ImageError::Parse {
        what: what.to_owned(),
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

/// The path of a blob in an OCI layout, after checking its digest's form.
fn blob_path(dir: &Path, d: &Descriptor, what: &str, shown: &Path) -> Result<PathBuf, ImageError> {
    let digest = d.digest().to_string();
    let Some(hex) = digest::sha256_hex(&digest) else {
        return Err(ImageError::Format {
            path: shown.to_path_buf(),
            reason: format!("{what} has digest {digest}: only sha256 digests are supported"),
        });
    };
    Ok(dir.join("blobs").join("sha256").join(hex))
}

/// Checks that the blob `d` names exists and has its digest; returns its path.
fn verified_blob(
    dir: &Path,
    d: &Descriptor,
    what: &str,
    shown: &Path,
) -> Result<PathBuf, ImageError> {
    let path = blob_path(dir, d, what, shown)?;
    check_file(&path, d.digest().as_ref(), what)?;
    Ok(path)
}

fn check_file(path: &Path, expected: &str, what: &str) -> Result<(), ImageError> {
    if !path.is_file() {
        return Err(ImageError::MissingBlob {
            what: what.to_owned(),
            path: path.to_path_buf(),
        });
    }
    let (actual, _) = digest::of_file(path)
        .map_err(|e| ImageError::io(format!("failed to read {what} at {}", path.display()), e))?;
    if actual != expected {
        return Err(ImageError::DigestMismatch {
            what: what.to_owned(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(())
}

fn read_oci(dir: &Path, wanted: Option<&str>, shown: &Path) -> Result<Source, ImageError> {
    let index_path = dir.join("index.json");
    let index = ImageIndex::from_file(&index_path)
        .map_err(|e| parse_error("index.json", &index_path, e))?;
    let mut manifests: Vec<Descriptor> = Vec::new();
    for d in index.manifests() {
        if d.media_type().to_string().contains("index") {
            // A nested index (multi-platform image): list its manifests.
            let path = verified_blob(dir, d, "nested index", shown)?;
            let nested =
                ImageIndex::from_file(&path).map_err(|e| parse_error("nested index", &path, e))?;
            let name = ref_name(d).map(str::to_owned);
            for m in nested.manifests() {
                let platform_ok = m.platform().as_ref().is_none_or(|p| {
                    p.architecture().to_string()
                        == std::env::consts::ARCH.replace("x86_64", "amd64")
                        && p.os().to_string() == "linux"
                });
                if platform_ok {
                    let mut m = m.clone();
                    if let Some(name) = &name {
                        let mut ann = m.annotations().clone().unwrap_or_default();
                        ann.entry(REF_NAME.to_owned())
                            .or_insert_with(|| name.clone());
                        m.set_annotations(Some(ann));
                    }
                    manifests.push(m);
                }
            }
        } else {
            manifests.push(d.clone());
        }
    }
    let chosen = match (wanted, manifests.len()) {
        (_, 0) => {
            return Err(ImageError::Format {
                path: shown.to_path_buf(),
                reason: "index.json lists no image manifest (for this platform)".into(),
            });
        }
        (Some(w), _) if manifests.iter().any(|m| names_match(ref_name(m), w)) => manifests
            .into_iter()
            .find(|m| names_match(ref_name(m), w))
            .expect("checked above"),
        (_, 1) => manifests.pop().expect("one manifest"),
        (_, n) => {
            let names: Vec<&str> = manifests.iter().filter_map(ref_name).collect();
            return Err(ImageError::Format {
                path: shown.to_path_buf(),
                reason: format!(
                    "index.json lists {n} images ({}): name the one to import with --name",
                    names.join(", ")
                ),
            });
        }
    };
    let manifest_path = verified_blob(dir, &chosen, "manifest", shown)?;
    let manifest = ImageManifest::from_file(&manifest_path)
        .map_err(|e| parse_error("manifest", &manifest_path, e))?;
    let config_path = verified_blob(dir, manifest.config(), "config", shown)?;
    let config = ImageConfiguration::from_file(&config_path)
        .map_err(|e| parse_error("config", &config_path, e))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != manifest.layers().len() {
        return Err(ImageError::Format {
            path: shown.to_path_buf(),
            reason: format!(
                "the manifest lists {} layers but the config's rootfs.diff_ids has {}",
                manifest.layers().len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::new();
    for (i, (d, diff_id)) in manifest.layers().iter().zip(diff_ids).enumerate() {
        let what = format!("layer {} ({})", i + 1, d.digest());
        let path = verified_blob(dir, d, &what, shown)?;
        layers.push(LayerSource {
            path,
            diff_id: diff_id.clone(),
            what,
        });
    }
    Ok(Source {
        name: ref_name(&chosen).map(str::to_owned),
        digest: chosen.digest().to_string(),
        config: image_config(&config),
        layers,
    })
}

fn ref_name(d: &Descriptor) -> Option<&str> {
    d.annotations()
        .as_ref()
        .and_then(|a| a.get(REF_NAME))
        .map(String::as_str)
}

/// A ref name matches the wanted `name:tag` in full, or by its tag alone
/// (skopeo and buildah record only the tag).
fn names_match(found: Option<&str>, wanted: &str) -> bool {
    let Some(found) = found else { return false };
    found == wanted
        || super::ImageName::parse(wanted).is_ok_and(|w| w.tag == found || w.to_string() == found)
}

fn image_config(config: &ImageConfiguration) -> ImageConfig {
    let Some(c) = config.config() else {
        return ImageConfig::default();
    };
    ImageConfig {
        entrypoint: c.entrypoint().clone().unwrap_or_default(),
        cmd: c.cmd().clone().unwrap_or_default(),
        env: c.env().clone().unwrap_or_default(),
        workdir: c.working_dir().clone().filter(|w| !w.is_empty()),
        user: c.user().clone().filter(|u| !u.is_empty()),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// A path inside the archive, refusing escapes.
fn inside(dir: &Path, rel: &str, what: &str, shown: &Path) -> Result<PathBuf, ImageError> {
    let p = Path::new(rel);
    if p.is_absolute()
        || p.components()
            .any(|c| matches!(c, std::path::Component::ParentDir))
    {
        return Err(ImageError::Format {
            path: shown.to_path_buf(),
            reason: format!("{what} path {rel:?} points outside the archive"),
        });
    }
    Ok(dir.join(p))
}

/// The sha256 hex a blob's file name carries (`<hex>.json`, `blobs/sha256/<hex>`).
fn hex_in_name(path: &Path) -> Option<String> {
    let stem = path.file_name()?.to_str()?;
    let stem = stem.strip_suffix(".json").unwrap_or(stem);
    let digest = format!("sha256:{stem}");
    digest::sha256_hex(&digest).is_some().then_some(digest)
}

fn read_docker(dir: &Path, wanted: Option<&str>, shown: &Path) -> Result<Source, ImageError> {
    let manifest_path = dir.join("manifest.json");
    let text = fs::read(&manifest_path)
        .map_err(|e| ImageError::io(format!("failed to read {}", manifest_path.display()), e))?;
    let entries: Vec<DockerManifest> = serde_json::from_slice(&text)
        .map_err(|e| parse_error("manifest.json", &manifest_path, e))?;
    let matches = |m: &DockerManifest| {
        wanted.is_some_and(|w| {
            m.repo_tags
                .iter()
                .flatten()
                .any(|t| names_match(Some(t), w))
        })
    };
    let entry = match entries.iter().position(matches) {
        Some(i) => &entries[i],
        None if entries.len() == 1 => &entries[0],
        None if entries.is_empty() => {
            return Err(ImageError::Format {
                path: shown.to_path_buf(),
                reason: "manifest.json lists no image".into(),
            });
        }
        None => {
            return Err(ImageError::Format {
                path: shown.to_path_buf(),
                reason: format!(
                    "manifest.json lists {} images: name the one to import with --name",
                    entries.len()
                ),
            });
        }
    };
    let config_path = inside(dir, &entry.config, "config", shown)?;
    let digest = match hex_in_name(&config_path) {
        Some(d) => {
            check_file(&config_path, &d, "config")?;
            d
        }
        None => {
            if !config_path.is_file() {
                return Err(ImageError::MissingBlob {
                    what: "config".into(),
                    path: config_path,
                });
            }
            digest::of_file(&config_path)
                .map_err(|e| ImageError::io("failed to read the config", e))?
                .0
        }
    };
    let config = ImageConfiguration::from_file(&config_path)
        .map_err(|e| parse_error("config", &config_path, e))?;
    let diff_ids = config.rootfs().diff_ids();
    if diff_ids.len() != entry.layers.len() {
        return Err(ImageError::Format {
            path: shown.to_path_buf(),
            reason: format!(
                "manifest.json lists {} layers but the config's rootfs.diff_ids has {}",
                entry.layers.len(),
                diff_ids.len()
            ),
        });
    }
    let mut layers = Vec::new();
    let mut seen: HashMap<PathBuf, ()> = HashMap::new();
    for (i, (rel, diff_id)) in entry.layers.iter().zip(diff_ids).enumerate() {
        let what = format!("layer {} ({rel})", i + 1);
        let path = inside(dir, rel, &what, shown)?;
        if !path.is_file() {
            return Err(ImageError::MissingBlob { what, path });
        }
        // Newer archives name layers by their blob digest: check it now.
        if let Some(d) = hex_in_name(&path)
            && seen.insert(path.clone(), ()).is_none()
            && d != *diff_id
        {
            check_file(&path, &d, &what)?;
        }
        layers.push(LayerSource {
            path,
            diff_id: diff_id.clone(),
            what,
        });
    }
    Ok(Source {
        name: entry.repo_tags.as_ref().and_then(|t| t.first()).cloned(),
        digest,
        config: image_config(&config),
        layers,
    })
}
