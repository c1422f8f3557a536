//! Restarts of user actors under arbor supervisors, per restart type and
//! strategy. Paused clock: nothing here waits on real time.

use std::{
    sync::{Arc, atomic::AtomicU32},
    time::Duration,
};

use arbor::{testing::*, *};

async fn start(spec: SupervisorSpec) -> (SupervisorRef, EventStream) {
    let (sup, _) = SupervisorRef::start(spec).await.expect("supervisor starts");
    let events = sup.events();
    (sup, events)
}

async fn info(sup: &SupervisorRef, id: &str) -> ChildInfo {
    sup.which_children()
        .await
        .unwrap()
        .into_iter()
        .find(|c| c.id == id)
        .unwrap_or_else(|| panic!("no child {id}"))
}

#[tokio::test(start_paused = true)]
async fn permanent_child_is_restarted_after_an_error_a_panic_and_a_normal_exit() {
    let j = Journal::new();
    let (sup, mut ev) = start(SupervisorSpec::new("app").child(probe("a", &j))).await;
    for (n, how) in [
        crash("bad input"),
        ProbeExit::Panic("boom".into()),
        ProbeExit::Normal,
    ]
    .into_iter()
    .enumerate()
    {
        assert!(exit_child(&sup, "a", how).await);
        ev.wait_for(restarted("a")).await.unwrap();
        assert_eq!(info(&sup, "a").await.restart_count, n as u32 + 1);
    }
    let a = info(&sup, "a").await;
    assert_eq!(a.state, ChildState::Running);
    assert_eq!(
        a.last_exit,
        Some(ChildExit::Normal {
            reason: Some("done".into())
        })
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn transient_child_is_restarted_after_a_crash_but_completes_after_a_normal_exit() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app").child(probe("t", &j).restart(RestartType::Transient));
    let (sup, mut ev) = start(spec).await;
    exit_child(&sup, "t", crash("oops")).await;
    ev.wait_for(restarted("t")).await.unwrap();
    exit_child(&sup, "t", ProbeExit::Normal).await;
    ev.wait_for(event_of("child_completed", "t")).await.unwrap();
    let t = info(&sup, "t").await;
    assert_eq!(t.state, ChildState::Completed);
    assert_eq!(t.restart_count, 1);
    assert!(t.actor.is_none());
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn temporary_child_is_never_restarted_even_by_one_for_all() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .strategy(Strategy::OneForAll)
        .child(probe("a", &j))
        .child(probe("tmp", &j).restart(RestartType::Temporary))
        .child(probe("c", &j));
    let (sup, mut ev) = start(spec).await;
    assert_eq!(j.take().await, ["start a", "start tmp", "start c"]);

    exit_child(&sup, "c", crash("c died")).await;
    ev.wait_for(restarted("c")).await.unwrap();
    assert_eq!(
        j.take().await,
        ["stop tmp", "stop a", "start a", "start c"],
        "the group restart stops the temporary sibling and does not bring it back"
    );
    let ids: Vec<String> = sup
        .which_children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["a", "c"]);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn temporary_child_that_crashes_is_dropped_without_touching_its_siblings() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .strategy(Strategy::OneForAll)
        .child(probe("a", &j))
        .child(probe("tmp", &j).restart(RestartType::Temporary));
    let (sup, mut ev) = start(spec).await;
    j.take().await;
    exit_child(&sup, "tmp", crash("gone")).await;
    ev.wait_for(event_of("child_exited", "tmp")).await.unwrap();
    assert_eq!(sup.count_children().await.unwrap().specs, 1);
    assert_eq!(info(&sup, "a").await.restart_count, 0);
    assert!(j.take().await.is_empty());
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_for_one_restarts_only_the_failed_child() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app").children(["a", "b", "c"].map(|id| probe(id, &j)));
    let (sup, mut ev) = start(spec).await;
    j.take().await;
    exit_child(&sup, "b", crash("b")).await;
    ev.wait_for(restarted("b")).await.unwrap();
    assert_eq!(j.take().await, ["start b"]);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn one_for_all_stops_the_others_in_reverse_order_then_starts_all_in_order() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .strategy(Strategy::OneForAll)
        .children(["a", "b", "c"].map(|id| probe(id, &j)));
    let (sup, mut ev) = start(spec).await;
    j.take().await;
    exit_child(&sup, "b", crash("b")).await;
    ev.wait_for(restarted("c")).await.unwrap();
    assert_eq!(
        j.take().await,
        ["stop c", "stop a", "start a", "start b", "start c"]
    );
    for id in ["a", "b", "c"] {
        assert_eq!(info(&sup, id).await.restart_count, 1, "{id}");
    }
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_restarts_exactly_the_later_siblings() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .strategy(Strategy::RestForOne)
        .children(["a", "b", "c", "d"].map(|id| probe(id, &j)));
    let (sup, mut ev) = start(spec).await;
    j.take().await;
    exit_child(&sup, "b", crash("b")).await;
    ev.wait_for(restarted("d")).await.unwrap();
    assert_eq!(
        j.take().await,
        ["stop d", "stop c", "start b", "start c", "start d"]
    );
    let counts: Vec<u32> = sup
        .which_children()
        .await
        .unwrap()
        .iter()
        .map(|c| c.restart_count)
        .collect();
    assert_eq!(counts, [0, 1, 1, 1]);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_group_restart_counts_as_one_restart() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .strategy(Strategy::OneForAll)
        .intensity(1, Duration::from_secs(60))
        .children(["a", "b", "c"].map(|id| probe(id, &j)));
    let (sup, mut ev) = start(spec).await;
    exit_child(&sup, "b", crash("once")).await;
    ev.wait_for(restarted("c")).await.unwrap();
    assert!(
        sup.count_children().await.is_ok(),
        "one group restart is within max_restarts 1"
    );
    exit_child(&sup, "a", crash("twice")).await;
    ev.wait_for(event_of("supervisor_escalated", "app"))
        .await
        .unwrap();
    sup.wait().await;
}

#[tokio::test(start_paused = true)]
async fn a_failed_restart_is_retried_through_the_mailbox_until_it_succeeds() {
    let j = Journal::new();
    let fail = Arc::new(AtomicU32::new(0));
    let spec = SupervisorSpec::new("app").child(probe_failing("a", &j, fail.clone()));
    let (sup, mut ev) = start(spec).await;
    fail.store(2, std::sync::atomic::Ordering::SeqCst);
    exit_child(&sup, "a", crash("crash")).await;
    ev.wait_for(restarted("a")).await.unwrap();
    let entries = j.take().await;
    assert_eq!(
        entries,
        ["start a", "failed start a", "failed start a", "start a"]
    );
    // Three restart attempts (two failed, one worked): three restarts.
    let a = info(&sup, "a").await;
    assert_eq!((a.state, a.restart_count), (ChildState::Running, 3));
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn every_failed_restart_attempt_counts_toward_the_limit() {
    let j = Journal::new();
    let fail = Arc::new(AtomicU32::new(0));
    let spec = SupervisorSpec::new("app")
        .intensity(2, Duration::from_secs(60))
        .child(probe_failing("a", &j, fail.clone()));
    let (sup, mut ev) = start(spec).await;
    fail.store(100, std::sync::atomic::Ordering::SeqCst);
    exit_child(&sup, "a", crash("crash")).await;
    ev.wait_for(event_of("supervisor_escalated", "app"))
        .await
        .unwrap();
    sup.wait().await;
    let failed = j
        .take()
        .await
        .iter()
        .filter(|e| *e == "failed start a")
        .count();
    assert_eq!(
        failed, 2,
        "the crash and the first failed attempt fit in 2; the second failed attempt is the 3rd restart"
    );
}

#[tokio::test(start_paused = true)]
async fn a_child_that_fails_its_first_start_is_retried_and_the_supervisor_starts() {
    let j = Journal::new();
    let fail = Arc::new(AtomicU32::new(1));
    let spec = SupervisorSpec::new("app")
        .child(probe_failing("a", &j, fail))
        .child(probe("b", &j));
    let (sup, _) = SupervisorRef::start(spec)
        .await
        .expect("supervisor starts despite a failing child");
    let mut ev = sup.events();
    if info(&sup, "a").await.state != ChildState::Running {
        ev.wait_for(restarted("a")).await.unwrap();
    }
    let entries = j.take().await;
    assert_eq!(
        entries,
        ["failed start a", "start b", "start a"],
        "one_for_one keeps starting independent siblings"
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn rest_for_one_does_not_start_later_siblings_until_the_failed_one_runs() {
    let j = Journal::new();
    let fail = Arc::new(AtomicU32::new(1));
    let spec = SupervisorSpec::new("app")
        .strategy(Strategy::RestForOne)
        .child(probe("a", &j))
        .child(probe_failing("b", &j, fail))
        .child(probe("c", &j));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    if info(&sup, "c").await.state != ChildState::Running {
        ev.wait_for(event_of("child_started", "c")).await.unwrap();
    }
    assert_eq!(
        j.take().await,
        ["start a", "failed start b", "start b", "start c"]
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn exits_are_published_with_their_cause() {
    let j = Journal::new();
    let (sup, mut ev) = start(SupervisorSpec::new("app").child(probe("a", &j))).await;
    exit_child(&sup, "a", ProbeExit::Panic("kaboom".into())).await;
    let exited = ev.wait_for(event_of("child_exited", "a")).await.unwrap();
    let Event::ChildExited {
        exit, exit_code, ..
    } = exited
    else {
        unreachable!()
    };
    assert!(exit.contains("kaboom"), "{exit}");
    assert_eq!(exit_code, None);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_spawn_closure_that_panics_is_a_failed_start_not_a_crash_of_the_supervisor() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .intensity(2, Duration::from_secs(60))
        .child(probe("a", &j))
        .child(ChildSpec::new(
            "bad",
            |_ctx| -> std::future::Ready<Result<ractor::ActorCell, ractor::ActorProcessingErr>> {
                panic!("no handler for you")
            },
        ));
    let (sup, _) = SupervisorRef::start(spec)
        .await
        .expect("the supervisor starts");
    let mut ev = sup.events();
    let e = ev
        .wait_for(event_of("child_start_failed", "bad"))
        .await
        .unwrap();
    let Event::ChildStartFailed { error, .. } = e else {
        unreachable!()
    };
    assert_eq!(error, "panicked: no handler for you");
    ev.wait_for(event_of("supervisor_escalated", "app"))
        .await
        .unwrap();
    sup.wait().await;
    assert_eq!(
        j.take().await,
        ["start a", "stop a"],
        "a was stopped in order, not killed"
    );
}
