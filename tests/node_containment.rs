//! The real `arbor agent`: one failing service never takes the node or
//! another service down. Services back off by default; one that gives up
//! ends `failed` alone; an empty spec is refused; a long stop grace holds
//! nothing else.

mod cli_support;

use std::{
    thread,
    time::{Duration, Instant},
};

use arbor::runtime::process::procfs;
use cli_support::{Agent, arbor_out, eventually, write_file};

/// The one process of the service whose env has `MARK=mark`.
fn pid_of(mark: &str) -> i32 {
    let mut pid = None;
    eventually("the marked process runs", || {
        pid = procfs::with_env("MARK", mark).first().copied();
        pid.is_some()
    });
    pid.unwrap()
}

/// The status of a request to the agent's TCP API (with its token).
fn http_status(agent: &Agent, method: &str, path: &str) -> u16 {
    http_status_at(&addr(agent), &agent.token, method, path)
}

fn http_status_at(addr: &str, token: &str, method: &str, path: &str) -> u16 {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

/// A GET's body (from the agent's TCP API, with its token).
fn get_body(agent: &Agent, path: &str) -> String {
    use std::io::{Read, Write};
    let addr = addr(agent);
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
        agent.token
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

fn addr(agent: &Agent) -> String {
    agent.url.trim_start_matches("http://").to_owned()
}

#[test]
fn a_service_that_exits_at_once_backs_off_and_every_other_service_keeps_running() {
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    // The spec of the report: no other settings.
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
name: contain
services:
  steady:
    command: [sleep, "301"]
    env: {{MARK: "{mark}"}}
  crashy:
    command: [sh, -c, "exit 3"]
  quick:
    command: [sh, -c, "exit 4"]
    backoff: {{initial: 50ms, max: 400ms}}
"#
        ),
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    let steady = pid_of(&mark);

    eventually("crashy backs off", || {
        let s = agent.service("crashy");
        s["status"] == "crash_loop_back_off" && s["next_restart"].is_string()
    });
    // `quick` (a back-off block, no on_limit) keeps going with growing
    // delays: its restarts go well past the limit of 5.
    eventually("quick keeps restarting past the limit", || {
        agent.service("quick")["restarts"].as_u64() >= Some(9)
    });
    let crashy = agent.service("crashy");
    assert!(
        crashy["reason"]
            .as_str()
            .is_some_and(|r| r.contains("exit code 3")),
        "{crashy}"
    );
    let steady_now = agent.service("steady");
    assert_eq!(steady_now["status"], "running", "{steady_now}");
    assert_eq!(
        procfs::with_env("MARK", &mark),
        [steady],
        "steady never restarted"
    );
    assert_eq!(http_status(&agent, "GET", "/v1/health"), 200);
    let table = agent.arbor(["services"]).expect(0).stdout;
    assert!(
        table.lines().any(|l| l.starts_with("crashy")
            && l.contains("crash_loop_back_off")
            && l.contains("next restart in")),
        "{table}"
    );
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_service_that_gives_up_ends_failed_alone_and_the_node_stays_healthy() {
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
name: contain
services:
  steady:
    command: [sleep, "301"]
    env: {{MARK: "{mark}"}}
  crashy:
    command: [sh, -c, "exit 3"]
    on_limit: escalate
"#
        ),
    );
    let validated = arbor_out([std::ffi::OsStr::new("validate"), spec.as_os_str()]).expect(0);
    assert!(
        validated
            .stderr
            .contains("services.crashy.on_limit: escalate"),
        "validate warns: {}",
        validated.stderr
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    let steady = pid_of(&mark);
    eventually("crashy ends failed", || {
        agent.service("crashy")["status"] == "failed"
    });
    let crashy = agent.service("crashy");
    let reason = crashy["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("gave up") && reason.contains("crashy-0") && reason.contains("exit code 3"),
        "{crashy}"
    );
    assert_eq!(crashy["replicas"], 1, "its replica still shows: {crashy}");
    assert_eq!(agent.service("steady")["status"], "running");
    assert_eq!(procfs::with_env("MARK", &mark), [steady]);
    assert_eq!(http_status(&agent, "GET", "/v1/health"), 200);
    let tree = agent.arbor(["tree"]).expect(0).stdout;
    assert!(tree.contains("crashy [supervisor] failed"), "{tree}");
    let metrics = get_body(&agent, "/metrics");
    assert!(
        metrics.contains("arbor_service_status{service=\"crashy\",status=\"failed\"} 1"),
        "{metrics}"
    );
    let table = agent.arbor(["services"]).expect(0).stdout;
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("crashy") && l.contains("failed") && l.contains("gave up")),
        "{table}"
    );
    // An operator can bring it back (here, to fail again).
    assert_eq!(
        http_status(&agent, "POST", "/v1/services/crashy/restart"),
        200
    );
    eventually("crashy fails again after its restart", || {
        agent.service("crashy")["status"] == "failed"
    });
    assert_eq!(agent.stop(), 0);
}

#[test]
fn an_empty_spec_is_refused_by_validate_and_by_a_reload_and_nothing_changes() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.yaml");
    std::fs::write(&empty, "  \n# only a comment\n").unwrap();
    let out = arbor_out([std::ffi::OsStr::new("validate"), empty.as_os_str()]).expect(1);
    assert!(out.stderr.contains("is empty"), "{}", out.stderr);

    let mark = uuid::Uuid::new_v4().to_string();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            "services:\n  steady:\n    command: [sleep, \"301\"]\n    env: {{MARK: \"{mark}\"}}\n"
        ),
    );
    let (agent, lines) = Agent::start_logged(&spec, &dir.path().join("state"), &[]);
    let steady = pid_of(&mark);
    std::fs::write(&spec, "").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let refused = loop {
        let line = lines
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("a log line saying the reload was refused");
        if line.contains("reload refused") {
            break line;
        }
    };
    assert!(refused.contains("is empty"), "{refused}");
    assert_eq!(procfs::with_env("MARK", &mark), [steady], "nothing changed");
    assert_eq!(http_status(&agent, "GET", "/v1/services/steady"), 200);
}

#[test]
fn a_replica_in_a_20s_stop_grace_holds_neither_the_api_nor_another_service() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  stubborn:
    command: [sh, -c, "trap '' TERM; while true; do sleep 1; done"]
    env: {STUBBORN: "1"}
    stop_timeout: 20s
  other:
    command: [sleep, "301"]
"#,
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    let (a, token) = (addr(&agent), agent.token.clone());
    eventually("both run, stubborn past its trap", || {
        agent.services().len() == 2
            && agent.services().iter().all(|s| s["status"] == "running")
            && procfs::with_env("STUBBORN", "1")
                .iter()
                .any(|p| procfs::ignores_signal(*p, 15))
    });
    let restart = {
        let (a, token) = (a.clone(), token.clone());
        thread::spawn(move || http_status_at(&a, &token, "POST", "/v1/services/stubborn/restart"))
    };
    eventually("stubborn is in its grace", || {
        agent.service("stubborn")["state"] == "stopping"
    });
    for path in ["/v1/tree", "/v1/services", "/metrics", "/v1/health"] {
        assert_eq!(http_status_at(&a, &token, "GET", path), 200, "{path}");
    }
    assert_eq!(
        http_status_at(&a, &token, "POST", "/v1/services/other/restart"),
        200
    );
    assert!(
        !restart.is_finished(),
        "every answer above came while stubborn's grace ran"
    );
    assert_eq!(restart.join().unwrap(), 200);
    drop(agent);
}

fn sigterm(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
}

#[test]
fn independent_services_get_their_stop_signal_together_at_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let d = dir.path().display();
    // Both ignore SIGTERM (the trap notes it and the loop goes on).
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
services:
  slow3:
    command: [sh, -c, "trap 'echo term > {d}/slow3' TERM; while true; do sleep 0.1; done"]
    env: {{MARK: "{mark}"}}
    stop_timeout: 3s
  slow4:
    command: [sh, -c, "trap 'echo term > {d}/slow4' TERM; while true; do sleep 0.1; done"]
    env: {{MARK: "{mark}"}}
    stop_timeout: 4s
"#
        ),
    );
    let mut agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    let mut pids = Vec::new();
    eventually("both run, past their trap", || {
        pids = procfs::with_env("MARK", &mark)
            .into_iter()
            .filter(|p| procfs::cmdline(*p).starts_with("sh") && procfs::catches_signal(*p, 15))
            .collect();
        pids.len() == 2
    });
    sigterm(agent.child.id());
    eventually("both got SIGTERM", || {
        dir.path().join("slow3").exists() && dir.path().join("slow4").exists()
    });
    assert!(
        pids.iter()
            .all(|p| procfs::stat(*p).is_some_and(|s| s.exists() && !s.is_zombie())),
        "the second got its SIGTERM while the first was still in its grace: they stop together"
    );
    let status = loop {
        if let Some(s) = agent.child.try_wait().unwrap() {
            break s;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    assert!(procfs::with_env("MARK", &mark).is_empty(), "nothing left");
}

#[test]
fn a_service_stops_after_what_depends_on_it_even_after_a_reload_restarted_it() {
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let log = dir.path().join("stops");
    let l = log.display();
    // bash, not dash: dash vforks, and a TERM that lands in the vfork child
    // before its exec can run the trap there too, writing a stop twice.
    let spec = |version: u32| {
        format!(
            r#"
services:
  db:
    command: [bash, -c, "trap 'echo db >> {l}; exit 0' TERM; while true; do sleep 0.1; done"]
    env: {{VERSION: "{version}", MARK: "{mark}"}}
  app:
    command: [bash, -c, "trap 'echo app >> {l}; exit 0' TERM; while true; do sleep 0.1; done"]
    env: {{MARK: "{mark}"}}
    depends_on: [db]
"#
        )
    };
    let path = write_file(dir.path(), "node.yaml", &spec(1));
    let mut agent = Agent::start(&path, &dir.path().join("state"), &[]);
    // The replicas' main processes (their group leaders): bash forks a
    // child for each `sleep`, which has the same trap until it execs.
    let trapped = || {
        let mut pids: Vec<i32> = procfs::with_env("MARK", &mark)
            .into_iter()
            .filter(|p| procfs::stat(*p).is_some_and(|s| s.pgrp == *p))
            .filter(|p| procfs::catches_signal(*p, 15))
            .collect();
        pids.sort();
        pids
    };
    eventually("both run, past their trap", || trapped().len() == 2);
    let before = trapped();
    // A reload that changes only db restarts only db (it starts again after app).
    std::fs::write(&path, spec(2)).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    // The new db (another pid) runs past its trap, beside the same app.
    let start = Instant::now();
    loop {
        let now = trapped();
        let stopped = std::fs::read_to_string(&log).unwrap_or_default();
        // (A stop seen twice in the log was observed once under load; see
        // the shutdown check below.)
        if !stopped.is_empty()
            && stopped.lines().all(|l| l == "db")
            && now.len() == 2
            && now != before
            && before.iter().filter(|p| now.contains(p)).count() == 1
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "db was not restarted by the reload: stop log {stopped:?}, trapped {now:?} (before {before:?}), services {:?}",
            agent.services()
        );
        thread::sleep(Duration::from_millis(20));
    }
    sigterm(agent.child.id());
    let status = loop {
        if let Some(s) = agent.child.try_wait().unwrap() {
            break s;
        }
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(0));
    // After the reload's stop of db: app's stop, then db's, last. (Under
    // load a trap line was once written twice, "db app app db": the order
    // is what this test is about, so a repeated line is tolerated.)
    let stops = std::fs::read_to_string(&log).unwrap();
    let at_shutdown: Vec<&str> = stops.lines().skip_while(|l| *l == "db").collect();
    assert!(
        at_shutdown.last() == Some(&"db")
            && at_shutdown.len() >= 2
            && at_shutdown[..at_shutdown.len() - 1]
                .iter()
                .all(|l| *l == "app"),
        "at shutdown app stopped before db, which it depends on: {stops:?}"
    );
}

#[test]
fn changing_replicas_by_reload_adds_and_removes_replicas_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let spec = |replicas: usize| {
        format!(
            "services:\n  web:\n    command: [sleep, \"301\"]\n    env: {{MARK: \"{mark}\"}}\n    replicas: {replicas}\n    stop_timeout: 1s\n"
        )
    };
    let path = write_file(dir.path(), "node.yaml", &spec(2));
    let agent = Agent::start(&path, &dir.path().join("state"), &[]);
    let pids = |n: usize| {
        let mut found = Vec::new();
        eventually(&format!("{n} replicas run"), || {
            found = procfs::with_env("MARK", &mark);
            found.sort();
            found.len() == n && agent.service("web")["running"] == n
        });
        found
    };
    let hup = || {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(agent.child.id() as i32),
            nix::sys::signal::Signal::SIGHUP,
        )
        .unwrap()
    };
    let two = pids(2);
    std::fs::write(&path, spec(3)).unwrap();
    hup();
    let three = pids(3);
    assert!(
        two.iter().all(|p| three.contains(p)),
        "2 -> 3 keeps both replicas: {two:?} {three:?}"
    );
    std::fs::write(&path, spec(1)).unwrap();
    hup();
    let one = pids(1);
    assert!(two.contains(&one[0]), "3 -> 1 keeps web-0: {two:?} {one:?}");
    let web = agent.service("web");
    assert_eq!(web["replicas"], 1, "{web}");
    // A restart of the service brings back the new size, not the old one.
    assert_eq!(http_status(&agent, "POST", "/v1/services/web/restart"), 200);
    pids(1);
    assert_eq!(agent.stop(), 0);
}

/// `ARBOR_TEST_PANIC=<part>`: each SIGUSR2 makes that part of the agent's
/// node panic.
fn inject(agent: &Agent) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .unwrap();
}

fn part_restarts(agent: &Agent, part: &str) -> u64 {
    let tree: serde_json::Value =
        serde_json::from_str(&get_body(agent, "/v1/tree")).unwrap_or_default();
    tree["children"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["name"] == format!("node:{part}"))
        .and_then(|c| c["restarts"].as_u64())
        .unwrap_or(0)
}

#[test]
fn a_panic_in_the_executor_of_a_real_agent_restarts_it_and_the_running_job_completes() {
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
services:
  steady:
    command: [sleep, "301"]
    env: {{MARK: "{mark}"}}
jobs:
  work:
    command: [sh, -c, "sleep 2; echo done"]
"#
        ),
    );
    let agent = Agent::start_with_env(
        &spec,
        &dir.path().join("state"),
        &[],
        &[("ARBOR_TEST_PANIC", "executor")],
    );
    let steady = pid_of(&mark);
    let id = agent
        .arbor(["jobs", "trigger", "work"])
        .expect(0)
        .stdout
        .trim()
        .to_owned();
    inject(&agent);
    eventually("the executor is restarted", || {
        part_restarts(&agent, "executor") == 1
    });
    assert_eq!(http_status(&agent, "GET", "/v1/health"), 200);
    let metrics = get_body(&agent, "/metrics");
    assert!(
        metrics.contains("arbor_node_part_restarts{part=\"executor\"} 1")
            && metrics.contains("arbor_node_part_up{part=\"executor\"} 1"),
        "{metrics}"
    );
    let status = agent.arbor(["status", &id, "--json"]).expect(0).json();
    assert!(
        ["running", "completed"].contains(&status["state"]["status"].as_str().unwrap_or_default()),
        "the restarted executor knows the execution: {status}"
    );
    eventually("the execution completes", || {
        agent.arbor(["status", &id, "--json"]).json()["state"]["status"] == "completed"
    });
    let logs = agent.arbor(["logs", &id]).expect(0).stdout;
    assert!(logs.contains("done"), "{logs}");
    let run = agent
        .arbor(["run", "--wait", "--", "echo", "after"])
        .expect(0);
    assert!(run.stdout.contains("after"), "{}", run.stdout);
    assert_eq!(procfs::with_env("MARK", &mark), [steady]);
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_root_that_gives_up_makes_the_agent_exit_non_zero_and_stop_its_services() {
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
services:
  steady:
    command: [sleep, "301"]
    env: {{MARK: "{mark}"}}
"#
        ),
    );
    let mut agent = Agent::start_with_env(
        &spec,
        &dir.path().join("state"),
        &[],
        &[("ARBOR_TEST_PANIC", "supervisor")],
    );
    pid_of(&mark);
    inject(&agent);
    let start = Instant::now();
    let code = loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the agent did not exit"
        );
        thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(code, Some(70));
    assert!(procfs::with_env("MARK", &mark).is_empty());
}
