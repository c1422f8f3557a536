//! Operator calls: start_child, terminate_child, restart_child,
//! delete_child, which_children, count_children.

use std::{
    sync::{Arc, atomic::AtomicU32},
    time::Duration,
};

use arbor::{testing::*, *};

async fn ids(sup: &SupervisorRef) -> Vec<(String, ChildState)> {
    sup.which_children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| (c.id, c.state))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn start_child_appends_the_child_and_starts_it() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::new("app").child(probe("a", &j)))
        .await
        .unwrap();
    sup.start_child(probe("b", &j)).await.unwrap();
    assert_eq!(
        ids(&sup).await,
        [
            ("a".into(), ChildState::Running),
            ("b".into(), ChildState::Running)
        ]
    );
    sup.shutdown().await;
    assert_eq!(j.take().await, ["start a", "start b", "stop b", "stop a"]);
}

#[tokio::test(start_paused = true)]
async fn start_child_refuses_a_duplicate_id() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::new("app").child(probe("a", &j)))
        .await
        .unwrap();
    let err = sup.start_child(probe("a", &j)).await.unwrap_err();
    assert!(
        matches!(err, SupervisorError::AlreadyPresent(ref id) if id == "a"),
        "{err}"
    );
    assert_eq!(sup.count_children().await.unwrap().specs, 1);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_child_that_fails_to_start_is_not_added() {
    let j = Journal::new();
    let (sup, _) =
        SupervisorRef::start(SupervisorSpec::dynamic("pool").intensity(0, Duration::from_secs(1)))
            .await
            .unwrap();
    let err = sup
        .start_child(probe_failing("bad", &j, Arc::new(AtomicU32::new(1))))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("bad refused to start"), "{err}");
    assert!(ids(&sup).await.is_empty());
    sup.start_child(probe("good", &j))
        .await
        .expect("a failed start_child is not a restart");
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn terminate_child_is_idempotent_and_keeps_the_spec() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::new("app").child(probe("a", &j)))
        .await
        .unwrap();
    sup.terminate_child("a").await.unwrap();
    sup.terminate_child("a").await.unwrap();
    assert_eq!(ids(&sup).await, [("a".into(), ChildState::Stopped)]);
    assert_eq!(j.take().await, ["start a", "stop a"]);
    assert!(matches!(
        sup.terminate_child("nope").await,
        Err(SupervisorError::NotFound(_))
    ));
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_terminated_child_stays_stopped_across_a_group_restart() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .strategy(Strategy::OneForAll)
        .children(["a", "b", "c"].map(|id| probe(id, &j)));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let mut ev = sup.events();
    sup.terminate_child("b").await.unwrap();
    j.take().await;
    exit_child(&sup, "a", crash("a")).await;
    ev.wait_for(restarted("c")).await.unwrap();
    assert_eq!(j.take().await, ["stop c", "start a", "start c"]);
    assert_eq!(ids(&sup).await[1], ("b".into(), ChildState::Stopped));
    sup.restart_child("b").await.unwrap();
    assert_eq!(ids(&sup).await[1], ("b".into(), ChildState::Running));
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn terminating_a_temporary_child_removes_it() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app").child(probe("t", &j).restart(RestartType::Temporary));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    sup.terminate_child("t").await.unwrap();
    assert!(ids(&sup).await.is_empty());
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn restart_child_restarts_a_running_child_without_counting_it() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::new("app").child(probe("a", &j)))
        .await
        .unwrap();
    let before = sup.child::<ProbeMsg>("a").await.unwrap().unwrap().get_id();
    sup.restart_child("a").await.unwrap();
    let after = sup.child::<ProbeMsg>("a").await.unwrap().unwrap().get_id();
    assert_ne!(before, after, "a new actor");
    assert_eq!(j.take().await, ["start a", "stop a", "start a"]);
    assert_eq!(sup.which_children().await.unwrap()[0].restart_count, 0);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn delete_child_refuses_a_running_child_and_removes_a_stopped_one() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::new("app").child(probe("a", &j)))
        .await
        .unwrap();
    assert!(matches!(
        sup.delete_child("a").await,
        Err(SupervisorError::Running(_))
    ));
    sup.terminate_child("a").await.unwrap();
    sup.delete_child("a").await.unwrap();
    assert!(ids(&sup).await.is_empty());
    assert!(matches!(
        sup.restart_child("a").await,
        Err(SupervisorError::NotFound(_))
    ));
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn count_children_counts_specs_active_supervisors_and_workers() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .child(probe("a", &j))
        .child(probe("b", &j))
        .child(ChildSpec::supervisor(
            "inner",
            SupervisorSpec::new("inner").child(probe("x", &j)),
        ));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    sup.terminate_child("b").await.unwrap();
    assert_eq!(
        sup.count_children().await.unwrap(),
        ChildCounts {
            specs: 3,
            active: 2,
            supervisors: 1,
            workers: 2
        }
    );
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn max_children_is_enforced() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::dynamic("pool").max_children(2))
        .await
        .unwrap();
    sup.start_child(probe("a", &j)).await.unwrap();
    sup.start_child(probe("b", &j)).await.unwrap();
    let err = sup.start_child(probe("c", &j)).await.unwrap_err();
    assert!(matches!(err, SupervisorError::MaxChildren(2)), "{err}");
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn children_added_without_waiting_all_start() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::dynamic("pool"))
        .await
        .unwrap();
    let mut ev = sup.events();
    for i in 0..100 {
        sup.start_child_nowait(probe(&format!("w{i}"), &j)).unwrap();
    }
    // The supervisor answers at once: it does not wait for the starts.
    assert_eq!(sup.count_children().await.unwrap().specs, 100);
    for _ in 0..100 {
        ev.wait_for(|e| matches!(e, Event::ChildStarted { .. }))
            .await
            .unwrap();
    }
    assert_eq!(sup.count_children().await.unwrap().active, 100);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_dynamic_supervisor_with_churn_keeps_finding_its_children() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(
        SupervisorSpec::dynamic("pool").intensity(1000, Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let mut ev = sup.events();
    let specs = (0..300).map(|i| probe(&format!("t{i}"), &j).restart(RestartType::Temporary));
    assert!(
        sup.start_children(specs.collect())
            .await
            .unwrap()
            .iter()
            .all(Result::is_ok)
    );
    sup.start_child(probe("keeper", &j)).await.unwrap();
    for i in 0..250 {
        exit_child(&sup, &format!("t{i}"), crash("done")).await;
        ev.wait_for(event_of("child_exited", &format!("t{i}")))
            .await
            .unwrap();
    }
    let ids: Vec<String> = sup
        .which_children()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids.len(), 51);
    assert_eq!(
        (ids[0].as_str(), ids[49].as_str(), ids[50].as_str()),
        ("t250", "t299", "keeper")
    );

    // After the slab was compacted, exits and operator calls still find their child.
    exit_child(&sup, "keeper", crash("again")).await;
    ev.wait_for(restarted("keeper")).await.unwrap();
    sup.terminate_child("t299").await.unwrap();
    assert_eq!(sup.count_children().await.unwrap().specs, 50);
    sup.shutdown().await;
}
