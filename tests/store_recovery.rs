//! Recovery at start-up with real processes: an execution recorded as
//! running whose process is still there gets its process group killed, but
//! only when the pid is still the very process recorded (same start time).
//!
//! Waiting is bounded polling of /proc, never a fixed sleep.

use std::{
    collections::BTreeMap,
    os::unix::process::{CommandExt, ExitStatusExt},
    process::{Child, Command},
};

use arbor::runtime::process::procfs;
use arbor::store::{KillOutcome, Store};
use arbor::testing::{eventually, eventually_some};
use arbor::{ExecutionId, ExecutionMeta, ExecutionStatus, FailReason, JobState, JobTrigger};
use chrono::Utc;

/// `sh` leading its own process group, with a `sleep` child in it.
async fn spawn_group() -> (Child, i32) {
    let child = Command::new("sh")
        .args(["-c", "sleep 1000 & wait"])
        .process_group(0)
        .spawn()
        .expect("spawn sh");
    let pid = child.id() as i32;
    eventually("the group has sh and sleep", || {
        procfs::group(pid).iter().filter(|p| !p.is_zombie()).count() >= 2
    })
    .await;
    (child, pid)
}

fn record_running(store: &Store, pid: i32, start_ticks: u64) -> ExecutionId {
    let now = Utc::now();
    let meta = ExecutionMeta {
        id: ExecutionId::new(),
        job: "sleeper".into(),
        attempt: 1,
        retry_of: None,
        command: vec!["sh".into(), "-c".into(), "sleep 1000 & wait".into()],
        image: None,
        trigger: JobTrigger::Cli,
        env: BTreeMap::new(),
        cwd: None,
        created_at: now,
    };
    let status = ExecutionStatus {
        state: JobState::Running,
        pid: Some(pid as u32),
        pid_start_ticks: Some(start_ticks),
        started_at: Some(now),
        ..ExecutionStatus::pending(now)
    };
    store.create(&meta, &status).unwrap();
    meta.id
}

fn node_restarted() -> JobState {
    JobState::Failed {
        reason: FailReason::NodeRestarted,
        exit_code: None,
    }
}

#[tokio::test]
async fn a_running_execution_whose_process_survived_the_node_has_its_group_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let (mut child, pid) = spawn_group().await;
    let start = procfs::stat(pid).unwrap().start;
    let id = record_running(&store, pid, start);

    // The node restarts.
    let loaded = Store::open(tmp.path()).unwrap().load_all().unwrap();

    assert_eq!(loaded.recovered.len(), 1);
    let r = &loaded.recovered[0];
    assert_eq!((r.id, &r.previous), (id, &JobState::Running));
    assert_eq!(
        r.kill,
        KillOutcome::Killed {
            pid: pid as u32,
            group: true
        }
    );
    assert_eq!(r.kill.to_string(), format!("killed process group {pid}"));
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "sh got SIGKILL");
    eventually("every member of the group is dead", || {
        procfs::group(pid).iter().all(|p| p.is_zombie())
    })
    .await;
    let record = &loaded.records[0];
    assert_eq!(record.status.state, node_restarted());
    assert_eq!(record.status.state.to_string(), "failed: node restarted");
    assert_eq!(store.load(id).unwrap().status, record.status);
}

#[tokio::test]
async fn a_recorded_pid_with_another_start_time_is_never_touched() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let (mut child, pid) = spawn_group().await;
    let start = procfs::stat(pid).unwrap().start;
    // As if the pid had been reused by another process since.
    let id = record_running(&store, pid, start + 1);

    let loaded = store.load_all().unwrap();

    assert_eq!(
        loaded.recovered[0].kill,
        KillOutcome::PidReused {
            pid: pid as u32,
            recorded_ticks: start + 1,
            found_ticks: start
        }
    );
    assert_eq!(loaded.records[0].status.state, node_restarted());
    assert_eq!(store.load(id).unwrap().status.state, node_restarted());
    assert!(child.try_wait().unwrap().is_none(), "sh still runs");
    assert_eq!(
        procfs::group(pid).iter().filter(|p| !p.is_zombie()).count(),
        2,
        "sh and sleep still run"
    );

    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn a_recorded_process_that_is_gone_or_unverifiable_is_reported_and_left_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    // A process that exited and was reaped.
    let mut done = Command::new("true").spawn().unwrap();
    let gone_pid = done.id() as i32;
    done.wait().unwrap();
    let gone = record_running(&store, gone_pid, 12345);
    // A live process with no start time recorded.
    let (mut child, pid) = spawn_group().await;
    let now = Utc::now();
    let unverified = record_running(&store, pid, 0);
    let files = store.files(unverified).unwrap();
    files
        .write_state(&ExecutionStatus {
            state: JobState::Running,
            pid: Some(pid as u32),
            ..ExecutionStatus::pending(now)
        })
        .unwrap();

    let loaded = store.load_all().unwrap();
    let kill_of = |id| {
        loaded
            .recovered
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.kill.clone())
            .unwrap()
    };
    // The pid may have been taken again meanwhile: either way it is not killed.
    assert!(matches!(
        kill_of(gone),
        KillOutcome::Gone { .. } | KillOutcome::PidReused { .. }
    ));
    assert_eq!(
        kill_of(unverified),
        KillOutcome::Unverified {
            pid: pid as u32,
            reason: "no start time recorded"
        }
    );
    assert!(child.try_wait().unwrap().is_none(), "not touched");
    let leader = eventually_some("sh is alive", || procfs::stat(pid)).await;
    assert!(!leader.is_zombie());

    nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL).unwrap();
    child.wait().unwrap();
}
