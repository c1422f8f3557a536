//! The real `arbor agent`'s API transport: by default a Unix socket only
//! its user may use; TCP only when asked, with the token; a non-loopback
//! address only with `--insecure-http`.

mod cli_support;

use std::{
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::Path,
};

use cli_support::{Running, arbor, arbor_out, output, start_agent};

const SPEC: &str = "services:\n  idle:\n    command: [sleep, \"301\"]\n";

/// `arbor agent` with no transport flags but `extra`.
fn start(dir: &Path, extra: &[&str]) -> (Running, String) {
    start_agent(dir, SPEC, extra)
}

#[test]
fn by_default_the_agent_listens_on_an_owner_only_socket_the_cli_finds_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_agent, line) = start(dir.path(), &[]);
    let socket = state.join("arbor.sock");
    assert_eq!(line, format!("listening on unix:{}", socket.display()));
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(!state.join("api.token").exists(), "no TCP, no token");

    // The owner: the CLI with no flags but the state dir.
    let mut cmd = arbor();
    cmd.env("ARBOR_STATE_DIR", &state).args(["services"]);
    let out = output(cmd).expect(0);
    assert!(out.stdout.contains("idle"), "{}", out.stdout);

    // Another user cannot connect (the kernel refuses it the socket).
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: the other-user half needs root (run the tests as root)");
        return;
    }
    // Let nobody traverse to the socket: only the socket's mode stops it.
    for d in [dir.path(), state.as_path()] {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let mut cmd = arbor();
    cmd.args(["--agent", &format!("unix:{}", socket.display()), "services"]);
    cmd.uid(65534).gid(65534);
    let out = output(cmd).expect(1);
    assert!(
        out.stderr.contains("permission denied"),
        "as nobody: {}",
        out.stderr
    );
}

#[test]
fn a_second_agent_on_the_same_state_dir_refuses_and_a_stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let (mut first, _) = start(dir.path(), &[]);
    let spec = dir.path().join("node.yaml");
    let state = dir.path().join("state");
    let out = arbor_out([
        "agent".as_ref(),
        "--spec".as_ref(),
        spec.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
    ])
    .expect(1);
    assert!(
        out.stderr.contains("another agent is already serving")
            && out.stderr.contains("arbor.sock"),
        "{}",
        out.stderr
    );
    // Killed: its socket stays behind, and the next agent replaces it
    // (and adopts its services).
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    assert!(state.join("arbor.sock").exists());
    let (_second, line) = start(dir.path(), &[]);
    assert!(line.ends_with("arbor.sock"), "{line}");
    let mut cmd = arbor();
    cmd.env("ARBOR_STATE_DIR", &state).args(["tree"]);
    output(cmd).expect(0);
}

#[test]
fn a_non_loopback_listen_needs_insecure_http_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("node.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let state = dir.path().join("state");
    let out = arbor_out([
        "agent".as_ref(),
        "--spec".as_ref(),
        spec.as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "--listen".as_ref(),
        "0.0.0.0:0".as_ref(),
    ])
    .expect(2);
    assert!(
        out.stderr.contains("--listen 0.0.0.0:0") && out.stderr.contains("--insecure-http"),
        "{}",
        out.stderr
    );
    let (_agent, line) = start(dir.path(), &["--listen", "0.0.0.0:0", "--insecure-http"]);
    assert!(line.starts_with("listening on 0.0.0.0:"), "{line}");
}

#[test]
fn over_tcp_the_token_is_generated_owner_only_and_the_cli_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let (_agent, line) = start(dir.path(), &["--listen", "127.0.0.1:0"]);
    let url = format!("http://{}", line.strip_prefix("listening on ").unwrap());
    let token = state.join("api.token");
    let mode = std::fs::metadata(&token).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    assert!(std::fs::read_to_string(&token).unwrap().trim().len() >= 32);
    // Without the token: refused (reads too).
    let out = output({
        let mut c = arbor();
        c.args(["--agent", &url, "services"]);
        c
    })
    .expect(1);
    assert!(out.stderr.contains("--token-file"), "{}", out.stderr);
    // With the state dir the CLI finds the token itself.
    let mut cmd = arbor();
    cmd.env("ARBOR_STATE_DIR", &state)
        .args(["--agent", &url, "services"]);
    output(cmd).expect(0);
}
