//! `arbor validate` checks what it can on this host without running
//! anything: a missing program or `cwd` is named as a warning.

mod cli_support;

use cli_support::arbor_out;

#[test]
fn validate_warns_about_a_missing_program_a_non_executable_path_and_a_missing_cwd() {
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("plain.txt");
    std::fs::write(&plain, "not a program").unwrap();
    let spec = dir.path().join("node.yaml");
    std::fs::write(
        &spec,
        format!(
            r#"
services:
  typo:
    command: [/nonexistent/bin/server]
  offpath:
    command: [no-such-program-4711]
  notexec:
    command: ["{}"]
  fine:
    command: [sleep, "1"]
jobs:
  lost:
    command: ["true"]
    cwd: /nonexistent/dir
"#,
            plain.display()
        ),
    )
    .unwrap();
    let out = arbor_out(["validate".as_ref(), spec.as_os_str()]).expect(0);
    for expected in [
        "services.typo.command[0]: \"/nonexistent/bin/server\" does not exist on this host",
        "services.offpath.command[0]: program \"no-such-program-4711\" is not on PATH",
        "services.notexec.command[0]:",
        "is not an executable file",
        "jobs.lost.cwd: /nonexistent/dir is not a directory",
    ] {
        assert!(
            out.stderr.contains(expected),
            "{expected:?} in {}",
            out.stderr
        );
    }
    assert!(!out.stderr.contains("services.fine"), "{}", out.stderr);
}

#[test]
fn validate_warns_about_an_image_missing_from_the_state_dirs_store() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::write(rootfs.join("bin/hello"), "#!/bin/sh\necho hi\n").unwrap();
    let config = arbor::image::ImageConfig {
        entrypoint: vec!["/bin/hello".into()],
        cmd: vec![],
        env: vec![],
        workdir: None,
        user: None,
    };
    let layout =
        arbor::image::pack_layout(&rootfs, "present:1", &config, &dir.path().join("layout"))
            .unwrap();
    arbor_out([
        "image".as_ref(),
        "import".as_ref(),
        layout.as_os_str(),
        "--name".as_ref(),
        "present:1".as_ref(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ])
    .expect(0);
    let spec = dir.path().join("node.yaml");
    std::fs::write(
        &spec,
        "services:\n  here:\n    image: present:1\n    command: [/bin/hello]\n  gone:\n    image: absent:1\n    command: [/bin/hello]\n",
    )
    .unwrap();
    let out = arbor_out([
        "validate".as_ref(),
        spec.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ])
    .expect(0);
    assert!(
        out.stderr
            .contains("services.gone.image: \"absent:1\" is not in the image store"),
        "{}",
        out.stderr
    );
    assert!(
        !out.stderr.contains("services.here.image"),
        "{}",
        out.stderr
    );
}
