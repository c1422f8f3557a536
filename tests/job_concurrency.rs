//! Overlap policies, max_concurrent, retries and the segment reference
//! count, on the mock runtime under tokio's paused clock.

use std::time::Duration;

use arbor::{
    ExecutorError, JobSpec, JobState, JobTrigger, Overlap, SystemClock,
    runtime::mock::MockRun,
    testing::{Entry, JobHarness, OverlayOp},
};

fn long(name: &str, concurrency: Overlap, max: Option<usize>) -> JobSpec {
    let mut spec = JobSpec::command(name, ["sleep", "1000"]);
    spec.concurrency = concurrency;
    spec.max_concurrent = max;
    spec
}

#[tokio::test(start_paused = true)]
async fn forbid_skips_a_trigger_while_an_execution_is_active() {
    let h = JobHarness::start(SystemClock).await;
    h.executor
        .register(long("sync", Overlap::Forbid, None))
        .await
        .unwrap();
    let first = h.executor.trigger("sync", JobTrigger::Cli).await.unwrap();
    let err = h
        .executor
        .trigger("sync", JobTrigger::Cli)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ExecutorError::Forbidden {
            job: "sync".into(),
            active: first
        }
    );
    assert_eq!(err.status(), 409);
    h.executor.cancel(first, None).await.unwrap();
    h.executor.wait(first).await.unwrap();
    // Once it ended, a new run is accepted.
    let second = h.executor.trigger("sync", JobTrigger::Cli).await.unwrap();
    assert_ne!(first, second);
    h.executor.shutdown(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn replace_cancels_the_running_execution_and_starts_the_new_one() {
    let h = JobHarness::start(SystemClock).await;
    h.executor
        .register(long("sync", Overlap::Replace, None))
        .await
        .unwrap();
    let first = h.executor.trigger("sync", JobTrigger::Cli).await.unwrap();
    h.wait_state(first, "running").await;
    let second = h.executor.trigger("sync", JobTrigger::Cli).await.unwrap();
    assert_eq!(
        h.executor.wait(first).await.unwrap().status.state,
        JobState::Cancelled
    );
    h.wait_state(second, "running").await;
    assert_eq!(h.executor.active_count().await.unwrap(), 1);
    h.executor.shutdown(Duration::ZERO).await;
    assert!(h.mock.containers().await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn allow_runs_executions_side_by_side_up_to_max_concurrent() {
    let h = JobHarness::start(SystemClock).await;
    h.executor
        .register(long("sync", Overlap::Allow, Some(2)))
        .await
        .unwrap();
    let a = h.executor.trigger("sync", JobTrigger::Cli).await.unwrap();
    let b = h.executor.trigger("sync", JobTrigger::Cli).await.unwrap();
    h.wait_state(a, "running").await;
    h.wait_state(b, "running").await;
    let err = h
        .executor
        .trigger("sync", JobTrigger::Cli)
        .await
        .unwrap_err();
    assert_eq!(
        err,
        ExecutorError::ConcurrencyLimit {
            job: "sync".into(),
            limit: 2
        }
    );
    assert_eq!(h.mock.running().await.len(), 2, "never more than the limit");
    h.executor.cancel(a, None).await.unwrap();
    h.executor.wait(a).await.unwrap();
    h.executor.trigger("sync", JobTrigger::Cli).await.unwrap();
    h.executor.shutdown(Duration::ZERO).await;
}

#[tokio::test(start_paused = true)]
async fn retries_back_off_and_stop_at_the_backoff_limit() {
    let h = JobHarness::start(SystemClock).await;
    h.mock.default_run("flaky", MockRun::exit_code(1));
    let mut spec = JobSpec::command("flaky", ["false"]);
    spec.backoff_limit = 2;
    spec.history.failed = 10;
    h.executor.register(spec).await.unwrap();
    let started = tokio::time::Instant::now();
    let first = h.executor.trigger("flaky", JobTrigger::Cli).await.unwrap();
    h.executor.wait_all().await.unwrap();
    // 10 s then 20 s of back-off between the three attempts.
    assert!(
        started.elapsed() >= Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let runs = h.executor.list("flaky").await.unwrap();
    let attempts: Vec<u32> = runs.iter().map(|r| r.meta.attempt).collect();
    assert_eq!(attempts, [1, 2, 3]);
    assert!(runs[1..].iter().all(|r| r.meta.retry_of == Some(first)));
    assert!(
        runs.iter()
            .all(|r| matches!(r.status.state, JobState::Failed { .. }))
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_that_succeeds_ends_the_retries() {
    let h = JobHarness::start(SystemClock).await;
    h.mock
        .runs("flaky", [MockRun::exit_code(1), MockRun::exit_code(0)]);
    let mut spec = JobSpec::command("flaky", ["x"]);
    spec.backoff_limit = 5;
    h.executor.register(spec).await.unwrap();
    h.executor.trigger("flaky", JobTrigger::Cli).await.unwrap();
    h.executor.wait_all().await.unwrap();
    let runs = h.executor.list("flaky").await.unwrap();
    assert_eq!(runs.len(), 2);
    assert!(matches!(runs[1].status.state, JobState::Completed { .. }));
}

#[tokio::test(start_paused = true)]
async fn the_segment_outlives_a_finished_sibling_and_goes_with_the_last() {
    let h = JobHarness::start(SystemClock).await;
    h.executor
        .register(long("crawl", Overlap::Allow, None))
        .await
        .unwrap();
    let a = h.executor.trigger("crawl", JobTrigger::Cli).await.unwrap();
    let b = h.executor.trigger("crawl", JobTrigger::Cli).await.unwrap();
    h.wait_state(a, "running").await;
    h.wait_state(b, "running").await;
    let segments = h.overlay.list().await.unwrap();
    assert_eq!(segments.len(), 1);
    assert_eq!(segments[0].holders, 2);
    assert_eq!(segments[0].attachments.len(), 2);

    h.executor.cancel(a, None).await.unwrap();
    h.executor.wait(a).await.unwrap();
    let segments = h.overlay.list().await.unwrap();
    assert_eq!(segments[0].holders, 1, "the sibling still holds it");
    let journal = h.journal.take().await;
    assert!(
        !journal.iter().any(|e| matches!(
            e,
            Entry::Overlay {
                op: OverlayOp::Teardown,
                ..
            }
        )),
        "{journal:?}"
    );

    h.executor.cancel(b, None).await.unwrap();
    h.executor.wait(b).await.unwrap();
    assert!(h.overlay.list().await.unwrap().is_empty());
    let journal = h.journal.take().await;
    assert_eq!(
        journal
            .iter()
            .filter(|e| *e == "overlay teardown crawl")
            .count(),
        1,
        "{journal:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn history_keeps_three_successes_and_one_failure_by_default() {
    let h = JobHarness::start(SystemClock).await;
    h.mock.default_run("tick", MockRun::exit_code(0));
    h.mock.default_run("tock", MockRun::exit_code(2));
    for job in ["tick", "tock"] {
        h.executor
            .register(JobSpec::command(job, ["x"]))
            .await
            .unwrap();
        for _ in 0..5 {
            let id = h.executor.trigger(job, JobTrigger::Cli).await.unwrap();
            h.executor.wait(id).await.unwrap();
        }
    }
    assert_eq!(h.executor.list("tick").await.unwrap().len(), 3);
    assert_eq!(h.executor.list("tock").await.unwrap().len(), 1);
    let latest = h.executor.latest("tick").await.unwrap().unwrap();
    assert_eq!(
        latest.meta.id,
        h.executor.list("tick").await.unwrap()[2].meta.id
    );
}

#[tokio::test(start_paused = true)]
async fn finished_executions_are_deleted_after_the_retention() {
    let h = JobHarness::start(SystemClock).await;
    h.mock.default_run("tick", MockRun::exit_code(0));
    let mut spec = JobSpec::command("tick", ["x"]);
    spec.retention = Duration::from_secs(600);
    let record = h.run_once(spec).await;
    let id = record.meta.id;
    tokio::time::sleep(Duration::from_secs(599)).await;
    assert!(h.executor.get(id).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.executor.get(id).await.unwrap().is_none());
    assert!(h.executor.latest("tick").await.unwrap().is_none());
}
