//! OciRuntime over runc, directly: lifecycle, output, stop, limits, bad
//! input, orphan cleanup. Needs root, runc and /bin/busybox; skipped (with
//! a message saying how to enable it) otherwise.

use std::time::Duration;

use arbor::{
    ContainerSpec, ExitStatus, Runtime,
    runtime::{LogQuery, LogStream, Resources, Signal},
    testing::{
        BUSYBOX_IMAGE, assert_no_oci_leftovers, eventually_async, import_busybox, oci_runtime,
        within,
    },
};

fn busybox(name: &str, script: &str) -> ContainerSpec {
    let mut spec = ContainerSpec::shell(name, script);
    spec.image = Some(BUSYBOX_IMAGE.into());
    spec
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test]
async fn a_container_runs_from_the_image_and_reports_its_exit_code_and_output() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let spec = busybox("hello", "echo out; echo err >&2; hostname; exit 3");
    rt.pull_image(&spec).await.unwrap();
    let id = rt.create(&spec).await.unwrap();
    assert_eq!(rt.runc_list().await.unwrap(), vec![id.0.clone()]);
    rt.start(&id).await.unwrap();
    let status = within("the exit", rt.wait(&id)).await.unwrap();
    assert_eq!(status, ExitStatus::Code(3));
    // Two pipes: the order between the streams is not defined, within each it is.
    let stream = |s| LogQuery {
        stream: Some(s),
        tail: None,
    };
    let out = rt.logs(&id, stream(LogStream::Stdout)).await.unwrap();
    assert_eq!(out.text(), "out\nhello\n");
    let err = rt.logs(&id, stream(LogStream::Stderr)).await.unwrap();
    assert_eq!(err.text(), "err\n");
    assert!(!rt.oom_killed(&id).await.unwrap());
    rt.remove(&id).await.unwrap();
    assert_no_oci_leftovers(&rt).await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test]
async fn stop_kills_a_pid_1_that_ignores_sigterm_after_the_grace_and_remove_cleans_up() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let mut spec = busybox("sleeper", "unused");
    spec.command = vec!["sleep".into(), "600".into()];
    let id = rt.create(&spec).await.unwrap();
    rt.start(&id).await.unwrap();
    let pid = rt.pid(&id).await.unwrap().expect("running");
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());
    let out = rt.stop(&id, Duration::from_millis(300)).await.unwrap();
    assert!(out.killed, "sleep as PID 1 ignores SIGTERM: {out:?}");
    assert_eq!(out.status, ExitStatus::Signal(Signal::SIGKILL as i32));
    rt.remove(&id).await.unwrap();
    assert_no_oci_leftovers(&rt).await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test]
async fn a_shell_that_traps_sigterm_stops_gracefully_within_the_grace() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let spec = busybox(
        "graceful",
        "trap 'echo bye; exit 0' TERM; echo ready; while true; do sleep 0.05; done",
    );
    let id = rt.create(&spec).await.unwrap();
    rt.start(&id).await.unwrap();
    eventually_async("the trap is set", || {
        let rt = rt.clone();
        let id = id.clone();
        async move {
            rt.logs(&id, LogQuery::default())
                .await
                .unwrap()
                .text()
                .contains("ready")
        }
    })
    .await;
    let out = rt.stop(&id, Duration::from_secs(20)).await.unwrap();
    assert!(!out.killed);
    assert_eq!(out.status, ExitStatus::Code(0));
    assert!(
        rt.logs(&id, LogQuery::default())
            .await
            .unwrap()
            .text()
            .contains("bye")
    );
    rt.remove(&id).await.unwrap();
    assert_no_oci_leftovers(&rt).await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test]
async fn a_created_container_that_never_started_is_removed_with_its_init() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let id = rt.create(&busybox("idle", "exit 0")).await.unwrap();
    rt.remove(&id).await.unwrap();
    assert_no_oci_leftovers(&rt).await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test]
async fn pause_freezes_and_resume_thaws_and_stop_still_works_on_a_paused_container() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let id = rt.create(&busybox("paused", "sleep 600")).await.unwrap();
    rt.start(&id).await.unwrap();
    rt.pause(&id).await.unwrap();
    rt.resume(&id).await.unwrap();
    rt.pause(&id).await.unwrap();
    let out = rt.stop(&id, Duration::from_millis(200)).await.unwrap();
    assert!(out.killed);
    rt.remove(&id).await.unwrap();
    assert_no_oci_leftovers(&rt).await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test]
async fn a_container_over_its_memory_limit_is_oom_killed_and_reported_as_such() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    // `tail` keeps a line without newline (all of /dev/zero) in memory.
    let mut spec = busybox("hog", "head -c 200m /dev/zero | tail; exit 0");
    spec.resources = Resources {
        memory: Some("32Mi".parse().unwrap()),
        cpus: Some(0.5),
        pids: Some(64),
    };
    let id = rt.create(&spec).await.unwrap();
    rt.start(&id).await.unwrap();
    let status = within("the exit", rt.wait(&id)).await.unwrap();
    assert!(
        rt.oom_killed(&id).await.unwrap(),
        "not reported as OOM-killed ({status})"
    );
    rt.remove(&id).await.unwrap();
    assert_no_oci_leftovers(&rt).await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test]
async fn bad_images_are_clear_errors_that_leave_nothing() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let mut unknown = busybox("ghost", "true");
    unknown.image = Some("ghost:1".into());
    let err = rt.pull_image(&unknown).await.unwrap_err().to_string();
    assert!(
        err.contains("image not found locally: ghost:1 (import it with arbor image import)"),
        "{err}"
    );
    assert!(rt.create(&unknown).await.is_err());

    import_busybox(state.path(), "empty:1", &[]);
    let mut no_command = busybox("empty", "true");
    no_command.image = Some("empty:1".into());
    no_command.command.clear();
    let err = rt.create(&no_command).await.unwrap_err().to_string();
    assert!(err.contains("image empty:1 has no command"), "{err}");
    no_command.command = vec!["true".into()];
    let id = rt.create(&no_command).await.unwrap();
    rt.start(&id).await.unwrap();
    assert_eq!(rt.wait(&id).await.unwrap(), ExitStatus::Code(0));
    rt.remove(&id).await.unwrap();

    let mut missing = busybox("nothere", "true");
    missing.command = vec!["/no/such/program".into()];
    let err = rt.create(&missing).await.unwrap_err().to_string();
    assert!(err.contains("runc create"), "{err}");
    assert_no_oci_leftovers(&rt).await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test]
async fn a_new_runtime_removes_the_containers_and_bundles_a_crashed_node_left() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let id = rt.create(&busybox("orphan", "sleep 600")).await.unwrap();
    rt.start(&id).await.unwrap();
    let pid = rt.pid(&id).await.unwrap().unwrap();
    // The node "crashes": its runtime is forgotten without any cleanup.
    std::mem::forget(rt);
    let next = arbor::runtime::OciRuntime::builder()
        .state_dir(state.path())
        .build()
        .await
        .unwrap();
    assert!(next.orphans_removed() >= 1);
    arbor::testing::eventually("the orphan's init is gone", || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
            || arbor::runtime::process::procfs::stat(pid as i32).is_none_or(|p| p.is_zombie())
    })
    .await;
    // Its init was our child: reap it as the crashed node would have.
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
    assert_no_oci_leftovers(&next).await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test]
async fn dns_search_domains_from_the_overlay_are_the_containers_resolv_conf() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let mut spec = busybox("resolver", "cat /etc/resolv.conf");
    spec.dns_search = vec!["shop.corp.example".into(), "corp.example".into()];
    let id = rt.create(&spec).await.unwrap();
    rt.start(&id).await.unwrap();
    let status = within("the exit", rt.wait(&id)).await.unwrap();
    assert_eq!(status, ExitStatus::Code(0));
    let out = rt
        .logs(
            &id,
            LogQuery {
                stream: Some(LogStream::Stdout),
                tail: None,
            },
        )
        .await
        .unwrap();
    assert!(
        out.text()
            .starts_with("search shop.corp.example corp.example\n"),
        "{}",
        out.text()
    );
    rt.remove(&id).await.unwrap();
    assert_no_oci_leftovers(&rt).await;
}
