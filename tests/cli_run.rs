//! `arbor run` with no agent (`--agent` at a port nothing listens on): the
//! job runs in the CLI's process under `--state-dir`, the CLI waits, and
//! prints the JSON of the issue; bad arguments are refused with exit 2.

mod cli_support;

use std::{path::Path, time::Duration};

use cli_support::{Out, arbor_out, unused_url};
use serde_json::Value;

/// `arbor --agent NOWHERE run --state-dir DIR ARGS...`.
fn run_in(dir: &Path, args: &[&str]) -> Out {
    let mut all = vec!["--agent".to_owned(), unused_url(), "run".into()];
    all.push("--state-dir".into());
    all.push(dir.to_str().unwrap().into());
    all.extend(args.iter().map(|s| s.to_string()));
    arbor_out(all)
}

fn execution_dir(dir: &Path, out: &Value) -> std::path::PathBuf {
    dir.join("executions")
        .join(out["job_id"].as_str().expect("job_id"))
}

#[test]
fn a_failing_command_reports_its_exit_code_and_both_tails() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(
        dir.path(),
        &[
            "--wait",
            "--json",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    )
    .expect(1);
    assert!(
        out.stderr.contains("running in-process"),
        "says where it runs: {out:#?}"
    );
    let v = out.json();
    assert_eq!(v["mode"], "in_process");
    assert_eq!(v["agent"], Value::Null);
    assert_eq!(v["state"], "failed");
    assert_eq!(v["exit_code"], 3);
    assert_eq!(v["signal"], Value::Null);
    assert!(v["finished_at"].is_string(), "{v:#}");
    assert_eq!(v["final_snapshot"]["stdout_tail"], "out\n");
    assert_eq!(v["final_snapshot"]["stderr_tail"], "err\n");
    assert_eq!(v["final_snapshot"]["observed_bytes"], 8);
    assert_eq!(v["final_snapshot"]["included_bytes"], 8);
    assert_eq!(v["final_snapshot"]["truncated"], false);
    for key in [
        "job_id",
        "state",
        "env_vars",
        "stdout_log_path",
        "stderr_log_path",
        "snapshot",
        "waited_ms",
        "elapsed_ms",
    ] {
        assert!(v.get(key).is_some(), "{key} missing: {v:#}");
    }
    for key in [
        "stdout_tail",
        "stderr_tail",
        "truncated",
        "observed_bytes",
        "included_bytes",
    ] {
        assert!(v["snapshot"].get(key).is_some(), "snapshot.{key}: {v:#}");
    }
    let stdout_log = v["stdout_log_path"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(stdout_log).unwrap(), "out\n");
    let stderr_log = v["stderr_log_path"].as_str().unwrap();
    assert_eq!(std::fs::read_to_string(stderr_log).unwrap(), "err\n");
    assert!(execution_dir(dir.path(), &v).join("meta.json").exists());
}

#[test]
fn a_command_that_ignores_sigterm_is_killed_after_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(
        dir.path(),
        &[
            "--wait",
            "--json",
            "--timeout",
            "1s",
            "--kill-after",
            "1s",
            "--",
            "sh",
            "-c",
            "trap '' TERM; sleep 60",
        ],
    )
    .expect(1);
    eprintln!("deadline 1s + grace 1s: ended after {:?}", out.took);
    assert!(out.took < Duration::from_secs(10), "{out:#?}");
    assert!(out.took >= Duration::from_secs(1), "{out:#?}");
    let v = out.json();
    assert_eq!(v["state"], "failed");
    assert_eq!(v["signal"], 9, "killed by SIGKILL: {v:#}");
    assert_eq!(v["exit_code"], Value::Null);
    assert!(
        v["state_detail"].as_str().unwrap().contains("deadline"),
        "{v:#}"
    );
}

#[test]
fn masked_values_appear_in_no_output_and_no_record() {
    let secret = format!("s3cr3t-{}", uuid::Uuid::new_v4());
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("vars.env");
    std::fs::write(&env_file, format!("FILE_SECRET={secret}-file\n")).unwrap();
    let env = format!("SECRET={secret}");
    let args = |json: bool| {
        let mut a = vec![
            "--env",
            env.as_str(),
            "--env",
            "PLAIN=visible",
            "--env-file",
            env_file.to_str().unwrap(),
            "--mask",
            "SECRET",
            "--mask",
            "FILE_SECRET",
        ];
        if json {
            a.extend(["--wait", "--json"]);
        }
        a.extend([
            "--",
            "sh",
            "-c",
            "echo \"the secret is $SECRET\"; echo \"$FILE_SECRET\" >&2",
        ]);
        a
    };

    let out = run_in(dir.path(), &args(true)).expect(0);
    assert!(!out.stdout.contains(&secret), "{}", out.stdout);
    assert!(!out.stderr.contains(&secret), "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["env_vars"]["SECRET"], "***");
    assert_eq!(v["env_vars"]["FILE_SECRET"], "***");
    assert_eq!(v["env_vars"]["PLAIN"], "visible");
    assert_eq!(v["final_snapshot"]["stdout_tail"], "the secret is ***\n");
    assert_eq!(v["final_snapshot"]["stderr_tail"], "***\n");

    // The records: meta.json, state.json, the completion event.
    let exec = execution_dir(dir.path(), &v);
    let mut records = 0;
    for entry in std::fs::read_dir(&exec).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name.ends_with(".log") {
            continue;
        }
        records += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains(&secret), "{name} holds the secret: {text}");
    }
    assert!(records >= 2, "meta.json and state.json at least");
    let meta: Value =
        serde_json::from_str(&std::fs::read_to_string(exec.join("meta.json")).unwrap()).unwrap();
    assert_eq!(meta["env"]["SECRET"], "***");
    assert_eq!(meta["env"]["FILE_SECRET"], "***");
    // The command itself got the real values (it printed them); its logs
    // hold the mask instead.
    assert_eq!(
        std::fs::read_to_string(exec.join("stdout.log")).unwrap(),
        "the secret is ***\n"
    );

    // Readable output (the output as it comes) hides them too.
    let out = run_in(dir.path(), &args(false)).expect(0);
    assert!(!out.stdout.contains(&secret), "{out:#?}");
    assert!(!out.stderr.contains(&secret), "{out:#?}");
    assert_eq!(out.stdout, "the secret is ***\n");
}

#[test]
fn readable_output_is_the_commands_output_then_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(
        dir.path(),
        &["--", "sh", "-c", "echo one; echo two >&2; echo three"],
    )
    .expect(0);
    assert_eq!(out.stdout, "one\nthree\n");
    assert!(out.stderr.contains("two\n"), "{out:#?}");
    assert!(
        out.stderr.contains("completed (exit code 0"),
        "the end is reported: {out:#?}"
    );
    // Without --wait in-process still waits: the exit code is the run's.
    run_in(dir.path(), &["--", "sh", "-c", "exit 4"]).expect(1);
}

#[test]
fn the_snapshot_is_taken_after_snapshot_after_and_the_final_one_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(
        dir.path(),
        &[
            "--json",
            "--snapshot-after",
            "1s",
            "--",
            "sh",
            "-c",
            "echo early; sleep 3; echo late",
        ],
    )
    .expect(0);
    let v = out.json();
    assert_eq!(v["snapshot"]["stdout_tail"], "early\n", "{v:#}");
    assert_eq!(v["final_snapshot"]["stdout_tail"], "early\nlate\n", "{v:#}");
    assert_eq!(v["exit_code"], 0);
    assert!(v["waited_ms"].as_u64().unwrap() >= 1000, "{v:#}");
    assert!(v["elapsed_ms"].as_u64().unwrap() >= 3000, "{v:#}");
}

#[test]
fn tail_lines_and_max_bytes_bound_the_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_in(
        dir.path(),
        &[
            "--wait",
            "--json",
            "--tail-lines",
            "2",
            "--",
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do echo line $i; done",
        ],
    )
    .expect(0);
    let v = out.json();
    let fin = &v["final_snapshot"];
    assert_eq!(fin["stdout_tail"], "line 4\nline 5\n", "{v:#}");
    assert_eq!(fin["truncated"], true);
    assert_eq!(fin["observed_bytes"], 35);
    assert_eq!(fin["included_bytes"], 14);

    let out = run_in(
        dir.path(),
        &[
            "--wait",
            "--json",
            "--max-bytes",
            "7",
            "--",
            "sh",
            "-c",
            "echo aaaaaa; echo bbbbbb",
        ],
    )
    .expect(0);
    assert_eq!(out.json()["final_snapshot"]["stdout_tail"], "bbbbbb\n");
}

#[test]
fn cwd_env_files_no_inherit_env_and_notify_are_passed_on() {
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let env_file = dir.path().join("vars.env");
    std::fs::write(&env_file, "FROM_FILE=from-file\nBOTH=file\n").unwrap();
    let notify = dir.path().join("done.ndjson");
    let out = run_in(
        dir.path(),
        &[
            "--wait",
            "--json",
            "--no-inherit-env",
            "--cwd",
            work.to_str().unwrap(),
            "--env-file",
            env_file.to_str().unwrap(),
            "--env",
            "BOTH=flag",
            "--notify-file",
            notify.to_str().unwrap(),
            "--name",
            "probe",
            "--",
            "sh",
            "-c",
            "pwd; echo \"$FROM_FILE $BOTH home=${HOME:-unset}\"",
        ],
    )
    .expect(0);
    let v = out.json();
    assert_eq!(v["job"], "probe");
    assert_eq!(
        v["final_snapshot"]["stdout_tail"],
        format!(
            "{}\nfrom-file flag home=unset\n",
            work.canonicalize().unwrap().display()
        )
    );
    let event: Value =
        serde_json::from_str(std::fs::read_to_string(&notify).unwrap().trim()).unwrap();
    assert_eq!(event["execution_id"], v["job_id"]);
    assert_eq!(event["event_type"], "completed");
}

/// Bad arguments: exit 2 and a message naming the value; nothing runs.
#[test]
fn bad_arguments_are_usage_errors_that_name_the_value() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (&["--env", "NOEQUALS", "--", "true"], "NOEQUALS"),
        (&["--env", "=value", "--", "true"], "=value"),
        (&["--timeout", "5x", "--", "true"], "5x"),
        (&["--kill-after", "soon", "--", "true"], "soon"),
        (&["--snapshot-after=-1s", "--", "true"], "-1s"),
        (&["--timeout", "0s", "--", "true"], "--timeout"),
        (&["--tail-lines", "many", "--", "true"], "many"),
        (&["--notify-command", "not json", "--", "true"], "not json"),
        (&["--notify-command", "[]", "--", "true"], "[]"),
        (&["--"], "<CMD>"),
        (&[], "<CMD>"),
        (&["--", ""], "CMD[0]"),
    ];
    for (args, named) in cases {
        let out = run_in(dir.path(), args).expect(2);
        assert!(
            out.stderr.contains(named),
            "{args:?}: the message should name {named:?}: {}",
            out.stderr
        );
    }
    let executions = dir.path().join("executions");
    assert!(
        !executions.exists() || std::fs::read_dir(executions).unwrap().count() == 0,
        "nothing ran"
    );
}
