//! The real `arbor agent`: a service with `depends_on` starts once its
//! dependencies are ready (readiness probe passing, or started when they
//! have none), never before; `start_timeout` then starts it anyway or fails
//! it; the wait holds neither the API nor a shutdown.

mod cli_support;

use arbor::runtime::process::procfs;
use cli_support::{Agent, eventually, write_file};

fn runs(mark: &str) -> bool {
    !procfs::with_env("MARK", mark).is_empty()
}

#[test]
fn a_service_starts_only_once_its_dependency_is_ready() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("db.ready");
    let checks = dir.path().join("checks");
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
services:
  web:
    command: [sleep, "300"]
    env: {{ MARK: dep-web }}
    depends_on: [db]
  db:
    command: [sleep, "300"]
    env: {{ MARK: dep-db }}
    readiness: {{ exec: [sh, -c, 'echo x >> "{checks}"; test -f "{ready}"'], period: 50ms }}
"#,
            checks = checks.display(),
            ready = ready.display()
        ),
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    // The API answers while web waits; db runs, not ready; web has not
    // started, through ten readiness checks.
    eventually("db runs", || runs("dep-db"));
    eventually("ten readiness checks of db ran", || {
        std::fs::read_to_string(&checks).is_ok_and(|s| s.lines().count() >= 10)
    });
    let web = agent.service("web");
    assert_eq!(web["status"], "waiting", "{web}");
    assert_eq!(web["reason"], "waiting for db", "{web}");
    assert!(!runs("dep-web"), "web started before db was ready");
    let tree = agent.arbor(["tree"]).expect(0).stdout;
    assert!(
        tree.contains("web [supervisor] starting (waiting for db)"),
        "{tree}"
    );
    assert!(
        tree.contains("db-0 [container] running (not ready: exit code 1)"),
        "{tree}"
    );

    std::fs::write(&ready, "").unwrap();
    eventually("web runs", || runs("dep-web"));
    eventually("web is running", || {
        agent.service("web")["status"] == "running"
    });
    assert_eq!(agent.service("db")["ready"], 1);
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_dependency_without_a_readiness_probe_is_ready_once_started() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  app:
    command: [sleep, "300"]
    env: { MARK: plain-app }
    depends_on: [cache]
  cache:
    command: [sleep, "300"]
"#,
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    eventually("app runs", || runs("plain-app"));
    assert_eq!(agent.service("app")["status"], "running");
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_dependency_never_ready_fails_the_dependent_after_its_start_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  never:
    command: [sleep, "300"]
    readiness: { exec: ["false"], period: 50ms }
  strict:
    command: [sleep, "300"]
    env: { MARK: dep-strict }
    depends_on: [never]
    start_timeout: 300ms
    start_timeout_action: fail
  lenient:
    command: [sleep, "300"]
    env: { MARK: dep-lenient }
    depends_on: [never]
    start_timeout: 300ms
"#,
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    eventually("strict failed", || {
        agent.service("strict")["status"] == "failed"
    });
    let strict = agent.service("strict");
    let reason = strict["reason"].as_str().unwrap();
    assert!(
        reason.contains("dependencies not ready after 300ms: never"),
        "{strict}"
    );
    assert!(!runs("dep-strict"));
    // The default action starts it anyway.
    eventually("lenient runs", || runs("dep-lenient"));
    assert_eq!(agent.service("lenient")["status"], "running");
    // Other services run on.
    assert_eq!(agent.service("never")["running"], 1);
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_shutdown_ends_a_wait_for_a_dependency_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  never:
    command: [sleep, "300"]
    readiness: { exec: ["false"], period: 50ms }
  patient:
    command: [sleep, "300"]
    env: { MARK: dep-patient }
    depends_on: [never]
    start_timeout: 1h
"#,
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    eventually("patient waits", || {
        agent.service("patient")["status"] == "waiting"
    });
    // Within the helper's limit, far below the hour of `start_timeout`.
    assert_eq!(agent.stop(), 0);
    assert!(!runs("dep-patient"));
}
