//! Restart intensity: the sliding window, escalation to the parent, and what
//! never counts. Paused clock.

use std::time::Duration;

use arbor::{testing::*, *};

fn inner(j: &Journal, max_restarts: u32, ids: &[&str]) -> SupervisorSpec {
    SupervisorSpec::new("inner")
        .intensity(max_restarts, Duration::from_secs(60))
        .children(ids.iter().map(|id| probe(id, j)))
}

async fn nested(sup: &SupervisorRef, id: &str) -> SupervisorRef {
    sup.child_supervisor(id)
        .await
        .unwrap()
        .expect("nested supervisor runs")
}

#[tokio::test(start_paused = true)]
async fn intensity_exceeded_escalates_to_the_parent_which_restarts_the_child_supervisor() {
    let j = Journal::new();
    let root =
        SupervisorSpec::new("root").child(ChildSpec::supervisor("inner", inner(&j, 1, &["w"])));
    let (sup, _) = SupervisorRef::start(root).await.unwrap();
    let mut ev = sup.events();
    let first = nested(&sup, "inner").await;

    exit_child(&first, "w", crash("1")).await;
    ev.wait_for(restarted("w")).await.unwrap();
    exit_child(&first, "w", crash("2")).await;
    let escalated = ev
        .wait_for(event_of("supervisor_escalated", "inner"))
        .await
        .unwrap();
    let Event::SupervisorEscalated { reason, .. } = escalated else {
        unreachable!()
    };
    assert!(reason.contains("restart intensity exceeded"), "{reason}");
    ev.wait_for(restarted("inner")).await.unwrap();

    let root_view = sup.which_children().await.unwrap();
    assert_eq!(root_view[0].restart_count, 1);
    let Some(ChildExit::Failed { reason }) = &root_view[0].last_exit else {
        panic!(
            "inner should have failed, not stopped: {:?}",
            root_view[0].last_exit
        );
    };
    assert!(reason.contains("gave up"), "{reason}");
    let second = nested(&sup, "inner").await;
    assert_eq!(
        second.which_children().await.unwrap()[0].restart_count,
        0,
        "a fresh inner supervisor"
    );
    assert_eq!(j.take().await, ["start w", "start w", "start w"]);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn escalation_stops_the_children_in_reverse_order_before_failing() {
    let j = Journal::new();
    let root = SupervisorSpec::new("root").child(ChildSpec::supervisor(
        "inner",
        inner(&j, 0, &["x", "y", "z"]),
    ));
    let (sup, _) = SupervisorRef::start(root).await.unwrap();
    let mut ev = sup.events();
    j.take().await;
    exit_child(&nested(&sup, "inner").await, "y", crash("y")).await;
    ev.wait_for(restarted("inner")).await.unwrap();
    assert_eq!(
        j.take().await,
        ["stop z", "stop x", "start x", "start y", "start z"]
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_transient_child_supervisor_is_restarted_after_it_escalates() {
    let j = Journal::new();
    let root = SupervisorSpec::new("root").child(
        ChildSpec::supervisor("inner", inner(&j, 0, &["w"])).restart(RestartType::Transient),
    );
    let (sup, _) = SupervisorRef::start(root).await.unwrap();
    let mut ev = sup.events();
    exit_child(&nested(&sup, "inner").await, "w", crash("w")).await;
    ev.wait_for(restarted("inner")).await.unwrap();
    assert_eq!(
        sup.which_children().await.unwrap()[0].state,
        ChildState::Running
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_root_supervisor_that_escalates_exits_and_stops_answering() {
    let j = Journal::new();
    let (sup, handle) = SupervisorRef::start(inner(&j, 0, &["w"])).await.unwrap();
    let mut ev = sup.events();
    exit_child(&sup, "w", crash("w")).await;
    ev.wait_for(event_of("supervisor_escalated", "inner"))
        .await
        .unwrap();
    handle.await.unwrap();
    assert!(matches!(
        sup.which_children().await,
        Err(SupervisorError::Unavailable(_))
    ));
}

#[tokio::test(start_paused = true)]
async fn restarts_outside_the_window_do_not_count() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .intensity(1, Duration::from_secs(10))
        .child(probe("a", &j));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    exit_child(&sup, "a", crash("1")).await;
    ev.wait_for(restarted("a")).await.unwrap();
    tokio::time::advance(Duration::from_secs(11)).await;
    exit_child(&sup, "a", crash("2")).await;
    ev.wait_for(restarted("a")).await.unwrap();
    exit_child(&sup, "a", crash("3")).await;
    ev.wait_for(event_of("supervisor_escalated", "app"))
        .await
        .unwrap();
    sup.wait().await;
}

#[tokio::test(start_paused = true)]
async fn under_escalate_the_window_counts_the_restarts_of_all_children() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .intensity(1, Duration::from_secs(60))
        .children(["a", "b"].map(|id| probe(id, &j)));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    exit_child(&sup, "a", crash("a")).await;
    ev.wait_for(restarted("a")).await.unwrap();
    exit_child(&sup, "b", crash("b")).await;
    ev.wait_for(event_of("supervisor_escalated", "app"))
        .await
        .unwrap();
    sup.wait().await;
}

#[tokio::test(start_paused = true)]
async fn operator_calls_never_count_as_restarts() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .intensity(0, Duration::from_secs(60))
        .children(["a", "b"].map(|id| probe(id, &j)));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    for _ in 0..5 {
        sup.restart_child("a").await.unwrap();
        sup.terminate_child("b").await.unwrap();
        sup.restart_child("b").await.unwrap();
    }
    let children = sup.which_children().await.unwrap();
    assert!(
        children
            .iter()
            .all(|c| c.state == ChildState::Running && c.restart_count == 0)
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn exits_that_are_not_restarted_never_count() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .intensity(0, Duration::from_secs(60))
        .child(probe("t", &j).restart(RestartType::Transient))
        .child(probe("tmp", &j).restart(RestartType::Temporary))
        .child(probe("a", &j));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    exit_child(&sup, "t", ProbeExit::Normal).await;
    ev.wait_for(event_of("child_completed", "t")).await.unwrap();
    exit_child(&sup, "tmp", crash("tmp")).await;
    ev.wait_for(event_of("child_exited", "tmp")).await.unwrap();
    assert_eq!(
        sup.count_children().await.unwrap().active,
        1,
        "still running with max_restarts 0"
    );
    sup.shutdown().await;
}
