//! Scheduled jobs through the executor, on tokio's paused clock.

use std::time::Duration;

use arbor::{
    ExecutorError, JobSpec, JobTrigger, TokioClock, runtime::mock::MockRun, testing::JobHarness,
};
use chrono::{TimeZone, Utc};

#[tokio::test(start_paused = true)]
async fn a_scheduled_job_runs_at_its_times_with_a_scheduler_trigger() {
    let start = Utc.with_ymd_and_hms(2026, 11, 22, 10, 2, 0).unwrap();
    let h = JobHarness::start(TokioClock::starting_at(start)).await;
    h.mock.default_run("report", MockRun::exit_code(0));
    let mut spec = JobSpec::command("report", ["true"]);
    spec.schedule = Some("*/5 * * * *".into());
    spec.history.successful = 10;
    h.executor.register(spec).await.unwrap();
    tokio::time::sleep(Duration::from_secs(11 * 60)).await;
    h.executor.wait_all().await.unwrap();
    let runs = h.executor.list("report").await.unwrap();
    let times: Vec<String> = runs
        .iter()
        .map(|r| match &r.meta.trigger {
            JobTrigger::Scheduler {
                scheduled_for: Some(at),
            } => at.format("%H:%M").to_string(),
            other => panic!("unexpected trigger {other:?}"),
        })
        .collect();
    assert_eq!(times, ["10:05", "10:10"]);
}

#[tokio::test(start_paused = true)]
async fn unregistering_a_scheduled_job_stops_its_runs() {
    let start = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 30).unwrap();
    let h = JobHarness::start(TokioClock::starting_at(start)).await;
    h.mock.default_run("tick", MockRun::exit_code(0));
    let mut spec = JobSpec::command("tick", ["true"]);
    spec.schedule = Some("@hourly".into());
    h.executor.register(spec).await.unwrap();
    h.executor.unregister("tick").await.unwrap();
    tokio::time::sleep(Duration::from_secs(2 * 3600)).await;
    assert!(h.executor.list("tick").await.unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_invalid_schedule_is_refused_quoting_the_expression() {
    let h = JobHarness::start(TokioClock::starting_at(Utc::now())).await;
    let mut spec = JobSpec::command("bad", ["true"]);
    spec.schedule = Some("61 * * * *".into());
    let err = h.executor.register(spec).await.unwrap_err();
    assert!(matches!(err, ExecutorError::Invalid(_)));
    let text = err.to_string();
    assert!(text.contains("schedule"), "{text}");
    assert!(text.contains("\"61 * * * *\""), "{text}");
    let mut spec = JobSpec::command("bad", ["true"]);
    spec.schedule = Some("0 9 * * *".into());
    spec.time_zone = Some("Mars/Base".into());
    let text = h.executor.register(spec).await.unwrap_err().to_string();
    assert!(text.contains("Mars/Base"), "{text}");
    assert!(h.executor.jobs().await.unwrap().is_empty());
}
