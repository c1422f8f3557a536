//! In-process jobs: futures run as executions with the same ids, states,
//! cancel, wait and live output.

use std::time::Duration;

use arbor::{
    Executor, ExecutorConfig, FailReason, JobSpec, JobState, LogSnapshotQuery, MockRuntime,
    SnapshotStream,
};

async fn executor() -> Executor {
    Executor::start(ExecutorConfig::new(std::sync::Arc::new(MockRuntime::new())))
        .await
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_task_completes_and_its_output_is_kept() {
    let ex = executor().await;
    let id = ex
        .spawn("index", |ctx| async move {
            ctx.stdout("indexing");
            ctx.stderr("warning: slow disk");
            Ok::<_, String>(())
        })
        .await
        .unwrap();
    let record = ex.wait(id).await.unwrap();
    assert!(matches!(
        record.status.state,
        JobState::Completed { exit_code: 0, .. }
    ));
    let out = ex
        .logs(id, LogSnapshotQuery::all(SnapshotStream::Stdout))
        .await
        .unwrap();
    assert_eq!(out.text, "indexing\n");
    let full = ex
        .logs(id, LogSnapshotQuery::all(SnapshotStream::Full))
        .await
        .unwrap();
    assert!(
        full.text.contains("[STDERR] warning: slow disk"),
        "{}",
        full.text
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_or_panicking_task_fails_with_its_message() {
    let ex = executor().await;
    let failing = ex
        .spawn("a", |_| async { Err::<(), _>("disk full") })
        .await
        .unwrap();
    let panicking = ex
        .spawn("b", |_| async {
            if true {
                panic!("boom");
            }
            Ok::<(), String>(())
        })
        .await
        .unwrap();
    assert_eq!(
        ex.wait(failing).await.unwrap().status.state,
        JobState::Failed {
            reason: FailReason::Task {
                message: "disk full".into()
            },
            exit_code: None
        }
    );
    let state = ex.wait(panicking).await.unwrap().status.state;
    assert!(
        matches!(&state, JobState::Failed { reason: FailReason::Task { message }, .. } if message.contains("boom")),
        "{state:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn cancel_wakes_a_cooperative_task_and_aborts_one_that_ignores_it() {
    let ex = executor().await;
    let polite = ex
        .spawn("polite", |ctx| async move {
            ctx.cancelled().await;
            Ok::<_, String>(())
        })
        .await
        .unwrap();
    let mut spec = JobSpec::command("rude", ["-"]);
    spec.stop_timeout = Duration::from_secs(3);
    let rude = ex
        .spawn_with(spec, |_| async {
            std::future::pending::<()>().await;
            Ok::<_, String>(())
        })
        .await
        .unwrap();
    for id in [polite, rude] {
        arbor::testing::eventually_async("the task runs", || async {
            ex.get(id).await.unwrap().unwrap().status.state == JobState::Running
        })
        .await;
    }
    let started = tokio::time::Instant::now();
    ex.cancel(polite, None).await.unwrap();
    ex.cancel(rude, None).await.unwrap();
    assert_eq!(
        ex.wait(polite).await.unwrap().status.state,
        JobState::Cancelled
    );
    assert_eq!(
        ex.wait(rude).await.unwrap().status.state,
        JobState::Cancelled
    );
    assert!(
        started.elapsed() >= Duration::from_secs(3),
        "aborted after its grace"
    );
    ex.wait_all().await.unwrap();
    assert_eq!(ex.active_count().await.unwrap(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_task_past_its_deadline_fails() {
    let ex = executor().await;
    let mut spec = JobSpec::command("slow", ["-"]);
    spec.deadline = Some(Duration::from_secs(5));
    let id = ex
        .spawn_with(spec, |ctx| async move {
            ctx.cancelled().await;
            Ok::<_, String>(())
        })
        .await
        .unwrap();
    assert!(matches!(
        ex.wait(id).await.unwrap().status.state,
        JobState::Failed {
            reason: FailReason::DeadlineExceeded { .. },
            ..
        }
    ));
}
