//! Supervised host processes: container children of real supervisors, run
//! by a real `ProcessRuntime`, checked against /proc.
//!
//! Tests of this file run in parallel threads of one process, so each test
//! has its own runtime (whose `containers()` are only its own) and only
//! counts processes of its own containers: members of a container's process
//! group (the pgid is the leader's pid), or processes it recorded (pid and
//! start time, so that a reused pid is not mistaken for a leak).
//!
//! Waiting is always bounded: a poll of a condition or an event with a time
//! limit, never a fixed sleep.

use std::{path::PathBuf, sync::Arc, time::Duration};

use arbor::runtime::process::procfs;
use arbor::testing::{assert_nothing_left, eventually_some, eventually_some_async, within};
use arbor::{
    ChildExit, ChildKind, ChildSpec, ChildState, ContainerSpec, ContainerState, Event, ExitStatus,
    ProcessRuntime, RestartType, Shutdown, SupervisorRef, SupervisorSpec,
};

const SIGTERM: i32 = 15;

// ------------------------------------------------------------- helpers --

fn runtime() -> ProcessRuntime {
    ProcessRuntime::new().expect("process runtime")
}

/// A scratch path unique to this test run (not created).
fn scratch(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!(
        "arbor-test-{}-{name}-{}",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ))
}

/// The leaders (= pgids) of the runtime's running containers, once there
/// are `n` of them.
async fn running_leaders(rt: &ProcessRuntime, n: usize) -> Vec<i32> {
    eventually_some_async(&format!("{n} containers run"), || async {
        let pids: Vec<i32> = rt
            .containers()
            .await
            .into_iter()
            .filter_map(|(_, s)| match s {
                ContainerState::Running { pid } => Some(pid as i32),
                _ => None,
            })
            .collect();
        (pids.len() == n).then_some(pids)
    })
    .await
}

fn restarted(id: &'static str) -> impl FnMut(&Event) -> bool {
    move |e| matches!(e, Event::ChildRestarted { child: i, .. } if i == id)
}

// --------------------------------------------------------------- tests --

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_command_is_restarted() {
    let rt = runtime();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::new("svc"))
        .await
        .expect("start");
    let mut events = sup.events();
    // The first run crashes with code 3; the restarted one keeps running.
    let mark = scratch("crashed-once");
    let spec = ContainerSpec::shell(
        "crasher",
        r#"if [ -e "$MARK" ]; then exec sleep 100; fi; : > "$MARK"; exit 3"#,
    )
    .env("MARK", mark.display().to_string());
    sup.start_child(ChildSpec::container("crasher", Arc::new(rt.clone()), spec))
        .await
        .expect("start_child");

    let event = within("the restart", events.wait_for(restarted("crasher")))
        .await
        .expect("the event bus is alive");
    assert_eq!(
        event,
        Event::ChildRestarted {
            child: "crasher".into(),
            supervisor: "svc".into(),
            child_kind: ChildKind::Container,
            exit_code: Some(3),
            restart_count: 1
        }
    );
    let children = sup.which_children().await.expect("which_children");
    let child = children
        .iter()
        .find(|c| c.id == "crasher")
        .expect("the child is listed");
    assert!(child.restart_count >= 1, "{child:?}");
    assert_eq!(child.state, ChildState::Running);
    assert!(
        matches!(
            child.last_exit,
            Some(ChildExit::Exited {
                status: ExitStatus::Code(3),
                ..
            })
        ),
        "{child:?}"
    );

    // The crashed container was removed; its replacement runs `sleep 100`.
    let leader = running_leaders(&rt, 1).await[0];
    assert_eq!(rt.containers().await.len(), 1);
    eventually_some("the restarted process runs sleep", || {
        (procfs::cmdline(leader) == "sleep 100").then_some(())
    })
    .await;

    sup.shutdown().await;
    assert!(rt.containers().await.is_empty());
    assert_nothing_left(leader, &[]);
    let _ = std::fs::remove_file(&mark);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_that_always_crashes_escalates_and_leaves_nothing_behind() {
    let rt = runtime();
    // Every process of every run carries the mark in its environment.
    let mark = uuid::Uuid::new_v4().simple().to_string();
    let spec = SupervisorSpec::new("crashy").intensity(2, Duration::from_secs(60));
    let (sup, _) = SupervisorRef::start(spec).await.expect("start");
    let mut events = sup.events();
    sup.start_child(ChildSpec::container(
        "crasher",
        Arc::new(rt.clone()),
        ContainerSpec::shell("crasher", "sleep 100 & exit 3").env("ARBOR_TEST_MARK", &mark),
    ))
    .await
    .expect("start_child");

    let mut restarts = Vec::new();
    let escalated = within("the escalation", async {
        while let Some(e) = events.recv().await {
            match e {
                Event::ChildRestarted {
                    exit_code,
                    restart_count,
                    ..
                } => restarts.push((exit_code, restart_count)),
                Event::SupervisorEscalated { .. } => return true,
                _ => {}
            }
        }
        false
    })
    .await;
    assert!(escalated, "the supervisor escalated");
    // Restarted (intensity 2 allows two restarts) with the exit code each
    // time, then given up on.
    assert!(!restarts.is_empty(), "restarted before escalating");
    assert!(restarts.len() <= 2, "{restarts:?}");
    for (i, (code, count)) in restarts.iter().enumerate() {
        assert_eq!((*code, *count), (Some(3), i as u32 + 1), "{restarts:?}");
    }
    within("the supervisor to exit", sup.wait()).await;
    // Every run's container was removed, with its background sleeper.
    let left = procfs::with_env("ARBOR_TEST_MARK", &mark);
    assert!(left.is_empty(), "processes of the runs are left: {left:?}");
    assert!(
        rt.containers().await.is_empty(),
        "{:?}",
        rt.containers().await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_ignoring_sigterm_is_killed_when_its_supervisor_shuts_down() {
    let rt = runtime();
    let child = ChildSpec::container(
        "stubborn",
        Arc::new(rt.clone()),
        ContainerSpec::shell("stubborn", "trap '' TERM; while :; do sleep 0.05; done"),
    )
    .shutdown(Shutdown::Timeout(Duration::from_millis(300)));
    let (sup, _) = SupervisorRef::start(SupervisorSpec::new("svc").child(child))
        .await
        .expect("start");
    let leader = running_leaders(&rt, 1).await[0];
    eventually_some("the leader ignores SIGTERM", || {
        procfs::ignores_signal(leader, SIGTERM).then_some(())
    })
    .await;
    let recorded = procfs::group(leader);

    within("the shutdown", sup.shutdown()).await;
    assert!(
        rt.containers().await.is_empty(),
        "the container was removed"
    );
    assert_nothing_left(leader, &recorded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_supervised_process_tree_is_gone_after_shutdown() {
    let rt = runtime();
    let spec = SupervisorSpec::service(
        "trees",
        Arc::new(rt.clone()),
        ContainerSpec::shell(
            "tree",
            r#"sh -c "sleep 100 & sleep 100 & wait" & sleep 100 & wait"#,
        ),
        2,
    );
    let (sup, _) = SupervisorRef::start(spec).await.expect("start");
    let leaders = running_leaders(&rt, 2).await;
    let mut recorded = Vec::new();
    for &leader in &leaders {
        recorded.extend(
            eventually_some("a whole tree runs", || {
                let members = procfs::group(leader);
                let sleeps = members
                    .iter()
                    .filter(|p| procfs::cmdline(p.pid) == "sleep 100")
                    .count();
                (members.len() == 5 && sleeps == 3).then_some(members)
            })
            .await,
        );
    }

    within("the shutdown", sup.shutdown()).await;
    assert!(rt.containers().await.is_empty());
    for leader in leaders {
        assert_nothing_left(leader, &recorded);
    }
    let zombies: Vec<_> = recorded
        .iter()
        .filter_map(|p| procfs::stat(p.pid).filter(|q| q.start == p.start && q.state == 'Z'))
        .collect();
    assert!(zombies.is_empty(), "{zombies:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_child_stops_the_process_and_restart_child_starts_a_new_one() {
    let rt = runtime();
    let child = ChildSpec::container(
        "sleeper",
        Arc::new(rt.clone()),
        ContainerSpec::command("sleeper", ["sleep", "100"]),
    )
    .restart(RestartType::Permanent);
    let (sup, _) = SupervisorRef::start(SupervisorSpec::new("svc").child(child))
        .await
        .expect("start");
    let first = running_leaders(&rt, 1).await[0];

    sup.terminate_child("sleeper").await.expect("terminate");
    assert!(rt.containers().await.is_empty());
    assert_nothing_left(first, &[]);
    let info = sup.which_children().await.expect("which_children");
    assert_eq!(info[0].state, ChildState::Stopped);

    sup.restart_child("sleeper").await.expect("restart");
    let second = running_leaders(&rt, 1).await[0];
    assert_ne!(first, second, "a new process");
    assert!(procfs::stat(second).is_some_and(|p| p.pgrp == second && p.state != 'Z'));

    sup.shutdown().await;
    assert!(rt.containers().await.is_empty());
    assert_nothing_left(second, &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_commands_fail_start_child_with_errors_that_name_them() {
    let rt = runtime();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::new("svc"))
        .await
        .expect("start");

    let program = "arbor-no-such-program-5c1e";
    let err = sup
        .start_child(ChildSpec::container(
            "ghost",
            Arc::new(rt.clone()),
            ContainerSpec::command("ghost", [program]),
        ))
        .await
        .expect_err("no such program");
    assert!(err.to_string().contains(program), "{err}");

    let dir = scratch("no-such-dir");
    let err = sup
        .start_child(ChildSpec::container(
            "lost",
            Arc::new(rt.clone()),
            ContainerSpec::command("lost", ["true"]).cwd(&dir),
        ))
        .await
        .expect_err("no such directory");
    let msg = err.to_string();
    assert!(msg.contains("cwd"), "{msg}");
    assert!(msg.contains(&dir.display().to_string()), "{msg}");

    let err = sup
        .start_child(ChildSpec::container(
            "empty",
            Arc::new(rt.clone()),
            ContainerSpec::command("empty", Vec::<String>::new()),
        ))
        .await
        .expect_err("no command");
    assert!(err.to_string().contains("command"), "{err}");

    // Nothing was left behind, and the supervisor keeps working.
    assert!(rt.containers().await.is_empty());
    sup.start_child(ChildSpec::container(
        "fine",
        Arc::new(rt.clone()),
        ContainerSpec::command("fine", ["sleep", "100"]),
    ))
    .await
    .expect("a good child starts");
    let leader = running_leaders(&rt, 1).await[0];
    sup.shutdown().await;
    assert!(rt.containers().await.is_empty());
    assert_nothing_left(leader, &[]);
}
