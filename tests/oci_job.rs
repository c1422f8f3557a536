//! Jobs in real containers (OciRuntime over runc): init steps, exit code,
//! logs, cancel within the grace, OOM, and cleanup of container and bundle
//! after every failing step (FaultRuntime wrapped around OciRuntime).
//! Needs root, runc and /bin/busybox; skipped (with a message saying how to
//! enable it) otherwise.

use std::{path::Path, sync::Arc, time::Duration};

use arbor::{
    Executor, ExecutorConfig, FailReason, FaultRuntime, InitStep, JobSpec, JobState, JobTrigger,
    runtime::{Op, Resources, fault::Target},
    testing::{BUSYBOX_IMAGE, assert_no_oci_leftovers, oci_runtime, within},
};

fn job(name: &str, script: &str) -> JobSpec {
    let mut spec = JobSpec::shell(name, script);
    spec.image = Some(BUSYBOX_IMAGE.into());
    spec
}

async fn executor(state: &Path, rt: Arc<dyn arbor::Runtime>) -> Executor {
    Executor::start(ExecutorConfig::new(rt).state_dir(state.join("jobs")))
        .await
        .unwrap()
}

fn read(state: &Path, id: arbor::ExecutionId, file: &str) -> String {
    std::fs::read_to_string(
        state
            .join("jobs/executions")
            .join(id.to_string())
            .join(file),
    )
    .unwrap_or_default()
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_runs_its_init_steps_and_main_command_in_containers_and_keeps_their_output() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let ex = executor(state.path(), Arc::new(rt.clone())).await;
    let mut spec = job("report", "echo main on $(hostname); echo oops >&2; exit 4");
    spec.init = vec![InitStep {
        command: vec!["sh".into(), "-c".into(), "echo init".into()],
    }];
    spec.hostname = Some("reporter".into());
    let id = ex.run(spec, JobTrigger::Cli).await.unwrap();
    let record = within("the job", ex.wait(id)).await.unwrap();
    assert!(
        matches!(
            record.status.state,
            JobState::Failed {
                reason: FailReason::NonZeroExit { code: 4 },
                exit_code: Some(4)
            }
        ),
        "{:?}",
        record.status.state
    );
    assert_eq!(
        read(state.path(), id, "stdout.log"),
        "init\nmain on reporter\n"
    );
    assert_eq!(read(state.path(), id, "stderr.log"), "oops\n");
    assert_no_oci_leftovers(&rt).await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_container_job_within_its_grace_and_cleans_up() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let ex = executor(state.path(), Arc::new(rt.clone())).await;
    let mut spec = job("sleeper", "unused");
    spec.command = vec!["sleep".into(), "600".into()];
    let id = ex.run(spec, JobTrigger::Cli).await.unwrap();
    arbor::testing::eventually_async("the job runs", || {
        let ex = ex.clone();
        async move {
            ex.get(id)
                .await
                .ok()
                .flatten()
                .is_some_and(|r| r.status.state.name() == "running")
        }
    })
    .await;
    ex.cancel(id, Some(Duration::from_millis(200)))
        .await
        .unwrap();
    let record = within("the cancel", ex.wait(id)).await.unwrap();
    assert!(
        matches!(record.status.state, JobState::Cancelled),
        "{:?}",
        record.status.state
    );
    assert_no_oci_leftovers(&rt).await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_over_its_memory_limit_fails_as_out_of_memory() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let ex = executor(state.path(), Arc::new(rt.clone())).await;
    // `tail` keeps a line without newline (all of /dev/zero) in memory.
    let mut spec = job("hog", "unused");
    spec.command = vec!["tail".into(), "/dev/zero".into()];
    spec.resources = Resources {
        memory: Some("32Mi".parse().unwrap()),
        ..Resources::default()
    };
    let id = ex.run(spec, JobTrigger::Cli).await.unwrap();
    let record = within("the job", ex.wait(id)).await.unwrap();
    match &record.status.state {
        JobState::Failed {
            reason: reason @ FailReason::OutOfMemory { limit },
            ..
        } => {
            assert_eq!(limit.as_deref(), Some("32.0 MiB"));
            assert!(reason.to_string().starts_with("out of memory"), "{reason}");
        }
        other => panic!("expected an OOM failure, got {other:?}"),
    }
    assert_no_oci_leftovers(&rt).await;
}

#[cfg_attr(
    not(all(arbor_root, arbor_runc)),
    ignore = "needs root, runc and /bin/busybox (apt-get install runc busybox-static; run the tests as root, as .ci/run does)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_failing_step_still_removes_the_container_and_its_bundle() {
    let state = tempfile::tempdir().unwrap();
    let Some(rt) = oci_runtime(state.path()).await else {
        return;
    };
    let faults = FaultRuntime::new(rt.clone());
    let ex = executor(state.path(), Arc::new(faults.clone())).await;
    let mut spec = job("steps", "echo main");
    spec.init = vec![InitStep {
        command: vec!["true".into()],
    }];
    for (op, expected) in [
        (Op::Pull, "image pull failed"),
        (Op::Create, "container create failed"),
        (Op::Start, "init step 1 failed"),
        (Op::Wait, "init step 1 failed"),
    ] {
        faults.fail_next(Target::job("steps"), op, 1, "injected");
        let id = ex.run(spec.clone(), JobTrigger::Cli).await.unwrap();
        let record = within("the job", ex.wait(id)).await.unwrap();
        let JobState::Failed { reason, .. } = &record.status.state else {
            panic!("{op:?}: expected a failure, got {:?}", record.status.state);
        };
        assert!(reason.to_string().starts_with(expected), "{op:?}: {reason}");
        assert_no_oci_leftovers(&rt).await;
    }
    // A failing init step (a real non-zero exit) too.
    let mut failing_init = spec.clone();
    failing_init.init[0].command = vec!["false".into()];
    let id = ex.run(failing_init, JobTrigger::Cli).await.unwrap();
    let record = within("the job", ex.wait(id)).await.unwrap();
    assert!(matches!(
        record.status.state,
        JobState::Failed {
            reason: FailReason::InitStep { step: 1, .. },
            ..
        }
    ));
    assert_no_oci_leftovers(&rt).await;
    // And the main command's start.
    let mut no_init = spec.clone();
    no_init.init.clear();
    faults.fail_next(Target::job("steps"), Op::Start, 1, "injected");
    let id = ex.run(no_init.clone(), JobTrigger::Cli).await.unwrap();
    let record = within("the job", ex.wait(id)).await.unwrap();
    assert!(matches!(
        record.status.state,
        JobState::Failed {
            reason: FailReason::Start { .. },
            ..
        }
    ));
    assert_no_oci_leftovers(&rt).await;
    // With no fault left, the same job completes.
    let id = ex.run(no_init, JobTrigger::Cli).await.unwrap();
    let record = within("the job", ex.wait(id)).await.unwrap();
    assert!(matches!(
        record.status.state,
        JobState::Completed { exit_code: 0, .. }
    ));
    assert_no_oci_leftovers(&rt).await;
}
