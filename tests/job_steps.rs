//! Each step of a job execution, on the mock runtime: the state it ends in,
//! and the cleanup calls it makes, each exactly once and in order.

use arbor::{
    FailReason, JobSpec, JobState, JobTrigger,
    runtime::{ExitStatus, Op, mock::MockRun},
    spec::InitStep,
    testing::{Entry, JobHarness, OverlayOp, RuntimeOp},
};

async fn setup() -> JobHarness {
    JobHarness::start(arbor::SystemClock).await
}

/// Runs `spec` once and returns its final state and the journal.
async fn run(s: &JobHarness, spec: JobSpec) -> (JobState, Vec<Entry>) {
    s.executor.register(spec.clone()).await.unwrap();
    let id = s
        .executor
        .trigger(&spec.name, JobTrigger::Cli)
        .await
        .unwrap();
    let record = s.executor.wait(id).await.unwrap();
    (record.status.state, s.journal.take().await)
}

/// The cleanup calls of a journal, in order.
fn cleanup(journal: &[Entry]) -> Vec<String> {
    journal
        .iter()
        .filter(|e| {
            matches!(
                e,
                Entry::Overlay {
                    op: OverlayOp::Detach | OverlayOp::Teardown,
                    ..
                } | Entry::Runtime {
                    op: RuntimeOp::Remove,
                    ..
                } | Entry::TokenRevoked(_)
            )
        })
        .map(Entry::to_string)
        .collect()
}

/// True when the journal has a segment set up.
fn set_up_a_segment(journal: &[Entry]) -> bool {
    journal.iter().any(|e| {
        matches!(
            e,
            Entry::Overlay {
                op: OverlayOp::Setup,
                ..
            }
        )
    })
}

fn full_cleanup(container: &str, segment: &str) -> Vec<String> {
    vec![
        format!("overlay detach {container} {segment}"),
        format!("overlay teardown {segment}"),
        format!("runtime remove {container}"),
        format!("token revoke {container}"),
    ]
}

#[tokio::test(start_paused = true)]
async fn a_successful_run_completes_and_cleans_up_once_in_order() {
    let s = setup().await;
    s.mock.default_run("backup", MockRun::exit_code(0));
    let (state, journal) = run(&s, JobSpec::command("backup", ["true"])).await;
    assert!(
        matches!(state, JobState::Completed { exit_code: 0, .. }),
        "{state:?}"
    );
    assert_eq!(cleanup(&journal), full_cleanup("backup#1", "backup"));
    // Attach happens after create and before start.
    let pos = |e: &str| journal.iter().position(|x| x == e).unwrap();
    assert!(pos("runtime create backup") < pos("overlay attach backup#1 backup"));
    assert!(pos("overlay attach backup#1 backup") < pos("runtime start backup#1"));
}

#[tokio::test(start_paused = true)]
async fn an_image_pull_failure_fails_at_pull_and_has_nothing_to_clean() {
    let s = setup().await;
    s.mock.fail_next("backup", Op::Pull, 1, "registry down");
    let mut spec = JobSpec::command("backup", ["true"]);
    spec.image = Some("registry.example/backup:1".into());
    let (state, journal) = run(&s, spec).await;
    match state {
        JobState::Failed {
            reason: FailReason::ImagePull { message },
            exit_code: None,
        } => assert!(message.contains("registry down"), "{message}"),
        other => panic!("expected an image pull failure, got {other:?}"),
    }
    assert_eq!(cleanup(&journal), Vec::<String>::new());
    assert!(!set_up_a_segment(&journal));
}

#[tokio::test(start_paused = true)]
async fn a_host_command_whose_program_cannot_be_found_fails_to_start_not_at_an_image() {
    let s = setup().await;
    s.mock
        .fail_next("backup", Op::Pull, 1, "command not found: backup-tool");
    let (state, journal) = run(&s, JobSpec::command("backup", ["backup-tool"])).await;
    match state {
        JobState::Failed {
            reason: FailReason::Start { message },
            exit_code: None,
        } => assert!(
            message.contains("command not found: backup-tool"),
            "{message}"
        ),
        other => panic!("expected a failed start, got {other:?}"),
    }
    assert_eq!(cleanup(&journal), Vec::<String>::new());
}

#[tokio::test(start_paused = true)]
async fn a_create_failure_fails_at_create_and_acquires_no_segment() {
    let s = setup().await;
    s.mock.fail_next("backup", Op::Create, 1, "no space");
    let (state, journal) = run(&s, JobSpec::command("backup", ["true"])).await;
    assert!(
        matches!(
            &state,
            JobState::Failed {
                reason: FailReason::ContainerCreate { message },
                ..
            } if message.contains("no space")
        ),
        "{state:?}"
    );
    assert_eq!(cleanup(&journal), Vec::<String>::new());
    assert!(!set_up_a_segment(&journal));
}

#[tokio::test(start_paused = true)]
async fn a_failing_init_step_names_its_number_and_still_cleans_up() {
    let s = setup().await;
    s.mock.default_run("backup-init-1", MockRun::exit_code(0));
    s.mock.default_run("backup-init-2", MockRun::exit_code(4));
    let mut spec = JobSpec::command("backup", ["true"]);
    spec.init = vec![
        InitStep {
            command: vec!["true".into()],
        },
        InitStep {
            command: vec!["false".into()],
        },
    ];
    let (state, journal) = run(&s, spec).await;
    assert_eq!(
        state,
        JobState::Failed {
            reason: FailReason::InitStep {
                step: 2,
                message: "exit code 4".into()
            },
            exit_code: None
        }
    );
    assert_eq!(state.to_string(), "failed: init step 2 failed: exit code 4");
    // Init containers are removed as they end; the main one never started.
    assert!(
        journal
            .iter()
            .any(|e| e == "runtime remove backup-init-1#2")
    );
    assert!(
        journal
            .iter()
            .any(|e| e == "runtime remove backup-init-2#3")
    );
    assert!(!journal.iter().any(|e| e == "runtime start backup#1"));
    let main: Vec<_> = cleanup(&journal)
        .into_iter()
        .filter(|e| !e.contains("init"))
        .collect();
    assert_eq!(main, full_cleanup("backup#1", "backup"));
}

#[tokio::test(start_paused = true)]
async fn init_steps_run_in_order_before_the_main_command() {
    let s = setup().await;
    for name in ["backup-init-1", "backup-init-2", "backup"] {
        s.mock.default_run(name, MockRun::exit_code(0));
    }
    let mut spec = JobSpec::command("backup", ["true"]);
    spec.init = vec![
        InitStep {
            command: vec!["a".into()],
        },
        InitStep {
            command: vec!["b".into()],
        },
    ];
    let (state, journal) = run(&s, spec).await;
    assert!(matches!(state, JobState::Completed { .. }), "{state:?}");
    let starts: Vec<_> = journal
        .iter()
        .filter(|e| {
            matches!(
                e,
                Entry::Runtime {
                    op: RuntimeOp::Start,
                    ..
                }
            )
        })
        .cloned()
        .collect();
    assert_eq!(
        starts,
        [
            "runtime start backup-init-1#2",
            "runtime start backup-init-2#3",
            "runtime start backup#1"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_start_failure_fails_at_start_and_cleans_up_once() {
    let s = setup().await;
    s.mock
        .fail_next("backup", Op::Start, 1, "exec format error");
    let (state, journal) = run(&s, JobSpec::command("backup", ["true"])).await;
    assert!(
        matches!(&state, JobState::Failed { reason: FailReason::Start { message }, .. } if message.contains("exec format error")),
        "{state:?}"
    );
    assert_eq!(cleanup(&journal), full_cleanup("backup#1", "backup"));
}

#[tokio::test(start_paused = true)]
async fn a_wait_error_fails_the_execution_and_stops_the_command() {
    let s = setup().await;
    s.mock.fail_next("backup", Op::Wait, 1, "lost track");
    let (state, journal) = run(&s, JobSpec::command("backup", ["sleep", "1"])).await;
    assert!(
        matches!(&state, JobState::Failed { reason: FailReason::Wait { message }, .. } if message.contains("lost track")),
        "{state:?}"
    );
    assert!(journal.iter().any(|e| e == "runtime stop backup#1"));
    assert_eq!(cleanup(&journal), full_cleanup("backup#1", "backup"));
    assert!(s.mock.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_non_zero_exit_fails_with_its_code() {
    let s = setup().await;
    s.mock.default_run("backup", MockRun::exit_code(3));
    let (state, journal) = run(&s, JobSpec::command("backup", ["false"])).await;
    assert_eq!(
        state,
        JobState::Failed {
            reason: FailReason::NonZeroExit { code: 3 },
            exit_code: Some(3)
        }
    );
    assert_eq!(cleanup(&journal), full_cleanup("backup#1", "backup"));
}

#[tokio::test(start_paused = true)]
async fn a_command_killed_by_a_signal_says_which() {
    let s = setup().await;
    s.mock.default_run(
        "backup",
        MockRun::ExitAfter(std::time::Duration::from_secs(1), ExitStatus::Signal(9)),
    );
    let (state, _) = run(&s, JobSpec::command("backup", ["sleep", "9"])).await;
    assert_eq!(
        state,
        JobState::Failed {
            reason: FailReason::KilledBySignal { signal: 9 },
            exit_code: None
        }
    );
    assert_eq!(state.to_string(), "failed: killed by signal SIGKILL");
}

#[tokio::test(start_paused = true)]
async fn the_record_is_queryable_as_soon_as_trigger_returns() {
    let s = setup().await;
    s.executor
        .register(JobSpec::command("backup", ["sleep", "9"]))
        .await
        .unwrap();
    let id = s.executor.trigger("backup", JobTrigger::Cli).await.unwrap();
    let record = s.executor.get(id).await.unwrap().expect("recorded at once");
    assert_eq!(record.meta.job, "backup");
    assert_eq!(record.meta.trigger, JobTrigger::Cli);
    assert_eq!(
        s.executor.latest("backup").await.unwrap().unwrap().meta.id,
        id
    );
    s.executor.shutdown(std::time::Duration::ZERO).await;
    assert!(s.mock.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn unknown_jobs_and_invalid_specs_are_refused_with_clear_errors() {
    let s = setup().await;
    let err = s
        .executor
        .trigger("nope", JobTrigger::Cli)
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "no job named \"nope\" is registered");
    assert_eq!(err.status(), 404);
    let mut spec = JobSpec::command("bad", Vec::<String>::new());
    spec.max_concurrent = Some(0);
    let err = s.executor.register(spec).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains("command"), "{text}");
    assert!(text.contains("max_concurrent"), "{text}");
    assert_eq!(err.status(), 400);
    // The executor is still there.
    assert_eq!(s.executor.jobs().await.unwrap(), Vec::<String>::new());
}
