//! The real `arbor agent` with health probes on real processes: exec,
//! http and tcp checks passing and failing, a failing liveness probe
//! restarting the replica (counted, with `probe_failed`), readiness shown
//! in `arbor services`, the tree and `/metrics`, and a startup probe
//! holding liveness back.

mod cli_support;

use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::Duration,
};

use arbor::runtime::process::procfs;
use cli_support::{Agent, arbor_out, eventually, write_file};

fn ready(agent: &Agent, name: &str) -> u64 {
    agent.service(name)["ready"].as_u64().unwrap()
}

fn restarts(agent: &Agent, name: &str) -> u64 {
    agent.service(name)["restarts"].as_u64().unwrap()
}

fn metrics(agent: &Agent) -> String {
    agent.http("GET", "/metrics", "").1
}

/// A tiny HTTP server answering 200 while `healthy`, else 503.
fn http_server() -> (u16, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let healthy = Arc::new(AtomicBool::new(false));
    let flag = healthy.clone();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf);
            let status = if flag.load(Ordering::SeqCst) {
                "200 OK"
            } else {
                "503 Service Unavailable"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
        }
    });
    (port, healthy)
}

#[test]
fn a_failing_exec_liveness_probe_restarts_the_replica_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let alive = dir.path().join("alive");
    let checks = dir.path().join("checks");
    std::fs::write(&alive, "").unwrap();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
services:
  web:
    command: [sleep, "300"]
    env: {{ MARK: probe-live }}
    liveness: {{ exec: [sh, -c, 'echo x >> "{checks}"; test -f "{alive}"'], period: 50ms, failure_threshold: 2 }}
"#,
            checks = checks.display(),
            alive = alive.display()
        ),
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    let events = cli_support::Lines::spawn({
        let mut cmd = cli_support::arbor();
        cmd.args(["--agent", &agent.socket, "events", "--json"]);
        cmd
    });
    let mut first = None;
    eventually("web runs", || {
        first = procfs::with_env("MARK", "probe-live").first().copied();
        first.is_some()
    });
    let first = first.unwrap();
    // Alive while the file exists: many checks pass without a restart.
    eventually("ten liveness checks ran", || {
        std::fs::read_to_string(&checks).is_ok_and(|s| s.lines().count() >= 10)
    });
    assert_eq!(restarts(&agent, "web"), 0);

    std::fs::remove_file(&alive).unwrap();
    let seen = events.until("probe_failed", |l| l.contains("\"probe_failed\""));
    let failed: serde_json::Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(failed["probe"], "liveness");
    assert_eq!(failed["child"], "web-0");
    assert!(
        failed["output"].as_str().unwrap().contains("exit code 1"),
        "{failed}"
    );
    eventually("web restarted", || restarts(&agent, "web") >= 1);
    std::fs::write(&alive, "").unwrap();
    eventually("a new web process runs", || {
        procfs::with_env("MARK", "probe-live")
            .first()
            .is_some_and(|p| *p != first)
    });
    let tree = agent.arbor(["tree"]).expect(0).stdout;
    assert!(tree.contains("liveness probe failed"), "{tree}");
    assert_eq!(agent.stop(), 0);
}

#[test]
fn an_http_readiness_probe_flips_ready_in_services_tree_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let (port, healthy) = http_server();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
services:
  web:
    command: [sleep, "300"]
    readiness: {{ http: {{ port: {port}, path: /healthz }}, period: 100ms, failure_threshold: 1 }}
"#
        ),
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    eventually("web runs", || agent.service("web")["running"] == 1);
    assert_eq!(ready(&agent, "web"), 0);
    let tree = agent.arbor(["tree"]).expect(0).stdout;
    assert!(
        tree.contains("web-0 [container] running (not ready"),
        "{tree}"
    );
    assert!(
        metrics(&agent).contains("arbor_service_replicas_ready{service=\"web\"} 0"),
        "{}",
        metrics(&agent)
    );

    healthy.store(true, Ordering::SeqCst);
    eventually("web is ready", || ready(&agent, "web") == 1);
    assert!(metrics(&agent).contains("arbor_service_replicas_ready{service=\"web\"} 1"));
    let tree = agent.arbor(["tree", "--json"]).expect(0).json();
    let replica = &tree["children"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "web")
        .unwrap()["children"][0];
    assert_eq!(replica["ready"], true, "{replica}");

    healthy.store(false, Ordering::SeqCst);
    eventually("web is not ready again", || ready(&agent, "web") == 0);
    // Readiness never restarts anything.
    assert_eq!(restarts(&agent, "web"), 0);
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_tcp_readiness_probe_passes_once_the_port_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
services:
  db:
    command: [sleep, "300"]
    readiness: {{ tcp: {{ port: {port} }}, period: 100ms }}
"#
        ),
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    eventually("db runs", || agent.service("db")["running"] == 1);
    thread::sleep(Duration::from_millis(300));
    assert_eq!(ready(&agent, "db"), 0, "nothing listens yet");
    let _listener = TcpListener::bind(("127.0.0.1", port)).unwrap();
    eventually("db is ready", || ready(&agent, "db") == 1);
    assert_eq!(agent.stop(), 0);
}

#[test]
fn an_exec_probe_runs_in_the_replicas_environment_and_times_out() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  envy:
    command: [sleep, "300"]
    env: { ROLE: primary }
    readiness: { exec: [sh, -c, 'test "$ROLE" = primary'], period: 100ms }
  slow:
    command: [sleep, "300"]
    env: { MARK: probe-slow }
    liveness: { exec: [sleep, "5"], period: 100ms, timeout: 200ms, failure_threshold: 1 }
"#,
    );
    let (agent, log) = Agent::start_logged(&spec, &dir.path().join("state"), &[]);
    eventually("envy is ready", || ready(&agent, "envy") == 1);
    eventually("slow restarted", || restarts(&agent, "slow") >= 1);
    let detail = agent.service("slow")["tree"].to_string();
    assert!(detail.contains("timed out after 200ms"), "{detail}");
    assert_eq!(agent.stop(), 0);
    drop(log);
    // The timed-out probes' `sleep 5` were killed, not left behind (they
    // carry the replica's environment): gone well before they would end.
    let stopped = std::time::Instant::now();
    while !procfs::with_env("MARK", "probe-slow").is_empty() {
        assert!(
            stopped.elapsed() < Duration::from_secs(2),
            "left behind: {:?}",
            procfs::with_env("MARK", "probe-slow")
        );
        thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_startup_probe_holds_liveness_back_until_it_passes_once() {
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let checks = dir.path().join("checks");
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
services:
  slowstart:
    command: [sleep, "300"]
    startup: {{ exec: [sh, -c, 'echo x >> "{checks}"; test -f "{started}"'], period: 50ms, failure_threshold: 1000 }}
    liveness: {{ exec: ["false"], period: 50ms, failure_threshold: 2 }}
"#,
            checks = checks.display(),
            started = started.display()
        ),
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    // Ten startup checks: five liveness periods' worth of failures, held back.
    eventually("ten startup checks ran", || {
        std::fs::read_to_string(&checks).is_ok_and(|s| s.lines().count() >= 10)
    });
    assert_eq!(restarts(&agent, "slowstart"), 0);
    assert_eq!(ready(&agent, "slowstart"), 0, "not ready before startup");

    std::fs::write(&started, "").unwrap();
    eventually("liveness runs and restarts it", || {
        restarts(&agent, "slowstart") >= 1
    });
    let tree = agent.arbor(["tree"]).expect(0).stdout;
    assert!(tree.contains("liveness probe failed"), "{tree}");
    assert_eq!(agent.stop(), 0);
}

#[test]
fn a_startup_probe_that_never_passes_fails_the_replica() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  never:
    command: [sleep, "300"]
    startup: { exec: ["false"], period: 50ms, failure_threshold: 3 }
"#,
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    eventually("never restarted", || restarts(&agent, "never") >= 1);
    let tree = agent.arbor(["tree"]).expect(0).stdout;
    assert!(tree.contains("startup probe failed: exit code 1"), "{tree}");
    assert_eq!(agent.stop(), 0);
}

#[test]
fn bad_probes_are_refused_naming_the_field_and_value() {
    let dir = tempfile::tempdir().unwrap();
    let spec = write_file(
        dir.path(),
        "node.yaml",
        r#"
services:
  web:
    command: [sleep, "300"]
    liveness: { exec: [sh], tcp: { port: 80 }, success_threshold: 2 }
    readiness: { http: { port: 0, path: healthz }, period: 0s }
    startup: { period: 1s }
"#,
    );
    let out = arbor_out(["validate", spec.to_str().unwrap()]);
    assert_ne!(out.code, 0);
    for needle in [
        "services.web.liveness",
        "exactly one of exec, http or tcp",
        "services.web.liveness.success_threshold",
        "services.web.readiness.http.port",
        "services.web.readiness.http.path",
        "\"healthz\"",
        "services.web.readiness.period",
        "services.web.startup",
        "a probe needs one of exec, http or tcp",
    ] {
        assert!(out.stderr.contains(needle), "{needle}: {}", out.stderr);
    }
}
