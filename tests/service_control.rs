//! Service control with the real binary, through the CLI and the API:
//! `arbor services stop|start|restart|scale`, `arbor deploy FILE`,
//! `PUT /v1/deployment`, `GET /v1/deployment`; a stopped service stays
//! stopped across reloads; bad input is refused naming what is wrong and
//! changes nothing.

mod cli_support;

use arbor::runtime::process::procfs;
use cli_support::{Agent, eventually, write_file};

/// The sorted pids of the processes marked `mark`, once there are `n` and
/// the service says so.
fn pids(agent: &Agent, name: &str, mark: &str, n: usize) -> Vec<i32> {
    let mut found = Vec::new();
    eventually(&format!("{n} replicas of {name} run"), || {
        found = procfs::with_env("MARK", mark);
        found.sort();
        found.len() == n && agent.service(name)["running"] == n
    });
    found
}

fn hup(agent: &Agent) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
}

#[test]
fn a_stopped_service_stays_stopped_across_a_reload_until_started() {
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            "services:\n  web:\n    command: [sleep, \"301\"]\n    env: {{MARK: \"{mark}\"}}\n    replicas: 2\n    stop_timeout: 1s\n  db:\n    command: [sleep, \"302\"]\n"
        ),
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    pids(&agent, "web", &mark, 2);

    let out = agent.arbor(["services", "stop", "web"]).expect(0);
    assert_eq!(
        out.stdout.trim(),
        "web: stopped (0/2 running, 0/2 ready)",
        "{out:?}"
    );
    assert!(procfs::with_env("MARK", &mark).is_empty());
    // A reload (even one that changes web) leaves it stopped.
    std::fs::write(
        &spec,
        format!(
            "services:\n  web:\n    command: [sleep, \"303\"]\n    env: {{MARK: \"{mark}\"}}\n    replicas: 2\n    stop_timeout: 1s\n  db:\n    command: [sleep, \"302\"]\n"
        ),
    )
    .unwrap();
    hup(&agent);
    eventually("the reload applied", || {
        let (_, d) = agent.http("GET", "/v1/deployment", "");
        d.contains("\"303\"")
    });
    assert_eq!(agent.service("web")["status"], "stopped");
    assert!(procfs::with_env("MARK", &mark).is_empty());
    assert_eq!(agent.service("db")["status"], "running");

    // Started, it runs the new command.
    agent.arbor(["services", "start", "web"]).expect(0);
    pids(&agent, "web", &mark, 2);
    let cmdline = std::fs::read_to_string(format!(
        "/proc/{}/cmdline",
        procfs::with_env("MARK", &mark)[0]
    ))
    .unwrap();
    assert!(cmdline.contains("303"), "{cmdline:?}");
    // Starting a running service is a no-op; restarting one replaces its replicas.
    let before = pids(&agent, "web", &mark, 2);
    agent.arbor(["services", "start", "web"]).expect(0);
    assert_eq!(pids(&agent, "web", &mark, 2), before);
    agent.arbor(["services", "restart", "web"]).expect(0);
    let after = pids(&agent, "web", &mark, 2);
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} {after:?}"
    );
    assert_eq!(agent.stop(), 0);
}

#[test]
fn scaling_adds_and_removes_replicas_in_place_through_the_cli_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            "services:\n  web:\n    command: [sleep, \"301\"]\n    env: {{MARK: \"{mark}\"}}\n    replicas: 2\n    stop_timeout: 1s\n"
        ),
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    let two = pids(&agent, "web", &mark, 2);
    let out = agent.arbor(["services", "scale", "web", "3"]).expect(0);
    assert!(out.stdout.contains("3/3 running"), "{out:?}");
    let three = pids(&agent, "web", &mark, 3);
    assert!(two.iter().all(|p| three.contains(p)), "{two:?} {three:?}");
    let (status, body) = agent.http("PUT", "/v1/services/web/replicas", r#"{"replicas": 1}"#);
    assert_eq!(status, 200, "{body}");
    let one = pids(&agent, "web", &mark, 1);
    assert!(two.contains(&one[0]), "web-0 kept: {two:?} {one:?}");
    let tree = agent.arbor(["tree"]).expect(0).stdout;
    assert!(tree.contains("web-0") && !tree.contains("web-1"), "{tree}");

    // Bad input: named, and nothing changes.
    let out = agent.arbor(["services", "scale", "web", "0"]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("services.web.replicas"), "{out:?}");
    let (status, body) = agent.http("PUT", "/v1/services/web/replicas", r#"{"replica": 2}"#);
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("replica"), "{body}");
    let (status, body) = agent.http("PUT", "/v1/services/ghost/replicas", r#"{"replicas": 2}"#);
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("ghost"), "{body}");
    let (status, body) = agent.http("POST", "/v1/services/ghost/stop", "");
    assert_eq!(status, 404, "{body}");
    assert_eq!(pids(&agent, "web", &mark, 1), one);
    assert_eq!(agent.stop(), 0);
}

#[test]
fn deploy_applies_a_whole_spec_and_a_spec_with_errors_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        "services:\n  old:\n    command: [sleep, \"301\"]\n",
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    eventually("old runs", || agent.service("old")["status"] == "running");

    // Every error, and nothing changes.
    let bad = write_file(
        dir.path(),
        "bad.yaml",
        "services:\n  new:\n    command: [sleep, \"1\"]\n    replicas: 0\n    depends_on: [ghost]\n",
    );
    let out = agent.arbor(["deploy", bad.to_str().unwrap()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("services.new.replicas"), "{out:?}");
    assert!(out.stderr.contains("services.new.depends_on[0]"), "{out:?}");
    let (status, body) = agent.http(
        "PUT",
        "/v1/deployment",
        r#"{"services": {"new": {"command": [], "replicas": 0}}}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("services.new.replicas"), "{body}");
    assert_eq!(agent.services().len(), 1);

    // A good one is applied as a reload is.
    let env = write_file(dir.path(), "new.env", "GREETING=hi\n");
    let good = write_file(
        dir.path(),
        "good.yaml",
        "services:\n  new:\n    command: [sleep, \"302\"]\n    env_file: [new.env]\n",
    );
    let out = agent.arbor(["deploy", good.to_str().unwrap()]).expect(0);
    assert!(out.stdout.contains("started new"), "{out:?}");
    assert!(out.stdout.contains("stopped old"), "{out:?}");
    eventually("new runs", || agent.service("new")["status"] == "running");
    let (status, body) = agent.http("GET", "/v1/deployment", "");
    assert_eq!(status, 200, "{body}");
    let applied: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(applied["services"]["old"].is_null(), "{applied}");
    // The env file was resolved against the spec's directory.
    assert_eq!(
        applied["services"]["new"]["env_file"][0],
        env.display().to_string(),
        "{applied}"
    );
    // JSON over the API works too.
    let (status, body) = agent.http(
        "PUT",
        "/v1/deployment",
        r#"{"services": {"json": {"command": ["sleep", "303"]}}}"#,
    );
    assert_eq!(status, 200, "{body}");
    eventually("json runs", || {
        agent.services().len() == 1 && agent.service("json")["status"] == "running"
    });
    assert_eq!(agent.stop(), 0);
}
