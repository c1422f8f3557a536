//! The local image store: import (layout dir, oci-archive, docker archive),
//! list, remove, and every bad input leaving nothing half-unpacked. No root
//! and no runc needed.

use std::{fs, path::Path};

use arbor::image::{ImageConfig, ImageError, ImageStore, pack_layout, write_tarball};

fn rootfs(dir: &Path) {
    fs::create_dir_all(dir.join("bin")).unwrap();
    fs::create_dir_all(dir.join("etc")).unwrap();
    fs::write(dir.join("bin/hello"), "#!/bin/sh\necho hello\n").unwrap();
    fs::write(dir.join("etc/motd"), "hi\n").unwrap();
    std::os::unix::fs::symlink("hello", dir.join("bin/hi")).unwrap();
}

fn config() -> ImageConfig {
    ImageConfig {
        entrypoint: vec!["/bin/sh".into()],
        cmd: vec!["-c".into(), "echo hi".into()],
        env: vec!["PATH=/bin".into()],
        workdir: Some("/".into()),
        user: None,
    }
}

/// A layout directory named `name` built in `tmp`.
fn layout(tmp: &Path, name: &str) -> std::path::PathBuf {
    let root = tmp.join("rootfs");
    if !root.exists() {
        rootfs(&root);
    }
    pack_layout(&root, name, &config(), &tmp.join(format!("layout-{name}"))).unwrap()
}

/// Nothing of a failed import is left: no record, no tree, no staging.
fn assert_clean(store: &ImageStore) {
    assert!(store.list().unwrap().is_empty());
    for sub in ["rootfs", "tmp", "images"] {
        let left: Vec<_> = fs::read_dir(store.root().join(sub)).unwrap().collect();
        assert!(left.is_empty(), "{sub} holds {left:?}");
    }
}

fn blob_of(layout: &Path, media: &str) -> std::path::PathBuf {
    // Finds the blob of the given kind by reading the manifest.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(layout.join("index.json")).unwrap()).unwrap();
    let manifest_digest = index["manifests"][0]["digest"].as_str().unwrap();
    let blob = |d: &str| {
        layout
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"))
    };
    if media == "manifest" {
        return blob(manifest_digest);
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&fs::read(blob(manifest_digest)).unwrap()).unwrap();
    match media {
        "config" => blob(manifest["config"]["digest"].as_str().unwrap()),
        _ => blob(manifest["layers"][0]["digest"].as_str().unwrap()),
    }
}

#[test]
fn an_oci_archive_is_imported_listed_and_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let dir = layout(tmp.path(), "hello:1");
    let tarball = tmp.path().join("hello.tar");
    write_tarball(&dir, &tarball).unwrap();

    let record = store.import(&tarball, None).unwrap();
    assert_eq!(record.name, "hello:1");
    assert_eq!(record.config, config());
    let tree = store.rootfs(&record);
    assert_eq!(fs::read_to_string(tree.join("etc/motd")).unwrap(), "hi\n");
    assert_eq!(
        fs::read_link(tree.join("bin/hi")).unwrap(),
        Path::new("hello")
    );

    let listed = store.list().unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(store.get("hello:1").unwrap(), record);

    store.remove("hello:1").unwrap();
    assert_clean(&store);
}

#[test]
fn a_layout_directory_imports_under_a_given_name_and_shares_its_tree() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let dir = layout(tmp.path(), "hello:1");
    let a = store.import(&dir, None).unwrap();
    let b = store.import(&dir, Some("hello:2")).unwrap();
    assert_eq!(a.chain_id, b.chain_id);
    store.remove("hello:1").unwrap();
    assert!(
        store.rootfs(&b).is_dir(),
        "the tree is still used by hello:2"
    );
    store.remove("hello:2").unwrap();
    assert_clean(&store);
}

#[test]
fn a_docker_archive_is_imported_with_its_repo_tag() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let dir = layout(tmp.path(), "hello:1");
    // Rebuild the same image in `docker save` form.
    let docker = tmp.path().join("docker");
    fs::create_dir_all(docker.join("abc")).unwrap();
    let config_blob = blob_of(&dir, "config");
    let config_name = format!(
        "{}.json",
        config_blob.file_name().unwrap().to_string_lossy()
    );
    fs::copy(&config_blob, docker.join(&config_name)).unwrap();
    fs::copy(blob_of(&dir, "layer"), docker.join("abc/layer.tar")).unwrap();
    fs::write(
        docker.join("manifest.json"),
        serde_json::json!([{"Config": config_name, "RepoTags": ["docker/hello:7"], "Layers": ["abc/layer.tar"]}])
            .to_string(),
    )
    .unwrap();
    let tarball = tmp.path().join("docker.tar");
    write_tarball(&docker, &tarball).unwrap();
    let record = store.import(&tarball, None).unwrap();
    assert_eq!(record.name, "docker/hello:7");
    assert!(store.rootfs(&record).join("bin/hello").is_file());
    assert_eq!(
        store.get("docker/hello:7").unwrap().config.argv(),
        config().argv()
    );
}

#[test]
fn a_corrupt_tarball_is_refused_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let dir = layout(tmp.path(), "hello:1");
    let tarball = tmp.path().join("hello.tar");
    write_tarball(&dir, &tarball).unwrap();
    let mut bytes = fs::read(&tarball).unwrap();
    // Garble a header in the middle.
    for b in &mut bytes[512..1024] {
        *b ^= 0x5a;
    }
    let corrupt = tmp.path().join("corrupt.tar");
    fs::write(&corrupt, &bytes).unwrap();
    let err = store.import(&corrupt, None).unwrap_err();
    assert!(
        matches!(err, ImageError::Corrupt { .. } | ImageError::Format { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("corrupt.tar"), "{err}");
    assert_clean(&store);

    let junk = tmp.path().join("junk.tar");
    fs::write(&junk, b"this is not a tarball at all").unwrap();
    let err = store.import(&junk, None).unwrap_err();
    assert!(err.to_string().contains("junk.tar"), "{err}");
    assert_clean(&store);
}

#[test]
fn a_layer_whose_digest_does_not_match_is_refused_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let dir = layout(tmp.path(), "hello:1");
    let layer = blob_of(&dir, "layer");
    let mut bytes = fs::read(&layer).unwrap();
    let last = bytes.len() - 2000;
    bytes[last] ^= 1;
    fs::write(&layer, bytes).unwrap();
    let err = store.import(&dir, None).unwrap_err();
    match &err {
        ImageError::DigestMismatch { what, expected, .. } => {
            assert!(what.starts_with("layer 1"), "{err}");
            assert!(layer.ends_with(expected.trim_start_matches("sha256:")));
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(
        err.to_string().contains("digest mismatch for layer 1"),
        "{err}"
    );
    assert_clean(&store);
}

#[test]
fn a_missing_layer_is_named_and_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let dir = layout(tmp.path(), "hello:1");
    let layer = blob_of(&dir, "layer");
    fs::remove_file(&layer).unwrap();
    let tarball = tmp.path().join("missing.tar");
    write_tarball(&dir, &tarball).unwrap();
    let err = store.import(&tarball, None).unwrap_err();
    assert!(matches!(err, ImageError::MissingBlob { .. }), "{err}");
    assert!(err.to_string().starts_with("missing layer 1"), "{err}");
    assert_clean(&store);
}

#[test]
fn an_unknown_image_name_says_how_to_import_it() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let err = store.get("nope:1").unwrap_err();
    assert_eq!(
        err.to_string(),
        "image not found locally: nope:1 (import it with arbor image import)"
    );
    assert!(
        store
            .remove("nope")
            .unwrap_err()
            .to_string()
            .contains("nope:latest")
    );
    let err = store.get("bad name").unwrap_err();
    assert!(err.to_string().contains("\"bad name\""), "{err}");
}

#[test]
fn an_input_that_is_no_image_is_refused_with_its_path() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(tmp.path().join("store")).unwrap();
    let empty = tmp.path().join("empty");
    fs::create_dir(&empty).unwrap();
    let err = store.import(&empty, None).unwrap_err();
    assert!(
        err.to_string().contains("neither an OCI image layout"),
        "{err}"
    );
    let err = store.import(&tmp.path().join("absent"), None).unwrap_err();
    assert!(err.to_string().contains("absent"), "{err}");
    assert_clean(&store);
}
