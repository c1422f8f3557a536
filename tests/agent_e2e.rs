//! The real `arbor agent` binary end to end: spec file in, tree, events and
//! metrics out, jobs through the API, SIGHUP reload, SIGTERM exit.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    process::{Child, Command, Stdio},
    time::Duration,
};

use arbor::{
    runtime::process::procfs,
    testing::{eventually, eventually_some},
};

/// The agent's TCP API: its address and the token it generated.
#[derive(Clone)]
struct Api {
    addr: String,
    token: String,
}

/// One HTTP/1.1 request over a fresh connection, with the token: (status, body).
fn http(api: &Api, method: &str, path: &str, body: &str) -> (u16, String) {
    let Api { addr, token } = api;
    let mut s = TcpStream::connect(addr).expect("agent answers");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    // A connection cut by a stopping agent reads as status 0.
    let _ = s.read_to_string(&mut out);
    let status = out
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_owned())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

fn spec(mark: &str, replicas: usize) -> String {
    format!(
        r#"
name: e2e
services:
  web:
    command: ["sh", "-c", "while true; do sleep 1; done"]
    env: {{MARK: "{mark}"}}
    replicas: {replicas}
    stop_timeout: 2s
  crasher:
    command: ["sh", "-c", "sleep 0.2; exit 3"]
    env: {{MARK: "{mark}"}}
    max_restarts: 2
    restart_window: 1m
    on_limit: backoff
    backoff: {{initial: 100ms, max: 200ms}}
jobs:
  hello:
    command: ["sh", "-c", "echo hello from the job; echo oops >&2"]
    env: {{MARK: "{mark}"}}
  nap:
    command: ["sleep", "1000"]
    env: {{MARK: "{mark}"}}
"#
    )
}

struct Agent {
    child: Child,
    addr: Api,
}

impl Drop for Agent {
    /// SIGTERM first: a killed agent leaves its services running (live
    /// restore).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            // A second SIGTERM after a second kills everything at once.
            for wait in [50, 1000] {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(self.child.id() as i32),
                    nix::sys::signal::Signal::SIGTERM,
                );
                for _ in 0..wait {
                    if !matches!(self.child.try_wait(), Ok(None)) {
                        return;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(spec_path: &std::path::Path, state: &std::path::Path) -> Agent {
    let mut child = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args([
            "agent",
            "--listen",
            "127.0.0.1:0",
            "--shutdown-timeout",
            "2s",
            "--spec",
        ])
        .arg(spec_path)
        .arg("--state-dir")
        .arg(state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    let token = std::fs::read_to_string(state.join("api.token"))
        .unwrap()
        .trim()
        .to_owned();
    Agent {
        child,
        addr: Api { addr, token },
    }
}

#[tokio::test]
async fn the_agent_runs_a_spec_serves_the_api_reloads_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let spec_path = dir.path().join("node.yaml");
    std::fs::write(&spec_path, spec(&mark, 1)).unwrap();
    let mut agent = start(&spec_path, &dir.path().join("state"));
    let addr = agent.addr.clone();

    // The tree shows the services.
    eventually("web-0 runs", || {
        http(&addr, "GET", "/v1/tree?format=text", "")
            .1
            .contains("web-0 [container] running")
    })
    .await;

    // The crashing service's restarts show in the event stream and metrics.
    let mut events = TcpStream::connect(&addr.addr).unwrap();
    events
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        events,
        "GET /v1/events HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {}\r\n\r\n",
        addr.addr, addr.token
    )
    .unwrap();
    let mut reader = BufReader::new(events);
    let mut seen = String::new();
    while !seen.contains("child_restarted") {
        let mut l = String::new();
        assert!(
            reader.read_line(&mut l).unwrap() > 0,
            "event stream ended: {seen}"
        );
        seen.push_str(&l);
    }
    eventually("metrics count crasher restarts", || {
        http(&addr, "GET", "/metrics", "")
            .1
            .lines()
            .any(|l| l.starts_with("arbor_service_restarts_total{service=\"crasher\"}"))
    })
    .await;

    // A job through the API completes, with its logs.
    let (status, body) = http(&addr, "POST", "/v1/jobs/hello/trigger", "");
    assert_eq!(status, 202, "{body}");
    let id = json(&body)["execution_id"].as_str().unwrap().to_owned();
    eventually("the job completes", || {
        json(&http(&addr, "GET", &format!("/v1/executions/{id}"), "").1)["state"]["status"]
            == "completed"
    })
    .await;
    let (_, logs) = http(
        &addr,
        "GET",
        &format!("/v1/executions/{id}/logs?stream=full"),
        "",
    );
    assert!(logs.contains("hello from the job"), "{logs}");
    assert!(logs.contains("oops"), "{logs}");

    // Cancel works.
    let (_, body) = http(&addr, "POST", "/v1/jobs/nap/trigger", "");
    let nap = json(&body)["execution_id"].as_str().unwrap().to_owned();
    eventually("the nap runs", || {
        json(&http(&addr, "GET", &format!("/v1/executions/{nap}"), "").1)["state"]["status"]
            == "running"
    })
    .await;
    let (status, body) = http(&addr, "POST", &format!("/v1/executions/{nap}/cancel"), "");
    assert!(status < 300, "{status} {body}");
    eventually("the nap is cancelled", || {
        json(&http(&addr, "GET", &format!("/v1/executions/{nap}"), "").1)["state"]["status"]
            == "cancelled"
    })
    .await;

    // SIGHUP applies a changed spec.
    std::fs::write(&spec_path, spec(&mark, 2)).unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    eventually("web-1 runs after the reload", || {
        http(&addr, "GET", "/v1/tree?format=text", "")
            .1
            .contains("web-1 [container] running")
    })
    .await;

    // SIGTERM: exit 0 and nothing left.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = eventually_some("the agent exits", || agent.child.try_wait().unwrap()).await;
    assert!(status.success(), "{status:?}");
    assert!(
        procfs::with_env("MARK", &mark).is_empty(),
        "processes left: {:?}",
        procfs::with_env("MARK", &mark)
    );
}

#[test]
fn validate_prints_every_error_with_its_path_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "services:\n  web:\n    command: []\n    replicas: 0\njobs:\n  j:\n    command: [x]\n    schedule: \"61 * * * *\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for needle in [
        "services.web.command",
        "services.web.replicas",
        "jobs.j.schedule: invalid cron expression \"61 * * * *\"",
    ] {
        assert!(err.contains(needle), "{needle} missing in {err}");
    }
    let ok = Command::new(env!("CARGO_BIN_EXE_arbor"))
        .args(["validate", "examples/node.yaml"])
        .output()
        .unwrap();
    assert!(ok.status.success());
    assert!(String::from_utf8_lossy(&ok.stdout).contains("deployment demo"));
}

#[tokio::test]
async fn a_second_signal_during_shutdown_kills_everything_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let mark = uuid::Uuid::new_v4().to_string();
    let spec_path = dir.path().join("node.yaml");
    std::fs::write(
        &spec_path,
        format!(
            r#"
services:
  stubborn:
    command: ["sh", "-c", "trap '' TERM; while true; do sleep 1; done"]
    env: {{MARK: "{mark}"}}
    stop_timeout: 10m
"#
        ),
    )
    .unwrap();
    let mut agent = start(&spec_path, &dir.path().join("state"));
    let addr = agent.addr.clone();
    // Running, and past its `trap` (a SIGTERM before it would end it).
    eventually("stubborn runs and ignores SIGTERM", || {
        procfs::with_env("MARK", &mark)
            .iter()
            .any(|p| procfs::ignores_signal(*p, 15))
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(agent.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    eventually("the agent is shutting down", || {
        http(&addr, "GET", "/v1/health", "").0 == 503
    })
    .await;
    // The first stop waits up to 10 minutes for `stubborn`; a second signal
    // forces (one within 100 ms of the first would be the same stop).
    let first = std::time::Instant::now();
    eventually("100 ms have passed", || {
        first.elapsed() > Duration::from_millis(150)
    })
    .await;
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = eventually_some("the agent exits", || agent.child.try_wait().unwrap()).await;
    assert_eq!(status.code(), Some(128 + 15), "128 + SIGTERM");
    eventually("nothing is left", || {
        procfs::with_env("MARK", &mark).is_empty()
    })
    .await;
}
