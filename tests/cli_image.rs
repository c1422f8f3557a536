//! `arbor image import|ls|rm` on a state dir: no agent, no root.

mod cli_support;

use std::fs;

use arbor::image::{ImageConfig, pack_layout, write_tarball};
use cli_support::arbor_out;

#[test]
fn an_image_is_imported_listed_and_removed_from_the_command_line() {
    let tmp = tempfile::tempdir().unwrap();
    let rootfs = tmp.path().join("rootfs");
    fs::create_dir_all(rootfs.join("bin")).unwrap();
    fs::write(rootfs.join("bin/tool"), "x").unwrap();
    let config = ImageConfig {
        cmd: vec!["/bin/tool".into(), "--serve".into()],
        ..ImageConfig::default()
    };
    let layout = pack_layout(&rootfs, "tool:1", &config, &tmp.path().join("layout")).unwrap();
    let tarball = tmp.path().join("tool.tar");
    write_tarball(&layout, &tarball).unwrap();
    let state = tmp.path().join("state");
    let state_arg = state.display().to_string();

    let out = arbor_out([
        "image",
        "import",
        tarball.to_str().unwrap(),
        "--state-dir",
        &state_arg,
    ])
    .expect(0);
    assert!(
        out.stdout.starts_with("imported tool:1 (sha256:"),
        "{out:#?}"
    );
    let out = arbor_out(["image", "ls", "--state-dir", &state_arg]).expect(0);
    assert!(
        out.stdout.lines().nth(1).unwrap().starts_with("tool:1 "),
        "{out:#?}"
    );
    assert!(out.stdout.contains("/bin/tool --serve"), "{out:#?}");
    let out = arbor_out(["image", "ls", "--json", "--state-dir", &state_arg]).expect(0);
    assert_eq!(out.json()[0]["name"], "tool:1");
    arbor_out(["image", "rm", "tool:1", "--state-dir", &state_arg]).expect(0);
    let out = arbor_out(["image", "ls", "--json", "--state-dir", &state_arg]).expect(0);
    assert_eq!(out.json(), serde_json::json!([]));
}

#[test]
fn bad_image_commands_fail_with_messages_that_name_the_input() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state").display().to_string();
    let junk = tmp.path().join("junk.tar");
    fs::write(&junk, b"not a tarball").unwrap();
    let out = arbor_out([
        "image",
        "import",
        junk.to_str().unwrap(),
        "--state-dir",
        &state,
    ])
    .expect(1);
    assert!(out.stderr.contains("junk.tar"), "{out:#?}");
    let out = arbor_out(["image", "rm", "ghost:1", "--state-dir", &state]).expect(1);
    assert!(
        out.stderr
            .contains("image not found locally: ghost:1 (import it with arbor image import)"),
        "{out:#?}"
    );
    let out = arbor_out(["image", "import", "--state-dir", &state]).expect(2);
    assert!(out.stderr.contains("<PATH>"), "{out:#?}");
}
