//! The real binaries at the limits: under `ulimit -n 1024` the agent
//! raises its own open files limit and runs 300 replicas (its children
//! keep 1024); `arbor supervise --replicas 1000` stopped one second after
//! its start leaves no process behind; under a hard limit of 96, the
//! replicas that fit run, those that cannot start say "too many open
//! files", the limit and how to raise it, and the API still answers (the
//! agent keeps its last descriptors for itself).

mod cli_support;

use std::{
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use arbor::runtime::process::procfs;
use cli_support::eventually;

fn soft_nofile(pid: i32) -> Option<u64> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// The agent, ended (SIGTERM first) if a test fails before it stops it:
/// a failed run must not leave an agent and its replicas behind.
struct Ending(std::process::Child);

impl Drop for Ending {
    fn drop(&mut self) {
        cli_support::end_gracefully(&mut self.0);
    }
}

/// A spec of one service, `many`: `replicas` of `sleep 300` with `MARK`
/// in their environment (how the tests find them); its path.
fn sleepers(dir: &std::path::Path, replicas: u32, mark: &str) -> std::path::PathBuf {
    let spec = dir.join("node.yaml");
    std::fs::write(
        &spec,
        format!(
            "services:\n  many:\n    command: [sleep, \"300\"]\n    replicas: {replicas}\n    env: {{MARK: \"{mark}\"}}\n"
        ),
    )
    .unwrap();
    spec
}

/// The agent on `spec` and `state`, started by `sh` after `ulimit`.
fn agent_under(ulimit: &str, spec: &std::path::Path, state: &std::path::Path) -> Ending {
    Ending(
        std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "{ulimit} && exec '{}' agent --spec '{}' --state-dir '{}'",
                env!("CARGO_BIN_EXE_arbor"),
                spec.display(),
                state.display()
            ))
            .env_remove("ARBOR_STATE_DIR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> i32 {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code().unwrap_or(-1);
        }
        assert!(start.elapsed() < within, "did not exit within {within:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn under_ulimit_1024_the_agent_runs_300_replicas_and_its_children_keep_1024() {
    let hard: u64 = std::fs::read_to_string("/proc/self/limits")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4)?.parse().ok())
        .unwrap_or(0);
    if hard < 2048 {
        eprintln!("skipped: the hard open files limit is {hard}, below what 300 replicas need");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let spec = sleepers(dir.path(), 300, &mark);
    let state = dir.path().join("state");
    let mut agent = agent_under("ulimit -Sn 1024", &spec, &state);
    eventually("300 replicas run", || {
        procfs::with_env("MARK", &mark).len() == 300
    });
    let agent_pid = agent.0.id() as i32;
    assert!(
        soft_nofile(agent_pid).unwrap() > 1024,
        "the agent raised its limit"
    );
    let replica = procfs::with_env("MARK", &mark)[0];
    assert_eq!(
        soft_nofile(replica),
        Some(1024),
        "children keep the limit they had"
    );
    let mut cmd = cli_support::arbor();
    cmd.env("ARBOR_STATE_DIR", &state).args(["services"]);
    let out = cli_support::output(cmd).expect(0);
    assert!(out.stdout.contains("300/300"), "{}", out.stdout);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent_pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait_exit(&mut agent.0, Duration::from_secs(60)), 0);
    assert!(procfs::with_env("MARK", &mark).is_empty());
}

#[test]
fn supervise_with_1000_replicas_stopped_a_second_after_its_start_leaves_nothing() {
    let mark = uuid::Uuid::new_v4().to_string();
    let mut sup = cli_support::arbor()
        .args(["supervise", "--replicas", "1000", "--", "sleep", "301"])
        .env("MARK", &mark)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    thread::sleep(Duration::from_secs(1));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait_exit(&mut sup, Duration::from_secs(60)), 0);
    assert!(
        procfs::with_env("MARK", &mark).is_empty(),
        "{} left",
        procfs::with_env("MARK", &mark).len()
    );
}

#[test]
fn under_an_open_files_limit_the_replicas_that_fit_run_and_the_others_say_why_they_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let spec = sleepers(dir.path(), 40, &mark);
    let state = dir.path().join("state");
    // Soft and hard: the agent cannot raise it.
    let mut agent = agent_under("ulimit -n 96", &spec, &state);
    let reasons = || -> Vec<String> {
        let mut cmd = cli_support::arbor();
        cmd.env("ARBOR_STATE_DIR", &state)
            .args(["services", "--json"]);
        let out = cli_support::output(cmd);
        if out.code != 0 {
            return Vec::new();
        }
        let services: serde_json::Value = serde_json::from_str(&out.stdout).unwrap_or_default();
        services[0]["tree"]["children"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["last_exit"]["reason"].as_str().map(str::to_owned))
            .collect()
    };
    let start = Instant::now();
    let seen = loop {
        let seen = reasons();
        let running = procfs::with_env("MARK", &mark).len();
        if seen.iter().any(|r| r.contains("too many open files")) && running >= 3 {
            break seen;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "some replicas run ({running} do) and one failed for lack of open files; their reasons: {seen:?}"
        );
        thread::sleep(Duration::from_millis(50));
    };
    let said = seen
        .iter()
        .find(|r| r.contains("too many open files"))
        .unwrap();
    assert!(said.contains("the limit is 96"), "{said}");
    assert!(said.contains("ulimit -n"), "{said}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(wait_exit(&mut agent.0, Duration::from_secs(60)), 0);
    eventually("no replica is left", || {
        procfs::with_env("MARK", &mark).is_empty()
    });
}
