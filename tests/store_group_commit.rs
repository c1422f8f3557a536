//! The group commit of terminal records (`<state-dir>/records.log`): what a
//! crash takes from the execution files, the log gives back at the next
//! load; a line cut short is skipped; a removed execution stays removed;
//! the log is emptied once replayed. And, with the real binary: an agent
//! killed (SIGKILL) while a thousand executions finish loses, tears or
//! duplicates none of the records it had called finished.

mod cli_support;

use std::{
    collections::{BTreeMap, HashMap},
    fs,
    io::Write,
    path::Path,
    time::Duration,
};

use arbor::store::{CHECKPOINT_BYTES, RECORDS_LOG, Store};
use arbor::{ExecutionId, ExecutionMeta, ExecutionStatus, JobState, JobTrigger};
use chrono::Utc;
use cli_support::{Agent, eventually, write_file};
use serde_json::Value;

fn meta(job: &str) -> ExecutionMeta {
    ExecutionMeta {
        id: ExecutionId::new(),
        job: job.to_owned(),
        attempt: 1,
        retry_of: None,
        command: vec!["true".into()],
        image: None,
        trigger: JobTrigger::Cli,
        env: BTreeMap::new(),
        cwd: None,
        created_at: Utc::now(),
    }
}

fn running() -> ExecutionStatus {
    ExecutionStatus {
        state: JobState::Running,
        started_at: Some(Utc::now()),
        ..ExecutionStatus::pending(Utc::now())
    }
}

fn completed(code: i32) -> ExecutionStatus {
    let state = if code == 0 {
        JobState::Completed {
            exit_code: 0,
            duration: Duration::from_millis(5),
        }
    } else {
        JobState::Failed {
            reason: arbor::FailReason::NonZeroExit { code },
            exit_code: Some(code),
        }
    };
    ExecutionStatus {
        state,
        finished_at: Some(Utc::now()),
        ..running()
    }
}

/// `n` executions written through `store` as running, then finished with
/// exit code `i % 3` (0 completes, others fail), from 16 threads at once.
fn finish_many(store: &Store, n: usize) -> Vec<(ExecutionId, ExecutionStatus)> {
    let done = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for t in 0..16 {
            let (store, done) = (store.clone(), &done);
            s.spawn(move || {
                for i in (t..n).step_by(16) {
                    let m = meta("quick");
                    let files = store.create(&m, &running()).unwrap();
                    let end = completed((i % 3) as i32);
                    files.write_state(&end).unwrap();
                    done.lock().unwrap().push((m.id, end));
                }
            });
        }
    });
    done.into_inner().unwrap()
}

fn log_len(state: &Path) -> u64 {
    fs::metadata(state.join(RECORDS_LOG)).map_or(0, |m| m.len())
}

#[test]
fn terminal_records_lost_from_their_files_are_put_back_from_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = Store::open(&state).unwrap();
    let finished = finish_many(&store, 60);
    assert!(log_len(&state) > 0, "the terminal records are in the log");
    // What a power cut can leave of files written without fsync: an older
    // state.json, an empty one, no meta.json, no directory at all.
    for (i, (id, _)) in finished.iter().enumerate() {
        let dir = store.dir(*id);
        match i % 4 {
            0 => {
                let older = serde_json::to_vec(&running()).unwrap();
                fs::write(dir.join("state.json"), older).unwrap();
            }
            1 => fs::write(dir.join("state.json"), b"").unwrap(),
            2 => fs::remove_file(dir.join("meta.json")).unwrap(),
            _ => fs::remove_dir_all(&dir).unwrap(),
        }
    }
    drop(store);

    let store = Store::open(&state).unwrap();
    let loaded = store.load_all().unwrap();
    assert!(loaded.skipped.is_empty(), "skipped {:?}", loaded.skipped);
    assert!(loaded.recovered.is_empty(), "none is 'node restarted'");
    let by_id: HashMap<_, _> = loaded
        .records
        .iter()
        .map(|r| (r.meta.id, r.status.clone()))
        .collect();
    assert_eq!(by_id.len(), finished.len());
    for (id, end) in &finished {
        assert_eq!(by_id.get(id), Some(end), "execution {id}");
    }
    assert_eq!(log_len(&state), 0, "the log is emptied once replayed");
}

#[test]
fn a_line_cut_short_by_a_crash_is_skipped_and_the_rest_replayed() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = Store::open(&state).unwrap();
    let finished = finish_many(&store, 5);
    // A crash in the middle of an append: half a line, never acknowledged.
    let log = fs::read(state.join(RECORDS_LOG)).unwrap();
    let first_line = log.split(|&b| b == b'\n').next().unwrap();
    let mut file = fs::OpenOptions::new()
        .append(true)
        .open(state.join(RECORDS_LOG))
        .unwrap();
    file.write_all(&first_line[..first_line.len() / 2]).unwrap();
    drop(file);
    let (id, end) = &finished[0];
    fs::remove_dir_all(store.dir(*id)).unwrap();

    let replayed = store.replay().unwrap();
    assert_eq!(replayed.torn, 1);
    assert_eq!(replayed.lines, 5);
    assert_eq!(replayed.restored, vec![*id]);
    assert_eq!(&store.load(*id).unwrap().status, end);
}

#[test]
fn a_removed_execution_is_not_brought_back_by_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = Store::open(&state).unwrap();
    let finished = finish_many(&store, 3);
    let (gone, _) = finished[1];
    store.remove(gone).unwrap();
    // A later commit makes the removal durable with it.
    finish_many(&store, 1);
    drop(store);

    let loaded = Store::open(&state).unwrap().load_all().unwrap();
    let ids: Vec<_> = loaded.records.iter().map(|r| r.meta.id).collect();
    assert_eq!(ids.len(), 3);
    assert!(!ids.contains(&gone), "the removed execution came back");
}

#[test]
fn the_log_is_emptied_when_it_passes_its_checkpoint_size() {
    let tmp = tempfile::tempdir().unwrap();
    let state = tmp.path().join("state");
    let store = Store::open(&state).unwrap();
    let mut written = 0u64;
    let mut rounds = 0;
    // Each round adds about 40 KB; the log must never hold more than one
    // checkpoint's worth plus a batch.
    while written < CHECKPOINT_BYTES + CHECKPOINT_BYTES / 2 {
        let before = log_len(&state);
        finish_many(&store, 64);
        let after = log_len(&state);
        written += after.saturating_sub(before).max(1);
        if after < before {
            written += CHECKPOINT_BYTES;
        }
        rounds += 1;
        assert!(rounds < 1000, "the log never grew");
    }
    assert!(
        log_len(&state) < CHECKPOINT_BYTES,
        "records.log holds {} bytes",
        log_len(&state)
    );
}

const SPEC: &str = r#"
jobs:
  quick:
    command: ["sh", "-c", "exit $(( $$ % 2 ))"]
    concurrency: allow
    max_concurrent: 1000
    history: {successful: 5000, failed: 5000}
"#;

fn executions(agent: &Agent) -> Vec<Value> {
    let (code, body) = agent.http("GET", "/v1/executions?job=quick", "");
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    v.as_array()
        .cloned()
        .or_else(|| v["executions"].as_array().cloned())
        .unwrap_or_default()
}

fn agent_ref(agent: &Agent) -> &Agent {
    agent
}

/// SIGKILL, without waiting (the triggering threads still hold the agent).
fn kill9(agent: &Agent) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

fn is_terminal(e: &Value) -> bool {
    matches!(
        e["state"]["status"].as_str(),
        Some("completed" | "failed" | "cancelled")
    )
}

#[test]
fn an_agent_killed_while_a_thousand_executions_finish_loses_no_record() {
    let tmp = tempfile::tempdir().unwrap();
    let spec = write_file(tmp.path(), "spec.yaml", SPEC);
    let state = tmp.path().join("state");
    let mut agent = Agent::start(&spec, &state, &[]);
    // Four clients trigger a thousand runs, until the agent is gone.
    let ids = std::sync::Mutex::new(Vec::new());
    let mut acknowledged = HashMap::new();
    std::thread::scope(|s| {
        for _ in 0..4 {
            let (agent, ids) = (&agent, &ids);
            s.spawn(move || {
                while ids.lock().unwrap().len() < 1000 {
                    let Ok((202, body)) = std::panic::catch_unwind(|| {
                        agent.http("POST", "/v1/jobs/quick/trigger", "")
                    }) else {
                        return; // the agent was killed
                    };
                    let v: Value = serde_json::from_str(&body).unwrap();
                    let id = v["execution_id"].as_str().unwrap().to_owned();
                    ids.lock().unwrap().push(id);
                }
            });
        }
        // What the API called finished, once some have and some have not.
        eventually("a part of the executions finished", || {
            acknowledged = executions(agent_ref(&agent))
                .into_iter()
                .filter(is_terminal)
                .map(|e| (e["id"].as_str().unwrap().to_owned(), e))
                .collect();
            acknowledged.len() >= 300
        });
        kill9(&agent);
    });
    agent.child.wait().unwrap();
    let ids = ids.into_inner().unwrap();
    assert!(
        acknowledged.len() < ids.len(),
        "all had finished before the kill: the test saw no batch in flight"
    );

    let agent = Agent::start(&spec, &state, &[]);
    // Executions running under keepers at the kill are adopted and end now.
    let mut after = Vec::new();
    eventually("every execution ended after the restart", || {
        after = executions(&agent);
        after.iter().all(is_terminal)
    });
    let mut seen: HashMap<String, usize> = HashMap::new();
    for e in &after {
        *seen
            .entry(e["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert!(
        seen.values().all(|&n| n == 1),
        "an execution is listed twice"
    );
    for id in &ids {
        assert_eq!(seen.get(id), Some(&1), "execution {id} is missing");
    }
    for (id, before) in &acknowledged {
        let now = after.iter().find(|e| e["id"] == id.as_str()).unwrap();
        assert_eq!(now["state"], before["state"], "execution {id}");
        assert_eq!(now["finished_at"], before["finished_at"], "execution {id}");
    }
    // Every record on disk reads back whole.
    for id in &ids {
        let dir = state.join("executions").join(id);
        for file in ["meta.json", "state.json"] {
            let text = fs::read_to_string(dir.join(file)).unwrap();
            serde_json::from_str::<Value>(&text)
                .unwrap_or_else(|e| panic!("{id}/{file} is torn ({e}): {text:?}"));
        }
    }
    assert_eq!(agent.stop(), 0);
}
