//! Supervised services in real containers (OciRuntime over runc): the same
//! supervisor semantics as processes. Needs root, runc and /bin/busybox;
//! skipped (with a message saying how to enable it) otherwise.

use std::{sync::Arc, time::Duration};

use arbor::{
    BackoffPolicy, ContainerSpec, Event, OnLimit, PanicAction, SupervisorRef, SupervisorSpec,
    testing::{BUSYBOX_IMAGE, assert_no_oci_leftovers, event_of, oci_runtime, within},
};

fn crashing(name: &str) -> ContainerSpec {
    let mut spec = ContainerSpec::shell(name, "echo crashing; exit 3");
    spec.image = Some(BUSYBOX_IMAGE.into());
    spec
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashing_container_is_restarted_under_back_off_and_shutdown_removes_everything() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let spec = SupervisorSpec::service("crash", Arc::new(rt.clone()), crashing("crash"), 1)
        .on_limit(OnLimit::Backoff)
        .intensity(1, Duration::from_secs(300))
        .backoff(BackoffPolicy {
            initial: Duration::from_millis(50),
            multiplier: 2.0,
            max: Duration::from_millis(200),
            jitter: 0.0,
            reset_after: Duration::from_secs(600),
        });
    let (sup, _) = SupervisorRef::start(spec).await.expect("start");
    let mut events = sup.events();
    let e = within(
        "a crash-loop back-off",
        events.wait_for(event_of("crash_loop_back_off", "crash-0")),
    )
    .await
    .unwrap();
    let Event::CrashLoopBackOff { restart_count, .. } = e else {
        unreachable!()
    };
    assert!(restart_count >= 1, "restarted before backing off");
    // And it is restarted after the delay.
    within(
        "a restart after the back-off",
        events.wait_for(event_of("child_restarted", "crash-0")),
    )
    .await
    .unwrap();
    within("the shutdown", sup.shutdown()).await;
    assert_no_oci_leftovers(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolate_keeps_the_crashed_container_in_runc_until_shutdown() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let spec = SupervisorSpec::service("iso", Arc::new(rt.clone()), crashing("iso"), 1)
        .map_children(|c| c.on_panic(PanicAction::Isolate));
    let (sup, _) = SupervisorRef::start(spec).await.expect("start");
    let mut events = sup.events();
    let e = within(
        "the isolation",
        events.wait_for(event_of("child_isolated", "iso-0")),
    )
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
    assert_eq!(exit_code, Some(3));
    let kept = container.expect("a container was kept");
    assert_eq!(
        rt.runc_list().await.unwrap(),
        vec![kept.clone()],
        "visible in runc list"
    );
    let logs = arbor::Runtime::logs(&rt, &arbor::ContainerId(kept), Default::default())
        .await
        .unwrap();
    assert_eq!(logs.text(), "crashing\n");
    within("the shutdown", sup.shutdown()).await;
    assert_no_oci_leftovers(&rt).await;
}
