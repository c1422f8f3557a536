//! Durable service logs with the real binary: per replica files under
//! `<state-dir>/services/`, kept across restarts with marker lines, rotated
//! by size; `arbor logs SERVICE|REPLICA` (tail) and `-f` (follow, every new
//! line of every replica once), which ends when the service is removed.

mod cli_support;

use std::collections::BTreeSet;

use cli_support::{Agent, Lines, arbor, eventually, write_file};

fn restarts(agent: &Agent, name: &str) -> u64 {
    let out = agent.arbor(["services", "--json"]).expect(0);
    out.json()
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .map(|s| s["restarts"].as_u64().unwrap())
        .unwrap_or(0)
}

#[test]
fn service_logs_survive_restarts_of_the_replica_with_a_marker_line_for_each() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  web:
    command: [sh, -c, 'echo "run of $$"; echo "warning from $$" >&2; exit 3']
    max_restarts: 10
"#,
    );
    let agent = Agent::start(&spec, &state, &[]);
    eventually("two restarts", || restarts(&agent, "web") >= 2);
    // The count goes up as the restart begins: its run's output follows.
    eventually("the third run's output", || {
        let out = agent.arbor(["logs", "web-0", "--tail", "100"]).expect(0);
        out.stdout.matches("[STDOUT] run of").count() >= 3
            && out.stdout.matches("[ARBOR] exited: exit code 3").count() >= 2
    });
    let out = agent.arbor(["logs", "web-0", "--tail", "100"]).expect(0);
    let runs = out
        .stdout
        .lines()
        .filter(|l| l.contains("[STDOUT] run of"))
        .count();
    assert!(runs >= 3, "{}", out.stdout);
    assert!(
        out.stdout.contains("[STDERR] warning from"),
        "{}",
        out.stdout
    );
    let exits = out
        .stdout
        .lines()
        .filter(|l| l.contains("[ARBOR] exited: exit code 3"))
        .count();
    let starts = out
        .stdout
        .lines()
        .filter(|l| l.contains("[ARBOR] started web-0"))
        .count();
    assert!(exits >= 2 && starts >= 3, "{}", out.stdout);
    // The files: raw streams and the combined log, 0600.
    let replica = state.join("services/web/web-0");
    let stdout = std::fs::read_to_string(replica.join("stdout.log")).unwrap();
    assert!(stdout.lines().count() >= 3 && stdout.lines().all(|l| l.starts_with("run of")));
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(replica.join("full.log"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    // All replicas, prefixed, through the service's name.
    let out = agent.arbor(["logs", "web", "--stream", "stderr"]).expect(0);
    assert!(
        out.stdout
            .lines()
            .all(|l| l.starts_with("web-0 | warning from")),
        "{}",
        out.stdout
    );
    assert_eq!(agent.stop(), 0);
}

#[test]
fn rotation_keeps_at_most_max_files_files_of_about_max_size() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  chatty:
    command: [sh, -c, 'i=0; while [ $i -lt 2000 ]; do i=$((i+1)); echo "line $i of forty-odd bytes, padded"; done; echo done; exec sleep 300']
    logs: { max_size: 4KiB, max_files: 3 }
"#,
    );
    let agent = Agent::start(&spec, &state, &[]);
    let replica = state.join("services/chatty/chatty-0");
    // Both files: full.log is written by its own writer, and may still be
    // rotating when stdout.log has its last line.
    eventually("everything was written", || {
        ["stdout.log", "full.log"]
            .iter()
            .all(|f| std::fs::read_to_string(replica.join(f)).is_ok_and(|s| s.contains("done")))
    });
    for log in ["stdout.log", "full.log"] {
        let mut found: Vec<String> = std::fs::read_dir(&replica)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n.starts_with(log))
            .collect();
        found.sort();
        assert_eq!(
            found,
            [log.to_owned(), format!("{log}.1"), format!("{log}.2")],
            "{log}"
        );
        for f in &found {
            let size = std::fs::metadata(replica.join(f)).unwrap().len();
            assert!(size <= 4096, "{f} is {size} bytes");
        }
    }
    // The newest lines are in the live file, the tail reads back through
    // the rotated ones.
    let out = agent
        .arbor(["logs", "chatty-0", "--stream", "stdout", "--tail", "150"])
        .expect(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 150, "{}", out.stdout);
    assert_eq!(*lines.last().unwrap(), "done");
    assert!(lines[0].starts_with("line 185"), "{}", lines[0]);
    assert_eq!(agent.stop(), 0);
}

#[test]
fn following_prints_each_new_line_of_both_replicas_once_and_ends_when_the_service_is_removed() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let go = dir.path().join("go");
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
services:
  web:
    command: [sh, -c, 'while [ ! -f "{}" ]; do sleep 0.02; done; i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo "tick $i"; sleep 0.01; done; exec sleep 300']
    replicas: 2
  other:
    command: [sleep, "300"]
"#,
            go.display()
        ),
    );
    let agent = Agent::start(&spec, &state, &[]);
    eventually("both replicas run", || {
        state.join("services/web/web-1/full.log").exists()
    });
    let follow = Lines::spawn({
        let mut cmd = arbor();
        cmd.args(["--agent", &agent.socket, "logs", "web", "-f", "--tail", "2"]);
        cmd
    });
    // The follow is under way once the last lines (the two start markers)
    // came; only then do the replicas write.
    let mut markers = 0;
    follow.until("the start markers", |l| {
        markers += usize::from(l.contains("[ARBOR] started"));
        markers == 2
    });
    std::fs::write(&go, "").unwrap();
    let mut seen = BTreeSet::new();
    let mut done = BTreeSet::new();
    follow.until("tick 30 of both replicas", |line| {
        let (replica, rest) = line.split_once(" | ").expect("a prefixed line");
        if let Some(i) = rest.split("[STDOUT] tick ").nth(1) {
            assert!(
                seen.insert((replica.to_owned(), i.to_owned())),
                "twice: {line}"
            );
            if i == "30" {
                done.insert(replica.to_owned());
            }
        }
        done.len() == 2
    });
    assert_eq!(seen.len(), 60, "{seen:?}");

    // Removing the service ends the follow, with success.
    let spec2 = write_file(
        dir.path(),
        "next.yaml",
        "services:\n  other:\n    command: [sleep, \"300\"]\n",
    );
    agent.arbor(["deploy", spec2.to_str().unwrap()]).expect(0);
    assert_eq!(follow.wait(), 0);
    assert_eq!(agent.stop(), 0);
}

#[test]
fn masked_values_never_reach_a_service_log_file_or_the_deployment_api() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  web:
    command: [sh, -c, 'echo "token=$TOKEN"; echo "again $TOKEN" >&2; exec sleep 300']
    env: { TOKEN: "s3cr3t-token-value", PLAIN: "visible" }
    mask: [TOKEN]
"#,
    );
    let agent = Agent::start(&spec, &state, &[]);
    let replica = state.join("services/web/web-0");
    eventually("the lines were written", || {
        std::fs::read_to_string(replica.join("full.log")).is_ok_and(|s| s.contains("again"))
    });
    for file in ["stdout.log", "stderr.log", "full.log"] {
        let text = std::fs::read_to_string(replica.join(file)).unwrap();
        assert!(!text.contains("s3cr3t"), "{file}: {text}");
        assert!(text.contains("***"), "{file}: {text}");
    }
    let out = agent.arbor(["logs", "web"]).expect(0);
    assert!(
        out.stdout.contains("token=***") && !out.stdout.contains("s3cr3t"),
        "{}",
        out.stdout
    );
    // The applied spec over the API: masked too.
    let (_, body) = agent.http("GET", "/v1/deployment", "");
    assert!(
        body.contains("\"TOKEN\":\"***\"") && body.contains("visible"),
        "{body}"
    );
    assert!(!body.contains("s3cr3t"), "{body}");
    assert_eq!(agent.stop(), 0);
}

#[test]
fn the_agents_own_log_holds_no_masked_value_of_a_service_or_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  web:
    command: [sh, -c, 'echo "svc $SVC_SECRET"; echo "err $SVC_SECRET" >&2; exit 3']
    env: { SVC_SECRET: "svc-s3cr3t-5e6f" }
    mask: [SVC_SECRET]
    max_restarts: 1
    backoff: { initial: 10ms, max: 20ms, give_up_after: 1 }
jobs:
  leak:
    command: [sh, -c, 'echo "job $JOB_SECRET"; exit 4']
    env: { JOB_SECRET: "job-s3cr3t-7a8b" }
    mask: [JOB_SECRET]
"#,
    );
    let (agent, log) = Agent::start_logged(&spec, &state, &[]);
    let id = agent.arbor(["jobs", "trigger", "leak"]).expect(0).stdout;
    agent.arbor(["status", id.trim()]);
    eventually("the job ended and web gave up", || {
        let status = agent.arbor(["status", id.trim(), "--json"]).stdout;
        let services = agent.arbor(["services", "--json"]).stdout;
        status.contains("\"failed\"") && services.contains("\"failed\"")
    });
    assert_eq!(agent.stop(), 0);
    // The agent exited: its stderr ends, and the reader with it.
    let lines: Vec<String> = log.iter().collect();
    assert!(!lines.is_empty());
    for line in &lines {
        assert!(
            !line.contains("s3cr3t"),
            "the agent's log holds a masked value: {line}"
        );
    }
}

#[test]
fn following_across_many_rotations_prints_every_line_once() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let go = dir.path().join("go");
    // 3,000 lines (about 45 bytes in full.log) into 4 KiB files: dozens of
    // rotations, several between two reads of the follower. max_files
    // keeps them all.
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
services:
  chatty:
    command: [sh, -c, 'while [ ! -f "{}" ]; do sleep 0.02; done; i=0; while [ $i -lt 3000 ]; do i=$((i+1)); echo "line $i"; done; echo done; exec sleep 300']
    logs: {{ max_size: 4KiB, max_files: 100 }}
"#,
            go.display()
        ),
    );
    let agent = Agent::start(&spec, &state, &[]);
    eventually("the replica runs", || {
        state.join("services/chatty/chatty-0/full.log").exists()
    });
    let follow = Lines::spawn({
        let mut cmd = arbor();
        cmd.args([
            "--agent",
            &agent.socket,
            "logs",
            "chatty-0",
            "-f",
            "--tail",
            "1",
        ]);
        cmd
    });
    // Under way once the last line (the start marker) came; only then
    // does the replica write.
    follow.until("the start marker", |l| l.contains("[ARBOR] started"));
    std::fs::write(&go, "").unwrap();
    let mut seen = BTreeSet::new();
    follow.until("the last line", |line| {
        if let Some(i) = line.split("[STDOUT] line ").nth(1) {
            assert!(seen.insert(i.parse::<u32>().unwrap()), "twice: {line}");
        }
        line.ends_with("[STDOUT] done")
    });
    assert_eq!(
        seen.len(),
        3000,
        "missing: {:?}",
        (1..=3000)
            .filter(|i| !seen.contains(i))
            .take(10)
            .collect::<Vec<_>>()
    );
    let rotated = std::fs::read_dir(state.join("services/chatty/chatty-0"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("full.log."))
        .count();
    assert!(rotated >= 4, "only {rotated} rotations");
    assert_eq!(agent.stop(), 0);
}

#[test]
fn output_held_at_a_start_is_written_after_the_started_line() {
    use arbor::runtime::{LogStream, OutputSink};
    let dir = tempfile::tempdir().unwrap();
    let log =
        arbor::store::service_log::ServiceLog::open(dir.path(), arbor::spec::LogLimits::default())
            .unwrap();
    // The container actor holds the log, starts the process (whose first
    // line may be read before the start is reported), then marks it.
    log.hold();
    log.write(LogStream::Stdout, b"first\n");
    log.mark("started quick-0 (pid 42)");
    log.write(LogStream::Stdout, b"second\n");
    let text = std::fs::read_to_string(dir.path().join("full.log")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].ends_with("[ARBOR] started quick-0 (pid 42)"),
        "{text}"
    );
    assert!(lines[1].ends_with("[STDOUT] first"), "{text}");
    assert!(lines[2].ends_with("[STDOUT] second"), "{text}");
    // stdout.log is never held.
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stdout.log")).unwrap(),
        "first\nsecond\n"
    );
    // Held lines are not lost when no mark comes.
    log.hold();
    log.write(LogStream::Stdout, b"third\n");
    drop(log);
    let text = std::fs::read_to_string(dir.path().join("full.log")).unwrap();
    assert!(text.trim_end().ends_with("[STDOUT] third"), "{text}");
}

/// The files of this process open under `dir`.
fn open_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|p| p.starts_with(dir))
        .collect()
}

#[test]
fn a_replica_log_holds_files_open_only_while_a_stream_is() {
    use arbor::runtime::{LogStream, OutputSink};
    let dir = tempfile::tempdir().unwrap();
    let log =
        arbor::store::service_log::ServiceLog::open(dir.path(), arbor::spec::LogLimits::default())
            .unwrap();
    assert!(open_under(dir.path()).is_empty());
    // A start that fails: one marker line, no file left open.
    log.hold();
    log.mark("failed to start: too many open files");
    assert!(open_under(dir.path()).is_empty());
    // A run: its files are open while it writes.
    log.hold();
    log.mark("started quick-0 (pid 42)");
    log.write(LogStream::Stdout, b"out\n");
    log.write(LogStream::Stderr, b"err\n");
    assert_eq!(
        open_under(dir.path()).len(),
        3,
        "{:?}",
        open_under(dir.path())
    );
    log.close(LogStream::Stdout);
    assert_eq!(open_under(dir.path()).len(), 2);
    log.close(LogStream::Stderr);
    log.mark("exited: exit code 0");
    assert!(open_under(dir.path()).is_empty());
    let text = std::fs::read_to_string(dir.path().join("full.log")).unwrap();
    let ends: Vec<&str> = text.lines().map(|l| l.split_once(' ').unwrap().1).collect();
    assert_eq!(
        ends,
        [
            "[ARBOR] failed to start: too many open files",
            "[ARBOR] started quick-0 (pid 42)",
            "[STDOUT] out",
            "[STDERR] err",
            "[ARBOR] exited: exit code 0"
        ]
    );
}
