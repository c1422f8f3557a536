//! Cancel in each state, deadlines, and process control on the mock runtime.

use std::time::Duration;

use arbor::{
    ExecutorError, FailReason, JobSpec, JobState, JobTrigger, SystemClock,
    runtime::{Signal, mock::MockRun},
    spec::InitStep,
    testing::{Entry, JobHarness, OverlayOp, RuntimeOp},
};

fn cleanup_of(journal: &[Entry], container: &str) -> Vec<String> {
    journal
        .iter()
        .filter(|e| match e {
            Entry::Runtime {
                op: RuntimeOp::Remove,
                subject,
                ..
            }
            | Entry::Overlay {
                op: OverlayOp::Detach,
                subject,
                ..
            }
            | Entry::TokenRevoked(subject) => subject == container,
            _ => false,
        })
        .map(Entry::to_string)
        .collect()
}

fn removes(journal: &[Entry]) -> usize {
    journal
        .iter()
        .filter(|e| {
            matches!(
                e,
                Entry::Runtime {
                    op: RuntimeOp::Remove,
                    ..
                }
            )
        })
        .count()
}

#[tokio::test(start_paused = true)]
async fn cancel_while_running_stops_with_the_grace_and_ends_cancelled() {
    let h = JobHarness::start(SystemClock).await;
    let mut spec = JobSpec::command("serve", ["sleep", "1000"]);
    spec.stop_timeout = Duration::from_secs(7);
    h.executor.register(spec).await.unwrap();
    let id = h.executor.trigger("serve", JobTrigger::Cli).await.unwrap();
    h.wait_state(id, "running").await;
    h.executor.cancel(id, None).await.unwrap();
    let record = h.executor.wait(id).await.unwrap();
    assert_eq!(record.status.state, JobState::Cancelled);
    let calls = h.mock.calls().await;
    assert!(
        calls.iter().any(|c| matches!(c, arbor::runtime::mock::Call::Stop { grace, .. } if *grace == Duration::from_secs(7))),
        "{calls:?}"
    );
    let journal = h.journal.take().await;
    assert_eq!(
        cleanup_of(&journal, "serve#1"),
        [
            "overlay detach serve#1 serve",
            "runtime remove serve#1",
            "token revoke serve#1"
        ]
    );
    assert!(h.mock.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancel_right_after_trigger_ends_cancelled_and_leaves_nothing() {
    let h = JobHarness::start(SystemClock).await;
    h.executor
        .register(JobSpec::command("serve", ["sleep", "1000"]))
        .await
        .unwrap();
    let id = h.executor.trigger("serve", JobTrigger::Cli).await.unwrap();
    h.executor.cancel(id, None).await.unwrap();
    let record = h.executor.wait(id).await.unwrap();
    // However far it got before the cancel arrived, it ends cancelled with
    // nothing left behind.
    assert_eq!(record.status.state, JobState::Cancelled);
    assert!(h.mock.containers().await.is_empty());
    assert!(h.overlay.list().await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn cancel_during_an_init_step_stops_it_and_cleans_up_everything() {
    let h = JobHarness::start(SystemClock).await;
    let mut spec = JobSpec::command("migrate", ["true"]);
    spec.init = vec![InitStep {
        command: vec!["sleep".into(), "1000".into()],
    }];
    h.executor.register(spec).await.unwrap();
    let id = h
        .executor
        .trigger("migrate", JobTrigger::Cli)
        .await
        .unwrap();
    arbor::testing::eventually_async("the init step runs", || async {
        h.mock.running().await.iter().any(|c| c == "migrate-init-1")
    })
    .await;
    assert_eq!(
        h.executor.get(id).await.unwrap().unwrap().status.state,
        JobState::Initializing
    );
    h.executor
        .cancel(id, Some(Duration::from_secs(1)))
        .await
        .unwrap();
    let record = h.executor.wait(id).await.unwrap();
    assert_eq!(record.status.state, JobState::Cancelled);
    assert!(h.mock.containers().await.is_empty());
    let journal = h.journal.take().await;
    assert_eq!(
        removes(&journal),
        2,
        "init and main removed once each: {journal:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_finished_execution_is_refused() {
    let h = JobHarness::start(SystemClock).await;
    h.mock.default_run("quick", MockRun::exit_code(0));
    let record = h.run_once(JobSpec::command("quick", ["true"])).await;
    let err = h.executor.cancel(record.meta.id, None).await.unwrap_err();
    assert!(matches!(err, ExecutorError::Finished { .. }), "{err}");
    assert_eq!(err.status(), 409);
}

#[tokio::test(start_paused = true)]
async fn a_run_past_its_deadline_is_stopped_and_fails_with_deadline_exceeded() {
    let h = JobHarness::start(SystemClock).await;
    let mut spec = JobSpec::command("slow", ["sleep", "1000"]);
    spec.deadline = Some(Duration::from_secs(30));
    let started = tokio::time::Instant::now();
    let record = h.run_once(spec).await;
    assert_eq!(
        record.status.state,
        JobState::Failed {
            reason: FailReason::DeadlineExceeded {
                deadline: Duration::from_secs(30)
            },
            exit_code: None
        }
    );
    assert!(started.elapsed() >= Duration::from_secs(30));
    assert!(h.mock.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_deadline_kills_a_command_that_ignores_sigterm_after_the_grace() {
    let h = JobHarness::start(SystemClock).await;
    h.mock.ignore_sigterm("stubborn");
    let mut spec = JobSpec::command("stubborn", ["sleep", "1000"]);
    spec.deadline = Some(Duration::from_secs(10));
    spec.stop_timeout = Duration::from_secs(5);
    let started = tokio::time::Instant::now();
    let record = h.run_once(spec).await;
    assert!(
        matches!(
            record.status.state,
            JobState::Failed {
                reason: FailReason::DeadlineExceeded { .. },
                ..
            }
        ),
        "{:?}",
        record.status.state
    );
    assert_eq!(record.status.signal, Some(9), "killed after the grace");
    assert!(started.elapsed() >= Duration::from_secs(15));
}

#[tokio::test(start_paused = true)]
async fn signals_reach_the_running_command_and_are_refused_before_it_runs() {
    let h = JobHarness::start(SystemClock).await;
    h.executor
        .register(JobSpec::command("serve", ["sleep", "1000"]))
        .await
        .unwrap();
    let id = h.executor.trigger("serve", JobTrigger::Cli).await.unwrap();
    h.wait_state(id, "running").await;
    h.executor.pause(id).await.unwrap();
    assert!(h.executor.get(id).await.unwrap().unwrap().status.paused);
    h.executor.resume(id).await.unwrap();
    assert!(!h.executor.get(id).await.unwrap().unwrap().status.paused);
    h.executor.signal(id, Signal::SIGUSR1).await.unwrap();
    let signals: Vec<Signal> = h
        .mock
        .calls()
        .await
        .into_iter()
        .filter_map(|c| match c {
            arbor::runtime::mock::Call::Signal { signal, .. } => Some(signal),
            _ => None,
        })
        .collect();
    assert_eq!(signals, [Signal::SIGSTOP, Signal::SIGCONT, Signal::SIGUSR1]);
    h.executor.cancel(id, None).await.unwrap();
    h.executor.wait(id).await.unwrap();
    let err = h.executor.signal(id, Signal::SIGUSR1).await.unwrap_err();
    assert_eq!(err.status(), 409, "{err}");
}

#[tokio::test(start_paused = true)]
async fn shutdown_refuses_new_triggers_drains_then_cancels_what_is_left() {
    let h = JobHarness::start(SystemClock).await;
    h.mock.default_run(
        "short",
        MockRun::ExitAfter(Duration::from_secs(5), arbor::ExitStatus::Code(0)),
    );
    h.executor
        .register(JobSpec::command("short", ["x"]))
        .await
        .unwrap();
    h.executor
        .register(JobSpec::command("long", ["sleep", "1000"]))
        .await
        .unwrap();
    let short = h.executor.trigger("short", JobTrigger::Cli).await.unwrap();
    let long = h.executor.trigger("long", JobTrigger::Cli).await.unwrap();
    h.wait_state(long, "running").await;
    let executor = h.executor.clone();
    let stopping = tokio::spawn(async move { executor.shutdown(Duration::from_secs(60)).await });
    arbor::testing::eventually_async("new triggers are refused", || async {
        matches!(
            h.executor.trigger("short", JobTrigger::Cli).await,
            Err(ExecutorError::ShuttingDown)
        )
    })
    .await;
    stopping.await.unwrap();
    assert!(h.mock.containers().await.is_empty());
    // Records are gone with the executor; the journal says what happened.
    let journal = h.journal.take().await;
    assert!(
        journal.iter().any(|e| e == "runtime remove short#1"),
        "{journal:?}"
    );
    assert!(
        journal.iter().any(|e| e == "runtime remove long#2"),
        "{journal:?}"
    );
    let _ = (short, long);
}
