//! Masked values stay secret: with a real agent, a job whose `mask`ed
//! variable is printed by its command leaves that value in no file under
//! the state dir and in no API answer, its own logs included.

mod cli_support;

use std::path::Path;

use cli_support::{Agent, eventually};

const SECRET: &str = "s3cr3t-Value-4711";

fn files_holding(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            let ft = entry.file_type().unwrap();
            if ft.is_dir() {
                stack.push(path);
            } else if ft.is_file()
                && let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
            {
                found.push(path.display().to_string());
            }
        }
    }
    found
}

/// A GET on the agent's TCP API with its token: the whole answer.
fn get(agent: &Agent, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = agent.url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        agent.token
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{path}: {out}");
    out
}

#[test]
fn a_masked_value_reaches_no_file_and_no_api_answer_even_when_the_job_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("node.yaml");
    std::fs::write(
        &spec,
        format!(
            r#"
jobs:
  leak:
    command: [sh, -c, "echo \"the secret is $PASSWORD\"; printf '%s' \"$PASSWORD\" | fold -w 3 >&2; echo; echo \"$PASSWORD$PASSWORD\""]
    env: {{PASSWORD: "{SECRET}"}}
    mask: [PASSWORD]
"#
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let agent = Agent::start(&spec, &state, &[]);
    let id = agent
        .arbor(["jobs", "trigger", "leak"])
        .expect(0)
        .stdout
        .trim()
        .to_owned();
    eventually("the job completes", || {
        agent.arbor(["status", &id, "--json"]).json()["state"]["status"] == "completed"
    });
    let logs = agent.arbor(["logs", &id]).expect(0).stdout;
    assert!(logs.contains("the secret is ***"), "{logs}");
    assert!(logs.contains("******"), "{logs}");
    // Also an ad-hoc run with --mask.
    let run = agent
        .arbor([
            "run",
            "--wait",
            "--json",
            "--env",
            &format!("TOKEN={SECRET}"),
            "--mask",
            "TOKEN",
            "--",
            "sh",
            "-c",
            "echo token=$TOKEN",
        ])
        .expect(0);
    assert!(!run.stdout.contains(SECRET), "{}", run.stdout);
    let run_id = run.json()["job_id"].as_str().unwrap().to_owned();

    let mut answers = Vec::new();
    for args in [
        vec!["status", id.as_str(), "--json"],
        vec!["logs", id.as_str()],
        vec!["logs", run_id.as_str()],
        vec!["status", run_id.as_str(), "--json"],
        vec!["list", "--json"],
        vec!["jobs", "--json"],
        vec!["tree", "--json"],
    ] {
        answers.push((args.join(" "), agent.arbor(&args).expect(0).stdout));
    }
    for path in [
        format!("/v1/executions/{id}"),
        format!("/v1/executions/{id}/logs"),
        format!("/v1/executions/{id}/logs?stream=stderr"),
        format!("/v1/executions/{run_id}"),
        format!("/v1/executions/{run_id}/logs"),
        "/v1/executions".into(),
        "/v1/jobs/leak".into(),
        "/v1/jobs".into(),
    ] {
        answers.push((path.clone(), get(&agent, &path)));
    }
    for (what, answer) in &answers {
        assert!(
            !answer.contains(SECRET),
            "`arbor {what}` shows it: {answer}"
        );
    }
    let leaked = files_holding(&state, SECRET);
    assert!(leaked.is_empty(), "files holding the secret: {leaked:?}");
    assert_eq!(agent.stop(), 0);
    let leaked = files_holding(&state, SECRET);
    assert!(leaked.is_empty(), "after the stop: {leaked:?}");
}
