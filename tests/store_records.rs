//! The store's records on disk: creating an execution, rewriting its state
//! atomically, reading everything back after a crash, removing it.

use std::{collections::BTreeMap, fs, time::Duration};

use arbor::store::{KillOutcome, Store, StoreError};
use arbor::{ExecutionId, ExecutionMeta, ExecutionStatus, FailReason, JobState, JobTrigger};
use chrono::{DateTime, TimeZone, Utc};

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap()
}

fn meta(job: &str, created_at: DateTime<Utc>) -> ExecutionMeta {
    ExecutionMeta {
        id: ExecutionId::new(),
        job: job.to_owned(),
        attempt: 1,
        retry_of: None,
        command: vec!["true".into()],
        image: None,
        trigger: JobTrigger::Cli,
        env: BTreeMap::from([("A".into(), "1".into())]),
        cwd: None,
        created_at,
    }
}

fn status(state: JobState, now: DateTime<Utc>) -> ExecutionStatus {
    ExecutionStatus {
        state,
        ..ExecutionStatus::pending(now)
    }
}

fn completed() -> JobState {
    JobState::Completed {
        exit_code: 0,
        duration: Duration::from_millis(1500),
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("state")).unwrap();
    (dir, store)
}

fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn open_creates_the_executions_directory() {
    let (_tmp, store) = store();
    assert!(store.executions_dir().is_dir());
    assert_eq!(store.executions_dir(), store.state_dir().join("executions"));
    // Opening again is fine.
    Store::open(store.state_dir()).unwrap();
}

#[test]
fn create_writes_meta_and_state_and_load_reads_them_back() {
    let (_tmp, store) = store();
    let m = meta("backup", at(0));
    let s = ExecutionStatus::pending(at(0));
    let files = store.create(&m, &s).unwrap();
    assert_eq!(files.dir(), store.dir(m.id));
    assert_eq!(names_in(files.dir()), ["meta.json", "state.json"]);
    let record = store.load(m.id).unwrap();
    assert_eq!((record.meta, record.status), (m.clone(), s));
    // An id is created once.
    assert!(matches!(
        store.create(&m, &ExecutionStatus::pending(at(0))),
        Err(StoreError::CreateDir { .. })
    ));
}

#[test]
fn state_is_rewritten_atomically_and_always_parseable() {
    let (_tmp, store) = store();
    let m = meta("job", at(0));
    let files = store.create(&m, &ExecutionStatus::pending(at(0))).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    // A reader checks state.json all the while it is rewritten.
    let reader = {
        let (path, stop) = (files.state_path(), stop.clone());
        std::thread::spawn(move || {
            let mut reads = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
                let text = fs::read(&path).expect("state.json is always there");
                serde_json::from_slice::<ExecutionStatus>(&text).expect("state.json parses");
                reads += 1;
            }
            reads
        })
    };
    for i in 0..300 {
        let mut s = status(JobState::Running, at(i));
        s.pid = Some(1000 + i as u32);
        files.write_state(&s).unwrap();
        assert_eq!(files.read_state().unwrap(), s);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(
        names_in(files.dir()),
        ["meta.json", "state.json"],
        "no temp files left"
    );
}

#[test]
fn load_all_after_a_crash_keeps_finished_records_fails_active_ones_and_skips_corrupt_dirs() {
    let (_tmp, store) = store();
    // Created out of order: load_all sorts by created_at.
    let done = meta("a", at(20));
    store.create(&done, &status(completed(), at(21))).unwrap();
    let running = meta("b", at(10));
    let mut running_status = status(JobState::Running, at(11));
    running_status.started_at = Some(at(11));
    running_status.paused = true;
    store.create(&running, &running_status).unwrap();
    let pending = meta("c", at(30));
    store
        .create(&pending, &ExecutionStatus::pending(at(30)))
        .unwrap();
    let cancelled = meta("d", at(5));
    store
        .create(&cancelled, &status(JobState::Cancelled, at(6)))
        .unwrap();

    // Corruption of several kinds.
    let torn = meta("e", at(1));
    let torn_files = store
        .create(&torn, &ExecutionStatus::pending(at(1)))
        .unwrap();
    fs::write(torn_files.state_path(), b"{\"state\": {\"status\": \"runn").unwrap();
    let no_meta = store.dir(ExecutionId::new());
    fs::create_dir(&no_meta).unwrap();
    let stray = store.executions_dir().join("not-an-id");
    fs::create_dir(&stray).unwrap();
    let other = meta("f", at(2));
    let other_files = store
        .create(&other, &ExecutionStatus::pending(at(2)))
        .unwrap();
    let wrong_id_dir = store.dir(ExecutionId::new());
    fs::rename(other_files.dir(), &wrong_id_dir).unwrap();
    // A temp file a crash left in the middle of an atomic write.
    fs::write(store.dir(done.id).join("state.json.tmp-1-2"), b"{").unwrap();

    let before = Utc::now();
    let loaded = store.load_all().unwrap();

    let jobs: Vec<&str> = loaded.records.iter().map(|r| r.meta.job.as_str()).collect();
    assert_eq!(jobs, ["d", "b", "a", "c"]);
    let by_job = |job: &str| loaded.records.iter().find(|r| r.meta.job == job).unwrap();
    assert_eq!(by_job("a").status, status(completed(), at(21)));
    assert_eq!(by_job("d").status.state, JobState::Cancelled);
    for job in ["b", "c"] {
        let s = &by_job(job).status;
        assert_eq!(
            s.state,
            JobState::Failed {
                reason: FailReason::NodeRestarted,
                exit_code: None
            }
        );
        assert_eq!(s.state.to_string(), "failed: node restarted");
        assert!(s.finished_at.unwrap() >= before);
        assert!(!s.paused);
    }
    assert_eq!(by_job("b").status.started_at, Some(at(11)));

    let mut recovered: Vec<_> = loaded
        .recovered
        .iter()
        .map(|r| {
            (
                r.id,
                r.previous.clone(),
                r.kill.clone(),
                r.write_error.clone(),
            )
        })
        .collect();
    recovered.sort_by_key(|r| r.1.name());
    assert_eq!(
        recovered,
        [
            (pending.id, JobState::Pending, KillOutcome::NoPid, None),
            (running.id, JobState::Running, KillOutcome::NoPid, None),
        ]
    );

    let mut skipped: Vec<_> = loaded.skipped.iter().map(|(p, _)| p.clone()).collect();
    skipped.sort();
    let mut expected = vec![
        store.dir(torn.id),
        no_meta.clone(),
        stray.clone(),
        wrong_id_dir.clone(),
    ];
    expected.sort();
    assert_eq!(skipped, expected);
    let reason = |p: &std::path::Path| &loaded.skipped.iter().find(|(q, _)| q == p).unwrap().1;
    assert!(
        reason(&store.dir(torn.id)).starts_with("failed to parse "),
        "{}",
        reason(&store.dir(torn.id))
    );
    assert!(reason(&store.dir(torn.id)).contains("state.json"));
    assert!(
        reason(&no_meta).contains("meta.json"),
        "{}",
        reason(&no_meta)
    );
    assert!(
        reason(&stray).contains("not an execution id"),
        "{}",
        reason(&stray)
    );
    assert!(
        reason(&wrong_id_dir).contains(&other.id.to_string()),
        "{}",
        reason(&wrong_id_dir)
    );
    // Corrupt dirs stay on disk for a human to look at.
    assert!(store.dir(torn.id).is_dir() && stray.is_dir());
    assert_eq!(names_in(&store.dir(done.id)), ["meta.json", "state.json"]);

    // The recovery was written: a second start finds nothing to recover.
    let again = store.load_all().unwrap();
    assert!(again.recovered.is_empty());
    assert_eq!(again.records, loaded.records);
}

#[test]
fn remove_deletes_the_execution_directory() {
    let (_tmp, store) = store();
    let m = meta("job", at(0));
    let files = store.create(&m, &ExecutionStatus::pending(at(0))).unwrap();
    let out = files.output(1024).unwrap();
    out.write_line(arbor::runtime::LogStream::Stdout, "hello");
    out.finish().unwrap();
    store.remove(m.id).unwrap();
    assert!(!files.dir().exists());
    assert!(store.load_all().unwrap().records.is_empty());
    // Removing it again is not an error.
    store.remove(m.id).unwrap();
    assert!(matches!(store.load(m.id), Err(StoreError::NotFound { .. })));
}

#[test]
fn errors_say_what_failed_and_name_the_path() {
    let (_tmp, store) = store();
    let id = ExecutionId::new();
    let err = store.files(id).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "failed to find execution {id}: no directory {}",
            store.dir(id).display()
        )
    );
    let blocker = store.state_dir().join("file");
    fs::write(&blocker, b"").unwrap();
    let err = Store::open(&blocker).unwrap_err();
    assert!(err.to_string().starts_with(&format!(
        "failed to create directory {}",
        blocker.join("executions").display()
    )));
    assert!(std::error::Error::source(&err).is_some());
    let top: arbor::Error = err.into();
    assert!(top.to_string().starts_with("failed to create directory"));
}
