//! sd_notify both ways, with the real binary: a `notify: true` service is
//! ready when it sends READY=1 (`arbor notify --ready`), shows its STATUS=,
//! and is restarted when its WATCHDOG=1 stops; the agent as a
//! `Type=notify` unit sends READY=1 and WATCHDOG=1 to its NOTIFY_SOCKET,
//! stops the pings while its root supervisor is wedged, and never passes
//! its NOTIFY_SOCKET on to a service.

mod cli_support;

use std::{
    os::unix::net::UnixDatagram,
    time::{Duration, Instant},
};

use cli_support::{Agent, eventually, write_file};

#[test]
fn a_notify_service_is_ready_on_ready_1_and_restarted_when_its_watchdog_stops() {
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let arbor = env!("CARGO_BIN_EXE_arbor");
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
services:
  notified:
    command: [sh, -c, 'while [ ! -f "{go}" ]; do sleep 0.05; done; {arbor} notify --ready --status "serving 3 clients"; for i in 1 2 3; do {arbor} notify --watchdog; sleep 0.1; done; exec sleep 300']
    notify: true
    watchdog: 1s
"#,
            go = go.display()
        ),
    );
    let agent = Agent::start(&spec, &dir.path().join("state"), &[]);
    let events = cli_support::Lines::spawn({
        let mut cmd = cli_support::arbor();
        cmd.args(["--agent", &agent.socket, "events", "--json"]);
        cmd
    });
    eventually("it runs", || agent.service("notified")["running"] == 1);
    assert_eq!(
        agent.service("notified")["ready"],
        0,
        "ready before READY=1"
    );

    std::fs::write(&go, "").unwrap();
    eventually("READY=1 made it ready", || {
        agent.service("notified")["ready"] == 1
    });
    eventually("its STATUS= shows", || {
        agent
            .arbor(["tree"])
            .stdout
            .contains("notified-0 [container] running (serving 3 clients)")
    });
    // Then the pings stop: a second later it is failed and restarted.
    let seen = events.until("the watchdog failure", |l| {
        l.contains("\"probe_failed\"") && l.contains("\"watchdog\"")
    });
    let failed: serde_json::Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(failed["output"], "no WATCHDOG=1 within 1s", "{failed}");
    eventually("it restarted", || {
        agent.service("notified")["restarts"].as_u64().unwrap() >= 1
    });
    assert_eq!(agent.stop(), 0);
}

/// Datagrams on `sock` within `wait`, one string each.
fn receive(sock: &UnixDatagram, wait: Duration) -> Option<String> {
    sock.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 4096];
    sock.recv(&mut buf)
        .ok()
        .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[test]
fn the_agent_notifies_systemd_and_pings_only_while_its_root_answers() {
    let dir = tempfile::tempdir().unwrap();
    let notify = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&notify).unwrap();
    let seen_env = dir.path().join("env");
    let spec = write_file(
        dir.path(),
        "node.yaml",
        &format!(
            r#"
services:
  child:
    command: [sh, -c, 'echo "N=$NOTIFY_SOCKET W=$WATCHDOG_USEC" > "{}"; exec sleep 300']
"#,
            seen_env.display()
        ),
    );
    let notify_s = notify.display().to_string();
    let agent = Agent::start_with_env(
        &spec,
        &dir.path().join("state"),
        &[],
        &[
            ("NOTIFY_SOCKET", notify_s.as_str()),
            ("WATCHDOG_USEC", "200000"),
            ("ARBOR_TEST_PANIC", "supervisor-stall"),
        ],
    );
    let first = receive(&sock, Duration::from_secs(20)).expect("a first notification");
    assert!(first.contains("READY=1"), "{first:?}");
    assert!(
        first.contains("STATUS=deployment default: 1 service"),
        "{first:?}"
    );
    let mut pings = 0;
    while pings < 3 {
        let msg = receive(&sock, Duration::from_secs(20)).expect("watchdog pings");
        if msg.contains("WATCHDOG=1") {
            pings += 1;
        }
    }
    // The service never saw the agent's variables.
    eventually("the child wrote its environment", || {
        std::fs::read_to_string(&seen_env).is_ok_and(|s| s.ends_with('\n'))
    });
    assert_eq!(std::fs::read_to_string(&seen_env).unwrap(), "N= W=\n");

    // Wedge the root: the pings stop (a quiet second, 10 intervals, comes
    // within a few seconds).
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agent.child.id() as i32),
        nix::sys::signal::Signal::SIGUSR2,
    )
    .unwrap();
    let start = Instant::now();
    loop {
        match receive(&sock, Duration::from_secs(1)) {
            None => break,
            Some(msg) => assert!(
                start.elapsed() < Duration::from_secs(10),
                "still pinging with a wedged root: {msg:?}"
            ),
        }
    }
    // The agent (root wedged for 30 s) is killed when `agent` drops.
}
