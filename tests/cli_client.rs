//! The client commands against a real `arbor agent` (started on a free
//! port): tree, services, jobs, trigger, status, logs (and --follow),
//! cancel, kill, list, events, `run` through the agent; bad inputs with
//! their exit codes and messages; the token. Every agent is stopped with
//! SIGTERM and must exit 0.

mod cli_support;

use std::{path::Path, time::Duration};

use cli_support::{Agent, Lines, arbor, arbor_out, eventually, unused_url};
use serde_json::Value;

const SPEC: &str = r#"
name: cli
services:
  web:
    command: ["sh", "-c", "while true; do sleep 1; done"]
    replicas: 2
    stop_timeout: 2s
jobs:
  hello:
    command: ["sh", "-c", "echo hello from the job; echo oops >&2"]
    history: {successful: 50, failed: 50}
  nap:
    command: ["sleep", "1000"]
    stop_timeout: 2s
    history: {successful: 50, failed: 50}
  ticker:
    command: ["sh", "-c", "for i in 1 2 3 4 5; do echo tick $i; sleep 0.2; done"]
"#;

fn agent(dir: &Path, extra: &[&str]) -> Agent {
    let spec = dir.join("node.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    Agent::start(&spec, &dir.join("state"), extra)
}

fn state_of(agent: &Agent, id: &str) -> String {
    let v = agent.arbor(["status", id, "--json"]).expect(0).json();
    v["state"]["status"].as_str().unwrap().to_owned()
}

#[test]
fn the_client_commands_drive_a_real_agent() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), &[]);

    // The tree, drawn like pstree, and as JSON.
    eventually("both replicas run", || {
        let out = agent.arbor(["tree"]).expect(0);
        out.stdout.contains("├── web-0 [container] running")
            && out.stdout.contains("└── web-1 [container] running")
    });
    let tree = agent.arbor(["tree"]).expect(0).stdout;
    assert!(
        tree.starts_with("cli [supervisor one_for_one] running\n"),
        "{tree}"
    );
    assert!(tree.contains("── web [supervisor"), "{tree}");
    assert!(
        tree.contains("├── node:executor [worker] running"),
        "{tree}"
    );
    let v = agent.arbor(["tree", "--json"]).expect(0).json();
    assert_eq!(v["name"], "cli");

    // Services and jobs as tables.
    let services = agent.arbor(["services"]).expect(0).stdout;
    let lines: Vec<&str> = services.lines().collect();
    assert_eq!(
        lines[0].trim_end(),
        "NAME  STATUS   RUNNING  READY  RESTARTS  DETAIL",
        "{services}"
    );
    assert_eq!(
        lines[1].trim_end(),
        "web   running  2/2      2/2    0",
        "{services}"
    );
    assert_eq!(
        agent.arbor(["services", "--json"]).expect(0).json()[0]["name"],
        "web"
    );
    let jobs = agent.arbor(["jobs"]).expect(0).stdout;
    assert!(jobs.starts_with("NAME "), "{jobs}");
    for job in ["hello", "nap", "ticker"] {
        assert!(jobs.lines().any(|l| l.starts_with(job)), "{job}: {jobs}");
    }
    let v = agent.arbor(["jobs", "--json"]).expect(0).json();
    assert_eq!(v.as_array().unwrap().len(), 3);

    // The event stream, followed from here on.
    let mut events = arbor();
    events.args(["--agent", &agent.socket, "events", "--json"]);
    let events = Lines::spawn(events);
    let mut readable = arbor();
    readable.args(["--agent", &agent.socket, "events"]);
    let readable = Lines::spawn(readable);
    // The streams start with the events after they connected: trigger
    // until each has seen a whole execution.
    let trigger = |job: &str| {
        agent
            .arbor(["jobs", "trigger", job])
            .expect(0)
            .stdout
            .trim()
            .to_owned()
    };
    let mut seen = Vec::new();
    let mut id = String::new();
    eventually("the JSON event stream sees an execution", || {
        id = trigger("hello");
        seen.clear();
        // Subscribed in time when it saw the start as well as the end.
        events.within(Duration::from_secs(1), &mut seen, |l| {
            l.contains("\"execution_finished\"") && l.contains(&id)
        }) && seen
            .iter()
            .any(|l| l.contains("\"execution_started\"") && l.contains(&id))
    });
    for line in &seen {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["event"].is_string(), "{line}");
    }
    eventually("the readable event stream sees an execution", || {
        let id = trigger("hello");
        readable.within(Duration::from_secs(1), &mut Vec::new(), |l| {
            l.contains("execution_finished") && l.contains(&format!("hello {id}: completed"))
        })
    });

    // A trigger, then its status and its logs.
    let id = trigger("hello");
    assert_eq!(id.len(), 36, "prints the id alone: {id:?}");
    eventually("hello completes", || state_of(&agent, &id) == "completed");
    let status = agent.arbor(["status", &id]).expect(0).stdout;
    assert!(
        status.contains("state      completed (exit code 0"),
        "{status}"
    );
    assert!(status.contains(&format!("execution  {id}")), "{status}");
    assert!(status.contains("trigger    endpoint"), "{status}");
    let v = agent.arbor(["status", &id, "--json"]).expect(0).json();
    assert_eq!(v["id"], id.as_str());
    assert_eq!(v["job"], "hello");

    let full = agent.arbor(["logs", &id]).expect(0).stdout;
    assert!(full.contains("[STDOUT] hello from the job\n"), "{full}");
    assert!(full.contains("[STDERR] oops\n"), "{full}");
    let out = agent.arbor(["logs", &id, "--stream", "stdout"]).expect(0);
    assert_eq!(out.stdout, "hello from the job\n");
    let out = agent.arbor(["logs", &id, "--stream", "stderr"]).expect(0);
    assert_eq!(out.stdout, "oops\n");
    // The two streams reach full.log in either order.
    let out = agent.arbor(["logs", &id, "--tail", "1"]).expect(0);
    assert_eq!(out.stdout.lines().count(), 1, "{out:#?}");
    assert!(full.ends_with(&out.stdout), "{out:#?}");
    let v = agent
        .arbor(["logs", &id, "--stream", "stdout", "--json"])
        .expect(0)
        .json();
    assert_eq!(v["text"], "hello from the job\n");
    assert_eq!(v["observed_bytes"], 19);

    // --follow prints every line once, in order, and ends with the run.
    let ticker = trigger("ticker");
    let out = agent
        .arbor(["logs", &ticker, "--follow", "--stream", "stdout"])
        .expect(0);
    assert_eq!(
        out.stdout, "tick 1\ntick 2\ntick 3\ntick 4\ntick 5\n",
        "{out:#?}"
    );
    assert!(out.stderr.contains("completed"), "{out:#?}");
    assert_eq!(state_of(&agent, &ticker), "completed");

    // Cancel a long job: waits for the end; a second cancel fails.
    let nap = trigger("nap");
    eventually("nap runs", || state_of(&agent, &nap) == "running");
    let out = agent.arbor(["cancel", &nap, "--grace", "1s"]).expect(0);
    assert_eq!(out.stdout, format!("execution {nap}: cancelled\n"));
    assert_eq!(state_of(&agent, &nap), "cancelled");
    let out = agent.arbor(["cancel", &nap]).expect(1);
    assert!(
        out.stderr
            .contains(&format!("execution {nap} already ended")),
        "{out:#?}"
    );

    // Kill: a signal to the group.
    let nap2 = agent
        .arbor(["jobs", "trigger", "nap", "--json"])
        .expect(0)
        .json()["execution_id"]
        .as_str()
        .unwrap()
        .to_owned();
    eventually("nap runs", || state_of(&agent, &nap2) == "running");
    let out = agent.arbor(["kill", &nap2, "--signal", "kill"]).expect(0);
    assert_eq!(out.stdout, format!("sent SIGKILL to execution {nap2}\n"));
    eventually("nap is killed", || state_of(&agent, &nap2) == "failed");
    let v = agent.arbor(["status", &nap2, "--json"]).expect(0).json();
    assert_eq!(v["signal"], 9, "{v:#}");

    // List: every execution, or those of a job.
    let v = agent.arbor(["list", "--json"]).expect(0).json();
    let ids: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    for want in [&id, &ticker, &nap, &nap2] {
        assert!(ids.contains(&want.as_str()), "{want} in {ids:?}");
    }
    let v = agent
        .arbor(["list", "--job", "nap", "--json"])
        .expect(0)
        .json();
    assert_eq!(v.as_array().unwrap().len(), 2, "{v:#}");
    let table = agent.arbor(["list", "--job", "hello"]).expect(0).stdout;
    let header = table.lines().next().unwrap();
    assert!(header.starts_with("ID "), "{table}");
    assert!(header.contains("  JOB  "), "{table}");
    let row = table.lines().find(|l| l.starts_with(&id)).expect("a row");
    assert!(
        row.contains(" hello ") && row.contains(" completed "),
        "{table}"
    );

    // arbor run through the agent: waited for, with both tails.
    let out = agent
        .arbor([
            "run",
            "--wait",
            "--json",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ])
        .expect(1);
    assert!(!out.stderr.contains("in-process"), "{out:#?}");
    let v = out.json();
    assert_eq!(v["mode"], "agent");
    assert_eq!(v["agent"], agent.socket.as_str());
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["final_snapshot"]["stdout_tail"], "out\n");
    assert_eq!(v["final_snapshot"]["stderr_tail"], "err\n");
    let log = v["stdout_log_path"].as_str().unwrap();
    assert!(
        log.starts_with(dir.path().join("state").to_str().unwrap()),
        "{log}"
    );
    let run_id = v["job_id"].as_str().unwrap().to_owned();
    let record = agent.arbor(["status", &run_id, "--json"]).expect(0).json();
    assert_eq!(record["trigger"]["kind"], "endpoint");

    // Without --wait the job outlives the command.
    let out = agent
        .arbor(["run", "--json", "--", "sh", "-c", "sleep 2; echo late"])
        .expect(0);
    let v = out.json();
    assert!(v.get("exit_code").is_none(), "no end without --wait: {v:#}");
    let later = v["job_id"].as_str().unwrap().to_owned();
    assert!(
        ["pending", "initializing", "running"].contains(&state_of(&agent, &later).as_str()),
        "still running after the command returned"
    );
    eventually("the run completes on the agent", || {
        state_of(&agent, &later) == "completed"
    });
    let out = agent
        .arbor(["logs", &later, "--stream", "stdout"])
        .expect(0);
    assert_eq!(out.stdout, "late\n");

    // Readable --wait through the agent: the output as it comes.
    let out = agent
        .arbor(["run", "--wait", "--", "sh", "-c", "echo one; echo two"])
        .expect(0);
    assert_eq!(out.stdout, "one\ntwo\n");
    assert!(out.stderr.contains("on the agent at"), "{out:#?}");

    // SIGTERM: the agent exits 0 and the event streams end with it.
    assert_eq!(agent.stop(), 0);
    assert_eq!(events.wait(), 0);
    assert_eq!(readable.wait(), 0);
}

/// Unknown ids and names, bad id syntax, an unreachable agent, a bad URL:
/// each with its exit code and a message naming the value.
#[test]
fn bad_inputs_get_exit_codes_and_messages_that_name_them() {
    let dir = tempfile::tempdir().unwrap();
    let agent = agent(dir.path(), &[]);
    let unknown = "67e55044-10b1-426f-9247-bb680e5fe0c8";

    for args in [
        vec!["status", unknown],
        vec!["logs", unknown],
        vec!["logs", unknown, "--follow"],
        vec!["cancel", unknown],
        vec!["kill", unknown],
    ] {
        let out = agent.arbor(&args).expect(1);
        assert_eq!(
            out.stderr,
            format!("arbor: no execution with id {unknown}\n"),
            "{args:?}"
        );
        assert_eq!(out.stdout, "", "{args:?}");
    }
    let out = agent.arbor(["jobs", "trigger", "nosuch"]).expect(1);
    assert_eq!(out.stderr, "arbor: no job named \"nosuch\" is registered\n");
    let v = agent
        .arbor(["list", "--job", "nosuch", "--json"])
        .expect(0)
        .json();
    assert_eq!(v, serde_json::json!([]));

    // Usage errors: exit 2, the value named, nothing sent.
    for (args, named) in [
        (vec!["status", "not-an-id"], "not-an-id"),
        (vec!["logs", "1234"], "1234"),
        (vec!["cancel", unknown, "--grace", "later"], "later"),
        (vec!["kill", unknown, "--signal", "SIGNOPE"], "SIGNOPE"),
        (vec!["logs", unknown, "--stream", "both"], "both"),
        (vec!["logs", unknown, "--tail", "-3"], "-3"),
        (vec!["status"], "<ID>"),
        (vec!["jobs", "trigger"], "<NAME>"),
        (vec!["frobnicate"], "frobnicate"),
    ] {
        let out = agent.arbor(&args).expect(2);
        assert!(
            out.stderr.contains(named),
            "{args:?} should name {named:?}: {}",
            out.stderr
        );
    }

    // An unreachable agent.
    let nowhere = unused_url();
    for args in [
        vec!["status", unknown],
        vec!["tree"],
        vec!["list"],
        vec!["jobs"],
        vec!["events"],
    ] {
        let mut all = vec!["--agent", nowhere.as_str()];
        all.extend(&args);
        let out = arbor_out(&all).expect(1);
        assert_eq!(
            out.stderr,
            format!(
                "arbor: cannot reach the agent at {nowhere}: connection refused (start it with arbor agent --spec FILE)\n"
            ),
            "{args:?}"
        );
    }
    // ARBOR_AGENT is read too; a bad URL is a usage error.
    let mut cmd = arbor();
    cmd.env("ARBOR_AGENT", &nowhere).arg("tree");
    let out = cli_support::output(cmd).expect(1);
    assert!(out.stderr.contains(&nowhere), "{out:#?}");
    for url in ["ftp://host:1", "http://", "http://a b"] {
        let out = arbor_out(["--agent", url, "tree"]).expect(2);
        assert!(
            out.stderr.contains(&format!("invalid --agent URL {url:?}")),
            "{out:#?}"
        );
    }

    // The agent kept serving.
    agent.arbor(["tree"]).expect(0);
    assert_eq!(agent.stop(), 0);
}

/// An agent with a token: mutating commands need it, from --token-file or
/// ARBOR_TOKEN; reading does not.
#[test]
fn the_token_comes_from_a_file_or_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    // A short token is refused at start, naming the flag.
    std::fs::write(&token_file, "ab\n").unwrap();
    let spec = dir.path().join("short.yaml");
    std::fs::write(&spec, SPEC).unwrap();
    let out = arbor_out([
        "agent",
        "--listen",
        "127.0.0.1:0",
        "--spec",
        spec.to_str().unwrap(),
        "--state-dir",
        dir.path().join("short-state").to_str().unwrap(),
        "--token-file",
        token_file.to_str().unwrap(),
    ])
    .expect(2);
    assert!(
        out.stderr.contains("--token-file") && out.stderr.contains("at least 16"),
        "{out:#?}"
    );
    std::fs::write(&token_file, "sekrit-token-of-32-bytes-or-so\n").unwrap();
    let agent = agent(dir.path(), &["--token-file", token_file.to_str().unwrap()]);

    // Over TCP every request but health and metrics needs the token,
    // reads too; the Unix socket needs none.
    let out = agent.arbor_tcp(["jobs"]).expect(1);
    assert!(out.stderr.contains("--token-file"), "{out:#?}");
    let out = agent.arbor_tcp(["jobs", "trigger", "hello"]).expect(1);
    assert!(out.stderr.contains("--token-file"), "{out:#?}");
    agent.arbor(["jobs"]).expect(0);
    agent
        .arbor_tcp(["jobs", "--token-file", token_file.to_str().unwrap()])
        .expect(0);
    let out = agent
        .arbor(["jobs", "trigger", "hello", "--token-file"])
        .expect(2);
    assert!(out.stderr.contains("--token-file"), "{out:#?}");
    let id = agent
        .arbor([
            "jobs",
            "trigger",
            "hello",
            "--token-file",
            token_file.to_str().unwrap(),
        ])
        .expect(0)
        .stdout;
    assert_eq!(id.trim().len(), 36);
    let mut cmd = arbor();
    cmd.env("ARBOR_TOKEN", "sekrit-token-of-32-bytes-or-so")
        .args(["--agent", &agent.url, "jobs", "trigger", "hello"]);
    cli_support::output(cmd).expect(0);
    let mut cmd = arbor();
    cmd.env("ARBOR_TOKEN", "wrong")
        .args(["--agent", &agent.url, "jobs", "trigger", "hello"]);
    cli_support::output(cmd).expect(1);
    let missing = dir.path().join("missing");
    let out = agent
        .arbor([
            "jobs",
            "trigger",
            "hello",
            "--token-file",
            missing.to_str().unwrap(),
        ])
        .expect(2);
    assert!(out.stderr.contains(missing.to_str().unwrap()), "{out:#?}");
    // `arbor run` with the token goes to the agent, not in-process.
    let out = agent
        .arbor([
            "run",
            "--json",
            "--wait",
            "--token-file",
            token_file.to_str().unwrap(),
            "--",
            "true",
        ])
        .expect(0);
    assert_eq!(out.json()["mode"], "agent");
    std::thread::sleep(Duration::from_millis(10));
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_reader_that_goes_away_ends_arbor_events_quietly() {
    use std::io::{BufRead, BufReader, Read};
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("node.yaml");
    // A service that keeps crashing: events keep coming.
    std::fs::write(
        &spec,
        "services:\n  flappy:\n    command: [sh, -c, \"sleep 0.05; exit 1\"]\n    backoff: {initial: 50ms, max: 100ms}\n",
    )
    .unwrap();
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    let mut child = arbor()
        .args(["--agent", &agent.socket, "events", "--json"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Like `| head -1`: one line, then the pipe is closed.
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.starts_with('{'), "{first}");
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "arbor events did not end"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(
        status.signal(),
        Some(13),
        "ended by SIGPIPE, as Unix tools do: {status:?}"
    );
}
