//! `arbor supervise`: a command as a supervised service in the foreground.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

fn arbor() -> Command {
    Command::new(env!("CARGO_BIN_EXE_arbor"))
}

#[test]
fn a_command_that_keeps_crashing_is_restarted_until_the_supervisor_gives_up() {
    let out = arbor()
        .args([
            "supervise",
            "--on-limit",
            "escalate",
            "--max-restarts",
            "2",
            "--",
            "sh",
            "-c",
            "echo attempt; exit 3",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(stdout.matches("sh-0 | attempt").count(), 3, "{stdout}");
    assert_eq!(
        stdout.matches("exited (exit code 3)").count(),
        3,
        "{stdout}"
    );
    assert!(stdout.contains("sh-0: restarted (#2)"), "{stdout}");
    assert!(stdout.contains("restart intensity exceeded"), "{stdout}");
}

#[test]
fn json_events_are_one_object_per_line() {
    let out = arbor()
        .args([
            "supervise",
            "--json",
            "--on-limit",
            "escalate",
            "--max-restarts",
            "0",
            "--",
            "false",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let kinds: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect(l)["event"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        kinds,
        ["child_started", "child_exited", "supervisor_escalated"]
    );
}

#[test]
fn bad_arguments_exit_2_and_name_the_problem() {
    let out = arbor()
        .args(["supervise", "--window", "0s", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("restart_window: must be > 0"));

    let out = arbor()
        .args(["supervise", "--window", "soon", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("soon"));

    let out = arbor().args(["supervise"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a command is required");

    for replicas in ["0", "10001"] {
        let out = arbor()
            .args(["supervise", "--replicas", replicas, "--", "true"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "--replicas {replicas}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("--replicas") && stderr.contains("between 1 and 10000"),
            "{stderr}"
        );
    }
}

#[test]
fn sigterm_stops_the_service_and_leaves_no_process() {
    let marker = format!("arbor-cli-test-{}", std::process::id());
    let mut child = arbor()
        .args([
            "supervise",
            "--grace",
            "2s",
            "--",
            "sh",
            "-c",
            &format!("echo {marker}; exec sleep 300"),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let sleeper = loop {
        if let Some(pid) = find_sleep_of(child.id()) {
            break pid;
        }
        assert!(Instant::now() < deadline, "the service never started");
        std::thread::sleep(Duration::from_millis(10));
    };
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        !std::path::Path::new(&format!("/proc/{sleeper}")).exists(),
        "the supervised process is gone"
    );
    let mut out = String::new();
    std::io::Read::read_to_string(&mut child.stdout.take().unwrap(), &mut out).unwrap();
    assert!(
        out.contains(&marker) && out.contains("sh-0: stopped (shutdown)"),
        "{out}"
    );
}

/// The pid of a `sleep` whose parent is `arbor_pid`.
fn find_sleep_of(arbor_pid: u32) -> Option<i32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (comm, rest) = stat.split_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (comm.ends_with("(sleep") && ppid == arbor_pid).then_some(pid)
    })
}
