//! The overlay actor's decisions on the recording fake (no root): address
//! and subnet allocation, the segment reference count, attach failures
//! (best effort or a failed job, per `network.required`), and failed
//! detaches and teardowns that are reported and retried, never forgotten.

use std::{
    collections::BTreeSet,
    net::{IpAddr, Ipv4Addr},
    time::Duration,
};

use arbor::{
    ContainerId, Event, FailReason, JobSpec, JobState,
    actors::overlay_actor::{
        AttachRequest, ISOLATED, Overlay, OverlayConfig, OverlayError, SegmentKey,
        allocator::{AddressPool, AllocError, Ipv4Net, SubnetPool},
    },
    overlay::FaultOp,
    runtime::mock::MockRun,
    spec::NetworkSpec,
    testing::{Entry, JobHarness, Journal, OverlayOp, RuntimeOp, eventually_async},
};

fn net(s: &str) -> Ipv4Net {
    s.parse().unwrap()
}

// ---- allocator -------------------------------------------------------

#[test]
fn an_address_is_never_handed_out_twice_while_held() {
    let mut pool = AddressPool::new("web", net("10.231.0.0/28"));
    let mut held = BTreeSet::new();
    // .0 network, .1 gateway, .15 broadcast: 13 for attachments.
    for _ in 0..13 {
        let a = pool.take().unwrap();
        assert!(held.insert(a), "{a} twice");
        assert!(a > Ipv4Addr::new(10, 231, 0, 1) && a < Ipv4Addr::new(10, 231, 0, 15));
    }
    assert_eq!(pool.held(), 13);
}

#[test]
fn a_released_address_is_reused_after_the_others() {
    let mut pool = AddressPool::new("web", net("10.231.0.0/29"));
    let a = pool.take().unwrap();
    let b = pool.take().unwrap();
    assert!(pool.release(a));
    assert!(!pool.release(a), "released twice");
    // Round robin: the freed one rests while others are free (.4 .5 .6)...
    for _ in 0..3 {
        let c = pool.take().unwrap();
        assert!(c != a && c != b, "{c}");
    }
    // ...then it comes back, and the subnet is full.
    assert_eq!(pool.take().unwrap(), a);
    assert!(pool.take().is_err());
}

#[test]
fn an_exhausted_subnet_names_the_segment_and_the_subnet() {
    let mut pool = AddressPool::new("web", net("10.231.0.8/29"));
    for _ in 0..5 {
        pool.take().unwrap();
    }
    let err = pool.take().unwrap_err();
    assert!(matches!(err, AllocError::SubnetExhausted { .. }));
    let text = err.to_string();
    assert!(text.contains("segment web"), "{text}");
    assert!(text.contains("10.231.0.8/29"), "{text}");
}

#[test]
fn subnets_are_carved_from_the_pool_and_an_exhausted_pool_names_segment_and_pool() {
    let mut pool = SubnetPool::new(net("10.231.0.0/24"), 26).unwrap();
    let subnets: BTreeSet<_> = (0..4)
        .map(|i| pool.take(&format!("s{i}")).unwrap())
        .collect();
    assert_eq!(subnets.len(), 4);
    for s in &subnets {
        assert_eq!(s.prefix(), 26);
        assert!(net("10.231.0.0/24").contains(s.network()));
    }
    let text = pool.take("fifth").unwrap_err().to_string();
    assert!(text.contains("segment fifth"), "{text}");
    assert!(text.contains("10.231.0.0/24"), "{text}");
    let first = *subnets.iter().next().unwrap();
    assert!(pool.release(first));
    assert_eq!(pool.take("again").unwrap(), first);
    assert!(pool.reserve(first).is_err(), "held already");
}

#[test]
fn bad_networks_and_carvings_are_errors_naming_the_value() {
    for bad in [
        "10.231.0.0",
        "10.231.0.1/24",
        "10.231.0.0/33",
        "x/8",
        "10.0.0.0/x",
    ] {
        let err = bad.parse::<Ipv4Net>().unwrap_err().to_string();
        assert!(err.contains(bad), "{err}");
    }
    let err = SubnetPool::new(net("10.231.0.0/24"), 30)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/30") && err.contains("10.231.0.0/24"),
        "{err}"
    );
    assert!(SubnetPool::new(net("10.231.0.0/24"), 16).is_err());
}

// ---- actor ---------------------------------------------------------------

async fn overlay(journal: &Journal) -> (Overlay, arbor::RecordingOverlay) {
    let fake = arbor::RecordingOverlay::new(journal.clone());
    let config = OverlayConfig {
        pool: net("10.231.0.0/24"),
        subnet_prefix: 28,
        netns_dir: "/nonexistent/arbor-test".into(),
        retry: Duration::from_secs(1),
        ..OverlayConfig::default()
    };
    (
        Overlay::start_with(fake.clone(), config).await.unwrap(),
        fake,
    )
}

async fn attach(o: &Overlay, c: &str, key: &SegmentKey) -> Result<Option<IpAddr>, OverlayError> {
    let ns = o.prepare().await?.expect("networked");
    o.attach_with(AttachRequest {
        container: ContainerId(c.into()),
        segment: key.clone(),
        netns: Some(ns),
        dns_search: vec!["app.zone".into(), "zone".into()],
    })
    .await
    .map(|a| a.address)
}

#[tokio::test(start_paused = true)]
async fn a_segment_is_set_up_once_and_torn_down_by_its_last_holder() {
    let journal = Journal::new();
    let (o, _) = overlay(&journal).await;
    let key = SegmentKey::from("web");
    o.acquire(&key).await.unwrap();
    o.acquire(&key).await.unwrap();
    let a = attach(&o, "a", &key).await.unwrap().unwrap();
    let b = attach(&o, "b", &key).await.unwrap().unwrap();
    assert_ne!(a, b);
    let list = o.list().await.unwrap();
    assert_eq!(list[0].holders, 2);
    assert_eq!(list[0].held_addresses, 2);
    assert_eq!(list[0].subnet.as_deref(), Some("10.231.0.0/28"));
    o.detach(&ContainerId("a".into())).await.unwrap();
    o.release(&key).await.unwrap();
    assert!(!journal.take().await.iter().any(|e| matches!(
        e,
        Entry::Overlay {
            op: OverlayOp::Teardown,
            ..
        }
    )));
    o.detach(&ContainerId("b".into())).await.unwrap();
    o.release(&key).await.unwrap();
    assert!(o.list().await.unwrap().is_empty());
    let journal = journal.take().await;
    assert_eq!(
        journal
            .iter()
            .filter(|e| matches!(
                e,
                Entry::Overlay {
                    op: OverlayOp::Teardown,
                    ..
                }
            ))
            .count(),
        1
    );
}

#[tokio::test(start_paused = true)]
async fn holders_on_the_node_network_cost_no_subnet_until_a_networked_one_comes() {
    let journal = Journal::new();
    let (o, _) = overlay(&journal).await;
    o.acquire_for("web", false).await.unwrap();
    assert_eq!(o.list().await.unwrap()[0].subnet, None);
    o.acquire_for("web", true).await.unwrap();
    let list = o.list().await.unwrap();
    assert_eq!(list[0].holders, 2);
    assert_eq!(list[0].subnet.as_deref(), Some("10.231.0.0/28"));
    let setups = journal.take().await;
    assert_eq!(
        setups.iter().filter(|e| *e == "overlay setup web").count(),
        2,
        "set up again with its subnet: {setups:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn the_same_name_in_two_isolation_networks_is_two_segments_with_two_subnets() {
    let journal = Journal::new();
    let (o, _) = overlay(&journal).await;
    o.acquire(SegmentKey::new("web", "default")).await.unwrap();
    o.acquire(SegmentKey::new("web", "blue")).await.unwrap();
    o.acquire(SegmentKey::new("web", ISOLATED)).await.unwrap();
    let list = o.list().await.unwrap();
    assert_eq!(list.len(), 3);
    let bridges: BTreeSet<_> = list.iter().map(|s| s.bridge.clone()).collect();
    let subnets: BTreeSet<_> = list.iter().map(|s| s.subnet.clone()).collect();
    assert_eq!(bridges.len(), 3);
    assert_eq!(subnets.len(), 3);
    assert!(
        bridges
            .iter()
            .all(|b| b.starts_with("arbb") && b.len() <= 15)
    );
}

#[tokio::test(start_paused = true)]
async fn attaching_needs_an_acquired_segment_and_a_prepared_namespace() {
    let journal = Journal::new();
    let (o, _) = overlay(&journal).await;
    let err = attach(&o, "a", &SegmentKey::from("nowhere"))
        .await
        .unwrap_err();
    assert!(matches!(err, OverlayError::NoSegment { .. }), "{err}");
    o.acquire("web").await.unwrap();
    let err = o
        .attach_with(AttachRequest {
            container: ContainerId("a".into()),
            segment: "web".into(),
            netns: Some("/run/netns/not-ours".into()),
            dns_search: Vec::new(),
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("/run/netns/not-ours"), "{err}");
    attach(&o, "a", &"web".into()).await.unwrap();
    let err = attach(&o, "a", &"web".into()).await.unwrap_err();
    assert!(matches!(err, OverlayError::AlreadyAttached { .. }), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_attach_holds_no_address() {
    let journal = Journal::new();
    let (o, fake) = overlay(&journal).await;
    o.acquire("web").await.unwrap();
    fake.fail_next(FaultOp::Attach, 1);
    let err = attach(&o, "a", &"web".into()).await.unwrap_err();
    assert!(err.to_string().contains("failed to attach a"), "{err}");
    let list = o.list().await.unwrap();
    assert_eq!(list[0].held_addresses, 0);
    assert!(list[0].attachments.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_detach_is_reported_kept_with_its_address_and_retried_until_it_succeeds() {
    let journal = Journal::new();
    let (o, fake) = overlay(&journal).await;
    let key = SegmentKey::from("web");
    o.acquire(&key).await.unwrap();
    let addr = attach(&o, "a", &key).await.unwrap().unwrap();
    fake.fail_next(FaultOp::Detach, 3);
    let err = o.detach(&ContainerId("a".into())).await.unwrap_err();
    assert!(err.to_string().contains("retried"), "{err}");
    // Released by its holder, the segment waits for the detach.
    o.release(&key).await.unwrap();
    let attachments = o.attachments().await.unwrap();
    assert_eq!(attachments.len(), 1);
    assert!(attachments[0].detaching);
    assert_eq!(attachments[0].address, Some(addr));
    let list = o.list().await.unwrap();
    assert!(list[0].tearing_down);
    assert_eq!(list[0].held_addresses, 1, "the address stays held");
    eventually_async("the detach is retried and the segment goes", || async {
        o.list().await.unwrap().is_empty()
    })
    .await;
    let journal = journal.take().await;
    assert_eq!(
        journal
            .iter()
            .filter(|e| matches!(
                e,
                Entry::OverlayFailed {
                    op: OverlayOp::Detach,
                    ..
                }
            ))
            .count(),
        3
    );
    let detach = journal
        .iter()
        .position(|e| e == "overlay detach a web")
        .unwrap();
    let teardown = journal
        .iter()
        .position(|e| e == "overlay teardown web")
        .unwrap();
    assert!(detach < teardown);
}

#[tokio::test(start_paused = true)]
async fn a_failed_teardown_is_retried_and_keeps_the_subnet_until_then() {
    let journal = Journal::new();
    let (o, fake) = overlay(&journal).await;
    o.acquire("web").await.unwrap();
    fake.fail_next(FaultOp::Teardown, 2);
    assert!(o.release("web").await.is_err());
    assert!(o.list().await.unwrap()[0].tearing_down);
    eventually_async("the teardown is retried", || async {
        o.list().await.unwrap().is_empty()
    })
    .await;
    assert!(
        journal
            .take()
            .await
            .iter()
            .any(|e| e == "overlay teardown web")
    );
}

#[tokio::test(start_paused = true)]
async fn an_unusable_prefix_is_refused_naming_it() {
    let config = OverlayConfig {
        prefix: "Way-Too-Long".into(),
        ..OverlayConfig::default()
    };
    let err = Overlay::start_with(arbor::RecordingOverlay::default(), config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("Way-Too-Long"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn a_restarted_actor_keeps_the_address_of_a_leftover_it_could_not_remove() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::new();
    let fake = arbor::RecordingOverlay::new(journal.clone());
    let config = OverlayConfig {
        pool: net("10.231.0.0/28"),
        subnet_prefix: 28,
        state_file: Some(dir.path().join("overlay.json")),
        ..OverlayConfig::default()
    };
    let crashed = Overlay::start_with(fake.clone(), config.clone())
        .await
        .unwrap();
    crashed.acquire("web").await.unwrap();
    let old = attach(&crashed, "old", &"web".into())
        .await
        .unwrap()
        .unwrap();
    crashed.actor().unwrap().kill();
    crashed.actor().unwrap().get_cell().wait(None).await.ok();

    // The leftover cannot be removed at start-up: it stays, with its address.
    fake.fail_next(FaultOp::Detach, 1);
    let restarted = Overlay::start_with(fake.clone(), config).await.unwrap();
    let left = restarted.attachments().await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(left[0].detaching);
    restarted.acquire("web").await.unwrap();
    let new = attach(&restarted, "new", &"web".into())
        .await
        .unwrap()
        .unwrap();
    assert_ne!(new, old, "the leftover still holds {old}");
    let journal = journal.take().await;
    assert!(journal.iter().any(|e| e == "overlay sweep arb"));
    // The retry removes it.
    eventually_async("the leftover is removed", || async {
        restarted.attachments().await.unwrap().len() == 1
    })
    .await;
}

// ---- jobs ----------------------------------------------------------------

fn networked_job(required: bool) -> JobSpec {
    let mut spec = JobSpec::command("backup", ["true"]);
    spec.network = Some(NetworkSpec {
        segment: Some("store".into()),
        isolation: "default".into(),
        required,
        dns_search: vec!["prod.example".into()],
    });
    spec
}

#[tokio::test(start_paused = true)]
async fn a_networked_job_prepares_its_namespace_before_create_and_attaches_before_start() {
    let h = JobHarness::start(arbor::SystemClock).await;
    h.mock.default_run("backup", MockRun::exit_code(0));
    let record = h.run_once(networked_job(true)).await;
    assert!(matches!(record.status.state, JobState::Completed { .. }));
    let journal = h.journal.take().await;
    let pos = |p: &str| {
        journal
            .iter()
            .position(|e| e.to_string().starts_with(p))
            .unwrap_or_else(|| panic!("no {p} in {journal:?}"))
    };
    assert!(pos("overlay netns add") < pos("runtime create backup"));
    assert!(pos("runtime create backup") < pos("overlay attach backup#1 store"));
    assert!(pos("overlay attach backup#1 store") < pos("runtime start backup#1"));
    assert!(pos("overlay detach backup#1 store") < pos("overlay netns del"));
    assert!(pos("overlay netns del") < pos("runtime remove backup#1"));
    assert!(h.overlay.list().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_best_effort_job_runs_on_the_node_network_when_attach_fails_and_says_so() {
    let h = JobHarness::start(arbor::SystemClock).await;
    let mut events = h.events.subscribe();
    h.mock.default_run("backup", MockRun::exit_code(0));
    h.recording.fail_next(FaultOp::Attach, 1);
    let record = h.run_once(networked_job(false)).await;
    assert!(
        matches!(record.status.state, JobState::Completed { .. }),
        "{:?}",
        record.status.state
    );
    let warning = events
        .wait_for(|e| matches!(e, Event::OverlayWarning { .. }))
        .await
        .unwrap();
    let Event::OverlayWarning { job, message, .. } = warning else {
        unreachable!()
    };
    assert_eq!(job, "backup");
    assert!(message.contains("running without the overlay"), "{message}");
    // It ran in a container created again on the node's network; the
    // namespace and the segment are cleaned up.
    let journal = h.journal.take().await;
    let pos = |e: &str| {
        journal
            .iter()
            .position(|x| x == e)
            .unwrap_or_else(|| panic!("no {e} in {journal:?}"))
    };
    assert!(pos("runtime remove backup#1") < pos("runtime start backup#2"));
    assert!(!journal.iter().any(|e| e == "runtime start backup#1"));
    assert!(
        journal.iter().any(|e| matches!(
            e,
            Entry::Overlay {
                op: OverlayOp::NetnsDel,
                ..
            }
        )),
        "{journal:?}"
    );
    assert!(journal.iter().any(|e| e == "overlay teardown store"));
    assert!(h.overlay.list().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_required_network_fails_the_job_when_attach_fails_and_leaks_nothing() {
    let h = JobHarness::start(arbor::SystemClock).await;
    h.mock.default_run("backup", MockRun::exit_code(0));
    h.recording.fail_next(FaultOp::Attach, 1);
    let record = h.run_once(networked_job(true)).await;
    match record.status.state {
        JobState::Failed {
            reason: FailReason::OverlayAttach { message },
            ..
        } => assert!(message.contains("injected fault"), "{message}"),
        other => panic!("expected an overlay failure, got {other:?}"),
    }
    let journal = h.journal.take().await;
    assert!(!journal.iter().any(|e| matches!(
        e,
        Entry::Runtime {
            op: RuntimeOp::Start,
            ..
        }
    )));
    assert!(journal.iter().any(|e| matches!(
        e,
        Entry::Overlay {
            op: OverlayOp::NetnsDel,
            ..
        }
    )));
    assert!(journal.iter().any(|e| e == "runtime remove backup#1"));
    assert!(h.overlay.list().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_failed_detach_after_a_job_is_a_warning_event_and_is_retried() {
    let h = JobHarness::start(arbor::SystemClock).await;
    let mut events = h.events.subscribe();
    h.mock.default_run("backup", MockRun::exit_code(0));
    h.recording.fail_next(FaultOp::Detach, 1);
    let record = h.run_once(networked_job(true)).await;
    assert!(matches!(record.status.state, JobState::Completed { .. }));
    let warning = events
        .wait_for(|e| matches!(e, Event::OverlayWarning { .. }))
        .await
        .unwrap();
    let Event::OverlayWarning { message, .. } = warning else {
        unreachable!()
    };
    assert!(message.contains("failed to detach"), "{message}");
    eventually_async("the retried detach tears the segment down", || async {
        h.overlay.list().await.unwrap().is_empty()
    })
    .await;
    let journal = h.journal.take().await;
    assert!(journal.iter().any(|e| e == "overlay detach backup#1 store"));
    assert!(journal.iter().any(|e| e == "overlay teardown store"));
}

// ---- services --------------------------------------------------------------

#[tokio::test]
async fn a_networked_service_replica_is_attached_before_start_and_detached_when_removed() {
    let journal = Journal::new();
    let mock = arbor::MockRuntime::new();
    mock.journal(journal.clone());
    mock.default_run("web-0", MockRun::UntilStopped);
    let overlay = Overlay::start(arbor::RecordingOverlay::new(journal.clone()))
        .await
        .unwrap();
    let node = arbor::Node::start(
        arbor::NodeConfig::new(std::sync::Arc::new(mock.clone())).overlay(overlay.clone()),
    )
    .await
    .unwrap();
    let d = arbor::Deployment::from_yaml(
        "name: shop\nzone: corp.example\nservices:\n  web:\n    command: [serve]\n    network: {segment: front, required: true}\n",
    )
    .unwrap();
    node.deploy(&d).await.unwrap();
    let attached = arbor::testing::eventually_some_async("the replica is attached", || async {
        let a = overlay.attachments().await.unwrap();
        (a.len() == 1).then(|| a[0].clone())
    })
    .await;
    assert_eq!(attached.segment, SegmentKey::from("front"));
    assert!(attached.address.is_some());
    assert_eq!(attached.dns_search, ["shop.corp.example", "corp.example"]);
    let mut seen = journal.wait_for("runtime start web-0#1").await;
    seen.push("runtime start web-0#1".into());
    let pos = |p: &str| {
        seen.iter()
            .position(|e| e.to_string().starts_with(p))
            .unwrap_or_else(|| panic!("no {p} in {seen:?}"))
    };
    assert!(pos("overlay netns add") < pos("runtime create web-0"));
    assert!(pos("runtime create web-0") < pos("overlay attach web-0#1 front"));
    assert!(pos("overlay attach web-0#1 front") < pos("runtime start web-0#1"));
    node.stop_service("web").await.unwrap();
    eventually_async("the replica is detached and the segment gone", || async {
        overlay.list().await.unwrap().is_empty()
    })
    .await;
    let rest = journal.take().await;
    assert!(
        rest.iter().any(|e| e == "overlay detach web-0#1 front"),
        "{rest:?}"
    );
    assert!(
        rest.iter().any(|e| e == "overlay teardown front"),
        "{rest:?}"
    );
    node.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test(start_paused = true)]
async fn a_supervised_overlay_actor_restarted_after_a_panic_adopts_its_live_attachments() {
    let journal = Journal::new();
    let fake = arbor::RecordingOverlay::new(journal.clone());
    let config = OverlayConfig {
        pool: net("10.231.0.0/28"),
        subnet_prefix: 28,
        ..OverlayConfig::default()
    };
    let backend = fake.clone();
    let (child, o) = Overlay::supervised(
        "overlay",
        move || Ok(Box::new(backend.clone()) as Box<dyn arbor::OverlayBackend>),
        true,
        config,
    );
    let (sup, _) = arbor::SupervisorRef::start(arbor::SupervisorSpec::new("node").child(child))
        .await
        .unwrap();
    let key = SegmentKey::from("web");
    o.acquire(&key).await.unwrap();
    let a = attach(&o, "a", &key).await.unwrap().unwrap();
    let first = o.actor().unwrap().get_id();
    journal.take().await;

    o.cast(arbor::actors::overlay_actor::OverlayMsg::Internal(
        arbor::actors::overlay_actor::InternalMsg::inject_panic(),
    ));
    eventually_async("the overlay actor is restarted", || async {
        o.actor().is_some_and(|a| a.get_id() != first) && o.list().await.is_ok()
    })
    .await;
    // Nothing was torn down or swept: the attachment and its address live on.
    let done = journal.take().await;
    assert!(
        !done.iter().any(|e| matches!(
            e,
            Entry::Overlay {
                op: OverlayOp::Teardown
                    | OverlayOp::Detach
                    | OverlayOp::Sweep
                    | OverlayOp::NetnsDel,
                ..
            }
        )),
        "{done:?}"
    );
    let list = o.list().await.unwrap();
    assert_eq!(
        (list[0].holders, list[0].held_addresses),
        (1, 1),
        "{list:?}"
    );
    // Its address stays held: a new attachment gets another one.
    let b = attach(&o, "b", &key).await.unwrap().unwrap();
    assert_ne!(a, b);
    // And the adopted attachment is detached normally, once.
    o.detach(&ContainerId("a".into())).await.unwrap();
    o.detach(&ContainerId("b".into())).await.unwrap();
    o.release(&key).await.unwrap();
    assert!(o.list().await.unwrap().is_empty());
    let done = journal.take().await;
    let detaches = done
        .iter()
        .filter(|e| {
            matches!(
                e,
                Entry::Overlay {
                    op: OverlayOp::Detach,
                    ..
                }
            )
        })
        .count();
    assert_eq!(detaches, 2, "{done:?}");
    sup.shutdown().await;
}
