//! A local image store: images imported from files, never pulled.
//!
//! No registry is reachable from the machines arbor runs on, and users of an
//! embedded agent often have none either, so images come in as files:
//! `arbor image import PATH` takes an OCI image layout directory, or a
//! tarball of one (`skopeo copy ... oci-archive:`), or a docker archive
//! (`docker save`). Every blob is checked against its digest before it is
//! used, the layers are applied in order (whiteouts included) into one
//! read-only root filesystem kept under the image's chain id (the digest of
//! its layers' uncompressed digests, so two images sharing all their layers
//! share the unpacked tree), and the image config that matters to a
//! container (entrypoint, cmd, env, workdir, user) is recorded beside it.
//!
//! Everything is staged in `tmp/` and moved into place with a rename, the
//! record last: an import that fails at any step leaves nothing behind, and
//! a crash mid-import leaves only `tmp/`, which the next open clears.
//!
//! Layout under the store's directory (`<state-dir>/images`):
//! ```text
//! images/<name>.json    one record per image name (name:tag)
//! rootfs/<chain id>/    the unpacked root filesystem
//! tmp/                  staging
//! ```

pub mod build;
mod digest;
mod import;
mod store;
mod unpack;

use std::{collections::BTreeMap, fmt, path::PathBuf};

use serde::{Deserialize, Serialize};

pub use build::{pack_layout, write_tarball};
pub use store::ImageStore;

/// Lower-case hex sha256 of `bytes`.
pub fn digest_hex(bytes: &[u8]) -> String {
    digest::of_bytes(bytes)["sha256:".len()..].to_owned()
}

/// What a container needs from an image's config.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ImageConfig {
    /// The program and its first arguments.
    pub entrypoint: Vec<String>,
    /// Arguments after the entrypoint (the command when there is none).
    pub cmd: Vec<String>,
    /// `KEY=VALUE` pairs.
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `user[:group]`, by name or number.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

impl ImageConfig {
    /// entrypoint + cmd: what runs when the spec gives no command.
    pub fn argv(&self) -> Vec<String> {
        self.entrypoint
            .iter()
            .chain(self.cmd.iter())
            .cloned()
            .collect()
    }

    /// The environment as a map (a later duplicate wins).
    pub fn env_map(&self) -> BTreeMap<String, String> {
        self.env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }
}

/// An imported image, as `arbor image ls` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// `name:tag`.
    pub name: String,
    /// Digest of the manifest (OCI) or of the config (docker archive).
    pub digest: String,
    /// Digest of the layer chain; names the unpacked root filesystem.
    pub chain_id: String,
    /// Uncompressed digests of the layers, bottom first.
    pub layers: Vec<String>,
    /// Bytes of the unpacked root filesystem.
    pub size: u64,
    /// The config a container starts from.
    pub config: ImageConfig,
    /// When it was imported.
    pub imported_at: chrono::DateTime<chrono::Utc>,
}

/// A failed image operation; each names the file, image or digest involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ImageError {
    /// The image is not in the store.
    #[error("image not found locally: {0} (import it with arbor image import)")]
    NotFound(String),
    /// An image name that is not `name[:tag]`.
    #[error("invalid image name {name:?}: {reason}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The input is neither an OCI layout nor a docker archive.
    #[error("failed to import {path}: {reason}")]
    Format {
        /// The file or directory imported.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A tarball could not be read (truncated, corrupt, not a tar).
    #[error("failed to read {path}: corrupt or truncated archive")]
    Corrupt {
        /// The archive.
        path: PathBuf,
        /// The error the reader gave.
        #[source]
        source: std::io::Error,
    },
    /// A blob's content does not match the digest that names it.
    #[error("digest mismatch for {what}: expected {expected}, found {actual}")]
    DigestMismatch {
        /// Which blob (`layer 2`, `config`, `manifest`).
        what: String,
        /// The digest it should have.
        expected: String,
        /// The digest it has.
        actual: String,
    },
    /// A blob named by the manifest is not in the input.
    #[error("missing {what}: {path} does not exist")]
    MissingBlob {
        /// Which blob.
        what: String,
        /// Where it should be.
        path: PathBuf,
    },
    /// A JSON document could not be parsed.
    #[error("failed to parse {what} ({path}): {reason}")]
    Parse {
        /// Which document.
        what: String,
        /// Its file.
        path: PathBuf,
        /// The parser's message.
        reason: String,
    },
    /// A file operation failed.
    #[error("{context}")]
    Io {
        /// What was being done.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

impl ImageError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Self::Io {
            context: context.into(),
            source,
        }
    }
}

/// A parsed `name[:tag]` (the tag defaults to `latest`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ImageName {
    /// Repository part, e.g. `busybox` or `example.org/team/app`.
    pub repository: String,
    /// Tag part.
    pub tag: String,
}

impl ImageName {
    /// Parses `name[:tag]`; a digest reference (`@sha256:`) is refused.
    pub fn parse(name: &str) -> Result<Self, ImageError> {
        let bad = |reason| ImageError::InvalidName {
            name: name.to_owned(),
            reason,
        };
        if name.trim().is_empty() {
            return Err(bad("must not be empty"));
        }
        if name.contains('@') {
            return Err(bad("digest references are not supported: use name:tag"));
        }
        if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("must not contain whitespace"));
        }
        // A colon after the last slash separates the tag (a colon before it
        // is a registry port).
        let last_slash = name.rfind('/').map_or(0, |i| i + 1);
        let (repository, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (&name[..last_slash + i], &name[last_slash + i + 1..]),
            None => (name, "latest"),
        };
        if repository.is_empty() || repository.ends_with('/') {
            return Err(bad("the repository part is empty"));
        }
        if tag.is_empty() {
            return Err(bad("the tag after ':' is empty"));
        }
        if repository
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..")
        {
            return Err(bad("path components must not be empty, '.' or '..'"));
        }
        Ok(Self {
            repository: repository.to_owned(),
            tag: tag.to_owned(),
        })
    }

    /// The file name of its record: the name with `/` escaped.
    pub(crate) fn file_stem(&self) -> String {
        self.to_string()
            .chars()
            .map(|c| match c {
                '/' => '+',
                c => c,
            })
            .collect()
    }
}

impl fmt::Display for ImageName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.repository, self.tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_with_a_default_tag_and_a_registry_port() {
        let n = ImageName::parse("busybox").unwrap();
        assert_eq!(n.to_string(), "busybox:latest");
        let n = ImageName::parse("localhost:5000/team/app:v1").unwrap();
        assert_eq!(n.repository, "localhost:5000/team/app");
        assert_eq!(n.tag, "v1");
        assert_eq!(n.file_stem(), "localhost:5000+team+app:v1");
        for bad in ["", "a:", "a@sha256:00", "../x:1", "a b"] {
            assert!(ImageName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
