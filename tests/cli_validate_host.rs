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
