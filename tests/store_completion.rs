//! Completion events delivered to a command (JSON on stdin, env vars) and
//! an NDJSON file; failures recorded, never propagated.

use std::{collections::BTreeMap, fs, path::Path, time::Duration};

use arbor::runtime::process::procfs;
use arbor::store::{
    CompletionEvent, CompletionRecord, DeliverySink, ExecutionFiles, Store, deliver,
};
use arbor::testing::within;
use arbor::{
    ExecutionId, ExecutionMeta, ExecutionRecord, ExecutionStatus, FailReason, JobState, JobTrigger,
    NotifySpec,
};
use chrono::{TimeZone, Utc};

const TIMEOUT: Duration = Duration::from_secs(10);

fn finished(tmp: &Path, state: JobState) -> (ExecutionFiles, ExecutionRecord) {
    let store = Store::open(tmp.join("state")).unwrap();
    let t0 = Utc.timestamp_opt(1_700_000_000, 0).unwrap();
    let meta = ExecutionMeta {
        id: ExecutionId::new(),
        job: "backup".into(),
        attempt: 2,
        retry_of: Some(ExecutionId::new()),
        command: vec!["backup.sh".into()],
        image: None,
        trigger: JobTrigger::Scheduler {
            scheduled_for: Some(t0),
        },
        env: BTreeMap::new(),
        cwd: None,
        created_at: t0,
    };
    let status = ExecutionStatus {
        state,
        started_at: Some(t0 + chrono::Duration::seconds(1)),
        finished_at: Some(t0 + chrono::Duration::milliseconds(3500)),
        ..ExecutionStatus::pending(t0)
    };
    let files = store.create(&meta, &status).unwrap();
    (files, ExecutionRecord { meta, status })
}

fn failed() -> JobState {
    JobState::Failed {
        reason: FailReason::NonZeroExit { code: 3 },
        exit_code: Some(3),
    }
}

fn sh(script: &str, arg: &Path) -> Vec<String> {
    vec![
        "sh".into(),
        "-c".into(),
        script.into(),
        "sh".into(),
        arg.display().to_string(),
    ]
}

#[test]
fn an_event_describes_the_finished_execution() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, record) = finished(tmp.path(), failed());
    let event = CompletionEvent::new(&record, &files);
    assert_eq!(event.event_type, "failed");
    assert_eq!(event.execution_id, record.meta.id);
    assert_eq!((event.job.as_str(), event.attempt), ("backup", 2));
    assert_eq!(event.exit_code, Some(3));
    assert_eq!(event.duration_ms, Some(2500));
    assert_eq!(event.stdout_path, files.stdout_path());
    assert_eq!(event.stderr_path, files.stderr_path());
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["state"]["status"], "failed");
    assert_eq!(json["trigger"]["kind"], "scheduler");
    let (_, cancelled) = finished(tmp.path(), JobState::Cancelled);
    assert_eq!(
        CompletionEvent::new(&cancelled, &files).event_type,
        "cancelled"
    );
}

#[tokio::test]
async fn the_command_sink_gets_the_event_json_on_stdin_and_the_env_vars() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, record) = finished(
        tmp.path(),
        JobState::Completed {
            exit_code: 0,
            duration: Duration::from_millis(2500),
        },
    );
    let event = CompletionEvent::new(&record, &files);
    let out = tmp.path().join("sink");
    fs::create_dir(&out).unwrap();
    let notify = NotifySpec {
        command: Some(sh(
            r#"cat > "$1/stdin.json"
               printf '%s\n%s\n%s\n' "$ARBOR_EVENT_PATH" "$ARBOR_JOB_ID" "$ARBOR_EVENT_TYPE" > "$1/env.txt"
               cp "$ARBOR_EVENT_PATH" "$1/event_file_during_run.json""#,
            &out,
        )),
        file: None,
    };
    let state_before = fs::read(files.state_path()).unwrap();

    let record = within("deliver", deliver(&notify, &event, &files, TIMEOUT)).await;

    let stdin: CompletionEvent =
        serde_json::from_slice(&fs::read(out.join("stdin.json")).unwrap()).unwrap();
    assert_eq!(stdin, event);
    assert_eq!(
        fs::read_to_string(out.join("env.txt")).unwrap(),
        format!(
            "{}\n{}\ncompleted\n",
            files.completion_path().display(),
            event.execution_id
        )
    );
    let during: CompletionRecord =
        serde_json::from_slice(&fs::read(out.join("event_file_during_run.json")).unwrap()).unwrap();
    assert_eq!(during.event, event);
    assert!(
        during.deliveries.is_empty(),
        "written before the command ran"
    );

    assert_eq!(record.deliveries.len(), 1);
    let d = &record.deliveries[0];
    assert_eq!(d.sink, DeliverySink::Command);
    assert!(d.ok, "{d:?}");
    assert_eq!((d.exit_code, d.error.as_deref()), (Some(0), None));
    assert_eq!(files.read_completion().unwrap().unwrap(), record);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&fs::read(files.completion_path()).unwrap()).unwrap();
    assert_eq!(on_disk["event_type"], "completed");
    assert_eq!(on_disk["deliveries"][0]["sink"], "command");
    assert_eq!(fs::read(files.state_path()).unwrap(), state_before);
}

#[tokio::test]
async fn failing_sinks_are_recorded_without_affecting_the_execution() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, record) = finished(tmp.path(), failed());
    let event = CompletionEvent::new(&record, &files);
    let state_before = fs::read(files.state_path()).unwrap();

    let exits = NotifySpec {
        command: Some(sh("echo boom >&2; exit 3", tmp.path())),
        file: Some(tmp.path().join("no/such/dir/events.ndjson")),
    };
    let r = within("deliver", deliver(&exits, &event, &files, TIMEOUT)).await;
    assert_eq!(r.deliveries.len(), 2);
    let (cmd, file) = (&r.deliveries[0], &r.deliveries[1]);
    assert_eq!(
        (cmd.sink, cmd.ok, cmd.exit_code),
        (DeliverySink::Command, false, Some(3))
    );
    assert_eq!(cmd.error.as_deref(), Some("exit code 3: boom"));
    assert_eq!((file.sink, file.ok), (DeliverySink::File, false));
    assert!(
        file.error
            .as_deref()
            .unwrap()
            .starts_with("failed to append to "),
        "{file:?}"
    );
    assert_eq!(files.read_completion().unwrap().unwrap(), r);

    let missing = NotifySpec {
        command: Some(vec!["/no/such/program".into()]),
        file: None,
    };
    let r = within("deliver", deliver(&missing, &event, &files, TIMEOUT)).await;
    let d = &r.deliveries[0];
    assert!(!d.ok && d.exit_code.is_none());
    assert!(
        d.error
            .as_deref()
            .unwrap()
            .starts_with("failed to spawn /no/such/program"),
        "{d:?}"
    );
    assert_eq!(fs::read(files.state_path()).unwrap(), state_before);
}

#[tokio::test]
async fn a_command_sink_that_outlives_its_timeout_is_killed_with_its_group() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, record) = finished(tmp.path(), failed());
    let event = CompletionEvent::new(&record, &files);
    let pids = tmp.path().join("pids");
    let notify = NotifySpec {
        command: Some(sh(r#"sleep 1000 & echo $! > "$1"; wait"#, &pids)),
        file: None,
    };
    let r = within(
        "deliver",
        deliver(&notify, &event, &files, Duration::from_millis(300)),
    )
    .await;
    let d = &r.deliveries[0];
    assert!(!d.ok);
    assert_eq!(d.error.as_deref(), Some("timed out after 300ms; killed"));
    assert!(d.duration_ms >= 300);
    let sleep: i32 = fs::read_to_string(&pids).unwrap().trim().parse().unwrap();
    arbor::testing::eventually("the sink's child is killed", || {
        procfs::stat(sleep).is_none_or(|p| p.is_zombie())
    })
    .await;
}

#[tokio::test]
async fn the_file_sink_appends_one_json_line_per_event_even_from_concurrent_deliveries() {
    let tmp = tempfile::tempdir().unwrap();
    let ndjson = tmp.path().join("events.ndjson");
    let notify = NotifySpec {
        command: None,
        file: Some(ndjson.clone()),
    };
    let mut events = Vec::new();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let state = if i % 2 == 0 {
            failed()
        } else {
            JobState::Cancelled
        };
        let (files, record) = finished(tmp.path(), state);
        let event = CompletionEvent::new(&record, &files);
        events.push(event.clone());
        let notify = notify.clone();
        tasks.push(tokio::spawn(async move {
            deliver(&notify, &event, &files, TIMEOUT).await
        }));
    }
    for t in tasks {
        let r = within("deliver", t).await.unwrap();
        assert!(r.deliveries[0].ok, "{:?}", r.deliveries);
        assert_eq!(r.deliveries[0].target, ndjson.display().to_string());
    }
    let text = fs::read_to_string(&ndjson).unwrap();
    let mut got: Vec<CompletionEvent> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is one event"))
        .collect();
    assert_eq!(got.len(), 20);
    got.sort_by_key(|e| e.execution_id);
    events.sort_by_key(|e| e.execution_id);
    assert_eq!(got, events);
}

#[tokio::test]
async fn with_no_sinks_the_completion_event_is_still_written() {
    let tmp = tempfile::tempdir().unwrap();
    let (files, record) = finished(tmp.path(), JobState::Cancelled);
    let event = CompletionEvent::new(&record, &files);
    let r = deliver(&NotifySpec::default(), &event, &files, TIMEOUT).await;
    assert!(r.deliveries.is_empty());
    assert_eq!(files.read_completion().unwrap(), Some(r));
}
