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
    let expected_cycle = ["child_exited", "child_started", "child_restarted"];
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
        child: "web-0".into(),
        supervisor: "web".into(),
        child_kind: ChildKind::Container,
        restart_count: 6,
        delay: Duration::from_secs(20),
        resumed: false,
    };
    let json = serde_json::to_value(&e).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"event": "crash_loop_back_off", "supervisor": "web", "child": "web-0", "child_kind": "container", "restart_count": 6, "delay": "20s"})
    );
    let back: Event = serde_json::from_value(json).unwrap();
    assert_eq!(back, e);
    // A back-off resumed from an earlier agent says so.
    let resumed = Event::CrashLoopBackOff {
        child: "web-0".into(),
        supervisor: "web".into(),
        child_kind: ChildKind::Container,
        restart_count: 6,
        delay: Duration::from_secs(3),
        resumed: true,
    };
    let json = serde_json::to_value(&resumed).unwrap();
    assert_eq!(json["resumed"], true, "{json}");
}

#[tokio::test(start_paused = true)]
async fn a_stalled_subscriber_keeps_only_its_capacity_and_counts_what_it_lost() {
    let j = Journal::new();
    let spec = SupervisorSpec::new("app")
        .intensity(100, Duration::from_secs(60))
        .child(probe("a", &j));
    let (sup, _) = SupervisorRef::start(spec).await.unwrap();
    let bus = sup.event_bus().clone();
    let mut stalled = bus.subscribe_with_capacity(4);
    let mut reader = sup.events();
    for n in 0..5 {
        exit_child(&sup, "a", crash(&format!("crash {n}"))).await;
        reader.wait_for(restarted("a")).await.unwrap();
    }
    // 5 cycles of 3 events: the reader got them all, the stalled one kept 4.
    let mut kept = Vec::new();
    while let Some(e) = stalled.try_recv() {
        kept.push(e.kind());
    }
    assert_eq!(
        kept,
        [
            "child_exited",
            "child_started",
            "child_restarted",
            "child_exited"
        ]
    );
    assert_eq!(stalled.dropped(), 11);
    assert_eq!(reader.dropped(), 0);
    assert_eq!(bus.dropped(), 11);
    // Once read, it receives again.
    exit_child(&sup, "a", crash("after")).await;
    stalled.wait_for(restarted("a")).await.unwrap();
    assert_eq!(stalled.dropped(), 11);
    sup.shutdown().await;
}
