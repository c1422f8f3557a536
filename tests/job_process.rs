//! Jobs as real processes with durable records: logs, signals, pause and
//! resume, masked env, and a node killed mid-run.

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use arbor::{
    Executor, ExecutorConfig, FailReason, JobSpec, JobState, JobTrigger, ProcessRuntime,
    runtime::process::procfs,
    testing::{eventually, eventually_some, eventually_some_async},
};

async fn executor(state: &Path) -> Executor {
    let runtime = ProcessRuntime::builder().build().unwrap();
    Executor::start(ExecutorConfig::new(Arc::new(runtime)).state_dir(state))
        .await
        .unwrap()
}

fn read(dir: &Path, id: arbor::ExecutionId, file: &str) -> Vec<u8> {
    std::fs::read(dir.join("executions").join(id.to_string()).join(file)).unwrap_or_default()
}

#[tokio::test]
async fn output_with_and_without_a_trailing_newline_lands_in_all_three_logs() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path()).await;
    let spec = JobSpec::shell("echo", "echo one; echo err >&2; printf two");
    let id = ex.run(spec, JobTrigger::Cli).await.unwrap();
    let record = ex.wait(id).await.unwrap();
    assert!(matches!(
        record.status.state,
        JobState::Completed { exit_code: 0, .. }
    ));
    assert_eq!(read(dir.path(), id, "stdout.log"), b"one\ntwo");
    assert_eq!(read(dir.path(), id, "stderr.log"), b"err\n");
    let full = String::from_utf8(read(dir.path(), id, "full.log")).unwrap();
    let lines: Vec<&str> = full.lines().collect();
    assert_eq!(lines.len(), 3, "{full}");
    for (label, text) in [
        ("[STDOUT]", "one"),
        ("[STDERR]", "err"),
        ("[STDOUT]", "two"),
    ] {
        let line = lines
            .iter()
            .find(|l| l.ends_with(&format!("{label} {text}")))
            .unwrap_or_else(|| panic!("no {label} {text} in {full}"));
        let stamp = line.split(' ').next().unwrap();
        chrono::DateTime::parse_from_rfc3339(stamp).expect("RFC 3339 time");
    }
    let state: serde_json::Value =
        serde_json::from_slice(&read(dir.path(), id, "state.json")).unwrap();
    assert_eq!(state["state"]["status"], "completed");
    assert!(state["finished_at"].is_string());
    // Sinks run after the terminal state is reported.
    let completion: serde_json::Value = eventually_some("the completion event is written", || {
        serde_json::from_slice(&read(dir.path(), id, "completion_event.json")).ok()
    })
    .await;
    assert_eq!(completion["event_type"], "completed");
    ex.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_job_killed_by_a_signal_reports_the_signal() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path()).await;
    let id = ex
        .run(JobSpec::shell("suicide", "kill -TERM $$"), JobTrigger::Cli)
        .await
        .unwrap();
    let record = ex.wait(id).await.unwrap();
    assert_eq!(
        record.status.state,
        JobState::Failed {
            reason: FailReason::KilledBySignal { signal: 15 },
            exit_code: None
        }
    );
    assert_eq!(record.status.signal, Some(15));
    ex.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn masked_env_is_hidden_in_records_and_logs_and_real_in_the_process() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path()).await;
    let mut spec = JobSpec::shell(
        "secret",
        "test \"${TOKEN#hunt}\" = er2 && echo real; printf %s \"$TOKEN\"",
    );
    spec.env.insert("TOKEN".into(), "hunter2".into());
    spec.mask = vec!["TOKEN".into()];
    let id = ex.run(spec, JobTrigger::Cli).await.unwrap();
    let record = ex.wait(id).await.unwrap();
    assert_eq!(record.meta.env["TOKEN"], "***");
    assert_eq!(read(dir.path(), id, "stdout.log"), b"real\n***");
    let meta = String::from_utf8(read(dir.path(), id, "meta.json")).unwrap();
    assert!(!meta.contains("hunter2"), "{meta}");
    ex.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn pause_stops_the_whole_process_group_and_resume_continues_it() {
    let dir = tempfile::tempdir().unwrap();
    let ex = executor(dir.path()).await;
    let spec = JobSpec::shell("ticker", "while true; do echo tick; sleep 0.02; done");
    let id = ex.run(spec, JobTrigger::Cli).await.unwrap();
    let pid = eventually_some_async("the ticker has a pid", || async {
        ex.get(id).await.ok().flatten().and_then(|r| r.status.pid)
    })
    .await;
    let size = || read(dir.path(), id, "stdout.log").len();
    eventually("it prints", || size() > 0).await;

    ex.pause(id).await.unwrap();
    eventually("every process of the group is stopped", || {
        // A child forked as the stop was sent may end on its own before
        // its stopped parent reaps it: a zombie is as still as a stopped one.
        // A shell caught in vfork(2) waits (state D) for its stopped child
        // to exec, which it never does while stopped: as still too.
        let group = procfs::group(pid as i32);
        group.iter().any(|p| p.state == 'T')
            && group.iter().all(|p| matches!(p.state, 'T' | 'Z' | 'D'))
    })
    .await;
    let frozen = size();
    // Stopped processes cannot write; a grace for a write already in the
    // pipe, then the size must hold.
    eventually("the log holds still", || {
        std::thread::sleep(Duration::from_millis(100));
        size() == frozen
    })
    .await;
    assert!(ex.get(id).await.unwrap().unwrap().status.paused);

    ex.resume(id).await.unwrap();
    eventually("output grows again", || size() > frozen).await;
    ex.cancel(id, Some(Duration::from_secs(1))).await.unwrap();
    assert_eq!(ex.wait(id).await.unwrap().status.state, JobState::Cancelled);
    assert!(
        procfs::group(pid as i32).is_empty(),
        "nothing left of the group"
    );
    ex.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_node_killed_mid_run_loses_no_finished_record_and_leaves_no_orphan() {
    let dir = tempfile::tempdir().unwrap();
    let arbor = env!("CARGO_BIN_EXE_arbor");
    let done = Command::new(arbor)
        .args([
            "run",
            "--agent",
            "http://127.0.0.1:1",
            "--wait",
            "--state-dir",
        ])
        .arg(dir.path())
        .args(["--name", "quick", "--", "sh", "-c", "echo finished"])
        .output()
        .unwrap();
    assert!(done.status.success(), "{done:?}");

    let mut node = Command::new(arbor)
        .args([
            "run",
            "--agent",
            "http://127.0.0.1:1",
            "--wait",
            "--state-dir",
        ])
        .arg(dir.path())
        .args(["--name", "long", "--", "sh", "-c", "sleep 1000 & wait"])
        .spawn()
        .unwrap();
    let executions = dir.path().join("executions");
    let (pid, ticks) = eventually_some("the long job runs", || {
        std::fs::read_dir(&executions)
            .ok()?
            .flatten()
            .find_map(|e| {
                let state: serde_json::Value =
                    serde_json::from_slice(&std::fs::read(e.path().join("state.json")).ok()?)
                        .ok()?;
                (state["state"]["status"] == "running").then(|| {
                    (
                        state["pid"].as_u64().unwrap() as i32,
                        state["pid_start_ticks"].as_u64().unwrap(),
                    )
                })
            })
    })
    .await;
    eventually("the sleep has started", || procfs::group(pid).len() >= 2).await;
    node.kill().unwrap(); // SIGKILL: no cleanup at all
    node.wait().unwrap();
    assert!(!procfs::group(pid).is_empty(), "the job outlived its node");
    assert_eq!(procfs::stat(pid).map(|s| s.start), Some(ticks));

    let ex = executor(dir.path()).await;
    let records = ex.list_all().await.unwrap();
    assert_eq!(records.len(), 2, "{records:#?}");
    let quick = records.iter().find(|r| r.meta.job == "quick").unwrap();
    assert!(matches!(quick.status.state, JobState::Completed { .. }));
    let long = records.iter().find(|r| r.meta.job == "long").unwrap();
    assert_eq!(
        long.status.state,
        JobState::Failed {
            reason: FailReason::NodeRestarted,
            exit_code: None
        }
    );
    assert_eq!(long.status.state.to_string(), "failed: node restarted");
    eventually("the orphaned group is gone", || {
        procfs::group(pid).iter().all(|p| p.is_zombie())
    })
    .await;
    ex.shutdown(Duration::from_secs(5)).await;
}
