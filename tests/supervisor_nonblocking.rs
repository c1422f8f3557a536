//! A supervisor never waits on a child: a long stop grace or a slow start
//! holds neither its mailbox nor the other children. Paused clock: every
//! "at once" below is zero virtual time.

use std::{sync::Arc, time::Duration};

use arbor::{
    runtime::{
        Op,
        fault::{FaultRuntime, Target},
    },
    testing::*,
    *,
};
use tokio::time::Instant;

async fn state_of(sup: &SupervisorRef, id: &str) -> ChildState {
    sup.which_children()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == id)
        .map(|c| c.state)
        .expect("the child")
}

#[tokio::test(start_paused = true)]
async fn a_child_in_a_60s_stop_grace_holds_neither_the_mailbox_nor_a_second_terminate() {
    let rt = MockRuntime::new();
    rt.ignore_sigterm("stubborn");
    let j = Journal::new();
    let stubborn = ChildSpec::container(
        "stubborn",
        Arc::new(rt.clone()),
        ContainerSpec::shell("stubborn", "trap '' TERM; serve"),
    )
    .shutdown(Shutdown::Timeout(Duration::from_secs(60)));
    let spec = SupervisorSpec::new("app")
        .child(stubborn)
        .child(probe("a", &j));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();

    let t0 = Instant::now();
    let first = tokio::spawn({
        let sup = sup.clone();
        async move { sup.terminate_child("stubborn").await }
    });
    while state_of(&sup, "stubborn").await != ChildState::Stopping {
        tokio::task::yield_now().await;
    }
    // During the grace, every call is answered at once.
    let children = sup.which_children().await.unwrap();
    assert_eq!(children.len(), 2);
    let tree = sup.snapshot().await.unwrap();
    assert_eq!(tree.children.len(), 2);
    sup.start_child(probe("b", &j)).await.unwrap();
    assert_eq!(state_of(&sup, "b").await, ChildState::Running);
    assert_eq!(t0.elapsed(), Duration::ZERO, "nothing waited for the grace");

    // A second terminate of the same child waits for the first one's end.
    let second = tokio::spawn({
        let sup = sup.clone();
        async move {
            let r = sup.terminate_child("stubborn").await;
            (r, Instant::now())
        }
    });
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished(), "queued behind the first terminate");
    first.await.unwrap().unwrap();
    assert_eq!(
        t0.elapsed(),
        Duration::from_secs(60),
        "killed after its grace"
    );
    let (result, answered) = second.await.unwrap();
    result.unwrap();
    assert_eq!(answered - t0, Duration::from_secs(60));
    assert_eq!(state_of(&sup, "stubborn").await, ChildState::Stopped);
    assert!(
        rt.running().await.is_empty(),
        "the container is gone: {:?}",
        rt.containers().await
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn two_hundred_children_with_a_slow_start_start_together_under_a_dynamic_supervisor() {
    let mock = MockRuntime::new();
    let faults = FaultRuntime::new(mock.clone());
    faults.slow(Target::All, Op::Start, Duration::from_millis(100));
    let runtime: Arc<dyn Runtime> = Arc::new(faults);
    let (sup, _) = SupervisorRef::start(SupervisorSpec::dynamic("pool"))
        .await
        .unwrap();
    let specs: Vec<ChildSpec> = (0..200)
        .map(|i| {
            let name = format!("w{i}");
            ChildSpec::container(&name, runtime.clone(), ContainerSpec::shell(&name, "serve"))
        })
        .collect();
    let t0 = Instant::now();
    let results = sup.start_children(specs).await.unwrap();
    let took = t0.elapsed();
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    assert!(
        took >= Duration::from_millis(100) && took <= Duration::from_millis(300),
        "200 starts of 100 ms took {took:?} (in sequence: 20 s)"
    );
    assert_eq!(sup.count_children().await.unwrap().active, 200);
    assert_eq!(mock.running().await.len(), 200);
    sup.shutdown().await;
    assert!(mock.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn five_replicas_with_a_2s_grace_stop_in_2s_not_10s() {
    let rt = MockRuntime::new();
    for i in 0..5 {
        rt.ignore_sigterm(&format!("web-{i}"));
    }
    let spec = SupervisorSpec::service(
        "web",
        Arc::new(rt.clone()),
        ContainerSpec::shell("web", "serve"),
        5,
    )
    .map_children(|c| c.shutdown(Shutdown::Timeout(Duration::from_secs(2))));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    assert_eq!(rt.running().await.len(), 5);
    let t0 = Instant::now();
    sup.shutdown().await;
    assert_eq!(t0.elapsed(), Duration::from_secs(2));
    assert!(rt.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_slow_starting_child_does_not_hold_its_independent_siblings_or_calls() {
    let mock = MockRuntime::new();
    let faults = FaultRuntime::new(mock.clone());
    faults.slow(Target::All, Op::Pull, Duration::from_secs(30));
    let runtime: Arc<dyn Runtime> = Arc::new(faults);
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::dynamic("pool"))
        .await
        .unwrap();
    let t0 = Instant::now();
    sup.start_child_nowait(ChildSpec::container(
        "slow",
        runtime.clone(),
        ContainerSpec::shell("slow", "serve"),
    ))
    .unwrap();
    while state_of(&sup, "slow").await != ChildState::Starting {
        tokio::task::yield_now().await;
    }
    sup.start_child(probe("quick", &j)).await.unwrap();
    assert_eq!(state_of(&sup, "quick").await, ChildState::Running);
    assert_eq!(state_of(&sup, "slow").await, ChildState::Starting);
    assert_eq!(t0.elapsed(), Duration::ZERO);
    let mut ev = sup.events();
    if state_of(&sup, "slow").await != ChildState::Running {
        ev.wait_for(event_of("child_started", "slow"))
            .await
            .unwrap();
    }
    assert_eq!(t0.elapsed(), Duration::from_secs(30));
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn the_replicas_of_a_service_whose_pull_is_slow_start_together() {
    let mock = MockRuntime::new();
    let faults = FaultRuntime::new(mock.clone());
    faults.slow(Target::All, Op::Pull, Duration::from_secs(3));
    let spec = SupervisorSpec::service(
        "web",
        Arc::new(faults),
        ContainerSpec::shell("web", "serve"),
        5,
    );
    let t0 = Instant::now();
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_secs(3) && took < Duration::from_secs(4),
        "5 pulls of 3 s took {took:?} (one after another: 15 s)"
    );
    assert_eq!(mock.running().await.len(), 5);
    sup.shutdown().await;
}
