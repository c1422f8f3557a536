//! Container children on the recording mock runtime: lifecycle calls, exit
//! codes, panic actions (isolate, shutdown), grace periods, and cleanup when
//! actors are killed. Paused clock.

use std::{
    sync::{Arc, Mutex},
    time::Duration,
};

use arbor::{
    runtime::{
        Op,
        mock::{Call, MockRun},
    },
    testing::*,
    *,
};
use tokio::time::Instant;

fn web(rt: &MockRuntime, replicas: usize) -> SupervisorSpec {
    SupervisorSpec::service(
        "web",
        Arc::new(rt.clone()),
        ContainerSpec::shell("web", "serve"),
        replicas,
    )
}

/// The steps called on containers named `name`, in order.
fn steps(calls: &[Call], name: &str) -> Vec<String> {
    calls
        .iter()
        .filter(|c| c.target() == name || c.target().starts_with(&format!("{name}#")))
        .map(|c| c.op().map_or("Abandon".to_owned(), |op| format!("{op:?}")))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_container_child_is_pulled_created_started_then_stopped_and_removed() {
    let rt = MockRuntime::new();
    let (sup, _) = SupervisorRef::start(web(&rt, 1)).await.unwrap();
    assert_eq!(rt.running().await, ["web-0"]);
    sup.shutdown().await;
    let calls = rt.calls().await;
    assert_eq!(
        steps(&calls, "web-0"),
        ["Pull", "Create", "Start", "Wait", "Stop", "Remove"]
    );
    assert!(
        calls
            .iter()
            .any(|c| matches!(c, Call::Stop { grace, .. } if *grace == Duration::from_secs(5))),
        "the default worker timeout is the grace: {calls:?}"
    );
    assert!(rt.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_crashed_container_is_removed_and_restarted_with_its_exit_code() {
    let rt = MockRuntime::new();
    rt.runs(
        "web-0",
        [MockRun::exit_code_after(Duration::from_secs(3), 3)],
    );
    let (sup, _) = SupervisorRef::start(web(&rt, 1)).await.unwrap();
    let mut ev = sup.events();
    let e = ev.wait_for(restarted("web-0")).await.unwrap();
    assert_eq!(
        e,
        Event::ChildRestarted {
            child: "web-0".into(),
            supervisor: "web".into(),
            child_kind: ChildKind::Container,
            exit_code: Some(3),
            restart_count: 1
        }
    );
    let child = &sup.which_children().await.unwrap()[0];
    assert!(matches!(
        child.last_exit,
        Some(ChildExit::Exited {
            status: ExitStatus::Code(3),
            ..
        })
    ));
    assert_eq!(
        rt.containers().await.len(),
        1,
        "the crashed container was removed"
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_clean_exit_restarts_a_permanent_container_unless_a_rule_says_it_is_done() {
    let rt = MockRuntime::new();
    rt.runs("web-0", [MockRun::exit_code(0)]);
    rt.runs("batch", [MockRun::exit_code(0)]);
    let done = ExitRules::none().with([0], ExitAction::Done);
    let batch = ChildSpec::container(
        "batch",
        Arc::new(rt.clone()),
        ContainerSpec::shell("batch", "work"),
    );
    let (sup, _) = SupervisorRef::start(web(&rt, 1).child(batch.exit_rules(done)))
        .await
        .unwrap();
    let mut ev = sup.events();
    ev.wait_for(restarted("web-0")).await.unwrap();
    if sup.which_children().await.unwrap()[1].state != ChildState::Completed {
        ev.wait_for(event_of("child_completed", "batch"))
            .await
            .unwrap();
    }
    let children = sup.which_children().await.unwrap();
    assert_eq!(
        (children[0].state, children[0].restart_count),
        (ChildState::Running, 1)
    );
    assert_eq!(children[1].state, ChildState::Completed);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn isolate_keeps_the_failed_container_calls_the_hook_and_never_restarts() {
    let rt = MockRuntime::new();
    rt.runs(
        "web-1",
        [MockRun::exit_code_after(Duration::from_secs(1), 42)],
    );
    let seen = Arc::new(Mutex::new(Vec::<Isolated>::new()));
    let hook = seen.clone();
    let spec = web(&rt, 2)
        .map_children(|c| c.on_panic(PanicAction::Isolate))
        .on_isolate(move |i| hook.lock().unwrap().push(i.clone()));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    let e = ev
        .wait_for(event_of("child_isolated", "web-1"))
        .await
        .unwrap();
    let Event::ChildIsolated {
        exit_code,
        retained: container,
        ..
    } = e
    else {
        unreachable!()
    };
    assert_eq!(exit_code, Some(42));
    let kept = ContainerId(container.expect("a container was kept"));

    let isolated = seen.lock().unwrap().clone();
    assert_eq!(isolated.len(), 1);
    assert_eq!(
        (isolated[0].supervisor.as_str(), isolated[0].child.as_str()),
        ("web", "web-1")
    );
    assert_eq!(isolated[0].retained.as_ref(), Some(&kept.0));

    let containers = rt.containers().await;
    let c = containers
        .iter()
        .find(|c| c.id == kept)
        .expect("kept for debugging");
    assert_eq!(
        c.state,
        ContainerState::Exited {
            status: ExitStatus::Code(42)
        }
    );
    assert!(
        !rt.calls()
            .await
            .contains(&Call::Remove { id: kept.clone() })
    );

    tokio::time::sleep(Duration::from_secs(3600)).await;
    let children = sup.which_children().await.unwrap();
    assert_eq!(
        (children[1].state, children[1].restart_count),
        (ChildState::Isolated, 0)
    );
    assert_eq!(
        children[0].state,
        ChildState::Running,
        "the sibling is untouched"
    );

    sup.shutdown().await;
    assert!(
        rt.containers().await.is_empty(),
        "shutdown removes the isolated container too"
    );
}

#[tokio::test(start_paused = true)]
async fn restarting_an_isolated_child_removes_its_kept_container() {
    let rt = MockRuntime::new();
    rt.runs("web-0", [MockRun::exit_code(1)]);
    let spec = web(&rt, 1).map_children(|c| c.on_panic(PanicAction::Isolate));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    ev.wait_for(event_of("child_isolated", "web-0"))
        .await
        .unwrap();
    sup.restart_child("web-0").await.unwrap();
    let containers = rt.containers().await;
    assert_eq!(containers.len(), 1);
    assert!(matches!(
        containers[0].state,
        ContainerState::Running { .. }
    ));
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_shutdown_action_stops_every_replica_of_the_service() {
    let rt = MockRuntime::new();
    rt.runs(
        "web-1",
        [MockRun::exit_code_after(Duration::from_secs(2), 1)],
    );
    let spec = web(&rt, 3).map_children(|c| c.on_panic(PanicAction::Shutdown));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    let e = ev
        .wait_for(event_of("service_shutdown", "web"))
        .await
        .unwrap();
    let Event::ServiceShutdown { reason, .. } = e else {
        unreachable!()
    };
    assert_eq!(reason, "child web-1 exit code 1");
    assert!(rt.running().await.is_empty());
    assert!(
        rt.containers().await.is_empty(),
        "every container was stopped and removed"
    );
    let states: Vec<ChildState> = sup
        .which_children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.state)
        .collect();
    assert_eq!(states, [ChildState::Shutdown; 3]);
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert!(rt.running().await.is_empty(), "nothing restarts by itself");
    sup.restart_child("web-0").await.unwrap();
    assert_eq!(
        rt.running().await,
        ["web-0"],
        "an operator can bring a replica back"
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_start_removes_the_created_container_and_is_retried() {
    let rt = MockRuntime::new();
    rt.fail_next("web-0", Op::Start, 2, "no space left on device");
    let (sup, _) = SupervisorRef::start(web(&rt, 1)).await.unwrap();
    let mut ev = sup.events();
    ev.wait_for(restarted("web-0")).await.unwrap();
    let calls = rt.calls().await;
    assert_eq!(
        steps(&calls, "web-0"),
        [
            "Pull", "Create", "Start", "Remove", "Pull", "Create", "Start", "Remove", "Pull",
            "Create", "Start", "Wait"
        ]
    );
    assert_eq!(rt.containers().await.len(), 1);
    // Two restart attempts (the first failed): two restarts.
    let child = &sup.which_children().await.unwrap()[0];
    assert_eq!((child.state, child.restart_count), (ChildState::Running, 2));
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_start_that_keeps_failing_escalates_and_names_the_failed_step() {
    let rt = MockRuntime::new();
    rt.fail_next("web-0", Op::Pull, 100, "registry unreachable");
    let spec = web(&rt, 1).intensity(2, Duration::from_secs(60));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    let failed = ev
        .wait_for(event_of("child_start_failed", "web-0"))
        .await
        .unwrap();
    let Event::ChildStartFailed { error, .. } = failed else {
        unreachable!()
    };
    assert_eq!(
        error,
        "failed to pull image for container web-0: injected fault: registry unreachable"
    );
    ev.wait_for(event_of("supervisor_escalated", "web"))
        .await
        .unwrap();
    sup.wait().await;
}

#[tokio::test(start_paused = true)]
async fn a_container_ignoring_sigterm_is_killed_after_its_grace() {
    let rt = MockRuntime::new();
    rt.ignore_sigterm("web-0");
    let spec = web(&rt, 1).map_children(|c| c.shutdown(Shutdown::Timeout(Duration::from_secs(7))));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let t0 = Instant::now();
    sup.shutdown().await;
    assert_eq!(t0.elapsed(), Duration::from_secs(7));
    assert!(rt.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn brutal_kill_stops_a_container_with_no_grace() {
    let rt = MockRuntime::new();
    rt.ignore_sigterm("web-0");
    let spec = web(&rt, 1).map_children(|c| c.shutdown(Shutdown::BrutalKill));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let t0 = Instant::now();
    sup.shutdown().await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert!(
        rt.calls()
            .await
            .iter()
            .any(|c| matches!(c, Call::Stop { grace, .. } if grace.is_zero()))
    );
    assert!(rt.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn containers_are_abandoned_not_leaked_when_their_supervisor_is_killed() {
    let rt = MockRuntime::new();
    let (sup, _) = SupervisorRef::start(web(&rt, 3)).await.unwrap();
    assert_eq!(rt.running().await.len(), 3);
    sup.actor().kill();
    sup.wait().await;
    while !rt.containers().await.is_empty() {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let abandoned = rt
        .calls()
        .await
        .iter()
        .filter(|c| matches!(c, Call::Abandon { .. }))
        .count();
    assert_eq!(abandoned, 3);
}

#[tokio::test(start_paused = true)]
async fn a_lost_exit_notification_stops_removes_and_restarts_the_container() {
    let rt = MockRuntime::new();
    rt.fail_next("web-0", Op::Wait, 1, "wait interrupted");
    let (sup, _) = SupervisorRef::start(web(&rt, 1)).await.unwrap();
    let mut ev = sup.events();
    ev.wait_for(restarted("web-0")).await.unwrap();
    let calls = rt.calls().await;
    assert_eq!(
        steps(&calls, "web-0")[..6],
        ["Pull", "Create", "Start", "Wait", "Stop", "Remove"]
    );
    let Some(ChildExit::Failed { reason }) = &sup.which_children().await.unwrap()[0].last_exit
    else {
        panic!("expected a failure")
    };
    assert!(reason.contains("wait interrupted"), "{reason}");
    assert_eq!(rt.containers().await.len(), 1);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_panicking_isolate_hook_does_not_take_the_supervisor_down() {
    let rt = MockRuntime::new();
    rt.runs("web-0", [MockRun::exit_code(2)]);
    let spec = web(&rt, 1)
        .map_children(|c| c.on_panic(PanicAction::Isolate))
        .on_isolate(|_| panic!("hook bug"));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    ev.wait_for(event_of("child_isolated", "web-0"))
        .await
        .unwrap();
    assert_eq!(
        sup.which_children().await.unwrap()[0].state,
        ChildState::Isolated
    );
    sup.shutdown().await;
    assert!(rt.containers().await.is_empty());
}
