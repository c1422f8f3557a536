//! The event bus: every subscriber gets every event, in order; a subscriber
//! that never reads does not slow the supervisor; events serialize to JSON.

use std::time::Duration;

use arbor::{testing::*, *};

#[tokio::test(start_paused = true)]
async fn every_subscriber_gets_every_event_in_order() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::new("app").child(probe("a", &j)))
        .await
        .unwrap();
    let mut first = sup.events();
    let mut second = sup.events();
    for n in 0..3 {
        exit_child(&sup, "a", crash(&format!("crash {n}"))).await;
        first.wait_for(restarted("a")).await.unwrap();
    }
    sup.shutdown().await;
    let drain = |s: &mut EventStream| {
        let mut kinds = Vec::new();
        while let Some(e) = s.try_recv() {
            kinds.push(e.kind());
        }
        kinds
    };
    let rest_of_first = drain(&mut first);
    let all_of_second = drain(&mut second);
    let expected_cycle = ["child_exited", "child_started", "container_restarted"];
    assert_eq!(all_of_second[..9], expected_cycle.repeat(3)[..]);
    assert_eq!(all_of_second[9..], ["child_stopped"]);
    assert_eq!(
        rest_of_first,
        ["child_stopped"],
        "first already read the cycles"
    );
}

#[tokio::test(start_paused = true)]
async fn a_subscriber_that_never_reads_does_not_block_the_supervisor() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .intensity(10_000, Duration::from_secs(1))
        .child(probe("a", &j));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let stalled = sup.events();
    let mut reader = sup.events();
    for n in 0..2_000 {
        exit_child(&sup, "a", crash(&format!("{n}"))).await;
        reader.wait_for(restarted("a")).await.unwrap();
    }
    assert_eq!(sup.which_children().await.unwrap()[0].restart_count, 2_000);
    drop(stalled);
    sup.shutdown().await;
}

#[tokio::test(start_paused = true)]
async fn a_dropped_subscriber_is_forgotten() {
    let j = Journal::new();
    let (sup, _) = SupervisorRef::start(SupervisorSpec::new("app").child(probe("a", &j)))
        .await
        .unwrap();
    drop(sup.events());
    let mut kept = sup.events();
    exit_child(&sup, "a", crash("x")).await;
    kept.wait_for(restarted("a")).await.unwrap();
    sup.shutdown().await;
}

#[test]
fn events_serialize_with_their_kind_and_fixed_fields() {
    let e = Event::CrashLoopBackOff {
        id: "web-0".into(),
        service: "web".into(),
        restart_count: 6,
        delay: Duration::from_secs(20),
    };
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"event": "crash_loop_back_off", "id": "web-0", "service": "web", "restart_count": 6, "delay": "20s"})
    );
    let back: Event = serde_json::from_value(json).unwrap();
    assert_eq!(back, e);
}
