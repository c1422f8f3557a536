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

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
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
            give_up_after: None,
        });
    // Subscribed before the start: the first crash can come before
    // `start` returns.
    let bus = arbor::events::EventBus::new();
    let mut events = bus.subscribe();
    let (sup, _) = SupervisorRef::start_with_events(spec, bus)
        .await
        .expect("start");
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

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolate_keeps_the_crashed_container_in_runc_until_shutdown() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let spec = SupervisorSpec::service("iso", Arc::new(rt.clone()), crashing("iso"), 1)
        .map_children(|c| c.on_panic(PanicAction::Isolate));
    // Subscribed before the start: the first crash can come before
    // `start` returns.
    let bus = arbor::events::EventBus::new();
    let mut events = bus.subscribe();
    let (sup, _) = SupervisorRef::start_with_events(spec, bus)
        .await
        .expect("start");
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

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_probes_run_inside_the_container_through_runc_exec() {
    use arbor::{actors::container_actor::Probes, spec::ProbeSpec};
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    // `sleep` as PID 1 ignores SIGTERM: a short grace keeps stops short.
    let quick_stop = |c: arbor::ChildSpec| {
        c.shutdown(arbor::spec::Shutdown::Timeout(Duration::from_millis(100)))
    };
    // PID 1 is `sleep` only inside the container: a pass proves the probe
    // ran there.
    let mut ready = ContainerSpec::shell("ready", "exec sleep 300");
    ready.image = Some(BUSYBOX_IMAGE.into());
    let probes = Probes {
        readiness: Some(
            ProbeSpec::exec(["grep", "-q", "sleep", "/proc/1/cmdline"])
                .period(Duration::from_millis(100)),
        ),
        ..Probes::default()
    };
    let mut dead = ContainerSpec::shell("dead", "exec sleep 300");
    dead.image = Some(BUSYBOX_IMAGE.into());
    let failing = Probes {
        liveness: Some(
            ProbeSpec::exec(["sh", "-c", "echo not alive; exit 2"])
                .period(Duration::from_millis(100))
                .failure_threshold(1),
        ),
        ..Probes::default()
    };
    let oci = rt.clone();
    let rt: Arc<dyn arbor::runtime::Runtime> = Arc::new(rt);
    let root = SupervisorSpec::new("oci-probes")
        .child(arbor::ChildSpec::supervisor(
            "ready",
            SupervisorSpec::probed_service("ready", rt.clone(), ready, 1, Arc::new(probes))
                .map_children(quick_stop),
        ))
        .child(arbor::ChildSpec::supervisor(
            "dead",
            SupervisorSpec::probed_service("dead", rt.clone(), dead, 1, Arc::new(failing))
                .map_children(quick_stop)
                .on_limit(OnLimit::Backoff),
        ));
    // Subscribed before the start: `ready` may pass before it returns.
    let bus = arbor::EventBus::new();
    let mut events = bus.subscribe();
    let (sup, _) = SupervisorRef::start_with_events(root, bus)
        .await
        .expect("start");
    let mut ready_seen = false;
    let mut failed_seen = None;
    within("ready and probe_failed", async {
        while !(ready_seen && failed_seen.is_some()) {
            match events.recv().await {
                Some(Event::Ready { child, .. }) if child == "ready-0" => ready_seen = true,
                Some(Event::ProbeFailed { child, output, .. }) if child == "dead-0" => {
                    failed_seen = Some(output)
                }
                Some(_) => {}
                None => break,
            }
        }
    })
    .await;
    assert!(ready_seen);
    let output = failed_seen.unwrap();
    assert!(output.contains("exit code 2: not alive"), "{output}");
    within("the shutdown", sup.shutdown()).await;
    assert_no_oci_leftovers(&oci).await;
}
