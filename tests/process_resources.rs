//! `resources: {memory, cpus, pids}` for host processes: set through
//! cgroups as root (an OOM kill reported as `out of memory`, a fork bomb
//! held at `pids`, a busy loop held near `cpus`), refused with the field
//! named when the runtime has no cgroups. The root tests run the real
//! agent; without root they say so and return.

mod cli_support;

use std::{
    thread,
    time::{Duration, Instant},
};

use arbor::{
    ContainerSpec,
    runtime::{ProcessRuntime, Runtime, process::procfs},
};
use cli_support::{Agent, eventually, write_file};

fn root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: resource limits need root (cgroups); run the tests as root");
    false
}

#[cfg_attr(
    not(arbor_root),
    ignore = "needs root: resource limits use cgroups (run the tests as root, as .ci/run does)"
)]
#[test]
fn a_process_over_its_memory_limit_is_oom_killed_and_reported() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  hog:
    command: [sh, -c, 'a=$(head -c 67108864 /dev/zero | tr "\0" x); echo survived']
    resources: { memory: 32Mi }
"#,
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    eventually("hog was OOM-killed", || {
        agent.service("hog")["tree"]["children"][0]["last_exit"]["oom_killed"] == true
    });
    let tree = agent.arbor(["tree"]).expect(0).stdout;
    assert!(
        tree.contains("killed by signal 9 (SIGKILL) (out of memory")
            || tree.contains("(out of memory: OOM-killed at its memory limit)"),
        "{tree}"
    );
    assert_eq!(agent.stop(), 0);
}

#[cfg_attr(
    not(arbor_root),
    ignore = "needs root: resource limits use cgroups (run the tests as root, as .ci/run does)"
)]
#[test]
fn a_fork_bomb_is_held_at_its_pids_limit() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  bomb:
    command: [sh, -c, 'for i in $(seq 1 60); do sleep 30 & done; wait']
    env: { MARK: pids-bomb }
    resources: { pids: 16 }
"#,
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    // The shell cannot fork past the limit and exits 2 ("can't fork").
    let mut most = 0;
    eventually("the bomb hit its limit", || {
        most = most.max(procfs::with_env("MARK", "pids-bomb").len());
        agent.service("bomb")["tree"]["children"][0]["last_exit"]["status"]["code"] == 2
    });
    assert!(most <= 16, "{most} processes under pids: 16");
    assert_eq!(agent.stop(), 0);
}

/// CPU time (user + system) of `pid` so far, in clock ticks.
fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat; after the comm they
    // are at 11 and 12 (0-based from the state field).
    field(11) + field(12)
}

#[cfg_attr(
    not(arbor_root),
    ignore = "needs root: resource limits use cgroups (run the tests as root, as .ci/run does)"
)]
#[test]
fn a_busy_loop_is_held_near_its_cpus_limit() {
    if !root() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  busy:
    command: [sh, -c, 'while :; do :; done']
    env: { MARK: cpu-busy }
    resources: { cpus: 0.2 }
"#,
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    let mut pid = None;
    eventually("busy runs", || {
        pid = procfs::with_env("MARK", "cpu-busy").first().copied();
        pid.is_some()
    });
    let pid = pid.unwrap();
    let ticks_per_s = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    let (t0, c0) = (Instant::now(), cpu_ticks(pid));
    thread::sleep(Duration::from_secs(2));
    let (t1, c1) = (Instant::now(), cpu_ticks(pid));
    let used = (c1 - c0) as f64 / ticks_per_s / (t1 - t0).as_secs_f64();
    // A free busy loop uses a whole core; 0.2 holds it near a fifth (the
    // bound is loose: this measures a limit, not a speed).
    assert!(used < 0.35, "used {used:.2} of a core under cpus: 0.2");
    assert!(used > 0.05, "used {used:.2} of a core: did it run at all?");
    assert_eq!(agent.stop(), 0);
}

#[tokio::test]
async fn limits_without_cgroups_are_refused_naming_the_field() {
    let rt = ProcessRuntime::builder().cgroups(false).build().unwrap();
    let mut spec = ContainerSpec::command("limited", ["sleep", "1"]);
    spec.resources.memory = Some("32Mi".parse().unwrap());
    let err = rt.create(&spec).await.unwrap_err().to_string();
    assert!(err.contains("resources.memory"), "{err}");
    assert!(err.contains("needs root"), "{err}");
}
