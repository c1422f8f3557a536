//! `ProcessRuntime` against the real OS, through the `Runtime` trait.
//!
//! Every test runs real processes and checks /proc for what they leave.
//! Tests of this file run in parallel threads of one process (which the
//! runtime makes a child subreaper), so each test only ever counts processes
//! of its own containers: members of its container's process group (the
//! pgid is the leader's pid), or pids it recorded, identified by pid and
//! start time so that a reused pid is not mistaken for a leak.
//!
//! Waiting is always a bounded poll of a condition, never a fixed sleep.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use arbor::runtime::process::procfs::{self, ProcStat as Proc};
use arbor::runtime::{
    Cause, ContainerId, ContainerSpec, ContainerState, ExitStatus, LogQuery, LogStream, Op,
    ProcessRuntime, Runtime, Signal, StopOutcome,
};
use arbor::testing::{assert_nothing_left, eventually, eventually_async, eventually_some};

const SIGTERM: i32 = 15;
const SIGKILL: i32 = 9;

// ------------------------------------------------------------- helpers --

fn my_pid() -> i32 {
    std::process::id() as i32
}

fn runtime() -> ProcessRuntime {
    ProcessRuntime::new().expect("process runtime")
}

fn runtime_without_cgroups() -> ProcessRuntime {
    ProcessRuntime::builder()
        .cgroups(false)
        .build()
        .expect("process runtime")
}

/// Creates and starts `spec`; returns its id and the leader's pid (= pgid).
async fn run(rt: &ProcessRuntime, spec: ContainerSpec) -> (ContainerId, i32) {
    let id = rt.create(&spec).await.expect("create");
    rt.start(&id).await.expect("start");
    let pid = rt.pid(&id).await.expect("pid").expect("a running leader") as i32;
    (id, pid)
}

async fn log_text(rt: &ProcessRuntime, id: &ContainerId) -> String {
    rt.logs(id, LogQuery::default()).await.expect("logs").text()
}

/// A scratch path unique to this test run (not created).
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "arbor-test-{}-{name}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

// --------------------------------------------------------------- tests --

async fn check_process_tree_is_gone(rt: ProcessRuntime) {
    let spec = ContainerSpec::shell(
        "tree",
        r#"sh -c "sleep 100 & sleep 100 & wait" & sleep 100 & wait"#,
    );
    let (id, pgid) = run(&rt, spec).await;

    // outer sh (leader) + inner sh + 3 sleeps, all in the leader's group.
    let tree = eventually_some("the whole tree runs", || {
        let members = procfs::group(pgid);
        let sleeps = members
            .iter()
            .filter(|p| procfs::cmdline(p.pid) == "sleep 100")
            .count();
        (members.len() == 5 && sleeps == 3).then_some(members)
    })
    .await;
    assert!(
        tree.iter().any(|p| p.pid == pgid),
        "the leader leads the group"
    );
    assert!(
        tree.iter().any(|p| p.ppid != pgid && p.ppid != my_pid()),
        "some process is a grandchild of the leader: {tree:?}"
    );

    let outcome = rt.stop(&id, Duration::from_secs(5)).await.expect("stop");
    assert_eq!(
        outcome,
        StopOutcome {
            status: ExitStatus::Signal(SIGTERM),
            killed: false
        }
    );
    rt.remove(&id).await.expect("remove");

    // `remove` returns only when nothing is left: no polling here.
    assert_nothing_left(pgid, &tree);
    assert!(rt.containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_tree_is_fully_gone_after_stop_and_remove() {
    check_process_tree_is_gone(runtime()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_tree_is_fully_gone_after_stop_and_remove_without_cgroups() {
    let rt = runtime_without_cgroups();
    assert!(!rt.uses_cgroups());
    check_process_tree_is_gone(rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_exits_takes_its_whole_group_with_it() {
    let rt = runtime();
    // The leader exits (code 3) once $GO exists, leaving two background
    // sleepers behind: the container ends with its main process.
    let go = scratch("leaver-go");
    let spec = ContainerSpec::shell(
        "leaver",
        r#"sleep 100 & sleep 100 & while [ ! -e "$GO" ]; do sleep 0.01; done; exit 3"#,
    )
    .env("GO", go.display().to_string());
    let (id, pgid) = run(&rt, spec).await;
    let sleepers = eventually_some("both sleepers run", || {
        let s: Vec<_> = procfs::group(pgid)
            .into_iter()
            .filter(|p| procfs::cmdline(p.pid) == "sleep 100")
            .collect();
        (s.len() == 2).then_some(s)
    })
    .await;
    std::fs::write(&go, b"").expect("create the go file");
    assert_eq!(rt.wait(&id).await.expect("wait"), ExitStatus::Code(3));
    rt.remove(&id).await.expect("remove");
    assert_nothing_left(pgid, &sleepers);
    let _ = std::fs::remove_file(&go);
}

async fn check_sigterm_ignorer_is_killed(rt: ProcessRuntime) {
    // The shell ignores TERM; so do the `sleep`s it runs, which inherit the
    // ignored disposition (checked below), so nothing in the group exits on
    // TERM and only SIGKILL ends it.
    let spec = ContainerSpec::shell("stubborn", "trap '' TERM; while :; do sleep 0.05; done");
    let (id, pgid) = run(&rt, spec).await;
    eventually("the leader ignores SIGTERM", || {
        procfs::ignores_signal(pgid, SIGTERM)
    })
    .await;
    let sleeper = eventually_some("a sleep of the leader ignores SIGTERM too", || {
        procfs::group(pgid).into_iter().find(|p| {
            p.pid != pgid
                && p.state != 'Z'
                && procfs::cmdline(p.pid).starts_with("sleep")
                && procfs::ignores_signal(p.pid, SIGTERM)
                && p.exists()
        })
    })
    .await;

    let outcome = rt
        .stop(&id, Duration::from_millis(300))
        .await
        .expect("stop");
    assert_eq!(
        outcome,
        StopOutcome {
            status: ExitStatus::Signal(SIGKILL),
            killed: true
        }
    );
    assert_eq!(
        rt.state(&id).await.expect("state"),
        ContainerState::Exited {
            status: ExitStatus::Signal(SIGKILL)
        }
    );
    rt.remove(&id).await.expect("remove");
    assert_nothing_left(pgid, &[sleeper]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_ignoring_sigterm_is_killed_after_the_grace() {
    check_sigterm_ignorer_is_killed(runtime()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_ignoring_sigterm_is_killed_after_the_grace_without_cgroups() {
    check_sigterm_ignorer_is_killed(runtime_without_cgroups()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_well_behaved_process_exits_on_sigterm_within_a_long_grace() {
    let rt = runtime();
    let (id, pgid) = run(&rt, ContainerSpec::command("sleeper", ["sleep", "100"])).await;
    let outcome = rt.stop(&id, Duration::from_secs(30)).await.expect("stop");
    assert_eq!(
        outcome,
        StopOutcome {
            status: ExitStatus::Signal(SIGTERM),
            killed: false
        }
    );
    // Stopping again reports the same end, and so does `wait`.
    assert_eq!(
        rt.stop(&id, Duration::from_secs(30)).await.expect("stop"),
        outcome
    );
    assert_eq!(
        rt.wait(&id).await.expect("wait"),
        ExitStatus::Signal(SIGTERM)
    );
    rt.remove(&id).await.expect("remove");
    assert_nothing_left(pgid, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_process_is_continued_so_that_it_exits_on_sigterm() {
    let rt = runtime();
    let (id, pgid) = run(&rt, ContainerSpec::command("paused", ["sleep", "100"])).await;
    rt.signal(&id, Signal::SIGSTOP).await.expect("signal");
    eventually("the process is stopped", || {
        procfs::stat(pgid).is_some_and(|p| p.state == 'T')
    })
    .await;
    // A stopped process keeps SIGTERM pending until it is continued: unless
    // `stop` continues it, the grace runs out and it is killed.
    let outcome = rt.stop(&id, Duration::from_secs(20)).await.expect("stop");
    assert_eq!(
        outcome,
        StopOutcome {
            status: ExitStatus::Signal(SIGTERM),
            killed: false
        }
    );
    rt.remove(&id).await.expect("remove");
    assert_nothing_left(pgid, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_without_grace_kills_at_once() {
    let rt = runtime();
    for _ in 0..3 {
        let (id, pgid) = run(&rt, ContainerSpec::command("brutal", ["sleep", "100"])).await;
        // `brutal_kill`: SIGKILL only. Had SIGTERM been sent first, the
        // pending TERM would end `sleep` and decide its status.
        let outcome = rt.stop(&id, Duration::ZERO).await.expect("stop");
        assert_eq!(
            outcome,
            StopOutcome {
                status: ExitStatus::Signal(SIGKILL),
                killed: true
            }
        );
        rt.remove(&id).await.expect("remove");
        assert_nothing_left(pgid, &[]);
    }
}

async fn check_orphans_are_reaped(rt: ProcessRuntime) {
    // Each `( ... & )` subshell starts a background loop and exits at once,
    // so the loop is re-parented to the test process (a child subreaper). The
    // loops end when $GO exists; the runtime must reap them while the leader
    // still runs (no one else waits for them).
    let go = scratch("go");
    let spec = ContainerSpec::shell(
        "forker",
        r#"for i in 1 2 3 4 5; do ( (while [ ! -e "$GO" ]; do sleep 0.01; done) & ); done; echo forked; sleep 100"#,
    )
    .env("GO", go.display().to_string());
    let (id, pgid) = run(&rt, spec).await;

    let orphans = eventually_some("five orphans are re-parented to the test process", || {
        let o: Vec<_> = procfs::group(pgid)
            .into_iter()
            .filter(|p| p.pid != pgid && p.ppid == my_pid())
            .collect();
        (o.len() == 5).then_some(o)
    })
    .await;

    std::fs::write(&go, b"").expect("create the go file");
    eventually("the orphans have exited and been reaped", || {
        !orphans.iter().any(Proc::exists)
    })
    .await;
    let members = procfs::group(pgid);
    assert!(
        members.iter().all(|p| p.state != 'Z'),
        "no zombie in the group: {members:?}"
    );
    assert!(
        matches!(
            rt.state(&id).await.expect("state"),
            ContainerState::Running { pid } if pid as i32 == pgid
        ),
        "the leader still runs"
    );
    assert!(
        procfs::stat(pgid).is_some_and(|p| p.state != 'Z'),
        "the leader still runs"
    );

    rt.stop(&id, Duration::from_secs(5)).await.expect("stop");
    rt.remove(&id).await.expect("remove");
    assert_nothing_left(pgid, &orphans);
    let _ = std::fs::remove_file(&go);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reaped_while_the_container_runs() {
    check_orphans_are_reaped(runtime()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_are_reaped_while_the_container_runs_without_cgroups() {
    check_orphans_are_reaped(runtime_without_cgroups()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_lines_are_captured_with_their_stream() {
    let rt = runtime();
    // The stderr line is written first and the test waits until it is
    // captured before letting the stdout lines out, so the order in the
    // buffer is known.
    let go = scratch("logs-go");
    let spec = ContainerSpec::shell(
        "talker",
        r#"echo "to stderr" >&2; while [ ! -e "$GO" ]; do sleep 0.01; done; for i in 1 2 3 4 5; do echo "out $i"; done; printf 'last words'"#,
    )
    .env("GO", go.display().to_string());
    let (id, _) = run(&rt, spec).await;
    eventually_async("the stderr line is captured", || async {
        log_text(&rt, &id).await.contains("to stderr")
    })
    .await;
    std::fs::write(&go, b"").expect("create the go file");
    assert_eq!(rt.wait(&id).await.expect("wait"), ExitStatus::Code(0));

    // Right after the exit: the last line (without a newline) is there.
    let all = rt.logs(&id, LogQuery::default()).await.expect("logs");
    let lines: Vec<(LogStream, &str)> = all
        .lines
        .iter()
        .map(|l| (l.stream, l.line.as_str()))
        .collect();
    assert_eq!(
        lines,
        [
            (LogStream::Stderr, "to stderr"),
            (LogStream::Stdout, "out 1"),
            (LogStream::Stdout, "out 2"),
            (LogStream::Stdout, "out 3"),
            (LogStream::Stdout, "out 4"),
            (LogStream::Stdout, "out 5"),
            (LogStream::Stdout, "last words"),
        ]
    );
    assert_eq!(all.total_lines, 7);
    assert_eq!(all.evicted_lines, 0);

    let tail = rt.logs(&id, LogQuery::tail(3)).await.expect("logs");
    assert_eq!(tail.text(), "out 4\nout 5\nlast words\n");
    assert_eq!(tail.total_lines, 7);

    let errors = rt
        .logs(
            &id,
            LogQuery {
                stream: Some(LogStream::Stderr),
                tail: None,
            },
        )
        .await
        .expect("logs");
    assert_eq!(errors.text(), "to stderr\n");
    assert_eq!(errors.total_lines, 1);

    rt.remove(&id).await.expect("remove");
    let _ = std::fs::remove_file(&go);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_of_an_exited_process_include_its_last_line() {
    let rt = runtime();
    for i in 0..5 {
        // It may be over before `start` returns: no `run` (which reads the pid).
        let spec = ContainerSpec::shell("quick", format!("echo first; echo 'final {i}'"));
        let id = rt.create(&spec).await.expect("create");
        rt.start(&id).await.expect("start");
        assert_eq!(rt.wait(&id).await.expect("wait"), ExitStatus::Code(0));
        let tail = rt.logs(&id, LogQuery::tail(1)).await.expect("logs");
        assert_eq!(tail.text(), format!("final {i}\n"));
        rt.remove(&id).await.expect("remove");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_command_is_rejected_at_create_naming_the_command() {
    let rt = runtime();
    let spec = ContainerSpec::command("empty", Vec::<String>::new());
    let err = rt.create(&spec).await.expect_err("an empty argv");
    assert_eq!(err.op, Op::Create);
    let msg = err.to_string();
    assert!(msg.contains("command"), "{msg}");
    assert!(msg.contains("empty"), "{msg}");
    let err = rt.pull_image(&spec).await.expect_err("an empty argv");
    assert!(err.to_string().contains("command"), "{err}");

    let spec = ContainerSpec::command("blank", [""]);
    let err = rt.create(&spec).await.expect_err("an empty program");
    assert!(err.to_string().contains("command[0]"), "{err}");
    assert!(rt.containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_program_is_reported_by_pull_image_and_start() {
    let rt = runtime();
    let program = "arbor-no-such-program-7f3a";
    let spec = ContainerSpec::command("ghost", [program, "--flag"]);
    let err = rt.pull_image(&spec).await.expect_err("no such program");
    assert_eq!(err.op, Op::Pull);
    assert!(matches!(err.cause, Cause::CommandNotFound(_)), "{err:?}");
    assert!(err.to_string().contains(program), "{err}");

    let err = rt
        .pull_image(&ContainerSpec::command("ghost", ["/nonexistent/bin/ghost"]))
        .await
        .expect_err("no such file");
    assert!(err.to_string().contains("/nonexistent/bin/ghost"), "{err}");

    // Skipping the pull: `start` fails the same way, and the container can
    // still be removed.
    let id = rt.create(&spec).await.expect("create");
    let err = rt.start(&id).await.expect_err("no such program");
    assert_eq!(err.op, Op::Start);
    assert!(err.to_string().contains(program), "{err}");
    assert_eq!(rt.state(&id).await.expect("state"), ContainerState::Created);
    assert!(
        rt.wait(&id).await.is_err(),
        "waiting for a never-started container"
    );
    rt.remove(&id).await.expect("remove");
    assert!(rt.containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_cwd_is_rejected_at_create_naming_the_cwd() {
    let rt = runtime();
    let dir = scratch("no-such-dir");
    let spec = ContainerSpec::command("lost", ["true"]).cwd(&dir);
    let err = rt.create(&spec).await.expect_err("no such directory");
    assert_eq!(err.op, Op::Create);
    let msg = err.to_string();
    assert!(msg.contains("cwd"), "{msg}");
    assert!(msg.contains(&dir.display().to_string()), "{msg}");
    assert!(rt.containers().await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cwd_removed_after_create_is_named_when_start_fails() {
    let rt = runtime();
    let dir = scratch("vanishing-dir");
    std::fs::create_dir(&dir).expect("mkdir");
    let spec = ContainerSpec::command("lost", ["true"]).cwd(&dir);
    let id = rt.create(&spec).await.expect("create");
    std::fs::remove_dir(&dir).expect("rmdir");
    let err = rt.start(&id).await.expect_err("the cwd is gone");
    let msg = err.to_string();
    assert!(msg.contains("cwd"), "{msg}");
    assert!(!matches!(err.cause, Cause::CommandNotFound(_)), "{msg}");
    rt.remove(&id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spec_with_an_image_is_rejected_without_panicking() {
    let rt = runtime();
    let spec = ContainerSpec {
        name: "oci".into(),
        image: Some("alpine:3".into()),
        ..ContainerSpec::default()
    };
    let err = rt.pull_image(&spec).await.expect_err("an image");
    assert!(err.to_string().contains("image"), "{err}");
    // Skipping the pull must not reach `start` with no argv.
    match rt.create(&spec).await {
        Err(err) => assert!(err.to_string().contains("image"), "{err}"),
        Ok(id) => {
            let err = rt.start(&id).await.expect_err("no program to run");
            assert!(err.to_string().contains("image"), "{err}");
            rt.remove(&id).await.expect("remove");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_a_running_container_says_to_stop_it_first() {
    let rt = runtime();
    let (id, pgid) = run(&rt, ContainerSpec::command("busy", ["sleep", "100"])).await;
    let err = rt.remove(&id).await.expect_err("it runs");
    assert_eq!(err.op, Op::Remove);
    let msg = err.to_string();
    assert!(msg.contains("stop it first"), "{msg}");
    assert!(msg.contains(&id.0), "{msg}");
    // Still there and still running.
    assert!(matches!(
        rt.state(&id).await.expect("state"),
        ContainerState::Running { .. }
    ));
    rt.stop(&id, Duration::from_secs(5)).await.expect("stop");
    rt.remove(&id).await.expect("remove");
    assert_nothing_left(pgid, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starting_twice_is_an_error() {
    let rt = runtime();
    let (id, pgid) = run(&rt, ContainerSpec::command("once", ["sleep", "100"])).await;
    let err = rt.start(&id).await.expect_err("already started");
    assert_eq!(err.op, Op::Start);
    assert!(matches!(err.cause, Cause::InvalidState { .. }), "{err:?}");
    assert!(err.to_string().contains("running"), "{err}");
    // The first process is untouched.
    assert_eq!(rt.pid(&id).await.expect("pid"), Some(pgid as u32));
    rt.stop(&id, Duration::from_secs(5)).await.expect("stop");
    let err = rt.start(&id).await.expect_err("exited");
    assert!(err.to_string().contains("exited"), "{err}");
    rt.remove(&id).await.expect("remove");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_container_is_not_found_for_every_operation() {
    let rt = runtime();
    let id = ContainerId::from("no-such-container");
    let errors = [
        rt.start(&id).await.map(|_| ()).expect_err("start"),
        rt.stop(&id, Duration::ZERO)
            .await
            .map(|_| ())
            .expect_err("stop"),
        rt.remove(&id).await.expect_err("remove"),
        rt.wait(&id).await.map(|_| ()).expect_err("wait"),
        rt.state(&id).await.map(|_| ()).expect_err("state"),
        rt.pid(&id).await.map(|_| ()).expect_err("pid"),
        rt.signal(&id, Signal::SIGTERM).await.expect_err("signal"),
        rt.logs(&id, LogQuery::tail(1))
            .await
            .map(|_| ())
            .expect_err("logs"),
    ];
    for err in errors {
        assert!(matches!(err.cause, Cause::NotFound), "{err:?}");
        let msg = err.to_string();
        assert!(msg.contains("no-such-container"), "{msg}");
        assert!(msg.contains("no such container"), "{msg}");
    }
    // Abandoning an unknown container is a no-op.
    rt.abandon(&id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_from_signal_reaches_the_whole_group() {
    let rt = runtime();
    // The leader catches TERM (so it survives it) and then reports how its
    // background child ended: 143 = killed by TERM, which only the group
    // signal can have sent it.
    let script = r#"sleep 100 & bg=$!
trap 'got=1' TERM
echo ready
while [ -z "$got" ]; do sleep 0.05; done
wait $bg
echo "child status $?"
exit 5"#;
    let (id, pgid) = run(&rt, ContainerSpec::shell("group", script)).await;
    assert_eq!(
        rt.state(&id).await.expect("state"),
        ContainerState::Running { pid: pgid as u32 }
    );
    assert_eq!(rt.pid(&id).await.expect("pid"), Some(pgid as u32));
    eventually_async("the leader has set its trap", || async {
        log_text(&rt, &id).await.contains("ready")
    })
    .await;
    eventually("the background child runs", || {
        procfs::group(pgid)
            .iter()
            .any(|p| p.ppid == pgid && procfs::cmdline(p.pid) == "sleep 100")
    })
    .await;

    rt.signal(&id, Signal::SIGTERM).await.expect("signal");
    assert_eq!(rt.wait(&id).await.expect("wait"), ExitStatus::Code(5));
    assert!(
        log_text(&rt, &id).await.contains("child status 143"),
        "the child was killed by SIGTERM: {}",
        log_text(&rt, &id).await
    );
    assert_eq!(
        rt.state(&id).await.expect("state"),
        ContainerState::Exited {
            status: ExitStatus::Code(5)
        }
    );
    assert_eq!(rt.pid(&id).await.expect("pid"), None);
    let err = rt
        .signal(&id, Signal::SIGTERM)
        .await
        .expect_err("an exited container cannot be signalled");
    assert!(err.to_string().contains("exited"), "{err}");
    rt.remove(&id).await.expect("remove");
    assert_nothing_left(pgid, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_and_pid_report_created_running_then_exited() {
    let rt = runtime();
    let go = scratch("state-go");
    let spec = ContainerSpec::shell(
        "stately",
        r#"while [ ! -e "$GO" ]; do sleep 0.01; done; exit 4"#,
    )
    .env("GO", go.display().to_string());
    let id = rt.create(&spec).await.expect("create");
    assert_eq!(rt.state(&id).await.expect("state"), ContainerState::Created);
    assert_eq!(rt.pid(&id).await.expect("pid"), None);
    assert!(rt.signal(&id, Signal::SIGTERM).await.is_err());
    assert!(rt.stop(&id, Duration::ZERO).await.is_err());

    rt.start(&id).await.expect("start");
    let pid = rt.pid(&id).await.expect("pid").expect("running");
    assert_eq!(
        rt.state(&id).await.expect("state"),
        ContainerState::Running { pid }
    );
    assert!(procfs::stat(pid as i32).is_some_and(|p| p.pgrp == pid as i32));
    assert_eq!(
        rt.containers().await,
        vec![(id.clone(), ContainerState::Running { pid })]
    );

    // Several waiters all see the same exit.
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let (rt, id) = (rt.clone(), id.clone());
            tokio::spawn(async move { rt.wait(&id).await })
        })
        .collect();
    std::fs::write(&go, b"").expect("create the go file");
    for w in waiters {
        assert_eq!(w.await.expect("join").expect("wait"), ExitStatus::Code(4));
    }
    assert_eq!(
        rt.state(&id).await.expect("state"),
        ContainerState::Exited {
            status: ExitStatus::Code(4)
        }
    );
    assert_eq!(rt.pid(&id).await.expect("pid"), None);
    rt.remove(&id).await.expect("remove");
    assert!(rt.containers().await.is_empty());
    let _ = std::fs::remove_file(&go);
}

#[cfg_attr(
    not(arbor_root),
    ignore = "needs root: cgroups (run the tests as root, as .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_cgroups_a_grandchild_that_calls_setsid_is_killed_and_reaped() {
    let rt = runtime();
    if !rt.uses_cgroups() {
        eprintln!(
            "skipped: containers are not placed in cgroups here. Run the tests as root on a \
             machine with cgroup v2 mounted (/sys/fs/cgroup, or /sys/fs/cgroup/unified on a \
             hybrid layout) to run this test."
        );
        return;
    }
    let Some(setsid) = ["/usr/bin/setsid", "/bin/setsid"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!("skipped: `setsid` (util-linux) is not installed");
        return;
    };
    // The escaper leaves the container's process group and session and
    // ignores TERM: neither killpg nor SIGTERM can end it, only the cgroup.
    let script =
        format!(r#"{setsid} sh -c "trap '' TERM; while :; do sleep 0.05; done" & sleep 100"#);
    let (id, pgid) = run(&rt, ContainerSpec::shell("escaper", script)).await;
    let cgroup = procfs::cgroup_path(pgid).expect("the leader's cgroup");
    assert!(cgroup.ends_with(&id.0), "{cgroup} is the container's");

    let (escaper, members) = eventually_some("the escaper has left the group", || {
        let members: Vec<Proc> = procfs::all()
            .into_iter()
            .filter(|p| procfs::cgroup_path(p.pid).as_deref() == Some(cgroup.as_str()))
            .collect();
        let escaper = members
            .iter()
            .find(|p| {
                p.pgrp != pgid && p.session == p.pid && procfs::ignores_signal(p.pid, SIGTERM)
            })
            .copied()?;
        Some((escaper, members))
    })
    .await;
    assert!(procfs::group(pgid).iter().all(|p| p.pid != escaper.pid));

    let outcome = rt
        .stop(&id, Duration::from_millis(300))
        .await
        .expect("stop");
    // The leader (`sh` waiting in `sleep 100`) ends on TERM; the escaper
    // outlives the grace and is killed through the cgroup.
    assert!(outcome.killed, "{outcome:?}");
    rt.remove(&id).await.expect("remove");

    assert_nothing_left(pgid, &members);
    assert!(!escaper.exists(), "the escaper is gone: {escaper:?}");
    let left: Vec<_> = procfs::all()
        .into_iter()
        .filter(|p| procfs::cgroup_path(p.pid).is_some_and(|c| c.contains(&id.0)))
        .collect();
    assert!(
        left.is_empty(),
        "processes left in the container's cgroup: {left:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandon_kills_everything_at_once_and_removes_the_container() {
    let rt = runtime();
    let (id, pgid) = run(
        &rt,
        ContainerSpec::shell(
            "orphaned",
            "trap '' TERM; sleep 100 & sleep 100 & while :; do sleep 0.05; done",
        ),
    )
    .await;
    let recorded = eventually_some("both sleepers run", || {
        let members = procfs::group(pgid);
        let sleepers = members
            .iter()
            .filter(|p| procfs::cmdline(p.pid) == "sleep 100")
            .count();
        (sleepers == 2).then_some(members)
    })
    .await;
    rt.abandon(&id);
    eventually_async("the abandoned container is removed", || async {
        rt.containers().await.is_empty()
    })
    .await;
    assert_nothing_left(pgid, &recorded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoning_a_container_that_never_ran_removes_it() {
    let rt = runtime();
    let id = rt
        .create(&ContainerSpec::command("idle", ["true"]))
        .await
        .expect("create");
    rt.abandon(&id);
    // Removal is immediate: there is nothing to drain. The bound is half the
    // runtime's 10 s drain limit, which a wrong wait for a drain would hit.
    let deadline = Instant::now() + arbor::testing::EVENTUALLY / 2;
    while !rt.containers().await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "the abandoned container was not removed within {:?}",
            arbor::testing::EVENTUALLY / 2
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(matches!(
        rt.state(&id).await.map_err(|e| e.cause),
        Err(Cause::NotFound)
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_and_removes_every_container() {
    let rt = runtime();
    let (_, calm) = run(&rt, ContainerSpec::command("calm", ["sleep", "100"])).await;
    let (stubborn_id, stubborn) = run(
        &rt,
        ContainerSpec::shell(
            "stubborn",
            "trap '' TERM; sleep 100 & while :; do sleep 0.05; done",
        ),
    )
    .await;
    let (done_id, done) = run(&rt, ContainerSpec::command("done", ["sleep", "100"])).await;
    rt.signal(&done_id, Signal::SIGTERM).await.expect("signal");
    rt.wait(&done_id).await.expect("wait");
    let never = rt
        .create(&ContainerSpec::command("never", ["true"]))
        .await
        .expect("create");
    eventually("the stubborn leader ignores SIGTERM", || {
        procfs::ignores_signal(stubborn, SIGTERM)
    })
    .await;
    let recorded: Vec<Proc> = [calm, stubborn]
        .into_iter()
        .flat_map(procfs::group)
        .collect();
    assert_eq!(rt.containers().await.len(), 4);

    assert_eq!(rt.shutdown(Duration::from_millis(300)).await, 4);
    assert!(rt.containers().await.is_empty());
    for pgid in [calm, stubborn, done] {
        assert_nothing_left(pgid, &recorded);
    }
    for id in [&stubborn_id, &done_id, &never] {
        assert!(matches!(
            rt.state(id).await.map_err(|e| e.cause),
            Err(Cause::NotFound)
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_netns_that_is_missing_or_not_a_namespace_is_a_create_error_naming_the_path() {
    let rt = runtime();
    let dir = tempfile::tempdir().unwrap();
    let plain = dir.path().join("not-a-namespace");
    std::fs::write(&plain, "").unwrap();
    for path in [dir.path().join("missing"), plain] {
        let spec = ContainerSpec::command("netns", ["true"]).netns(&path);
        let err = rt.create(&spec).await.expect_err("no namespace there");
        let text = err.to_string();
        assert!(text.contains("failed to create container netns"), "{text}");
        assert!(text.contains(&path.display().to_string()), "{text}");
        assert!(text.contains("netns"), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_that_never_answers_is_killed_with_what_it_started() {
    // A keeper that starts a program in its session and never answers:
    // the start fails when the answer does not come (5 s), and neither
    // the keeper nor the program is left running.
    let unique = 3_000_000 + (std::process::id() % 100_000);
    let script = format!("sleep {unique} & exec sleep {}", unique + 1);
    let dir = scratch("silent-keepers");
    let keepers = arbor::runtime::process::Keepers::new(
        "/usr/bin/setsid",
        vec!["sh".into(), "-c".into(), script.into()],
        &dir,
    );
    let rt = ProcessRuntime::builder()
        .keepers(keepers)
        .build()
        .expect("process runtime");
    let spec = ContainerSpec {
        name: "silent".into(),
        command: vec!["true".into()],
        live_restore: true,
        ..ContainerSpec::default()
    };
    let id = rt.create(&spec).await.expect("create");
    let err = rt.start(&id).await.expect_err("the keeper never answers");
    assert!(err.to_string().contains("keeper"), "{err}");
    let sleeping = || {
        procfs::all()
            .into_iter()
            .filter(|p| {
                let cmd = procfs::cmdline(p.pid);
                !p.is_zombie()
                    && (cmd == format!("sleep {unique}") || cmd == format!("sleep {}", unique + 1))
            })
            .count()
    };
    eventually("nothing the keeper started runs", || sleeping() == 0).await;
    let _ = std::fs::remove_dir_all(&dir);
}
