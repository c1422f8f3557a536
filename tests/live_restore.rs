//! Live restore (real binary): service replicas run under keepers, so they
//! outlive an agent that is killed or leaves on SIGUSR2, and the next agent
//! on the same state dir adopts them: same pids, output still captured,
//! restart state continued, exits seen with their real status.

mod cli_support;

use std::path::{Path, PathBuf};

use cli_support::{
    Agent, Lines, alive, eventually, marked_after, marked_pid, markers, replica_dir, wait_marked,
    write_file,
};
use nix::{sys::signal::Signal, unistd::Pid};
use serde_json::Value;

// `web` prints numbered lines; `crashy` crash-loops with exact delays
// (250ms, 750ms, 2.25s, 6.75s, 20.25s: no jitter).
const SPEC: &str = r#"
services:
  web:
    command: ["sh", "-c", "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.05; done"]
    replicas: 2
  crashy:
    command: ["sh", "-c", "exit 1"]
    max_restarts: 1
    restart_window: 5m
    on_limit: backoff
    backoff: {initial: 250ms, max: 5m, multiplier: 3, jitter: 0, reset_after: 5m}
jobs:
  ticker:
    command: ["sh", "-c", "i=0; while [ $i -lt 50 ]; do i=$((i+1)); echo tick $i; sleep 0.1; done"]
"#;

/// The numbers of `line N` in a replica's stdout.log, in order.
fn numbers(state: &Path, replica: &str) -> Vec<u64> {
    std::fs::read_to_string(replica_dir(state, "web", replica).join("stdout.log"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.strip_prefix("line ")?.parse().ok())
        .collect()
}

fn kill9(agent: &mut Agent) {
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
}

fn keepers_left(state: &Path) -> Vec<String> {
    std::fs::read_dir(state.join("keepers"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn services_outlive_a_killed_agent_and_the_next_agent_adopts_them() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(dir.path(), "spec.yaml", SPEC);
    let state = dir.path().join("state");

    let mut agent = Agent::start(&spec, &state, &[]);
    eventually("web up and crashy at its step-3 back-off", || {
        let c = agent.service("crashy");
        agent.service("web")["running"] == 2
            && c["status"] == "crash_loop_back_off"
            && c["restarts"] == 4
    });
    let due = agent.service("crashy")["next_restart"].clone();
    // The supervision state is written in batches: wait for this one.
    eventually("the state on disk", || {
        std::fs::read(state.join("supervision.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["scopes"]["crashy"]["crashy-0"]["restart_count"] == 4)
    });
    let pids: Vec<i32> = ["web-0", "web-1"]
        .iter()
        .map(|r| wait_marked(&state, "web", r).1)
        .collect();
    // A job printing a line every 100 ms for 5 s, killed in the middle.
    let job = trigger(&agent, "ticker");
    let job_pid = pid_of(&state, &job);
    eventually("a few ticks", || {
        execution_file(&state, &job, "stdout.log").lines().count() >= 5
    });
    kill9(&mut agent);
    assert!(alive(job_pid), "the job died with the agent");
    for pid in &pids {
        assert!(alive(*pid), "pid {pid} died with the agent");
    }
    let at_kill = numbers(&state, "web-0").len();
    let before: Vec<usize> = ["web-0", "web-1"]
        .iter()
        .map(|r| markers(&state, "web", r))
        .collect();

    let agent = Agent::start(&spec, &state, &[]);
    let events = Lines::spawn({
        let mut cmd = cli_support::arbor();
        cmd.args(["--agent", &agent.socket, "events", "--json"]);
        cmd
    });
    for ((replica, pid), before) in ["web-0", "web-1"].iter().zip(&pids).zip(before) {
        assert_eq!(
            marked_after(&state, "web", replica, before),
            Some(("re-adopted".to_owned(), *pid)),
            "{replica} was not adopted"
        );
    }
    let web = agent.service("web");
    assert_eq!(web["running"], 2, "{web}");
    assert_eq!(web["restarts"], 0, "nothing restarted: {web}");
    let crashy = agent.service("crashy");
    assert_eq!(crashy["status"], "crash_loop_back_off", "{crashy}");
    assert_eq!(crashy["restarts"], 4, "{crashy}");
    let time = |v: &Value| {
        v.as_str()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .unwrap_or_else(|| panic!("no time in {v}"))
    };
    let drift = (time(&crashy["next_restart"]) - time(&due)).num_milliseconds();
    assert!(drift.abs() < 1000, "the same back-off goes on: {crashy}");

    // Output is captured again, every line exactly once.
    eventually("more output after the adoption", || {
        numbers(&state, "web-0").len() > at_kill + 20
    });
    let seen = numbers(&state, "web-0");
    let expected: Vec<u64> = (1..=seen.len() as u64).collect();
    assert_eq!(seen, expected, "lines lost or repeated across the kill");

    // The job ends once, completed, with every line once.
    eventually("the job to complete", || {
        status(&agent, &job)["state"]["status"] != "running"
    });
    let record = status(&agent, &job);
    assert_eq!(record["state"]["status"], "completed", "{record}");
    assert_eq!(record["state"]["exit_code"], 0, "{record}");
    let ticks: Vec<String> = execution_file(&state, &job, "stdout.log")
        .lines()
        .map(str::to_owned)
        .collect();
    let expected: Vec<String> = (1..=50).map(|i| format!("tick {i}")).collect();
    assert_eq!(
        ticks, expected,
        "job lines lost or repeated across the kill"
    );
    let runs = agent.arbor(["list", "--json"]).expect(0).json();
    assert_eq!(runs.as_array().unwrap().len(), 1, "one execution: {runs}");

    // The back-off's next step follows: 20.25 s, restart 5.
    let lines = events.until("the step-4 back-off", |l| {
        l.contains("\"crash_loop_back_off\"") && l.contains("\"restart_count\":5")
    });
    let last: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(last["delay"], "20s 250ms", "{last}");

    // A graceful stop still stops everything.
    assert_eq!(agent.stop(), 0);
    for pid in &pids {
        eventually("the adopted process to stop", || !alive(*pid));
    }
    assert_eq!(keepers_left(&state), Vec::<String>::new());
}

#[test]
fn sigusr2_leaves_services_running_for_the_next_agent() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        "services:\n  web:\n    command: [\"sleep\", \"3600\"]\n",
    );
    let state = dir.path().join("state");
    let mut agent = Agent::start(&spec, &state, &[]);
    let (_, pid) = wait_marked(&state, "web", "web-0");
    // The records hold the replicas' environment: owner only.
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&state.join("keepers")), 0o700);
    for f in keepers_left(&state) {
        assert_eq!(mode(&state.join("keepers").join(&f)) & 0o077, 0, "{f}");
    }
    nix::sys::signal::kill(Pid::from_raw(agent.child.id() as i32), Signal::SIGUSR2).unwrap();
    let status = agent.child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{status:?}");
    assert!(alive(pid), "the service stopped with the agent");

    let before = markers(&state, "web", "web-0");
    let agent = Agent::start(&spec, &state, &[]);
    assert_eq!(
        marked_after(&state, "web", "web-0", before),
        Some(("re-adopted".to_owned(), pid))
    );
    assert_eq!(agent.service("web")["running"], 1);
    assert_eq!(agent.stop(), 0);
    eventually("the service to stop", || !alive(pid));
    assert_eq!(keepers_left(&state), Vec::<String>::new());
}

#[test]
fn an_exit_while_no_agent_watches_is_reported_with_its_status_after_adoption() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        &format!(
            "services:\n  quitter:\n    command: [\"sh\", \"-c\", \"while [ ! -e {0} ]; do sleep 0.05; done; rm {0}; exit 7\"]\n",
            go.display()
        ),
    );
    let state = dir.path().join("state");
    let mut agent = Agent::start(&spec, &state, &[]);
    let (_, pid) = wait_marked(&state, "quitter", "quitter-0");
    kill9(&mut agent);
    std::fs::write(&go, "").unwrap();
    eventually("the service to exit while no agent runs", || !alive(pid));

    let agent = Agent::start(&spec, &state, &[]);
    eventually("the exit reported and the replica restarted", || {
        agent.service("quitter")["restarts"] == 1
    });
    let tree = agent.arbor(["tree", "--json"]).expect(0).json();
    let replica = tree["children"]
        .as_array()
        .and_then(|c| c.iter().find(|s| s["name"] == "quitter"))
        .and_then(|s| s["children"].get(0))
        .cloned()
        .expect("quitter-0 in the tree");
    assert_eq!(replica["last_exit"]["status"]["code"], 7, "{replica}");
    let full =
        std::fs::read_to_string(replica_dir(&state, "quitter", "quitter-0").join("full.log"))
            .unwrap();
    assert!(full.contains("exited: exit code 7"), "{full}");
    assert_eq!(agent.stop(), 0);
    assert_eq!(keepers_left(&state), Vec::<String>::new());
}

#[test]
fn a_changed_or_removed_service_is_not_adopted_and_its_old_process_stops() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        "services:\n  a:\n    command: [\"sleep\", \"3601\"]\n  b:\n    command: [\"sleep\", \"3602\"]\n",
    );
    let state = dir.path().join("state");
    let mut agent = Agent::start(&spec, &state, &[]);
    let (_, a) = wait_marked(&state, "a", "a-0");
    let (_, b) = wait_marked(&state, "b", "b-0");
    kill9(&mut agent);
    let before = markers(&state, "a", "a-0");

    let changed = write_file(
        dir.path(),
        "changed.yaml",
        "services:\n  a:\n    command: [\"sleep\", \"3603\"]\n",
    );
    let agent = Agent::start(&changed, &state, &[]);
    let (how, new_a) = marked_after(&state, "a", "a-0", before).expect("a started again");
    assert_eq!(how, "started");
    assert_ne!(new_a, a);
    assert!(!alive(a), "the old a still runs beside the new one");
    eventually("the removed service's process to stop", || !alive(b));
    assert_eq!(agent.stop(), 0);
    assert_eq!(keepers_left(&state), Vec::<String>::new());
}

#[test]
fn with_no_live_restore_services_run_without_keepers() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        "services:\n  web:\n    command: [\"sleep\", \"3604\"]\n",
    );
    let state = dir.path().join("state");
    let agent = Agent::start(&spec, &state, &["--no-live-restore"]);
    assert_eq!(agent.service("web")["running"], 1);
    assert_eq!(keepers_left(&state), Vec::<String>::new(), "no keeper");
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_replica_left_without_an_agent_past_the_orphan_timeout_is_stopped_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        "services:\n  lonely:\n    command: [\"sleep\", \"3605\"]\n",
    );
    let state = dir.path().join("state");
    let mut agent = Agent::start(&spec, &state, &["--orphan-timeout", "1s"]);
    let (_, pid) = wait_marked(&state, "lonely", "lonely-0");
    kill9(&mut agent);
    eventually("the keeper to stop its orphaned replica", || !alive(pid));
    eventually("the keeper to leave, its exit on disk", || {
        let files = keepers_left(&state);
        files.iter().any(|f| f.ends_with(".exit")) && !files.iter().any(|f| f.ends_with(".sock"))
    });

    let agent = Agent::start(&spec, &state, &[]);
    eventually("the exit reported and the replica restarted", || {
        agent.service("lonely")["restarts"] == 1
    });
    let tree = agent.arbor(["tree", "--json"]).expect(0).json();
    let replica = tree["children"]
        .as_array()
        .and_then(|c| c.iter().find(|s| s["name"] == "lonely"))
        .and_then(|s| s["children"].get(0))
        .cloned()
        .expect("lonely-0 in the tree");
    assert_eq!(replica["last_exit"]["status"]["signal"], 15, "{replica}");
    assert_eq!(agent.stop(), 0);
    assert_eq!(keepers_left(&state), Vec::<String>::new());
}

/// `arbor agent` run from `bin`, once it listens.
fn agent_from(bin: &Path, spec: &Path, state: &Path) -> std::process::Child {
    use std::io::BufRead;
    let mut child = std::process::Command::new(bin)
        .arg("agent")
        .arg("--spec")
        .arg(spec)
        .arg("--state-dir")
        .arg(state)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("listening on"), "{line:?}");
    child
}

#[test]
fn without_arbor_keeper_beside_it_the_agent_binary_keeps_replicas_itself() {
    // A link to the binary in a directory without `arbor-keeper`.
    let bin_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let bin = bin_dir.path().join("arbor");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_arbor"), &bin).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_arbor"), &bin).unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        "services:\n  web:\n    command: [\"sleep\", \"3606\"]\n",
    );
    let state = dir.path().join("state");
    let mut agent = agent_from(&bin, &spec, &state);
    let (_, pid) = wait_marked(&state, "web", "web-0");
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let ppid: i32 = stat
        .rsplit_once(')')
        .and_then(|(_, r)| r.split_whitespace().nth(1)?.parse().ok())
        .unwrap();
    let keeper = std::fs::read(format!("/proc/{ppid}/cmdline")).unwrap();
    let keeper: Vec<&[u8]> = keeper.split(|b| *b == 0).collect();
    assert_eq!(
        keeper[0],
        bin.as_os_str().as_encoded_bytes(),
        "the agent's binary keeps it"
    );
    assert_eq!(keeper[1], b"__keeper");
    agent.kill().unwrap();
    agent.wait().unwrap();

    let before = markers(&state, "web", "web-0");
    let mut agent = agent_from(&bin, &spec, &state);
    assert_eq!(
        marked_after(&state, "web", "web-0", before),
        Some(("re-adopted".to_owned(), pid))
    );
    nix::sys::signal::kill(Pid::from_raw(agent.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(agent.wait().unwrap().code(), Some(0));
    assert!(!alive(pid));
}

#[test]
fn repeated_agent_kills_keep_pids_counts_and_output_and_leave_nothing_after_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        r#"
services:
  web:
    command: ["sh", "-c", "i=0; while :; do i=$((i+1)); echo line $i; sleep 0.02; done"]
    replicas: 2
  flaky:
    command: ["sh", "-c", "sleep 0.2; exit 1"]
    backoff: {initial: 50ms, max: 200ms, jitter: 0}
"#,
    );
    let state = dir.path().join("state");
    let mut pids: Option<Vec<i32>> = None;
    let mut flaky_restarts = 0;
    for round in 0..5 {
        let before: Vec<usize> = ["web-0", "web-1"]
            .iter()
            .map(|r| markers(&state, "web", r))
            .collect();
        let mut agent = Agent::start(&spec, &state, &[]);
        let now: Vec<i32> = ["web-0", "web-1"]
            .iter()
            .zip(before)
            .map(|(r, n)| marked_after(&state, "web", r, n).expect("a marker").1)
            .collect();
        match &pids {
            None => pids = Some(now),
            Some(first) => assert_eq!(&now, first, "round {round}: a web replica was replaced"),
        }
        let web = agent.service("web");
        assert_eq!(web["restarts"], 0, "round {round}: {web}");
        let before = agent.service("flaky")["restarts"].as_u64().unwrap();
        assert!(
            before >= flaky_restarts,
            "round {round}: flaky's count went back from {flaky_restarts} to {before}"
        );
        eventually("flaky to restart under this agent", || {
            agent.service("flaky")["restarts"].as_u64() > Some(before)
        });
        flaky_restarts = agent.service("flaky")["restarts"].as_u64().unwrap();
        // Restart state is written in batches (25 ms): a kill inside one
        // loses its last restart, as documented; wait for it.
        eventually("the count on disk", || {
            std::fs::read(state.join("supervision.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
                .and_then(|v| v["scopes"]["flaky"]["flaky-0"]["restart_count"].as_u64())
                >= Some(flaky_restarts)
        });
        kill9(&mut agent);
    }
    let agent = Agent::start(&spec, &state, &[]);
    assert_eq!(agent.stop(), 0);
    for pid in pids.unwrap() {
        assert!(!alive(pid), "pid {pid} outlived the stop");
    }
    assert_eq!(keepers_left(&state), Vec::<String>::new());
    for replica in ["web-0", "web-1"] {
        let seen = numbers(&state, replica);
        let expected: Vec<u64> = (1..=seen.len() as u64).collect();
        assert_eq!(seen, expected, "{replica}: lines lost or repeated");
    }
}

/// A job whose command prints `one` (and `err` on stderr), waits for the
/// file `go`, prints `two` and exits 3; and one that sleeps.
fn job_spec(dir: &Path) -> PathBuf {
    let go = dir.join("go");
    write_file(
        dir,
        "jobs.yaml",
        &format!(
            r#"
jobs:
  slow:
    command: ["sh", "-c", "echo one; echo err >&2; while [ ! -e {} ]; do sleep 0.05; done; echo two; exit 3"]
    concurrency: forbid
  sleeper:
    command: ["sleep", "3600"]
"#,
            go.display()
        ),
    )
}

fn execution_file(state: &Path, id: &str, file: &str) -> String {
    std::fs::read_to_string(state.join("executions").join(id).join(file)).unwrap_or_default()
}

fn trigger(agent: &Agent, job: &str) -> String {
    let out = agent.arbor(["jobs", "trigger", job]).expect(0);
    out.stdout.trim().to_owned()
}

fn status(agent: &Agent, id: &str) -> Value {
    agent.arbor(["status", id, "--json"]).expect(0).json()
}

/// The pid in the execution's record, once it is recorded running (its
/// output can come first).
fn pid_of(state: &Path, id: &str) -> i32 {
    let pid = || {
        serde_json::from_str::<Value>(&execution_file(state, id, "state.json"))
            .ok()
            .filter(|r| r["state"]["status"] == "running")
            .and_then(|r| r["pid"].as_i64())
    };
    eventually("the execution recorded running", || pid().is_some());
    pid().unwrap() as i32
}

/// An agent on `dir` running job `slow`, past its first line: the spec,
/// the state dir, the agent, the execution and its pid.
fn slow_job_running(dir: &Path) -> (PathBuf, PathBuf, Agent, String, i32) {
    let spec = job_spec(dir);
    let state = dir.join("state");
    let agent = Agent::start(&spec, &state, &[]);
    let id = trigger(&agent, "slow");
    eventually("the job's first line", || {
        execution_file(&state, &id, "stdout.log") == "one\n"
    });
    let pid = pid_of(&state, &id);
    (spec, state, agent, id, pid)
}

#[test]
fn a_job_running_when_the_agent_is_killed_ends_once_with_its_exit_code_and_whole_log() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, state, mut agent, id, pid) = slow_job_running(dir.path());
    kill9(&mut agent);
    assert!(alive(pid), "the job's command died with the agent");

    let agent = Agent::start(&spec, &state, &[]);
    let record = status(&agent, &id);
    assert_eq!(record["state"]["status"], "running", "{record}");
    assert_eq!(record["pid"], pid, "{record}");
    // Still active: `concurrency: forbid` refuses a second run.
    let refused = agent.arbor(["jobs", "trigger", "slow"]);
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(refused.stderr.contains(&id), "{}", refused.stderr);

    std::fs::write(dir.path().join("go"), "").unwrap();
    eventually("the adopted execution to end", || {
        status(&agent, &id)["state"]["status"] != "running"
    });
    let record = status(&agent, &id);
    assert_eq!(record["state"]["status"], "failed", "{record}");
    assert_eq!(record["state"]["exit_code"], 3, "{record}");
    assert_eq!(
        record["state"]["reason"]["kind"], "non_zero_exit",
        "{record}"
    );
    // Its whole output, each line once, and one record of it.
    assert_eq!(execution_file(&state, &id, "stdout.log"), "one\ntwo\n");
    assert_eq!(execution_file(&state, &id, "stderr.log"), "err\n");
    let logs = agent.arbor(["logs", &id]).expect(0);
    assert_eq!(logs.stdout.matches("one").count(), 1, "{}", logs.stdout);
    assert_eq!(logs.stdout.matches("two").count(), 1, "{}", logs.stdout);
    let all = agent.arbor(["list", "--json"]).expect(0).json();
    let ids: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["id"].as_str())
        .collect();
    assert_eq!(ids, [id.as_str()]);
    assert!(
        !state
            .join("executions")
            .join(&id)
            .join("kept.json")
            .exists(),
        "kept.json holds the environment: removed at the end"
    );
    assert!(!alive(pid));
    assert_eq!(agent.stop(), 0);
    assert_eq!(keepers_left(&state), Vec::<String>::new());
}

#[test]
fn a_job_left_on_sigusr2_that_ends_while_no_agent_runs_is_reported_with_its_exit() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, state, mut agent, id, pid) = slow_job_running(dir.path());
    nix::sys::signal::kill(Pid::from_raw(agent.child.id() as i32), Signal::SIGUSR2).unwrap();
    let exit = agent.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    assert!(alive(pid), "the job's command stopped with the agent");
    // It ends while no agent runs: its keeper keeps the exit and the output.
    std::fs::write(dir.path().join("go"), "").unwrap();
    eventually("the command to end", || !alive(pid));

    let mut agent = Agent::start(&spec, &state, &[]);
    eventually("the execution to end", || {
        status(&agent, &id)["state"]["status"] != "running"
    });
    let record = status(&agent, &id);
    assert_eq!(record["state"]["exit_code"], 3, "{record}");
    assert_eq!(execution_file(&state, &id, "stdout.log"), "one\ntwo\n");

    // An adopted execution is still stopped by a cancel.
    let sleeper = trigger(&agent, "sleeper");
    eventually("the sleeper to run", || {
        status(&agent, &sleeper)["state"]["status"] == "running"
    });
    let pid = pid_of(&state, &sleeper);
    kill9(&mut agent);
    let agent = Agent::start(&spec, &state, &[]);
    assert_eq!(status(&agent, &sleeper)["state"]["status"], "running");
    agent.arbor(["cancel", &sleeper]).expect(0);
    let record = status(&agent, &sleeper);
    assert_eq!(record["state"]["status"], "cancelled", "{record}");
    assert_eq!(record["signal"], 15, "{record}");
    assert!(!alive(pid));
    assert_eq!(agent.stop(), 0);
    assert_eq!(keepers_left(&state), Vec::<String>::new());
}

#[test]
fn a_scheduled_run_adopted_after_a_kill_is_not_fired_again() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let spec = write_file(
        dir.path(),
        "cron.yaml",
        &format!(
            r#"
jobs:
  tick:
    schedule: "*/2 * * * * *"
    starting_deadline: 1m
    concurrency: forbid
    command: ["sh", "-c", "while [ ! -e {} ]; do sleep 0.05; done"]
"#,
            go.display()
        ),
    );
    let state = dir.path().join("state");
    let list = |agent: &Agent| -> Vec<Value> {
        agent
            .arbor(["list", "--json"])
            .expect(0)
            .json()
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let mut agent = Agent::start(&spec, &state, &[]);
    eventually("the first scheduled run", || {
        list(&agent)
            .first()
            .is_some_and(|r| r["state"]["status"] == "running")
    });
    let first = list(&agent)[0].clone();
    let scheduled_for = first["trigger"]["scheduled_for"].clone();
    assert!(scheduled_for.is_string(), "{first}");
    kill9(&mut agent);
    // Two more ticks pass while no agent runs: they are missed runs, the
    // adopted one is not.
    std::thread::sleep(std::time::Duration::from_millis(4500));
    let agent = Agent::start(&spec, &state, &[]);
    eventually("ticks after the restart", || {
        agent
            .arbor(["jobs", "--json"])
            .json()
            .as_array()
            .and_then(|j| j.first().cloned())
            .is_some_and(|j| j["next_run"].is_string())
    });
    std::fs::write(&go, "").unwrap();
    eventually("the adopted run to complete", || {
        list(&agent)
            .iter()
            .any(|r| r["id"] == first["id"] && r["state"]["status"] == "completed")
    });
    let runs = list(&agent);
    let times: Vec<&Value> = runs
        .iter()
        .map(|r| &r["trigger"]["scheduled_for"])
        .collect();
    let once = times.iter().filter(|t| ***t == scheduled_for).count();
    assert_eq!(once, 1, "the adopted run was fired again: {runs:?}");
    let mut unique = times.clone();
    unique.sort_by_key(|t| t.to_string());
    unique.dedup();
    assert_eq!(unique.len(), times.len(), "a run fired twice: {runs:?}");
    assert!(
        runs.iter()
            .all(|r| r["state"]["reason"]["kind"] != "node_restarted"),
        "{runs:?}"
    );
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_job_being_cancelled_when_the_agent_leaves_is_not_left_and_ends_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        r#"
jobs:
  stubborn:
    command: [sh, -c, 'trap "echo got-term" TERM; echo up; while :; do sleep 0.05; done']
    stop_timeout: 2s
"#,
    );
    let state = dir.path().join("state");
    let mut agent = Agent::start(&spec, &state, &[]);
    let id = trigger(&agent, "stubborn");
    let pid = pid_of(&state, &id);
    let mut cancel = cli_support::arbor()
        .args(["--agent", &agent.socket, "cancel", &id])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually("the cancel's SIGTERM", || {
        execution_file(&state, &id, "stdout.log").contains("got-term")
    });
    nix::sys::signal::kill(Pid::from_raw(agent.child.id() as i32), Signal::SIGUSR2).unwrap();
    let exit = agent.child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "{exit:?}");
    let _ = cancel.wait();
    // The cancel ran to its end under this agent: killed after its grace.
    assert!(!alive(pid), "a job being cancelled was left running");
    let record: Value = serde_json::from_str(&execution_file(&state, &id, "state.json")).unwrap();
    assert_eq!(record["state"]["status"], "cancelled", "{record}");
    assert!(
        !state
            .join("executions")
            .join(&id)
            .join("kept.json")
            .exists()
    );
    let agent = Agent::start(&spec, &state, &[]);
    assert_eq!(status(&agent, &id)["state"]["status"], "cancelled");
    assert_eq!(agent.stop(), 0);
    assert_eq!(keepers_left(&state), Vec::<String>::new());
}

/// The number in `notified-0`'s status (`tick N`), as the tree shows it.
fn tick(agent: &Agent) -> Option<u64> {
    let tree = agent.arbor(["tree"]).stdout;
    let line = tree
        .lines()
        .find(|l| l.contains("notified-0 [container]"))?;
    line.split("(tick ")
        .nth(1)?
        .trim_end_matches(')')
        .parse()
        .ok()
}

#[test]
fn a_notify_service_is_adopted_ready_and_its_watchdog_pings_reach_the_next_agent() {
    let dir = tempfile::tempdir().unwrap();
    let arbor = env!("CARGO_BIN_EXE_arbor");
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        &format!(
            r#"
services:
  notified:
    command: [sh, -c, '{arbor} notify --ready; i=0; while :; do i=$((i+1)); {arbor} notify --watchdog --status "tick $i"; sleep 0.1; done']
    notify: true
    watchdog: 1s
"#
        ),
    );
    let state = dir.path().join("state");
    let mut agent = Agent::start(&spec, &state, &[]);
    eventually("ready", || agent.service("notified")["ready"] == 1);
    let (_, pid) = wait_marked(&state, "notified", "notified-0");
    kill9(&mut agent);

    let before = markers(&state, "notified", "notified-0");
    let agent = Agent::start(&spec, &state, &[]);
    // Its NOTIFY_SOCKET is the same path: its spec is unchanged, so it is
    // adopted, and it counts as ready (it said READY=1 once).
    assert_eq!(
        marked_after(&state, "notified", "notified-0", before),
        Some(("re-adopted".to_owned(), pid))
    );
    eventually("ready under the new agent", || {
        agent.service("notified")["ready"] == 1
    });
    // Its pings reach the new agent: the status moves on, past several
    // watchdog periods, with no restart.
    eventually("a status from the adopted process", || {
        tick(&agent).is_some()
    });
    let first = tick(&agent).unwrap();
    eventually("30 more pings (3 watchdog periods)", || {
        tick(&agent).is_some_and(|t| t >= first + 30)
    });
    let service = agent.service("notified");
    assert_eq!(service["restarts"], 0, "{service}");
    assert_eq!(
        marked_pid(&state, "notified", "notified-0"),
        Some(("re-adopted".to_owned(), pid))
    );
    assert_eq!(agent.stop(), 0);
    eventually("the service to stop", || !alive(pid));
    assert_eq!(keepers_left(&state), Vec::<String>::new());
}

#[test]
fn a_transient_service_that_completed_is_not_run_again_after_a_kill_but_is_after_a_stop() {
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    // Its first run completes; a second one would keep running.
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        &format!(
            "services:\n  once:\n    command: [sh, -c, 'echo run >> {0}; [ $(wc -l < {0}) -ge 2 ] && exec sleep 600; exit 0']\n    restart: transient\n",
            runs.display()
        ),
    );
    let state = dir.path().join("state");
    let runs_seen = || {
        std::fs::read_to_string(&runs)
            .unwrap_or_default()
            .lines()
            .count()
    };
    let child_state = |agent: &Agent| agent.service("once")["tree"]["children"][0]["state"].clone();
    let mut agent = Agent::start(&spec, &state, &[]);
    eventually("it completed", || child_state(&agent) == "completed");
    // The record says so on disk (written in batches).
    eventually("the state on disk", || {
        std::fs::read(state.join("supervision.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .is_some_and(|v| v["scopes"]["once"]["once-0"]["done"] == true)
    });
    kill9(&mut agent);

    // Killed: the next agent does not run it again.
    let agent = Agent::start(&spec, &state, &[]);
    assert_eq!(
        child_state(&agent),
        "completed",
        "{}",
        agent.service("once")
    );
    assert_eq!(runs_seen(), 1);

    // Stopped gracefully: the next agent starts everything afresh.
    assert_eq!(agent.stop(), 0);
    let agent = Agent::start(&spec, &state, &[]);
    eventually("it runs again", || agent.service("once")["running"] == 1);
    assert_eq!(runs_seen(), 2);
    assert_eq!(agent.stop(), 0);
}

#[cfg_attr(
    not(arbor_root),
    ignore = "needs root: resource limits use cgroups (run the tests as root, as .ci/run does)"
)]
#[test]
fn an_oom_kill_of_an_adopted_replica_is_reported_as_out_of_memory() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root (resource limits use cgroups)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Each hog waits for its go file, then allocates 64 MiB under 32 MiB.
    let hog = |name: &str| {
        let go = dir.path().join(name);
        format!(
            "  {name}:\n    command: [sh, -c, 'while [ ! -e {0} ]; do sleep 0.05; done; rm {0}; a=$(head -c 67108864 /dev/zero | tr \"\\0\" x); echo survived']\n    resources: {{ memory: 32Mi }}\n",
            go.display()
        )
    };
    let spec = write_file(
        dir.path(),
        "spec.yaml",
        &format!("services:\n{}{}", hog("away"), hog("adopted")),
    );
    let state = dir.path().join("state");
    let mut agent = Agent::start(&spec, &state, &[]);
    let (_, away) = wait_marked(&state, "away", "away-0");
    let (_, adopted) = wait_marked(&state, "adopted", "adopted-0");
    kill9(&mut agent);
    // `away` is OOM-killed while no agent runs.
    std::fs::write(dir.path().join("away"), "").unwrap();
    eventually("away to be killed while no agent runs", || !alive(away));

    let before = markers(&state, "adopted", "adopted-0");
    let agent = Agent::start(&spec, &state, &[]);
    assert_eq!(
        marked_after(&state, "adopted", "adopted-0", before),
        Some(("re-adopted".to_owned(), adopted))
    );
    // `adopted` is OOM-killed under the new agent.
    std::fs::write(dir.path().join("adopted"), "").unwrap();
    // Each exit is reported as an OOM kill (read from the events: the
    // replica's `last_exit` is replaced by its restart's outcome).
    for replica in ["away-0", "adopted-0"] {
        eventually("the OOM kill reported", || {
            let (_, body) = agent.http("GET", "/v1/events/recent?kind=child_exited&limit=500", "");
            let events: Vec<Value> = serde_json::from_str(&body).unwrap_or_default();
            events.iter().any(|e| {
                e["child"] == replica
                    && e["exit"]
                        .as_str()
                        .is_some_and(|d| d.contains("out of memory"))
            })
        });
    }
    assert_eq!(agent.stop(), 0);
    assert_eq!(keepers_left(&state), Vec::<String>::new());
}

#[test]
fn the_keepers_of_ended_replicas_are_reaped_while_the_agent_runs() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // Ends at once and restarts quickly: a keeper per run.
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  brief:
    command: ["sh", "-c", "echo hi"]
    max_restarts: 1000
    backoff: {initial: 10ms, max: 10ms, jitter: 0}
"#,
    );
    let agent = Agent::start(&spec, &state, &[]);
    let agent_pid = agent.child.id() as i32;
    eventually("five runs of the replica", || {
        markers(&state, "brief", "brief-0") >= 5
    });
    // Every keeper but the one of the run now is gone, not a zombie.
    let zombie_children = || -> Vec<i32> {
        arbor::runtime::process::procfs::all()
            .into_iter()
            .filter(|p| p.ppid == agent_pid && p.is_zombie())
            .map(|p| p.pid)
            .collect()
    };
    eventually("no zombie child of the agent is left", || {
        zombie_children().len() <= 1
    });
    assert_eq!(agent.stop(), 0);
}
