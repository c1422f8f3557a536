//! Building images from a directory: the project's own way to make a test
//! image without a registry or a download.
//!
//! [`busybox_rootfs`] lays out a root filesystem from a static busybox
//! (Debian's `busybox-static`): `/bin/busybox` and one link per applet.
//! [`pack_layout`] packs any directory as a one-layer OCI image layout, and
//! [`write_tarball`] turns a layout into an oci-archive tarball, which is
//! what `arbor image import` takes.

use std::{
    fs, io,
    path::{Path, PathBuf},
    process::Command,
    str::FromStr,
};

use oci_spec::image::{
    ConfigBuilder, Descriptor, Digest, ImageConfigurationBuilder, ImageIndexBuilder,
    ImageManifestBuilder, MediaType, RootFsBuilder,
};

use super::{ImageConfig, ImageError, ImageName, digest, import::REF_NAME};

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> ImageError {
    let context = context.into();
    move |e| ImageError::io(context, e)
}

fn oci_err(e: oci_spec::OciSpecError) -> ImageError {
    ImageError::io(
        "failed to build an OCI document",
        io::Error::other(e.to_string()),
    )
}

/// Makes `dir` a root filesystem holding `busybox` as `/bin/busybox`, one
/// symlink per applet it lists (`busybox --list`), and the few directories a
/// container expects (`/tmp`, `/proc`, `/dev`, `/sys`, `/etc`).
pub fn busybox_rootfs(busybox: &Path, dir: &Path) -> Result<(), ImageError> {
    let bin = dir.join("bin");
    for sub in ["bin", "tmp", "proc", "dev", "sys", "etc", "root"] {
        fs::create_dir_all(dir.join(sub)).map_err(io_err(format!("failed to create {sub}")))?;
    }
    fs::copy(busybox, bin.join("busybox"))
        .map_err(io_err(format!("failed to copy {}", busybox.display())))?;
    let out = Command::new(busybox)
        .arg("--list")
        .output()
        .map_err(io_err(format!(
            "failed to run {} --list",
            busybox.display()
        )))?;
    for applet in String::from_utf8_lossy(&out.stdout).lines() {
        let applet = applet.trim();
        if applet.is_empty() || applet.contains('/') || applet == "busybox" {
            continue;
        }
        let link = bin.join(applet);
        if !link.exists() {
            std::os::unix::fs::symlink("busybox", &link)
                .map_err(io_err(format!("failed to link {applet}")))?;
        }
    }
    fs::write(
        dir.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n",
    )
    .map_err(io_err("failed to write etc/passwd"))?;
    fs::write(dir.join("etc/group"), "root:x:0:\nnogroup:x:65534:\n")
        .map_err(io_err("failed to write etc/group"))?;
    Ok(())
}

/// Writes `bytes` as a blob of the layout at `out`; returns its descriptor.
fn put_blob(out: &Path, media_type: MediaType, bytes: &[u8]) -> Result<Descriptor, ImageError> {
    let digest = digest::of_bytes(bytes);
    let hex = digest::sha256_hex(&digest).expect("made by of_bytes");
    fs::write(out.join("blobs/sha256").join(hex), bytes)
        .map_err(io_err("failed to write a blob"))?;
    let digest = Digest::from_str(&digest).map_err(oci_err)?;
    Ok(Descriptor::new(media_type, bytes.len() as u64, digest))
}

/// Packs `rootfs` as a one-layer OCI image layout at `out` (created), named
/// `name` (`name:tag`, recorded as the manifest's ref name) with `config`.
pub fn pack_layout(
    rootfs: &Path,
    name: &str,
    config: &ImageConfig,
    out: &Path,
) -> Result<PathBuf, ImageError> {
    let name = ImageName::parse(name)?;
    fs::create_dir_all(out.join("blobs/sha256")).map_err(io_err("failed to create the layout"))?;
    fs::write(out.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#)
        .map_err(io_err("failed to write oci-layout"))?;

    let mut layer = tar::Builder::new(Vec::new());
    layer.follow_symlinks(false);
    layer
        .append_dir_all(".", rootfs)
        .map_err(io_err(format!("failed to pack {}", rootfs.display())))?;
    let layer = layer
        .into_inner()
        .map_err(io_err("failed to pack the layer"))?;
    let layer_desc = put_blob(out, MediaType::ImageLayer, &layer)?;

    let mut c = ConfigBuilder::default();
    if !config.entrypoint.is_empty() {
        c = c.entrypoint(config.entrypoint.clone());
    }
    if !config.cmd.is_empty() {
        c = c.cmd(config.cmd.clone());
    }
    if !config.env.is_empty() {
        c = c.env(config.env.clone());
    }
    if let Some(w) = &config.workdir {
        c = c.working_dir(w.clone());
    }
    if let Some(u) = &config.user {
        c = c.user(u.clone());
    }
    let image_config = ImageConfigurationBuilder::default()
        .architecture(std::env::consts::ARCH.replace("x86_64", "amd64").as_str())
        .os("linux")
        .config(c.build().map_err(oci_err)?)
        .rootfs(
            RootFsBuilder::default()
                .typ("layers")
                .diff_ids(vec![layer_desc.digest().to_string()])
                .build()
                .map_err(oci_err)?,
        )
        .build()
        .map_err(oci_err)?;
    let config_json = serde_json::to_vec(&image_config).expect("configs serialize");
    let config_desc = put_blob(out, MediaType::ImageConfig, &config_json)?;

    let manifest = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config_desc)
        .layers(vec![layer_desc])
        .build()
        .map_err(oci_err)?;
    let manifest_json = serde_json::to_vec(&manifest).expect("manifests serialize");
    let mut manifest_desc = put_blob(out, MediaType::ImageManifest, &manifest_json)?;
    manifest_desc.set_annotations(Some(
        [(REF_NAME.to_owned(), name.to_string())]
            .into_iter()
            .collect(),
    ));
    let index = ImageIndexBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageIndex)
        .manifests(vec![manifest_desc])
        .build()
        .map_err(oci_err)?;
    fs::write(
        out.join("index.json"),
        serde_json::to_vec(&index).expect("indexes serialize"),
    )
    .map_err(io_err("failed to write index.json"))?;
    Ok(out.to_path_buf())
}

/// Writes the directory `layout` as an uncompressed tarball at `dest` (an
/// oci-archive when `layout` is an OCI image layout).
pub fn write_tarball(layout: &Path, dest: &Path) -> Result<(), ImageError> {
    let file =
        fs::File::create(dest).map_err(io_err(format!("failed to create {}", dest.display())))?;
    let mut b = tar::Builder::new(file);
    b.follow_symlinks(false);
    b.append_dir_all(".", layout)
        .map_err(io_err(format!("failed to pack {}", layout.display())))?;
    b.into_inner()
        .and_then(|f| f.sync_all())
        .map_err(io_err(format!("failed to write {}", dest.display())))
}
